// The llama2.c runtime on the real stories260K checkpoint: the published greedy golden text, logits and
// cross-entropy against an independent numpy implementation (tests/lm_reference.py), hooks, and bad files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>

#include <nlohmann/json.hpp>

#include "error_of.h"
#include "lm/data_path.h"
#include "lm/cross_entropy.h"
#include "lm/documents.h"
#include "lm/generate.h"
#include "lm/llama.h"
#include "lm/llama_tokenizer.h"
#include "temp_dir.h"
#include "lm_test_data.h"

using namespace moesae;
using moesae::testing::read_all;
using namespace moesae::lm;
using moesae::testing::error_of;
using moesae::testing::TempDir;

namespace {

const char* kGolden =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a "
    "big, red ball. She wanted to play with it, but it was too high.\n"
    "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. She said, \"I want to "
    "play with your ball, but I can't find it.\"\n"
    "Lily was sad and didn't know what to do. She said, \"I'm sorry, Lily. I didn't know what to do.\"\n"
    "Lily didn't want to help her mom, so she";

// The shared data files, or skip when this machine has none.
// Runs a shell command; returns its stdout and exit status.
std::string run_command(const std::string& cmd, int& status) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) {
    status = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  status = ::pclose(p);
  return out;
}

bool python_has_numpy() {
  int st = 0;
  run_command("/usr/bin/python3 -c 'import numpy' 2>/dev/null", st);
  return st == 0;
}

constexpr int kDocs = 12;  // the fixed slice: the first 12 documents of tinystories_val.txt
constexpr int kCtx = 64;

std::vector<std::string> slice(const moesae::testing::LmFiles& f) {
  auto docs = split_documents(read_all(f.text));
  docs.resize(std::min<size_t>(docs.size(), kDocs));
  return docs;
}

}  // namespace

TEST(LmLlama, LoadsStories260KConfig) {
  REQUIRE_DATA(f);
  const LlamaModel m = LlamaModel::load(f.model);
  const LlamaConfig& c = m.config();
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.seq_len, 512);
  EXPECT_TRUE(c.shared_classifier);
}

TEST(LmLlama, GreedyGenerationReproducesTheGoldenText) {
  REQUIRE_DATA(f);
  const LlamaModel m = LlamaModel::load(f.model);
  const LlamaTokenizer tok = LlamaTokenizer::load(f.tokenizer, m.config().vocab_size);
  std::string streamed;
  const std::string text =
      generate_greedy(m, tok, "Once upon a time", 200, [&](const std::string& p) { streamed += p; });
  EXPECT_EQ(text, kGolden);
  EXPECT_EQ(streamed, text);
}

TEST(LmLlama, LogitsAndCrossEntropyMatchNumpyReference) {
  REQUIRE_DATA(f);
  if (!python_has_numpy()) GTEST_SKIP() << "/usr/bin/python3 with numpy not available";
  TempDir tmp;
  const std::string logits_path = tmp.file("logits.f64");
  const std::string cmd = std::string("/usr/bin/python3 ") + MOESAE_SOURCE_DIR + "/tests/lm_reference.py --model '" +
                          f.model + "' --tokenizer '" + f.tokenizer + "' --text '" + f.text + "' --docs " +
                          std::to_string(kDocs) + " --ctx " + std::to_string(kCtx) + " --logits-out '" + logits_path +
                          "'";
  int status = 0;
  const std::string out = run_command(cmd, status);
  ASSERT_EQ(status, 0) << cmd << "\n" << out;
  const auto ref = nlohmann::json::parse(out);

  const LlamaModel m = LlamaModel::load(f.model);
  const LlamaTokenizer tok = LlamaTokenizer::load(f.tokenizer, m.config().vocab_size);
  const auto docs = slice(f);
  ASSERT_EQ(static_cast<int>(docs.size()), kDocs);

  // Tokenization of the first document agrees with the independent Python encoder.
  const std::vector<int> ids = tok.encode(docs[0]);
  EXPECT_EQ(ids, ref["tokens"].get<std::vector<int>>());
  ASSERT_GE(static_cast<int>(ids.size()), kCtx);

  // Logits of the first context.
  const std::vector<int> window(ids.begin(), ids.begin() + kCtx);
  const std::vector<float> logits = m.forward(window);
  const std::string raw = read_all(logits_path);
  ASSERT_EQ(raw.size(), logits.size() * sizeof(double));
  std::vector<double> ref_logits(logits.size());
  std::memcpy(ref_logits.data(), raw.data(), raw.size());
  double max_err = 0;
  for (size_t i = 0; i < logits.size(); ++i) max_err = std::max(max_err, std::fabs(logits[i] - ref_logits[i]));
  EXPECT_LT(max_err, 1e-4) << "max |logit - numpy| over a [" << kCtx << ", 512] context";

  // Mean CE over the whole slice.
  const LossResult r = cross_entropy(m, tok, docs, kCtx);
  EXPECT_EQ(r.predicted, ref["predicted"].get<long long>());
  const double ref_ce = ref["ce"].get<double>();
  EXPECT_NEAR(r.mean_ce, ref_ce, 1e-5 * ref_ce) << "moesae " << r.mean_ce << " numpy " << ref_ce;
  EXPECT_GT(r.contexts, r.documents);  // some documents were cut into more than one context
}

