// Experiment files (run/experiment.h): runs are trained once, skipped while their record matches their config,
// retrained when the config or the synthetic data changed; --only names must exist.
#include <gtest/gtest.h>

#include <fstream>

#include "core/log.h"
#include "run/experiment.h"
#include "run/record.h"
#include "error_of.h"
#include "temp_dir.h"

using namespace moesae;
using moesae::testing::TempDir;
using moesae::testing::error_of;

namespace {

std::string write_experiment(const TempDir& dir, int k, int seed) {
  const std::string path = dir.file("exp.yaml");
  std::ofstream f(path);
  f << "name: t\nout: " << dir.file("out") << "\n"
    << "synthetic: {d: 8, features: 32, groups: 4, active: 2, tokens: 3000, seed: " << seed << "}\n"
    << "base: {data: {eval_tokens: 500}, train: {steps: 5, batch_size: 64, log_every: 5}, model: {k: " << k << "}}\n"
    << "runs:\n  - {name: a, model: {arch: topk, dict_size: 16}}\n"
    << "  - {name: b, model: {arch: scale, dict_size: 32, experts: 4, active_experts: 2}}\n";
  return path;
}

std::string config_of(const std::string& record) { return RunRecord::load(record, false).config_yaml; }

}  // namespace

TEST(Experiment, SkipsMatchingRecordsAndRetrainsChangedOnes) {
  set_log_level("warn");
  TempDir dir;
  Experiment e = load_experiment(write_experiment(dir, 2, 1));
  ASSERT_EQ(run_experiment(e, {}), 0);
  const auto mtime = std::filesystem::last_write_time(e.runs[0].record);
  ASSERT_EQ(run_experiment(e, {}), 0);  // nothing changed: both skipped
  EXPECT_EQ(std::filesystem::last_write_time(e.runs[0].record), mtime);

  Experiment changed = load_experiment(write_experiment(dir, 3, 1));  // k changed: both retrained
  ASSERT_EQ(run_experiment(changed, {}), 0);
  EXPECT_NE(std::filesystem::last_write_time(changed.runs[0].record), mtime);
  EXPECT_NE(config_of(changed.runs[0].record).find("k: 3"), std::string::npos);
  EXPECT_NE(config_of(changed.runs[1].record).find("k: 3"), std::string::npos);

  Experiment reseeded = load_experiment(write_experiment(dir, 3, 2));  // new data: regenerated, all retrained
  const auto data_mtime = std::filesystem::last_write_time(reseeded.synthetic_path);
  const auto rec_mtime = std::filesystem::last_write_time(reseeded.runs[1].record);
  ASSERT_EQ(run_experiment(reseeded, {}), 0);
  EXPECT_NE(std::filesystem::last_write_time(reseeded.synthetic_path), data_mtime);
  EXPECT_NE(std::filesystem::last_write_time(reseeded.runs[1].record), rec_mtime);
}

TEST(Experiment, OnlyMustNameExistingRuns) {
  TempDir dir;
  Experiment e = load_experiment(write_experiment(dir, 2, 1));
  EXPECT_NE(error_of([&] { run_experiment(e, ExperimentOptions{{"c"}, false}); }).find("has no run of that name (runs: a, b)"),
            std::string::npos);
}

TEST(Experiment, SyntheticIntegersMustBeIntegral) {
  TempDir dir;
  const std::string path = dir.file("bad.yaml");
  std::ofstream(path) << "synthetic: {d: 8.5}\nruns:\n  - {name: a, model: {arch: topk, dict_size: 16, k: 2}}\n";
  EXPECT_NE(error_of([&] { load_experiment(path); }).find(":1: synthetic.d must be a non-negative integer"),
            std::string::npos);
}
