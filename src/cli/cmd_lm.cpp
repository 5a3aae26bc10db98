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
#include "data/activation_file.h"
#include "eval/loss_recovered.h"
#include "run/lm_extract.h"
#include "run/train_run.h"

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
  std::string sae;          // run record to splice in
  std::string mode;         // splice | zero
  bool keep_pos0 = false;   // splice: position 0 keeps its residual
  // extract (and loss)
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
  loss->add_option("--sae", a->sae, "run record (RUN.h5) whose SAE replaces block --layer's resid_post")
      ->check(CLI::ExistingFile);
  loss->add_option("--layer", a->layer,
                   "block (0-based) for --mode; with --sae, default: the layer of the SAE's activation file");
  loss->add_option("--mode", a->mode,
                   "splice (the SAE's reconstruction; default with --sae) or zero (the residual set to 0); with "
                   "--sae, also prints the clean and zero-ablated CE and Loss Recovered")
      ->check(CLI::IsMember({"splice", "zero"}));
  loss->add_flag("--keep-pos0", a->keep_pos0, "splice at every position but position 0 of each context");

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
            if (loss->parsed()) {  // option combinations, checked before anything is loaded
              if (!a->sae.empty() && a->mode == "zero") fail("lm loss: --mode zero takes no --sae (it zeroes --layer)");
              if (a->sae.empty() && a->mode == "splice") fail("lm loss: --mode splice needs --sae RUN.h5");
              if (a->sae.empty() && a->keep_pos0) fail("lm loss: --keep-pos0 applies to --sae splicing");
              if (a->mode == "zero" && a->layer < 0) fail("lm loss: --mode zero needs --layer");
              if (a->sae.empty() && a->mode.empty() && a->layer >= 0)
                fail("lm loss: --layer needs --sae or --mode zero");
            }
            if (ext->parsed()) {
              ExtractSpec spec;
              spec.model = a->model;
              spec.tokenizer = a->tokenizer;
              spec.text = a->text;
              spec.format = a->format;
              spec.layer = a->layer;
              spec.ctx = a->ctx;
              spec.max_tokens = a->max_tokens;
              spec.exclude_bos = a->exclude_bos;
              extract_activations(spec, a->out);
              return 0;
            }
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
              if (!a->sae.empty()) {
                auto be = make_cpu_backend(0);
                RunConfig rc;
                auto sae = load_sae_from_record(a->sae, *be, &rc);
                SpliceOptions so;
                so.layer = a->layer;
                if (so.layer < 0) {
                  if (!std::filesystem::exists(rc.data.path))
                    fail("lm loss: give --layer (the SAE's activation file '", rc.data.path, "' is not there)");
                  const std::string l = ActivationFile(rc.data.path, rc.data.dataset).meta().layer;
                  if (l.empty()) fail("lm loss: give --layer (the SAE's activation file records no layer)");
                  so.layer = std::stoi(l);
                }
                so.ctx = a->ctx;
                so.max_tokens = a->max_tokens;
                const SpliceResult r = splice_sae(model, tok, docs, *sae, so);
                std::printf("ce %.6f\n", a->keep_pos0 ? r.ce_sae_keep_pos0 : r.ce_sae);
                std::printf("ce_clean %.6f\nce_zero %.6f\nloss_recovered %.6f\nloss_recovered_keep_pos0 %.6f\n"
                            "delta_ce %.6f\nfvu %.6f\nfvu_no_pos0 %.6f\nl0 %.3f\n",
                            r.ce_clean, r.ce_zero, r.loss_recovered, r.loss_recovered_keep_pos0,
                            a->keep_pos0 ? r.delta_ce_keep_pos0 : r.delta_ce, r.fvu, r.fvu_no_pos0, r.l0);
                spdlog::info("{}: {} predicted tokens in {} contexts of <= {} tokens from {} documents, SAE {} at "
                             "layer {} ({:.1f}s)",
                             text_path, r.predicted, r.contexts, a->ctx, r.documents, a->sae, so.layer, t.seconds());
                return 0;
              }
              lm::ForwardOptions fo;
              if (a->mode == "zero") fo.hooks.push_back(lm::ResidHook::zero(a->layer));
              const lm::LossResult r = lm::cross_entropy(model, tok, docs, a->ctx, a->max_tokens, fo);
              std::printf("ce %.6f\n", r.mean_ce);
              spdlog::info("{}: {} predicted tokens in {} contexts of <= {} tokens from {} documents ({:.1f}s)",
                           text_path, r.predicted, r.contexts, a->ctx, r.documents, t.seconds());
              return 0;
            }
            return 2;
          }};
}

}  // namespace moesae::cli
