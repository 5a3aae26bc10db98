// moesae models: the Mixture-of-Experts SAEs.
//  - Scale SAE (Section 2.2): route each token to its top-e experts, compute ONLY those experts' encoders
//    (tokens grouped by expert, one GEMM per expert), global Top-K over the e*n candidates (Eq. 2.3; ties to the
//    smaller global latent id), x^ = sum_{i in T} w_i W_dec,i z_i + b_pre (Eq. 2.4), load balancing (Eq. 2.2),
//    and Feature Scaling W^_i = L_i + (1 + omega_i)(W_i - L_i) (Eq. 2.5, Appendix C) applied as a correction
//    W^_i u = (1 + omega_i) W_i u - omega_i L_i u, never materialising W^_i.
//  - Switch SAE (Mudide et al. 2025): the same with e = 1, weight p_{i*} (or 1 with heaviside) and no Feature Scaling.
#pragma once
#include "sae/router.h"
#include "sae/sae.h"

namespace moesae {

class MoeSae final : public Sae {
 public:
  MoeSae(const ModelConfig& config, Backend& backend);
  void init(Rng& rng) override;
  SaeStats forward(const Tensor& x, bool train) override;
  void backward() override;
  void set_batch_group(BatchGroup* group) override {
    Sae::set_batch_group(group);
    router_.set_batch_group(group);
  }

 private:
  // Low-pass vectors a_i (rows of an [E, d] tensor) for the mean and reference variants: a_i = mean_i or A mean_i.
  void compute_lowpass_vectors();
  // Candidate pre-activations [B*e, n] (row b*e + s = token b's s-th chosen expert) after ReLU.
  Tensor encode_candidates(const Routing& r);
  void feature_scaling_backward(const Tensor& dpre, const Tensor& entry_expert, const Tensor& entry_omega,
                                Tensor du);

  int n_;  // latents per expert
  Router router_;
  Param *w_enc_, *b_enc_ = nullptr, *w_dec_, *b_pre_;
  Param *omega_ = nullptr, *a_ref_ = nullptr, *a_lp_ = nullptr;
  Tensor ones_n_;  // [1, n] of ones (rank-1 updates)
  // Forward state for backward.
  Tensor x_, u_, means_, lowpass_, coef_, wsel_, slots_;
  std::vector<float> omega_host_;
  Routing routing_;
  double lb_weight_ = 0;
};

}  // namespace moesae
