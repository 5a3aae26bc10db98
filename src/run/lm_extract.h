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
  std::string text_name;        // the `text` attribute (the corpus file name)
  long long progress_every = 100000;  // an info line after every this many positions (0: none)
  // (max_tokens is also stored, as the `max_tokens` attribute, so a file can be matched to its settings.)
};

struct LmExtractResult {
  long long rows = 0;       // rows written
  long long positions = 0;  // positions run through the model
  long long bos_dropped = 0;
  long long contexts = 0;
  long long documents = 0;
};

// Validates layer and ctx against the model (one error each), then writes the file. Attributes of the dataset:
// model, layer, hook ("resid_post"), tokenizer, ctx (integer), bos ("bos_included" or "bos_excluded"), text, and
// documents (integer: how many documents of the text the rows come from, the first ones). Beside the activations:
// token_ids and positions (each row's position in its context).
LmExtractResult lm_extract(const lm::LanguageModel& model, const lm::Tokenizer& tok,
                           const std::vector<std::string>& documents, const LmExtractOptions& options);

// An extraction described by names (as in the CLI and the `extract:` block of an experiment): files are resolved on
// the data search path; an empty tokenizer is the model's default.
struct ExtractSpec {
  std::string model = "stories260K/stories260K.bin";
  std::string tokenizer;
  std::string text = "text/tinystories_val.txt";
  std::string format = "txt";  // txt | pubmedqa
  int layer = -1;              // required (>= 0)
  int ctx = 256;
  long long max_tokens = 0;
  bool exclude_bos = false;
};

// Loads model, tokenizer and text, and extracts to `out` (logging where each came from).
LmExtractResult extract_activations(const ExtractSpec& spec, const std::string& out);

// Whether the activation file at `path` was extracted with these settings (its attributes: model, tokenizer, text
// file names, layer, ctx, bos policy, max_tokens). False for files without these attributes.
bool extracted_file_matches(const std::string& path, const ExtractSpec& spec);

}  // namespace moesae
