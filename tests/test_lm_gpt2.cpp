// The GPT-2 runtime on a tiny random-weight GPT2LMHeadModel saved by Hugging Face transformers
// (tests/fixtures/gpt2/make_fixture.py): logits and every block's resid_post against transformers (float64), the
// KV-cached step() against the batched forward, greedy generation against HF generate(), hooks, loading by
// directory / file / without the "transformer." prefix / with n_head from metadata, F16 and BF16 weights, and bad
// files (one clear error each).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "error_of.h"
#include "lm/data_path.h"
#include "lm/gpt2.h"
#include "lm/load.h"
#include "lm_test_data.h"
#include "temp_dir.h"

using namespace moesae;
using namespace moesae::lm;
using moesae::testing::error_of;
using moesae::testing::read_all;
using moesae::testing::TempDir;
namespace fs = std::filesystem;

namespace {

const std::string kFixtures = std::string(MOESAE_SOURCE_DIR) + "/tests/fixtures/gpt2";
const std::string kTinyDir = kFixtures + "/tiny";
const std::string kTinyFile = kTinyDir + "/model.safetensors";

constexpr int kV = 512, kD = 32, kL = 2, kCtx = 64;

// The expectations written by make_fixture.py.
struct Expected {
  std::vector<int> tokens[2];
  std::vector<float> logits[2];  // [T, V]
  std::vector<float> resid[2];   // [L, T, d]
  std::vector<int> prompt, generated;
};

std::vector<int> ints(const safetensors::Entry& e) {
  const int32_t* p = e.tensor.data<int32_t>();
  return std::vector<int>(p, p + e.tensor.numel());
}
std::vector<float> floats(const safetensors::Entry& e) {
  const float* p = e.tensor.data<float>();
  return std::vector<float>(p, p + e.tensor.numel());
}

const Expected& expected() {
  static const Expected ex = [] {
    const auto m = safetensors::read(kFixtures + "/tiny_expected.safetensors");
    Expected e;
    for (int c = 0; c < 2; ++c) {
      const std::string s = std::to_string(c);
      e.tokens[c] = ints(m.at("tokens." + s));
      e.logits[c] = floats(m.at("logits." + s));
      e.resid[c] = floats(m.at("resid." + s));
    }
    e.prompt = ints(m.at("generate.prompt"));
    e.generated = ints(m.at("generate.tokens"));
    return e;
  }();
  return ex;
}

float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0.f;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

int argmax(const std::vector<float>& v) {
  int best = 0;
  for (int i = 1; i < static_cast<int>(v.size()); ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

// The tiny fixture's tensors, to write modified copies.
std::vector<safetensors::Entry> tiny_entries() {
  std::vector<safetensors::Entry> out;
  for (auto& [name, e] : safetensors::read(kTinyFile)) out.push_back(e);
  return out;
}

// A model directory in `tmp` with these tensors (and, when `config`, the fixture's config.json).
std::string write_model(const TempDir& tmp, const std::string& name, const std::vector<safetensors::Entry>& entries,
                        bool config, const std::map<std::string, std::string>& metadata = {}) {
  const fs::path dir = tmp.path() / name;
  fs::create_directories(dir);
  safetensors::write((dir / "model.safetensors").string(), entries, metadata);
  if (config) fs::copy_file(kTinyDir + "/config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  return dir.string();
}

// Writes a safetensors file with raw stored bytes per tensor (any dtype), as other writers would.
struct RawTensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};
void write_raw(const std::string& path, const std::vector<RawTensor>& ts) {
  nlohmann::json h = nlohmann::json::object();
  uint64_t off = 0;
  for (const auto& t : ts) {
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.bytes.size()}}};
    off += t.bytes.size();
  }
  std::string text = h.dump();
  while (text.size() % 8) text += ' ';
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = text.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << text;
  for (const auto& t : ts) out << t.bytes;
}

// float -> bfloat16 bits, rounding to nearest even.
uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace

