// moesae training: named scalar series over steps (one row per logging interval).
#pragma once
#include <map>
#include <string>
#include <vector>

namespace moesae {

class MetricsLog {
 public:
  // Appends one row. Every row must carry the same keys as the first (missing keys are recorded as NaN).
  void add(const std::map<std::string, double>& row);
  const std::map<std::string, std::vector<double>>& series() const { return series_; }
  size_t rows() const { return rows_; }
  void clear();
  void set_series(std::map<std::string, std::vector<double>> s);

 private:
  std::map<std::string, std::vector<double>> series_;
  size_t rows_ = 0;
};

}  // namespace moesae
