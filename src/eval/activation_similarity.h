// moesae eval: neuron activation similarity (paper §3.3.2, Appendix A.4 Eq. A.3, Fig. 7) and the distribution of
// pairwise overlaps k_ij (Appendix D, Fig. 11).
//
// Definitions (the paper's, over TOKEN pairs). S_i = the set of latents active on token i (id >= 0 and z > 0 in the
// sparse code; a latent named twice counts once). For two tokens i != j, k_ij = |S_i ∩ S_j| ("the number of common
// neurons activated by both token i and token j"). Over N tokens:
//   Similarity = 1 / (N (N - 1)) * sum_{i != j} k_ij / K_total                                      (Eq. A.3)
// with K_total "the total number of neurons activated per token (e.g. the value of K in a TopK SAE)". The overlap
// distribution is the histogram of k_ij over the N (N - 1) / 2 unordered pairs i < j (Appendix D).
//
// Exact, by counting instead of N^2 set intersections:
//   - Eq. A.3: sum_{i != j} k_ij = sum_f c_f (c_f - 1), c_f = the number of tokens on which latent f is active (each
//     shared latent of a pair is one ordered pair of its c_f tokens). O(N k + F) time, O(F) memory, any N.
//   - the histogram: an inverted index (for each latent, its tokens in increasing order); for each token i, every
//     latent f of S_i adds 1 to a counter of each later token j > i in f's list, so the counters hold k_ij for every
//     j that shares a latent with i; the pairs with k_ij = 0 are the rest. Work = sum_f c_f (c_f - 1) / 2 (the shared
//     (pair, latent) incidences = N (N - 1) / 2 * mean k_ij), not N^2 k; memory = the index (N k ids + positions) and
//     one u32 counter per token per thread. Integer counts: the result does not depend on the thread count.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace moesae {

// Active-latent sets of a sequence of tokens, stored compressed (CSR: offsets [N + 1], sorted unique latent ids).
class ActiveSets {
 public:
  explicit ActiveSets(int64_t dict_size);

  // Appends the tokens of a sparse code: ids host i32 [B, k] (-1: empty slot), vals host f32 [B, k]; only the first
  // `rows` rows when rows >= 0. Fails on a shape or type mismatch and on an id outside [-1, dict_size).
  void add(const Tensor& ids, const Tensor& vals, int64_t rows = -1);
  // Appends one token from k (id, value) pairs.
  void add_row(const int32_t* ids, const float* vals, int64_t k);
  // Appends one token given its active latents directly (any order, duplicates allowed).
  void add_set(const std::vector<int32_t>& latents);

  int64_t dict_size() const { return dict_size_; }
  int64_t tokens() const { return static_cast<int64_t>(offsets_.size()) - 1; }
  int64_t size(int64_t token) const { return offsets_[static_cast<size_t>(token) + 1] - offsets_[static_cast<size_t>(token)]; }
  const int32_t* latents(int64_t token) const { return ids_.data() + offsets_[static_cast<size_t>(token)]; }
  int64_t max_size() const { return max_size_; }
  double mean_size() const;  // mean |S_i| (the L0 of these tokens); fails without tokens
  // c_f: the number of tokens on which each latent is active.
  std::vector<int64_t> fire_counts() const;

 private:
  void finish_row(size_t begin);
  int64_t dict_size_;
  std::vector<int64_t> offsets_{0};
  std::vector<int32_t> ids_;
  int64_t max_size_ = 0;
};

// Eq. A.3 from the per-latent counts c_f of N = `tokens` tokens: sum_f c_f (c_f - 1) / (N (N - 1) K_total).
// Fails for N < 2, K_total <= 0, a negative count or a count above N.
double activation_similarity_from_counts(const std::vector<int64_t>& fire_counts, int64_t tokens, double k_total);

struct OverlapDistribution {
  std::vector<int64_t> pairs_with_overlap;  // [m] = unordered token pairs with k_ij = m, m = 0 .. max |S_i|
  int64_t pairs = 0;                         // N (N - 1) / 2
  int64_t shared = 0;                        // sum over pairs of k_ij (= sum_f c_f (c_f - 1) / 2)
  double mean_overlap = 0;                   // shared / pairs
  double similarity = 0;                     // Eq. A.3 = mean_overlap / K_total
  std::vector<double> fractions() const;     // pairs_with_overlap / pairs (sums to 1)
};

// The exact distribution of k_ij over all unordered pairs of `sets` (N >= 2 tokens), and Eq. A.3 over them.
OverlapDistribution overlap_distribution(const ActiveSets& sets, double k_total);

}  // namespace moesae
