// The YAML run configuration (src/run/config.h): conversion, defaults, presets, overrides, round trips and every
// class of error message (which must name the key and where it came from).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <initializer_list>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "core/error.h"
#include "run/config.h"

using namespace moesae;

namespace {

// Every field of the four sections, compared one by one.
void expect_same(const RunConfig& a, const RunConfig& b) {
  EXPECT_EQ(a.data.path, b.data.path);
  EXPECT_EQ(a.data.dataset, b.data.dataset);
  EXPECT_EQ(a.data.eval_fraction, b.data.eval_fraction);
  EXPECT_EQ(a.data.eval_tokens, b.data.eval_tokens);
  EXPECT_EQ(a.data.shuffle_buffer, b.data.shuffle_buffer);
  EXPECT_EQ(a.data.chunk_rows, b.data.chunk_rows);
  const ModelConfig &m = a.model, &n = b.model;
  EXPECT_EQ(m.arch, n.arch);
  EXPECT_EQ(m.d, n.d);
  EXPECT_EQ(m.dict_size, n.dict_size);
  EXPECT_EQ(m.experts, n.experts);
  EXPECT_EQ(m.active_experts, n.active_experts);
  EXPECT_EQ(m.k, n.k);
  EXPECT_EQ(m.feature_scaling, n.feature_scaling);
  EXPECT_EQ(m.weight, n.weight);
  EXPECT_EQ(m.select_on, n.select_on);
  EXPECT_EQ(m.decoder_norm, n.decoder_norm);
  EXPECT_EQ(m.lb_assignment, n.lb_assignment);
  EXPECT_EQ(m.mse_normalization, n.mse_normalization);
  EXPECT_EQ(m.encoder_bias, n.encoder_bias);
  EXPECT_EQ(m.router_bias, n.router_bias);
  EXPECT_EQ(m.compat, n.compat);
  EXPECT_EQ(m.lb_alpha, n.lb_alpha);
  EXPECT_EQ(m.auxk, n.auxk);
  EXPECT_EQ(m.k_aux, n.k_aux);
  EXPECT_EQ(m.auxk_alpha, n.auxk_alpha);
  EXPECT_EQ(m.dead_threshold_tokens, n.dead_threshold_tokens);
  EXPECT_EQ(m.l1_coeff, n.l1_coeff);
  const TrainConfig &t = a.train, &u = b.train;
  EXPECT_EQ(t.steps, u.steps);
  EXPECT_EQ(t.batch_size, u.batch_size);
  EXPECT_EQ(t.lr, u.lr);
  EXPECT_EQ(t.decay_fraction, u.decay_fraction);
  EXPECT_EQ(t.warmup_steps, u.warmup_steps);
  EXPECT_EQ(t.beta1, u.beta1);
  EXPECT_EQ(t.beta2, u.beta2);
  EXPECT_EQ(t.eps, u.eps);
  EXPECT_EQ(t.grad_clip, u.grad_clip);
  EXPECT_EQ(t.seed, u.seed);
  EXPECT_EQ(t.log_every, u.log_every);
  EXPECT_EQ(t.eval_every, u.eval_every);
  EXPECT_EQ(t.checkpoint_every, u.checkpoint_every);
  EXPECT_EQ(t.geometric_median_init, u.geometric_median_init);
  EXPECT_EQ(t.threads, u.threads);
  EXPECT_EQ(a.eval.redundancy_threshold, b.eval.redundancy_threshold);
  EXPECT_EQ(a.eval.recovered_threshold, b.eval.recovered_threshold);
  EXPECT_EQ(a.eval.max_tokens, b.eval.max_tokens);
  EXPECT_EQ(a.eval.batch_size, b.eval.batch_size);
  EXPECT_EQ(a.parallel.expert_parallel, b.parallel.expert_parallel);
  EXPECT_EQ(a.parallel.data_parallel, b.parallel.data_parallel);
}

// Parses `text` expecting an error whose message contains every one of `parts`.
void expect_error(const std::string& text, const std::vector<std::string>& overrides,
                  std::initializer_list<std::string> parts) {
  try {
    parse_run_config_text(text, overrides, "run.yaml");
    ADD_FAILURE() << "no error for:\n" << text;
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}
void expect_error(const std::string& text, std::initializer_list<std::string> parts) {
  expect_error(text, {}, parts);
}

const char* const kMinimal = "model:\n  dict_size: 1024\n";

}  // namespace

TEST(RunConfig, MinimalConfigKeepsEveryDefault) {
  const RunConfig c = parse_run_config_text(kMinimal);
  RunConfig want;
  want.model.dict_size = 1024;
  want.model.feature_scaling = FeatureScaling::Mean;  // the default arch, scale, is the paper's Scale SAE
  expect_same(c, want);
}

TEST(RunConfig, ReadsEverySectionWithScientificNumbers) {
  const RunConfig c = parse_run_config_text(R"(
data:
  path: /data/gpt2-l8.h5
  dataset: resid_post
  eval_tokens: 1e5
model:
  arch: scale
  dict_size: 24576
  experts: 64
  active_experts: 8
  k: 32
  feature_scaling: mean
  lb_alpha: 1.5
  auxk_alpha: 0.03125
  dead_threshold_tokens: 1e7
train:
  steps: 1e6
  lr: 2e-4
  eps: 1e-8
  seed: 18446744073709551615
  geometric_median_init: no
eval:
  redundancy_threshold: 0.8
  max_tokens: 2.5e5
)");
  EXPECT_EQ(c.data.path, "/data/gpt2-l8.h5");
  EXPECT_EQ(c.data.dataset, "resid_post");
  EXPECT_EQ(c.data.eval_tokens, 100000);
  EXPECT_EQ(c.model.dict_size, 24576);
  EXPECT_EQ(c.model.experts, 64);
  EXPECT_EQ(c.model.active_experts, 8);
  EXPECT_EQ(c.model.feature_scaling, FeatureScaling::Mean);
  EXPECT_EQ(c.model.lb_alpha, 1.5f);
  EXPECT_EQ(c.model.auxk_alpha, 0.03125f);
  EXPECT_EQ(c.model.dead_threshold_tokens, 10000000);
  EXPECT_EQ(c.train.steps, 1000000);
  EXPECT_EQ(c.train.lr, 2e-4);
  EXPECT_EQ(c.train.eps, 1e-8);
  EXPECT_EQ(c.train.seed, 18446744073709551615ull);
  EXPECT_FALSE(c.train.geometric_median_init);
  EXPECT_EQ(c.eval.redundancy_threshold, 0.8);
  EXPECT_EQ(c.eval.max_tokens, 250000);
}

TEST(RunConfig, RoundTripOfEveryFieldIsExact) {
  RunConfig c;
  c.data = {"/tmp/a dir/acts: \"x\" #1.h5", "acts/layer 8", 0.125, 77, 1000, 333};
  ModelConfig& m = c.model;
  m.arch = Arch::Scale;
  m.d = 768;
  m.dict_size = 4096;
  m.experts = 16;
  m.active_experts = 4;
  m.k = 24;
  m.feature_scaling = FeatureScaling::Learned;
  m.weight = ExpertWeight::Uniform;
  m.select_on = SelectOn::Weighted;
  m.decoder_norm = DecoderNorm::Column;
  m.lb_assignment = LbAssignment::Top1;
  m.mse_normalization = MseNormalization::Sum;
  m.encoder_bias = true;
  m.router_bias = true;
  m.compat = Compat::Reference;
  m.lb_alpha = 0.1f;  // not exactly representable: the text must still round-trip the f32 exactly
  m.auxk = false;
  m.k_aux = 256;
  m.auxk_alpha = 1.0f / 3.0f;
  m.dead_threshold_tokens = 987654321;
  m.l1_coeff = 5e-5f;
  TrainConfig& t = c.train;
  t.steps = 9999;
  t.batch_size = 4095;
  t.lr = 1.0 / 3.0;
  t.decay_fraction = 0.3;
  t.warmup_steps = 17;
  t.beta1 = 0.85;
  t.beta2 = 0.9999;
  t.eps = 1e-10;
  t.grad_clip = -1;
  t.seed = 1ull << 63;
  t.log_every = 7;
  t.eval_every = 70;
  t.checkpoint_every = 700;
  t.geometric_median_init = false;
  t.threads = 3;
  c.eval = {0.75, 0.6, 12345, 512};

  const std::string text = to_yaml(c);
  const RunConfig back = parse_run_config_text(text);
  expect_same(back, c);
  EXPECT_EQ(to_yaml(back), text);

  // The default configuration (d unknown, empty path) round-trips too, and d is then not written.
  RunConfig def;
  def.model.dict_size = 64;
  const std::string def_text = to_yaml(def);
  EXPECT_EQ(def_text.find("\n  d:"), std::string::npos) << def_text;
  expect_same(parse_run_config_text(def_text), def);
}

TEST(RunConfig, ToYamlWritesEveryKeyOfEverySection) {
  RunConfig c;
  c.model.dict_size = 64;
  c.model.d = 8;
  const std::string text = to_yaml(c);
  for (const char* key :
       {"data:", "path:", "dataset:", "eval_fraction:", "eval_tokens:", "shuffle_buffer:", "chunk_rows:", "model:",
        "arch:", "dict_size:", "experts:", "active_experts:", "k:", "feature_scaling:", "compat:", "weight:",
        "select_on:", "decoder_norm:", "lb_assignment:", "mse_normalization:", "encoder_bias:", "router_bias:",
        "lb_alpha:", "auxk:", "k_aux:", "auxk_alpha:", "dead_threshold_tokens:", "l1_coeff:", "  d: 8", "train:",
        "steps:", "batch_size:", "lr:", "decay_fraction:", "warmup_steps:", "beta1:", "beta2:", "eps:",
        "grad_clip:", "seed:", "log_every:", "eval_every:", "checkpoint_every:", "geometric_median_init:",
        "threads:", "eval:", "redundancy_threshold:", "recovered_threshold:", "max_tokens:"})
    EXPECT_NE(text.find(key), std::string::npos) << key << " missing from\n" << text;
}

TEST(RunConfig, OverridesReplaceAddAndApplyInOrder) {
  const std::string text = "model:\n  dict_size: 1024\n  k: 32\ntrain:\n  lr: 3e-4\n";
  const RunConfig c = parse_run_config_text(
      text, {"model.k=16", "train.lr=1e-4", "eval.max_tokens=1e4", "data.path=/x/y.h5", "model.k = 8",
             "train.geometric_median_init=false", "data.dataset=\"with space\""});
  EXPECT_EQ(c.model.k, 8);  // the later override wins
  EXPECT_EQ(c.train.lr, 1e-4);
  EXPECT_EQ(c.eval.max_tokens, 10000);  // a section absent from the file
  EXPECT_EQ(c.data.path, "/x/y.h5");
  EXPECT_EQ(c.data.dataset, "with space");
  EXPECT_FALSE(c.train.geometric_median_init);
  EXPECT_EQ(c.model.dict_size, 1024);  // untouched
  // An override can supply the required key to an empty document.
  EXPECT_EQ(parse_run_config_text("", {"model.dict_size=512"}).model.dict_size, 512);
}

TEST(RunConfig, OverrideErrorsNameTheOverride) {
  expect_error(kMinimal, {"model.k=abc"}, {"override 'model.k=abc'", "model.k", "expected an integer", "'abc'"});
  expect_error(kMinimal, {"data.prefetch=sometimes"},
               {"data.prefetch", "unknown prefetch 'sometimes'", "expected auto, true or false"});
  EXPECT_EQ(parse_run_config_text(kMinimal, {"data.prefetch=false"}).data.prefetch, Prefetch::Off);
  EXPECT_NE(to_yaml(parse_run_config_text(kMinimal, {"data.prefetch=true"})).find("prefetch: true"), std::string::npos)
      << "written as a YAML boolean, which other readers of the record understand";
  EXPECT_EQ(to_yaml(parse_run_config_text(kMinimal)).find("prefetch"), std::string::npos) << "auto is not written";
  expect_error(kMinimal, {"model.dict_szie=4"}, {"override 'model.dict_szie=4'", "unknown key 'model.dict_szie'",
                                                 "did you mean 'dict_size'"});
  expect_error(kMinimal, {"modle.k=4"}, {"override 'modle.k=4'", "unknown section 'modle'", "did you mean 'model'"});
  expect_error(kMinimal, {"model.k"}, {"override 'model.k'", "expected section.key=value"});
  expect_error(kMinimal, {"k=4"}, {"override 'k=4'", "expected section.key=value"});
  expect_error(kMinimal, {"model.k.x=4"}, {"override 'model.k.x=4'", "expected section.key=value"});
  expect_error(kMinimal, {"model.k=[1, 2"}, {"override 'model.k=[1, 2'", "malformed YAML value"});
  expect_error(kMinimal, {"model.k="}, {"override 'model.k='", "model.k", "got no value"});
}

TEST(RunConfig, UnknownSectionsAndKeysAreErrorsWithSuggestions) {
  expect_error("model:\n  dict_size: 8\nmodle:\n  k: 2\n",
               {"run.yaml:3", "unknown section 'modle'", "did you mean 'model'"});
  expect_error("model:\n  dict_size: 8\n  dict_szie: 2\n",
               {"run.yaml:3", "unknown key 'model.dict_szie'", "did you mean 'dict_size'"});
  expect_error("model:\n  dict_size: 8\n  lr: 1e-3\n",
               {"run.yaml:3", "unknown key 'model.lr'", "belongs in section 'train'"});
  expect_error("model:\n  dict_size: 8\n  zzzzzzzzz: 1\n", {"run.yaml:3", "model.zzzzzzzzz", "valid: arch, dict_size"});
  expect_error("model:\n  dict_size: 8\nwandb:\n  project: x\n", {"run.yaml:3", "unknown section 'wandb'",
                                                                   "valid: data, model, train, eval"});
}

TEST(RunConfig, WrongTypesNameKeyLineAndExpectedType) {
  expect_error("model:\n  dict_size: 8\n  k: abc\n", {"run.yaml:3", "model.k", "expected an integer, got 'abc'"});
  expect_error("model:\n  dict_size: 8\ntrain:\n  steps: 1.5\n", {"run.yaml:4", "train.steps",
                                                                   "expected an integer, got 1.5"});
  expect_error("model:\n  dict_size: 8\ntrain:\n  steps: 1.5e3\n  lr: fast\n", {"run.yaml:5", "train.lr",
                                                                                "expected a number, got 'fast'"});
  expect_error("model:\n  dict_size: 8\n  auxk: maybe\n", {"run.yaml:3", "model.auxk", "expected true or false"});
  expect_error("model:\n  dict_size: 8\n  k: [1, 2]\n", {"run.yaml:3", "model.k", "got a sequence"});
  expect_error("model:\n  dict_size: 8\n  k:\n", {"model.k", "got no value"});
  expect_error("model:\n  dict_size: 8\n  weight: softmax\n",
               {"run.yaml:3", "model.weight", "unknown value 'softmax'", "double_softmax"});
  expect_error("model:\n  dict_size: 8\n  arch: moe\n", {"run.yaml:3", "model.arch", "unknown value 'moe'"});
  expect_error("model:\n  dict_size: 8\n  k: 3000000000\n", {"run.yaml:3", "model.k", "out of range"});
  expect_error("model:\n  dict_size: 8\n  lb_alpha: 1e50\n", {"run.yaml:3", "model.lb_alpha", "32-bit float"});
  expect_error("model:\n  dict_size: 8\n  lb_alpha: .inf\n", {"run.yaml:3", "model.lb_alpha", "expected a number"});
  expect_error("model:\n  dict_size: 8\ntrain:\n  seed: -1\n", {"run.yaml:4", "train.seed", "must be >= 0"});
}

TEST(RunConfig, OutOfRangeValuesNameKeyAndLine) {
  expect_error("model:\n  dict_size: 8\ntrain:\n  steps: 0\n", {"run.yaml:4", "train.steps", "must be >= 1 (got 0)"});
  expect_error("model:\n  dict_size: 8\ndata:\n  eval_fraction: 1\n",
               {"run.yaml:4", "data.eval_fraction", "must be in [0, 1)"});
  expect_error("model:\n  dict_size: 8\ntrain:\n  eps: 0\n", {"run.yaml:4", "train.eps", "must be > 0"});
  expect_error("model:\n  dict_size: 8\neval:\n  redundancy_threshold: 1.5\n",
               {"run.yaml:4", "eval.redundancy_threshold", "must be in [-1, 1]"});
  expect_error("model:\n  dict_size: 8\ndata:\n  dataset: \"\"\n", {"run.yaml:4", "data.dataset", "must not be empty"});
}

TEST(RunConfig, StructuralErrors) {
  expect_error("model:\n  k: [1, 2\n  dict_size: 8\n", {"run.yaml:", "malformed YAML"});
  expect_error("model:\n\tk: 2\n", {"run.yaml:2", "malformed YAML"});
  expect_error("model:\n  dict_size: 8\n  k: 2\n  k: 4\n",
               {"run.yaml:4", "duplicate key 'model.k'", "first at line 3"});
  expect_error("model:\n  dict_size: 8\nmodel:\n  k: 4\n", {"run.yaml:3", "duplicate section 'model'"});
  expect_error("model:\n  dict_size: 8\n---\nmodel:\n  k: 4\n", {"run.yaml", "2 YAML documents"});
  expect_error("- model\n- train\n", {"run.yaml:1", "must be a mapping of sections"});
  expect_error("model: 3\n", {"run.yaml:1", "section 'model' must be a mapping", "got a scalar"});
  expect_error("train:\n  steps: 10\n", {"run.yaml", "missing required key 'model.dict_size'"});
}

TEST(RunConfig, CrossKeyChecksPointAtTheKey) {
  expect_error("model:\n  arch: topk\n  dict_size: 64\n  experts: 4\n",
               {"run.yaml:4", "model.experts must be 1 for arch topk"});
  expect_error("model:\n  dict_size: 100\n  experts: 8\n", {"run.yaml:2", "model.dict_size (100)", "divisible"});
  expect_error("model:\n  arch: switch\n  dict_size: 512\n  experts: 8\n  active_experts: 2\n",
               {"run.yaml:5", "model.active_experts must be 1 for arch switch"});
  expect_error("model:\n  dict_size: 512\n  experts: 8\n  k: 100\n", {"run.yaml:4", "model.k (100)"});
}

TEST(RunConfig, CompatReferenceIsAPresetThatExplicitKeysOverride) {
  const RunConfig ref = parse_run_config_text("model:\n  dict_size: 512\n  experts: 8\n  compat: reference\n");
  ModelConfig want;
  want.dict_size = 512;
  want.experts = 8;
  apply_compat_reference(want);
  EXPECT_EQ(ref.model.compat, Compat::Reference);
  EXPECT_EQ(ref.model.weight, ExpertWeight::DoubleSoftmax);
  EXPECT_EQ(ref.model.select_on, SelectOn::Weighted);
  EXPECT_EQ(ref.model.decoder_norm, DecoderNorm::Column);
  EXPECT_EQ(ref.model.lb_assignment, LbAssignment::Top1);
  EXPECT_EQ(ref.model.mse_normalization, MseNormalization::Sum);
  EXPECT_TRUE(ref.model.encoder_bias);
  EXPECT_TRUE(ref.model.router_bias);

  // Explicit keys win, wherever they stand relative to `compat` in the file.
  const RunConfig mixed = parse_run_config_text(
      "model:\n  weight: p\n  dict_size: 512\n  experts: 8\n  compat: reference\n  encoder_bias: false\n");
  EXPECT_EQ(mixed.model.weight, ExpertWeight::P);
  EXPECT_FALSE(mixed.model.encoder_bias);
  EXPECT_EQ(mixed.model.select_on, SelectOn::Weighted);  // the rest of the preset stays
  EXPECT_TRUE(mixed.model.router_bias);

  // With Feature Scaling, the preset selects the reference code's A * mean low-pass, also when
  // feature_scaling comes after compat; compat given as an override is the same preset.
  for (const std::string& text : {std::string("model:\n  compat: reference\n  feature_scaling: mean\n"),
                                  std::string("model:\n  feature_scaling: mean\n  compat: reference\n")}) {
    const RunConfig fs = parse_run_config_text(text + "  dict_size: 512\n  experts: 8\n");
    EXPECT_EQ(fs.model.feature_scaling, FeatureScaling::Reference) << text;
  }
  EXPECT_EQ(parse_run_config_text("model:\n  dict_size: 512\n  experts: 8\n  feature_scaling: mean\n",
                                  {"model.compat=reference"})
                .model.feature_scaling,
            FeatureScaling::Reference);
  // A dense TopK SAE keeps unit decoder rows under the preset (sae/config.cpp).
  EXPECT_EQ(parse_run_config_text("model:\n  arch: topk\n  dict_size: 64\n  compat: reference\n").model.decoder_norm,
            DecoderNorm::Row);
}

TEST(RunConfig, ArchDefaultsAndHeaviside) {
  const RunConfig sw = parse_run_config_text("model:\n  arch: switch\n  dict_size: 512\n  experts: 8\n");
  EXPECT_EQ(sw.model.active_experts, 1);
  EXPECT_EQ(sw.model.weight, ExpertWeight::P);
  const RunConfig tk = parse_run_config_text("model:\n  arch: topk\n  dict_size: 64\n");
  EXPECT_EQ(tk.model.experts, 1);
  EXPECT_EQ(tk.model.active_experts, 1);

  const RunConfig hs =
      parse_run_config_text("model:\n  arch: switch\n  dict_size: 512\n  experts: 8\n  heaviside: true\n");
  EXPECT_EQ(hs.model.weight, ExpertWeight::Uniform);
  // heaviside is explicit, so it overrides the preset's double softmax
  const RunConfig hs_ref = parse_run_config_text(
      "model:\n  arch: switch\n  dict_size: 512\n  experts: 8\n  compat: reference\n  heaviside: true\n");
  EXPECT_EQ(hs_ref.model.weight, ExpertWeight::Uniform);
  EXPECT_EQ(parse_run_config_text("model:\n  dict_size: 64\n  heaviside: false\n").model.weight, ExpertWeight::P);
  EXPECT_EQ(parse_run_config_text("model:\n  dict_size: 64\n  heaviside: true\n  weight: uniform\n").model.weight,
            ExpertWeight::Uniform);
  expect_error("model:\n  arch: switch\n  dict_size: 512\n  experts: 8\n  weight: p\n  heaviside: true\n",
               {"run.yaml:6", "model.heaviside", "conflicts with model.weight: p"});
  // The resolved config writes the weight, not heaviside, and reads back the same.
  const std::string text = to_yaml(hs);
  EXPECT_EQ(text.find("heaviside"), std::string::npos);
  expect_same(parse_run_config_text(text), hs);
}

TEST(RunConfig, LoadsFilesAndNamesThemInErrors) {
  const std::string path = std::string(MOESAE_BINARY_DIR) + "/test_run_config_tmp.yaml";
  {
    std::ofstream f(path);
    f << "model:\n  dict_size: 256\n  k: 8\ntrain:\n  steps: 1e3\n";
  }
  const RunConfig c = load_run_config(path, {"model.k=4"});
  EXPECT_EQ(c.model.dict_size, 256);
  EXPECT_EQ(c.model.k, 4);
  EXPECT_EQ(c.train.steps, 1000);
  {
    std::ofstream f(path);
    f << "model:\n  dict_size: 256\n  kk: 8\n";
  }
  try {
    load_run_config(path);
    ADD_FAILURE() << "unknown key accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":3: unknown key 'model.kk'"), std::string::npos) << e.what();
  }
  std::remove(path.c_str());
  try {
    load_run_config(path);
    ADD_FAILURE() << "missing file accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot read run configuration '" + path + "'"), std::string::npos)
        << e.what();
  }
}