TEST(LmGpt2, LoadsTheTinyFixtureByDirectoryAndByFile) {
  EXPECT_EQ(model_arch(kTinyDir), "gpt2");
  EXPECT_EQ(model_arch(kTinyFile), "gpt2");
  for (const std::string& p : {kTinyDir, kTinyFile}) {
    const auto m = load_language_model(p);
    const LmShape& s = m->shape();
    EXPECT_EQ(s.arch, "gpt2");
    EXPECT_EQ(s.dim, kD);
    EXPECT_EQ(s.n_layers, kL);
    EXPECT_EQ(s.vocab_size, kV);
    EXPECT_EQ(s.seq_len, kCtx);
    EXPECT_EQ(m->path(), kTinyFile);
    const auto* g = dynamic_cast<const Gpt2Model*>(m.get());
    ASSERT_NE(g, nullptr);
    EXPECT_EQ(g->config().n_head, 4);
    EXPECT_EQ(g->config().n_head_from, "config.json");
    EXPECT_EQ(g->config().n_inner, 4 * kD);
    EXPECT_TRUE(g->config().gelu_tanh);
    EXPECT_FLOAT_EQ(g->config().layer_norm_eps, 1e-5f);
    EXPECT_EQ(default_tokenizer(*m), "gpt2-tokenizer");
  }
}

TEST(LmGpt2, LogitsAndEveryBlocksResidualMatchTransformers) {
  const Expected& ex = expected();
  const Gpt2Model m = Gpt2Model::load(kTinyDir);
  for (int c = 0; c < 2; ++c) {
    const std::vector<int>& toks = ex.tokens[c];
    const size_t T = toks.size();
    std::vector<float> resid[kL];
    ForwardOptions opt;
    for (int l = 0; l < kL; ++l) opt.hooks.push_back(ResidHook::capture(l, &resid[l]));
    const std::vector<float> logits = m.forward(toks, opt);
    ASSERT_EQ(logits.size(), T * kV);
    ASSERT_EQ(ex.logits[c].size(), T * kV);
    const float err = max_abs_diff(logits.data(), ex.logits[c].data(), logits.size());
    EXPECT_LT(err, 1e-4f) << "context " << c << " (" << T << " tokens): max |logit - transformers|";
    for (int l = 0; l < kL; ++l) {
      ASSERT_EQ(resid[l].size(), T * kD);
      const float rerr = max_abs_diff(resid[l].data(), ex.resid[c].data() + l * T * kD, T * kD);
      EXPECT_LT(rerr, 1e-4f) << "context " << c << " block " << l << " resid_post";
    }
    std::cout << "context " << c << " (" << T << " tokens): max |logit err| " << err << "\n";
  }
}

TEST(LmGpt2, LastRowLogitsAndEarlyStop) {
  const Expected& ex = expected();
  const Gpt2Model m = Gpt2Model::load(kTinyFile);
  const std::vector<int>& toks = ex.tokens[0];
  const int T = static_cast<int>(toks.size());
  const std::vector<float> all = m.forward(toks);
  ForwardOptions last;
  last.logits = ForwardOptions::Logits::Last;
  const std::vector<float> ll = m.forward(toks, last);
  ASSERT_EQ(ll.size(), static_cast<size_t>(kV));
  EXPECT_LT(max_abs_diff(ll.data(), all.data() + static_cast<size_t>(T - 1) * kV, kV), 1e-5f);

  // Logits::None stops after the deepest hooked block; the captured residual equals the full pass's.
  std::vector<float> r_full, r_early;
  ForwardOptions full;
  full.hooks.push_back(ResidHook::capture(0, &r_full));
  m.forward(toks, full);
  ForwardOptions early;
  early.hooks.push_back(ResidHook::capture(0, &r_early));
  early.logits = ForwardOptions::Logits::None;
  EXPECT_TRUE(m.forward(toks, early).empty());
  EXPECT_EQ(r_early, r_full);
  ForwardOptions nothing;
  nothing.logits = ForwardOptions::Logits::None;
  EXPECT_TRUE(m.forward(toks, nothing).empty());

  // Causality: the first 10 positions' residuals do not depend on the later tokens.
  std::vector<float> r10;
  ForwardOptions cap10;
  cap10.hooks.push_back(ResidHook::capture(1, &r10));
  cap10.logits = ForwardOptions::Logits::None;
  m.forward(std::vector<int>(toks.begin(), toks.begin() + 10), cap10);
  ASSERT_EQ(r10.size(), 10u * kD);
  for (size_t i = 0; i < r10.size(); ++i) ASSERT_NEAR(r10[i], ex.resid[0][static_cast<size_t>(T) * kD + i], 1e-4f);
}

