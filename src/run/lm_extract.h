// moesae run: residual-stream activations of a language model (llama2.c or GPT-2) written to an HDF5 activation file (lm/ + data/).
//   documents -> contexts (lm::for_each_context, the cutting of lm::cross_entropy) -> forward with a capture hook on
//   block `layer`'s resid_post, stopping after that block -> ActivationWriter (f32 rows + token ids), streamed.
#pragma once
#include <string>
#include <vector>

#include "lm/language_model.h"
#include "lm/tokenizer.h"

namespace moesae {

struct LmExtractOptions {
  std::string out;              // activation file (written atomically)
  int layer = 0;                // 0-based block whose residual output is captured
  int ctx = 256;                // context length in tokens, in [2, seq_len]
  long long max_tokens = 0;     // stop after this many positions run through the model (BOS included); 0: all
  bool exclude_bos = false;     // drop the position-0 BOS rows (and their token ids)
  std::string model_name;       // the `model` attribute (e.g. the checkpoint's file name)
  std::string tokenizer_name;   // the `tokenizer` attribute
  long long progress_every = 5000;  // an info line after every this many positions (0: none)
};

struct LmExtractResult {
  long long rows = 0;       // rows written
  long long positions = 0;  // positions run through the model
  long long bos_dropped = 0;
  long long contexts = 0;
  long long documents = 0;
};

// Validates layer and ctx against the model (one error each), then writes the file. Attributes of the dataset:
// model, layer, hook ("resid_post"), tokenizer, ctx (integer), bos ("bos_included" or "bos_excluded").
LmExtractResult lm_extract(const lm::LanguageModel& model, const lm::Tokenizer& tok,
                           const std::vector<std::string>& documents, const LmExtractOptions& options);

}  // namespace moesae
