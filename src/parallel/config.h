// moesae parallel: the layout of a multi-rank training run (config section `parallel`). P ranks form
// data_parallel groups of expert_parallel ranks each: the experts of a mixture-of-experts model (or the dictionary
// of a TopK SAE, in one block per rank) are sharded over the ranks of a group, and the groups hold replicas. Every
// rank trains its own share (batch_size / P rows) of each batch. 0 = automatic: all ranks expert-parallel for
// Switch and Scale SAEs, data-parallel for the others.
// Both are left out of the written configuration while automatic, so a run resumes at another rank count.
#pragma once
#include <string>

#include "sae/config.h"

namespace moesae {

struct ParallelConfig {
  int expert_parallel = 0;
  int data_parallel = 0;
};

// The layout for `ranks` ranks: fills in the automatic values, and fails with one message when the given ones
// do not multiply to `ranks`, or when expert parallelism is asked of a Gated SAE, or over more ranks than the
// model has experts (TopK: latents).
ParallelConfig resolve_layout(const ParallelConfig& asked, int ranks, const ModelConfig& model);
// "experts sharded over 2 ranks, 2 data-parallel replicas"; dictionary: a TopK SAE's latents are what is sharded.
std::string describe_layout(const ParallelConfig& layout, bool dictionary);

}  // namespace moesae