TEST(LmGpt2, KvCachedStepsEqualTheBatchedForward) {
  const Expected& ex = expected();
  const Gpt2Model m = Gpt2Model::load(kTinyDir);
  const std::vector<int>& toks = ex.tokens[1];  // the full 64-position context
  ASSERT_EQ(static_cast<int>(toks.size()), kCtx);
  const std::vector<float> all = m.forward(toks);
  auto st = m.start();
  float worst = 0.f;
  for (int t = 0; t < kCtx; ++t) {
    const std::vector<float> l = m.step(*st, toks[t]);
    ASSERT_EQ(l.size(), static_cast<size_t>(kV));
    worst = std::max(worst, max_abs_diff(l.data(), all.data() + static_cast<size_t>(t) * kV, kV));
    EXPECT_LT(max_abs_diff(l.data(), ex.logits[1].data() + static_cast<size_t>(t) * kV, kV), 1e-4f) << "position " << t;
  }
  EXPECT_LT(worst, 1e-5f) << "step() vs the batched forward";
  EXPECT_EQ(st->tokens, toks);
  const std::string msg = error_of([&] { m.step(*st, 1); });
  EXPECT_NE(msg.find("past the model's seq_len 64"), std::string::npos) << msg;

  struct Foreign : DecodeState {};
  Foreign f;
  EXPECT_NE(error_of([&] { m.step(f, 1); }).find("not made by this model"), std::string::npos);
}

TEST(LmGpt2, GreedyGenerationMatchesTransformersGenerate) {
  const Expected& ex = expected();
  const auto m = load_language_model(kTinyDir);
  ASSERT_EQ(ex.generated.size(), static_cast<size_t>(kCtx));
  auto st = m->start();
  std::vector<int> seq = ex.prompt;
  std::vector<float> logits;
  for (int tok : ex.prompt) logits = m->step(*st, tok);
  while (static_cast<int>(seq.size()) < kCtx) {
    const int next = argmax(logits);
    seq.push_back(next);
    if (static_cast<int>(seq.size()) < kCtx) logits = m->step(*st, next);
  }
  EXPECT_EQ(seq, ex.generated);
}

TEST(LmGpt2, Hooks) {
  const Expected& ex = expected();
  const Gpt2Model m = Gpt2Model::load(kTinyDir);
  const std::vector<int>& toks = ex.tokens[0];
  const std::vector<float> base = m.forward(toks);

  ForwardOptions same;
  same.hooks.push_back(ResidHook::rewrite(0, [](float* x, int T, int d) {
    std::vector<float> copy(x, x + static_cast<size_t>(T) * d);
    std::memcpy(x, copy.data(), copy.size() * sizeof(float));
  }));
  EXPECT_EQ(m.forward(toks, same), base);  // bit for bit

  std::vector<float> cap;
  ForwardOptions capture;
  capture.hooks.push_back(ResidHook::capture(1, &cap));
  EXPECT_EQ(m.forward(toks, capture), base);

  ForwardOptions zero;
  zero.hooks.push_back(ResidHook::zero(0));
  const std::vector<float> z = m.forward(toks, zero);
  EXPECT_GT(max_abs_diff(z.data(), base.data(), base.size()), 0.1f);

  // Hooks run in order: a zero at block 1 then a capture at block 1 captures zeros.
  std::vector<float> after_zero;
  ForwardOptions order;
  order.hooks.push_back(ResidHook::zero(1));
  order.hooks.push_back(ResidHook::capture(1, &after_zero));
  m.forward(toks, order);
  ASSERT_EQ(after_zero.size(), toks.size() * kD);
  for (float v : after_zero) ASSERT_EQ(v, 0.f);

  ForwardOptions bad;
  bad.hooks.push_back(ResidHook::zero(2));
  const std::string msg = error_of([&] { m.forward(toks, bad); });
  EXPECT_NE(msg.find("gpt2 hook: layer 2 out of range"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { m.forward(std::vector<int>(65, 1)); }).find("exceeds the model's seq_len 64"),
            std::string::npos);
  EXPECT_NE(error_of([&] { m.forward({1, 512}); }).find("token id 512 out of range"), std::string::npos);
  EXPECT_NE(error_of([&] { m.forward({}); }).find("empty context"), std::string::npos);
}

