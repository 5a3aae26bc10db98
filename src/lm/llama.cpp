// moesae lm: llama2.c checkpoint, batched causal forward with sgemm, hooks, greedy generation, cross-entropy.
#include "lm/llama.h"

#include <cblas.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "lm/attention.h"

namespace moesae::lm {

LlamaModel LlamaModel::load(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) fail("checkpoint '", path, "': no such file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("checkpoint '", path, "': cannot open the file");
  in.seekg(0, std::ios::end);
  const auto file_bytes = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  int32_t h[7] = {0, 0, 0, 0, 0, 0, 0};
  if (file_bytes < sizeof(h))
    fail("checkpoint '", path, "': truncated (", file_bytes, " bytes; the llama2.c header alone is 28)");
  in.read(reinterpret_cast<char*>(h), sizeof(h));
  if (static_cast<uint32_t>(h[0]) == 0x616b3432u)
    fail("checkpoint '", path, "': llama2.c versioned export (magic \"ak42\") is not supported; export with the "
         "legacy (version 0) format");
  LlamaConfig c;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.shared_classifier = h[5] > 0;
  c.vocab_size = h[5] < 0 ? -h[5] : h[5];
  c.seq_len = h[6];
  auto bad = [&](const char* why) {
    fail("checkpoint '", path, "': not a llama2.c checkpoint (", why, "; header dim=", h[0], " hidden_dim=", h[1],
         " n_layers=", h[2], " n_heads=", h[3], " n_kv_heads=", h[4], " vocab_size=", h[5], " seq_len=", h[6], ")");
  };
  const int lim = 1 << 20;
  if (c.dim <= 0 || c.hidden_dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 ||
      c.vocab_size <= 0 || c.seq_len <= 0 || c.dim > lim || c.hidden_dim > lim || c.n_layers > 4096 ||
      c.vocab_size > (1 << 24) || c.seq_len > lim)
    bad("a header field is out of range");
  if (c.dim % c.n_heads != 0) bad("dim is not a multiple of n_heads");
  if (c.n_heads % c.n_kv_heads != 0) bad("n_heads is not a multiple of n_kv_heads");
  if (c.head_size() % 2 != 0) bad("head size is odd");

  const uint64_t L = c.n_layers, d = c.dim, hd = c.hidden_dim, kv = c.kv_dim(), V = c.vocab_size;
  const uint64_t hs = c.head_size();
  LlamaModel m;
  m.cfg_ = c;
  m.shape_ = LmShape{"llama", c.dim, c.n_layers, c.vocab_size, c.seq_len};
  m.path_ = path;
  uint64_t n = 0;
  auto take = [&](size_t& off, uint64_t count) {
    off = n;
    n += count;
  };
  take(m.emb_, V * d);
  take(m.rms_att_, L * d);
  take(m.wq_, L * d * d);
  take(m.wk_, L * kv * d);
  take(m.wv_, L * kv * d);
  take(m.wo_, L * d * d);
  take(m.rms_ffn_, L * d);
  take(m.w1_, L * hd * d);
  take(m.w2_, L * d * hd);
  take(m.w3_, L * hd * d);
  take(m.rms_final_, d);
  size_t rope = 0;
  take(rope, static_cast<uint64_t>(c.seq_len) * hs);  // freq_cis real + imag: seq_len * head_size/2 each
  if (c.shared_classifier)
    m.cls_ = m.emb_;
  else
    take(m.cls_, V * d);
  const uint64_t expect = sizeof(h) + n * sizeof(float);
  if (file_bytes != expect)
    fail("checkpoint '", path, "': ", file_bytes < expect ? "truncated" : "has trailing bytes", " (", file_bytes,
         " bytes; dim=", c.dim, " hidden_dim=", c.hidden_dim, " n_layers=", c.n_layers, " n_heads=", c.n_heads,
         " n_kv_heads=", c.n_kv_heads, " vocab_size=", h[5], " seq_len=", c.seq_len, " need ", expect, " bytes)");
  m.w_.resize(n);
  in.read(reinterpret_cast<char*>(m.w_.data()), static_cast<std::streamsize>(n * sizeof(float)));
  if (!in) fail("checkpoint '", path, "': read error");
  return m;
}

namespace {

// out[T, dim] = rmsnorm(x[T, dim]) * w
void rmsnorm(float* out, const float* x, const float* w, int T, int dim) {
#pragma omp parallel for schedule(static) if (T >= 16)
  for (int t = 0; t < T; ++t) {
    const float* xr = x + static_cast<size_t>(t) * dim;
    float* o = out + static_cast<size_t>(t) * dim;
    float ss = 0.f;
    for (int j = 0; j < dim; ++j) ss += xr[j] * xr[j];
    ss = ss / static_cast<float>(dim) + 1e-5f;
    ss = 1.f / std::sqrt(ss);
    for (int j = 0; j < dim; ++j) o[j] = w[j] * (ss * xr[j]);
  }
}

// Y[T, out] = X[T, in] * W[out, in]^T
void linear(float* Y, const float* X, const float* W, int T, int in, int out) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, out, in, 1.f, X, in, W, in, 0.f, Y, out);
}

