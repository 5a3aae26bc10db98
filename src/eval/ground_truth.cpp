#include "eval/ground_truth.h"

#include <cblas.h>

#include <algorithm>
#include <limits>

#include "eval/unit_rows.h"

namespace moesae {

GroundTruthMatch match_ground_truth(const Tensor& w_dec, const Tensor& true_dict) {
  const std::vector<float> learned = unit_rows(w_dec, "ground-truth recovery: W_dec");
  const std::vector<float> truth = unit_rows(true_dict, "ground-truth recovery: true dictionary");
  const int64_t f = w_dec.rows(), g = true_dict.rows(), d = w_dec.cols();
  if (true_dict.cols() != d)
    fail("ground-truth recovery: W_dec ", w_dec.shape_str(), " and the true dictionary ", true_dict.shape_str(),
         " have different input dimensions");
  if (f < 1 || g < 1) fail("ground-truth recovery: empty dictionary (W_dec ", w_dec.shape_str(), ", true ",
                           true_dict.shape_str(), ")");

  GroundTruthMatch m;
  m.best_cosine.assign(static_cast<size_t>(g), -std::numeric_limits<float>::infinity());
  m.best_latent.assign(static_cast<size_t>(g), -1);
  const int64_t block = kCosineBlockRows;
  std::vector<float> c(static_cast<size_t>(std::min(block, g) * std::min(block, f)));
  for (int64_t i0 = 0; i0 < g; i0 += block) {
    const int64_t bi = std::min(block, g - i0);
    for (int64_t j0 = 0; j0 < f; j0 += block) {  // ascending: a strict '>' keeps the smallest latent id on ties
      const int64_t bj = std::min(block, f - j0);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(bi), int(bj), int(d), 1.f, truth.data() + i0 * d,
                  int(d), learned.data() + j0 * d, int(d), 0.f, c.data(), int(bj));
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < bi; ++r) {
        const float* row = c.data() + r * bj;
        float best = m.best_cosine[i0 + r];
        int32_t arg = m.best_latent[i0 + r];
        for (int64_t col = 0; col < bj; ++col)
          if (row[col] > best) {
            best = row[col];
            arg = static_cast<int32_t>(j0 + col);
          }
        m.best_cosine[i0 + r] = best;
        m.best_latent[i0 + r] = arg;
      }
    }
  }
  return m;
}

GroundTruthRecovery summarize_recovery(const GroundTruthMatch& match, double threshold) {
  if (match.best_cosine.empty()) fail("ground-truth recovery: no true features to summarise");
  GroundTruthRecovery r;
  r.threshold = threshold;
  r.features = static_cast<int64_t>(match.best_cosine.size());
  double sum = 0.0;
  for (float v : match.best_cosine) {
    sum += v;
    if (double(v) > threshold) ++r.recovered;
  }
  r.recovered_fraction = double(r.recovered) / double(r.features);
  r.mmcs = sum / double(r.features);
  return r;
}

GroundTruthRecovery ground_truth_recovery(const Tensor& w_dec, const Tensor& true_dict, double threshold) {
  return summarize_recovery(match_ground_truth(w_dec, true_dict), threshold);
}

}  // namespace moesae
