#include "sae/init.h"

#include <cmath>

namespace moesae {

void init_uniform_fan_in(Backend& be, Tensor w, int64_t fan_in, Rng& rng) {
  Tensor h = w.rank() == 1 ? host_vector(w.rows()) : host_tensor(w.rows(), w.cols());
  const double bound = 1.0 / std::sqrt(double(fan_in));
  float* p = h.host<float>();
  for (int64_t i = 0; i < h.numel(); ++i) p[i] = static_cast<float>(rng.uniform(-bound, bound));
  be.upload(h, w);
}

void init_uniform_fan_in_rows(Backend& be, Tensor w, int64_t fan_in, int64_t first_row, int64_t total_rows,
                              Rng& rng) {
  MOESAE_CHECK(first_row >= 0 && first_row + w.rows() <= total_rows, "init rows [", first_row, ", ",
               first_row + w.rows(), ") of ", total_rows);
  Tensor h = host_tensor(w.rows(), w.cols());
  const double bound = 1.0 / std::sqrt(double(fan_in));
  const int64_t cols = w.cols(), begin = first_row * cols, end = (first_row + w.rows()) * cols;
  float* p = h.host<float>();
  for (int64_t i = 0; i < total_rows * cols; ++i) {  // the whole sequence is drawn; only our rows are kept
    const float v = static_cast<float>(rng.uniform(-bound, bound));
    if (i >= begin && i < end) p[i - begin] = v;
  }
  be.upload(h, w);
}

void init_identity(Backend& be, Tensor w) {
  MOESAE_CHECK(w.rows() == w.cols());
  Tensor h = host_tensor(w.rows(), w.cols());
  for (int64_t i = 0; i < w.rows(); ++i) h.host<float>()[i * w.cols() + i] = 1.f;
  be.upload(h, w);
}

}  // namespace moesae
