// moesae eval: evaluation settings (the `eval:` section of a run config).
#pragma once
#include <cstdint>

namespace moesae {

struct EvalConfig {
  double redundancy_threshold = 0.9;  // a latent is redundant if its max decoder cosine to another is > this (§3.8.4)
  double recovered_threshold = 0.9;   // a true feature is recovered if its best learned cosine is > this
  int64_t max_tokens = 0;             // held-out tokens per evaluation (0: the whole held-out split)
  int64_t batch_size = 0;             // tokens per evaluation batch (0: train.batch_size)
};

}  // namespace moesae
