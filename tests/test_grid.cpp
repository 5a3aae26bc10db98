// Grid files (run/grid.h through run/experiment.h load_experiment): expansion, zip, include/exclude, presets,
// flops_match, run ids (stable across loads, changed only for the points whose configuration changes), and errors
// that name the file, the line and the key.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>

#include "run/experiment.h"
#include "run/flops.h"
#include "run/grid.h"
#include "error_of.h"
#include "temp_dir.h"

using namespace moesae;
using moesae::testing::error_of;
using moesae::testing::TempDir;

namespace {

std::string write(const TempDir& dir, const std::string& name, const std::string& text) {
  const std::string path = dir.file(name);
  std::ofstream(path) << text;
  return path;
}

const char* const kHead =
    "name: g\n"
    "out: OUT\n"
    "base:\n"
    "  data: {path: acts.h5}\n"
    "  model: {arch: topk, dict_size: 64, k: 4, d: 16}\n"
    "  train: {steps: 10, batch_size: 32}\n";

std::string grid_file(const TempDir& dir, const std::string& body, const std::string& name = "g.yaml") {
  return write(dir, name, kHead + body);
}

std::vector<std::string> values_of(const ExperimentRun& r) {
  std::vector<std::string> v;
  for (const auto& [k, x] : r.values) v.push_back(k + "=" + x);
  return v;
}

std::map<std::string, std::string> ids_by_values(const Experiment& e) {
  std::map<std::string, std::string> m;
  for (const ExperimentRun& r : e.runs) {
    std::string key;
    for (const auto& v : values_of(r)) key += v + ";";
    m[key] = r.name;
  }
  return m;
}

}  // namespace

TEST(Grid, CartesianProductInFileOrder) {
  TempDir dir;
  const Experiment e = load_experiment(grid_file(dir, "grid:\n  model.k: [2, 4]\n  train.seed: [0, 1, 2]\n"));
  ASSERT_EQ(e.runs.size(), 6u);
  EXPECT_EQ(e.varied, (std::vector<std::string>{"model.k", "train.seed"}));
  // The first axis varies slowest.
  const std::vector<std::pair<int, uint64_t>> want{{2, 0}, {2, 1}, {2, 2}, {4, 0}, {4, 1}, {4, 2}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(e.runs[i].config.model.k, want[i].first);
    EXPECT_EQ(e.runs[i].config.train.seed, want[i].second);
    EXPECT_TRUE(e.runs[i].grid_point);
    EXPECT_EQ(e.runs[i].record, "OUT/" + e.runs[i].name + ".h5");
  }
  EXPECT_EQ(e.runs[0].name.substr(0, e.runs[0].name.size() - 9), "k2-seed0");
  EXPECT_EQ(e.runs[5].name.substr(0, e.runs[5].name.size() - 9), "k4-seed2");
  EXPECT_EQ(e.runs[0].name.substr(e.runs[0].name.size() - 9), "-" + e.runs[0].hash.substr(0, 8));
}

TEST(Grid, ZipGroupsVaryTogether) {
  TempDir dir;
  const Experiment e = load_experiment(grid_file(dir,
                                                 "grid:\n  model.k: [2, 4]\n"
                                                 "zip:\n"
                                                 "  - {model.arch: [scale, switch, topk], model.experts: [8, 4, 1],\n"
                                                 "     model.active_experts: [2, 1, 1]}\n"));
  ASSERT_EQ(e.runs.size(), 6u);
  for (const ExperimentRun& r : e.runs) {
    const ModelConfig& m = r.config.model;
    const std::map<Arch, std::pair<int, int>> want{{Arch::Scale, {8, 2}}, {Arch::Switch, {4, 1}}, {Arch::TopK, {1, 1}}};
    EXPECT_EQ(std::make_pair(m.experts, m.active_experts), want.at(m.arch));
  }
  EXPECT_EQ(e.runs[0].name.substr(0, e.runs[0].name.size() - 9), "k2-scale-E8-e2");
  // A zip group written as a single mapping is one group too.
  const Experiment one = load_experiment(grid_file(dir, "zip: {model.k: [2, 4], train.seed: [5, 6]}\n", "z.yaml"));
  ASSERT_EQ(one.runs.size(), 2u);
  EXPECT_EQ(one.runs[1].config.model.k, 4);
  EXPECT_EQ(one.runs[1].config.train.seed, 6u);
}