TEST(RunConfig, FromParsedTreeLeavesTheTreeUntouched) {
  const YAML::Node root = YAML::Load("model:\n  dict_size: 128\n  k: 8\n");
  const RunConfig c = run_config_from_yaml(root, {"model.k=4", "train.steps=5"}, "grid point 3");
  EXPECT_EQ(c.model.k, 4);
  EXPECT_EQ(c.train.steps, 5);
  EXPECT_EQ(root["model"]["k"].as<int>(), 8);
  EXPECT_FALSE(root["train"]);
  try {
    run_config_from_yaml(root, {"model.k=x"}, "grid point 3");
    ADD_FAILURE() << "bad override accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("override 'model.k=x': model.k: expected an integer"), std::string::npos)
        << e.what();
  }
}

TEST(RunConfig, ScaleDefaultsToFeatureScalingAndCompatSetsTheReferenceRedundancyThreshold) {
  EXPECT_EQ(parse_run_config_text("model: {arch: scale, dict_size: 256, experts: 4}").model.feature_scaling,
            FeatureScaling::Mean);
  EXPECT_EQ(parse_run_config_text("model: {arch: scale, dict_size: 256, experts: 4, feature_scaling: none}")
                .model.feature_scaling,
            FeatureScaling::None);
  EXPECT_EQ(parse_run_config_text("model: {arch: switch, dict_size: 256, experts: 4}").model.feature_scaling,
            FeatureScaling::None);
  const RunConfig ref = parse_run_config_text("model: {arch: scale, dict_size: 256, experts: 4, compat: reference}");
  EXPECT_EQ(ref.model.feature_scaling, FeatureScaling::Reference);
  EXPECT_DOUBLE_EQ(ref.eval.redundancy_threshold, 0.8);
  EXPECT_DOUBLE_EQ(parse_run_config_text("model: {dict_size: 256, experts: 4, compat: reference}\n"
                                         "eval: {redundancy_threshold: 0.9}")
                       .eval.redundancy_threshold,
                   0.9);
  EXPECT_DOUBLE_EQ(parse_run_config_text("model: {dict_size: 256}").eval.redundancy_threshold, 0.9);
}

