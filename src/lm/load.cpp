#include "lm/load.h"

#include <filesystem>

#include "core/error.h"
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
  fail("model '", path, "': GPT-2 models are not supported by this build");
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path, const LanguageModel& model) {
  if (model.shape().arch == "llama")
    return std::make_unique<LlamaTokenizer>(LlamaTokenizer::load(path, model.shape().vocab_size));
  fail("tokenizer '", path, "': no tokenizer for architecture '", model.shape().arch, "'");
}

std::string default_tokenizer(const LanguageModel& model) {
  return model.shape().arch == "gpt2" ? "gpt2-tokenizer" : "stories260K/tok512.bin";
}

}  // namespace moesae::lm
