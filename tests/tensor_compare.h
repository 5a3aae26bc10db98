// Comparisons of tensors for the multi-rank and backend parity tests.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace moesae::testing {

inline std::vector<float> host_floats(Backend& be, const Tensor& t) {
  Tensor h = be.to_host(t);
  return std::vector<float>(h.host<float>(), h.host<float>() + h.numel());
}
inline std::vector<int32_t> host_ints(Backend& be, const Tensor& t) {
  Tensor h = be.to_host(t);
  return std::vector<int32_t>(h.host<int32_t>(), h.host<int32_t>() + h.numel());
}

// ||got - want|| <= tol ||want|| (Frobenius); the message names `what` and the error found.
inline void expect_relative_close(const std::vector<float>& got, const std::vector<float>& want, double tol,
                                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  EXPECT_LE(std::sqrt(num), tol * std::sqrt(den) + 1e-30)
      << what << ": relative Frobenius error " << std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

}  // namespace moesae::testing