TEST(Grid, NumbersLikeScientificNotationAreNumbers) {
  TempDir dir;
  const Experiment e = load_experiment(grid_file(dir, "grid:\n  train.lr: [1e-4, 3e-4]\n"));
  ASSERT_EQ(e.runs.size(), 2u);
  EXPECT_DOUBLE_EQ(e.runs[0].config.train.lr, 1e-4);
  EXPECT_DOUBLE_EQ(e.runs[1].config.train.lr, 3e-4);
  EXPECT_EQ(e.runs[0].name.substr(0, 7), "lr1e-4-");
  EXPECT_TRUE(same_value("1e-4", "0.0001"));
  EXPECT_TRUE(same_value("16", "1.6e1"));
  EXPECT_TRUE(same_value("true", "yes"));
  EXPECT_FALSE(same_value("scale", "topk"));
}

TEST(Grid, ExcludeDropsMatchingPointsAndIncludeKeepsOnlyMatchingOnes) {
  TempDir dir;
  const std::string axes =
      "grid:\n  model.k: [2, 4, 8]\n"
      "zip: {model.arch: [topk, scale], model.experts: [1, 4], model.active_experts: [1, 2]}\n";
  // exclude: an entry matches when all of its keys match; a list of values matches any of them.
  Experiment e = load_experiment(grid_file(dir, axes + "exclude:\n  - {model.arch: scale, model.k: [2, 4]}\n"));
  EXPECT_EQ(e.runs.size(), 4u);
  for (const ExperimentRun& r : e.runs)
    EXPECT_FALSE(r.config.model.arch == Arch::Scale && r.config.model.k < 8) << r.name;
  // include: only points matching at least one entry.
  e = load_experiment(grid_file(dir, axes + "include:\n  - {model.k: 2}\n  - {model.arch: scale, model.k: 8}\n"));
  ASSERT_EQ(e.runs.size(), 3u);
  // Both: include first, then exclude.
  e = load_experiment(grid_file(dir, axes + "include: {model.k: 2}\nexclude: {model.arch: topk}\n"));
  ASSERT_EQ(e.runs.size(), 1u);
  EXPECT_EQ(e.runs[0].config.model.arch, Arch::Scale);
  // Filters see resolved values: defaults count (topk has experts 1 without writing it), numbers compare as
  // numbers.
  e = load_experiment(grid_file(dir, "grid:\n  model.arch: [topk, gated]\n  train.lr: [1e-4, 2e-4]\n"
                                     "exclude: [{model.experts: 1, train.lr: 0.0001, model.arch: gated}]\n"));
  EXPECT_EQ(e.runs.size(), 3u);
  // Invalid combinations of the product can be excluded (matched on the values written in the file).
  e = load_experiment(grid_file(dir,
                                "grid:\n  model.arch: [topk, scale]\n  model.experts: [1, 4]\n"
                                "exclude: [{model.arch: topk, model.experts: 4}]\n"));
  EXPECT_EQ(e.runs.size(), 3u);
  EXPECT_NE(error_of([&] { load_experiment(grid_file(dir, axes + "exclude: {model.k: [2, 4, 8]}\n")); })
                .find("include/exclude removed every grid point"),
            std::string::npos);
}

