// moesae eval: decoder redundancy (reference-implementations.md §3.8.4, §3.8.5; paper Fig. 3c / Fig. 6a).
// A latent is redundant when its decoder row has cosine similarity above a threshold with some OTHER latent's row.
// Rows are normalised first; the comparison is global across experts (the F x F cosine matrix with its diagonal
// excluded), computed blockwise with sgemm so the F x F matrix is never formed, and exploiting its symmetry.
// Deterministic run to run: every cosine is one sgemm entry and maxima are exact (sgemm's rounding may follow the
// thread count).
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace moesae {

// For each latent j of w_dec (host f32 [F, d], F >= 2): max over i != j of cos(W_dec[i], W_dec[j]).
std::vector<float> max_cosine_per_latent(const Tensor& w_dec);

// The same, restricted to latents of the same group (expert): group g owns rows [g n, (g+1) n), n = group_size,
// which must divide F and be >= 2. The intra-expert similarity of §3.8.5.
std::vector<float> max_cosine_within_groups(const Tensor& w_dec, int64_t group_size);

struct Redundancy {
  double threshold = 0.9;
  int64_t latents = 0;
  int64_t redundant = 0;          // latents whose max cosine is strictly greater than threshold
  double redundant_fraction = 0;  // redundant / latents
  double mean_max_cosine = 0;     // mean of the per-latent maxima
};

// Summary of per-latent maxima (from either function above).
Redundancy summarize_redundancy(const std::vector<float>& max_cosine, double threshold);

// max_cosine_per_latent + summarize_redundancy.
Redundancy decoder_redundancy(const Tensor& w_dec, double threshold = 0.9);

}  // namespace moesae
