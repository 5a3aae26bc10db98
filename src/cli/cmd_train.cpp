// `moesae train CONFIG.yaml [--set key=value ...] --out RUN.h5`
#include "cli/commands.h"
#include "run/train_run.h"

namespace moesae::cli {

Command add_train(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("train", "Train one SAE from a YAML config; writes the HDF5 run record");
  struct Args {
    std::string config, out;
    std::vector<std::string> overrides;
    int64_t stop_after = -1;
    bool restart = false;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("config", a->config, "run config (YAML)")->required()->check(CLI::ExistingFile);
  sub->add_option("--out,-o", a->out, "run record to write (RUN.h5)")->required();
  sub->add_option("--set", a->overrides, "override a config value: section.key=value (repeatable)");
  sub->add_option("--stop-after", a->stop_after,
                  "stop with a checkpoint once this many steps are done in total (resume by running again)");
  sub->add_flag("--restart", a->restart, "ignore an existing checkpoint and start from scratch");
  return {sub, [a]() {
            RunConfig cfg = load_run_config(a->config, a->overrides);
            TrainRunResult r = train_run(cfg, TrainRunOptions{a->out, a->stop_after, a->restart});
            // 0: finished, or stopped where --stop-after asked; 3: stopped by a signal (a checkpoint was written).
            return r.finished || (a->stop_after >= 0 && r.steps_done >= a->stop_after) ? 0 : 3;
          }};
}

}  // namespace moesae::cli
