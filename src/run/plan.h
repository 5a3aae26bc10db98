// moesae run: `moesae plan`: the runs of an experiment file with their FLOPs per token, parameters, memory, an
// estimated training time and their status on disk; and the rate estimates `moesae run` uses for its ETA.
#pragma once
#include <string>
#include <vector>

#include "run/experiment.h"
#include "run/flops.h"

namespace moesae {

struct PlannedRun {
  const ExperimentRun* run = nullptr;
  RunStatus status;
  RunCost cost;                  // cost.known is false when the input dimension is not known yet
  double remaining_flops = 0;    // total FLOPs still to do (0 when done; a checkpoint's steps are done)
};
std::vector<PlannedRun> plan_runs(const Experiment& e, const std::vector<const ExperimentRun*>& runs);

// Training FLOP/s used for time estimates, and where it came from: the finished runs of the experiment (their
// training FLOPs / their recorded train_seconds), else a short GEMM measurement (measured_cpu_rate).
struct RateEstimate {
  double flops_per_s = 0;
  std::string source;  // "3 finished runs", "GEMM estimate", "--rate"
};
RateEstimate estimate_rate(const std::vector<PlannedRun>& planned);

struct PlanOptions {
  std::vector<std::string> only;
  double rate_gflops = 0;  // > 0: use this rate instead of the estimate
  bool terms = false;      // add each run's FLOPs terms below the table
};
// The plan table (stdout of `moesae plan`).
std::string plan_table(const Experiment& e, const PlanOptions& options);

}  // namespace moesae
