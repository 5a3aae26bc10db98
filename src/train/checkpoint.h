// moesae training: checkpoints for exact resumption. One HDF5 file holds the parameters, state buffers (dead-latent
// counters), Adam moments and step, the data stream's cursor, the metrics so far (with the running sums of the
// metrics row in progress, so that a resumed run logs exactly the rows of an uninterrupted one), and the resolved
// config text (resuming with a different config is refused). Written atomically: a crash mid-write leaves the
// previous checkpoint intact.
//
// Sharded checkpoints (expert parallelism): each expert-parallel rank writes its rows of the sharded parameters and
// their Adam moments to its own shard file, PATH.step<S>.shard<i>of<N>; then rank 0 writes PATH, the manifest (the
// replicated parameters, buffers, cursors, metrics and config, with attributes shard_step S and shard_count N). Each
// file is atomic, and shards of an older step are removed only after the new manifest is in place, so a crash at any
// point leaves a complete checkpoint. On resume every rank reads the row range it holds from whichever shard files
// cover it: a checkpoint resumes at any rank count or layout, or on one process; a whole (unsharded) checkpoint
// resumes sharded the same way.
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

// Which shards hold the sharded parameters of a checkpoint: shard files of step `step`, `count` of them.
struct ShardSet {
  int64_t step = 0;
  int count = 0;
};
std::string shard_path(const std::string& path, const ShardSet& set, int index);

// Writes the checkpoint (with `shards`: the manifest, without the sharded parameters, which must already be in
// their shard files).
void save_checkpoint(const std::string& path, const std::string& config_yaml, Sae& sae, Adam& adam,
                     const CheckpointState& state, const ShardSet* shards = nullptr);
// Writes shard `index` of `set`: this rank's rows of the sharded parameters and their Adam moments.
void save_checkpoint_shard(const std::string& path, const ShardSet& set, int index, Sae& sae, Adam& adam);
// Removes the shard files of PATH other than those of `keep` (nullptr: all of them).
void remove_stale_shards(const std::string& path, const ShardSet* keep);
// Removes a checkpoint: the manifest (or whole file) and its shard files.
void remove_checkpoint(const std::string& path);
// The configuration text a checkpoint was written with; fails (without naming the file: callers add it) if the
// file cannot be read or is not a moesae checkpoint.
std::string checkpoint_config(const std::string& path);
// Whether a checkpoint's stored configuration text belongs to this run (empty: the same text as config_yaml).
using ConfigMatch = std::function<bool(const std::string& written)>;
// Restores into an already-constructed model and optimizer of the same configuration.
CheckpointState load_checkpoint(const std::string& path, const std::string& config_yaml, Sae& sae, Adam& adam,
                                const ConfigMatch& matches = {});

}  // namespace moesae
