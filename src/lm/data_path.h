// moesae lm: where shared data files (checkpoints, tokenizers, text) are found.
//
// A name such as "stories260K/stories260K.bin" is looked up, in order, in:
//   1. $MOESAE_DATA (a directory), when set;
//   2. <source dir>/../shared/data (the checkout's sibling shared folder), then ./../shared/data;
//   3. $XDG_CACHE_HOME/moesae, or ~/.cache/moesae when XDG_CACHE_HOME is unset.
// When nothing matches, one moesae::Error lists every place that was looked at.
#pragma once
#include <string>
#include <vector>

namespace moesae::lm {

// The directories searched, in order (directories that do not exist are still listed).
std::vector<std::string> data_search_dirs();

// The first existing regular file <dir>/<name> over data_search_dirs(); fails listing every candidate.
std::string find_data_file(const std::string& name);

// `given` itself when it names an existing file, else find_data_file(given).
std::string resolve_data_path(const std::string& given);

}  // namespace moesae::lm
