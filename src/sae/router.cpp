#include "sae/router.h"

#include "core/rng.h"
#include "sae/init.h"
#include "sae/sparse_codec.h"

namespace moesae {

Router::Router(const ModelConfig& config, Backend& be, ParamSet& params) : cfg_(config), be_(be) {
  w_r_ = &params.add(be_, "W_r", cfg_.experts, cfg_.d);
  b_r_ = &params.add_vector(be_, "b_r", cfg_.d);
  if (cfg_.router_bias) b_g_ = &params.add_vector(be_, "b_g", cfg_.experts);
}

void Router::init(Rng& rng) { init_uniform_fan_in(be_, w_r_->value, cfg_.d, rng); }

Routing Router::forward(const Tensor& x) {
  const int64_t B = x.rows(), E = cfg_.experts, e = cfg_.active_experts;
  ur_ = be_.empty(B, cfg_.d);
  subtract_bias(be_, x, b_r_->value, ur_);
  probs_ = be_.empty(B, E);
  be_.gemm(false, true, 1.f, ur_, w_r_->value, 0.f, probs_);  // logits
  if (b_g_) be_.add_row_vector(probs_, b_g_->value, 1.f);
  be_.softmax_rows(probs_, probs_);
  pvals_ = be_.empty(B, e);
  experts_ = be_.empty(B, e, DType::I32);
  be_.topk_rows(probs_, static_cast<int>(e), pvals_, experts_);  // T = argtopk(p, e), ties to the smaller id

  Routing r;
  const bool grouped = group_ && group_->size() > 1;
  group_rows_ = grouped ? B * group_->size() : B;
  // What the host needs from here is queued so that it arrives with the routing counts (group_by_expert, the
  // step's one wait before the encoder): the argmax of each token for f_i with top-1 assignment (the reference
  // code; column 0 of the top-e before re-sorting) and P_i = mean_b p_bi (as column sums over the group's batch).
  Tensor top;
  Backend::Pending top_arrival;
  if (cfg_.lb_assignment == LbAssignment::Top1) {
    top = host_tensor(B, e, DType::I32);
    top_arrival = be_.download_later(experts_, top);
  }
  Tensor mean_p = be_.empty_vector(E), mp = host_vector(E);
  be_.sum_rows(probs_, mean_p, grouped ? 1.f : 1.f / float(B), 0.f);
  Backend::Pending mp_arrival = be_.download_later(mean_p, mp);
  be_.sort_rows_by_index(experts_, pvals_);  // slot order = expert id order (global latent id order)
  weights_ = be_.empty(B, e);
  switch (cfg_.weight) {
    case ExpertWeight::P: be_.copy(pvals_, weights_); break;
    case ExpertWeight::DoubleSoftmax: be_.softmax_rows(pvals_, weights_); break;
    case ExpertWeight::Uniform: be_.fill(weights_, 1.f); break;
  }
  r.experts = experts_;
  r.weights = weights_;
  r.groups = be_.group_by_expert(experts_, static_cast<int>(E));
  r.topE_fraction.resize(E);
  for (int64_t i = 0; i < E; ++i) r.topE_fraction[i] = double(r.groups.offsets[i + 1] - r.groups.offsets[i]);
  if (grouped) group_->sum(r.topE_fraction.data(), r.topE_fraction.size());
  for (double& f : r.topE_fraction) f /= double(group_rows_ * e);
  if (cfg_.lb_assignment == LbAssignment::Top1) {
    top_arrival.get();
    std::vector<double> top1_fraction(E, 0.0);
    const int32_t* t = top.host<int32_t>();
    if (!grouped) {
      for (int64_t b = 0; b < B; ++b) top1_fraction[t[b * top.ld()]] += 1.0 / double(B);
    } else {  // counts over the group's batch
      for (int64_t b = 0; b < B; ++b) top1_fraction[t[b * top.ld()]] += 1.0;
      group_->sum(top1_fraction.data(), top1_fraction.size());
      for (double& f : top1_fraction) f /= double(group_rows_);
    }
    fraction_ = top1_fraction;
  } else {
    fraction_ = r.topE_fraction;
  }
  r.fraction = fraction_;
  // P_i = mean_b p_bi;  L_lb = E sum_i f_i P_i  (Eq. 2.2)
  mp_arrival.get();
  std::vector<double> p_mean(E);
  for (int64_t i = 0; i < E; ++i) p_mean[i] = mp.host<float>()[i];
  if (grouped) {  // sums over the group's batch, then the mean
    group_->sum(p_mean.data(), p_mean.size());
    for (double& v : p_mean) v = double(float(v / double(group_rows_)));
  }
  for (int64_t i = 0; i < E; ++i) r.lb += double(E) * fraction_[i] * p_mean[i];
  return r;
}

void Router::backward(const Tensor& dweights, double lb_weight) {
  const int64_t B = probs_.rows(), E = cfg_.experts, e = cfg_.active_experts;
  const int64_t rows = group_rows_ > 0 ? group_rows_ : B;  // the group's batch (B without data parallelism)
  Tensor dprobs = be_.zeros(B, E);
  if (cfg_.weight != ExpertWeight::Uniform) {
    Tensor dp = be_.empty(B, e);
    if (cfg_.weight == ExpertWeight::P)
      be_.copy(dweights, dp);
    else
      be_.softmax_rows_backward(weights_, dweights, dp);  // w = softmax over T of p
    be_.scatter_add_cols(dp, experts_, dprobs);
  }
  if (lb_weight != 0.0) {  // d(E sum_i f_i P_i)/dp_bi = E f_i / B (f_i is piecewise constant)
    Tensor g = host_vector(E);
    for (int64_t i = 0; i < E; ++i) g.host<float>()[i] = static_cast<float>(lb_weight * double(E) * fraction_[i] / rows);
    be_.add_row_vector(dprobs, be_.from_host(g), 1.f);
  }
  Tensor dlogits = be_.empty(B, E);
  be_.softmax_rows_backward(probs_, dprobs, dlogits);
  be_.gemm(true, false, 1.f, dlogits, ur_, 1.f, w_r_->grad);
  if (b_g_) be_.sum_rows(dlogits, b_g_->grad, 1.f, 1.f);
  Tensor dur = be_.empty(B, cfg_.d);
  be_.gemm(false, false, 1.f, dlogits, w_r_->value, 0.f, dur);
  be_.sum_rows(dur, b_r_->grad, -1.f, 1.f);  // ur = x - b_r
}

}  // namespace moesae
