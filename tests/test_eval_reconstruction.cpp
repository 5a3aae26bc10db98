// Reconstruction, sparsity and expert-load metrics (src/eval/) against hand-computed values and direct two-pass
// computations.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/rng.h"
#include "eval/expert_load.h"
#include "eval/reconstruction.h"
#include "eval/sparsity.h"

using namespace moesae;

namespace {

Tensor host_from(int64_t rows, int64_t cols, const std::vector<float>& v) {
  Tensor t = host_tensor(rows, cols);
  for (int64_t i = 0; i < rows * cols; ++i) t.host<float>()[i] = v[static_cast<size_t>(i)];
  return t;
}

Tensor ids_from(int64_t rows, int64_t cols, const std::vector<int32_t>& v) {
  Tensor t = host_tensor(rows, cols, DType::I32);
  for (int64_t i = 0; i < rows * cols; ++i) t.host<int32_t>()[i] = v[static_cast<size_t>(i)];
  return t;
}

Tensor random_host(int64_t rows, int64_t cols, Rng& rng, double scale, double offset) {
  Tensor t = host_tensor(rows, cols);
  for (int64_t i = 0; i < t.numel(); ++i) t.host<float>()[i] = static_cast<float>(offset + scale * rng.normal());
  return t;
}

}  // namespace

TEST(Reconstruction, HandComputedTwoTokens) {
  ReconstructionAccumulator acc(2);
  acc.add(host_from(2, 2, {1, 2, 3, 4}), host_from(2, 2, {1, 1, 2, 4}));
  // errors: token 0 -> 1, token 1 -> 1; mean x = (2, 3); variance sum = (1 + 1) + (1 + 1) = 4
  EXPECT_EQ(acc.tokens(), 2);
  EXPECT_DOUBLE_EQ(acc.squared_error(), 2.0);
  EXPECT_DOUBLE_EQ(acc.mse(), 0.5);
  EXPECT_DOUBLE_EQ(acc.mse_sum_d(), 1.0);
  EXPECT_DOUBLE_EQ(acc.total_variance(), 4.0);
  EXPECT_DOUBLE_EQ(acc.fvu(), 0.5);
  EXPECT_DOUBLE_EQ(acc.explained_variance(), 0.5);
}

TEST(Reconstruction, FvuUsesTheMeanOverAllBatches) {
  // Two batches whose own means differ: the variance must be about the global mean, not per-batch means.
  ReconstructionAccumulator acc(1);
  acc.add(host_from(2, 1, {0, 0}), host_from(2, 1, {0, 0}));
  acc.add(host_from(2, 1, {2, 2}), host_from(2, 1, {1, 2}));
  // global mean 1: variance sum 4; squared error 1
  EXPECT_DOUBLE_EQ(acc.total_variance(), 4.0);
  EXPECT_DOUBLE_EQ(acc.fvu(), 0.25);
}

TEST(Reconstruction, StreamingMatchesDirectTwoPassWithLargeOffset) {
  // Activations with a mean far larger than their spread (as in LM residual streams), over uneven batches and a
  // strided view; compared with a direct two-pass computation in double.
  const int64_t d = 70, sizes[] = {1, 37, 500, 2, 261};
  Rng rng(7);
  ReconstructionAccumulator acc(d);
  std::vector<std::vector<double>> xs, hs;
  for (int64_t b : sizes) {
    Tensor wide = random_host(b, d + 5, rng, 0.5, 3000.0);  // x is a strided view of it
    Tensor x = wide.col_range(2, 2 + d);
    Tensor h = random_host(b, d, rng, 0.5, 0.0);
    for (int64_t r = 0; r < b; ++r)
      for (int64_t c = 0; c < d; ++c) h.host<float>()[r * d + c] += x.host<float>()[r * x.ld() + c];
    acc.add(x, h);
    for (int64_t r = 0; r < b; ++r) {
      xs.emplace_back(), hs.emplace_back();
      for (int64_t c = 0; c < d; ++c) {
        xs.back().push_back(x.host<float>()[r * x.ld() + c]);
        hs.back().push_back(h.host<float>()[r * d + c]);
      }
    }
  }
  const size_t n = xs.size();
  std::vector<double> mean(d, 0.0);
  double err = 0.0;
  for (size_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < d; ++c) {
      mean[c] += xs[t][c] / double(n);
      err += (xs[t][c] - hs[t][c]) * (xs[t][c] - hs[t][c]);
    }
  double var = 0.0;
  for (size_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < d; ++c) var += (xs[t][c] - mean[c]) * (xs[t][c] - mean[c]);

  EXPECT_EQ(acc.tokens(), int64_t(n));
  EXPECT_NEAR(acc.squared_error() / err, 1.0, 1e-12);
  EXPECT_NEAR(acc.total_variance() / var, 1.0, 1e-9);
  EXPECT_NEAR(acc.fvu() / (err / var), 1.0, 1e-9);
  EXPECT_NEAR(acc.mse(), err / (double(n) * d), 1e-12 * err);
  EXPECT_NEAR(acc.mse_sum_d(), err / double(n), 1e-12 * err);
  EXPECT_NEAR(acc.fvu(), 1.0, 0.1);  // residual noise and activation noise have the same scale
}

