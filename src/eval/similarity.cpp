#include "eval/similarity.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <limits>
#include <numeric>

#include "core/rng.h"
#include "eval/redundancy.h"
#include "eval/unit_rows.h"

namespace moesae {
namespace {

// Groups up to this size are computed one whole group per thread; larger ones by max_cosine_within_groups (blockwise,
// multithreaded sgemm), which is efficient for them.
constexpr int64_t kSmallGroup = 2048;

// best[l] = max over the other latents m of l's group of u_l . u_m, for groups of n unit rows of u [f, d]: group g is
// rows g n .. (g+1) n - 1, or with `perm` the rows perm[g n .. (g+1) n - 1] (gathered into a thread-local block).
// Experts are small (n = F / E, 384 at the paper's size): E independent n x n Gram matrices, so the groups run in
// parallel, each thread's BLAS call single-threaded inside the parallel region (OpenBLAS runs one thread there),
// instead of E small multithreaded products whose synchronisation costs more than the arithmetic. Each Gram matrix is
// one ssyrk (its upper triangle: half the multiply-adds of a full product); entry (r, c), c > r, updates the maxima
// of r and c.
std::vector<float> grouped_max_cosine(const float* u, int64_t f, int64_t d, int64_t n, const int64_t* perm) {
  std::vector<float> best(static_cast<size_t>(f));
#pragma omp parallel
  {
    std::vector<float> c(static_cast<size_t>(n * n)), b(static_cast<size_t>(n));
    std::vector<float> rows(perm ? static_cast<size_t>(n * d) : 0);
#pragma omp for schedule(dynamic, 1)
    for (int64_t g = 0; g < f / n; ++g) {
      const float* ug = u + g * n * d;
      if (perm) {
        for (int64_t r = 0; r < n; ++r) std::copy_n(u + perm[g * n + r] * d, d, rows.data() + r * d);
        ug = rows.data();
      }
      cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, int(n), int(d), 1.f, ug, int(d), 0.f, c.data(), int(n));
      std::fill(b.begin(), b.end(), -std::numeric_limits<float>::infinity());
      for (int64_t r = 0; r < n; ++r) {
        const float* row = c.data() + r * n;
        float m = b[size_t(r)];
        for (int64_t col = r + 1; col < n; ++col) {  // a latent is not its own neighbour: the diagonal is skipped
          const float v = row[col];
          m = v > m ? v : m;
          b[size_t(col)] = v > b[size_t(col)] ? v : b[size_t(col)];
        }
        b[size_t(r)] = m;
      }
      for (int64_t r = 0; r < n; ++r) best[static_cast<size_t>(perm ? perm[g * n + r] : g * n + r)] = b[size_t(r)];
    }
  }
  return best;
}

void check_groups(const Tensor& w_dec, int64_t n, const char* what) {
  if (!w_dec.defined()) fail(what, ": W_dec is undefined");
  if (n < 2 || w_dec.rows() % n != 0)
    fail(what, ": group size ", n, " must be >= 2 and divide the ", w_dec.rows(), " latents of W_dec");
}

// Per-latent max cosine within consecutive groups of n rows (intra-expert), or within the random groups of
// random_latent_permutation(F, seed) (inter-expert), from the unit rows u of W_dec [F, d].
std::vector<float> intra_from_unit(const Tensor& w_dec, const std::vector<float>& u, int64_t n) {
  if (n > kSmallGroup) return max_cosine_within_groups(w_dec, n);
  return grouped_max_cosine(u.data(), w_dec.rows(), w_dec.cols(), n, nullptr);
}

std::vector<float> inter_from_unit(const Tensor& w_dec, const std::vector<float>& u, int64_t n, uint64_t seed) {
  const int64_t f = w_dec.rows(), d = w_dec.cols();
  const std::vector<int64_t> perm = random_latent_permutation(f, seed);
  if (n <= kSmallGroup) return grouped_max_cosine(u.data(), f, d, n, perm.data());
  // Large groups: rows in permuted order, so the random groups become consecutive blocks, as the experts are.
  Tensor permuted = host_tensor(f, d);
  for (int64_t r = 0; r < f; ++r)
    std::copy_n(u.data() + perm[static_cast<size_t>(r)] * d, d, permuted.data<float>() + r * d);
  const std::vector<float> grouped = max_cosine_within_groups(permuted, n);
  std::vector<float> best(static_cast<size_t>(f));
  for (int64_t r = 0; r < f; ++r) best[static_cast<size_t>(perm[static_cast<size_t>(r)])] = grouped[static_cast<size_t>(r)];
  return best;
}

}  // namespace

std::vector<int64_t> random_latent_permutation(int64_t latents, uint64_t seed) {
  if (latents < 0) fail("random latent groups: latent count ", latents, " is negative");
  std::vector<int64_t> p(static_cast<size_t>(latents));
  std::iota(p.begin(), p.end(), int64_t{0});
  Rng rng(seed);
  for (int64_t i = latents - 1; i > 0; --i)
    std::swap(p[static_cast<size_t>(i)], p[static_cast<size_t>(rng.below(static_cast<uint64_t>(i + 1)))]);
  return p;
}

std::vector<float> max_cosine_within_random_groups(const Tensor& w_dec, int64_t group_size, uint64_t seed) {
  check_groups(w_dec, group_size, "inter-expert redundancy");
  return inter_from_unit(w_dec, unit_rows(w_dec, "inter-expert redundancy: W_dec"), group_size, seed);
}

ExpertSimilarity expert_similarity(const Tensor& w_dec, int64_t group_size, double threshold, uint64_t seed) {
  check_groups(w_dec, group_size, "intra-expert redundancy");
  const std::vector<float> u = unit_rows(w_dec, "expert similarity: W_dec");  // once for both
  ExpertSimilarity s;
  s.intra = summarize_redundancy(intra_from_unit(w_dec, u, group_size), threshold).redundant_fraction;
  s.inter = summarize_redundancy(inter_from_unit(w_dec, u, group_size, seed), threshold).redundant_fraction;
  return s;
}

}  // namespace moesae
