// End-to-end tests of exact resumption (run/train_run.h): a run stopped with a checkpoint and resumed ends with
// bit-identical weights and the same metrics as a run that was never interrupted, for TopK, Switch and Scale (with
// Feature Scaling). A checkpoint written under a different configuration, or a file that is not a checkpoint, is
// refused with a clear error and left as it was; a failed run leaves an existing record untouched.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/h5.h"
#include "core/log.h"
#include "data/synthetic.h"
#include "run/config.h"
#include "run/record.h"
#include "run/train_run.h"
#include "error_of.h"
#include "temp_dir.h"

using namespace moesae;
using moesae::testing::TempDir;
using moesae::testing::error_of;

namespace {

constexpr int64_t kSteps = 60;  // 2N

// Small synthetic data: 6000 tokens, d = 16 (5500 training rows: 60 steps of 128 cross an epoch boundary).
std::string make_data(const TempDir& dir) {
  SynthConfig s;
  s.tokens = 6000;
  s.d = 16;
  s.features = 64;
  s.groups = 4;
  s.active = 3;
  s.seed = 11;
  const std::string path = dir.file("acts.h5");
  write_synthetic(s, path);
  return path;
}

// log_every 7 and eval_every 20 do not divide the stop points, so resumption lands inside an open metrics row;
// a small shuffle buffer and chunk size make the stream's position non-trivial.
RunConfig config_for(const std::string& data, const std::string& model_yaml,
                     const std::vector<std::string>& overrides = {}) {
  const std::string yaml = "data: {path: '" + data +
                           "', eval_tokens: 500, shuffle_buffer: 700, chunk_rows: 300}\n"
                           "model: " + model_yaml + "\n"
                           "train: {steps: " + std::to_string(kSteps) +
                           ", batch_size: 128, log_every: 7, eval_every: 20, threads: 1, seed: 3}\n";
  return parse_run_config_text(yaml, overrides, "resume-test");
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.rank() == b.rank() && a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.host<float>(), b.host<float>(), size_t(a.numel()) * 4) == 0;
}

// Bitwise equality of two series (NaN equals NaN); `skip` names a column that depends on wall time.
void expect_same_series(const MetricSeries& a, const MetricSeries& b, const std::string& what) {
  ASSERT_EQ(a.rows(), b.rows()) << what;
  for (const auto& [name, col] : a.columns()) {
    if (name == "tokens_per_s") continue;
    ASSERT_TRUE(b.has(name)) << what << ": " << name;
    const std::vector<double>& other = b.column(name);
    ASSERT_EQ(col.size(), other.size()) << what << ": " << name;
    EXPECT_EQ(std::memcmp(col.data(), other.data(), col.size() * sizeof(double)), 0) << what << ": " << name;
  }
  EXPECT_EQ(a.columns().size(), b.columns().size()) << what;
}

// Every file in `dir` (to check that nothing stray, such as a temporary file, is left behind).
std::vector<std::string> files_in(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

class ExactResume : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override { set_log_level("warn"); }
};

