// moesae eval: how evenly a router spreads tokens over experts (load balance; cf. the load-balancing loss, Eq. 2.2).
// From per-expert counts of (token, slot) routings, or from fractions: normalised fractions, their entropy H
// (natural log; log E for a uniform load), H / log E (1 = uniform), and max/min ratio (+inf if an expert is idle).
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace moesae {

struct ExpertLoad {
  std::vector<double> fractions;      // sum to 1
  double entropy = 0;                 // -sum f ln f (0 ln 0 = 0)
  double normalized_entropy = 1;      // entropy / ln E; 1 when E = 1
  double max_min_ratio = 1;           // max f / min f; +inf when some expert got nothing
  int64_t idle_experts = 0;           // experts with a zero fraction
};

// counts: per-expert routing counts (>= 0, not all 0).
ExpertLoad expert_load_from_counts(const std::vector<int64_t>& counts);
// fractions: non-negative, finite, not all 0; normalised to sum 1 first.
ExpertLoad expert_load_from_fractions(const std::vector<double>& fractions);

// counts[e] += number of entries equal to e in the routing `experts` (host i32 [B, e_active]; -1 entries are
// skipped). `counts` must already have one entry per expert; fails on an id outside [-1, counts.size()).
void accumulate_expert_counts(const Tensor& experts, std::vector<int64_t>& counts);

}  // namespace moesae
