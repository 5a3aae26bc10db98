#include "sae/topk_sae.h"

#include <algorithm>

#include "core/profile.h"
#include "sae/sparse_codec.h"

namespace moesae {

TopKSae::TopKSae(const ModelConfig& config, Backend& backend) : Sae(config, backend) {
  const int F = cfg_.dict_size, d = cfg_.d;
  w_enc_ = &params_.add(be_, "W_enc", F, d);
  if (cfg_.encoder_bias) b_enc_ = &params_.add_vector(be_, "b_enc", F);
  w_dec_ = &params_.add(be_, "W_dec", F, d, /*decoder=*/true);
  b_pre_ = &params_.add_vector(be_, "b_pre", d);
}

void TopKSae::init(Rng& rng) {
  init_encoder_and_tied_decoder(w_enc_->value, w_dec_->value, rng);
}

SaeStats TopKSae::forward(const Tensor& x, bool train) {
  const int64_t B = x.rows(), F = cfg_.dict_size, k = cfg_.k;
  MOESAE_CHECK(x.cols() == cfg_.d, "input has d=", x.cols(), ", model expects ", cfg_.d);
  x_ = x;
  u_ = be_.empty(B, cfg_.d);
  subtract_bias(be_, x, b_pre_->value, u_);
  // Dense encoder: pre = u W_enc^T (+ b_enc), then ReLU, then TopK (ReLU before TopK, as the references).
  Tensor pre = be_.empty(B, F);
  {
    profile::Scope ps("encoder");
    be_.gemm(false, true, 1.f, u_, w_enc_->value, 0.f, pre);
    if (b_enc_) be_.add_row_vector(pre, b_enc_->value, 1.f);
    be_.relu(pre);
  }
  profile::Scope select_scope("select+decode");
  code_.vals = be_.empty(B, k);
  code_.ids = be_.empty(B, k, DType::I32);
  be_.topk_rows(pre, static_cast<int>(k), code_.vals, code_.ids);
  coef_ = code_.vals;
  x_hat_ = be_.empty(B, cfg_.d);
  sparse_decode(be_, coef_, code_.ids, w_dec_->value, b_pre_->value, x_hat_);

  SaeStats s;
  reconstruction_stats(x, s);
  s.l0 = double(be_.count_positive(code_.vals)) / double(B);
  aux_k_ = 0;
  if (train && cfg_.auxk && cfg_.auxk_alpha > 0) s.aux = auxk_forward(x, pre);
  s.loss = s.recon + s.aux;
  return s;
}

double TopKSae::auxk_forward(const Tensor& x, const Tensor& pre) {
  const int64_t B = x.rows(), d = cfg_.d;
  Tensor dead_mask = be_.empty_vector(cfg_.dict_size, DType::I32);
  const int64_t n_dead = be_.threshold_mask(fired_->value, cfg_.dead_threshold_tokens, dead_mask);
  if (n_dead == 0) return 0.0;
  aux_k_ = static_cast<int>(std::min<int64_t>(cfg_.resolved_k_aux(), n_dead));
  aux_vals_ = be_.empty(B, aux_k_);
  aux_ids_ = be_.empty(B, aux_k_, DType::I32);
  be_.topk_rows(pre, aux_k_, aux_vals_, aux_ids_, &dead_mask);
  // e = x - x^ (not detached: see backward), e^ = W_dec^T z_aux (no bias).
  aux_resid_ = be_.empty(B, d);
  be_.copy(x, aux_resid_);
  be_.axpy(-1.f, x_hat_, aux_resid_);
  aux_hat_ = be_.empty(B, d);
  be_.sparse_rows_matmul(aux_vals_, aux_ids_, w_dec_->value, 0.f, aux_hat_);
  // Total variance of x around its batch mean: sum ||x||^2 - B ||mean||^2.
  Tensor mean = be_.empty_vector(d);
  double total_var = 0;
  if (!group_ || group_->size() == 1) {
    be_.sum_rows(x, mean, 1.f / float(B), 0.f);
    total_var = be_.sum_squares(x) - double(B) * be_.sum_squares(mean);
  } else {  // over the group's batch: column sums and the sum of squares, added over the members
    be_.sum_rows(x, mean, 1.f, 0.f);
    Tensor h = be_.to_host(mean);
    std::vector<double> sums(d + 1);
    for (int64_t t = 0; t < d; ++t) sums[t] = h.host<float>()[t];
    sums[d] = be_.sum_squares(x);
    group_->sum(sums.data(), sums.size());
    const double rows = double(group_batch(B));
    double mean_sq = 0;
    for (int64_t t = 0; t < d; ++t) {
      const double m = double(float(sums[t] / rows));
      mean_sq += m * m;
    }
    total_var = sums[d] - rows * mean_sq;
  }
  total_var = std::max(total_var, 1e-12);
  Tensor err = be_.empty_vector(B);
  be_.row_squared_error(aux_hat_, aux_resid_, err);
  const double weight = cfg_.auxk_alpha * aux_factor() / total_var;
  aux_coef_ = 2.0 * weight;
  return weight * be_.sum(err);
}

void TopKSae::backward() {
  const int64_t B = x_.rows(), k = cfg_.k, d = cfg_.d;
  profile::Scope ps("backward");
  Tensor dxhat = be_.empty(B, d);
  reconstruction_grad(x_, dxhat);
  Tensor dhat;  // AuxK: dL/de^ = aux_coef (e^ - e); e = x - x^ is not detached (as the reference code), so
  if (aux_k_ > 0) {  // the same vector also flows into x^.
    dhat = be_.empty(B, d);
    be_.copy(aux_hat_, dhat);
    be_.axpy(-1.f, aux_resid_, dhat);
    be_.scale(dhat, static_cast<float>(aux_coef_));
    be_.axpy(1.f, dhat, dxhat);
  }
  Tensor dcoef = be_.empty(B, k);
  sparse_decode_backward(be_, dxhat, coef_, code_.ids, w_dec_->value, w_dec_->grad, b_pre_->grad, dcoef);
  be_.relu_backward(code_.vals, dcoef);  // dL/dpre at the selected latents (ReLU mask)
  Tensor du = be_.empty(B, d);
  sparse_encoder_backward(be_, dcoef, dcoef, code_.ids, u_, w_enc_->value, w_enc_->grad,
                          b_enc_ ? b_enc_->grad : Tensor(), du);
  be_.sum_rows(du, b_pre_->grad, -1.f, 1.f);  // u = x - b_pre

  if (aux_k_ > 0) {
    Tensor daux = be_.empty(B, aux_k_);
    sparse_decode_backward(be_, dhat, aux_vals_, aux_ids_, w_dec_->value, w_dec_->grad, Tensor(), daux);
    be_.relu_backward(aux_vals_, daux);
    sparse_encoder_backward(be_, daux, daux, aux_ids_, u_, w_enc_->value, w_enc_->grad,
                            b_enc_ ? b_enc_->grad : Tensor(), du);
    be_.sum_rows(du, b_pre_->grad, -1.f, 1.f);
  }
}

}  // namespace moesae
