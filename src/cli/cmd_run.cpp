// `moesae run EXPERIMENT.yaml [--jobs N] [--only ID ...] [--set key=value ...] [--rerun] [--table]`
#include <algorithm>
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "comm/communicator.h"
#include "run/experiment.h"

namespace moesae::cli {

Command add_run(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "run", "Run an experiment or grid file: every run without a record (up to --jobs at once), then a comparison table");
  struct Args {
    std::string file;
    std::vector<std::string> only, overrides;
    bool rerun = false, table_only = false, worker = false;
    int jobs = 1;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("experiment", a->file, "experiment or grid file (YAML)")->required();
  sub->add_option("--only", a->only, "run only these runs (ids as `moesae plan` lists them; repeatable)");
  sub->add_option("--set", a->overrides, "override a config value in every run: section.key=value");
  sub->add_option("-j,--jobs", a->jobs, "runs trained at once, each in its own process with its share of the threads")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  sub->add_flag("--rerun", a->rerun, "retrain runs that already have a record");
  sub->add_flag("--table", a->table_only, "only print the comparison table of existing records");
  // Internal: one child process of --jobs (trains its --only runs, prepares no data, prints no table).
  sub->add_flag("--worker", a->worker)->group("");
  return {sub, [a]() {
            Experiment e = load_experiment(a->file, a->overrides);
            ExperimentOptions opt;
            opt.only = a->only;
            opt.rerun = a->rerun;
            opt.jobs = a->jobs;
            opt.worker = a->worker;
            if (a->worker) {
              const int failed = run_experiment(e, opt);
              return experiment_interrupted() ? 3 : failed > 0 ? 1 : 0;
            }
            int failed = 0;
            if (!a->table_only) failed = run_experiment(e, opt);
            // Under mpirun: rank 0 prints the table (make_communicator starts MPI when it is not running yet).
            if (comm::make_communicator("auto")->rank() > 0) return failed > 0 ? 1 : 0;
            std::printf("\n%s: final metrics on held-out tokens (records in %s/)\n%s", e.name.c_str(), e.out.c_str(),
                        comparison_table(e).c_str());
            if (failed == 0) return 0;
            // The selected runs left without a record of their configuration (their errors are in the log above);
            // a run skipped as busy may have been finished meanwhile by the process that held it.
            std::string names;
            int missing = 0;
            for (const ExperimentRun* r : select_runs(e, a->only))
              if (run_status(*r).state != RunStatus::State::Done) {
                names += (names.empty() ? "" : ", ") + r->name;
                ++missing;
              }
            if (missing == 0) return 0;
            std::fflush(stdout);
            std::fprintf(stderr, "error: %d run(s) of '%s' did not finish: %s (see the log above)\n", missing,
                         a->file.c_str(), names.c_str());
            return 1;
          }};
}

}  // namespace moesae::cli
