#include "sae/geometric_median.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace moesae {

Tensor geometric_median(const Tensor& points, int max_iter, double tol) {
  const int64_t n = points.rows(), d = points.cols();
  MOESAE_CHECK(n > 0 && d > 0, "geometric_median of an empty set");
  std::vector<double> g(d, 0.0), next(d);
  auto row = [&](int64_t i) { return points.host<float>() + i * points.ld(); };
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < d; ++t) g[t] += row(i)[t];
  for (auto& v : g) v /= double(n);
  for (int it = 0; it < max_iter; ++it) {
    std::fill(next.begin(), next.end(), 0.0);
    double wsum = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float* p = row(i);
      double dist = 0;
      for (int64_t t = 0; t < d; ++t) dist += (p[t] - g[t]) * (p[t] - g[t]);
      const double w = 1.0 / std::max(std::sqrt(dist), 1e-12);
      wsum += w;
      for (int64_t t = 0; t < d; ++t) next[t] += w * p[t];
    }
    double shift = 0;
    for (int64_t t = 0; t < d; ++t) {
      next[t] /= wsum;
      shift += (next[t] - g[t]) * (next[t] - g[t]);
    }
    g.swap(next);
    if (std::sqrt(shift) < tol) break;
  }
  Tensor out = host_vector(d);
  for (int64_t t = 0; t < d; ++t) out.host<float>()[t] = static_cast<float>(g[t]);
  return out;
}

}  // namespace moesae
