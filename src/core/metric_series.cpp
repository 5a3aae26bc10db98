#include "core/metric_series.h"

#include <limits>

#include "core/error.h"

namespace moesae {

void MetricSeries::add_row(const std::map<std::string, double>& row) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (const auto& [name, value] : row) {
    auto& col = columns_[name];
    col.resize(rows_, nan);  // a column first seen now is NaN in earlier rows
    col.push_back(value);
  }
  ++rows_;
  for (auto& [name, col] : columns_) col.resize(rows_, nan);
}

void MetricSeries::set_columns(std::map<std::string, std::vector<double>> columns) {
  const size_t rows = columns.empty() ? 0 : columns.begin()->second.size();
  for (const auto& [name, col] : columns)
    if (col.size() != rows)
      fail("metric '", name, "' has ", col.size(), " rows but '", columns.begin()->first, "' has ", rows);
  columns_ = std::move(columns);
  rows_ = rows;
}

const std::vector<double>& MetricSeries::column(const std::string& name) const {
  auto it = columns_.find(name);
  if (it == columns_.end()) fail("no metric '", name, "'");
  return it->second;
}

}  // namespace moesae
