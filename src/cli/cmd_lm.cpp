// `moesae lm generate|loss|extract`: the transformer runtime (llama2.c checkpoints, GPT-2) from the command line.
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "core/error.h"
#include "core/log.h"
#include "lm/data_path.h"
#include "lm/cross_entropy.h"
#include "lm/documents.h"
#include "lm/generate.h"
#include "lm/load.h"
#include "run/lm_extract.h"

namespace moesae::cli {

namespace {

struct LmArgs {
  std::string model = "stories260K/stories260K.bin";
  std::string tokenizer;  // empty: lm::default_tokenizer(model)
  // generate
  std::string prompt;
  int steps = 256;
  float temperature = 0.f;
  // loss
  std::string text = "text/tinystories_val.txt";
  int ctx = 256;
  long long max_tokens = 0;
  // extract
  int layer = -1;
  bool exclude_bos = false;
  std::string format = "txt";
  std::string out;
};

}  // namespace

Command add_lm(CLI::App& app) {
  CLI::App* sub =
      app.add_subcommand("lm", "Run a language model (llama2.c checkpoint or GPT-2 safetensors): generate, loss, extract");
  sub->require_subcommand(1);
  auto a = std::make_shared<LmArgs>();
  const char* model_help =
      "llama2.c checkpoint, or GPT-2 model.safetensors (or its directory); a path, or a name on the data search path "
      "(see docs/lm.md)";
  const char* tok_help =
      "llama2.c tokenizer file, or a GPT-2 tokenizer directory (vocab.json + merges.txt); default: "
      "stories260K/tok512.bin for llama2.c models, gpt2-tokenizer for GPT-2";
  const char* format_help = "text file format: txt (documents split on <|endoftext|> or blank lines) or pubmedqa";

  CLI::App* gen = sub->add_subcommand("generate", "Generate text from a prompt (greedy at temperature 0)");
  gen->add_option("--model", a->model, model_help)->capture_default_str();
  gen->add_option("--tokenizer", a->tokenizer, tok_help);
  gen->add_option("--prompt", a->prompt, "prompt text")->capture_default_str();
  gen->add_option("--steps", a->steps, "positions to run, prompt tokens (BOS first) included; <= 0: seq_len")
      ->capture_default_str();
  gen->add_option("--temperature", a->temperature, "sampling temperature (only 0, greedy, is supported)")
      ->capture_default_str();

  CLI::App* loss = sub->add_subcommand("loss", "Mean next-token cross-entropy of a text file");
  loss->add_option("--model", a->model, model_help)->capture_default_str();
  loss->add_option("--tokenizer", a->tokenizer, tok_help);
  loss->add_option("--text", a->text, "text file")->capture_default_str();
  loss->add_option("--format", a->format, format_help)->capture_default_str();
  loss->add_option("--ctx", a->ctx, "context length in tokens")->capture_default_str();
  loss->add_option("--max-tokens", a->max_tokens, "stop after this many predicted tokens (0: all)")
      ->capture_default_str();

  CLI::App* ext = sub->add_subcommand("extract", "Write residual-stream activations of a text file to HDF5");
  ext->add_option("--model", a->model, model_help)->capture_default_str();
  ext->add_option("--tokenizer", a->tokenizer, tok_help);
  ext->add_option("--text", a->text, "text file")->capture_default_str();
  ext->add_option("--format", a->format, format_help)->capture_default_str();
  ext->add_option("--layer", a->layer, "block whose residual output (resid_post) is captured, 0-based")->required();
  ext->add_option("--ctx", a->ctx, "context length in tokens")->required();
  ext->add_option("--max-tokens", a->max_tokens, "stop after this many positions (BOS included; 0: all)")
      ->capture_default_str();
  ext->add_flag("--exclude-bos", a->exclude_bos, "drop the position-0 BOS rows");
  ext->add_option("--out", a->out, "activation file to write (ACTS.h5)")->required();

  return {sub, [a, gen, loss, ext]() {
            const std::string model_path = lm::resolve_data_path(a->model);
            const std::unique_ptr<lm::LanguageModel> model_ptr = lm::load_language_model(model_path);
            const lm::LanguageModel& model = *model_ptr;
            const std::string tok_path =
                lm::resolve_data_path(a->tokenizer.empty() ? lm::default_tokenizer(model) : a->tokenizer);
            const std::unique_ptr<lm::Tokenizer> tok_ptr = lm::load_tokenizer(tok_path, model);
            const lm::Tokenizer& tok = *tok_ptr;
            if (gen->parsed()) {
              if (a->temperature != 0.f)
                fail("lm generate: --temperature ", a->temperature, " is not supported yet (only 0, greedy)");
              lm::generate_greedy(model, tok, a->prompt, a->steps, [](const std::string& piece) {
                std::fwrite(piece.data(), 1, piece.size(), stdout);
                std::fflush(stdout);
              });
              std::printf("\n");
              return 0;
            }
            if (loss->parsed()) {
              const std::string text_path = lm::resolve_data_path(a->text);
              const auto docs = lm::read_documents(text_path, a->format);
              Timer t;
              const lm::LossResult r = lm::cross_entropy(model, tok, docs, a->ctx, a->max_tokens);
              std::printf("ce %.6f\n", r.mean_ce);
              spdlog::info("{}: {} predicted tokens in {} contexts of <= {} tokens from {} documents ({:.1f}s)",
                           text_path, r.predicted, r.contexts, a->ctx, r.documents, t.seconds());
              return 0;
            }
            if (ext->parsed()) {
              const std::string text_path = lm::resolve_data_path(a->text);
              const auto docs = lm::read_documents(text_path, a->format);
              LmExtractOptions o;
              o.out = a->out;
              o.layer = a->layer;
              o.ctx = a->ctx;
              o.max_tokens = a->max_tokens;
              o.exclude_bos = a->exclude_bos;
              o.model_name = std::filesystem::path(model_path).filename().string();
              o.tokenizer_name = std::filesystem::path(tok_path).filename().string();
              Timer t;
              const LmExtractResult r = lm_extract(model, tok, docs, o);
              spdlog::info("{}: {} rows x {} (layer {} resid_post, {}) from {} contexts of <= {} tokens, {} documents "
                           "({:.1f}s)",
                           a->out, r.rows, model.shape().dim, a->layer,
                           a->exclude_bos ? "bos_excluded" : "bos_included", r.contexts, a->ctx, r.documents,
                           t.seconds());
              return 0;
            }
            return 2;
          }};
}

}  // namespace moesae::cli
