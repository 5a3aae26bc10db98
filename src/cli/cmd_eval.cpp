// `moesae eval RUN.h5 [--data DATA.h5] [--split eval|all] [--lm MODEL] [--set lm.key=value ...] [--json]`
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "data/synthetic.h"
#include "eval/loss_recovered.h"
#include "run/config.h"
#include "run/train_run.h"

namespace moesae::cli {

void add_record_data_options(CLI::App* sub, std::string& record, std::string& data, std::string& split) {
  sub->add_option("record", record, "run record (RUN.h5)")->required()->check(CLI::ExistingFile);
  sub->add_option("--data", data, "activation file (default: the run's own data.path)");
  sub->add_option("--split", split, "eval: the held-out split; all: every row")
      ->check(CLI::IsMember({"eval", "all"}))
      ->capture_default_str();
}

Command add_eval(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("eval", "Evaluate a trained SAE (run record) on an activation file");
  struct Args {
    std::string record, data, split = "eval", lm;
    std::vector<std::string> overrides;
    bool json = false, no_lm = false;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  add_record_data_options(sub, a->record, a->data, a->split);
  sub->add_option("--lm", a->lm,
                  "language model to splice the SAE into for Loss Recovered (sets lm.model; the run's own lm: "
                  "section is used when it names one)");
  sub->add_option("--set", a->overrides,
                  "override a value of the run's config for this evaluation, e.g. lm.ood_text=FILE or "
                  "eval.redundancy_threshold=0.8 (repeatable)");
  sub->add_flag("--no-lm", a->no_lm, "skip the language-model evaluation even if the run's config names a model");
  sub->add_flag("--json", a->json, "print the metrics as JSON");
  sub->add_option("--threads", a->threads, "CPU threads (0: all)");
  return {sub, [a]() {
            auto be = make_cpu_backend(a->threads);
            RunConfig cfg;
            auto sae = load_sae_from_record(a->record, *be, &cfg);
            std::vector<std::string> overrides = a->overrides;
            if (!a->lm.empty()) overrides.insert(overrides.begin(), "lm.model=" + a->lm);
            if (!overrides.empty())
              cfg = parse_run_config_text(to_yaml(cfg), overrides, a->record + " /config");
            if (a->no_lm) cfg.lm.model.clear();
            check_lm_eval_files(cfg.lm);
            const EvalData data = open_eval_data(cfg, a->data, a->split == "all");
            const DataConfig& dc = data.config;
            const auto& file = data.file;
            EvalReader reader(file, data.rows);
            std::unique_ptr<Tensor> truth;
            if (has_ground_truth(dc.path)) truth = std::make_unique<Tensor>(read_ground_truth(dc.path));
            const EvalLm loaded_lm = load_eval_lm(cfg.lm);  // once, for the specialization metrics and Loss Recovered
            EvalResult r = evaluate_sae(*sae, reader, cfg.eval, cfg.train.batch_size, truth.get(),
                                        {file.get(), loaded_lm.tokenizer.get()});
            if (cfg.lm.enabled())
              for (const auto& [k, v] : evaluate_lm_for_run(*sae, cfg.lm, loaded_lm, *file)) r.scalars[k] = v;
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
