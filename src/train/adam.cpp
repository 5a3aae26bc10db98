#include "train/adam.h"

#include <cmath>

namespace moesae {

Adam::Adam(ParamSet& params, Backend& be, const TrainConfig& cfg)
    : be_(be), params_(params.trainable()), beta1_(float(cfg.beta1)), beta2_(float(cfg.beta2)), eps_(float(cfg.eps)) {
  for (Param* p : params_) {
    m_.push_back(p->value.rank() == 1 ? be_.zeros_vector(p->value.rows()) : be_.zeros(p->value.rows(), p->value.cols()));
    v_.push_back(p->value.rank() == 1 ? be_.zeros_vector(p->value.rows()) : be_.zeros(p->value.rows(), p->value.cols()));
  }
}

void Adam::step(double lr) {
  ++step_;
  for (size_t i = 0; i < params_.size(); ++i)
    be_.adam_step(params_[i]->value, params_[i]->grad, m_[i], v_[i], float(lr), beta1_, beta2_, eps_, step_);
}

double GradNorm::value() {
  if (norm_ < 0) norm_ = Backend::global_norm(squares_.get());
  return norm_;
}

GradNorm clip_grad_norm(ParamSet& params, Backend& be, double max_norm, comm::Communicator* shards) {
  const std::vector<Param*> trainable = params.trainable();
  if (!shards) {
    std::vector<Tensor> grads;
    for (Param* p : trainable) grads.push_back(p->grad);
    return GradNorm(be.clip_by_global_norm(grads, max_norm));
  }
  std::vector<Backend::Reduction> squares;
  for (Param* p : trainable) squares.push_back({Backend::ReduceOp::SumSquares, p->grad});
  const std::vector<double> r = be.reduce_many(squares);  // one host round trip for every parameter
  double sq = 0, sharded = 0;
  for (size_t i = 0; i < r.size(); ++i) (trainable[i]->sharded() ? sharded : sq) += r[i];
  shards->all_reduce(&sharded, 1, comm::ReduceOp::Sum);  // every rank's rows of the sharded parameters
  sq += sharded;
  const double norm = std::sqrt(sq);
  const float s = Backend::clip_factor(norm, max_norm);
  if (s != 1.f)
    for (Param* p : trainable) be.scale(p->grad, s);
  return GradNorm(norm);
}

double lr_at(const TrainConfig& cfg, double base_lr, int64_t step) {
  double f = 1.0;
  if (cfg.warmup_steps > 0 && step < cfg.warmup_steps) f = double(step + 1) / double(cfg.warmup_steps);
  const int64_t decay_start = static_cast<int64_t>(std::llround(cfg.steps * (1.0 - cfg.decay_fraction)));
  if (cfg.decay_fraction > 0 && step >= decay_start && cfg.steps > decay_start)
    f = std::min(f, double(cfg.steps - step) / double(cfg.steps - decay_start));
  return base_lr * f;
}

}  // namespace moesae
