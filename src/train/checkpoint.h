// moesae training: checkpoints for exact resumption. One HDF5 file holds the parameters, state buffers (dead-latent
// counters), Adam moments and step, the data stream's cursor, the metrics so far (with the running sums of the
// metrics row in progress, so that a resumed run logs exactly the rows of an uninterrupted one), and the resolved
// config text (resuming with a different config is refused). Written atomically: a crash mid-write leaves the
// previous checkpoint intact.
//
// Under expert parallelism the file holds the whole model in the 1-process layout (every sharded parameter and
// Adam moment gathered to the writing rank), so a checkpoint resumes at any rank count, or on one process: each
// rank loads its rows of the sharded parameters (Param::shard_first).
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "sae/sae.h"
#include "train/adam.h"
#include "core/metric_series.h"

namespace moesae {

// Running sums of the metrics row being accumulated (the steps since the last row), so that a run resumed between
// two rows logs the same rows as one that was never interrupted.
struct IntervalSums {
  int64_t steps = 0;
  double loss = 0, mse = 0, mse_sum = 0, l0 = 0, lb = 0, aux = 0, sparsity = 0, lr = 0, grad_norm = 0;
};

struct CheckpointState {
  int64_t step = 0;  // steps completed
  std::vector<uint64_t> data_cursor;
  MetricSeries metrics;
  MetricSeries eval_metrics;
  IntervalSums interval;
};

// The whole of a parameter's tensor (its value, gradient-shaped Adam moment...) as a host tensor; under expert
// parallelism a collective gather that returns an empty Tensor on the ranks that do not write.
using GatherWhole = std::function<Tensor(const Param&, const Tensor&)>;

// gather: empty = this process holds whole parameters. write: false on ranks that only take part in the gathers.
void save_checkpoint(const std::string& path, const std::string& config_yaml, Sae& sae, Adam& adam,
                     const CheckpointState& state, const GatherWhole& gather = {}, bool write = true);
// The configuration text a checkpoint was written with; fails (without naming the file: callers add it) if the
// file cannot be read or is not a moesae checkpoint.
std::string checkpoint_config(const std::string& path);
// Restores into an already-constructed model and optimizer of the same configuration.
CheckpointState load_checkpoint(const std::string& path, const std::string& config_yaml, Sae& sae, Adam& adam);

}  // namespace moesae
