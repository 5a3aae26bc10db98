// `moesae plan EXPERIMENT.yaml [--only ID ...] [--set key=value ...] [--rate GFLOPS] [--terms]`
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "run/plan.h"

namespace moesae::cli {

Command add_plan(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "plan", "Show the runs of an experiment or grid file: settings, FLOPs/token, parameters, memory, time, status");
  struct Args {
    std::string file;
    std::vector<std::string> only, overrides;
    PlanOptions opt;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("experiment", a->file, "experiment or grid file (YAML)")->required();
  sub->add_option("--only", a->only, "show only these runs (ids; repeatable)");
  sub->add_option("--set", a->overrides, "override a config value in every run: section.key=value");
  sub->add_option("--rate", a->opt.rate_gflops, "training rate in GFLOP/s for the time estimate (default: measured)")
      ->check(CLI::PositiveNumber);
  sub->add_flag("--terms", a->opt.terms, "also print every run's FLOPs per token term by term");
  return {sub, [a]() {
            Experiment e = load_experiment(a->file, a->overrides);
            a->opt.only = a->only;
            std::printf("%s", plan_table(e, a->opt).c_str());
            return 0;
          }};
}

}  // namespace moesae::cli
