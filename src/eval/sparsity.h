// moesae eval: sparsity of the codes over an evaluation set.
//   L0 = mean over tokens of the number of distinct latents with a positive activation (the true L0, counted from the sparse
//        code, unlike the reference code which counts the pre-TopK ReLU outputs, §1.6);
//   per-latent firing counts -> dead fraction = fraction of latents that never fired on the evaluation set.
// Sparse codes as the models produce them: ids i32 [B, k] (-1: empty slot), vals f32 [B, k]; an entry counts when
// its id is >= 0 and its value is > 0.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace moesae {

class SparsityAccumulator {
 public:
  explicit SparsityAccumulator(int64_t dict_size);

  // ids: host i32 [B, k]; vals: host f32 [B, k]. Fails on an id outside [-1, dict_size).
  void add(const Tensor& ids, const Tensor& vals);
  // Adds another accumulator's tokens and firing counts (same dict_size).
  void merge(const SparsityAccumulator& other);

  int64_t dict_size() const { return static_cast<int64_t>(fire_counts_.size()); }
  int64_t tokens() const { return tokens_; }
  int64_t active_entries() const { return active_; }  // sum over tokens of the active-latent counts
  double l0() const;                                  // active_entries / tokens; fails before any token
  // Tokens on which each latent fired (at most once per token, even if a code names a latent twice).
  const std::vector<int64_t>& fire_counts() const { return fire_counts_; }
  int64_t fired_latents() const;  // latents that fired at least once
  double dead_fraction() const;   // 1 - fired_latents / dict_size

 private:
  int64_t tokens_ = 0;
  int64_t active_ = 0;
  std::vector<int64_t> fire_counts_;
};

}  // namespace moesae
