// SLURM submission (run/submit.h) without SLURM: filling the job-array template, and a dry run that prepares the
// data, lists only the unfinished runs and writes a script with every placeholder filled. (The real submission is
// tested on a local SLURM cluster by tests/cli/slurm_array.sh.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>

#include "error_of.h"
#include "run/experiment.h"
#include "run/submit.h"
#include "temp_dir.h"

using namespace moesae;
using moesae::testing::error_of;
using moesae::testing::TempDir;

namespace {
std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
}  // namespace

TEST(Submit, FillTemplateReplacesEveryPlaceholderAndRejectsBadValues) {
  EXPECT_EQ(fill_template("a=@A@ b='@B_C@' mail@host @ @x@", {{"A", "1"}, {"B_C", "/p/q"}}, "t"),
            "a=1 b='/p/q' mail@host @ @x@");
  EXPECT_NE(error_of([] { fill_template("x\n@MISSING@", {{"A", "1"}}, "tmpl"); })
                .find("tmpl:2: placeholder @MISSING@ has no value"),
            std::string::npos);
  EXPECT_NE(error_of([] { fill_template("@A@", {{"A", "two words"}}, "tmpl"); }).find("@A@ ('two words')"),
            std::string::npos);
  EXPECT_NE(error_of([] { fill_template("@A@", {{"A", "it's"}}, "tmpl"); }).find("without spaces, quotes"),
            std::string::npos);
}

TEST(Submit, DryRunPreparesDataAndListsOnlyUnfinishedRuns) {
  TempDir tmp;
  const std::string path = tmp.file("exp.yaml");
  std::ofstream(path) << "name: sub\nout: " << tmp.file("out") << "\n"
                      << "synthetic: {d: 8, features: 32, groups: 4, active: 2, tokens: 3000, seed: 1}\n"
                      << "base: {data: {eval_tokens: 500}, train: {steps: 5, batch_size: 64, log_every: 5}}\n"
                      << "runs:\n  - {name: a, model: {arch: topk, dict_size: 16, k: 2}}\n"
                      << "  - {name: b, model: {arch: topk, dict_size: 16, k: 4}}\n";
  Experiment e = load_experiment(path);
  ExperimentOptions only_a;
  only_a.only = {"a"};
  ASSERT_EQ(run_experiment(e, only_a), 0);  // a is finished, b is not

  SubmitOptions o;
  o.dry_run = true;
  o.max_running = 3;
  o.cpus = 2;
  o.moesae = "/bin/true";
  const SubmitResult r = submit_experiment(e, o);
  EXPECT_EQ(r.runs, std::vector<std::string>{"b"});
  EXPECT_TRUE(r.job_id.empty());
  EXPECT_EQ(slurp(r.runs_file), "b\n");
  const std::string script = slurp(r.script);
  EXPECT_FALSE(std::regex_search(script, std::regex("@[A-Z_]+@"))) << script;
  EXPECT_NE(script.find("#SBATCH --array=0-0%3"), std::string::npos);
  EXPECT_NE(script.find("#SBATCH --cpus-per-task=2"), std::string::npos);
  EXPECT_NE(script.find("#SBATCH --job-name=moesae-sub"), std::string::npos);
  EXPECT_NE(script.find("GRID='" + std::filesystem::absolute(path).lexically_normal().string() + "'"),
            std::string::npos);
  EXPECT_TRUE(std::filesystem::exists(tmp.file("out") + "/slurm/logs"));
  EXPECT_TRUE(std::filesystem::exists(e.synthetic_path));  // prepared before submitting

  // Everything finished: nothing to submit. Overrides cannot reach the tasks.
  ASSERT_EQ(run_experiment(e, {}), 0);
  EXPECT_TRUE(submit_experiment(e, o).runs.empty());
  const Experiment with_set = load_experiment(path, {"train.steps=7"});
  EXPECT_NE(error_of([&] { submit_experiment(with_set, o); }).find("--set overrides cannot reach"),
            std::string::npos);
  o.only = {"zzz"};
  EXPECT_NE(error_of([&] { submit_experiment(e, o); }).find("zzz"), std::string::npos);
}