TEST_P(ExactResume, StoppedAndResumedRunEqualsAStraightRun) {
  TempDir dir;
  const RunConfig cfg = config_for(make_data(dir), GetParam());
  const std::string straight = dir.file("straight.h5"), split = dir.file("split.h5");
  const std::string ckpt = checkpoint_path_for(split);

  TrainRunResult a = train_run(cfg, TrainRunOptions{straight, -1, false});
  ASSERT_TRUE(a.finished);
  EXPECT_FALSE(std::filesystem::exists(checkpoint_path_for(straight)));

  // N steps, stop with a checkpoint; then on to 45 (a second interruption); then to the end.
  TrainRunResult b1 = train_run(cfg, TrainRunOptions{split, kSteps / 2, false});
  EXPECT_FALSE(b1.finished);
  EXPECT_EQ(b1.steps_done, kSteps / 2);
  EXPECT_TRUE(std::filesystem::exists(ckpt));
  EXPECT_FALSE(std::filesystem::exists(split));
  TrainRunResult b2 = train_run(cfg, TrainRunOptions{split, 45, false});
  EXPECT_FALSE(b2.finished);
  EXPECT_EQ(b2.steps_done, 45);
  TrainRunResult b3 = train_run(cfg, TrainRunOptions{split, -1, false});
  ASSERT_TRUE(b3.finished);
  EXPECT_EQ(b3.steps_done, kSteps);
  EXPECT_FALSE(std::filesystem::exists(ckpt)) << "the checkpoint is removed once the record is written";
  EXPECT_EQ(files_in(dir.path()), (std::vector<std::string>{"acts.h5", "split.h5", "straight.h5"}));

  const RunRecord ra = RunRecord::load(straight), rb = RunRecord::load(split);
  EXPECT_EQ(ra.config_yaml, rb.config_yaml);
  ASSERT_EQ(ra.weights.size(), rb.weights.size());
  for (const auto& [name, w] : ra.weights) {
    ASSERT_TRUE(rb.weights.count(name)) << name;
    EXPECT_TRUE(same_bits(w, rb.weights.at(name))) << "weight " << name << " differs after resuming";
  }
  // The metrics: every logging step present exactly once, every value the same as without interruption.
  const std::vector<double> want_steps{7, 14, 21, 28, 35, 42, 49, 56, 60};
  EXPECT_EQ(rb.metrics.column("step"), want_steps);
  EXPECT_EQ(ra.metrics.column("step"), want_steps);
  expect_same_series(ra.metrics, rb.metrics, "metrics");
  EXPECT_EQ(rb.eval.column("step"), (std::vector<double>{20, 40}));
  expect_same_series(ra.eval, rb.eval, "eval");
  for (const auto& [name, v] : ra.final_scalars)
    if (name != "train_seconds") EXPECT_EQ(v, rb.final_scalars.at(name)) << "final " << name;
}

INSTANTIATE_TEST_SUITE_P(Archs, ExactResume,
                         ::testing::Values("{arch: topk, dict_size: 64, k: 4}",
                                           "{arch: switch, dict_size: 64, experts: 4, k: 4}",
                                           "{arch: scale, dict_size: 64, experts: 4, active_experts: 2, k: 4, "
                                           "feature_scaling: mean}"),
                         [](const ::testing::TestParamInfo<const char*>& info) {
                           return std::string(info.index == 0 ? "topk" : info.index == 1 ? "switch" : "scale");
                         });

// data.prefetch reads the next batch on a background thread: the same batches, the same resume cursor. A run that
// reads ahead, stopped and resumed under the other setting and back, ends bit-identical to one that never did.
TEST(PrefetchResume, ReadingAheadChangesNothing) {
  set_log_level("warn");
  TempDir dir;
  const std::string data = make_data(dir), model = "{arch: scale, dict_size: 64, experts: 4, active_experts: 2, k: 4}";
  const RunConfig off = config_for(data, model, {"data.prefetch=false"}), on = config_for(data, model, {"data.prefetch=true"});
  const std::string straight = dir.file("straight.h5"), split = dir.file("split.h5");
  ASSERT_TRUE(train_run(off, TrainRunOptions{straight, -1, false}).finished);
  EXPECT_FALSE(train_run(on, TrainRunOptions{split, kSteps / 2, false}).finished);
  EXPECT_FALSE(train_run(off, TrainRunOptions{split, 45, false}).finished) << "resumed under the other setting";
  ASSERT_TRUE(train_run(on, TrainRunOptions{split, -1, false}).finished);
  const RunRecord ra = RunRecord::load(straight), rb = RunRecord::load(split);
  ASSERT_EQ(ra.weights.size(), rb.weights.size());
  for (const auto& [name, w] : ra.weights)
    EXPECT_TRUE(same_bits(w, rb.weights.at(name))) << "weight " << name << " differs with prefetching";
  expect_same_series(ra.metrics, rb.metrics, "metrics");
  expect_same_series(ra.eval, rb.eval, "eval");
}

