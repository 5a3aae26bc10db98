// `moesae maxact RUN.h5 [--data ACTS.h5] [--split eval|all] [--top N] [--latents 0,5,10-20] [--before B] [--after A]
//                [--lm MODEL] [--tokenizer TOK] [--no-lm] --out latents.json`
// MaxAct (paper Appendix A.3): each latent's top-N activating rows with their token contexts, as JSON for
// automated-interpretability pipelines. Schema: docs/metrics.md ("MaxAct").
#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "core/log.h"
#include "eval/maxact.h"
#include "eval/specialization.h"
#include "run/config.h"
#include "run/train_run.h"

namespace moesae::cli {
namespace {

// "0,5,10-20" -> {0, 5, 10, ..., 20} (ranges inclusive, order kept); duplicates are refused by the collector.
std::vector<int64_t> parse_latent_list(const std::vector<std::string>& items) {
  std::vector<int64_t> out;
  for (const std::string& item : items) {
    const auto number = [&](const std::string& s) -> int64_t {
      size_t used = 0;
      long long v = -1;
      try {
        v = std::stoll(s, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (s.empty() || used != s.size() || v < 0)
        fail("--latents: '", item, "' is not a latent id or a range a-b of ids");
      return v;
    };
    const size_t dash = item.find('-', 1);
    if (dash == std::string::npos) {
      out.push_back(number(item));
      continue;
    }
    const int64_t a = number(item.substr(0, dash)), b = number(item.substr(dash + 1));
    if (b < a) fail("--latents: range '", item, "' is empty");
    for (int64_t l = a; l <= b; ++l) out.push_back(l);
  }
  return out;
}

}  // namespace

Command add_maxact(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "maxact", "Top-activating rows of each latent with their token contexts (JSON for automated interpretability)");
  struct Args {
    std::string record, data, split = "eval", out, lm, tokenizer;
    std::vector<std::string> latents;
    int64_t top = 20, before = 8, after = 4, batch = 0, max_tokens = 0;
    bool no_lm = false;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  add_record_data_options(sub, a->record, a->data, a->split);
  sub->add_option("--top", a->top, "activating rows kept per latent")->capture_default_str();
  sub->add_option("--latents", a->latents, "latent ids and ranges, e.g. 0,5,10-20 (default: every latent)")
      ->delimiter(',');
  sub->add_option("--before", a->before, "context tokens shown before the activating token")->capture_default_str();
  sub->add_option("--after", a->after, "context tokens shown after it")->capture_default_str();
  sub->add_option("--lm", a->lm, "language model whose tokenizer decodes the contexts (default: the run's lm.model)");
  sub->add_option("--tokenizer", a->tokenizer, "tokenizer file (default: the run's lm.tokenizer, else the model's)");
  sub->add_flag("--no-lm", a->no_lm, "no tokenizer: contexts as token ids only");
  sub->add_option("--max-tokens", a->max_tokens, "scan at most this many rows of the split (0: all)");
  sub->add_option("--batch", a->batch, "rows per forward pass (0: train.batch_size)");
  sub->add_option("--threads", a->threads, "CPU threads (0: all)");
  sub->add_option("--out", a->out, "output JSON file")->required();
  return {sub, [a]() {
            if (a->top < 1) fail("--top must be at least 1 (got ", a->top, ")");
            if (a->before < 0 || a->after < 0) fail("--before and --after must be >= 0");
            auto be = make_cpu_backend(a->threads);
            RunConfig cfg;
            auto sae = load_sae_from_record(a->record, *be, &cfg);
            const ModelConfig& mc = sae->config();
            MaxActCollector collector(mc.dict_size, a->top, parse_latent_list(a->latents));
            const EvalData data = open_eval_data(cfg, a->data, a->split == "all");
            const DataConfig& dc = data.config;
            const auto& file = data.file;
            const RowRange rows = data.rows;
            // The tokenizer, only when there are token ids to decode.
            std::unique_ptr<lm::Tokenizer> tok;
            LmEvalConfig lmc = cfg.lm;
            if (!a->lm.empty()) lmc.model = a->lm;
            if (!a->tokenizer.empty()) lmc.tokenizer = a->tokenizer;
            if (a->no_lm) lmc.model.clear();
            if (file->has_token_ids() && lmc.enabled()) tok = load_eval_tokenizer(lmc);
            if (file->has_token_ids() && !tok)
              spdlog::warn("no language model given (--lm or the run's lm.model): contexts are token ids only");

            EvalReader reader(file, rows);
            const int64_t budget = a->max_tokens > 0 ? std::min(a->max_tokens, rows.size()) : rows.size();
            const int64_t batch = a->batch > 0 ? a->batch : cfg.train.batch_size;
            Tensor host = host_tensor(std::min(batch, budget), mc.d);
            int64_t seen = 0;
            Timer timer;
            while (seen < budget) {
              const int64_t n = std::min(reader.next(host), budget - seen);
              if (n <= 0) break;
              sae->forward(be->from_host(host.row_range(0, n)), false);
              collector.add(be->to_host(sae->code().ids).row_range(0, n), be->to_host(sae->code().vals).row_range(0, n),
                            rows.begin + seen);
              seen += n;
            }
            nlohmann::json doc = {
                {"format", "moesae-maxact"},
                {"format_version", 1},
                {"record", a->record},
                {"data", dc.path},
                {"dataset", dc.dataset},
                {"split", a->split},
                {"rows", {rows.begin, rows.begin + seen}},
                {"arch", to_string(mc.arch)},
                {"dict_size", mc.dict_size},
                {"experts", mc.experts},
                {"latents_per_expert", mc.latents_per_expert()},
                {"k", mc.k},
                {"top", a->top},
                {"context_before", a->before},
                {"context_after", a->after},
                {"activation", "z: the latent's unweighted activation in the sparse code (router weight not applied)"},
                {"tokenizer", tok ? nlohmann::json(lmc.tokenizer.empty() ? "default of " + lmc.model : lmc.tokenizer)
                                  : nlohmann::json(nullptr)},
            };
            doc["latents"] = maxact_latents_json(collector, *file, tok.get(), {a->before, a->after},
                                                 mc.latents_per_expert());
            // Pieces may split a UTF-8 character (byte-fallback tokens): invalid bytes become U+FFFD.
            const std::string text = doc.dump(1, ' ', false, nlohmann::json::error_handler_t::replace);
            const std::string tmp = a->out + ".tmp";
            {
              std::ofstream os(tmp, std::ios::binary | std::ios::trunc);
              if (!os) fail("cannot write '", a->out, "'");
              os << text << '\n';
              if (!os.flush()) fail("cannot write '", a->out, "'");
            }
            std::filesystem::rename(tmp, a->out);
            spdlog::info("wrote {}: top {} rows of {} latents over {} rows ({:.1f} s)", a->out, a->top,
                         collector.latents().size(), seen, timer.seconds());
            return 0;
          }};
}

}  // namespace moesae::cli
