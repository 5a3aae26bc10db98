// The CPU reference backend's operations against naive loops, and bit-identical results for 1 and 2 threads.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/backend.h"
#include "sae_test_util.h"

using namespace moesae;
using namespace moesae::testing;

namespace {

Tensor random_ids(int64_t rows, int64_t cols, int32_t limit, uint64_t seed, bool with_empty) {
  Tensor t = host_tensor(rows, cols, DType::I32);
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.host<int32_t>()[i] = (with_empty && rng.uniform() < 0.1) ? -1 : int32_t(rng.below(limit));
  return t;
}

float at(const Tensor& t, int64_t r, int64_t c) { return t.host<float>()[r * t.ld() + c]; }
int32_t iat(const Tensor& t, int64_t r, int64_t c) { return t.host<int32_t>()[r * t.ld() + c]; }

}  // namespace

TEST(CpuBackend, TopKTiesPreferSmallerIndex) {
  auto be = make_cpu_backend(1);
  Tensor x = host_tensor(1, 6);
  float v[6] = {1.f, 3.f, 3.f, 2.f, 3.f, 0.f};
  std::copy(v, v + 6, x.host<float>());
  Tensor vals = host_tensor(1, 4), idx = host_tensor(1, 4, DType::I32);
  be->topk_rows(x, 4, vals, idx);
  EXPECT_EQ(std::vector<int32_t>(idx.host<int32_t>(), idx.host<int32_t>() + 4), (std::vector<int32_t>{1, 2, 4, 3}));
  EXPECT_EQ(vals.host<float>()[3], 2.f);
}

TEST(CpuBackend, TopKMatchesSortAndHonoursMask) {
  auto be = make_cpu_backend(2);
  const int B = 7, N = 300, k = 11;
  Tensor x = random_host(B, N, 3);
  for (int i = 0; i < B * N; i += 7) x.host<float>()[i] = 0.5f;  // plenty of ties
  Tensor mask = host_vector(N, DType::I32);
  for (int j = 0; j < N; ++j) mask.host<int32_t>()[j] = (j % 3 != 0);
  for (bool masked : {false, true}) {
    Tensor vals = host_tensor(B, k), idx = host_tensor(B, k, DType::I32);
    be->topk_rows(x, k, vals, idx, masked ? &mask : nullptr);
    for (int b = 0; b < B; ++b) {
      std::vector<int> order;
      for (int j = 0; j < N; ++j)
        if (!masked || j % 3 != 0) order.push_back(j);
      std::stable_sort(order.begin(), order.end(), [&](int a, int c) { return at(x, b, a) > at(x, b, c); });
      for (int j = 0; j < k; ++j) {
        EXPECT_EQ(iat(idx, b, j), order[j]) << "row " << b << " slot " << j;
        EXPECT_EQ(at(vals, b, j), at(x, b, order[j]));
      }
    }
  }
}

TEST(CpuBackend, TopKWithFewerCandidatesThanKPadsEmptySlots) {
  auto be = make_cpu_backend(1);
  Tensor x = random_host(2, 5, 1);
  Tensor mask = host_vector(5, DType::I32);
  mask.host<int32_t>()[1] = mask.host<int32_t>()[4] = 1;
  Tensor vals = host_tensor(2, 3), idx = host_tensor(2, 3, DType::I32);
  be->topk_rows(x, 3, vals, idx, &mask);
  for (int b = 0; b < 2; ++b) {
    EXPECT_EQ(iat(idx, b, 2), -1);
    EXPECT_EQ(at(vals, b, 2), 0.f);
    EXPECT_TRUE((iat(idx, b, 0) == 1 || iat(idx, b, 0) == 4));
  }
}

