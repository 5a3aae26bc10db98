// moesae run: `moesae collect`: the finished records of an experiment merged into one HDF5 file with a run table
// (layout: docs/records.md, "Grid collections"). Safe while runs are still training: records only ever appear
// complete at their final path (written to a temporary file and renamed), and a run without a finished record of
// its current configuration (only a checkpoint, a temporary file, a stale record, nothing) is listed as missing.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "run/experiment.h"

namespace moesae {

struct CollectSummary {
  int runs = 0;       // rows of the table
  int collected = 0;  // finished runs copied under /runs/<id>
  std::vector<std::pair<std::string, std::string>> missing;  // id -> status ("todo", "running 40/100", ...)
};

// Writes `out_path` atomically (the previous file stays until the new one is complete). `only`: as --only.
CollectSummary collect_experiment(const Experiment& e, const std::string& out_path,
                                  const std::vector<std::string>& only = {});

}  // namespace moesae
