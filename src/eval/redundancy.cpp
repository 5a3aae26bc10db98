#include "eval/redundancy.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <limits>

#include "eval/unit_rows.h"

namespace moesae {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// best[j] = max_{i != j} u_i . u_j over the n unit rows u [n, d]. Only the block pairs (I, J) with J >= I are
// multiplied; an off-diagonal block updates the maxima of its rows (row scan) and of its columns (column scan).
void symmetric_max_cosine(const float* u, int64_t n, int64_t d, float* best) {
  std::fill(best, best + n, kNegInf);
  const int64_t block = kCosineBlockRows;
  std::vector<float> c(static_cast<size_t>(std::min(block, n) * std::min(block, n)));
  const int max_threads = omp_get_max_threads();
  std::vector<float> col_best(static_cast<size_t>(max_threads) * std::min(block, n));
  for (int64_t i0 = 0; i0 < n; i0 += block) {
    const int64_t bi = std::min(block, n - i0);
    for (int64_t j0 = i0; j0 < n; j0 += block) {
      const int64_t bj = std::min(block, n - j0);
      const bool diagonal = (j0 == i0);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(bi), int(bj), int(d), 1.f, u + i0 * d, int(d),
                  u + j0 * d, int(d), 0.f, c.data(), int(bj));
      if (diagonal)
        for (int64_t r = 0; r < bi; ++r) c[r * bj + r] = kNegInf;  // a latent is not its own neighbour
      // Per-thread column maxima; slots of threads outside the team stay -inf.
      std::fill(col_best.begin(), col_best.begin() + static_cast<size_t>(max_threads) * bj, kNegInf);
#pragma omp parallel num_threads(max_threads)
      {
        float* cb = col_best.data() + static_cast<size_t>(omp_get_thread_num()) * bj;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < bi; ++r) {
          const float* row = c.data() + r * bj;
          float rb = kNegInf;
          for (int64_t col = 0; col < bj; ++col) {
            const float v = row[col];
            rb = v > rb ? v : rb;
            cb[col] = v > cb[col] ? v : cb[col];
          }
          best[i0 + r] = std::max(best[i0 + r], rb);
        }
      }
      if (!diagonal) {  // the diagonal block is square and symmetric: its row maxima already cover its columns
#pragma omp parallel for schedule(static)
        for (int64_t col = 0; col < bj; ++col) {
          float m = best[j0 + col];
          for (int t = 0; t < max_threads; ++t) m = std::max(m, col_best[static_cast<size_t>(t) * bj + col]);
          best[j0 + col] = m;
        }
      }
    }
  }
}

}  // namespace

std::vector<float> max_cosine_per_latent(const Tensor& w_dec) {
  if (w_dec.defined() && w_dec.rows() < 2)
    fail("decoder redundancy needs at least 2 latents (W_dec is ", w_dec.shape_str(), ")");
  const std::vector<float> u = unit_rows(w_dec, "decoder redundancy: W_dec");
  std::vector<float> best(static_cast<size_t>(w_dec.rows()));
  symmetric_max_cosine(u.data(), w_dec.rows(), w_dec.cols(), best.data());
  return best;
}

std::vector<float> max_cosine_within_groups(const Tensor& w_dec, int64_t group_size) {
  if (!w_dec.defined()) fail("intra-expert redundancy: W_dec is undefined");
  if (group_size < 2 || w_dec.rows() % group_size != 0)
    fail("intra-expert redundancy: group size ", group_size, " must be >= 2 and divide the ", w_dec.rows(),
         " latents of W_dec");
  const std::vector<float> u = unit_rows(w_dec, "intra-expert redundancy: W_dec");
  const int64_t d = w_dec.cols();
  std::vector<float> best(static_cast<size_t>(w_dec.rows()));
  for (int64_t g0 = 0; g0 < w_dec.rows(); g0 += group_size)
    symmetric_max_cosine(u.data() + g0 * d, group_size, d, best.data() + g0);
  return best;
}

Redundancy summarize_redundancy(const std::vector<float>& max_cosine, double threshold) {
  if (max_cosine.empty()) fail("decoder redundancy: no latents to summarise");
  Redundancy r;
  r.threshold = threshold;
  r.latents = static_cast<int64_t>(max_cosine.size());
  double sum = 0.0;
  for (float v : max_cosine) {
    sum += v;
    if (double(v) > threshold) ++r.redundant;
  }
  r.redundant_fraction = double(r.redundant) / double(r.latents);
  r.mean_max_cosine = sum / double(r.latents);
  return r;
}

Redundancy decoder_redundancy(const Tensor& w_dec, double threshold) {
  return summarize_redundancy(max_cosine_per_latent(w_dec), threshold);
}

}  // namespace moesae
