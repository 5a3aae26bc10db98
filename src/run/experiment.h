// moesae run: an experiment file: a shared base config, a list of named runs that override it, and optionally a
// synthetic dataset to generate or language-model activations to extract first. `moesae run` trains every run that has no record yet (interrupted runs
// resume from their checkpoints) and prints a comparison table.
//
//   name: quickstart
//   out: out/quickstart              # records: <out>/<run>.h5 (relative paths: to the current directory)
//   synthetic: {d: 64, features: 1024, tokens: 600000, groups: 16, seed: 0}   # -> <out>/data.h5 (if no data.path)
//   extract: {model: stories260K/stories260K.bin, text: text/tinystories_val.txt, layer: 2, ctx: 256,
//             max_tokens: 300000}                                            # -> <out>/acts.h5 (if no data.path)
//   base: {data: {...}, model: {...}, train: {...}, eval: {...}}
//   runs:
//     - {name: topk, model: {arch: topk, dict_size: 256}}
//     - {name: scale, model: {arch: scale, dict_size: 2048, experts: 16, active_experts: 2}}
#pragma once
#include <string>
#include <vector>

#include "data/synthetic.h"
#include "run/config.h"
#include "run/lm_extract.h"

namespace moesae {

struct ExperimentRun {
  std::string name;
  RunConfig config;
  std::string record;  // <out>/<name>.h5
};

struct Experiment {
  std::string name, out, source;
  bool has_synthetic = false;
  SynthConfig synthetic;
  std::string synthetic_path;  // where the synthetic data goes
  bool has_extract = false;    // activations extracted from a language model
  ExtractSpec extract;
  std::string extract_path;    // <out>/acts.h5
  std::vector<ExperimentRun> runs;
};

// Parses and validates the whole file (every run's config) before anything runs; overrides apply to every run.
Experiment load_experiment(const std::string& path, const std::vector<std::string>& overrides = {});

struct ExperimentOptions {
  std::vector<std::string> only;  // run names to run (empty: all)
  bool rerun = false;             // retrain runs that already have a record
};

// Runs the experiment; returns the number of runs that failed (their errors are logged, the others continue).
int run_experiment(const Experiment& e, const ExperimentOptions& options);

// The comparison table of the finished runs' final metrics.
std::string comparison_table(const Experiment& e);

}  // namespace moesae