TEST(Reconstruction, MergeEqualsSequentialAndIsThreadCountIndependent) {
  const int64_t d = 130;
  Rng rng(3);
  Tensor x1 = random_host(300, d, rng, 1.0, 5.0), h1 = random_host(300, d, rng, 1.0, 5.0);
  Tensor x2 = random_host(77, d, rng, 2.0, -1.0), h2 = random_host(77, d, rng, 2.0, -1.0);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  ReconstructionAccumulator seq(d);
  seq.add(x1, h1);
  seq.add(x2, h2);
  omp_set_num_threads(3);
  ReconstructionAccumulator seq3(d);
  seq3.add(x1, h1);
  seq3.add(x2, h2);
  omp_set_num_threads(saved);
  EXPECT_EQ(seq.squared_error(), seq3.squared_error());  // bitwise
  EXPECT_EQ(seq.total_variance(), seq3.total_variance());

  ReconstructionAccumulator a(d), b(d);
  a.add(x1, h1);
  b.add(x2, h2);
  a.merge(b);
  EXPECT_EQ(a.tokens(), 377);
  EXPECT_NEAR(a.squared_error() / seq.squared_error(), 1.0, 1e-14);  // same terms, another association
  EXPECT_NEAR(a.total_variance() / seq.total_variance(), 1.0, 1e-13);
}

TEST(Reconstruction, ErrorsAndDegenerateCases) {
  ReconstructionAccumulator acc(3);
  EXPECT_THROW(acc.mse(), Error);  // nothing accumulated yet
  EXPECT_THROW(acc.add(host_tensor(2, 3), host_tensor(2, 4)), Error);
  EXPECT_THROW(acc.add(host_tensor(2, 3), host_tensor(3, 3)), Error);
  EXPECT_THROW(acc.add(host_tensor(2, 3, DType::I32), host_tensor(2, 3)), Error);
  EXPECT_THROW(ReconstructionAccumulator(0), Error);
  acc.add(host_from(1, 3, {1, 2, 3}), host_from(1, 3, {1, 2, 3}));
  EXPECT_EQ(acc.mse(), 0.0);
  EXPECT_TRUE(std::isnan(acc.fvu()));  // one token: zero variance
  try {
    acc.add(host_tensor(2, 3), host_tensor(2, 4));
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("x_hat [2, 4]"), std::string::npos) << e.what();
  }
}

TEST(Sparsity, HandComputedL0AndDeadFraction) {
  SparsityAccumulator acc(5);
  // token 0: latents 0 and 2 fire (slot 2 empty); token 1: latent 2 has value 0, latents 1 and 3 fire
  acc.add(ids_from(2, 3, {0, 2, -1, 2, 1, 3}), host_from(2, 3, {1.f, 0.5f, 7.f, 0.f, 2.f, 3.f}));
  EXPECT_EQ(acc.tokens(), 2);
  EXPECT_EQ(acc.active_entries(), 4);
  EXPECT_DOUBLE_EQ(acc.l0(), 2.0);
  EXPECT_EQ(acc.fire_counts(), (std::vector<int64_t>{1, 1, 1, 1, 0}));
  EXPECT_EQ(acc.fired_latents(), 4);
  EXPECT_DOUBLE_EQ(acc.dead_fraction(), 0.2);
  // A negative value does not fire; a latent named twice on one token counts once.
  acc.add(ids_from(1, 3, {4, 0, 0}), host_from(1, 3, {-1.f, 1.f, 2.f}));
  EXPECT_EQ(acc.fire_counts(), (std::vector<int64_t>{2, 1, 1, 1, 0}));
  EXPECT_DOUBLE_EQ(acc.l0(), 5.0 / 3.0);
}

