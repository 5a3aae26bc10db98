// moesae lm: where shared data files (checkpoints, tokenizers, text) are found.
//
// A name such as "stories260K/stories260K.bin" is looked up, in order, in:
//   1. $MOESAE_DATA (a directory), when set;
//   2. <source dir>/../shared/data (the checkout's sibling shared folder), then ./../shared/data;
//   3. $XDG_CACHE_HOME/moesae, or ~/.cache/moesae when XDG_CACHE_HOME is unset.
// Entries are files or directories (a GPT-2 model or tokenizer folder). When nothing matches, one moesae::Error (one
// line) lists every place that was looked at.
#pragma once
#include <string>
#include <vector>

namespace moesae::lm {

// The directories searched, in order (directories that do not exist are still listed).
std::vector<std::string> data_search_dirs();

// The first existing file or directory <dir>/<name> over data_search_dirs(); fails listing every candidate.
std::string find_data_file(const std::string& name);

// `given` itself when it names an existing file or directory, else find_data_file(given).
std::string resolve_data_path(const std::string& given);

}  // namespace moesae::lm
