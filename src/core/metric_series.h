// moesae core: named scalar series over rows (one row per logged step), e.g. training metrics. Used by the trainer,
// its checkpoints and the run records.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace moesae {

// Named columns over rows (one row per logged step), all the same length. A row without some column records NaN
// there. (Run records store the column "step" as i64, every other column as f64.)
class MetricSeries {
 public:
  void add_row(const std::map<std::string, double>& row);
  // Replaces all columns; they must have equal lengths.
  void set_columns(std::map<std::string, std::vector<double>> columns);
  const std::map<std::string, std::vector<double>>& columns() const { return columns_; }
  size_t rows() const { return rows_; }
  bool has(const std::string& name) const { return columns_.count(name) != 0; }
  // The column `name`; fails naming it if absent.
  const std::vector<double>& column(const std::string& name) const;

 private:
  std::map<std::string, std::vector<double>> columns_;
  size_t rows_ = 0;
};

}  // namespace moesae
