// moesae training: checkpoints for exact resumption. One HDF5 file holds the parameters, state buffers (dead-latent
// counters), Adam moments and step, the data stream's cursor, the metrics so far, and the resolved config text
// (resuming with a different config is refused). Written atomically: a crash mid-write leaves the previous
// checkpoint intact.
#pragma once
#include <string>
#include <vector>

#include "sae/sae.h"
#include "train/adam.h"
#include "core/metric_series.h"

namespace moesae {

struct CheckpointState {
  int64_t step = 0;  // steps completed
  std::vector<uint64_t> data_cursor;
  MetricSeries metrics;
  MetricSeries eval_metrics;
};

void save_checkpoint(const std::string& path, const std::string& config_yaml, Sae& sae, Adam& adam,
                     const CheckpointState& state);
// Restores into an already-constructed model and optimizer of the same configuration.
CheckpointState load_checkpoint(const std::string& path, const std::string& config_yaml, Sae& sae, Adam& adam);

}  // namespace moesae
