// Activation extraction (run/lm_extract.h, `moesae lm extract`) on the real stories260K checkpoint: the file's
// shape, token ids, bit-exact rows against a direct forward with a capture hook, attributes, --exclude-bos, bad
// arguments, and a tiny TopK training run on the extracted file. Skipped when the shared data is absent.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.h"
#include "data/activation_file.h"
#include "error_of.h"
#include "lm/data_path.h"
#include "lm/cross_entropy.h"
#include "lm/documents.h"
#include "lm/generate.h"
#include "lm/llama.h"
#include "lm/llama_tokenizer.h"
#include "run/config.h"
#include "run/lm_extract.h"
#include "run/train_run.h"
#include "temp_dir.h"
#include "lm_test_data.h"

using namespace moesae;
using moesae::testing::read_all;
using moesae::testing::error_of;
using moesae::testing::TempDir;

namespace {

constexpr long long kMax = 3000;
constexpr int kCtx = 64;
constexpr int kLayer = 2;

// The expected token stream: the same documents and context cutting, first kMax positions.
struct Expected {
  std::vector<int> ids;      // every position, BOS included
  long long bos_contexts = 0;
  std::vector<int> first_context;
};
Expected expected_tokens(const lm::LlamaTokenizer& tok, const std::vector<std::string>& docs) {
  Expected e;
  for (const auto& doc : docs) {
    const std::vector<int> ids = tok.encode(doc, true, false);
    const int n = static_cast<int>(ids.size());
    for (int start = 0; start + 1 < n && static_cast<long long>(e.ids.size()) < kMax; start += kCtx) {
      const int len = static_cast<int>(std::min<long long>(std::min(kCtx, n - start), kMax - e.ids.size()));
      if (ids[start] == lm::LlamaTokenizer::kBos) ++e.bos_contexts;
      if (e.first_context.empty()) e.first_context.assign(ids.begin() + start, ids.begin() + start + len);
      e.ids.insert(e.ids.end(), ids.begin() + start, ids.begin() + start + len);
    }
    if (static_cast<long long>(e.ids.size()) >= kMax) break;
  }
  return e;
}

std::vector<int> token_ids_of(const ActivationFile& f) {
  Tensor t = host_vector(f.tokens(), DType::I32);
  f.read_token_ids(0, t);
  return std::vector<int>(t.data<int32_t>(), t.data<int32_t>() + f.tokens());
}

}  // namespace

TEST(LmExtract, WritesResidPostRowsTokenIdsAndAttributes) {
  REQUIRE_DATA(f);
  TempDir tmp;
  const lm::LlamaModel m = lm::LlamaModel::load(f.model);
  const lm::LlamaTokenizer tok = lm::LlamaTokenizer::load(f.tokenizer, m.config().vocab_size);
  const auto docs = lm::split_documents(read_all(f.text));

  LmExtractOptions o;
  o.out = tmp.file("acts.h5");
  o.layer = kLayer;
  o.ctx = kCtx;
  o.max_tokens = kMax;
  o.model_name = "stories260K.bin";
  o.tokenizer_name = "tok512.bin";
  o.progress_every = 1000;
  const LmExtractResult r = lm_extract(m, tok, docs, o);
  const Expected e = expected_tokens(tok, docs);
  ASSERT_EQ(static_cast<long long>(e.ids.size()), kMax);

  ActivationFile af(o.out);
  EXPECT_EQ(af.d(), 64);
  EXPECT_FALSE(af.f16());
  EXPECT_EQ(af.tokens(), kMax);
  EXPECT_EQ(r.rows, kMax);
  EXPECT_EQ(r.positions, kMax);
  ASSERT_TRUE(af.has_token_ids());
  EXPECT_EQ(token_ids_of(af), e.ids);
  EXPECT_EQ(af.meta().model, "stories260K.bin");
  EXPECT_EQ(af.meta().tokenizer, "tok512.bin");
  EXPECT_EQ(af.meta().layer, "2");
  EXPECT_EQ(af.meta().hook, "resid_post");
  EXPECT_EQ(af.file().attr_int("activations", "ctx"), kCtx);
  EXPECT_EQ(af.file().attr_string("activations", "bos"), "bos_included");
  EXPECT_EQ(af.attribute("max_tokens"), std::to_string(kMax));
  EXPECT_EQ(af.attribute("documents"), std::to_string(r.documents));
  // Each row's position in its context: 0, 1, ... restarting at every context.
  ASSERT_TRUE(af.has_positions());
  Tensor pos = host_vector(af.tokens(), DType::I32);
  af.read_positions(0, pos);
  long long zeros = 0;
  for (int64_t i = 0; i < af.tokens(); ++i) {
    const int p = pos.data<int32_t>()[i];
    if (i == 0) EXPECT_EQ(p, 0);
    if (i > 0) EXPECT_TRUE(p == 0 || p == pos.data<int32_t>()[i - 1] + 1) << i;
    EXPECT_LT(p, kCtx);
    zeros += p == 0;
  }
  EXPECT_EQ(zeros, r.contexts);

  // The first context's rows equal a direct forward with a capture hook, bit for bit.
  std::vector<float> cap;
  lm::ForwardOptions fo;
  fo.hooks.push_back(lm::ResidHook::capture(kLayer, &cap));
  m.forward(e.first_context, fo);
  const int T = static_cast<int>(e.first_context.size());
  ASSERT_EQ(T, kCtx);
  Tensor rows = host_tensor(T, 64);
  af.read_rows(0, rows);
  EXPECT_EQ(std::memcmp(rows.data<float>(), cap.data(), sizeof(float) * T * 64), 0);

  // --exclude-bos drops exactly the position-0 BOS rows.
  o.out = tmp.file("nobos.h5");
  o.exclude_bos = true;
  const LmExtractResult rb = lm_extract(m, tok, docs, o);
  ActivationFile nb(o.out);
  EXPECT_GT(e.bos_contexts, 0);
  EXPECT_EQ(nb.tokens(), kMax - e.bos_contexts);
  EXPECT_EQ(rb.bos_dropped, e.bos_contexts);
  EXPECT_EQ(nb.file().attr_string("activations", "bos"), "bos_excluded");
  std::vector<int> no_bos;
  for (int id : e.ids)
    if (id != lm::LlamaTokenizer::kBos) no_bos.push_back(id);
  EXPECT_EQ(token_ids_of(nb), no_bos);
  // The first row of the BOS-free file is position 1 of the first context.
  Tensor r0 = host_tensor(1, 64);
  nb.read_rows(0, r0);
  EXPECT_EQ(std::memcmp(r0.data<float>(), cap.data() + 64, sizeof(float) * 64), 0);

  // A tiny TopK SAE trains on the extracted file.
  const std::string yaml = "data: {path: '" + tmp.file("acts.h5") +
                           "', eval_tokens: 500}\n"
                           "model: {arch: topk, dict_size: 128, k: 8}\n"
                           "train: {steps: 20, batch_size: 128, log_every: 10, eval_every: 20, threads: 1, seed: 1}\n";
  const RunConfig cfg = parse_run_config_text(yaml, {}, "lm-extract-test");
  const TrainRunResult tr = train_run(cfg, TrainRunOptions{tmp.file("run.h5"), -1, false});
  EXPECT_TRUE(tr.finished);
  EXPECT_TRUE(std::filesystem::exists(tmp.file("run.h5")));
}

