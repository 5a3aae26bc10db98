// Test helpers shared by the LM tests: the shared data files (found through the data search path; tests skip when
// they are absent) and reading a whole text file.
#pragma once
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>

#include "core/error.h"
#include "lm/data_path.h"

namespace moesae::testing {

struct LmFiles {
  std::string model, tokenizer, text;
};

inline bool find_lm_files(LmFiles& f) {
  try {
    f.model = lm::find_data_file("stories260K/stories260K.bin");
    f.tokenizer = lm::find_data_file("stories260K/tok512.bin");
    f.text = lm::find_data_file("text/tinystories_val.txt");
    return true;
  } catch (const Error&) {
    return false;
  }
}

inline std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace moesae::testing

// Declares `LmFiles f` or skips the test when the shared data is not there.
#define REQUIRE_DATA(f)               \
  ::moesae::testing::LmFiles f;       \
  if (!::moesae::testing::find_lm_files(f)) GTEST_SKIP() << "shared data (stories260K, TinyStories) not found"