TEST(Grid, PresetsOverlayTheBaseAndPointValuesWin) {
  TempDir dir;
  const Experiment e = load_experiment(grid_file(dir,
                                                 "presets:\n"
                                                 "  paper: {model: {compat: paper}, train: {lr: 1e-3}}\n"
                                                 "  reference: {model: {compat: reference, k: 8}, train: {lr: 1e-4}}\n"
                                                 "grid:\n  preset: [paper, reference]\n  train.seed: [3]\n"
                                                 "runs:\n  - {name: named, preset: reference, train: {lr: 5e-4}}\n"));
  ASSERT_EQ(e.runs.size(), 3u);
  const ExperimentRun& named = e.runs[0];  // named runs come first
  EXPECT_EQ(named.name, "named");
  EXPECT_EQ(named.preset, "reference");
  EXPECT_EQ(named.config.model.compat, Compat::Reference);
  EXPECT_DOUBLE_EQ(named.config.train.lr, 5e-4);  // the run's own value over the preset
  EXPECT_EQ(e.runs[1].preset, "paper");
  EXPECT_EQ(e.runs[1].config.model.compat, Compat::Paper);
  EXPECT_DOUBLE_EQ(e.runs[1].config.train.lr, 1e-3);
  EXPECT_EQ(e.runs[1].config.train.seed, 3u);
  EXPECT_EQ(e.runs[2].config.model.compat, Compat::Reference);
  EXPECT_EQ(e.runs[2].config.model.k, 8);
  EXPECT_DOUBLE_EQ(e.runs[2].config.eval.redundancy_threshold, 0.8);  // the compat preset's own effects apply
  EXPECT_EQ(e.runs[2].name.substr(0, 16), "reference-seed3-");
  // A preset axis filtered by name.
  const Experiment f = load_experiment(grid_file(dir,
                                                 "presets: {a: {train: {lr: 1e-3}}, b: {train: {lr: 1e-4}}}\n"
                                                 "grid: {preset: [a, b], model.k: [2, 4]}\n"
                                                 "exclude: {preset: b, model.k: 4}\n",
                                                 "f.yaml"));
  EXPECT_EQ(f.runs.size(), 3u);
}

TEST(Grid, BaseFileIsMergedUnderBase) {
  TempDir dir;
  write(dir, "base.yaml", "model: {arch: topk, dict_size: 32, k: 2}\ntrain: {steps: 7, lr: 1e-3}\n");
  const Experiment e = load_experiment(
      write(dir, "g.yaml", "base_file: base.yaml\nbase: {data: {path: x.h5}, train: {steps: 9}}\n"
                           "grid: {model.k: [2, 4]}\n"));
  ASSERT_EQ(e.runs.size(), 2u);
  EXPECT_EQ(e.runs[0].config.model.dict_size, 32);  // from the file
  EXPECT_EQ(e.runs[0].config.train.steps, 9);       // base over the file
  EXPECT_DOUBLE_EQ(e.runs[0].config.train.lr, 1e-3);
  EXPECT_EQ(e.runs[1].config.model.k, 4);           // the grid over both
}

TEST(Grid, RunsAndGridPointsCoexist) {
  TempDir dir;
  const Experiment e = load_experiment(grid_file(dir, "runs:\n  - {name: a, model: {k: 8}}\ngrid: {model.k: [2]}\n"));
  ASSERT_EQ(e.runs.size(), 2u);
  EXPECT_EQ(e.runs[0].name, "a");
  EXPECT_FALSE(e.runs[0].grid_point);
  EXPECT_TRUE(e.runs[1].grid_point);
  // --only takes ids, or the readable part of a grid id when it is unique.
  EXPECT_EQ(select_runs(e, {"a"}).size(), 1u);
  EXPECT_EQ(select_runs(e, {"k2"})[0], &e.runs[1]);
  EXPECT_NE(error_of([&] { select_runs(e, {"k3"}); }).find("--only k3: "), std::string::npos);
}

// Ids: the same on every load, and a changed point changes only its own id.
TEST(Grid, IdsAreStableAndChangeOnlyForChangedPoints) {
  TempDir dir;
  const std::string body = "grid:\n  model.k: [2, 4]\n  train.seed: [0, 1]\n";
  const Experiment a = load_experiment(grid_file(dir, body));
  const Experiment b = load_experiment(grid_file(dir, body));
  ASSERT_EQ(a.runs.size(), 4u);
  for (size_t i = 0; i < a.runs.size(); ++i) EXPECT_EQ(a.runs[i].name, b.runs[i].name);
  std::set<std::string> unique;
  for (const ExperimentRun& r : a.runs) unique.insert(r.name);
  EXPECT_EQ(unique.size(), 4u);

  // Replace k = 4 by k = 8: the k = 2 points keep their ids, the others are new.
  const auto before = ids_by_values(a);
  const auto after = ids_by_values(load_experiment(grid_file(dir, "grid:\n  model.k: [2, 8]\n  train.seed: [0, 1]\n")));
  EXPECT_EQ(after.at("model.k=2;train.seed=0;"), before.at("model.k=2;train.seed=0;"));
  EXPECT_EQ(after.at("model.k=2;train.seed=1;"), before.at("model.k=2;train.seed=1;"));
  EXPECT_FALSE(after.count("model.k=4;train.seed=0;"));
  for (const auto& [k, id] : after) EXPECT_EQ(before.count(k) ? before.at(k) == id : true, true);
  // Adding an axis value keeps every existing id; the order of the values does not matter.
  const auto grown = ids_by_values(load_experiment(grid_file(dir, "grid:\n  model.k: [4, 2, 16]\n  train.seed: [1, 0]\n")));
  for (const auto& [k, id] : before) EXPECT_EQ(grown.at(k), id) << k;
  // Changing the base changes every id.
  const Experiment c = load_experiment(write(dir, "c.yaml", std::string(kHead) + body + "\n"));
  EXPECT_EQ(c.runs[0].name, a.runs[0].name);
  std::string head = kHead;
  head.replace(head.find("steps: 10"), 9, "steps: 11");
  const Experiment d = load_experiment(write(dir, "d.yaml", head + body));
  for (size_t i = 0; i < d.runs.size(); ++i) EXPECT_NE(d.runs[i].name, a.runs[i].name);
  // The same configuration written differently is the same point: the hash is of the resolved config.
  const Experiment x = load_experiment(grid_file(dir, "grid: {train.lr: [0.0001]}\n", "x.yaml"));
  const Experiment y = load_experiment(grid_file(dir, "grid: {train.lr: [1e-4]}\n", "y.yaml"));
  EXPECT_EQ(x.runs[0].hash, y.runs[0].hash);
}

