#include "lm/load.h"

#include <filesystem>

#include "core/error.h"
#include "lm/gpt2.h"
#include "lm/gpt2_tokenizer.h"
#include "lm/llama.h"
#include "lm/llama_tokenizer.h"

namespace moesae::lm {

std::string model_arch(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) return "gpt2";
  if (fs::path(path).extension() == ".safetensors") return "gpt2";
  return "llama";
}

std::unique_ptr<LanguageModel> load_language_model(const std::string& path) {
  const std::string arch = model_arch(path);
  if (arch == "llama") return std::make_unique<LlamaModel>(LlamaModel::load(path));
  return std::make_unique<Gpt2Model>(Gpt2Model::load(path));
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path, const LanguageModel& model) {
  if (model.shape().arch == "llama")
    return std::make_unique<LlamaTokenizer>(LlamaTokenizer::load(path, model.shape().vocab_size));
  if (model.shape().arch == "gpt2") {
    auto tok = std::make_unique<Gpt2Tokenizer>(Gpt2Tokenizer::load(path));
    // Every id the tokenizer produces must be a row of the model's embedding (a model may pad its vocabulary).
    if (tok->vocab_size() > model.shape().vocab_size)
      fail("tokenizer '", path, "' has ", tok->vocab_size(), " tokens but model '", model.path(), "' only ",
           model.shape().vocab_size, ": tokenizer and model do not match");
    return tok;
  }
  fail("tokenizer '", path, "': no tokenizer for architecture '", model.shape().arch, "'");
}

std::string default_tokenizer(const std::string& arch) {
  return arch == "gpt2" ? "gpt2-tokenizer" : "stories260K/tok512.bin";
}

std::string default_tokenizer(const LanguageModel& model) { return default_tokenizer(model.shape().arch); }

}  // namespace moesae::lm