TEST(LmGpt2, WithoutPrefixAndWithNHeadFromMetadata) {
  const Expected& ex = expected();
  TempDir tmp;
  std::vector<safetensors::Entry> plain;
  for (auto e : tiny_entries()) {
    e.name = e.name.substr(std::string("transformer.").size());
    plain.push_back(e);
  }
  const std::string dir = write_model(tmp, "plain", plain, /*config=*/false, {{"n_head", "4"}, {"format", "pt"}});
  const Gpt2Model m = Gpt2Model::load(dir);
  EXPECT_EQ(m.config().n_head, 4);
  EXPECT_EQ(m.config().n_head_from, "metadata");
  EXPECT_EQ(m.forward(ex.tokens[0]), Gpt2Model::load(kTinyDir).forward(ex.tokens[0]));

  // Buffers of older exports and a tied lm_head are ignored.
  std::vector<safetensors::Entry> extra = tiny_entries();
  extra.push_back({"lm_head.weight", extra.back().tensor, extra.back().shape});  // any tensor: it is not read
  Tensor mask = host_tensor(kCtx, kCtx);
  std::fill(mask.data<float>(), mask.data<float>() + mask.numel(), 1.f);
  extra.push_back({"transformer.h.0.attn.bias", mask, {1, 1, kCtx, kCtx}});
  Tensor mb = host_vector(1);
  mb.data<float>()[0] = -1e4f;
  extra.push_back({"transformer.h.1.attn.masked_bias", mb, {}});
  const std::string dir2 = write_model(tmp, "extra", extra, /*config=*/true);
  EXPECT_EQ(Gpt2Model::load(dir2).forward(ex.tokens[0]), Gpt2Model::load(kTinyDir).forward(ex.tokens[0]));
}

TEST(LmGpt2, HalfPrecisionWeightsAreReadAsF32) {
  // safetensors::read: F16, BF16, F64 -> f32; I64, BOOL -> i32.
  TempDir tmp;
  auto u16 = [](std::initializer_list<uint16_t> v) {
    return std::string(reinterpret_cast<const char*>(std::data(v)), v.size() * 2);
  };
  const std::string f64 = [] {
    const double d[2] = {0.1, -3.5};
    return std::string(reinterpret_cast<const char*>(d), sizeof(d));
  }();
  const std::string i64 = [] {
    const int64_t v[3] = {-7, 0, 50256};
    return std::string(reinterpret_cast<const char*>(v), sizeof(v));
  }();
  write_raw(tmp.file("mixed.safetensors"),
            {{"h", "F16", {2, 3}, u16({0x3C00, 0xC100, 0x7BFF, 0x0001, 0x7C00, 0x8000})},
             {"b", "BF16", {3}, u16({0x3F80, 0xC020, 0x4049})},
             {"d", "F64", {2}, f64},
             {"i", "I64", {3}, i64},
             {"m", "BOOL", {1, 1, 2, 2}, std::string("\x01\x00\x01\x01", 4)}});
  const auto r = safetensors::read(tmp.file("mixed.safetensors"));
  const float* h = r.at("h").tensor.data<float>();
  EXPECT_EQ(r.at("h").tensor.dtype(), DType::F32);
  EXPECT_EQ(r.at("h").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -2.5f);
  EXPECT_EQ(h[2], 65504.0f);
  EXPECT_EQ(h[3], std::ldexp(1.0f, -24));  // the smallest subnormal half
  EXPECT_TRUE(std::isinf(h[4]) && h[4] > 0);
  EXPECT_TRUE(h[5] == 0.f && std::signbit(h[5]));
  const float* b = r.at("b").tensor.data<float>();
  EXPECT_EQ(b[0], 1.0f);
  EXPECT_EQ(b[1], -2.5f);
  EXPECT_EQ(b[2], 3.140625f);
  EXPECT_EQ(r.at("d").tensor.data<float>()[0], 0.1f);
  EXPECT_EQ(r.at("d").tensor.data<float>()[1], -3.5f);
  EXPECT_EQ(r.at("i").tensor.dtype(), DType::I32);
  EXPECT_EQ(ints(r.at("i")), (std::vector<int>{-7, 0, 50256}));
  EXPECT_EQ(ints(r.at("m")), (std::vector<int>{1, 0, 1, 1}));

  // A whole GPT-2 stored in BF16 equals the same weights rounded to bf16 and stored in F32, bit for bit.
  std::vector<RawTensor> raw;
  std::vector<safetensors::Entry> rounded;
  for (const auto& e : tiny_entries()) {
    RawTensor t{e.name, "BF16", e.shape, std::string(static_cast<size_t>(e.tensor.numel()) * 2, '\0')};
    Tensor f = host_tensor(e.tensor.rows(), e.tensor.cols());
    if (e.tensor.rank() == 1) f = host_vector(e.tensor.numel());
    for (int64_t i = 0; i < e.tensor.numel(); ++i) {
      const uint16_t bits = to_bf16(e.tensor.data<float>()[i]);
      std::memcpy(&t.bytes[static_cast<size_t>(i) * 2], &bits, 2);
      f.data<float>()[i] = from_bf16(bits);
    }
    raw.push_back(t);
    rounded.push_back({e.name, f, e.shape});
  }
  fs::create_directories(tmp.path() / "bf16");
  write_raw(tmp.file("bf16/model.safetensors"), raw);
  fs::copy_file(kTinyDir + "/config.json", tmp.path() / "bf16" / "config.json");
  const std::string f32_dir = write_model(tmp, "rounded", rounded, true);
  const std::vector<int>& toks = expected().tokens[0];
  const std::vector<float> a = Gpt2Model::load(tmp.file("bf16")).forward(toks);
  EXPECT_EQ(a, Gpt2Model::load(f32_dir).forward(toks));
  // bf16 weights are close to, not equal to, the f32 model.
  const float err = max_abs_diff(a.data(), expected().logits[0].data(), a.size());
  EXPECT_GT(err, 0.f);
  EXPECT_LT(err, 0.5f);
}

