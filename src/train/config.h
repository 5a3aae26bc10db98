// moesae training: optimisation settings. Defaults follow the reference trainers (reference-implementations.md §1.3).
#pragma once
#include <cstdint>
#include <string>

#include "backend/backend.h"

namespace moesae {

struct TrainConfig {
  int64_t steps = 1000;
  int64_t batch_size = 8192;
  double lr = 0.0;               // 0: 2e-4 / sqrt(F / 2^14)
  double decay_fraction = 0.2;   // linear decay to 0 over the last 20% of steps
  int64_t warmup_steps = 0;      // optional linear warm-up
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double grad_clip = 1.0;        // global L2 norm; <= 0 disables
  uint64_t seed = 0;
  int64_t log_every = 100;       // progress line + metrics row interval (steps)
  int64_t eval_every = 0;        // held-out evaluation interval (0: only at the end)
  int64_t checkpoint_every = 0;  // 0: only when the last step is done (and on SIGTERM/SIGINT, --stop-after)
  bool geometric_median_init = true;  // b_pre and b_r at the geometric median of the first batch
  int threads = 0;               // CPU threads (0: all cores)
  BackendKind backend = BackendKind::Cpu;               // where the SAE trains: cpu | cuda
  int device = -1;                                      // cuda: device index (-1: local rank modulo devices)
  GemmPrecision gemm_precision = GemmPrecision::FP32;   // cuda: fp32 | tf32 | bf16
};

// The backend options of a training run (train.backend, threads, device, gemm_precision).
inline BackendOptions backend_options(const TrainConfig& t) {
  BackendOptions o;
  o.kind = t.backend;
  o.threads = t.threads;
  o.device = t.device;
  o.gemm_precision = t.gemm_precision;
  return o;
}

// lr default of the references: 2e-4 / sqrt(F / 2^14).
double default_lr(int64_t dict_size);

}  // namespace moesae
