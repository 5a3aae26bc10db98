// `moesae run EXPERIMENT.yaml [--only NAME ...] [--set key=value ...] [--rerun]`
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>

#include "cli/commands.h"
#include "run/experiment.h"

namespace moesae::cli {

Command add_run(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("run", "Run an experiment file: every run without a record, then a comparison table");
  struct Args {
    std::string file;
    std::vector<std::string> only, overrides;
    bool rerun = false, table_only = false;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("experiment", a->file, "experiment file (YAML)")->required();
  sub->add_option("--only", a->only, "run only these runs (by name)");
  sub->add_option("--set", a->overrides, "override a config value in every run: section.key=value");
  sub->add_flag("--rerun", a->rerun, "retrain runs that already have a record");
  sub->add_flag("--table", a->table_only, "only print the comparison table of existing records");
  return {sub, [a]() {
            Experiment e = load_experiment(a->file, a->overrides);
            int failed = 0;
            if (!a->table_only) failed = run_experiment(e, ExperimentOptions{a->only, a->rerun});
            std::printf("\n%s: final metrics on held-out tokens (records in %s/)\n%s", e.name.c_str(), e.out.c_str(),
                        comparison_table(e).c_str());
            if (failed == 0) return 0;
            std::string names;  // the selected runs left without a record (their errors are in the log above)
            for (const ExperimentRun& r : e.runs)
              if ((a->only.empty() || std::find(a->only.begin(), a->only.end(), r.name) != a->only.end()) &&
                  !std::filesystem::exists(r.record))
                names += (names.empty() ? "" : ", ") + r.name;
            std::fflush(stdout);
            std::fprintf(stderr, "error: %d run(s) of '%s' did not finish: %s (see the log above)\n", failed,
                         a->file.c_str(), names.c_str());
            return 1;
          }};
}

}  // namespace moesae::cli
