#include "sae/sparse_codec.h"

namespace moesae {

void sparse_decode(Backend& be, const Tensor& coef, const Tensor& ids, const Tensor& w_dec, const Tensor& b_pre,
                   Tensor x_hat) {
  be.sparse_rows_matmul(coef, ids, w_dec, 0.f, x_hat);
  be.add_row_vector(x_hat, b_pre, 1.f);
}

void sparse_decode_backward(Backend& be, const Tensor& dxhat, const Tensor& coef, const Tensor& ids,
                            const Tensor& w_dec, Tensor g_w_dec, Tensor g_b_pre, Tensor dcoef) {
  be.sparse_rows_dot(dxhat, ids, w_dec, dcoef);
  be.sparse_rows_outer_add(coef, ids, dxhat, 1.f, g_w_dec);
  if (g_b_pre.defined()) be.sum_rows(dxhat, g_b_pre, 1.f, 1.f);
}

void sparse_encoder_backward(Backend& be, const Tensor& coef, const Tensor& dpre, const Tensor& ids,
                             const Tensor& u, const Tensor& w_enc, Tensor g_w_enc, Tensor g_b_enc, Tensor du) {
  be.sparse_rows_outer_add(coef, ids, u, 1.f, g_w_enc);
  if (g_b_enc.defined()) be.scatter_add(dpre.flatten(), ids.flatten(), g_b_enc);
  be.sparse_rows_matmul(coef, ids, w_enc, 0.f, du);
}

void subtract_bias(Backend& be, const Tensor& x, const Tensor& b, Tensor u) {
  be.copy(x, u);
  be.add_row_vector(u, b, -1.f);
}

}  // namespace moesae