class ResumeRefusal : public ::testing::Test {
 protected:
  void SetUp() override {
    set_log_level("warn");
    data = make_data(dir);
    cfg = config_for(data, "{arch: topk, dict_size: 64, k: 4}");
    out = dir.file("run.h5");
    ckpt = checkpoint_path_for(out);
    ASSERT_FALSE(train_run(cfg, TrainRunOptions{out, 10, false}).finished);
    ASSERT_TRUE(std::filesystem::exists(ckpt));
  }
  TempDir dir;
  std::string data, out, ckpt;
  RunConfig cfg;
};

TEST_F(ResumeRefusal, ChangedConfigIsRefusedNamingTheKeys) {
  const std::string before = read_bytes(ckpt);
  const RunConfig changed = config_for(data, "{arch: topk, dict_size: 64, k: 8}", {"train.lr=1e-3"});
  const std::string msg = error_of([&] { train_run(changed, TrainRunOptions{out, -1, false}); });
  EXPECT_NE(msg.find("checkpoint '" + ckpt + "' was written with a different configuration"), std::string::npos)
      << msg;
  EXPECT_NE(msg.find("model.k: 4 -> 8"), std::string::npos) << msg;
  EXPECT_NE(msg.find("train.lr: 0 -> 0.001"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--restart"), std::string::npos) << msg;
  EXPECT_EQ(read_bytes(ckpt), before) << "a refused checkpoint is left as it was";
  EXPECT_FALSE(std::filesystem::exists(out));
  // Only the resolved values count: a config that spells the same values differently resumes.
  const RunConfig same = config_for(data, "{arch: topk, dict_size: 64.0e0, k: 4, experts: 1}");
  EXPECT_TRUE(train_run(same, TrainRunOptions{out, -1, false}).finished);
}

TEST_F(ResumeRefusal, RestartDiscardsTheCheckpoint) {
  const RunConfig changed = config_for(data, "{arch: topk, dict_size: 64, k: 8}");
  TrainRunResult r = train_run(changed, TrainRunOptions{out, -1, true});
  EXPECT_TRUE(r.finished);
  EXPECT_EQ(r.steps_done, kSteps);
  EXPECT_EQ(RunRecord::load(out, false).metrics.column("step").front(), 7);
  EXPECT_FALSE(std::filesystem::exists(ckpt));
}

TEST_F(ResumeRefusal, FileThatIsNotACheckpointIsRefused) {
  const std::string good = read_bytes(ckpt);
  const auto refused = [&](const std::string& contents, const std::string& why) {
    { std::ofstream(ckpt, std::ios::binary | std::ios::trunc) << contents; }
    const std::string msg = error_of([&] { train_run(cfg, TrainRunOptions{out, -1, false}); });
    EXPECT_EQ(msg.rfind("cannot resume from '" + ckpt + "': ", 0), 0u) << msg;
    EXPECT_NE(msg.find(why), std::string::npos) << msg;
    EXPECT_NE(msg.find("--restart"), std::string::npos) << msg;
    EXPECT_EQ(read_bytes(ckpt), contents) << "a refused checkpoint is left as it was";
    EXPECT_FALSE(std::filesystem::exists(out));
  };
  refused("not an HDF5 file at all\n", "not an HDF5 file");
  refused(good.substr(0, good.size() / 3), "truncated");
  refused(read_bytes(data), "it is not a moesae checkpoint");  // an HDF5 file, but an activation file
  // The intact checkpoint still resumes.
  { std::ofstream(ckpt, std::ios::binary | std::ios::trunc) << good; }
  EXPECT_TRUE(train_run(cfg, TrainRunOptions{out, -1, false}).finished);
}

TEST(TrainRunFailure, ExistingRecordIsLeftIntactAndNothingStrayIsWritten) {
  set_log_level("warn");
  TempDir dir;
  const std::string data = make_data(dir), out = dir.file("run.h5");
  const RunConfig cfg = config_for(data, "{arch: topk, dict_size: 64, k: 4}");
  ASSERT_TRUE(train_run(cfg, TrainRunOptions{out, -1, false}).finished);
  const std::string before = read_bytes(out);
  // Diverges in training; asks for a model the data cannot feed; finds no data.
  EXPECT_NE(error_of([&] {
              train_run(config_for(data, "{arch: topk, dict_size: 64, k: 4}", {"train.lr=1e9"}),
                        TrainRunOptions{out, -1, false});
            }).find("training diverged"),
            std::string::npos);
  EXPECT_EQ(error_of([&] {
              train_run(config_for(data, "{arch: topk, dict_size: 64, k: 4, d: 32}"), TrainRunOptions{out, -1, false});
            }),
            "model.d is 32 but '" + data + "' has d=16");
  EXPECT_EQ(error_of([&] {
              train_run(config_for(dir.file("none.h5"), "{arch: topk, dict_size: 64, k: 4}"),
                        TrainRunOptions{out, -1, false});
            }),
            "data.path: activation file '" + dir.file("none.h5") + "' does not exist");
  EXPECT_EQ(error_of([&] {
              train_run(config_for(data, "{arch: topk, dict_size: 64, k: 4}",
                                   {"data.eval_tokens=0", "data.eval_fraction=0"}),
                        TrainRunOptions{out, -1, false});
            }),
            "no held-out tokens to evaluate on: data.eval_fraction and data.eval_tokens are both 0");
  EXPECT_EQ(read_bytes(out), before);
  EXPECT_EQ(files_in(dir.path()), (std::vector<std::string>{"acts.h5", "run.h5"}));
}

// A failure after the last step (here: a NaN in the held-out rows, found by the final evaluation) keeps the
// finished training in its checkpoint; once the data is repaired, the rerun only evaluates and writes the record,
// which equals a run that never failed.
TEST(TrainRunFailure, FailureAfterTheLastStepKeepsTheTrainingInTheCheckpoint) {
  set_log_level("warn");
  TempDir dir;
  const std::string data = make_data(dir), out = dir.file("run.h5"), straight = dir.file("straight.h5");
  const RunConfig cfg =
      config_for(data, "{arch: scale, dict_size: 64, experts: 4, active_experts: 2, k: 4}", {"train.eval_every=0"});
  ASSERT_TRUE(train_run(cfg, TrainRunOptions{straight, -1, false}).finished);
  Tensor row = host_tensor(1, 16), saved = host_tensor(1, 16);
  {
    h5::File f(data, h5::File::Mode::ReadWrite);
    f.read_rows("activations", 5999, saved);
    for (int i = 0; i < 16; ++i) row.host<float>()[i] = std::nanf("");
    f.write_rows("activations", 5999, row);
  }
  EXPECT_NE(error_of([&] { train_run(cfg, TrainRunOptions{out, -1, false}); }).find("non-finite value"),
            std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(out));
  ASSERT_TRUE(std::filesystem::exists(checkpoint_path_for(out)));
  {
    h5::File f(data, h5::File::Mode::ReadWrite);
    f.write_rows("activations", 5999, saved);
  }
  TrainRunResult r = train_run(cfg, TrainRunOptions{out, -1, false});
  ASSERT_TRUE(r.finished);
  EXPECT_FALSE(std::filesystem::exists(checkpoint_path_for(out)));
  const RunRecord a = RunRecord::load(straight), b = RunRecord::load(out);
  for (const auto& [name, w] : a.weights) EXPECT_TRUE(same_bits(w, b.weights.at(name))) << name;
  expect_same_series(a.metrics, b.metrics, "metrics");
}

}  // namespace
