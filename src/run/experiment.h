// moesae run: an experiment file: a shared base config, named runs and/or a grid of runs that override it, and
// optionally a synthetic dataset to generate or language-model activations to extract first. `moesae run` trains
// every run that has no record yet (interrupted runs resume from their checkpoints), up to --jobs runs at once, and
// prints a comparison table; `moesae plan` shows the runs with their costs; `moesae collect` merges the records.
//
//   name: quickstart
//   out: out/quickstart              # records: <out>/<run>.h5 (relative paths: to the current directory)
//   synthetic: {d: 64, features: 1024, tokens: 600000, groups: 16, seed: 0}   # -> <out>/data.h5 (if no data.path)
//   extract: {model: stories260K/stories260K.bin, text: text/tinystories_val.txt, layer: 2, ctx: 256,
//             max_tokens: 300000}                                            # -> <out>/acts.h5 (if no data.path)
//   base_file: configs/scale-gpt2-small.yaml     # a run config merged under `base`
//   base: {data: {...}, model: {...}, train: {...}, eval: {...}}
//   runs:                                        # named runs (ids = names)
//     - {name: topk, model: {arch: topk, dict_size: 256}}
//     - {name: scale, preset: paper, model: {arch: scale, dict_size: 2048, experts: 16, active_experts: 2}}
//   presets / grid / zip / include / exclude / flops_match      # the grid (run/grid.h, docs/grids.md)
//
// Grid points get the id <label>-<hash>: a readable label of the varied values and 8 hex digits of the resolved
// config's hash (run/grid.h config_hash), stable across runs and machines.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "data/synthetic.h"
#include "run/config.h"
#include "run/lm_extract.h"

namespace moesae {

struct ExperimentRun {
  std::string name;  // the run id: a named run's name, or <label>-<hash8> for a grid point
  RunConfig config;
  std::string record;       // <out>/<name>.h5 (checkpoint: <record>.ckpt.h5)
  bool grid_point = false;  // from the grid (else a named run of `runs:`)
  std::string preset;       // the preset applied ("" for none)
  // The point's varied values as written in the file (dotted path or "preset" -> text), in axis order; a key sized
  // by flops_match holds the chosen value.
  std::vector<std::pair<std::string, std::string>> values;
  std::string hash;  // config_hash(config): 16 hex digits
};

struct Experiment {
  std::string name, description, out, source;
  bool has_synthetic = false;
  SynthConfig synthetic;
  std::string synthetic_path;  // where the synthetic data goes
  bool has_extract = false;    // activations extracted from a language model
  ExtractSpec extract;
  std::string extract_path;    // <out>/acts.h5
  std::vector<ExperimentRun> runs;    // named runs (file order), then grid points (expansion order)
  std::vector<std::string> varied;    // the grid's varied keys (axis order; + model.dict_size when sized)
  std::vector<std::string> overrides;  // the --set overrides the file was loaded with
};

// Parses and validates the whole file (every run's config) before anything runs; overrides apply to every run.
Experiment load_experiment(const std::string& path, const std::vector<std::string>& overrides = {});

// The input dimension and training rows of a run's data when they can be known without running anything: model.d,
// the experiment's synthetic settings, or the header of an existing activation file (0: unknown).
struct DataShape {
  int d = 0;
  int64_t train_rows = 0;
};
DataShape data_shape(const Experiment& e, const RunConfig& config);

// Where a run stands on disk.
struct RunStatus {
  enum class State { Todo, Done, Stale, Partial, Running };
  State state = State::Todo;
  int64_t step = 0;  // Partial / Running: the checkpoint's step (0: no checkpoint yet)
  int64_t steps = 0;
  bool checkpoint_stale = false;  // the checkpoint was written with another configuration
  std::string text() const;       // "done", "todo", "stale", "partial 40/100", "running 40/100"
};
RunStatus run_status(const ExperimentRun& r);

// Whether a record holds a run of this configuration (model.d aside: it comes from the data).
bool record_matches(const std::string& record, const RunConfig& config);

struct ExperimentOptions {
  std::vector<std::string> only;  // run ids to run (empty: all); a unique id prefix ending before "-<hash>" works
  bool rerun = false;             // retrain runs that already have a record
  int jobs = 1;                   // runs at once; > 1 trains each run in a child process (`moesae run --worker`)
  std::string executable;         // the moesae binary for child processes (default: this process's own)
  bool worker = false;            // a child: train the --only runs here, without preparing the data
};

// The runs an --only list selects (all when empty); fails naming an id the experiment does not have.
std::vector<const ExperimentRun*> select_runs(const Experiment& e, const std::vector<std::string>& only);

// Generates the synthetic data or extracts the activations the experiment names, unless a file with the same
// settings is already there; one process at a time (<data>.lock), others wait. Returns whether an existing file was
// replaced because its settings changed (its runs must then be retrained).
bool prepare_experiment_data(const Experiment& e);

// Runs the experiment; returns the number of selected runs that did not finish (failed, interrupted, or busy in
// another process; their errors are logged, the others continue).
int run_experiment(const Experiment& e, const ExperimentOptions& options);

// Whether a worker's runs were stopped by a signal (exit status 3).
bool experiment_interrupted();

// The comparison table of the finished runs' final metrics.
std::string comparison_table(const Experiment& e);

}  // namespace moesae
