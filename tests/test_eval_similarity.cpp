// Intra- vs inter-expert redundancy (§3.3.1, eval/similarity.h) and neuron activation similarity / pairwise overlaps
// (Appendix A.4 Eq. A.3, Appendix D; eval/activation_similarity.h): hand-checked cases, brute force, invariances.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <vector>

#include "core/rng.h"
#include "error_of.h"
#include "eval/activation_similarity.h"
#include "eval/redundancy.h"
#include "eval/similarity.h"

using namespace moesae;
using moesae::testing::error_of;

namespace {

Tensor rows_of(const std::vector<std::vector<float>>& rows) {
  Tensor t = host_tensor(int64_t(rows.size()), int64_t(rows[0].size()));
  for (size_t r = 0; r < rows.size(); ++r)
    for (size_t c = 0; c < rows[r].size(); ++c) t.host<float>()[r * rows[r].size() + c] = rows[r][c];
  return t;
}

Tensor random_rows(int64_t rows, int64_t cols, uint64_t seed) {
  Tensor t = host_tensor(rows, cols);
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) t.host<float>()[i] = static_cast<float>(rng.normal());
  return t;
}

// Fraction of latents whose max cosine (in double, brute force) to another latent of the same group is > threshold.
double brute_group_redundancy(const Tensor& w, const std::vector<int64_t>& group_of, double threshold) {
  const int64_t f = w.rows(), d = w.cols();
  int64_t redundant = 0;
  for (int64_t j = 0; j < f; ++j) {
    double best = -2;
    for (int64_t i = 0; i < f; ++i) {
      if (i == j || group_of[size_t(i)] != group_of[size_t(j)]) continue;
      double ab = 0, aa = 0, bb = 0;
      for (int64_t c = 0; c < d; ++c) {
        const double a = w.host<float>()[i * d + c], b = w.host<float>()[j * d + c];
        ab += a * b, aa += a * a, bb += b * b;
      }
      best = std::max(best, ab / std::sqrt(aa * bb));
    }
    redundant += best > threshold;
  }
  return double(redundant) / double(f);
}

// k_ij for every unordered pair by set intersection: the O(N^2) definition.
std::vector<int64_t> brute_overlaps(const std::vector<std::set<int32_t>>& sets, size_t bins) {
  std::vector<int64_t> h(bins, 0);
  for (size_t i = 0; i < sets.size(); ++i)
    for (size_t j = i + 1; j < sets.size(); ++j) {
      size_t k = 0;
      for (int32_t l : sets[i]) k += sets[j].count(l);
      ++h[k];
    }
  return h;
}

// Power-law latent frequencies (a few very frequent latents, a long tail), k draws per token with repeats collapsed.
std::vector<std::set<int32_t>> random_sets(int64_t n, int64_t f, int64_t k, uint64_t seed) {
  Rng rng(seed);
  std::vector<std::set<int32_t>> sets(static_cast<size_t>(n));
  for (auto& s : sets)
    for (int64_t j = 0; j < k; ++j) s.insert(static_cast<int32_t>(double(f) * std::pow(rng.uniform(), 3.0)));
  return sets;
}

ActiveSets to_active(const std::vector<std::set<int32_t>>& sets, int64_t f) {
  ActiveSets a(f);
  for (const auto& s : sets) a.add_set(std::vector<int32_t>(s.begin(), s.end()));
  return a;
}

}  // namespace

// ---- intra- vs inter-expert redundancy ------------------------------------------------------------------------------

TEST(ExpertSimilarity, HandCheckedFourLatents) {
  // Latents 0 and 1 are near-duplicates (cosine 0.99995); 2 and 3 are orthogonal to everything.
  const Tensor w = rows_of({{1, 0, 0, 0}, {1, 0.01f, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}});
  int same = 0, apart = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const ExpertSimilarity s = expert_similarity(w, 2, 0.9, seed);
    EXPECT_DOUBLE_EQ(s.intra, 0.5);  // experts {0, 1} and {2, 3}: latents 0 and 1 are redundant
    const std::vector<int64_t> p = random_latent_permutation(4, seed);
    const bool together = (p[0] + p[1] == 1 && std::min(p[0], p[1]) == 0) || (p[2] + p[3] == 1 && std::min(p[2], p[3]) == 0);
    EXPECT_DOUBLE_EQ(s.inter, together ? 0.5 : 0.0) << "seed " << seed;
    (together ? same : apart)++;
  }
  EXPECT_GT(same, 0);  // P(together) = 1/3: both outcomes occur over 40 seeds
  EXPECT_GT(apart, 0);
}

