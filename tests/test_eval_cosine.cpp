// Decoder redundancy and ground-truth recovery (src/eval/) against brute-force O(F^2) computations in double.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "core/rng.h"
#include "eval/ground_truth.h"
#include "eval/redundancy.h"

using namespace moesae;

namespace {

Tensor random_rows(int64_t rows, int64_t cols, Rng& rng) {
  Tensor t = host_tensor(rows, cols);
  for (int64_t i = 0; i < t.numel(); ++i) t.host<float>()[i] = static_cast<float>(rng.normal());
  return t;
}

double cosine(const float* a, const float* b, int64_t d) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t c = 0; c < d; ++c) {
    ab += double(a[c]) * b[c];
    aa += double(a[c]) * a[c];
    bb += double(b[c]) * b[c];
  }
  return (aa > 0 && bb > 0) ? ab / std::sqrt(aa * bb) : 0.0;
}

// max over i != j (and i in the same group as j when group > 0) of cos(w_i, w_j), in double.
std::vector<double> brute_max_cosine(const Tensor& w, int64_t group = 0) {
  const int64_t f = w.rows(), d = w.cols();
  std::vector<double> best(static_cast<size_t>(f), -std::numeric_limits<double>::infinity());
  for (int64_t j = 0; j < f; ++j)
    for (int64_t i = 0; i < f; ++i) {
      if (i == j || (group > 0 && i / group != j / group)) continue;
      best[j] = std::max(best[j], cosine(w.host<float>() + i * d, w.host<float>() + j * d, d));
    }
  return best;
}

// Copies row `src` onto row `dst` with small noise: a planted near-duplicate (cosine ~0.99).
void plant_duplicate(Tensor& w, int64_t src, int64_t dst, double noise, Rng& rng) {
  const int64_t d = w.cols();
  for (int64_t c = 0; c < d; ++c)
    w.host<float>()[dst * d + c] = static_cast<float>(1.7 * w.host<float>()[src * d + c] + noise * rng.normal());
}

}  // namespace

TEST(Redundancy, MatchesBruteForceAcrossBlocksWithPlantedDuplicates) {
  // F spans three row blocks of 2048 (the last one partial), so diagonal, off-diagonal and ragged blocks all run.
  const int64_t f = 2 * 2048 + 37, d = 48;
  Rng rng(1);
  Tensor w = random_rows(f, d, rng);
  const int64_t pairs[][2] = {{0, 1}, {5, 4000}, {2047, 2048}, {3000, 4132}, {100, 2100}, {4130, 7}};
  for (auto& p : pairs) plant_duplicate(w, p[0], p[1], 0.05, rng);
  const std::vector<float> got = max_cosine_per_latent(w);
  const std::vector<double> want = brute_max_cosine(w);
  ASSERT_EQ(got.size(), size_t(f));
  int64_t want_redundant = 0;
  for (int64_t j = 0; j < f; ++j) {
    ASSERT_NEAR(got[j], want[j], 2e-6) << "latent " << j;
    ASSERT_GT(std::abs(want[j] - 0.9), 1e-4) << "test data too close to the threshold";
    want_redundant += want[j] > 0.9;
  }
  EXPECT_EQ(want_redundant, 12);  // both members of each planted pair, nothing else
  const Redundancy r = decoder_redundancy(w, 0.9);
  EXPECT_EQ(r.latents, f);
  EXPECT_EQ(r.redundant, 12);
  EXPECT_DOUBLE_EQ(r.redundant_fraction, 12.0 / f);
  EXPECT_NEAR(r.mean_max_cosine, std::accumulate(want.begin(), want.end(), 0.0) / f, 1e-6);
}

