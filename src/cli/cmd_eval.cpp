// `moesae eval RUN.h5 --data DATA.h5 [--split eval|all] [--json]`
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "data/synthetic.h"
#include "run/train_run.h"

namespace moesae::cli {

Command add_eval(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("eval", "Evaluate a trained SAE (run record) on an activation file");
  struct Args {
    std::string record, data, split = "eval";
    bool json = false;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("record", a->record, "run record (RUN.h5)")->required()->check(CLI::ExistingFile);
  sub->add_option("--data", a->data, "activation file (default: the run's own data.path)");
  sub->add_option("--split", a->split, "eval: the held-out split; all: every row")
      ->check(CLI::IsMember({"eval", "all"}))
      ->capture_default_str();
  sub->add_flag("--json", a->json, "print the metrics as JSON");
  sub->add_option("--threads", a->threads, "CPU threads (0: all)");
  return {sub, [a]() {
            auto be = make_cpu_backend(a->threads);
            RunConfig cfg;
            auto sae = load_sae_from_record(a->record, *be, &cfg);
            DataConfig dc = cfg.data;
            if (!a->data.empty()) dc.path = a->data;
            if (a->split == "all") {
              dc.eval_tokens = 0;
              dc.eval_fraction = 1.0;
            }
            auto file = std::make_shared<const ActivationFile>(dc.path, dc.dataset);
            file->expect_d(cfg.model.d, "the SAE");
            DataSplit split = a->split == "all" ? DataSplit{{0, 0}, {0, file->tokens()}} : split_rows(dc, file->tokens(), dc.path);
            EvalReader reader(file, split.eval);
            std::unique_ptr<Tensor> truth;
            if (has_ground_truth(dc.path)) truth = std::make_unique<Tensor>(read_ground_truth(dc.path));
            EvalResult r = evaluate_sae(*sae, reader, cfg.eval, cfg.train.batch_size, truth.get());
            if (a->json) {
              nlohmann::json j = r.scalars;
              for (auto& [k, v] : r.vectors) j[k] = v;
              std::printf("%s\n", j.dump(2).c_str());
            } else {
              std::printf("%s on %s (%s split, %.0f tokens)\n", a->record.c_str(), dc.path.c_str(), a->split.c_str(),
                          r.scalars["eval_tokens"]);
              for (auto& [k, v] : r.scalars) std::printf("  %-28s %.6g\n", k.c_str(), v);
            }
            return 0;
          }};
}

}  // namespace moesae::cli