TEST(ExpertSimilarity, PermutationIsTheDocumentedFisherYates) {
  for (uint64_t seed : {0ull, 1ull, 12345ull}) {
    std::vector<int64_t> want(1000);
    std::iota(want.begin(), want.end(), 0);
    Rng rng(seed);
    for (int64_t i = 999; i > 0; --i) std::swap(want[size_t(i)], want[rng.below(uint64_t(i + 1))]);
    EXPECT_EQ(random_latent_permutation(1000, seed), want);
  }
  EXPECT_NE(random_latent_permutation(1000, 0), random_latent_permutation(1000, 1));
  EXPECT_TRUE(random_latent_permutation(0, 3).empty());
}

TEST(ExpertSimilarity, MatchesBruteForceWithPlantedDuplicates) {
  const int64_t f = 96, d = 12, n = 8;  // 12 experts of 8
  Tensor w = random_rows(f, d, 7);
  Rng rng(3);
  // Duplicates inside experts (0~1, 17~20) and across experts (2~50, 40~90).
  for (auto [src, dst] : std::vector<std::pair<int, int>>{{0, 1}, {17, 20}, {2, 50}, {40, 90}})
    for (int64_t c = 0; c < d; ++c)
      w.host<float>()[dst * d + c] = 2.f * w.host<float>()[src * d + c] + 0.01f * float(rng.normal());
  std::vector<int64_t> expert(f), random_group(f);
  for (int64_t l = 0; l < f; ++l) expert[size_t(l)] = l / n;
  const std::vector<int64_t> p = random_latent_permutation(f, 5);
  for (int64_t r = 0; r < f; ++r) random_group[size_t(p[size_t(r)])] = r / n;
  const ExpertSimilarity s = expert_similarity(w, n, 0.9, 5);
  EXPECT_DOUBLE_EQ(s.intra, 4.0 / 96.0);
  EXPECT_DOUBLE_EQ(s.intra, brute_group_redundancy(w, expert, 0.9));
  EXPECT_DOUBLE_EQ(s.inter, brute_group_redundancy(w, random_group, 0.9));
  // Per latent, the random-group maxima equal the brute force's (the groups are the permutation's blocks).
  const std::vector<float> m = max_cosine_within_random_groups(w, n, 5);
  ASSERT_EQ(m.size(), size_t(f));
  for (int64_t j = 0; j < f; ++j) {
    double best = -2;
    for (int64_t i = 0; i < f; ++i) {
      if (i == j || random_group[size_t(i)] != random_group[size_t(j)]) continue;
      double ab = 0, aa = 0, bb = 0;
      for (int64_t c = 0; c < d; ++c) {
        const double a = w.host<float>()[i * d + c], b = w.host<float>()[j * d + c];
        ab += a * b, aa += a * a, bb += b * b;
      }
      best = std::max(best, ab / std::sqrt(aa * bb));
    }
    EXPECT_NEAR(m[size_t(j)], best, 1e-5) << "latent " << j;
  }
}

TEST(ExpertSimilarity, InvariantToLatentOrderWithinExpertsAndToScale) {
  const int64_t f = 64, d = 10, n = 16;
  Tensor w = random_rows(f, d, 11);
  for (int64_t c = 0; c < d; ++c) w.host<float>()[5 * d + c] = w.host<float>()[3 * d + c];  // duplicate in expert 0
  const double intra = expert_similarity(w, n, 0.9, 0).intra;
  Tensor shuffled = host_tensor(f, d);
  Rng rng(2);
  for (int64_t g = 0; g < f / n; ++g) {
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), g * n);
    for (int64_t i = n - 1; i > 0; --i) std::swap(order[size_t(i)], order[rng.below(uint64_t(i + 1))]);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < d; ++c)
        shuffled.host<float>()[(g * n + i) * d + c] = 3.f * w.host<float>()[order[size_t(i)] * d + c];
  }
  EXPECT_DOUBLE_EQ(expert_similarity(shuffled, n, 0.9, 0).intra, intra);
  EXPECT_DOUBLE_EQ(intra, 2.0 / 64.0);
  // Every latent a copy of one direction: all redundant in every grouping; mutually orthogonal: none.
  Tensor same = host_tensor(8, 3), ortho = host_tensor(8, 8);
  for (int64_t r = 0; r < 8; ++r) {
    for (int64_t c = 0; c < 3; ++c) same.host<float>()[r * 3 + c] = float(c + 1) * float(r + 1);
    for (int64_t c = 0; c < 8; ++c) ortho.host<float>()[r * 8 + c] = r == c ? 1.f : 0.f;
  }
  const ExpertSimilarity s1 = expert_similarity(same, 2, 0.9, 9), s0 = expert_similarity(ortho, 4, 0.9, 9);
  EXPECT_DOUBLE_EQ(s1.intra, 1.0);
  EXPECT_DOUBLE_EQ(s1.inter, 1.0);
  EXPECT_DOUBLE_EQ(s0.intra, 0.0);
  EXPECT_DOUBLE_EQ(s0.inter, 0.0);
}