TEST(Redundancy, DiagonalIsExcluded) {
  // Orthogonal rows: without excluding i == j every maximum would be 1.
  Tensor w = host_tensor(3, 3);
  for (int i = 0; i < 3; ++i) w.host<float>()[i * 3 + i] = 2.f;
  for (float v : max_cosine_per_latent(w)) EXPECT_EQ(v, 0.f);
  // An exact duplicate (up to scale) is found for both copies, and only for them.
  w.host<float>()[2 * 3 + 0] = 5.f;
  w.host<float>()[2 * 3 + 2] = 0.f;
  const std::vector<float> m = max_cosine_per_latent(w);
  EXPECT_NEAR(m[0], 1.f, 1e-6);
  EXPECT_NEAR(m[2], 1.f, 1e-6);
  EXPECT_EQ(m[1], 0.f);
}

TEST(Redundancy, ThresholdIsStrict) {
  // Rows (1,0), (3,4)/5 = (0.6,0.8), (0,-1): the maxima are exactly 0.6f, 0.6f, 0 (and -0.8 is no maximum).
  Tensor w = host_tensor(3, 2);
  const float v[] = {1, 0, 3, 4, 0, -1};
  std::copy(v, v + 6, w.host<float>());
  const std::vector<float> m = max_cosine_per_latent(w);
  EXPECT_EQ(m[0], 0.6f);
  EXPECT_EQ(m[1], 0.6f);
  EXPECT_EQ(m[2], 0.f);
  EXPECT_EQ(decoder_redundancy(w, double(0.6f)).redundant, 0);  // equal to the threshold: not redundant
  EXPECT_EQ(decoder_redundancy(w, std::nextafter(double(0.6f), 0.0)).redundant, 2);
  EXPECT_NEAR(decoder_redundancy(w, 0.5).mean_max_cosine, 1.2 / 3, 1e-7);
}

TEST(Redundancy, WithinGroupsMatchesBruteForce) {
  const int64_t groups = 3, n = 700, d = 20;
  Rng rng(5);
  Tensor w = random_rows(groups * n, d, rng);
  plant_duplicate(w, 3, 10, 0.05, rng);    // same group: counted within groups
  plant_duplicate(w, 20, 900, 0.05, rng);  // different groups: counted only globally
  const std::vector<float> got = max_cosine_within_groups(w, n);
  const std::vector<double> want = brute_max_cosine(w, n);
  for (int64_t j = 0; j < groups * n; ++j) ASSERT_NEAR(got[j], want[j], 2e-6) << "latent " << j;
  EXPECT_GT(got[10], 0.99f);
  EXPECT_LT(got[900], 0.9f);
  EXPECT_GT(max_cosine_per_latent(w)[900], 0.99f);
}

// OpenBLAS's sgemm may split its work differently for another thread count, so the cosines agree to rounding.
TEST(Redundancy, ZeroRowHasZeroCosineAndResultIsThreadIndependent) {
  Rng rng(9);
  Tensor w = random_rows(2500, 16, rng);
  for (int64_t c = 0; c < 16; ++c) w.host<float>()[7 * 16 + c] = 0.f;
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<float> one = max_cosine_per_latent(w);
  omp_set_num_threads(3);
  const std::vector<float> three = max_cosine_per_latent(w);
  omp_set_num_threads(saved);
  ASSERT_EQ(one.size(), three.size());
  for (size_t i = 0; i < one.size(); ++i) EXPECT_NEAR(one[i], three[i], 1e-6f) << i;
  EXPECT_EQ(one[7], 0.f);
  EXPECT_EQ(three[7], 0.f);
}