TEST(LmExtract, BadArgumentsFailWithOneMessage) {
  REQUIRE_DATA(f);
  TempDir tmp;
  const lm::LlamaModel m = lm::LlamaModel::load(f.model);
  const lm::LlamaTokenizer tok = lm::LlamaTokenizer::load(f.tokenizer, m.config().vocab_size);
  const std::vector<std::string> docs{"Once upon a time there was a cat."};
  LmExtractOptions o;
  o.out = tmp.file("a.h5");
  o.ctx = 16;
  o.layer = 5;
  EXPECT_NE(error_of([&] { lm_extract(m, tok, docs, o); }).find("--layer 5 is out of range"), std::string::npos);
  o.layer = -1;
  EXPECT_NE(error_of([&] { lm_extract(m, tok, docs, o); }).find("out of range"), std::string::npos);
  o.layer = 0;
  o.ctx = 1;
  EXPECT_NE(error_of([&] { lm_extract(m, tok, docs, o); }).find("--ctx 1 must be in [2, 512]"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(o.out));
  o.ctx = 16;
  lm_extract(m, tok, docs, o);
  EXPECT_TRUE(std::filesystem::exists(o.out));
}

TEST(LmExtract, CliWritesTheFileAndRejectsBadArguments) {
  REQUIRE_DATA(f);
  TempDir tmp;
  const std::string out = tmp.file("cli.h5");
  const std::string base = std::string(MOESAE_CLI) + " lm extract --model '" + f.model + "' --tokenizer '" +
                           f.tokenizer + "' --text '" + f.text + "' --ctx 64 --max-tokens 500 ";
  EXPECT_EQ(std::system((base + "--layer 1 --exclude-bos --out '" + out + "' 2>/dev/null").c_str()), 0);
  ActivationFile af(out);
  EXPECT_EQ(af.meta().model, "stories260K.bin");
  EXPECT_EQ(af.meta().layer, "1");
  EXPECT_EQ(af.file().attr_string("activations", "bos"), "bos_excluded");
  EXPECT_LT(af.tokens(), 500);
  EXPECT_NE(std::system((base + "--layer 9 --out '" + tmp.file("x.h5") + "' 2>/dev/null").c_str()), 0);
  EXPECT_NE(std::system((base + "--layer 0 --text /nonexistent.txt --out '" + tmp.file("x.h5") + "' 2>/dev/null")
                            .c_str()),
            0);
  EXPECT_FALSE(std::filesystem::exists(tmp.file("x.h5")));
}
