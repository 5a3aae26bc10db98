#include "eval/reconstruction.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace moesae {

ReconstructionAccumulator::ReconstructionAccumulator(int64_t d) : d_(d) {
  if (d <= 0) fail("reconstruction metrics: input dimension must be positive (got ", d, ")");
  mean_.assign(static_cast<size_t>(d), 0.0);
  m2_.assign(static_cast<size_t>(d), 0.0);
}

void ReconstructionAccumulator::add(const Tensor& x, const Tensor& x_hat) {
  for (const Tensor* t : {&x, &x_hat}) {
    const char* name = t == &x ? "x" : "x_hat";
    if (!t->defined()) fail("reconstruction metrics: ", name, " is undefined");
    if (t->device() != Device::CPU || t->dtype() != DType::F32)
      fail("reconstruction metrics: ", name, " must be a host f32 tensor (got ", device_name(t->device()), " ",
           dtype_name(t->dtype()), ")");
  }
  if (x.rows() != x_hat.rows() || x.cols() != d_ || x_hat.cols() != d_)
    fail("reconstruction metrics: x ", x.shape_str(), " and x_hat ", x_hat.shape_str(), " must both be [B, ", d_,
         "]");
  const int64_t b = x.rows();
  if (b == 0) return;
  const float* xp = x.data<float>();
  const float* hp = x_hat.data<float>();
  const int64_t ldx = x.ld(), ldh = x_hat.ld();
  std::vector<double> err(static_cast<size_t>(d_));
  const double n_a = double(tokens_), n_b = double(b), n = n_a + n_b;

  // Each dimension independently (in blocks of 64 adjacent dimensions, for cache lines): batch mean and M2 by
  // two passes over the tokens, the squared error, then Chan's combination with the running moments.
  constexpr int64_t kCols = 64;
  const int64_t blocks = (d_ + kCols - 1) / kCols;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kCols, w = std::min(kCols, d_ - c0);
    double sum[kCols] = {}, e[kCols] = {}, m2_b[kCols] = {};
    for (int64_t r = 0; r < b; ++r) {
      const float* xr = xp + r * ldx + c0;
      const float* hr = hp + r * ldh + c0;
      for (int64_t j = 0; j < w; ++j) {
        const double v = xr[j], diff = v - double(hr[j]);
        sum[j] += v;
        e[j] += diff * diff;
      }
    }
    double mean_b[kCols];
    for (int64_t j = 0; j < w; ++j) mean_b[j] = sum[j] / n_b;
    for (int64_t r = 0; r < b; ++r) {
      const float* xr = xp + r * ldx + c0;
      for (int64_t j = 0; j < w; ++j) {
        const double dv = double(xr[j]) - mean_b[j];
        m2_b[j] += dv * dv;
      }
    }
    for (int64_t j = 0; j < w; ++j) {
      const int64_t c = c0 + j;
      const double delta = mean_b[j] - mean_[c];
      mean_[c] += delta * (n_b / n);
      m2_[c] += m2_b[j] + delta * delta * (n_a * n_b / n);
      err[c] = e[j];
    }
  }
  for (int64_t c = 0; c < d_; ++c) sq_error_ += err[c];
  tokens_ += b;
}

void ReconstructionAccumulator::merge(const ReconstructionAccumulator& other) {
  if (other.d_ != d_) fail("reconstruction metrics: cannot merge d=", other.d_, " into d=", d_);
  if (other.tokens_ == 0) return;
  const double n_a = double(tokens_), n_b = double(other.tokens_), n = n_a + n_b;
  for (int64_t c = 0; c < d_; ++c) {
    const double delta = other.mean_[c] - mean_[c];
    mean_[c] += delta * (n_b / n);
    m2_[c] += other.m2_[c] + delta * delta * (n_a * n_b / n);
  }
  sq_error_ += other.sq_error_;
  tokens_ += other.tokens_;
}

void ReconstructionAccumulator::require_tokens(const char* metric) const {
  if (tokens_ == 0) fail("reconstruction metrics: ", metric, " requested before any token was accumulated");
}

double ReconstructionAccumulator::total_variance() const {
  double v = 0.0;
  for (double m : m2_) v += m;
  return v;
}

double ReconstructionAccumulator::mse() const {
  require_tokens("mse");
  return sq_error_ / (double(tokens_) * double(d_));
}

double ReconstructionAccumulator::mse_sum_d() const {
  require_tokens("mse_sum_d");
  return sq_error_ / double(tokens_);
}

double ReconstructionAccumulator::fvu() const {
  require_tokens("fvu");
  const double var = total_variance();
  return var > 0.0 ? sq_error_ / var : std::numeric_limits<double>::quiet_NaN();
}

}  // namespace moesae
