// moesae eval: intra- vs inter-expert feature similarity (paper §3.3.1, Fig. 6a; reference-implementations.md
// §3.8.5). Both are the redundancy fraction of redundancy.h (a latent counts when its decoder row has cosine strictly
// greater than the threshold with some OTHER row of its group), with different groups:
//   intra-expert: the groups are the experts, latents [g n, (g+1) n) for g = 0..E-1 (n = F / E);
//   inter-expert: the groups are E random "experts" of the same size n: a permutation of the F latents drawn from
//                 Rng(seed) (Fisher-Yates, documented below) cut into E consecutive blocks of n.
// Each is the number of such latents over F, i.e. the mean over the E groups of the per-group fraction. The reference
// code samples 64 independent n-subsets without a seed; here the E random groups are disjoint and seeded, so the value
// is reproducible and every latent is counted exactly once (each group is still a uniform random n-subset).
// Computed per group as one n x n Gram matrix (ssyrk) of normalised rows, the groups in parallel (groups of more than
// 2048 latents go through redundancy.h's blockwise max_cosine_within_groups).
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace moesae {

// The random grouping of inter-expert similarity: a permutation p of 0..latents-1 (group g = p[g n .. (g+1) n)).
// Fisher-Yates with Rng(seed): for i = latents-1 down to 1, swap p[i] and p[Rng::below(i + 1)], starting from the
// identity. A pure function of (latents, seed).
std::vector<int64_t> random_latent_permutation(int64_t latents, uint64_t seed);

// Per-latent (original latent order) max cosine to another latent of the same random group of `group_size`
// (see random_latent_permutation). group_size must be >= 2 and divide F.
std::vector<float> max_cosine_within_random_groups(const Tensor& w_dec, int64_t group_size, uint64_t seed);

struct ExpertSimilarity {
  double intra = 0;  // intra_expert_redundancy
  double inter = 0;  // inter_expert_redundancy
};

// Both fractions for a decoder W_dec (host f32 [F, d]) of E = F / group_size experts.
ExpertSimilarity expert_similarity(const Tensor& w_dec, int64_t group_size, double threshold, uint64_t seed);

}  // namespace moesae