TEST(Grid, HashIsFnv1aOfTheResolvedConfig) {
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(fnv1a64("foobar"), 0x85944171f73967e8ull);
  RunConfig c;
  c.model.dict_size = 16;
  const std::string h = config_hash(c);
  EXPECT_EQ(h.size(), 16u);
  c.model.d = 64;  // the input dimension comes from the data: not part of the hash
  EXPECT_EQ(config_hash(c), h);
  c.model.k = 8;
  EXPECT_NE(config_hash(c), h);
}

TEST(Grid, Labels) {
  EXPECT_EQ(point_label({{"model.arch", "scale"}, {"model.k", "8"}, {"model.active_experts", "2"}}), "scale-k8-e2");
  EXPECT_EQ(point_label({{"preset", "paper"}, {"model.feature_scaling", "mean"}, {"data.path", "a/b.h5"}}),
            "paper-fs-mean-path-a_b.h5");
  EXPECT_EQ(point_label({}), "run");
  EXPECT_LE(point_label({{"data.path", std::string(100, 'x')}}).size(), 60u);
}

// flops_match: the paper's §3.1 sizes with measure: encoder; exact matches with measure: train.
TEST(Grid, FlopsMatchSizesDictSize) {
  TempDir dir;
  const std::string paper =
      "name: paper\nout: OUT\n"
      "base: {data: {path: acts.h5}, model: {d: 768, k: 32, dict_size: 768}, train: {batch_size: 8192}}\n"
      "zip:\n"
      "  model.arch: [topk, gated, switch, scale, scale, scale]\n"
      "  model.experts: [1, 1, 32, 256, 128, 64]\n"
      "  model.active_experts: [1, 1, 1, 8, 4, 2]\n"
      "flops_match: {reference: {model.arch: topk, model.dict_size: 768}, measure: encoder}\n";
  const Experiment e = load_experiment(write(dir, "paper.yaml", paper));
  ASSERT_EQ(e.runs.size(), 6u);
  const std::vector<int> want{768, 768, 24576, 24576, 24576, 24576};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(e.runs[i].config.model.dict_size, want[i]) << e.runs[i].name;
  EXPECT_EQ(e.varied.back(), "model.dict_size");
  EXPECT_NE(e.runs[3].name.find("-F24576-"), std::string::npos);

  // measure: train counts everything (router, Feature Scaling, optimizer, AuxK at its worst case, ...): the sizes
  // differ from the encoder widths, and each lands within the tolerance of the reference's training FLOPs/token.
  const std::string small =
      "name: small\nout: OUT\n"
      "base: {data: {path: acts.h5}, model: {d: 64, k: 8, dict_size: 256}, train: {batch_size: 1024}}\n"
      "zip: {model.arch: [topk, gated, switch, scale], model.experts: [1, 1, 8, 16], "
      "model.active_experts: [1, 1, 1, 2]}\n"
      "flops_match: {reference: {model.arch: topk, model.dict_size: 256, model.auxk: false}, tolerance: 0.01}\n";
  const Experiment t = load_experiment(write(dir, "train.yaml", small));
  ASSERT_EQ(t.runs.size(), 4u);
  RunConfig ref = t.runs[0].config;
  ref.model.auxk = false;
  ref.model.dict_size = 256;
  const double target = flops_per_token(ref.model, ref.train.batch_size).train();
  EXPECT_LT(t.runs[0].config.model.dict_size, 256);  // the TopK point keeps AuxK (the reference has none): narrower
  for (const ExperimentRun& r : t.runs) {
    ModelConfig m = r.config.model;
    m.d = 64;
    EXPECT_EQ(m.dict_size % m.experts, 0);
    EXPECT_NEAR(flops_per_token(m, 1024).train() / target, 1.0, 0.01) << r.name;
  }
  EXPECT_LT(t.runs[1].config.model.dict_size, 256);  // Gated is dense in both directions: narrower

  // `when` restricts a rule to some points: the dense ones keep the base's 768.
  std::string when = paper;
  when.replace(when.find("model.dict_size: 768}, measure: encoder}"), 40,
               "model.dict_size: 384}, measure: encoder, when: {model.arch: [switch, scale]}}");
  const Experiment w = load_experiment(write(dir, "when.yaml", when));
  EXPECT_EQ(w.runs[0].config.model.dict_size, 768);
  EXPECT_EQ(w.runs[1].config.model.dict_size, 768);
  EXPECT_EQ(w.runs[2].config.model.dict_size, 384 * 32);
  EXPECT_EQ(w.runs[3].config.model.dict_size, 384 * 256 / 8);
}

