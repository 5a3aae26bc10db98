// moesae parallel: the layout of a multi-rank training run (config section `parallel`). P ranks form
// data_parallel groups of expert_parallel ranks each: the experts of a mixture-of-experts model are sharded over
// the ranks of a group, and the groups hold replicas. Every rank trains its own share (batch_size / P rows) of
// each batch. 0 = automatic: all ranks expert-parallel for Switch and Scale SAEs, data-parallel for the others.
// Both are left out of the written configuration while automatic, so a run resumes at another rank count.
#pragma once
#include <string>

namespace moesae {

struct ParallelConfig {
  int expert_parallel = 0;
  int data_parallel = 0;
};

// The layout for `ranks` ranks: fills in the automatic values, and fails with one message when the given ones
// do not multiply to `ranks`, or when expert parallelism is asked of a model without experts (moe == false) or
// over more ranks than it has experts.
ParallelConfig resolve_layout(const ParallelConfig& asked, int ranks, bool moe, int experts);
std::string describe_layout(const ParallelConfig& layout);

}  // namespace moesae