TEST(Redundancy, Errors) {
  EXPECT_THROW(max_cosine_per_latent(host_tensor(1, 4)), Error);
  Tensor w = host_tensor(4, 2);
  w.host<float>()[3] = std::numeric_limits<float>::quiet_NaN();
  try {
    max_cosine_per_latent(w);
    FAIL() << "NaN decoder accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite value in row 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(max_cosine_within_groups(host_tensor(6, 2), 4), Error);
  EXPECT_THROW(max_cosine_within_groups(host_tensor(6, 2), 1), Error);
  EXPECT_THROW(max_cosine_per_latent(host_tensor(4, 2, DType::I32)), Error);
  EXPECT_THROW(summarize_redundancy({}, 0.9), Error);
}

TEST(GroundTruth, PermutedScaledNoisyCopyIsRecovered) {
  const int64_t g = 300, f = 2500, d = 64;  // more learned latents than true features; f spans two blocks
  Rng rng(21);
  Tensor truth = random_rows(g, d, rng);
  Tensor learned = random_rows(f, d, rng);
  std::vector<int64_t> perm(f);
  std::iota(perm.begin(), perm.end(), 0);
  for (int64_t i = f - 1; i > 0; --i) std::swap(perm[i], perm[rng.below(i + 1)]);
  for (int64_t t = 0; t < g; ++t) {  // true feature t lives at learned row perm[t], rescaled and noised
    const double scale = 0.1 + 3.0 * rng.uniform();
    for (int64_t c = 0; c < d; ++c)
      learned.host<float>()[perm[t] * d + c] =
          static_cast<float>(scale * (truth.host<float>()[t * d + c] + 0.02 * rng.normal()));
  }
  const GroundTruthMatch m = match_ground_truth(learned, truth);
  for (int64_t t = 0; t < g; ++t) EXPECT_EQ(m.best_latent[t], perm[t]) << "true feature " << t;
  const GroundTruthRecovery r = summarize_recovery(m, 0.9);
  EXPECT_EQ(r.features, g);
  EXPECT_EQ(r.recovered, g);
  EXPECT_DOUBLE_EQ(r.recovered_fraction, 1.0);
  EXPECT_GT(r.mmcs, 0.999);
  EXPECT_LE(r.mmcs, 1.0 + 1e-6);

  // A sign-flipped dictionary points the other way: nothing is recovered.
  Tensor flipped = host_tensor(g, d);
  for (int64_t i = 0; i < g * d; ++i) flipped.host<float>()[i] = -truth.host<float>()[i];
  const GroundTruthRecovery none = ground_truth_recovery(flipped, truth, 0.9);
  EXPECT_EQ(none.recovered, 0);
  EXPECT_LT(none.mmcs, 0.6);
}

TEST(GroundTruth, MatchesBruteForceOnRandomDictionaries) {
  const int64_t g = 2100, f = 130, d = 12;  // g spans two row blocks
  Rng rng(4);
  Tensor truth = random_rows(g, d, rng), learned = random_rows(f, d, rng);
  const GroundTruthMatch m = match_ground_truth(learned, truth);
  double sum = 0;
  int64_t above = 0;
  for (int64_t t = 0; t < g; ++t) {
    double best = -2;
    for (int64_t j = 0; j < f; ++j)
      best = std::max(best, cosine(truth.host<float>() + t * d, learned.host<float>() + j * d, d));
    ASSERT_NEAR(m.best_cosine[t], best, 2e-6) << t;
    ASSERT_NEAR(cosine(truth.host<float>() + t * d, learned.host<float>() + m.best_latent[t] * d, d), best, 2e-6);
    sum += best;
    above += best > 0.7;
  }
  const GroundTruthRecovery r = summarize_recovery(m, 0.7);
  EXPECT_NEAR(r.mmcs, sum / g, 1e-6);
  EXPECT_NEAR(double(r.recovered), double(above), 2.0);  // float vs double rounding near the threshold
  EXPECT_GT(above, 0);
  EXPECT_LT(above, g);
}

TEST(GroundTruth, TiesPickTheSmallestLatentAndErrorsNameTheShapes) {
  Tensor truth = host_tensor(1, 2), learned = host_tensor(3, 2);
  truth.host<float>()[0] = 1.f;
  learned.host<float>()[2] = 1.f;  // latent 1 = (1, 0)
  learned.host<float>()[4] = 2.f;  // latent 2 = (2, 0): the same direction
  const GroundTruthMatch m = match_ground_truth(learned, truth);
  EXPECT_EQ(m.best_latent[0], 1);
  EXPECT_EQ(m.best_cosine[0], 1.f);
  try {
    match_ground_truth(host_tensor(3, 4), host_tensor(2, 5));
    FAIL() << "dimension mismatch accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[3, 4]"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[2, 5]"), std::string::npos) << e.what();
  }
}