TEST(Grid, FlopsMatchFailsClearly) {
  TempDir dir;
  const std::string base = "name: f\nbase: {data: {path: a.h5}, model: {arch: scale, experts: 4, k: 2, dict_size: 16}}\n"
                           "grid: {model.active_experts: [1, 2]}\n";
  // measure: train needs d.
  std::string err = error_of([&] {
    load_experiment(write(dir, "a.yaml", base + "flops_match: {reference: {model.arch: topk, model.dict_size: 8}}\n"));
  });
  EXPECT_NE(err.find("a.yaml:4: flops_match: measure 'train' needs the input dimension d"), std::string::npos) << err;
  // No multiple of E matches within the tolerance.
  err = error_of([&] {
    load_experiment(write(dir, "b.yaml",
                          "name: f\nbase: {data: {path: a.h5}, model: {arch: scale, experts: 4, k: 2, d: 8, "
                          "dict_size: 16}}\ngrid: {model.active_experts: [1]}\nflops_match: {reference: "
                          "{model.arch: topk, model.dict_size: 3}, tolerance: 0.001}\n"));
  });
  EXPECT_NE(err.find("b.yaml:4: flops_match: no model.dict_size (a multiple of experts = 4"), std::string::npos) << err;
  EXPECT_NE(err.find("(grid point model.active_experts=1)"), std::string::npos) << err;
  err = error_of([&] {
    load_experiment(write(dir, "c.yaml", base + "flops_match: {reference: {model.dict_size: 8}, adjust: model.k}\n"));
  });
  EXPECT_NE(err.find("c.yaml:4: flops_match: adjust: 'model.k' cannot be sized"), std::string::npos) << err;
  err = error_of([&] {
    load_experiment(write(dir, "d.yaml", base + "flops_match: {reference: {model.dict_size: 8}, measure: fast}\n"));
  });
  EXPECT_NE(err.find("d.yaml:4: flops_match: unknown FLOPs measure 'fast'"), std::string::npos) << err;
}

