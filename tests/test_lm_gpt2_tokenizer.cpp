// The GPT-2 byte-level BPE tokenizer: every expectation of tests/fixtures/gpt2/tokenizer_expected.json (made with
// Hugging Face's GPT2Tokenizer and checked there against OpenAI's encoder.py algorithm) on the official vocabulary
// in shared/data/gpt2-tokenizer, round trips, the pre-tokenizer, <|endoftext|>, a small hand-made vocabulary, and
// bad files. Tests that need the shared data skip when it is absent.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "error_of.h"
#include "lm/data_path.h"
#include "lm/documents.h"
#include "lm/gpt2_tokenizer.h"
#include "lm_test_data.h"
#include "temp_dir.h"

using namespace moesae;
using namespace moesae::lm;
using moesae::testing::error_of;
using moesae::testing::read_all;
using moesae::testing::TempDir;
namespace fs = std::filesystem;

namespace {

const std::string kExpected = std::string(MOESAE_SOURCE_DIR) + "/tests/fixtures/gpt2/tokenizer_expected.json";

// The official GPT-2 tokenizer directory, or "" when the shared data is not on this machine.
std::string tokenizer_dir() {
  try {
    return fs::path(find_data_file("gpt2-tokenizer/vocab.json")).parent_path().string();
  } catch (const Error&) {
    return "";
  }
}

#define REQUIRE_GPT2_TOKENIZER(dir)              \
  const std::string dir = tokenizer_dir();       \
  if (dir.empty()) GTEST_SKIP() << "shared data (gpt2-tokenizer/vocab.json, merges.txt) not found"

// One loaded official tokenizer for the whole file (loading parses 1 MB of JSON and 50,000 merges).
const Gpt2Tokenizer& official(const std::string& dir) {
  static const Gpt2Tokenizer tok = Gpt2Tokenizer::load(dir);
  return tok;
}

const nlohmann::json& expected() {
  static const nlohmann::json j = nlohmann::json::parse(read_all(kExpected));
  return j;
}

// encoder.py's byte alphabet: the code point that spells byte b in vocab.json / merges.txt, as UTF-8.
std::string spell(unsigned char b) {
  const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
  uint32_t cp = b;
  if (!printable) {
    cp = 256;
    for (unsigned c = 0; c < b; ++c)
      if (!((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE))) ++cp;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}
std::string spell(const std::string& bytes) {
  std::string s;
  for (unsigned char b : bytes) s += spell(b);
  return s;
}

// A small byte-level BPE: the 256 bytes (ids 0..255), merged tokens from `merges` (ids 256..), then <|endoftext|>.
void write_small_tokenizer(const fs::path& dir, const std::vector<std::pair<std::string, std::string>>& merges,
                           const std::string& merges_header = "#version: 0.2\n") {
  fs::create_directories(dir);
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[spell(static_cast<unsigned char>(b))] = b;
  std::string mtext = merges_header;
  int id = 256;
  for (const auto& [a, b] : merges) {
    const std::string ab = spell(a + b);
    if (!vocab.contains(ab)) vocab[ab] = id++;
    mtext += spell(a) + " " + spell(b) + "\n";
  }
  vocab["<|endoftext|>"] = id;
  std::ofstream(dir / "vocab.json") << vocab.dump();
  std::ofstream(dir / "merges.txt") << mtext;
}

}  // namespace

TEST(LmGpt2Tokenizer, LoadsTheOfficialVocabulary) {
  REQUIRE_GPT2_TOKENIZER(dir);
  const Gpt2Tokenizer& t = official(dir);
  EXPECT_EQ(t.vocab_size(), 50257);
  EXPECT_EQ(t.bos_id(), 50256);
  EXPECT_EQ(t.eot_id(), 50256);
  EXPECT_EQ(t.merge_count(), 50000);
  EXPECT_EQ(t.token_bytes(50256), "<|endoftext|>");
  EXPECT_EQ(t.token_bytes(220), " ");  // "Ġ"
  EXPECT_EQ(t.token_bytes(198), "\n");  // "Ċ"
  // Loading by vocab.json (merges.txt beside it) gives the same tokenizer.
  const Gpt2Tokenizer by_file = Gpt2Tokenizer::load(dir + "/vocab.json");
  EXPECT_EQ(by_file.encode("Hello world, it's 2024!"), t.encode("Hello world, it's 2024!"));
  EXPECT_EQ(expected()["vocab_size"].get<int>(), t.vocab_size());
  EXPECT_EQ(expected()["endoftext"].get<int>(), t.eot_id());
}

TEST(LmGpt2Tokenizer, MatchesHuggingFaceOnEveryCase) {
  REQUIRE_GPT2_TOKENIZER(dir);
  const Gpt2Tokenizer& t = official(dir);
  int n = 0;
  for (const auto& c : expected()["cases"]) {
    const std::string text = c["text"].get<std::string>();
    const std::vector<int> ids = c["ids"].get<std::vector<int>>();
    EXPECT_EQ(t.encode(text, false), ids) << "text: '" << text << "'";
    std::vector<int> with_bos = {50256};
    with_bos.insert(with_bos.end(), ids.begin(), ids.end());
    EXPECT_EQ(t.encode(text, true), with_bos) << "text: '" << text << "'";
    EXPECT_EQ(t.decode(ids), text);
    ++n;
  }
  EXPECT_GE(n, 30);
}

TEST(LmGpt2Tokenizer, MatchesHuggingFaceOnTinyStoriesAndPubMedQA) {
  REQUIRE_GPT2_TOKENIZER(dir);
  std::string stories, pubmed;
  try {
    stories = find_data_file("text/tinystories_val.txt");
    pubmed = find_data_file("text/pubmedqa_pqal.json");
  } catch (const Error&) {
    GTEST_SKIP() << "shared data (text/) not found";
  }
  const Gpt2Tokenizer& t = official(dir);
  auto check = [&](const std::vector<std::string>& docs, const nlohmann::json& exp, const char* what) {
    ASSERT_GE(docs.size(), exp.size());
    for (const auto& e : exp) {
      const size_t i = e["index"].get<size_t>();
      ASSERT_EQ(docs[i].size(), e["n_bytes"].get<size_t>()) << what << " document " << i << " is not the same text";
      const std::vector<int> ids = t.encode(docs[i], false);
      EXPECT_EQ(ids, e["ids"].get<std::vector<int>>()) << what << " document " << i;
      EXPECT_EQ(t.decode(ids), docs[i]);
    }
  };
  check(split_documents(read_all(stories)), expected()["tinystories"]["docs"], "TinyStories");
  check(pubmedqa_documents(read_all(pubmed), pubmed), expected()["pubmedqa"]["docs"], "PubMedQA");
  EXPECT_EQ(expected()["tinystories"]["docs"].size(), 20u);
}

TEST(LmGpt2Tokenizer, PreTokenizer) {
  using V = std::vector<std::string>;
  EXPECT_EQ(Gpt2Tokenizer::pretokenize("Hello  world"), (V{"Hello", " ", " world"}));
  EXPECT_EQ(Gpt2Tokenizer::pretokenize("I'm they'll"), (V{"I", "'m", " they", "'ll"}));
  EXPECT_EQ(Gpt2Tokenizer::pretokenize(" 123abc"), (V{" 123", "abc"}));
  EXPECT_EQ(Gpt2Tokenizer::pretokenize("a\n\nb"), (V{"a", "\n", "\n", "b"}));
  EXPECT_EQ(Gpt2Tokenizer::pretokenize("x   "), (V{"x", "   "}));
  EXPECT_EQ(Gpt2Tokenizer::pretokenize("  \t y"), (V{"  \t", " y"}));
  EXPECT_EQ(Gpt2Tokenizer::pretokenize("'sa 've"), (V{"'s", "a", " '", "ve"}));
  EXPECT_EQ(Gpt2Tokenizer::pretokenize("ab!!! ?"), (V{"ab", "!!!", " ?"}));
  EXPECT_EQ(Gpt2Tokenizer::pretokenize("café 日本語 ٣٤"), (V{"café", " 日本語", " ٣٤"}));
  EXPECT_EQ(Gpt2Tokenizer::pretokenize("a\xc2\xa0\xc2\xa0" "b"), (V{"a", "\xc2\xa0", "\xc2\xa0", "b"}));  // NBSP is \s
  EXPECT_TRUE(Gpt2Tokenizer::pretokenize("").empty());
  // Pre-tokens always concatenate to the input, valid UTF-8 or not.
  std::mt19937 rng(7);
  const std::string alphabet[] = {"a", "Z", "7", " ", "  ", "\t", "\n", "'", "'s", "!", "é", "日", "🤗", "\xff",
                                  "\xc3", "\xe2\x82", "\xa0", "\xc2\xa0", "١", "<|endoftext|>"};
  for (int k = 0; k < 500; ++k) {
    std::string s;
    const int len = static_cast<int>(rng() % 20);
    for (int i = 0; i < len; ++i) s += alphabet[rng() % std::size(alphabet)];
    std::string joined;
    for (const auto& p : Gpt2Tokenizer::pretokenize(s)) {
      EXPECT_FALSE(p.empty());
      joined += p;
    }
    ASSERT_EQ(joined, s);
  }
}

TEST(LmGpt2Tokenizer, RoundTripsAnyBytes) {
  REQUIRE_GPT2_TOKENIZER(dir);
  const Gpt2Tokenizer& t = official(dir);
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  EXPECT_EQ(t.decode(t.encode(all, false)), all);
  for (int b = 0; b < 256; ++b) {
    const std::string one(1, static_cast<char>(b));
    const std::vector<int> ids = t.encode(one, false);
    ASSERT_EQ(ids.size(), 1u) << "byte " << b;
    EXPECT_EQ(t.token_bytes(ids[0]), one);
  }
  std::mt19937 rng(11);
  for (int k = 0; k < 200; ++k) {
    std::string s(rng() % 64, '\0');
    for (char& c : s) c = static_cast<char>(rng() % 4 == 0 ? rng() % 256 : ' ' + rng() % 95);
    EXPECT_EQ(t.decode(t.encode(s, false)), s);
  }
  const std::string text = "Once upon a time, there was a little girl named Lily. 🤗\n\n\"Don't!\" she said.";
  EXPECT_EQ(t.decode(t.encode(text, false)), text);
  EXPECT_EQ(t.decode(t.encode(text, true)), "<|endoftext|>" + text);
}

TEST(LmGpt2Tokenizer, EndOfTextIsTheSpecialToken) {
  REQUIRE_GPT2_TOKENIZER(dir);
  const Gpt2Tokenizer& t = official(dir);
  EXPECT_EQ(t.encode("<|endoftext|>", false), (std::vector<int>{50256}));
  EXPECT_EQ(t.encode("", true), (std::vector<int>{50256}));
  EXPECT_TRUE(t.encode("", false).empty());
  const std::vector<int> a = t.encode("Hi<|endoftext|><|endoftext|> there", false);
  std::vector<int> b = t.encode("Hi", false);
  b.push_back(50256);
  b.push_back(50256);
  for (int id : t.encode(" there", false)) b.push_back(id);
  EXPECT_EQ(a, b);
  // Without special tokens the marker is ordinary text (several tokens, never 50256).
  const std::vector<int> plain = t.encode_ordinary("<|endoftext|>");
  EXPECT_GT(plain.size(), 1u);
  for (int id : plain) EXPECT_NE(id, 50256);
  EXPECT_EQ(t.decode(plain), "<|endoftext|>");
  EXPECT_EQ(t.decode_piece(-1, 50256), "<|endoftext|>");
  EXPECT_NE(error_of([&] { t.decode_piece(-1, 50257); }).find("token id 50257 out of range [0, 50257)"),
            std::string::npos);
  EXPECT_NE(error_of([&] { t.token_bytes(-1); }).find("out of range"), std::string::npos);
}

TEST(LmGpt2Tokenizer, ConcurrentEncodingIsConsistent) {
  REQUIRE_GPT2_TOKENIZER(dir);
  const Gpt2Tokenizer t = Gpt2Tokenizer::load(dir);  // a fresh, empty word cache
  std::vector<std::string> texts;
  for (const auto& c : expected()["cases"]) texts.push_back(c["text"].get<std::string>());
  std::vector<std::vector<int>> r1(texts.size()), r2(texts.size());
  std::thread a([&] {
    for (size_t i = 0; i < texts.size(); ++i) r1[i] = t.encode(texts[i]);
  });
  std::thread b([&] {
    for (size_t i = texts.size(); i-- > 0;) r2[i] = t.encode(texts[i]);
  });
  a.join();
  b.join();
  EXPECT_EQ(r1, r2);
}

TEST(LmGpt2Tokenizer, SmallHandMadeVocabulary) {
  TempDir tmp;
  // Ranks: "l l" < "h e" < "he ll" < "hell o" < "o Ġ"... the lowest rank merges first, every occurrence.
  write_small_tokenizer(tmp.path() / "tok", {{"l", "l"}, {"h", "e"}, {"he", "ll"}, {"hell", "o"}, {" ", "w"}});
  const Gpt2Tokenizer t = Gpt2Tokenizer::load(tmp.file("tok"));
  EXPECT_EQ(t.vocab_size(), 256 + 5 + 1);
  EXPECT_EQ(t.merge_count(), 5);
  EXPECT_EQ(t.bos_id(), 261);
  const int ll = t.lookup("ll"), he = t.lookup("he"), hello = t.lookup("hello"), sw = t.lookup(" w");
  ASSERT_TRUE(ll >= 256 && he >= 256 && hello >= 256 && sw >= 256);
  EXPECT_EQ(t.encode("hello", false), (std::vector<int>{hello}));
  EXPECT_EQ(t.encode("hello hello", false), (std::vector<int>{hello, ' ', hello}));
  EXPECT_EQ(t.encode("llll", false), (std::vector<int>{ll, ll}));
  EXPECT_EQ(t.encode("lll", false), (std::vector<int>{ll, 'l'}));  // left to right, no overlap
  EXPECT_EQ(t.encode("hew world", false), (std::vector<int>{he, 'w', sw, 'o', 'r', 'l', 'd'}));
  EXPECT_EQ(t.encode("hello<|endoftext|>", true), (std::vector<int>{261, hello, 261}));
  // merges.txt without the "#version" header line reads the same.
  write_small_tokenizer(tmp.path() / "nohdr", {{"l", "l"}, {"h", "e"}, {"he", "ll"}, {"hell", "o"}, {" ", "w"}}, "");
  EXPECT_EQ(Gpt2Tokenizer::load(tmp.file("nohdr")).encode("hello hello"), t.encode("hello hello"));
}

TEST(LmGpt2Tokenizer, BadFilesFailWithOneClearMessage) {
  TempDir tmp;
  auto has = [](const std::string& msg, const std::string& what) {
    EXPECT_NE(msg.find(what), std::string::npos) << "message: " << msg << "\nexpected to contain: " << what;
  };
  has(error_of([&] { Gpt2Tokenizer::load(tmp.file("nothing")); }), "no such file or directory");

  const fs::path d = tmp.path() / "t";
  write_small_tokenizer(d, {{"a", "b"}});
  fs::remove(d / "merges.txt");
  std::string msg = error_of([&] { Gpt2Tokenizer::load(d.string()); });
  has(msg, (d / "merges.txt").string());
  has(msg, "no such file");
  fs::remove(d / "vocab.json");
  has(error_of([&] { Gpt2Tokenizer::load(d.string()); }), (d / "vocab.json").string());

  auto with_vocab = [&](const std::string& vocab_json) {
    write_small_tokenizer(d, {{"a", "b"}});
    std::ofstream(d / "vocab.json") << vocab_json;
    return error_of([&] { Gpt2Tokenizer::load(d.string()); });
  };
  has(with_vocab("{not json"), "not valid JSON");
  has(with_vocab("[1, 2]"), "not a JSON object");
  has(with_vocab(R"({"a": 0, "b": "1"})"), "the id of token 'b' is not an integer");
  has(with_vocab(R"({"a": 0, "b": 5})"), "token 'b' has id 5, outside [0, 2)");
  has(with_vocab(R"({"a": 0, "b": 0})"), "id 0 is used twice");
  has(with_vocab(R"({"a": 0, " ": 1})"), "outside GPT-2's byte alphabet");  // a raw space is spelled "Ġ"
  has(with_vocab(R"({"a": 0, "b": 1})"), "no token for byte 0");

  auto with_merges = [&](const std::string& merges) {
    write_small_tokenizer(d, {{"a", "b"}});
    std::ofstream(d / "merges.txt") << merges;
    return error_of([&] { Gpt2Tokenizer::load(d.string()); });
  };
  has(with_merges("#version: 0.2\na b\nab\n"), "line 3 is not two tokens separated by one space");
  has(with_merges("a b c\n"), "line 1 is not two tokens");
  has(with_merges("a c\n"), "merges tokens that are not in");  // "ac" is not in the vocabulary
  has(with_merges("#version: 0.2\n"), "no merges");

  // No <|endoftext|>.
  write_small_tokenizer(d, {{"a", "b"}});
  nlohmann::json v = nlohmann::json::parse(read_all((d / "vocab.json").string()));
  v.erase("<|endoftext|>");
  std::ofstream(d / "vocab.json") << v.dump();
  has(error_of([&] { Gpt2Tokenizer::load(d.string()); }), "no <|endoftext|> token");
}

TEST(LmGpt2Tokenizer, EncodingThroughput) {
  // Not a check: how fast the official tokenizer encodes TinyStories here.
  REQUIRE_GPT2_TOKENIZER(dir);
  std::string stories;
  try {
    stories = find_data_file("text/tinystories_val.txt");
  } catch (const Error&) {
    GTEST_SKIP() << "shared data (text/) not found";
  }
  const Gpt2Tokenizer t = Gpt2Tokenizer::load(dir);
  const std::string text = read_all(stories).substr(0, 200000);
  const auto t0 = std::chrono::steady_clock::now();
  const size_t n = t.encode(text, false).size();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "gpt2 tokenizer: " << text.size() / s / 1e6 << " MB/s, " << n / s << " tokens/s (cold cache)\n";
  EXPECT_GT(n, text.size() / 8);
}
