// moesae eval: evaluation settings (the `eval:` section of a run config).
#pragma once
#include <cstdint>
#include <string>

namespace moesae {

struct EvalConfig {
  double redundancy_threshold = 0.9;  // a latent is redundant if its max decoder cosine to another is > this (§3.8.4)
  double recovered_threshold = 0.9;   // a true feature is recovered if its best learned cosine is > this
  int64_t max_tokens = 0;             // held-out tokens per evaluation (0: the whole held-out split)
  int64_t batch_size = 0;             // tokens per evaluation batch (0: train.batch_size)
  int64_t inter_expert_seed = 0;      // seed of the random latent groups of inter_expert_redundancy (§3.3.1)
  int64_t overlap_tokens = 20000;     // evaluated tokens whose pairwise overlaps k_ij are histogrammed (0: all)
};

// Language-model evaluation (the `lm:` section of a run config): the SAE spliced into the LM it was trained on, for
// Loss Recovered and Delta CE (paper Appendix A.2) in-domain and out-of-domain, and reconstruction on the
// out-of-domain text's activations. Off while `model` is empty.
struct LmEvalConfig {
  std::string model;            // llama2.c checkpoint or GPT-2 safetensors (data search path); empty: no LM eval
  std::string tokenizer;        // empty: the model's default (lm::default_tokenizer)
  int layer = -1;               // block whose resid_post the SAE replaces; -1: the activation file's `layer`
  int ctx = 256;                // context length in tokens
  int64_t max_tokens = 20000;   // predicted tokens per text (0: the whole text)
  std::string text = "text/tinystories_val.txt";  // in-domain text
  std::string text_format = "txt";
  // In-domain documents skipped first, so the SAE is judged on text it was not trained on. -1: the `documents`
  // attribute of the activation file when it was extracted from this same text (else 0).
  int64_t skip_documents = -1;
  std::string ood_text;  // out-of-domain text; empty: none
  std::string ood_format = "txt";
  bool enabled() const { return !model.empty(); }
};

}  // namespace moesae
