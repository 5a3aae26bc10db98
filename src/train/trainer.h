// moesae training: the training loop. Per step (as the reference trainers): renormalise the decoder, forward,
// backward, clip the global gradient norm, remove the decoder gradient's row-parallel component, Adam update with
// the scheduled learning rate, update the dead-latent counters. Logs one progress line per interval, checkpoints
// every checkpoint_every steps, at the end, and when SIGINT/SIGTERM arrives.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "parallel/data_parallel.h"
#include "parallel/expert_parallel.h"
#include "sae/sae.h"
#include "train/adam.h"
#include "train/batch_source.h"
#include "train/checkpoint.h"
#include "train/config.h"

namespace moesae {

struct TrainOutcome {
  int64_t steps_done = 0;
  bool finished = false;     // reached cfg.steps
  bool interrupted = false;  // stopped by a signal or stop_after (a checkpoint was written)
  double seconds = 0;
};

class Trainer {
 public:
  // Periodic held-out evaluation hook: returns named metrics for the eval series.
  using EvalHook = std::function<std::map<std::string, double>(Sae&)>;

  Trainer(const TrainConfig& cfg, Sae& sae, BatchSource& data);
  // Checkpointing (optional): the file and the resolved config text that identifies the run (written into every
  // checkpoint); `matches` decides whether a stored text is this run's (default: the same text).
  void set_checkpoint(const std::string& path, const std::string& config_yaml, ConfigMatch matches = {});
  void set_eval_hook(EvalHook hook) { eval_hook_ = std::move(hook); }
  // Data parallelism (parallel/data_parallel.h): this process trains its share (batch_size / P rows) of every
  // batch; gradients are summed over the ranks, the model's batch statistics are the group's, a stop request on
  // any rank stops all of them at the same step, rank 0 alone writes checkpoints and runs the evaluation hook.
  // The data source must be a DataParallelSource over the same communicator.
  void set_data_parallel(DataParallel* dp);
  // Expert parallelism (parallel/expert_parallel.h), with set_data_parallel over ALL ranks (each rank still trains
  // its share of the batch, and the batch statistics stay the whole job's). The model's experts are sharded over
  // ep's ranks; `replicas` (nullptr: none) groups the ranks that hold the same experts in a 2-D layout. The
  // replicated parameters' gradients are all-reduced over all ranks, the sharded ones over `replicas`; the gradient
  // norm is the whole model's; checkpoints are sharded (train/checkpoint.h). The evaluation hook runs on rank 0 on
  // a whole (unsharded) model that `make_whole` builds there for the occasion (it may be empty on other ranks, and
  // on rank 0 when nothing evaluates), into which every rank's parameters are gathered.
  using WholeModelFactory = std::function<std::unique_ptr<Sae>()>;
  void set_expert_parallel(ExpertParallel* ep, DataParallel* replicas, WholeModelFactory make_whole);
  // Collective: the whole model, gathered, on rank 0 (nullptr on the other ranks). Without expert parallelism:
  // nullptr everywhere (the trained model is whole).
  std::unique_ptr<Sae> gather_whole_model();
  // Loads the checkpoint if its file exists; returns whether it did.
  bool resume_if_present();
  // resume_if_present(), and under data parallelism a check that every rank resumed at the same step.
  bool resume();
  // Runs until cfg.steps (or until stop_after steps have been completed in total, if >= 0).
  TrainOutcome run(int64_t stop_after = -1);

  const MetricSeries& metrics() const { return state_.metrics; }
  const MetricSeries& eval_metrics() const { return state_.eval_metrics; }
  int64_t step() const { return state_.step; }
  double base_lr() const { return base_lr_; }

 private:
  void checkpoint();

  TrainConfig cfg_;
  Sae& sae_;
  BatchSource& data_;
  Adam adam_;
  CheckpointState state_;
  std::string ckpt_path_, config_yaml_;
  ConfigMatch config_matches_;
  EvalHook eval_hook_;
  DataParallel* dp_ = nullptr;
  ExpertParallel* ep_ = nullptr;
  DataParallel* replicas_ = nullptr;
  WholeModelFactory make_whole_;
  double base_lr_;
};

// Installs SIGINT/SIGTERM handlers that ask running trainers to checkpoint and stop (idempotent).
void install_stop_signal_handlers();
bool stop_requested();

}  // namespace moesae
