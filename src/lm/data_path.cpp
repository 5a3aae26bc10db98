// moesae lm: the data search path (see data_path.h).
#include "lm/data_path.h"

#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "core/error.h"

namespace fs = std::filesystem;

namespace moesae::lm {

namespace {
std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}
// A data entry is a regular file, or a directory (a GPT-2 model or tokenizer folder).
bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec) || fs::is_directory(p, ec);
}
}  // namespace

std::vector<std::string> data_search_dirs() {
  std::vector<std::string> dirs;
  if (const std::string d = env("MOESAE_DATA"); !d.empty()) dirs.push_back(d);
#ifdef MOESAE_SOURCE_DIR
  dirs.push_back((fs::path(MOESAE_SOURCE_DIR) / ".." / "shared" / "data").lexically_normal().string());
#endif
  dirs.push_back((fs::path(".") / ".." / "shared" / "data").string());
  if (const std::string x = env("XDG_CACHE_HOME"); !x.empty())
    dirs.push_back((fs::path(x) / "moesae").string());
  else if (const std::string h = env("HOME"); !h.empty())
    dirs.push_back((fs::path(h) / ".cache" / "moesae").string());
  return dirs;
}

std::string find_data_file(const std::string& name) {
  if (name.empty()) fail("data file: empty name");
  if (fs::path(name).is_absolute()) {
    if (is_file(name)) return name;
    fail("data file '", name, "' not found");
  }
  std::ostringstream looked;
  for (const auto& dir : data_search_dirs()) {
    const fs::path p = fs::path(dir) / name;
    if (is_file(p)) return p.string();
    looked << (looked.tellp() > 0 ? ", " : "") << p.string();
  }
  fail("data file '", name, "' not found (looked at ", looked.str(), "; set MOESAE_DATA to the data directory)");
}

std::string resolve_data_path(const std::string& given) {
  if (is_file(given)) return given;
  if (fs::path(given).is_absolute()) fail("file '", given, "' not found");
  return find_data_file(given);
}

}  // namespace moesae::lm
