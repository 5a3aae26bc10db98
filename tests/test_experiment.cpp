// Experiment files (run/experiment.h): runs are trained once, skipped while their record matches their config,
// retrained when the config or the synthetic data changed; --only names must exist. Grids on disk: run status,
// resuming interrupted runs, runs busy in another process, and collect (run/collect.h) while runs are unfinished.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <fstream>

#include "core/h5.h"
#include "core/log.h"
#include "run/collect.h"
#include "run/experiment.h"
#include "run/record.h"
#include "run/train_run.h"
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

ExperimentOptions only_runs(const std::vector<std::string>& ids) {
  ExperimentOptions o;
  o.only = ids;
  return o;
}

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
  EXPECT_NE(error_of([&] { run_experiment(e, only_runs({"c"})); }).find("has no run of that name (runs: a, b)"),
            std::string::npos);
}

TEST(Experiment, SyntheticIntegersMustBeIntegral) {
  TempDir dir;
  const std::string path = dir.file("bad.yaml");
  std::ofstream(path) << "synthetic: {d: 8.5}\nruns:\n  - {name: a, model: {arch: topk, dict_size: 16, k: 2}}\n";
  EXPECT_NE(error_of([&] { load_experiment(path); }).find(":1: synthetic.d must be a non-negative integer"),
            std::string::npos);
}

// ---- grids on disk: status, resume, busy runs, collect -----------------------------------------------------------

namespace {

std::string write_grid(const TempDir& dir, int steps) {
  const std::string path = dir.file("grid.yaml");
  std::ofstream f(path);
  f << "name: g\nout: " << dir.file("out") << "\n"
    << "synthetic: {d: 8, features: 32, groups: 4, active: 2, tokens: 3000, seed: 1}\n"
    << "base: {data: {eval_tokens: 500}, train: {steps: " << steps << ", batch_size: 64, log_every: 5}, "
    << "model: {arch: topk, dict_size: 16}}\n"
    << "grid: {model.k: [2, 3, 4]}\n";
  return path;
}

const ExperimentRun& by_k(const Experiment& e, int k) {
  for (const ExperimentRun& r : e.runs)
    if (r.config.model.k == k) return r;
  throw std::runtime_error("no run");
}

}  // namespace

TEST(ExperimentGrid, StatusResumeAndCollect) {
  set_log_level("warn");
  TempDir dir;
  Experiment e = load_experiment(write_grid(dir, 20));
  ASSERT_EQ(e.runs.size(), 3u);
  const ExperimentRun &a = by_k(e, 2), &b = by_k(e, 3), &c = by_k(e, 4);
  ASSERT_EQ(run_experiment(e, only_runs({a.name})), 0);  // generates the data, trains a
  // b: interrupted at step 10 (a checkpoint, no record); c: a record being written (only its temporary file).
  RunConfig bc = b.config;
  TrainRunResult part = train_run(bc, TrainRunOptions{b.record, 10, false});
  ASSERT_FALSE(part.finished);
  std::ofstream(c.record + ".tmp.12345") << "partial";
  EXPECT_EQ(run_status(a).text(), "done");
  EXPECT_EQ(run_status(b).text(), "partial 10/20");
  EXPECT_EQ(run_status(c).text(), "todo");

  const std::string out = dir.file("grid.h5");
  CollectSummary s = collect_experiment(e, out);
  EXPECT_EQ(s.runs, 3);
  EXPECT_EQ(s.collected, 1);
  ASSERT_EQ(s.missing.size(), 2u);
  EXPECT_EQ(s.missing[0], std::make_pair(b.name, std::string("partial 10/20")));
  EXPECT_EQ(s.missing[1], std::make_pair(c.name, std::string("todo")));
  {
    h5::File f(out, h5::File::Mode::Read);
    EXPECT_EQ(f.attr_string("/", "format"), "moesae-grid-collection");
    EXPECT_EQ(f.attr_int("/table", "rows"), 3);
    const std::vector<int64_t> k = f.read_i64("/table/k");
    const std::vector<double> mse = f.read_f64("/table/mse"), mk = f.read_f64("/table/model.k");
    ASSERT_EQ(k.size(), 3u);
    EXPECT_EQ(k, (std::vector<int64_t>{2, 3, 4}));
    EXPECT_EQ(mk, (std::vector<double>{2, 3, 4}));
    EXPECT_TRUE(std::isfinite(mse[0]));
    EXPECT_TRUE(std::isnan(mse[1]) && std::isnan(mse[2]));
    EXPECT_EQ(f.list("/runs"), std::vector<std::string>{a.name});
    EXPECT_DOUBLE_EQ(f.attr_double("/runs/" + a.name + "/final", "mse"), mse[0]);
    EXPECT_NE(f.attr_string("/runs/" + a.name + "/config", "yaml").find("k: 2"), std::string::npos);
  }

  // The rerun skips a, resumes b from its checkpoint and trains c; then everything is collected.
  ASSERT_EQ(run_experiment(e, {}), 0);
  for (const ExperimentRun& r : e.runs) {
    EXPECT_EQ(run_status(r).text(), "done") << r.name;
    EXPECT_FALSE(std::filesystem::exists(checkpoint_path_for(r.record)));
    EXPECT_FALSE(std::filesystem::exists(r.record + ".lock"));
    EXPECT_EQ(RunRecord::load(r.record, false).final_scalars.at("steps"), 20);
  }
  s = collect_experiment(e, out);
  EXPECT_EQ(s.collected, 3);
  EXPECT_TRUE(s.missing.empty());

  // A changed configuration: the old record is stale (and collect leaves it out).
  Experiment longer = load_experiment(write_grid(dir, 25));
  EXPECT_EQ(run_status(longer.runs[0]).text(), "todo");  // a new id: the old record is another point's
  Experiment same_ids = e;
  same_ids.runs[0].config.train.steps = 25;
  EXPECT_EQ(run_status(same_ids.runs[0]).text(), "stale");
}

// A run another process is training (its lock is held) is reported as running and not trained twice.
TEST(ExperimentGrid, BusyRunsAreSkipped) {
  set_log_level("error");
  TempDir dir;
  Experiment e = load_experiment(write_grid(dir, 10));
  const ExperimentRun& r = e.runs[0];
  std::filesystem::create_directories(dir.file("out"));
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // holds the run's lock like a training process would
    const int fd = ::open((r.record + ".lock").c_str(), O_RDWR | O_CREAT, 0644);
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    const char ok = ::fcntl(fd, F_SETLK, &fl) == 0 ? 'y' : 'n';
    (void)!::write(pipefd[1], &ok, 1);
    ::pause();
    ::_exit(0);
  }
  char ok = 0;
  ASSERT_EQ(::read(pipefd[0], &ok, 1), 1);
  ASSERT_EQ(ok, 'y');
  EXPECT_EQ(run_status(r).text(), "running");
  EXPECT_EQ(run_experiment(e, only_runs({r.name})), 1);  // skipped, not finished
  EXPECT_FALSE(std::filesystem::exists(r.record));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ::close(pipefd[0]);
  ::close(pipefd[1]);
  EXPECT_EQ(run_status(r).text(), "todo");  // a lock file nobody holds (a killed process) blocks nothing
  EXPECT_EQ(run_experiment(e, only_runs({r.name})), 0);
  EXPECT_EQ(run_status(r).text(), "done");
}
