// moesae models: the Mixture-of-Experts SAEs.
//  - Scale SAE (Section 2.2): route each token to its top-e experts, compute ONLY those experts' encoders
//    (tokens grouped by expert, one grouped GEMM over the experts), global Top-K over the e*n candidates (Eq. 2.3;
//    ties to the smaller global latent id), x^ = sum_{i in T} w_i W_dec,i z_i + b_pre (Eq. 2.4), load balancing
//    (Eq. 2.2), and Feature Scaling W^_i = L_i + (1 + omega_i)(W_i - L_i) (Eq. 2.5, Appendix C) applied as a correction
//    W^_i u = (1 + omega_i) W_i u - omega_i L_i u, never materialising W^_i.
//  - Switch SAE (Mudide et al. 2025): the same with e = 1, weight p_{i*} (or 1 with heaviside) and no Feature Scaling.
// Under expert parallelism (sae/expert_exchange.h) this rank holds a block of experts: its "origin" side routes
// its own tokens and owns their reconstruction and code; its "expert" side encodes the tokens dispatched to it,
// selects with the distributed Top-K, decodes the kept latents and sends partial reconstructions back. Without
// it both sides are the same tokens and the math is exactly the 1-process model's.
#pragma once
#include "sae/expert_exchange.h"
#include "sae/router.h"
#include "sae/sae.h"

namespace moesae {

class MoeSae final : public Sae {
 public:
  // exchange: expert parallelism, this rank holding exchange->local_experts() of the E experts (its parameters
  // are those experts' rows, Param::sharded()); nullptr: all experts here.
  MoeSae(const ModelConfig& config, Backend& backend, ExpertExchange* exchange = nullptr);
  void init(Rng& rng) override;
  void forward_pass(const Tensor& x, bool train) override;
  void backward() override;
  void set_batch_group(BatchGroup* group) override {
    Sae::set_batch_group(group);
    router_.set_batch_group(group);
  }

 private:
  // Low-pass vectors a_i (rows of an [E, d] tensor) for the mean and reference variants: a_i = mean_i or A mean_i.
  void compute_lowpass_vectors();
  // Candidate pre-activations [M*e, n] of the expert side's tokens (row m*e + s = token m's s-th chosen expert)
  // after ReLU; rows of slots held by other ranks are -1 (below every candidate).
  Tensor encode_candidates();
  // Experts [i0, i1) of this rank on their grouped rows (grouped operations over the run; buffers of the largest
  // run's rows), into cand.
  void encode_experts(int i0, int i1, Tensor ug_buf, Tensor y_buf, Tensor s_buf, Tensor cand);
  void feature_scaling_backward(const Tensor& dpre, const Tensor& entry_expert, const Tensor& entry_omega,
                                Tensor du);

  int n_;         // latents per expert
  int e0_, el_;   // this rank's experts: [e0_, e0_ + el_)
  ExpertExchange* ex_;
  Router router_;
  Param *w_enc_, *b_enc_ = nullptr, *w_dec_, *b_pre_;
  Param *omega_ = nullptr, *a_ref_ = nullptr, *a_lp_ = nullptr;
  Tensor ones_n_;  // [1, n] of ones (rank-1 updates)
  std::vector<int64_t> expert_blocks_;  // i * n for i = 0 .. el_: each local expert's rows of W_enc (grouped ops)
  // Forward state for backward. Origin side: this rank's tokens.
  Tensor x_, u_;
  Routing routing_;
  // Expert side: the tokens this rank's experts serve (the origin tokens without expert parallelism), their slots
  // (local expert index, -1: held elsewhere) and weights, and the selected entries: local latent ids (xids_),
  // global ones (gids_), z, w of the entry's expert, coef = w z, slot.
  Tensor xu_, xexperts_, xweights_;
  ExpertGroups xgroups_;
  Tensor xids_, gids_, xvals_, wsel_, coef_, slots_;
  Tensor means_, lowpass_;  // per local expert
  std::vector<float> omega_host_;
  double lb_weight_ = 0;
};

}  // namespace moesae
