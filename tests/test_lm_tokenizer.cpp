// The llama2.c tokenizer (tok512 of stories260K): round trips, byte fallback, BOS handling, bad files.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iterator>

#include "error_of.h"
#include "lm/data_path.h"
#include "lm/cross_entropy.h"
#include "lm/documents.h"
#include "lm/generate.h"
#include "lm/llama.h"
#include "lm/llama_tokenizer.h"
#include "temp_dir.h"

using namespace moesae;
using namespace moesae::lm;
using moesae::testing::error_of;
using moesae::testing::TempDir;

namespace {
std::string tokenizer_file() {
  try {
    return find_data_file("stories260K/tok512.bin");
  } catch (const Error&) {
    return "";
  }
}
#define REQUIRE_TOKENIZER(var)                                       \
  const std::string var##_path = tokenizer_file();                         \
  if (var##_path.empty()) GTEST_SKIP() << "tok512.bin not found";    \
  const LlamaTokenizer var = LlamaTokenizer::load(var##_path, 512)
}  // namespace

TEST(LmTokenizer, Loads) {
  REQUIRE_TOKENIZER(tok);
  EXPECT_EQ(tok.vocab_size(), 512);
  EXPECT_EQ(tok.piece(LlamaTokenizer::kByteOffset + 'A'), "<0x41>");
  EXPECT_GE(tok.lookup(" "), 0);
}

TEST(LmTokenizer, RoundTripsTinyStoriesSentences) {
  REQUIRE_TOKENIZER(tok);
  const std::vector<std::string> sentences = {
      "Once upon a time, there was a little girl named Lily.",
      "Spot saw the shiny car and said, \"Wow, Kitty, your car is so bright and clean!\"",
      "They drank the water and felt very happy. They played together all day and became best friends.",
      "Roxy loved to climb. She climbed trees, rocks, and hills.",
      "Tom's mom said, \"Don't be sad.\"\nHe smiled.",
      "  two leading spaces, 3 digits 123 and tabs\tend",
      "x",
  };
  for (const auto& s : sentences) {
    const std::vector<int> ids = tok.encode(s);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids[0], LlamaTokenizer::kBos);
    EXPECT_LE(ids.size(), s.size() + 2);  // never more than BOS + dummy prefix + one token per byte
    EXPECT_EQ(tok.decode(ids), s) << s;
  }
  // Merges shorten real text a lot.
  EXPECT_LT(tok.encode(sentences[2]).size(), sentences[2].size() / 2);
}

TEST(LmTokenizer, ByteFallbackForNonAscii) {
  REQUIRE_TOKENIZER(tok);
  const std::string s = "caf\xc3\xa9 \xe2\x98\x83 na\xc3\xafve";  // café ☃ naïve
  const std::vector<int> ids = tok.encode(s);
  int bytes = 0;
  for (int id : ids)
    if (id >= LlamaTokenizer::kByteOffset && id < LlamaTokenizer::kByteOffset + 256) ++bytes;
  EXPECT_EQ(bytes, 5);  // ☃ (3 bytes) and ï (2) fall back to raw bytes; é is a vocabulary code point
  const int e_acute = tok.lookup("\xc3\xa9");
  ASSERT_GE(e_acute, 0);
  EXPECT_NE(std::find(ids.begin(), ids.end(), e_acute), ids.end());
  EXPECT_EQ(tok.decode(ids), s);
  // The snowman's three bytes appear in order.
  const std::vector<int> snow = {0xE2 + 3, 0x98 + 3, 0x83 + 3};
  EXPECT_NE(std::search(ids.begin(), ids.end(), snow.begin(), snow.end()), ids.end());
  EXPECT_EQ(tok.decode_piece(5, 0xC3 + 3), std::string("\xc3"));
}

TEST(LmTokenizer, BosAndDummyPrefix) {
  REQUIRE_TOKENIZER(tok);
  EXPECT_EQ(tok.encode(""), std::vector<int>{LlamaTokenizer::kBos});
  EXPECT_TRUE(tok.encode("", false).empty());
  const auto with = tok.encode("Lily");
  const auto without = tok.encode("Lily", false);
  ASSERT_EQ(with.size(), without.size() + 1);
  EXPECT_EQ(std::vector<int>(with.begin() + 1, with.end()), without);
  // The dummy prefix: the first word carries its leading space, which only a preceding BOS strips.
  EXPECT_EQ(tok.piece(without[0])[0], ' ');
  EXPECT_EQ(tok.decode(without), " Lily");
  EXPECT_EQ(tok.decode(with), "Lily");
  EXPECT_EQ(tok.decode_piece(LlamaTokenizer::kBos, without[0]), tok.piece(without[0]).substr(1));
  const auto eos = tok.encode("Lily", true, true);
  EXPECT_EQ(eos.back(), LlamaTokenizer::kEos);
}

TEST(LmTokenizer, BadFilesFailWithOneClearMessage) {
  TempDir tmp;
  std::string msg = error_of([&] { LlamaTokenizer::load(tmp.file("none.bin")); });
  EXPECT_NE(msg.find("none.bin"), std::string::npos) << msg;
  const std::string empty = tmp.file("empty.bin");
  std::ofstream(empty, std::ios::binary).close();
  msg = error_of([&] { LlamaTokenizer::load(empty); });
  EXPECT_NE(msg.find(empty), std::string::npos) << msg;
  const std::string p = tokenizer_file();
  if (p.empty()) GTEST_SKIP() << "tok512.bin not found";
  std::ifstream in(p, std::ios::binary);
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string trunc = tmp.file("trunc.bin");
  std::ofstream(trunc, std::ios::binary).write(all.data(), static_cast<std::streamsize>(all.size() - 3));
  msg = error_of([&] { LlamaTokenizer::load(trunc, 512); });
  EXPECT_NE(msg.find(trunc), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  msg = error_of([&] { LlamaTokenizer::load(p, 600); });
  EXPECT_NE(msg.find("needs 600"), std::string::npos) << msg;
}

TEST(LmDocuments, SplitOnBlankLinesOrEndOfText) {
  EXPECT_EQ(split_documents("a b\nc\n\n\nd\n  \ne\n"), (std::vector<std::string>{"a b\nc", "d", "e"}));
  EXPECT_EQ(split_documents("one\n\ntwo<|endoftext|>three\n<|endoftext|>"),
            (std::vector<std::string>{"one\n\ntwo", "three"}));
  EXPECT_TRUE(split_documents("\n\n  \n").empty());
}

TEST(LmDocuments, PubMedQaAbstractsInFileOrder) {
  const std::string json =
      R"({"2": {"QUESTION": "q?", "CONTEXTS": ["First para.", "Second para."], "LONG_ANSWER": "Conclusion."},)"
      R"( "1": {"CONTEXTS": ["Only context."]}, "3": {"CONTEXTS": ["  "], "LONG_ANSWER": ""}})";
  EXPECT_EQ(pubmedqa_documents(json, "t"),
            (std::vector<std::string>{"First para.\nSecond para.\nConclusion.", "Only context."}));
  EXPECT_NE(error_of([] { pubmedqa_documents("{not json", "x.json"); }).find("x.json: not valid JSON"),
            std::string::npos);
  EXPECT_NE(error_of([] { pubmedqa_documents("[1, 2]", "x.json"); }).find("JSON object of items"), std::string::npos);
  EXPECT_NE(error_of([] { pubmedqa_documents(R"({"7": {"QUESTION": "q"}})", "x.json"); })
                .find("item '7' has no CONTEXTS"),
            std::string::npos);

  TempDir tmp;
  EXPECT_NE(error_of([&] { read_documents(tmp.file("none.txt")); }).find("no such file"), std::string::npos);
  std::ofstream(tmp.file("blank.txt")) << "\n\n  \n";
  EXPECT_NE(error_of([&] { read_documents(tmp.file("blank.txt")); }).find("holds no document"), std::string::npos);
  EXPECT_NE(error_of([&] { read_documents(tmp.file("blank.txt"), "csv"); }).find("text format 'csv'"),
            std::string::npos);
  try {
    const auto docs = read_documents(lm::find_data_file("text/pubmedqa_pqal.json"), "pubmedqa");
    EXPECT_EQ(docs.size(), 1000u);  // every item has an abstract
  } catch (const Error&) {
    GTEST_SKIP() << "shared data (PubMedQA) not found";
  }
}
