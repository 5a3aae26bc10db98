// moesae training: Adam (Kingma & Ba) over a model's trainable parameters, with its moments kept per parameter.
#pragma once
#include <vector>

#include "comm/communicator.h"
#include "sae/params.h"
#include "train/config.h"

namespace moesae {

class Adam {
 public:
  Adam(ParamSet& params, Backend& be, const TrainConfig& cfg);
  // One update with learning rate lr; increments the step count first (bias correction uses step >= 1).
  void step(double lr);
  int64_t steps_taken() const { return step_; }
  void set_steps_taken(int64_t s) { step_ = s; }
  // First and second moments, aligned with params.trainable().
  std::vector<Tensor>& first_moments() { return m_; }
  std::vector<Tensor>& second_moments() { return v_; }

 private:
  Backend& be_;
  std::vector<Param*> params_;
  std::vector<Tensor> m_, v_;
  float beta1_, beta2_, eps_;
  int64_t step_ = 0;
};

// The gradient norm clip_grad_norm measured, read back when first asked for (on CUDA, with the step's statistics).
class GradNorm {
 public:
  explicit GradNorm(double norm) : norm_(norm) {}
  explicit GradNorm(Backend::Pending squares) : squares_(std::move(squares)) {}
  double value();

 private:
  Backend::Pending squares_;  // per trainable parameter, while the norm is not known yet
  double norm_ = -1;
};

// Global L2 norm of all gradients; if max_norm > 0 and the norm exceeds it, scales every gradient by
// max_norm / (norm + 1e-6). Returns the norm before clipping. Decided on the device (Backend::clip_by_global_norm),
// so nothing waits; except under expert parallelism, where `shards` are the ranks over which the sharded
// parameters (Param::sharded()) are split: the norm is then the whole model's, the same on every rank, added up
// on the host.
GradNorm clip_grad_norm(ParamSet& params, Backend& be, double max_norm, comm::Communicator* shards = nullptr);

// Learning rate at a (0-based) step: linear warm-up over warmup_steps, constant, then linear decay to 0 over
// the last decay_fraction of the steps (factor (steps - step) / (steps - decay_start)).
double lr_at(const TrainConfig& cfg, double base_lr, int64_t step);

}  // namespace moesae
