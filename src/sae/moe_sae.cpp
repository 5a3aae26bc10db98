#include "sae/moe_sae.h"

#include <algorithm>

#include "core/profile.h"
#include "sae/init.h"
#include "sae/sparse_codec.h"

namespace moesae {

MoeSae::MoeSae(const ModelConfig& config, Backend& backend)
    : Sae(config, backend), n_(config.latents_per_expert()), router_(cfg_, be_, params_) {
  const int F = cfg_.dict_size, d = cfg_.d, E = cfg_.experts;
  w_enc_ = &params_.add(be_, "W_enc", F, d);
  if (cfg_.encoder_bias) b_enc_ = &params_.add_vector(be_, "b_enc", F);
  w_dec_ = &params_.add(be_, "W_dec", F, d, /*decoder=*/true);
  b_pre_ = &params_.add_vector(be_, "b_pre", d);
  if (cfg_.feature_scaling != FeatureScaling::None) omega_ = &params_.add_vector(be_, "omega", E);
  if (cfg_.feature_scaling == FeatureScaling::Reference) a_ref_ = &params_.add(be_, "A_lowpass", d, d);
  if (cfg_.feature_scaling == FeatureScaling::Learned) a_lp_ = &params_.add(be_, "A_lowpass", F, d);
  ones_n_ = be_.empty(1, n_);
  be_.fill(ones_n_, 1.f);
}

void MoeSae::init(Rng& rng) {
  router_.init(rng);
  init_encoder_and_tied_decoder(w_enc_->value, w_dec_->value, rng);
  if (a_ref_) init_identity(be_, a_ref_->value);
  if (a_lp_) {  // start at the paper's mean low-pass: every row of A_LP,i = mean row of W_i
    for (int i = 0; i < cfg_.experts; ++i) {
      Tensor mean = be_.empty_vector(cfg_.d);
      be_.sum_rows(w_enc_->value.row_range(i * n_, (i + 1) * n_), mean, 1.f / float(n_), 0.f);
      Tensor block = a_lp_->value.row_range(i * n_, (i + 1) * n_);
      be_.fill(block, 0.f);
      be_.add_row_vector(block, mean, 1.f);
    }
  }
}

void MoeSae::compute_lowpass_vectors() {
  const int E = cfg_.experts, d = cfg_.d;
  means_ = be_.empty(E, d);
  for (int i = 0; i < E; ++i)
    be_.sum_rows(w_enc_->value.row_range(i * n_, (i + 1) * n_), means_.row_range(i, i + 1).flatten(),
                 1.f / float(n_), 0.f);
  if (cfg_.feature_scaling == FeatureScaling::Mean) {
    lowpass_ = means_;
  } else {  // reference: a_i = A mean_i, i.e. rows mean_i^T A^T
    lowpass_ = be_.empty(E, d);
    be_.gemm(false, true, 1.f, means_, a_ref_->value, 0.f, lowpass_);
  }
}

Tensor MoeSae::encode_candidates(const Routing& r) {
  const int64_t B = u_.rows(), e = cfg_.active_experts, d = cfg_.d;
  const FeatureScaling fs = cfg_.feature_scaling;
  Tensor cand = be_.empty(B * e, n_);
  int64_t max_rows = 0;
  for (int i = 0; i < cfg_.experts; ++i) max_rows = std::max(max_rows, r.groups.offsets[i + 1] - r.groups.offsets[i]);
  Tensor ug_all = be_.empty(std::max<int64_t>(max_rows, 1), d);
  Tensor y_all = be_.empty(std::max<int64_t>(max_rows, 1), n_);
  Tensor s_all = be_.empty(std::max<int64_t>(max_rows, 1), 1);
  for (int i = 0; i < cfg_.experts; ++i) {
    const int64_t r0 = r.groups.offsets[i], r1 = r.groups.offsets[i + 1], m = r1 - r0;
    if (m == 0) continue;
    Tensor ug = ug_all.row_range(0, m), y = y_all.row_range(0, m);
    be_.gather_rows(u_, r.groups.tokens.row_range(r0, r1), ug);
    const Tensor w_i = w_enc_->value.row_range(i * n_, (i + 1) * n_);
    const float om = omega_ ? omega_host_[i] : 0.f;
    // (1 + omega_i) W_i u  -  omega_i L_i u     (Eq. 2.5 as a correction; omega = 0 without Feature Scaling)
    be_.gemm(false, true, 1.f + om, ug, w_i, 0.f, y);
    if (fs == FeatureScaling::Mean || fs == FeatureScaling::Reference) {
      Tensor s = s_all.row_range(0, m);  // s = u . a_i (rank-1 correction)
      be_.gemm(false, true, 1.f, ug, lowpass_.row_range(i, i + 1), 0.f, s);
      be_.gemm(false, false, -om, s, ones_n_, 1.f, y);
    } else if (fs == FeatureScaling::Identity) {
      const int64_t c = std::min<int64_t>(n_, d);
      be_.axpy(-om, ug.col_range(0, c), y.col_range(0, c));
    } else if (fs == FeatureScaling::Learned) {
      be_.gemm(false, true, -om, ug, a_lp_->value.row_range(i * n_, (i + 1) * n_), 1.f, y);
    }
    if (b_enc_) be_.add_row_vector(y, b_enc_->value.row_range(i * n_, (i + 1) * n_), 1.f);
    be_.relu(y);
    be_.scatter_rows(y, r.groups.cand_rows.row_range(r0, r1), cand);
  }
  return cand;
}

SaeStats MoeSae::forward(const Tensor& x, bool train) {
  const int64_t B = x.rows(), e = cfg_.active_experts, k = cfg_.k, d = cfg_.d;
  MOESAE_CHECK(x.cols() == d, "input has d=", x.cols(), ", model expects ", d);
  x_ = x;
  {
    profile::Scope ps("router");
    routing_ = router_.forward(x);
  }
  u_ = be_.empty(B, d);
  subtract_bias(be_, x, b_pre_->value, u_);
  omega_host_ = omega();
  if (cfg_.feature_scaling == FeatureScaling::Mean || cfg_.feature_scaling == FeatureScaling::Reference)
    compute_lowpass_vectors();
  Tensor cand;
  {
    profile::Scope ps("encoder");
    cand = encode_candidates(routing_);
  }
  profile::Scope select_scope("select+decode");

  // Global Top-K over the e*n candidates of each token (Eq. 2.3). Candidate c of token b is latent
  // experts[b, c / n] * n + c % n; slots are in ascending expert order, so ties go to the smaller global id.
  Tensor cand_rows = cand.reshape(B, e * n_);
  Tensor sel = be_.empty(B, k, DType::I32);
  code_.vals = be_.empty(B, k);
  if (cfg_.select_on == SelectOn::Weighted) {  // reference code: rank w_i f_ij
    Tensor weighted = be_.empty(B * e, n_);
    be_.copy(cand, weighted);
    be_.scale_rows(weighted, routing_.weights.flatten());
    Tensor tmp = be_.empty(B, k);
    be_.topk_rows(weighted.reshape(B, e * n_), static_cast<int>(k), tmp, sel);
    be_.gather_cols(cand_rows, sel, code_.vals);
  } else {
    be_.topk_rows(cand_rows, static_cast<int>(k), code_.vals, sel);
  }
  code_.ids = be_.empty(B, k, DType::I32);
  slots_ = be_.empty(B, k, DType::I32);
  be_.candidates_to_latents(sel, routing_.experts, n_, code_.ids, slots_);
  wsel_ = be_.empty(B, k);
  be_.gather_cols(routing_.weights, slots_, wsel_);
  coef_ = be_.empty(B, k);
  be_.mul(code_.vals, wsel_, coef_);  // coef = w_i z_ij
  x_hat_ = be_.empty(B, d);
  sparse_decode(be_, coef_, code_.ids, w_dec_->value, b_pre_->value, x_hat_);

  SaeStats s;
  reconstruction_stats(x, s);
  s.l0 = double(be_.count_positive(code_.vals)) / double(B);
  s.lb = routing_.lb;
  s.expert_fraction = routing_.topE_fraction;
  lb_weight_ = cfg_.lb_alpha * aux_factor();
  s.lb_term = lb_weight_ * s.lb;
  s.loss = s.recon + s.lb_term;
  return s;
}

void MoeSae::backward() {
  const int64_t B = x_.rows(), e = cfg_.active_experts, k = cfg_.k, d = cfg_.d;
  profile::Scope ps("backward");
  Tensor dxhat = be_.empty(B, d);
  reconstruction_grad(x_, dxhat);
  Tensor dcoef = be_.empty(B, k);
  sparse_decode_backward(be_, dxhat, coef_, code_.ids, w_dec_->value, w_dec_->grad, b_pre_->grad, dcoef);
  // coef = w z:  dz = dcoef w,  dw[b, slot] += dcoef z
  Tensor dweights = be_.zeros(B, e);
  Tensor tmp = be_.empty(B, k);
  be_.mul(dcoef, code_.vals, tmp);
  be_.scatter_add_cols(tmp, slots_, dweights);
  Tensor dpre = be_.empty(B, k);
  be_.mul(dcoef, wsel_, dpre);
  be_.relu_backward(code_.vals, dpre);  // ReLU mask at the selected latents

  // Encoder: pre = (1 + omega_i) W_j . u - omega_i L_j . u (+ b_enc_j) for entry j of expert i.
  Tensor du = be_.empty(B, d);
  if (!omega_) {
    sparse_encoder_backward(be_, dpre, dpre, code_.ids, u_, w_enc_->value, w_enc_->grad,
                            b_enc_ ? b_enc_->grad : Tensor(), du);
  } else {
    Tensor entry_expert = be_.empty(B, k, DType::I32);
    be_.gather_cols(routing_.experts, slots_, entry_expert);
    Tensor entry_omega = be_.empty(B, k);
    be_.gather(omega_->value, entry_expert.flatten(), entry_omega.flatten());
    Tensor scaled = be_.empty(B, k);  // (1 + omega) dpre
    be_.mul(dpre, entry_omega, scaled);
    be_.axpy(1.f, dpre, scaled);
    sparse_encoder_backward(be_, scaled, dpre, code_.ids, u_, w_enc_->value, w_enc_->grad,
                            b_enc_ ? b_enc_->grad : Tensor(), du);
    feature_scaling_backward(dpre, entry_expert, entry_omega, du);
  }
  be_.sum_rows(du, b_pre_->grad, -1.f, 1.f);  // u = x - b_pre
  router_.backward(dweights, lb_weight_);
}

void MoeSae::feature_scaling_backward(const Tensor& dpre, const Tensor& entry_expert, const Tensor& entry_omega,
                                      Tensor du) {
  const int64_t B = x_.rows(), k = cfg_.k, d = cfg_.d, E = cfg_.experts;
  const FeatureScaling fs = cfg_.feature_scaling;
  const Tensor& ids = code_.ids;
  // d omega_i = sum over entries of expert i of dpre (W_j . u - L_j . u)
  Tensor raw = be_.empty(B, k), low = be_.empty(B, k);
  be_.sparse_rows_dot(u_, ids, w_enc_->value, raw);
  Tensor s_all;  // [B, E]: u_b . a_i (mean / reference)
  if (fs == FeatureScaling::Mean || fs == FeatureScaling::Reference) {
    s_all = be_.empty(B, E);
    be_.gemm(false, true, 1.f, u_, lowpass_, 0.f, s_all);
    be_.gather_cols(s_all, entry_expert, low);
  } else if (fs == FeatureScaling::Identity) {
    be_.identity_lowpass_dot(u_, ids, n_, low);
  } else {
    be_.sparse_rows_dot(u_, ids, a_lp_->value, low);
  }
  be_.axpy(-1.f, low, raw);
  be_.mul(dpre, raw, raw);
  be_.scatter_add(raw.flatten(), entry_expert.flatten(), omega_->grad);

  // Low-pass term -omega_i L_j . u: coefficient -omega dpre per entry.
  Tensor neg = be_.empty(B, k);
  be_.mul(entry_omega, dpre, neg);
  be_.scale(neg, -1.f);
  if (fs == FeatureScaling::Mean || fs == FeatureScaling::Reference) {
    // G[b, i] = sum of -omega_i dpre over token b's entries in expert i;  d a_i = sum_b G[b,i] u_b
    Tensor g = be_.zeros(B, E);
    be_.scatter_add_cols(neg, entry_expert, g);
    Tensor g_a = be_.empty(E, d);
    be_.gemm(true, false, 1.f, g, u_, 0.f, g_a);
    be_.gemm(false, false, 1.f, g, lowpass_, 1.f, du);
    Tensor g_mean = g_a;  // d mean_i
    if (fs == FeatureScaling::Reference) {  // a_i = A mean_i: dA += sum_i d a_i mean_i^T, d mean_i = A^T d a_i
      be_.gemm(true, false, 1.f, g_a, means_, 1.f, a_ref_->grad);
      g_mean = be_.empty(E, d);
      be_.gemm(false, false, 1.f, g_a, a_ref_->value, 0.f, g_mean);
    }
    for (int i = 0; i < E; ++i)  // mean_i = (1/n) sum of expert i's rows
      be_.add_row_vector(w_enc_->grad.row_range(i * n_, (i + 1) * n_), g_mean.row_range(i, i + 1).flatten(),
                         1.f / float(n_));
  } else if (fs == FeatureScaling::Identity) {
    be_.identity_lowpass_outer_add(neg, ids, n_, du);
  } else {
    be_.sparse_rows_outer_add(neg, ids, u_, 1.f, a_lp_->grad);
    be_.sparse_rows_matmul(neg, ids, a_lp_->value, 1.f, du);
  }
}

}  // namespace moesae