TEST(Sparsity, MergeAndThreadCountIndependence) {
  const int64_t f = 50, b = 400, k = 6;
  Rng rng(11);
  Tensor ids = host_tensor(b, k, DType::I32), vals = host_tensor(b, k);
  for (int64_t i = 0; i < b * k; ++i) {
    ids.host<int32_t>()[i] = static_cast<int32_t>(rng.below(f + 1)) - 1;
    vals.host<float>()[i] = static_cast<float>(rng.normal());
  }
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  SparsityAccumulator one(f);
  one.add(ids, vals);
  omp_set_num_threads(4);
  SparsityAccumulator four(f);
  four.add(ids, vals);
  omp_set_num_threads(saved);
  EXPECT_EQ(one.fire_counts(), four.fire_counts());
  EXPECT_EQ(one.active_entries(), four.active_entries());

  SparsityAccumulator a(f), c(f);
  a.add(ids.row_range(0, 150), vals.row_range(0, 150));
  c.add(ids.row_range(150, b), vals.row_range(150, b));
  a.merge(c);
  EXPECT_EQ(a.fire_counts(), one.fire_counts());
  EXPECT_EQ(a.tokens(), b);
  EXPECT_EQ(a.l0(), one.l0());
}

TEST(Sparsity, Errors) {
  SparsityAccumulator acc(4);
  EXPECT_THROW(acc.l0(), Error);
  EXPECT_DOUBLE_EQ(acc.dead_fraction(), 1.0);
  try {
    acc.add(ids_from(1, 2, {1, 4}), host_from(1, 2, {1, 1}));
    FAIL() << "id 4 of a 4-latent dictionary accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("latent id 4 at [0, 1]"), std::string::npos) << e.what();
  }
  EXPECT_THROW(acc.add(ids_from(1, 2, {1, -2}), host_from(1, 2, {1, 1})), Error);
  EXPECT_THROW(acc.add(ids_from(1, 2, {1, 2}), host_from(1, 1, {1})), Error);
  EXPECT_THROW(acc.add(host_from(1, 2, {1, 2}), host_from(1, 2, {1, 1})), Error);  // f32 ids
  EXPECT_THROW(acc.merge(SparsityAccumulator(5)), Error);
}

TEST(ExpertLoad, UniformHasEntropyLogE) {
  for (int e : {1, 2, 8, 64}) {
    ExpertLoad load = expert_load_from_counts(std::vector<int64_t>(static_cast<size_t>(e), 123));
    EXPECT_NEAR(load.entropy, std::log(double(e)), 1e-12) << e;
    EXPECT_NEAR(load.normalized_entropy, 1.0, 1e-12) << e;
    EXPECT_DOUBLE_EQ(load.max_min_ratio, 1.0);
    EXPECT_EQ(load.idle_experts, 0);
    for (double f : load.fractions) EXPECT_NEAR(f, 1.0 / e, 1e-15);
  }
}

TEST(ExpertLoad, HandComputedSkewedLoad) {
  ExpertLoad load = expert_load_from_counts({3, 1, 0, 0});
  const double h = -(0.75 * std::log(0.75) + 0.25 * std::log(0.25));
  EXPECT_EQ(load.fractions, (std::vector<double>{0.75, 0.25, 0.0, 0.0}));
  EXPECT_NEAR(load.entropy, h, 1e-15);
  EXPECT_NEAR(load.normalized_entropy, h / std::log(4.0), 1e-15);
  EXPECT_EQ(load.idle_experts, 2);
  EXPECT_EQ(load.max_min_ratio, std::numeric_limits<double>::infinity());

  ExpertLoad from_fractions = expert_load_from_fractions({0.2, 0.6, 0.2});  // already normalised
  EXPECT_NEAR(from_fractions.max_min_ratio, 3.0, 1e-12);
  ExpertLoad scaled = expert_load_from_fractions({1.0, 3.0, 1.0});  // normalised first
  EXPECT_NEAR(scaled.entropy, from_fractions.entropy, 1e-15);
}

TEST(ExpertLoad, CountsFromRoutingAndErrors) {
  std::vector<int64_t> counts(3, 0);
  accumulate_expert_counts(ids_from(3, 2, {0, 2, 2, -1, 1, 2}), counts);
  EXPECT_EQ(counts, (std::vector<int64_t>{1, 1, 3}));
  EXPECT_THROW(accumulate_expert_counts(ids_from(1, 2, {0, 3}), counts), Error);
  EXPECT_THROW(expert_load_from_counts({0, 0}), Error);
  EXPECT_THROW(expert_load_from_counts({}), Error);
  EXPECT_THROW(expert_load_from_counts({1, -1}), Error);
  EXPECT_THROW(expert_load_from_fractions({0.5, std::nan("")}), Error);
}
