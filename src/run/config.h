// moesae run: the YAML run configuration. One file describes one training run:
//
//   data:  { path, dataset, eval_fraction, eval_tokens, shuffle_buffer, chunk_rows }            (data/config.h)
//   model: { arch, dict_size, experts, active_experts, k, feature_scaling, compat, weight, ... }  (sae/config.h)
//   train: { steps, batch_size, lr, decay_fraction, warmup_steps, beta1, beta2, eps, ... }       (train/config.h)
//   eval:  { redundancy_threshold, recovered_threshold, max_tokens, batch_size }                  (eval/config.h)
//   lm:    { model, tokenizer, layer, ctx, text, ... }: Loss Recovered in the language model      (eval/config.h)
//   parallel: { expert_parallel, data_parallel }: the layout of a multi-rank run (written only when set)
//                                                                                            (parallel/config.h)
//
// Every section and key is optional except model.dict_size; absent keys keep their defaults. Parsing is strict:
// an unknown section or key, a duplicate key, a value of the wrong type or out of range, or malformed YAML is an
// error naming the file, the line and the key (with a "did you mean" suggestion for misspelt keys).
// Numbers: integers may be written as 16384, 1e6 or 2.0e4 (an integral value), reals as 2e-4 or 0.0002.
//
// Model presets, applied in this order before the remaining model keys:
//   1. arch: switch -> active_experts 1; arch: topk | gated -> experts 1, active_experts 1;
//      arch: scale (the default) -> feature_scaling mean (the paper's Scale SAE; feature_scaling: none is the
//      no-scaling ablation);
//   2. compat: reference -> apply_compat_reference() (every reference-code option, §3.10; with
//      feature_scaling: mean it selects the reference code's A * mean low-pass, feature_scaling: reference), and
//      eval.redundancy_threshold 0.8 unless given (the reference metric's actual threshold, §3.8.4);
//   3. every explicitly given option key (weight, select_on, decoder_norm, ...) overrides the preset.
// `heaviside: true` (Switch SAE, Mudide et al.) means weight: uniform (w = 1); it conflicts with another explicit
// weight. `model.d` is optional: the input dimension comes from the data (a given d is for the caller to check).
//
// Overrides ("section.key=value", e.g. model.k=16 or train.lr=1e-4) replace values of the YAML tree before it is
// converted; the value is parsed as a YAML scalar, so it obeys exactly the rules of the file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/config.h"
#include "eval/config.h"
#include "sae/config.h"
#include "parallel/config.h"
#include "train/config.h"

namespace YAML {
class Node;
}

namespace moesae {

struct RunConfig {
  DataConfig data;
  ModelConfig model;
  TrainConfig train;
  EvalConfig eval;
  LmEvalConfig lm;  // Loss Recovered with the SAE spliced into its language model (off while lm.model is empty)
  ParallelConfig parallel;  // the layout of a multi-rank run (parallel/config.h)
};

// Reads and converts a YAML run configuration file, applying the overrides in order.
RunConfig load_run_config(const std::string& yaml_path, const std::vector<std::string>& overrides = {});

// The same from YAML text; `source_name` stands for the file name in error messages.
RunConfig parse_run_config_text(const std::string& yaml_text, const std::vector<std::string>& overrides = {},
                                const std::string& source_name = "<config>");

// The same from an already parsed YAML tree (e.g. one point of an experiment grid); `root` is not modified.
RunConfig run_config_from_yaml(const YAML::Node& root, const std::vector<std::string>& overrides,
                               const std::string& source_name);

// The fully resolved configuration, every field written out (defaults included), in a fixed order: parsing it back
// gives an identical RunConfig, and equal configs give identical text. (This holds for every config the loader
// produces; a hand-built ModelConfig with compat: reference but feature_scaling: mean, a state the preset never
// leaves, reads back with feature_scaling: reference.)
std::string to_yaml(const RunConfig& config);
// What a checkpoint must match to be resumed: to_yaml without the `parallel` section, train.device and train.threads
// (the layout, the GPU index and the thread count place the run, they do not change what it trains: a checkpoint
// resumes in any layout, on another GPU or with another thread count).
std::string checkpoint_identity(const RunConfig& config);
// Whether a checkpoint's stored configuration text has this identity: read back and normalised first, so that one
// written by an older moesae (whose identity still held train.device and train.threads) resumes too.
bool same_checkpoint_identity(const std::string& written, const std::string& identity);

}  // namespace moesae
