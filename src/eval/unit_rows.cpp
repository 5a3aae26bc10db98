#include "eval/unit_rows.h"

#include <cmath>

namespace moesae {

void check_host_matrix(const Tensor& m, const char* what) {
  if (!m.defined()) fail(what, ": tensor is undefined");
  if (m.device() != Device::CPU) fail(what, ": expected a host tensor, got a ", device_name(m.device()), " tensor");
  if (m.dtype() != DType::F32) fail(what, ": expected f32, got ", dtype_name(m.dtype()));
  if (m.cols() < 1) fail(what, " ", m.shape_str(), ": has no columns");
  const int64_t rows = m.rows(), cols = m.cols();
  const float* p = m.data<float>();
  int64_t bad_row = -1;
#pragma omp parallel for schedule(static) reduction(max : bad_row)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c)
      if (!std::isfinite(p[r * m.ld() + c])) {
        bad_row = r;
        break;
      }
  }
  if (bad_row >= 0) fail(what, " ", m.shape_str(), ": non-finite value in row ", bad_row);
}

std::vector<float> unit_rows(const Tensor& m, const char* what) {
  check_host_matrix(m, what);
  const int64_t rows = m.rows(), cols = m.cols(), ld = m.ld();
  const float* src = m.data<float>();
  std::vector<float> out(static_cast<size_t>(rows * cols));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * ld;
    double sq = 0.0;
    for (int64_t c = 0; c < cols; ++c) sq += double(s[c]) * double(s[c]);
    const double inv = sq > 0.0 ? 1.0 / std::sqrt(sq) : 0.0;
    float* o = out.data() + r * cols;
    for (int64_t c = 0; c < cols; ++c) o[c] = static_cast<float>(double(s[c]) * inv);
  }
  return out;
}

}  // namespace moesae