TEST(LmGpt2, BadFilesFailWithOneClearMessage) {
  TempDir tmp;
  auto has = [](const std::string& msg, const std::string& what) {
    EXPECT_NE(msg.find(what), std::string::npos) << "message: " << msg << "\nexpected to contain: " << what;
  };

  // Missing file / directory without weights / sharded checkpoint / not a safetensors file.
  const std::string missing = tmp.file("missing.safetensors");
  std::string msg = error_of([&] { load_language_model(missing); });
  has(msg, missing);
  has(msg, "no such file");
  fs::create_directories(tmp.path() / "empty");
  msg = error_of([&] { load_language_model(tmp.file("empty")); });
  has(msg, "holds no model.safetensors");
  fs::create_directories(tmp.path() / "sharded");
  std::ofstream(tmp.file("sharded/model.safetensors.index.json")) << "{}";
  has(error_of([&] { Gpt2Model::load(tmp.file("sharded")); }), "sharded");
  std::ofstream(tmp.file("junk.safetensors"), std::ios::binary) << std::string(64, '\xff');
  msg = error_of([&] { Gpt2Model::load(tmp.file("junk.safetensors")); });
  has(msg, "junk.safetensors");
  has(msg, "not a safetensors file");
  const std::string whole = read_all(kTinyFile);
  std::ofstream(tmp.file("trunc.safetensors"), std::ios::binary)
      .write(whole.data(), static_cast<std::streamsize>(whole.size() - 1000));
  msg = error_of([&] { Gpt2Model::load(tmp.file("trunc.safetensors")); });
  has(msg, "trunc.safetensors");
  has(msg, "truncated");

  // Missing tensor.
  std::vector<safetensors::Entry> v;
  for (const auto& e : tiny_entries())
    if (e.name != "transformer.h.1.mlp.c_fc.bias") v.push_back(e);
  std::string dir = write_model(tmp, "missing_tensor", v, true);
  msg = error_of([&] { load_language_model(dir); });
  has(msg, dir + "/model.safetensors");
  has(msg, "missing tensor 'transformer.h.1.mlp.c_fc.bias'");

  // Wrong shape: c_attn stored as nn.Linear [out, in] instead of Conv1D [in, out].
  v = tiny_entries();
  for (auto& e : v)
    if (e.name == "transformer.h.0.attn.c_attn.weight") e.shape = {96, 32};
  dir = write_model(tmp, "wrong_shape", v, true);
  msg = error_of([&] { load_language_model(dir); });
  has(msg, "tensor 'transformer.h.0.attn.c_attn.weight' has shape [96, 32], expected [32, 96]");
  has(msg, "transposed");
  v = tiny_entries();
  for (auto& e : v)
    if (e.name == "transformer.h.0.mlp.c_fc.weight") e.shape = {128, 32};
  dir = write_model(tmp, "wrong_shape_fc", v, true);
  msg = error_of([&] { load_language_model(dir); });
  has(msg, "tensor 'transformer.h.0.mlp.c_fc.weight' has shape [128, 32], expected [32, mlp width]");
  has(msg, "transposed");
  v = tiny_entries();
  for (auto& e : v)
    if (e.name == "transformer.h.1.mlp.c_proj.bias") e.shape = {1, 32};
  dir = write_model(tmp, "wrong_rank", v, true);
  has(error_of([&] { load_language_model(dir); }),
      "tensor 'transformer.h.1.mlp.c_proj.bias' has shape [1, 32], expected [32] ([d_model])");

  // wpe shorter than config.json's n_positions.
  v = tiny_entries();
  for (auto& e : v)
    if (e.name == "transformer.wpe.weight") {
      e.tensor = e.tensor.row_range(0, 32);
      e.shape = {32, 32};
    }
  dir = write_model(tmp, "short_wpe", v, true);
  has(error_of([&] { load_language_model(dir); }), "n_positions = 64 but the weights in");

  // Integer dtype.
  v = tiny_entries();
  for (auto& e : v)
    if (e.name == "transformer.ln_f.bias") e.tensor = host_vector(kD, DType::I32);
  dir = write_model(tmp, "int_dtype", v, true);
  has(error_of([&] { load_language_model(dir); }), "tensor 'transformer.ln_f.bias' has dtype I32");

  // Unexpected tensor (a cross-attention model).
  v = tiny_entries();
  v.push_back({"transformer.h.0.crossattention.c_attn.weight", v[0].tensor, v[0].shape});
  dir = write_model(tmp, "unexpected", v, true);
  has(error_of([&] { load_language_model(dir); }), "unexpected tensor 'transformer.h.0.crossattention.c_attn.weight'");

  // No config.json and no metadata: the head count of a d = 32 model is unknown.
  dir = write_model(tmp, "no_config", tiny_entries(), false);
  msg = error_of([&] { load_language_model(dir); });
  has(msg, "number of attention heads is unknown");
  has(msg, "d_model = 32");

  // A config.json that does not fit the weights, or is not JSON.
  dir = write_model(tmp, "bad_heads", tiny_entries(), false);
  std::ofstream(dir + "/config.json") << R"({"model_type": "gpt2", "n_head": 5})";
  has(error_of([&] { load_language_model(dir); }), "d_model = 32 is not a multiple of n_head = 5 (from config.json)");
  std::ofstream(dir + "/config.json") << R"({"n_head": 4, "n_embd": 64})";
  has(error_of([&] { load_language_model(dir); }), "n_embd = 64 but the weights");
  std::ofstream(dir + "/config.json") << R"({"n_head": 4, "activation_function": "relu"})";
  has(error_of([&] { load_language_model(dir); }), "activation_function \"relu\" is not supported");
  std::ofstream(dir + "/config.json") << R"({"model_type": "llama"})";
  has(error_of([&] { load_language_model(dir); }), "model_type is 'llama'");
  std::ofstream(dir + "/config.json") << "{not json";
  has(error_of([&] { load_language_model(dir); }), "config.json': not valid JSON");
}

