// moesae eval: recovery of a known dictionary (synthetic data with ground-truth features).
// For each true feature g (row of D [G, d]): its best match among the learned decoder rows W_dec [F, d] by cosine
// similarity. MMCS (mean max cosine similarity, Sharkey et al. 2022) = mean over true features of that maximum;
// a true feature is recovered when the maximum is strictly greater than a threshold (default 0.9).
// Blockwise sgemm on normalised rows; the G x F cosine matrix is never formed. Deterministic run to
// run (sgemm's rounding may follow the thread count).
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace moesae {

struct GroundTruthMatch {
  std::vector<float> best_cosine;    // [G]: max_j cos(D[g], W_dec[j])
  std::vector<int32_t> best_latent;  // [G]: the maximising latent j (the smallest j on ties)
};

// w_dec: host f32 [F, d]; true_dict: host f32 [G, d] (same d).
GroundTruthMatch match_ground_truth(const Tensor& w_dec, const Tensor& true_dict);

struct GroundTruthRecovery {
  double threshold = 0.9;
  int64_t features = 0;           // G
  int64_t recovered = 0;          // true features with best cosine > threshold
  double recovered_fraction = 0;  // recovered / G
  double mmcs = 0;                // mean best cosine
};

GroundTruthRecovery summarize_recovery(const GroundTruthMatch& match, double threshold);

// match_ground_truth + summarize_recovery.
GroundTruthRecovery ground_truth_recovery(const Tensor& w_dec, const Tensor& true_dict, double threshold = 0.9);

}  // namespace moesae