// ---- the parallel section and the layout it resolves to (src/parallel/config.h) ----------------------------------

TEST(RunConfig, ParallelSectionIsReadAndWrittenOnlyWhenSet) {
  const RunConfig plain = parse_run_config_text(kMinimal);
  EXPECT_EQ(plain.parallel.expert_parallel, 0);
  EXPECT_EQ(plain.parallel.data_parallel, 0);
  EXPECT_EQ(to_yaml(plain).find("parallel"), std::string::npos) << "the automatic layout must not be written";
  const RunConfig c = parse_run_config_text(std::string(kMinimal) + "parallel: {expert_parallel: 2}\n");
  EXPECT_EQ(c.parallel.expert_parallel, 2);
  EXPECT_EQ(c.parallel.data_parallel, 0);
  const std::string text = to_yaml(c);
  EXPECT_NE(text.find("parallel:"), std::string::npos) << text;
  EXPECT_NE(text.find("expert_parallel: 2"), std::string::npos) << text;
  EXPECT_EQ(text.find("data_parallel"), std::string::npos) << text;
  EXPECT_EQ(parse_run_config_text(text).parallel.expert_parallel, 2);
  EXPECT_EQ(parse_run_config_text(kMinimal, {"parallel.data_parallel=3"}).parallel.data_parallel, 3);
  expect_error(std::string(kMinimal) + "parallel:\n  expert_paralel: 2\n",
               {"parallel.expert_paralel", "did you mean 'expert_parallel'"});
  expect_error(std::string(kMinimal) + "parallel:\n  data_parallel: -1\n", {"parallel.data_parallel"});
}