TEST(LmGpt2, RealTokenizerDoesNotFitTheTinyModel) {
  std::string vocab;
  try {
    vocab = find_data_file("gpt2-tokenizer/vocab.json");
  } catch (const Error&) {
    GTEST_SKIP() << "shared data (gpt2-tokenizer) not found";
  }
  const auto m = load_language_model(kTinyDir);
  const std::string dir = fs::path(vocab).parent_path().string();
  const std::string msg = error_of([&] { load_tokenizer(dir, *m); });
  EXPECT_NE(msg.find("has 50257 tokens but model"), std::string::npos) << msg;
}

TEST(LmGpt2, ForwardThroughput) {
  // Not a check: how fast the tiny model runs here (tokens per second of the batched forward and of step()).
  const Gpt2Model m = Gpt2Model::load(kTinyDir);
  const std::vector<int>& toks = expected().tokens[1];
  const int reps = 200;
  auto t0 = std::chrono::steady_clock::now();
  double sink = 0;
  for (int r = 0; r < reps; ++r) sink += m.forward(toks)[0];
  const double fwd = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < 20; ++r) {
    auto st = m.start();
    for (int tok : toks) sink += m.step(*st, tok)[0];
  }
  const double stp = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "tiny GPT-2 (d 32, 2 layers, vocab 512): batched forward " << reps * toks.size() / fwd
            << " tokens/s (64-token contexts), KV-cached step " << 20 * toks.size() / stp << " tokens/s\n";
  EXPECT_TRUE(std::isfinite(sink));
}
