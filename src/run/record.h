// moesae run: the per-run HDF5 record: what was run (config), how training went (metrics over steps, held-out
// evaluations), where it ended (final metrics) and what it learned (weights). One file per run, written atomically;
// the layout is documented in docs/records.md (read by analysis/ and by tests).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/metric_series.h"
#include "core/tensor.h"

namespace moesae {

struct RunRecord {
  std::string moesae_version;  // set by the constructor to this build's version
  std::string created;         // ISO 8601 UTC ("2025-01-31T12:00:00Z"); filled by save() if empty
  std::string arch;            // "scale", "topk", "switch", "gated", ...
  std::string status = "finished";
  std::string config_yaml;     // the resolved config (run/config.h to_yaml)
  MetricSeries metrics;        // training series over steps
  MetricSeries eval;           // held-out evaluation series over steps
  std::map<std::string, double> final_scalars;               // e.g. mse, fvu, l0, redundancy
  std::map<std::string, std::vector<double>> final_vectors;  // e.g. expert_fraction [E], omega [E]
  std::map<std::string, Tensor> weights;                     // host f32/i32 tensors, e.g. W_dec [F, d]

  RunRecord();
  void add_metrics_row(const std::map<std::string, double>& row) { metrics.add_row(row); }
  void add_eval_row(const std::map<std::string, double>& row) { eval.add_row(row); }

  // Writes the record to `path` atomically (a temporary file renamed into place): either the complete new
  // record is there afterwards or whatever was there before is untouched.
  void save(const std::string& path) const;
  // Reads a record; `with_weights = false` skips the (possibly large) weights.
  static RunRecord load(const std::string& path, bool with_weights = true);
  // Names of the stored weights, and one weight, without loading the rest.
  static std::vector<std::string> weight_names(const std::string& path);
  static Tensor load_weight(const std::string& path, const std::string& name);
};

// The current time as ISO 8601 UTC, e.g. "2025-01-31T12:00:00Z".
std::string iso_time_utc();

}  // namespace moesae
