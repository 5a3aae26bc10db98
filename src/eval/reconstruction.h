// moesae eval: reconstruction quality accumulated over the batches of an evaluation set.
//   mse        = (1/(N d)) sum_t ||x_t - x^_t||^2   (paper Eq. A.1: mean over tokens and dimensions)
//   mse_sum_d  = (1/N) sum_t ||x_t - x^_t||^2       (summed over d: the number the reference code reports, §1.6)
//   fvu        = sum_t ||x_t - x^_t||^2 / sum_t ||x_t - mean_x||^2, mean_x over ALL accumulated tokens
//   explained_variance = 1 - fvu
// (The reference code's "frac_variance_explained" also centres the residual; we use the plain definition.)
// The total variance is streamed per dimension in double (batch two-pass moments combined with Chan et al.'s
// formula), so it stays accurate when the mean is large compared with the spread. Results do not depend on the
// thread count: each dimension is accumulated in token order and dimensions are summed in index order.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace moesae {

class ReconstructionAccumulator {
 public:
  explicit ReconstructionAccumulator(int64_t d);

  // x, x_hat: host f32 [B, d] (any row stride).
  void add(const Tensor& x, const Tensor& x_hat);
  // Adds another accumulator's tokens (e.g. from another rank), as if its batches had been added here.
  void merge(const ReconstructionAccumulator& other);

  int64_t d() const { return d_; }
  int64_t tokens() const { return tokens_; }
  double squared_error() const { return sq_error_; }  // sum_t ||x_t - x^_t||^2
  double total_variance() const;                      // sum_t ||x_t - mean_x||^2
  // The metrics fail if no token has been added; fvu is NaN when every token is identical (zero variance).
  double mse() const;
  double mse_sum_d() const;
  double fvu() const;
  double explained_variance() const { return 1.0 - fvu(); }

 private:
  void require_tokens(const char* metric) const;

  int64_t d_;
  int64_t tokens_ = 0;
  double sq_error_ = 0.0;
  std::vector<double> mean_;  // per-dimension mean of x
  std::vector<double> m2_;    // per-dimension sum of squared deviations from the mean
};

}  // namespace moesae
