#include "sae/moe_sae.h"

#include <algorithm>

#include "core/profile.h"
#include "sae/init.h"
#include "sae/sparse_codec.h"

namespace moesae {

MoeSae::MoeSae(const ModelConfig& config, Backend& backend, ExpertExchange* exchange)
    : Sae(config, backend),
      n_(config.latents_per_expert()),
      e0_(exchange ? exchange->first_expert() : 0),
      el_(exchange ? exchange->local_experts() : config.experts),
      ex_(exchange),
      router_(cfg_, be_, params_) {
  const int64_t F = cfg_.dict_size, d = cfg_.d, E = cfg_.experts, Fl = int64_t(el_) * n_;
  MOESAE_CHECK(e0_ >= 0 && el_ >= 1 && e0_ + el_ <= E, "MoeSae: experts [", e0_, ", ", e0_ + el_, ") of ", E);
  // Per-expert parameters hold this rank's experts' rows (all of them without expert parallelism).
  const auto shard = [&](Param& p, int64_t first, int64_t full) -> Param& {
    if (ex_) {
      p.shard_first = first;
      p.full_rows = full;
    }
    return p;
  };
  w_enc_ = &shard(params_.add(be_, "W_enc", Fl, d), int64_t(e0_) * n_, F);
  if (cfg_.encoder_bias) b_enc_ = &shard(params_.add_vector(be_, "b_enc", Fl), int64_t(e0_) * n_, F);
  w_dec_ = &shard(params_.add(be_, "W_dec", Fl, d, /*decoder=*/true), int64_t(e0_) * n_, F);
  b_pre_ = &params_.add_vector(be_, "b_pre", d);
  if (cfg_.feature_scaling != FeatureScaling::None) omega_ = &shard(params_.add_vector(be_, "omega", el_), e0_, E);
  if (cfg_.feature_scaling == FeatureScaling::Reference) a_ref_ = &params_.add(be_, "A_lowpass", d, d);
  if (cfg_.feature_scaling == FeatureScaling::Learned)
    a_lp_ = &shard(params_.add(be_, "A_lowpass", Fl, d), int64_t(e0_) * n_, F);
  ones_n_ = be_.empty(1, n_);
  be_.fill(ones_n_, 1.f);
  for (int i = 0; i <= el_; ++i) expert_blocks_.push_back(int64_t(i) * n_);
}

void MoeSae::init(Rng& rng) {
  router_.init(rng);
  init_encoder_and_tied_decoder(*w_enc_, *w_dec_, rng);
  if (a_ref_) init_identity(be_, a_ref_->value);  // the reference code's A starts at I
  if (a_lp_) {  // start at the paper's mean low-pass: every row of A_LP,i = mean row of W_i
    for (int i = 0; i < el_; ++i) {
      Tensor mean = be_.empty_vector(cfg_.d);
      be_.sum_rows(w_enc_->value.row_range(i * n_, (i + 1) * n_), mean, 1.f / float(n_), 0.f);
      Tensor block = a_lp_->value.row_range(i * n_, (i + 1) * n_);
      be_.fill(block, 0.f);
      be_.add_row_vector(block, mean, 1.f);
    }
  }
}

void MoeSae::compute_lowpass_vectors() {
  const int E = el_, d = cfg_.d;
  means_ = be_.empty(E, d);
  be_.sum_group_rows(w_enc_->value, expert_blocks_, 1.f / float(n_), means_);  // mean_i: the mean row of W_i
  if (cfg_.feature_scaling == FeatureScaling::Mean) {
    lowpass_ = means_;
  } else {  // reference: a_i = A mean_i, i.e. rows mean_i^T A^T
    lowpass_ = be_.empty(E, d);
    be_.gemm(false, true, 1.f, means_, a_ref_->value, 0.f, lowpass_);
  }
}

Tensor MoeSae::encode_candidates() {
  const int64_t B = xu_.rows(), e = cfg_.active_experts, d = cfg_.d;
  const ExpertGroups& r = xgroups_;
  Tensor cand = be_.empty(B * e, n_);
  if (ex_) be_.fill(cand, -1.f);  // slots of experts held elsewhere
  // The (token, slot) entries grouped by expert (expert i's: rows [offsets[i], offsets[i+1])), encoded a run of
  // experts at a time: as many rows as the backend wants in one grouped call (CUDA: all; CPU: a cache's worth).
  const int64_t budget = be_.group_rows_per_call();
  std::vector<int> runs = {0};  // experts [runs[j], runs[j+1])
  int64_t max_rows = 0;
  for (int i = 1; i <= el_; ++i)
    if (i == el_ || (budget > 0 && r.offsets[i + 1] - r.offsets[runs.back()] > budget)) {
      max_rows = std::max(max_rows, r.offsets[i] - r.offsets[runs.back()]);
      runs.push_back(i);
    }
  if (max_rows == 0) return cand;
  Tensor ug = be_.empty(max_rows, d), y = be_.empty(max_rows, n_);
  Tensor s = be_.empty(max_rows, 4).col_range(0, 1);  // rows 16 bytes apart: the grouped GPU product wants aligned
  for (size_t j = 0; j + 1 < runs.size(); ++j) encode_experts(runs[j], runs[j + 1], ug, y, s, cand);
  return cand;
}

void MoeSae::encode_experts(int i0, int i1, Tensor ug_buf, Tensor y_buf, Tensor s_buf, Tensor cand) {
  const ExpertGroups& r = xgroups_;
  const FeatureScaling fs = cfg_.feature_scaling;
  const int64_t r0 = r.offsets[i0], m = r.offsets[i1] - r0, d = cfg_.d, ne = i1 - i0;
  if (m == 0) return;
  std::vector<int64_t> offsets(ne + 1);  // the run's groups, rows counted from r0
  std::vector<float> scale(ne, 1.f), neg_omega(ne, 0.f), ones(ne, 1.f);  // 1 + omega_i, -omega_i (0 without FS)
  for (int64_t i = 0; i <= ne; ++i) offsets[i] = r.offsets[i0 + i] - r0;
  for (int64_t i = 0; i < ne && omega_; ++i) {
    scale[i] = 1.f + omega_host_[i0 + i];
    neg_omega[i] = -omega_host_[i0 + i];
  }
  const Tensor ug = ug_buf.row_range(0, m), y = y_buf.row_range(0, m);
  auto expert_rows = [&](const Tensor& t) { return t.row_range(int64_t(i0) * n_, int64_t(i1) * n_); };
  be_.gather_rows(xu_, r.tokens.row_range(r0, r0 + m), ug);
  // (1 + omega_i) W_i u  -  omega_i L_i u     (Eq. 2.5 as a correction), the run's experts in one grouped product
  be_.grouped_gemm(true, ug, expert_rows(w_enc_->value), n_, offsets, scale, 0.f, y);
  if (fs == FeatureScaling::Mean || fs == FeatureScaling::Reference) {
    const Tensor s = s_buf.row_range(0, m);  // s = u . a_i, then the rank-1 correction -omega_i s 1^T
    be_.grouped_gemm(true, ug, lowpass_.row_range(i0, i1), 1, offsets, ones, 0.f, s);
    be_.grouped_gemm(false, s, ones_n_, 0, offsets, neg_omega, 1.f, y);
  } else if (fs == FeatureScaling::Identity) {
    const int64_t c = std::min<int64_t>(n_, d);
    be_.axpy_groups(neg_omega, offsets, ug.col_range(0, c), y.col_range(0, c));
  } else if (fs == FeatureScaling::Learned) {
    be_.grouped_gemm(true, ug, expert_rows(a_lp_->value), n_, offsets, neg_omega, 1.f, y);
  }
  if (b_enc_) be_.add_group_rows(y, offsets, b_enc_->value.reshape(el_, n_).row_range(i0, i1), 1.f);
  be_.relu(y);
  be_.scatter_rows(y, r.cand_rows.row_range(r0, r0 + m), cand);
}

void MoeSae::forward_pass(const Tensor& x, bool train) {
  const int64_t B = x.rows(), e = cfg_.active_experts, k = cfg_.k, d = cfg_.d;
  MOESAE_CHECK(x.cols() == d, "input has d=", x.cols(), ", model expects ", d);
  x_ = x;
  // omega per expert scales the grouped products below as host scalars: queued first, it arrives with the
  // routing counts (the one wait before the encoder).
  const Param* omega = params_.find("omega");
  Tensor omega_h;
  Backend::Pending omega_arrival;
  if (omega) {
    omega_h = host_vector(omega->value.numel());
    omega_arrival = be_.download_later(omega->value, omega_h);
  }
  {
    profile::Scope ps("router");
    routing_ = router_.forward(x);
  }
  omega_arrival.get();
  omega_host_.clear();
  if (omega) omega_host_.assign(omega_h.host<float>(), omega_h.host<float>() + omega_h.numel());
  u_ = be_.empty(B, d);
  subtract_bias(be_, x, b_pre_->value, u_);
  if (cfg_.feature_scaling == FeatureScaling::Mean || cfg_.feature_scaling == FeatureScaling::Reference)
    compute_lowpass_vectors();
  if (!ex_) {
    xu_ = u_;
    xexperts_ = routing_.experts;
    xweights_ = routing_.weights;
    xgroups_ = routing_.groups;
  } else {
    profile::Scope ps("dispatch");
    DispatchedTokens in = ex_->dispatch(u_, routing_.experts, routing_.weights);
    xu_ = in.u;
    xexperts_ = in.experts;
    xweights_ = in.weights;
    xgroups_ = be_.group_by_expert(xexperts_, el_);
  }
  const int64_t M = xu_.rows();  // tokens the experts serve
  Tensor cand;
  {
    profile::Scope ps("encoder");
    cand = encode_candidates();
  }
  profile::Scope select_scope("select+decode");

  // Global Top-K over the e*n candidates of each token (Eq. 2.3). Candidate c of token b is latent
  // experts[b, c / n] * n + c % n; slots are in ascending expert order, so ties go to the smaller global id.
  // Under expert parallelism this is the local top-K of this rank's candidates, then the distributed merge.
  Tensor cand_rows = cand.reshape(M, e * n_);
  Tensor sel = be_.empty(M, k, DType::I32);
  xvals_ = be_.empty(M, k);
  Tensor scores = xvals_;  // what the selection ranks
  if (cfg_.select_on == SelectOn::Weighted) {  // reference code: rank w_i f_ij
    Tensor weighted = be_.empty(M * e, n_);
    be_.copy(cand, weighted);
    be_.scale_rows(weighted, xweights_.flatten());
    scores = be_.empty(M, k);
    be_.topk_rows(weighted.reshape(M, e * n_), static_cast<int>(k), scores, sel);
    be_.gather_cols(cand_rows, sel, xvals_);
  } else {
    be_.topk_rows(cand_rows, static_cast<int>(k), xvals_, sel);
  }
  xids_ = be_.empty(M, k, DType::I32);
  slots_ = be_.empty(M, k, DType::I32);
  be_.candidates_to_latents(sel, xexperts_, n_, xids_, slots_);
  if (ex_) gids_ = keep_global_topk(be_, *ex_, int64_t(e0_) * n_, scores, xids_, xvals_, &slots_);
  wsel_ = be_.empty(M, k);
  be_.gather_cols(xweights_, slots_, wsel_);
  coef_ = be_.empty(M, k);
  be_.mul(xvals_, wsel_, coef_);  // coef = w_i z_ij
  x_hat_ = be_.empty(B, d);
  if (!ex_) {
    code_.ids = xids_;
    code_.vals = xvals_;
    sparse_decode(be_, coef_, xids_, w_dec_->value, b_pre_->value, x_hat_);
  } else {  // x^ = b_pre + the partial reconstructions of the token's ranks (Eq. 2.4 split by rank)
    Tensor partial = be_.empty(M, d);
    be_.sparse_rows_matmul(coef_, xids_, w_dec_->value, 0.f, partial);
    code_.ids = be_.empty(B, k, DType::I32);
    code_.vals = be_.empty(B, k);
    ex_->combine(partial, gids_, xvals_, scores, x_hat_, code_.ids, code_.vals);
    be_.add_row_vector(x_hat_, b_pre_->value, 1.f);
  }

  lb_weight_ = cfg_.lb_alpha * aux_factor();
  queue_stats(x, code_.vals, {},
              [lb = routing_.lb, fraction = routing_.topE_fraction, weight = lb_weight_](const auto&, SaeStats& s) {
                s.lb = lb;
                s.expert_fraction = fraction;
                s.lb_term = weight * s.lb;
                s.loss = s.recon + s.lb_term;
              });
}

void MoeSae::backward() {
  const int64_t B = x_.rows(), M = xu_.rows(), e = cfg_.active_experts, k = cfg_.k, d = cfg_.d;
  profile::Scope ps("backward");
  Tensor dxhat = be_.empty(B, d);
  reconstruction_grad(x_, dxhat);
  Tensor xdxhat = dxhat;  // dL/dx^ of the tokens the experts serve
  if (ex_) {
    be_.sum_rows(dxhat, b_pre_->grad, 1.f, 1.f);
    xdxhat = ex_->dispatch_rows(dxhat);
  }
  Tensor dcoef = be_.empty(M, k);
  sparse_decode_backward(be_, xdxhat, coef_, xids_, w_dec_->value, w_dec_->grad, ex_ ? Tensor() : b_pre_->grad,
                         dcoef);
  // coef = w z:  dz = dcoef w,  dw[b, slot] += dcoef z
  Tensor dweights = be_.zeros(M, e);
  Tensor tmp = be_.empty(M, k);
  be_.mul(dcoef, xvals_, tmp);
  be_.scatter_add_cols(tmp, slots_, dweights);
  Tensor dpre = be_.empty(M, k);
  be_.mul(dcoef, wsel_, dpre);
  be_.relu_backward(xvals_, dpre);  // ReLU mask at the selected latents

  // Encoder: pre = (1 + omega_i) W_j . u - omega_i L_j . u (+ b_enc_j) for entry j of expert i.
  Tensor du = be_.empty(M, d);
  if (!omega_) {
    sparse_encoder_backward(be_, dpre, dpre, xids_, xu_, w_enc_->value, w_enc_->grad,
                            b_enc_ ? b_enc_->grad : Tensor(), du);
  } else {
    Tensor entry_expert = be_.empty(M, k, DType::I32);
    be_.gather_cols(xexperts_, slots_, entry_expert);
    Tensor entry_omega = be_.empty(M, k);
    be_.gather(omega_->value, entry_expert.flatten(), entry_omega.flatten());
    Tensor scaled = be_.empty(M, k);  // (1 + omega) dpre
    be_.mul(dpre, entry_omega, scaled);
    be_.axpy(1.f, dpre, scaled);
    sparse_encoder_backward(be_, scaled, dpre, xids_, xu_, w_enc_->value, w_enc_->grad,
                            b_enc_ ? b_enc_->grad : Tensor(), du);
    feature_scaling_backward(dpre, entry_expert, entry_omega, du);
  }
  if (ex_) {  // back to the origin: dL/du and dL/dw of its tokens, summed over the ranks that served them
    Tensor odu = be_.empty(B, d), odw = be_.empty(B, e);
    ex_->combine_backward(du, dweights, odu, odw);
    du = odu;
    dweights = odw;
  }
  be_.sum_rows(du, b_pre_->grad, -1.f, 1.f);  // u = x - b_pre
  router_.backward(dweights, lb_weight_);
}

void MoeSae::feature_scaling_backward(const Tensor& dpre, const Tensor& entry_expert, const Tensor& entry_omega,
                                      Tensor du) {
  const int64_t B = xu_.rows(), k = cfg_.k, d = cfg_.d, E = el_;
  const FeatureScaling fs = cfg_.feature_scaling;
  const Tensor& ids = xids_;
  // d omega_i = sum over entries of expert i of dpre (W_j . u - L_j . u)
  Tensor raw = be_.empty(B, k), low = be_.empty(B, k);
  be_.sparse_rows_dot(xu_, ids, w_enc_->value, raw);
  Tensor s_all;  // [B, E]: u_b . a_i (mean / reference)
  if (fs == FeatureScaling::Mean || fs == FeatureScaling::Reference) {
    s_all = be_.empty(B, E);
    be_.gemm(false, true, 1.f, xu_, lowpass_, 0.f, s_all);
    be_.gather_cols(s_all, entry_expert, low);
  } else if (fs == FeatureScaling::Identity) {
    be_.identity_lowpass_dot(xu_, ids, n_, low);
  } else {
    be_.sparse_rows_dot(xu_, ids, a_lp_->value, low);
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
    be_.gemm(true, false, 1.f, g, xu_, 0.f, g_a);
    be_.gemm(false, false, 1.f, g, lowpass_, 1.f, du);
    Tensor g_mean = g_a;  // d mean_i
    if (fs == FeatureScaling::Reference) {  // a_i = A mean_i: dA += sum_i d a_i mean_i^T, d mean_i = A^T d a_i
      be_.gemm(true, false, 1.f, g_a, means_, 1.f, a_ref_->grad);
      g_mean = be_.empty(E, d);
      be_.gemm(false, false, 1.f, g_a, a_ref_->value, 0.f, g_mean);
    }
    be_.add_group_rows(w_enc_->grad, expert_blocks_, g_mean, 1.f / float(n_));  // mean_i = (1/n) sum of W_i's rows
  } else if (fs == FeatureScaling::Identity) {
    be_.identity_lowpass_outer_add(neg, ids, n_, du);
  } else {
    be_.sparse_rows_outer_add(neg, ids, xu_, 1.f, a_lp_->grad);
    be_.sparse_rows_matmul(neg, ids, a_lp_->value, 1.f, du);
  }
}

}  // namespace moesae