// Malformed grids: one error naming the file, the line and the key.
TEST(Grid, ErrorsNameFileLineAndKey) {
  TempDir dir;
  auto err = [&](const std::string& body) {
    return error_of([&] { load_experiment(grid_file(dir, body, "bad.yaml")); });
  };
  const std::string f = dir.file("bad.yaml");
  EXPECT_EQ(err("grid:\n  model.kk: [1, 2]\n"),
            f + ":8: grid key 'model.kk': unknown key 'model.kk' (did you mean 'k'?)");
  EXPECT_EQ(err("grid:\n  modl.k: [1]\n"), f + ":8: grid key 'modl.k': unknown section 'modl' (did you mean 'model'?)");
  EXPECT_EQ(err("grid:\n  k: [1]\n"),
            f + ":8: grid key 'k': expected a run-config key section.key (e.g. model.k or train.lr) or preset");
  EXPECT_EQ(err("grid:\n  model.k:\n    - 2\n    - abc\n"),
            f + ":10: grid key 'model.k': model.k: expected an integer, got 'abc' (grid point model.k=abc)");
  EXPECT_EQ(err("grid:\n  model.k: [2, 100]\n"),
            f + ":8: grid key 'model.k': model.k (100) exceeds the candidate latents per token (active_experts * "
                "dict_size / experts = 64) (grid point model.k=100)");
  EXPECT_EQ(err("grid:\n  model.k: 2\n"),
            f + ":8: grid key 'model.k': expected a non-empty list of values (a single value belongs in base)");
  EXPECT_EQ(err("zip:\n  - {model.k: [1, 2], train.seed: [1]}\n"),
            f + ":8: zip key 'train.seed': has 1 values but 'model.k' has 2 (the lists of a zip group have equal "
                "lengths)");
  EXPECT_EQ(err("grid:\n  preset: [fast]\n"),
            f + ":8: grid key 'preset': preset 'fast' is not defined (the file has no presets:)");
  EXPECT_NE(err("grid: {model.k: [2]}\nexclude: [{train.sed: 1}]\n")
                .find(":8: exclude key 'train.sed': unknown key 'train.sed' (did you mean 'seed'?)"),
            std::string::npos);
  EXPECT_EQ(err("grid: {model.k: [2]}\nzip: {model.k: [4]}\n"),
            f + ":8: zip key 'model.k': 'model.k' is varied twice (each key may vary on one axis)");
  EXPECT_EQ(err("grid: {model.k: [2]}\npresets: {p: {model: {kk: 1}}}\n"),
            f + ":8: preset 'p': unknown key 'model.kk' (did you mean 'k'?)");
  EXPECT_EQ(err("grid: {model.k: [2]}\nflops_match: {reference: {model.kk: 1}}\n"),
            f + ":8: flops_match reference key 'model.kk': unknown key 'model.kk' (did you mean 'k'?)");
  EXPECT_EQ(err("gird: {model.k: [2]}\n"),
            f + ":7: unknown key 'gird' in the experiment (valid: base, base_file, description, exclude, extract, "
                "flops_match, grid, include, name, out, presets, runs, synthetic, zip)");
  EXPECT_EQ(err("grid: {train.lr: [1e-4, 0.0001]}\n"),
            f + ": grid points train.lr=1e-4 and train.lr=0.0001 resolve to the same configuration; vary something "
                "else or exclude one of them");
  // A base key: the line in the base; a base_file key: the line in that file.
  EXPECT_EQ(error_of([&] {
              load_experiment(write(dir, "b.yaml", "base:\n  model:\n    dict_size: 8\n    kk: 3\ngrid: {model.k: [2]}\n"));
            }),
            dir.file("b.yaml") + ":4: unknown key 'model.kk' (did you mean 'k'?) (grid point model.k=2)");
  write(dir, "base.yaml", "model:\n  dict_size: 8\n  arch: topk\n  k: two\n");
  EXPECT_EQ(error_of([&] { load_experiment(write(dir, "c.yaml", "base_file: base.yaml\ngrid: {train.seed: [1]}\n")); }),
            dir.file("base.yaml") + ":4: model.k: expected an integer, got 'two' (grid point train.seed=1)");
  // A named run's key: the run's line.
  EXPECT_EQ(error_of([&] { load_experiment(write(dir, "r.yaml", "runs:\n  - name: a\n    model: {dict_size: 8, kk: 1}\n")); }),
            dir.file("r.yaml") + ":3: run 'a': unknown key 'model.kk' (did you mean 'k'?)");
  EXPECT_EQ(error_of([&] { load_experiment(write(dir, "n.yaml", "name: x\n")); }),
            dir.file("n.yaml") + ": the experiment has no runs: give 'runs:' (named runs) or 'grid:' / 'zip:' (a grid of runs)");
  // --set overrides keep their own location.
  EXPECT_NE(error_of([&] { load_experiment(grid_file(dir, "grid: {model.k: [2]}\n"), {"model.k=abc"}); })
                .find("override 'model.k=abc': model.k: expected an integer, got 'abc'"),
            std::string::npos);
}