TEST(CpuBackend, SparseOpsMatchDenseLoops) {
  auto be = make_cpu_backend(2);
  const int B = 9, k = 5, F = 40, d = 13;
  Tensor coef = random_host(B, k, 1), x = random_host(B, d, 2), w = random_host(F, d, 3);
  Tensor ids = random_ids(B, k, F, 4, true);
  Tensor out = host_tensor(B, d), dots = host_tensor(B, k), g = host_tensor(F, d);
  be->sparse_rows_matmul(coef, ids, w, 0.f, out);
  be->sparse_rows_dot(x, ids, w, dots);
  be->sparse_rows_outer_add(coef, ids, x, 0.5f, g);
  std::vector<double> gref(F * d, 0.0);
  for (int b = 0; b < B; ++b) {
    for (int t = 0; t < d; ++t) {
      double s = 0;
      for (int j = 0; j < k; ++j)
        if (iat(ids, b, j) >= 0) s += double(at(coef, b, j)) * at(w, iat(ids, b, j), t);
      EXPECT_NEAR(at(out, b, t), s, 1e-5);
    }
    for (int j = 0; j < k; ++j) {
      const int f = iat(ids, b, j);
      double s = 0;
      if (f >= 0)
        for (int t = 0; t < d; ++t) {
          s += double(at(x, b, t)) * at(w, f, t);
          gref[f * d + t] += 0.5 * at(coef, b, j) * at(x, b, t);
        }
      EXPECT_NEAR(at(dots, b, j), s, 1e-5);
    }
  }
  for (int i = 0; i < F * d; ++i) EXPECT_NEAR(g.host<float>()[i], gref[i], 1e-5);
}

// Both gemm paths (plain BLAS, and split-K for a small output with a long inner dimension), every transpose.
TEST(CpuBackend, GemmMatchesNaiveProductOnBothPaths) {
  auto be = make_cpu_backend(2);
  for (int64_t K : {37, 9000}) {
    const int64_t m = 5, n = 7;
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        Tensor a = ta ? random_host(K, m, 1) : random_host(m, K, 1);
        Tensor b = tb ? random_host(n, K, 2) : random_host(K, n, 2);
        Tensor c = random_host(m, n, 3), c0 = random_host(m, n, 3);
        be->gemm(ta, tb, 0.5f, a, b, 2.f, c);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double s = 0;
            for (int64_t q = 0; q < K; ++q) s += double(ta ? at(a, q, i) : at(a, i, q)) * (tb ? at(b, j, q) : at(b, q, j));
            EXPECT_NEAR(at(c, i, j), 0.5 * s + 2.0 * at(c0, i, j), 1e-3 * (1 + std::fabs(s)))
                << "K=" << K << " ta=" << ta << " tb=" << tb;
          }
      }
  }
}

TEST(CpuBackend, GroupByExpertIsAStablePermutation) {
  auto be = make_cpu_backend(1);
  const int B = 20, e = 3, E = 6;
  Tensor experts = host_tensor(B, e, DType::I32);
  Rng rng(5);
  for (int b = 0; b < B; ++b) {
    std::vector<int> all(E);
    std::iota(all.begin(), all.end(), 0);
    for (int s = 0; s < e; ++s) std::swap(all[s], all[s + rng.below(E - s)]);
    std::sort(all.begin(), all.begin() + e);
    for (int s = 0; s < e; ++s) experts.host<int32_t>()[b * e + s] = all[s];
  }
  ExpertGroups g = be->group_by_expert(experts, E);
  ASSERT_EQ(g.offsets.back(), B * e);
  std::vector<int> seen(B * e, 0);
  for (int i = 0; i < E; ++i)
    for (int64_t r = g.offsets[i]; r < g.offsets[i + 1]; ++r) {
      const int tok = g.tokens.host<int32_t>()[r], row = g.cand_rows.host<int32_t>()[r];
      EXPECT_EQ(row / e, tok);
      EXPECT_EQ(experts.host<int32_t>()[row], i);
      if (r > g.offsets[i]) EXPECT_GT(tok, g.tokens.host<int32_t>()[r - 1]);
      ++seen[row];
    }
  for (int v : seen) EXPECT_EQ(v, 1);
}