TEST(LmLlama, ResidualHooks) {
  REQUIRE_DATA(f);
  const LlamaModel m = LlamaModel::load(f.model);
  const LlamaTokenizer tok = LlamaTokenizer::load(f.tokenizer, m.config().vocab_size);
  const auto docs = slice(f);
  const LossResult base = cross_entropy(m, tok, docs, kCtx);

  ForwardOptions same;
  same.hooks.push_back(ResidHook::rewrite(2, [](float* x, int T, int d) {
    std::vector<float> copy(x, x + static_cast<size_t>(T) * d);
    std::memcpy(x, copy.data(), copy.size() * sizeof(float));
  }));
  const LossResult unchanged = cross_entropy(m, tok, docs, kCtx, 0, same);
  EXPECT_EQ(unchanged.mean_ce, base.mean_ce);  // bit for bit

  ForwardOptions zero;
  zero.hooks.push_back(ResidHook::zero(2));
  const LossResult zeroed = cross_entropy(m, tok, docs, kCtx, 0, zero);
  EXPECT_GT(zeroed.mean_ce, base.mean_ce + 0.5) << "base " << base.mean_ce << " zeroed " << zeroed.mean_ce;

  // Capture: [T, dim] at layer 2; logits of the plain forward unchanged by a capture; Logits::None stops early.
  const std::vector<int> ids = tok.encode(docs[0]);
  const std::vector<int> window(ids.begin(), ids.begin() + 20);
  std::vector<float> resid, resid2;
  ForwardOptions cap;
  cap.hooks.push_back(ResidHook::capture(2, &resid));
  const auto logits_cap = m.forward(window, cap);
  EXPECT_EQ(resid.size(), 20u * 64u);
  EXPECT_EQ(logits_cap, m.forward(window));
  ForwardOptions only;
  only.hooks.push_back(ResidHook::capture(2, &resid2));
  only.logits = ForwardOptions::Logits::None;
  EXPECT_TRUE(m.forward(window, only).empty());
  EXPECT_EQ(resid2, resid);
  // A causal model: the residual of the first 10 positions does not depend on the later tokens.
  std::vector<float> resid10;
  ForwardOptions cap10;
  cap10.hooks.push_back(ResidHook::capture(2, &resid10));
  cap10.logits = ForwardOptions::Logits::None;
  m.forward(std::vector<int>(window.begin(), window.begin() + 10), cap10);
  for (size_t i = 0; i < resid10.size(); ++i) ASSERT_NEAR(resid10[i], resid[i], 1e-5f);
  // Last-row logits equal the last row of the full logits.
  ForwardOptions last;
  last.logits = ForwardOptions::Logits::Last;
  const auto ll = m.forward(window, last);
  ASSERT_EQ(ll.size(), 512u);
  for (int i = 0; i < 512; ++i) EXPECT_NEAR(ll[i], logits_cap[19 * 512 + i], 1e-5f);
  EXPECT_NE(error_of([&] { m.forward(window, [] {
              ForwardOptions o;
              o.hooks.push_back(ResidHook::zero(5));
              return o;
            }()); }).find("layer 5 out of range"),
            std::string::npos);
}

TEST(LmLlama, BadCheckpointsFailWithOneClearMessage) {
  REQUIRE_DATA(f);
  TempDir tmp;
  const std::string full = read_all(f.model);
  const std::string trunc = tmp.file("trunc.bin");
  std::ofstream(trunc, std::ios::binary).write(full.data(), static_cast<std::streamsize>(full.size() - 100));
  std::string msg = error_of([&] { LlamaModel::load(trunc); });
  EXPECT_NE(msg.find(trunc), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;

  const std::string tiny = tmp.file("tiny.bin");
  std::ofstream(tiny, std::ios::binary).write(full.data(), 10);
  msg = error_of([&] { LlamaModel::load(tiny); });
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;

  const std::string junk = tmp.file("junk.bin");
  std::ofstream(junk, std::ios::binary) << std::string(64, '\xff');
  msg = error_of([&] { LlamaModel::load(junk); });
  EXPECT_NE(msg.find("not a llama2.c checkpoint"), std::string::npos) << msg;

  msg = error_of([&] { LlamaModel::load(tmp.file("missing.bin")); });
  EXPECT_NE(msg.find("missing.bin"), std::string::npos) << msg;

  const LlamaModel m = LlamaModel::load(f.model);
  EXPECT_NE(error_of([&] { m.forward(std::vector<int>(513, 5)); }).find("seq_len"), std::string::npos);
  EXPECT_NE(error_of([&] { m.forward({1, 512}); }).find("out of range"), std::string::npos);
}

TEST(LmDataPath, SearchOrderAndErrorListsEveryPlace) {
  TempDir tmp;
  std::filesystem::create_directories(tmp.path() / "sub");
  std::ofstream(tmp.file("sub/x.bin")) << "x";
  const char* old = std::getenv("MOESAE_DATA");
  const std::string saved = old ? old : "";
  ::setenv("MOESAE_DATA", tmp.path().c_str(), 1);
  EXPECT_EQ(find_data_file("sub/x.bin"), (tmp.path() / "sub/x.bin").string());
  EXPECT_EQ(data_search_dirs().front(), tmp.path().string());
  EXPECT_EQ(resolve_data_path(tmp.file("sub/x.bin")), tmp.file("sub/x.bin"));
  const std::string msg = error_of([] { find_data_file("nope/none.bin"); });
  for (const auto& d : data_search_dirs())
    EXPECT_NE(msg.find((std::filesystem::path(d) / "nope/none.bin").string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("MOESAE_DATA"), std::string::npos);
  if (old)
    ::setenv("MOESAE_DATA", saved.c_str(), 1);
  else
    ::unsetenv("MOESAE_DATA");
  EXPECT_NE(data_search_dirs().size(), 0u);
}
