#include "backend/backend.h"

namespace moesae {

Tensor Backend::zeros(int64_t rows, int64_t cols, DType dt) {
  Tensor t = empty(rows, cols, dt);
  if (dt == DType::F32) fill(t, 0.f); else fill_i32(t, 0);
  return t;
}

Tensor Backend::zeros_vector(int64_t n, DType dt) {
  Tensor t = empty_vector(n, dt);
  if (dt == DType::F32) fill(t, 0.f); else fill_i32(t, 0);
  return t;
}

Tensor Backend::to_host(const Tensor& src) {
  Tensor h = src.rank() == 1 ? host_vector(src.rows(), src.dtype()) : host_tensor(src.rows(), src.cols(), src.dtype());
  download(src, h);
  return h;
}

Tensor Backend::from_host(const Tensor& host_src) {
  Tensor t = host_src.rank() == 1 ? empty_vector(host_src.rows(), host_src.dtype())
                                  : empty(host_src.rows(), host_src.cols(), host_src.dtype());
  upload(host_src, t);
  return t;
}

}  // namespace moesae