TEST(CpuBackend, ColumnGatherScatterAndCandidateMapping) {
  auto be = make_cpu_backend(1);
  Tensor src = random_host(3, 4, 1);
  Tensor col = host_tensor(3, 2, DType::I32);
  int32_t c[6] = {3, -1, 0, 0, 2, 1};
  std::copy(c, c + 6, col.host<int32_t>());
  Tensor out = host_tensor(3, 2);
  be->gather_cols(src, col, out);
  EXPECT_EQ(at(out, 0, 0), at(src, 0, 3));
  EXPECT_EQ(at(out, 0, 1), 0.f);
  Tensor acc = host_tensor(3, 4);
  be->scatter_add_cols(out, col, acc);
  EXPECT_FLOAT_EQ(at(acc, 1, 0), 2 * at(src, 1, 0));
  // Candidates: token 0 chose experts {1, 3} with n = 4 latents each.
  Tensor experts = host_tensor(1, 2, DType::I32);
  experts.host<int32_t>()[0] = 1;
  experts.host<int32_t>()[1] = 3;
  Tensor cand = host_tensor(1, 3, DType::I32), lat = host_tensor(1, 3, DType::I32), slots = host_tensor(1, 3, DType::I32);
  int32_t cc[3] = {5, 2, -1};
  std::copy(cc, cc + 3, cand.host<int32_t>());
  be->candidates_to_latents(cand, experts, 4, lat, slots);
  EXPECT_EQ(iat(lat, 0, 0), 13);
  EXPECT_EQ(iat(slots, 0, 0), 1);
  EXPECT_EQ(iat(lat, 0, 1), 6);
  EXPECT_EQ(iat(lat, 0, 2), -1);
}

TEST(CpuBackend, DecoderConstraintAndAdam) {
  auto be = make_cpu_backend(1);
  Tensor w = random_host(5, 7, 1), g = random_host(5, 7, 2);
  be->normalize_rows(w, 0.f);
  be->project_out_rows(g, w);
  for (int r = 0; r < 5; ++r) {
    double n = 0, dp = 0;
    for (int t = 0; t < 7; ++t) {
      n += at(w, r, t) * at(w, r, t);
      dp += at(w, r, t) * at(g, r, t);
    }
    EXPECT_NEAR(n, 1.0, 1e-5);
    EXPECT_NEAR(dp, 0.0, 1e-5);
  }
  // One Adam step from zero moments moves every parameter by lr * sign(g) (bias-corrected, |g| >> eps).
  Tensor p = host_vector(4), gr = host_vector(4), m = host_vector(4), v = host_vector(4);
  float gv[4] = {0.5f, -2.f, 3.f, -0.1f};
  std::copy(gv, gv + 4, gr.host<float>());
  be->adam_step(p, gr, m, v, 0.01f, 0.9f, 0.999f, 1e-8f, 1);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(p.host<float>()[i], gv[i] > 0 ? -0.01f : 0.01f, 1e-6);
}

TEST(CpuBackend, ResultsDoNotDependOnThreadCount) {
  const int B = 64, k = 8, F = 500, d = 96;
  Tensor coef = random_host(B, k, 1), x = random_host(B, d, 2), w = random_host(F, d, 3);
  Tensor ids = random_ids(B, k, F, 4, false);
  std::vector<std::vector<float>> results;
  for (int threads : {1, 2}) {
    auto be = make_cpu_backend(threads);
    Tensor g = host_tensor(F, d), colsum = host_vector(d);
    be->sparse_rows_outer_add(coef, ids, x, 1.f, g);
    be->sum_rows(x, colsum, 1.f, 0.f);
    std::vector<float> r(g.host<float>(), g.host<float>() + g.numel());
    r.insert(r.end(), colsum.host<float>(), colsum.host<float>() + d);
    r.push_back(float(be->sum_squares(w)));
    results.push_back(r);
  }
  EXPECT_EQ(results[0], results[1]);
}

// A GEMM precision does nothing on the CPU backend: asking for one is an error rather than a silent fp32 run.
TEST(CpuBackend, GemmPrecisionOtherThanFp32IsAnError) {
  BackendOptions o;
  o.kind = BackendKind::Cpu;
  o.gemm_precision = GemmPrecision::BF16;
  try {
    make_backend(o);
    FAIL() << "make_backend accepted gemm_precision bf16 on the CPU";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("train.gemm_precision bf16 applies to train.backend: cuda only", 0), 0u)
        << e.what();
  }
  o.gemm_precision = GemmPrecision::FP32;
  EXPECT_EQ(make_backend(o)->device(), Device::CPU);
}
