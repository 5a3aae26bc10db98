#include "train/metrics_log.h"

#include <limits>

#include "core/error.h"

namespace moesae {

void MetricsLog::add(const std::map<std::string, double>& row) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (auto& [key, value] : row) {
    auto& s = series_[key];
    s.resize(rows_, nan);  // a key first seen now: earlier rows are NaN
    s.push_back(value);
  }
  ++rows_;
  for (auto& [key, s] : series_) s.resize(rows_, nan);
}

void MetricsLog::clear() {
  series_.clear();
  rows_ = 0;
}

void MetricsLog::set_series(std::map<std::string, std::vector<double>> s) {
  rows_ = s.empty() ? 0 : s.begin()->second.size();
  for (auto& [key, v] : s)
    if (v.size() != rows_) fail("metrics series '", key, "' has ", v.size(), " rows, expected ", rows_);
  series_ = std::move(s);
}

}  // namespace moesae
