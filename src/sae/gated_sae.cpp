#include "sae/gated_sae.h"

#include "sae/sparse_codec.h"

namespace moesae {

GatedSae::GatedSae(const ModelConfig& config, Backend& backend) : Sae(config, backend) {
  const int F = cfg_.dict_size, d = cfg_.d;
  w_gate_ = &params_.add(be_, "W_enc", F, d);  // shared encoder direction W_gate
  b_gate_ = &params_.add_vector(be_, "b_gate", F);
  r_mag_ = &params_.add_vector(be_, "r_mag", F);
  b_mag_ = &params_.add_vector(be_, "b_mag", F);
  w_dec_ = &params_.add(be_, "W_dec", F, d, /*decoder=*/true);
  b_pre_ = &params_.add_vector(be_, "b_pre", d);  // b_dec
}

void GatedSae::init(Rng& rng) {
  init_encoder_and_tied_decoder(*w_gate_, *w_dec_, rng);
}

void GatedSae::forward_pass(const Tensor& x, bool train) {
  const int64_t B = x.rows(), F = cfg_.dict_size, d = cfg_.d;
  MOESAE_CHECK(x.cols() == d, "input has d=", x.cols(), ", model expects ", d);
  x_ = x;
  u_ = be_.empty(B, d);
  subtract_bias(be_, x, b_pre_->value, u_);
  g_ = be_.empty(B, F);  // W_gate u
  be_.gemm(false, true, 1.f, u_, w_gate_->value, 0.f, g_);
  gate_relu_ = be_.empty(B, F);  // ReLU(pi_gate)
  be_.copy(g_, gate_relu_);
  be_.add_row_vector(gate_relu_, b_gate_->value, 1.f);
  be_.relu(gate_relu_);
  exp_r_ = be_.empty_vector(F);
  be_.exp(r_mag_->value, exp_r_);
  f_ = be_.empty(B, F);  // pi_mag, then ReLU, then gated
  be_.copy(g_, f_);
  be_.scale_cols(f_, exp_r_);
  be_.add_row_vector(f_, b_mag_->value, 1.f);
  be_.relu(f_);
  // Gate: f = 1[pi_gate > 0] * ReLU(pi_mag); ReLU(pi_gate) > 0 exactly where pi_gate > 0.
  Tensor open = be_.empty(B, F);
  be_.fill(open, 1.f);
  be_.relu_backward(gate_relu_, open);
  be_.mul(f_, open, f_);
  x_hat_ = be_.empty(B, d);
  be_.gemm(false, false, 1.f, f_, w_dec_->value, 0.f, x_hat_);
  be_.add_row_vector(x_hat_, b_pre_->value, 1.f);

  // Sparsity term and auxiliary reconstruction through the frozen decoder (same normalisation c as the MSE).
  frozen_hat_ = be_.empty(B, d);
  be_.gemm(false, false, 1.f, gate_relu_, w_dec_->value, 0.f, frozen_hat_);
  be_.add_row_vector(frozen_hat_, b_pre_->value, 1.f);
  Tensor err = be_.empty_vector(B);
  be_.row_squared_error(x, frozen_hat_, err);
  queue_stats(x, f_, {{Backend::ReduceOp::Sum, gate_relu_}, {Backend::ReduceOp::Sum, err}},
              [c = recon_scale(B), l1 = cfg_.l1_coeff](const std::vector<double>& r, SaeStats& s) {
                s.sparsity = c * l1 * r[0];
                s.aux = c * r[1];
                s.loss = s.recon + s.sparsity + s.aux;
              });

  // The code: all F latents (dense), ids 0..F-1.
  if (!iota_.defined() || iota_.rows() != B) {
    Tensor h = host_tensor(B, F, DType::I32);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t j = 0; j < F; ++j) h.host<int32_t>()[b * F + j] = static_cast<int32_t>(j);
    iota_ = be_.from_host(h);
  }
  code_.ids = iota_;
  code_.vals = f_;
}

void GatedSae::backward() {
  const int64_t B = x_.rows(), F = cfg_.dict_size, d = cfg_.d;
  const float c = static_cast<float>(recon_scale(B));
  // Reconstruction path.
  Tensor dxhat = be_.empty(B, d);
  reconstruction_grad(x_, dxhat);
  be_.gemm(true, false, 1.f, f_, dxhat, 1.f, w_dec_->grad);
  be_.sum_rows(dxhat, b_pre_->grad, 1.f, 1.f);
  Tensor dmag = be_.empty(B, F);  // dL/dpi_mag = (dxhat W_dec^T) on active latents
  be_.gemm(false, true, 1.f, dxhat, w_dec_->value, 0.f, dmag);
  be_.relu_backward(f_, dmag);
  // Gate path: frozen decoder (no gradient to W_dec, b_dec) + L1 on ReLU(pi_gate).
  Tensor dfrozen = be_.empty(B, d);
  be_.copy(frozen_hat_, dfrozen);
  be_.axpy(-1.f, x_, dfrozen);
  be_.scale(dfrozen, 2.f * c);
  Tensor dgate = be_.empty(B, F);
  be_.gemm(false, true, 1.f, dfrozen, w_dec_->value, 0.f, dgate);
  Tensor l1 = be_.empty_vector(F);
  be_.fill(l1, c * cfg_.l1_coeff);
  be_.add_row_vector(dgate, l1, 1.f);
  be_.relu_backward(gate_relu_, dgate);
  // pi_mag = g * exp(r) + b_mag;  pi_gate = g + b_gate
  be_.sum_rows(dmag, b_mag_->grad, 1.f, 1.f);
  be_.sum_rows(dgate, b_gate_->grad, 1.f, 1.f);
  Tensor tmp = be_.empty(B, F);
  be_.mul(dmag, g_, tmp);
  Tensor dr = be_.empty_vector(F);
  be_.sum_rows(tmp, dr, 1.f, 0.f);
  be_.mul(dr, exp_r_, dr);
  be_.axpy(1.f, dr, r_mag_->grad);
  be_.scale_cols(dmag, exp_r_);
  be_.axpy(1.f, dmag, dgate);  // dL/dg
  be_.gemm(true, false, 1.f, dgate, u_, 1.f, w_gate_->grad);
  Tensor du = be_.empty(B, d);
  be_.gemm(false, false, 1.f, dgate, w_gate_->value, 0.f, du);
  be_.sum_rows(du, b_pre_->grad, -1.f, 1.f);
}

}  // namespace moesae
