// moesae training: one optimizer step, in the order every caller takes it (the Trainer, the benchmarks, the CUDA
// tests): decoder constraint, forward, backward, the gradients' all-reduce (data parallelism), clipping, gradient
// projection, Adam, dead-latent counters, and last the step's statistics.
// On CUDA the host waits inside the step only where it must decide something: the routing counts (mixture-of-
// experts models, which size the experts' products), TopK's dead-latent count and AuxK's normalisation (while AuxK
// runs), the host-staged exchanges of data or expert parallelism; then once at the end, for the statistics and the
// gradient norm together (see Backend::Pending).
#pragma once
#include <functional>

#include "comm/communicator.h"
#include "sae/sae.h"
#include "train/adam.h"

namespace moesae {

struct StepOptions {
  double lr = 0;
  double grad_clip = 0;                    // global L2 norm; <= 0: no clipping (TrainConfig::grad_clip)
  comm::Communicator* shards = nullptr;    // expert parallelism: the ranks the sharded parameters span
  std::function<void()> reduce_gradients;  // data parallelism: after backward, before clipping
};

struct StepResult {
  SaeStats stats;         // this process's (the Trainer reduces them over a data-parallel group)
  double grad_norm = 0;   // before clipping
};

// One step on the batch x [B, d] (a backend tensor).
StepResult train_step(Sae& sae, Adam& adam, const Tensor& x, const StepOptions& options);

}  // namespace moesae
