// moesae models: the sparse decoder and the sparse encoder gradient shared by the TopK-style models.
// Backward passes touch only the selected latents: no dense batch x F gradient is ever formed.
#pragma once
#include "backend/backend.h"

namespace moesae {

// x^ = sum_j coef[b,j] W_dec[ids[b,j]] + b_pre   (Eq. 2.4 with coef = w_i z_ij)
void sparse_decode(Backend& be, const Tensor& coef, const Tensor& ids, const Tensor& w_dec, const Tensor& b_pre,
                   Tensor x_hat);

// Backward of sparse_decode for dL/dx^ = dxhat: dcoef[b,j] = dxhat_b . W_dec[ids[b,j]],
// grad W_dec[ids[b,j]] += coef[b,j] dxhat_b, and (if g_b_pre is defined) grad b_pre += sum_b dxhat_b.
void sparse_decode_backward(Backend& be, const Tensor& dxhat, const Tensor& coef, const Tensor& ids,
                            const Tensor& w_dec, Tensor g_w_dec, Tensor g_b_pre, Tensor dcoef);

// Backward of pre[b,j] = scale * W_enc[ids[b,j]] . u_b (+ b_enc[ids[b,j]]) at the selected entries, where
// coef[b,j] = scale * dL/dpre (per entry, so per-expert Feature Scaling factors can be folded in):
//   grad W_enc[ids] += coef u_b;   du_b = sum_j coef W_enc[ids]   (du overwritten);
//   grad b_enc[ids] += dL/dpre      (only if g_b_enc is defined; takes the unscaled dpre).
void sparse_encoder_backward(Backend& be, const Tensor& coef, const Tensor& dpre, const Tensor& ids,
                             const Tensor& u, const Tensor& w_enc, Tensor g_w_enc, Tensor g_b_enc, Tensor du);

// u = x - b
void subtract_bias(Backend& be, const Tensor& x, const Tensor& b, Tensor u);

}  // namespace moesae
