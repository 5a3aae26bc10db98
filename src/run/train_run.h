// moesae run: one training run from a resolved configuration to its HDF5 record.
//   data -> model (random init, b_pre/b_r at the geometric median of the first batch) -> Trainer (checkpoint
//   `<out>.ckpt.h5`, resumed automatically when present and written with the same config) -> held-out
//   evaluation -> record `<out>` (atomic). The checkpoint is removed once the record is written.
#pragma once
#include <memory>
#include <string>

#include "data/activation_file.h"
#include "data/activation_stream.h"
#include "eval/evaluate.h"
#include "eval/loss_recovered.h"
#include "run/config.h"

namespace moesae {

struct TrainRunOptions {
  std::string out;           // record path (RUN.h5)
  int64_t stop_after = -1;   // stop (with a checkpoint) once this many steps are done; -1: run to the end
  bool restart = false;      // ignore an existing checkpoint
};

struct TrainRunResult {
  bool finished = false;  // a record was written
  int64_t steps_done = 0;
  double seconds = 0;
  EvalResult final;
};

std::string checkpoint_path_for(const std::string& record_path);

TrainRunResult train_run(const RunConfig& config, const TrainRunOptions& options);

// The `lm:` evaluation (Loss Recovered, ...) of a trained SAE, with the layer, text and documents recorded in the
// attributes of its training activation file.
std::map<std::string, double> evaluate_lm_for_run(Sae& sae, const LmEvalConfig& lm, const EvalLm& loaded,
                                                  const ActivationFile& acts);

// The activation file a finished run is evaluated on: the run's data.path (or `data_override`), checked to exist and
// to have the SAE's d, and its held-out split (the tail defined by the run's data settings) or every row.
struct EvalData {
  DataConfig config;
  std::shared_ptr<const ActivationFile> file;
  RowRange rows;
};
EvalData open_eval_data(const RunConfig& run, const std::string& data_override, bool all_rows);

// Builds the model described by a record and loads its weights (for eval and export).
std::unique_ptr<Sae> load_sae_from_record(const std::string& record_path, Backend& be, RunConfig* config_out);

}  // namespace moesae
