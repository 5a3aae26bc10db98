// `moesae collect EXPERIMENT.yaml --out GRID.h5 [--only ID ...] [--set key=value ...]`
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "run/collect.h"

namespace moesae::cli {

Command add_collect(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "collect", "Merge the finished records of an experiment or grid file into one HDF5 file with a run table");
  struct Args {
    std::string file, out;
    std::vector<std::string> only, overrides;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("experiment", a->file, "experiment or grid file (YAML)")->required();
  sub->add_option("-o,--out", a->out, "the HDF5 file to write (atomically)")->required();
  sub->add_option("--only", a->only, "collect only these runs (ids; repeatable)");
  sub->add_option("--set", a->overrides, "override a config value in every run: section.key=value");
  return {sub, [a]() {
            Experiment e = load_experiment(a->file, a->overrides);
            const CollectSummary s = collect_experiment(e, a->out, a->only);
            std::printf("collected %d of %d runs into %s\n", s.collected, s.runs, a->out.c_str());
            if (!s.missing.empty()) {
              std::string list;
              for (const auto& [id, why] : s.missing) list += (list.empty() ? "" : ", ") + id + " (" + why + ")";
              std::printf("missing: %s\n", list.c_str());
            }
            return 0;
          }};
}

}  // namespace moesae::cli
