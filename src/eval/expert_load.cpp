#include "eval/expert_load.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace moesae {

ExpertLoad expert_load_from_fractions(const std::vector<double>& fractions) {
  if (fractions.empty()) fail("expert load: no experts");
  double total = 0.0;
  for (size_t i = 0; i < fractions.size(); ++i) {
    if (!std::isfinite(fractions[i]) || fractions[i] < 0.0)
      fail("expert load: fraction of expert ", i, " is ", fractions[i], " (must be finite and >= 0)");
    total += fractions[i];
  }
  if (total <= 0.0) fail("expert load: every expert has a zero load");
  ExpertLoad load;
  const size_t e = fractions.size();
  load.fractions.resize(e);
  double lo = std::numeric_limits<double>::infinity(), hi = 0.0;
  for (size_t i = 0; i < e; ++i) {
    const double f = fractions[i] / total;
    load.fractions[i] = f;
    if (f > 0.0)
      load.entropy -= f * std::log(f);
    else
      ++load.idle_experts;
    lo = std::min(lo, f);
    hi = std::max(hi, f);
  }
  load.normalized_entropy = e > 1 ? load.entropy / std::log(double(e)) : 1.0;
  load.max_min_ratio = lo > 0.0 ? hi / lo : std::numeric_limits<double>::infinity();
  return load;
}

ExpertLoad expert_load_from_counts(const std::vector<int64_t>& counts) {
  std::vector<double> f(counts.size());
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] < 0) fail("expert load: count of expert ", i, " is negative (", counts[i], ")");
    f[i] = double(counts[i]);
  }
  return expert_load_from_fractions(f);
}

void accumulate_expert_counts(const Tensor& experts, std::vector<int64_t>& counts) {
  if (!experts.defined() || experts.device() != Device::CPU || experts.dtype() != DType::I32)
    fail("expert load: the routing must be a host i32 tensor [B, e]");
  const int64_t n = static_cast<int64_t>(counts.size());
  if (n == 0) fail("expert load: counts has no experts");
  const int32_t* p = experts.data<int32_t>();
  for (int64_t r = 0; r < experts.rows(); ++r)
    for (int64_t j = 0; j < experts.cols(); ++j) {
      const int32_t id = p[r * experts.ld() + j];
      if (id < -1 || id >= n)
        fail("expert load: expert id ", id, " at [", r, ", ", j, "] is outside [-1, ", n, ")");
      if (id >= 0) ++counts[static_cast<size_t>(id)];
    }
}

}  // namespace moesae