TEST(ExpertSimilarity, Errors) {
  const Tensor w = random_rows(12, 4, 1);
  EXPECT_EQ(error_of([&] { expert_similarity(w, 5, 0.9, 0); }),
            "intra-expert redundancy: group size 5 must be >= 2 and divide the 12 latents of W_dec");
  EXPECT_EQ(error_of([&] { max_cosine_within_random_groups(w, 1, 0); }),
            "inter-expert redundancy: group size 1 must be >= 2 and divide the 12 latents of W_dec");
  EXPECT_EQ(error_of([&] { max_cosine_within_random_groups(Tensor(), 2, 0); }),
            "inter-expert redundancy: W_dec is undefined");
}

// ---- activation similarity (Eq. A.3) and the distribution of k_ij (Appendix D) ------------------------------------

TEST(ActivationSimilarity, HandCheckedFourTokens) {
  // S0 = {1, 2}, S1 = {2, 3}, S2 = {1, 2, 3}, S3 = {}:
  //   k_01 = 1, k_02 = 2, k_03 = 0, k_12 = 2, k_13 = 0, k_23 = 0  ->  histogram [3, 1, 2], sum 5 over 6 pairs.
  ActiveSets s(4);
  s.add_set({1, 2});
  s.add_set({3, 2, 2});  // order and duplicates do not matter
  s.add_set({1, 2, 3});
  s.add_set({});
  const OverlapDistribution d = overlap_distribution(s, 2.0);
  EXPECT_EQ(d.pairs_with_overlap, (std::vector<int64_t>{3, 1, 2, 0}));  // bins 0 .. max |S_i| = 3
  EXPECT_EQ(d.pairs, 6);
  EXPECT_EQ(d.shared, 5);
  EXPECT_DOUBLE_EQ(d.mean_overlap, 5.0 / 6.0);
  EXPECT_DOUBLE_EQ(d.similarity, 5.0 / 12.0);  // Eq. A.3: (1 / (4 * 3)) * (2 * 5) / 2
  EXPECT_EQ(d.fractions(), (std::vector<double>{0.5, 1.0 / 6.0, 2.0 / 6.0, 0.0}));
  // By counting: c = [0, 2, 3, 2], sum c (c - 1) = 10 = sum_{i != j} k_ij.
  EXPECT_EQ(s.fire_counts(), (std::vector<int64_t>{0, 2, 3, 2}));
  EXPECT_DOUBLE_EQ(activation_similarity_from_counts(s.fire_counts(), 4, 2.0), 5.0 / 12.0);
  EXPECT_DOUBLE_EQ(s.mean_size(), 7.0 / 4.0);
}

TEST(ActivationSimilarity, SparseCodeInputCountsPositiveEntriesOnce) {
  // ids [2, 4]: token 0 names latent 3 twice and has an empty slot; token 1 has a zero and a negative activation.
  Tensor ids = host_tensor(2, 4, DType::I32), vals = host_tensor(2, 4);
  const int32_t i[] = {3, 3, -1, 0, 1, 2, 3, 0};
  const float v[] = {1.f, 2.f, 5.f, 0.5f, 0.f, -1.f, 4.f, 3.f};
  std::copy(i, i + 8, ids.host<int32_t>());
  std::copy(v, v + 8, vals.host<float>());
  ActiveSets s(5);
  s.add(ids, vals);
  ASSERT_EQ(s.tokens(), 2);
  EXPECT_EQ(std::vector<int32_t>(s.latents(0), s.latents(0) + s.size(0)), (std::vector<int32_t>{0, 3}));
  EXPECT_EQ(std::vector<int32_t>(s.latents(1), s.latents(1) + s.size(1)), (std::vector<int32_t>{0, 3}));
  EXPECT_EQ(overlap_distribution(s, 2.0).pairs_with_overlap, (std::vector<int64_t>{0, 0, 1}));
  s.add(ids, vals, 1);  // only the first row
  EXPECT_EQ(s.tokens(), 3);
}

