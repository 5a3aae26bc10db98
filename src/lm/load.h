// moesae lm: opening a language model and its tokenizer by file, whatever the architecture.
#pragma once
#include <memory>
#include <string>

#include "lm/language_model.h"
#include "lm/tokenizer.h"

namespace moesae::lm {

// The architecture a model path holds: "gpt2" for a Hugging Face GPT-2 (`model.safetensors`, or a directory holding
// one), "llama" otherwise (a llama2.c checkpoint).
std::string model_arch(const std::string& path);

// Loads the model at `path` (see model_arch): LlamaModel for "llama", Gpt2Model for "gpt2" (the file, or a directory
// holding model.safetensors and optionally config.json). One error naming the file when it is missing or malformed.
std::unique_ptr<LanguageModel> load_language_model(const std::string& path);

// Loads the tokenizer at `path` for `model`: llama2.c tokenizer file for "llama" models (exactly the model's
// vocabulary size is read); GPT-2 byte-level BPE (a directory holding vocab.json and merges.txt, or that vocab.json)
// for "gpt2", which must not have more tokens than the model.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path, const LanguageModel& model);

// The tokenizer name used when none is given: "stories260K/tok512.bin" for llama2.c models, "gpt2-tokenizer" for
// GPT-2 (both looked up on the data search path).
std::string default_tokenizer(const LanguageModel& model);
// The same by architecture name ("llama" or "gpt2"), e.g. from model_arch(path) before anything is loaded.
std::string default_tokenizer(const std::string& arch);

}  // namespace moesae::lm