TEST(ParallelLayout, AutomaticExplicitAndInvalid) {
  ModelConfig scale;
  scale.arch = Arch::Scale;
  scale.experts = 8;
  scale.dict_size = 64;
  ModelConfig topk;
  topk.arch = Arch::TopK;
  topk.dict_size = 64;
  ModelConfig gated;
  gated.arch = Arch::Gated;
  gated.dict_size = 64;
  const auto layout = [](int ep, int dp) {
    ParallelConfig p;
    p.expert_parallel = ep;
    p.data_parallel = dp;
    return p;
  };
  const auto is = [](const ParallelConfig& p, int ep, int dp) {
    return p.expert_parallel == ep && p.data_parallel == dp;
  };
  EXPECT_TRUE(is(resolve_layout(layout(0, 0), 1, scale), 1, 1));
  EXPECT_TRUE(is(resolve_layout(layout(0, 0), 4, scale), 4, 1));   // MoE: experts over all ranks
  EXPECT_TRUE(is(resolve_layout(layout(0, 0), 4, topk), 1, 4));    // others: data-parallel
  EXPECT_TRUE(is(resolve_layout(layout(0, 0), 3, gated), 1, 3));
  EXPECT_TRUE(is(resolve_layout(layout(2, 0), 4, scale), 2, 2));
  EXPECT_TRUE(is(resolve_layout(layout(0, 2), 4, scale), 2, 2));
  EXPECT_TRUE(is(resolve_layout(layout(1, 0), 4, scale), 1, 4));
  EXPECT_TRUE(is(resolve_layout(layout(4, 1), 4, topk), 4, 1));    // a TopK dictionary sharded
  EXPECT_EQ(describe_layout(layout(2, 2), false), "experts sharded over 2 ranks, 2 data-parallel replicas");
  EXPECT_EQ(describe_layout(layout(4, 1), true), "dictionary sharded over 4 ranks");
  EXPECT_EQ(describe_layout(layout(1, 3), false), "data-parallel over 3 ranks");
  const auto error_of = [](const ParallelConfig& p, int ranks, const ModelConfig& m) {
    try {
      resolve_layout(p, ranks, m);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(error_of(layout(2, 0), 3, scale).find("parallel.expert_parallel is 2 but the job has 3 ranks"),
            std::string::npos);
  EXPECT_NE(error_of(layout(2, 3), 4, scale).find("is not the 4 ranks"), std::string::npos);
  EXPECT_NE(error_of(layout(2, 0), 2, gated).find("a gated SAE cannot be sharded"), std::string::npos);
  EXPECT_NE(error_of(layout(0, 0), 16, scale).find("needs at least 16 experts"), std::string::npos);
  EXPECT_NE(error_of(layout(16, 0), 16, scale).find("has only 8 experts"), std::string::npos);
  ModelConfig columns = topk;
  columns.decoder_norm = DecoderNorm::Column;
  EXPECT_NE(error_of(layout(2, 0), 2, columns).find("decoder_norm: column cannot shard"), std::string::npos);
  EXPECT_EQ(error_of(layout(0, 0), 2, columns), "");  // data-parallel: fine
  // The checkpoint's identity leaves the layout out.
  RunConfig a = parse_run_config_text(kMinimal), b = parse_run_config_text(std::string(kMinimal) +
                                                                            "parallel: {expert_parallel: 2}\n");
  EXPECT_NE(to_yaml(a), to_yaml(b));
  EXPECT_EQ(checkpoint_identity(a), checkpoint_identity(b));
  // ... and where it runs (GPU index, thread count), but not what it trains (backend, GEMM precision, steps).
  RunConfig placed = a;
  placed.train.device = 3;
  placed.train.threads = 7;
  EXPECT_EQ(checkpoint_identity(a), checkpoint_identity(placed));
  RunConfig read_ahead = a;  // nor whether batches are read ahead (the same batches)
  read_ahead.data.prefetch = Prefetch::On;
  EXPECT_NE(to_yaml(a), to_yaml(read_ahead));
  EXPECT_EQ(checkpoint_identity(a), checkpoint_identity(read_ahead));
  // A checkpoint of an older moesae stored the text with device and threads in it: it still resumes, and only its
  // own run.
  const std::string older = to_yaml(placed);
  EXPECT_NE(older, checkpoint_identity(placed));
  EXPECT_TRUE(same_checkpoint_identity(older, checkpoint_identity(placed)));
  EXPECT_TRUE(same_checkpoint_identity(checkpoint_identity(a), checkpoint_identity(a)));
  RunConfig longer = placed;
  longer.train.steps += 1;
  EXPECT_FALSE(same_checkpoint_identity(to_yaml(longer), checkpoint_identity(placed)));
  EXPECT_FALSE(same_checkpoint_identity("model: [not, a, config", checkpoint_identity(placed)));
  for (auto change : {+[](RunConfig& r) { r.train.gemm_precision = GemmPrecision::BF16; },
                      +[](RunConfig& r) { r.train.steps += 1; }}) {
    RunConfig other = a;
    change(other);
    EXPECT_NE(checkpoint_identity(a), checkpoint_identity(other));
  }
  EXPECT_EQ(error_of(layout(0, 1), 1, scale), "");
}