TEST(ActivationSimilarity, ExactAgainstPairwiseIntersectionsAtAnyThreadCount) {
  const int64_t n = 700, f = 300, k = 12;
  const auto sets = random_sets(n, f, k, 4);
  const ActiveSets a = to_active(sets, f);
  const std::vector<int64_t> want = brute_overlaps(sets, size_t(a.max_size()) + 1);
  const int threads = omp_get_max_threads();
  for (int t : {1, 2, 3}) {
    omp_set_num_threads(t);
    const OverlapDistribution d = overlap_distribution(a, double(k));
    EXPECT_EQ(d.pairs_with_overlap, want) << t << " threads";
    EXPECT_EQ(d.pairs, n * (n - 1) / 2);
    // The histogram's mean is Eq. A.3 by counting.
    EXPECT_NEAR(d.similarity, activation_similarity_from_counts(a.fire_counts(), n, double(k)), 1e-15);
  }
  omp_set_num_threads(threads);
}

TEST(ActivationSimilarity, InvariantToRelabellingLatentsAndReorderingTokens) {
  const int64_t n = 400, f = 128, k = 8;
  const auto sets = random_sets(n, f, k, 8);
  const OverlapDistribution base = overlap_distribution(to_active(sets, f), double(k));
  std::vector<int32_t> relabel(f);
  std::iota(relabel.begin(), relabel.end(), 0);
  Rng rng(1);
  for (int64_t i = f - 1; i > 0; --i) std::swap(relabel[size_t(i)], relabel[rng.below(uint64_t(i + 1))]);
  std::vector<std::set<int32_t>> moved;
  for (size_t t = sets.size(); t-- > 0;) {  // tokens reversed, latents relabelled
    std::set<int32_t> s;
    for (int32_t l : sets[t]) s.insert(relabel[size_t(l)]);
    moved.push_back(s);
  }
  const OverlapDistribution other = overlap_distribution(to_active(moved, f), double(k));
  EXPECT_EQ(other.pairs_with_overlap, base.pairs_with_overlap);
  EXPECT_DOUBLE_EQ(other.similarity, base.similarity);
  // Identical tokens: every pair overlaps fully; disjoint tokens: never.
  ActiveSets same(10), disjoint(10);
  for (int t = 0; t < 5; ++t) {
    same.add_set({1, 4, 7});
    disjoint.add_set({t * 2, t * 2 + 1});
  }
  EXPECT_DOUBLE_EQ(overlap_distribution(same, 3.0).similarity, 1.0);
  EXPECT_EQ(overlap_distribution(same, 3.0).pairs_with_overlap, (std::vector<int64_t>{0, 0, 0, 10}));
  EXPECT_DOUBLE_EQ(overlap_distribution(disjoint, 2.0).similarity, 0.0);
  EXPECT_DOUBLE_EQ(activation_similarity_from_counts(same.fire_counts(), 5, 3.0), 1.0);
}

TEST(ActivationSimilarity, Errors) {
  ActiveSets one(4);
  one.add_set({1});
  EXPECT_EQ(error_of([&] { overlap_distribution(one, 1.0); }),
            "overlap distribution (Appendix D) needs at least 2 tokens (got 1)");
  one.add_set({2});
  EXPECT_EQ(error_of([&] { overlap_distribution(one, 0.0); }),
            "overlap distribution (Appendix D): K_total must be positive (got 0)");
  EXPECT_EQ(error_of([&] { activation_similarity_from_counts({1, 2}, 1, 1.0); }),
            "activation similarity (Eq. A.3) needs at least 2 tokens (got 1)");
  EXPECT_EQ(error_of([&] { activation_similarity_from_counts({1, 5}, 4, 1.0); }),
            "activation similarity (Eq. A.3): latent 1 fires on 5 of 4 tokens");
  EXPECT_EQ(error_of([&] { one.add_set({4}); }), "activation similarity: latent id 4 of token 2 is outside [0, 4)");
  EXPECT_EQ(one.tokens(), 2);  // a refused token is not added
  Tensor ids = host_tensor(1, 2, DType::I32), vals = host_tensor(1, 2);
  ids.host<int32_t>()[0] = -2;
  EXPECT_EQ(error_of([&] { one.add(ids, vals); }), "activation similarity: latent id -2 of token 2 is outside [-1, 4)");
  EXPECT_EQ(error_of([&] { one.add(vals, vals); }),
            "activation similarity: expected host i32 ids and host f32 vals (got cpu f32 and cpu f32)");
  EXPECT_EQ(error_of([] { ActiveSets bad(0); }), "activation similarity: dict_size must be positive (got 0)");
}