// RoPE (llama2.c convention): within each head, the pair (2i, 2i+1) is rotated by pos * 10000^(-2i/head_size).
// The table holds cos and sin for each position t < T and pair i < head_size/2: [T, head_size/2, 2].
std::vector<float> rope_table(int T, int head_size) {
  const int half = head_size / 2;
  std::vector<float> tab(static_cast<size_t>(T) * half * 2);
  for (int i = 0; i < half; ++i) {
    const float freq = 1.0f / std::pow(10000.0f, static_cast<float>(2 * i) / static_cast<float>(head_size));
    for (int t = 0; t < T; ++t) {
      const float a = static_cast<float>(t) * freq;
      tab[(static_cast<size_t>(t) * half + i) * 2] = std::cos(a);
      tab[(static_cast<size_t>(t) * half + i) * 2 + 1] = std::sin(a);
    }
  }
  return tab;
}

// Rotates rows v[T, width] that sit at positions pos0 .. pos0 + T - 1 (the table covers them).
void rope(float* v, int T, int pos0, int width, int head_size, const std::vector<float>& tab) {
  const int half = head_size / 2;
  for (int t = 0; t < T; ++t) {
    float* r = v + static_cast<size_t>(t) * width;
    const float* cs = tab.data() + static_cast<size_t>(pos0 + t) * half * 2;
    for (int i = 0; i < width; i += 2) {
      const int p = (i % head_size) / 2;
      const float cr = cs[2 * p], ci = cs[2 * p + 1];
      const float v0 = r[i], v1 = r[i + 1];
      r[i] = v0 * cr - v1 * ci;
      r[i + 1] = v0 * ci + v1 * cr;
    }
  }
}

}  // namespace

std::vector<float> LlamaModel::run(const int* tokens, int T, int pos0, float* kc, float* vc, size_t layer_stride,
                                   const ForwardOptions& opt) const {
  const LlamaConfig& c = cfg_;
  const int last_layer = last_block_to_run(opt.hooks, opt.logits, c.n_layers, "llama");
  if (last_layer < 0) return {};

  const int d = c.dim, hd = c.hidden_dim, kv = c.kv_dim(), hs = c.head_size(), V = c.vocab_size;
  const int S = pos0 + T;  // keys and values visible to the last query
  const size_t Td = static_cast<size_t>(T) * d;
  std::vector<float> x(Td), xb(Td), ob(Td), q(Td);
  std::vector<float> att(static_cast<size_t>(T) * S), h1(static_cast<size_t>(T) * hd), h3(static_cast<size_t>(T) * hd);
  for (int t = 0; t < T; ++t)
    std::memcpy(&x[static_cast<size_t>(t) * d], &w_[emb_ + static_cast<size_t>(tokens[t]) * d], d * sizeof(float));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const std::vector<float> rot = rope_table(S, hs);

  for (int l = 0; l <= last_layer; ++l) {
    const size_t L = static_cast<size_t>(l);
    float* K = kc + L * layer_stride;  // [S, kv]: positions 0 .. S-1
    float* Vv = vc + L * layer_stride;
    float* k_new = K + static_cast<size_t>(pos0) * kv;
    float* v_new = Vv + static_cast<size_t>(pos0) * kv;
    // attention
    rmsnorm(xb.data(), x.data(), &w_[rms_att_ + L * d], T, d);
    linear(q.data(), xb.data(), &w_[wq_ + L * d * d], T, d, d);
    linear(k_new, xb.data(), &w_[wk_ + L * kv * d], T, d, kv);
    linear(v_new, xb.data(), &w_[wv_ + L * kv * d], T, d, kv);
    rope(q.data(), T, pos0, d, hs, rot);
    rope(k_new, T, pos0, kv, hs, rot);
    // ob[:, head h] = causal softmax(scale Q_h K_g^T) V_g, grouped-query (g = h / (n_heads / n_kv_heads))
    causal_attention(q.data(), d, K, Vv, kv, ob.data(), d, T, pos0, c.n_heads, c.n_kv_heads, hs, scale, att.data());
    linear(xb.data(), ob.data(), &w_[wo_ + L * d * d], T, d, d);
    for (size_t i = 0; i < Td; ++i) x[i] += xb[i];
    // SwiGLU feed-forward
    rmsnorm(xb.data(), x.data(), &w_[rms_ffn_ + L * d], T, d);
    linear(h1.data(), xb.data(), &w_[w1_ + L * hd * d], T, d, hd);
    linear(h3.data(), xb.data(), &w_[w3_ + L * hd * d], T, d, hd);
    for (size_t i = 0; i < h1.size(); ++i) {
      const float a = h1[i];
      h1[i] = a * (1.0f / (1.0f + std::exp(-a))) * h3[i];
    }
    linear(xb.data(), h1.data(), &w_[w2_ + L * d * hd], T, hd, d);
    for (size_t i = 0; i < Td; ++i) x[i] += xb[i];
    apply_hooks(opt.hooks, l, x.data(), T, d);  // resid_post of block l
  }
  if (opt.logits == ForwardOptions::Logits::None) return {};

  const int first = opt.logits == ForwardOptions::Logits::Last ? T - 1 : 0;
  const int rows = T - first;
  rmsnorm(xb.data(), x.data() + static_cast<size_t>(first) * d, &w_[rms_final_], rows, d);
  std::vector<float> logits(static_cast<size_t>(rows) * V);
  linear(logits.data(), xb.data(), &w_[cls_], rows, d, V);
  return logits;
}

}  // namespace moesae::lm
