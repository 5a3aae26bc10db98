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
#include "lm/llama_tokenizer.h"

namespace moesae::lm {

ResidHook ResidHook::capture(int layer, std::vector<float>* out) {
  ResidHook h;
  h.layer = layer;
  h.kind = Kind::Capture;
  h.out = out;
  return h;
}
ResidHook ResidHook::rewrite(int layer, std::function<void(float*, int, int)> fn) {
  ResidHook h;
  h.layer = layer;
  h.kind = Kind::Replace;
  h.replace = std::move(fn);
  return h;
}
ResidHook ResidHook::zero(int layer) {
  ResidHook h;
  h.layer = layer;
  h.kind = Kind::Zero;
  return h;
}

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

void rope(float* v, int T, int width, int head_size, const std::vector<float>& tab) {
  const int half = head_size / 2;
  for (int t = 0; t < T; ++t) {
    float* r = v + static_cast<size_t>(t) * width;
    const float* cs = tab.data() + static_cast<size_t>(t) * half * 2;
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

std::vector<float> LlamaModel::forward(const std::vector<int>& tokens, const ForwardOptions& opt) const {
  const LlamaConfig& c = cfg_;
  const int T = static_cast<int>(tokens.size());
  if (T <= 0) fail("llama forward: empty context");
  if (T > c.seq_len) fail("llama forward: context of ", T, " tokens exceeds the model's seq_len ", c.seq_len);
  for (int t : tokens)
    if (t < 0 || t >= c.vocab_size) fail("llama forward: token id ", t, " out of range [0, ", c.vocab_size, ")");
  int last_layer = c.n_layers - 1;
  for (const auto& h : opt.hooks) {
    if (h.layer < 0 || h.layer >= c.n_layers)
      fail("llama hook: layer ", h.layer, " out of range [0, ", c.n_layers, ")");
    if (h.kind == ResidHook::Kind::Capture && !h.out) fail("llama hook: capture at layer ", h.layer, " has no output");
    if (h.kind == ResidHook::Kind::Replace && !h.replace)
      fail("llama hook: replace at layer ", h.layer, " has no function");
  }
  if (opt.logits == ForwardOptions::Logits::None) {
    last_layer = -1;
    for (const auto& h : opt.hooks) last_layer = std::max(last_layer, h.layer);
    if (last_layer < 0) return {};
  }

  const int d = c.dim, hd = c.hidden_dim, kv = c.kv_dim(), hs = c.head_size(), V = c.vocab_size;
  const size_t Td = static_cast<size_t>(T) * d;
  std::vector<float> x(Td), xb(Td), ob(Td), q(Td), k(static_cast<size_t>(T) * kv), v(static_cast<size_t>(T) * kv);
  std::vector<float> att(static_cast<size_t>(T) * T), h1(static_cast<size_t>(T) * hd), h3(static_cast<size_t>(T) * hd);
  for (int t = 0; t < T; ++t)
    std::memcpy(&x[static_cast<size_t>(t) * d], &w_[emb_ + static_cast<size_t>(tokens[t]) * d], d * sizeof(float));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int group = c.n_heads / c.n_kv_heads;
  const std::vector<float> rot = rope_table(T, hs);

  for (int l = 0; l <= last_layer; ++l) {
    const size_t L = static_cast<size_t>(l);
    // attention
    rmsnorm(xb.data(), x.data(), &w_[rms_att_ + L * d], T, d);
    linear(q.data(), xb.data(), &w_[wq_ + L * d * d], T, d, d);
    linear(k.data(), xb.data(), &w_[wk_ + L * kv * d], T, d, kv);
    linear(v.data(), xb.data(), &w_[wv_ + L * kv * d], T, d, kv);
    rope(q.data(), T, d, hs, rot);
    rope(k.data(), T, kv, hs, rot);
    for (int h = 0; h < c.n_heads; ++h) {
      const int kh = h / group;
      // att[T, T] = scale * Q_h K_h^T
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q.data() + h * hs, d,
                  k.data() + kh * hs, kv, 0.f, att.data(), T);
      for (int t = 0; t < T; ++t) {
        float* a = att.data() + static_cast<size_t>(t) * T;
        float mx = a[0];
        for (int s = 1; s <= t; ++s) mx = std::max(mx, a[s]);
        float sum = 0.f;
        for (int s = 0; s <= t; ++s) {
          a[s] = std::exp(a[s] - mx);
          sum += a[s];
        }
        const float inv = 1.f / sum;
        for (int s = 0; s <= t; ++s) a[s] *= inv;
        for (int s = t + 1; s < T; ++s) a[s] = 0.f;
      }
      // ob[:, head h] = att V_h
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.f, att.data(), T, v.data() + kh * hs, kv,
                  0.f, ob.data() + h * hs, d);
    }
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
    // hooks on resid_post of block l, in the order given
    for (const auto& hook : opt.hooks) {
      if (hook.layer != l) continue;
      switch (hook.kind) {
        case ResidHook::Kind::Capture: hook.out->assign(x.begin(), x.end()); break;
        case ResidHook::Kind::Replace: hook.replace(x.data(), T, d); break;
        case ResidHook::Kind::Zero: std::fill(x.begin(), x.end(), 0.f); break;
      }
    }
  }
  if (opt.logits == ForwardOptions::Logits::None) return {};

  const int first = opt.logits == ForwardOptions::Logits::Last ? T - 1 : 0;
  const int rows = T - first;
  rmsnorm(xb.data(), x.data() + static_cast<size_t>(first) * d, &w_[rms_final_], rows, d);
  std::vector<float> logits(static_cast<size_t>(rows) * V);
  linear(logits.data(), xb.data(), &w_[cls_], rows, d, V);
  return logits;
}

std::string generate_greedy(const LlamaModel& model, const LlamaTokenizer& tok, const std::string& prompt, int steps,
                            const std::function<void(const std::string&)>& on_piece) {
  const LlamaConfig& c = model.config();
  if (tok.vocab_size() < c.vocab_size)
    fail("tokenizer has ", tok.vocab_size(), " tokens, model '", model.path(), "' needs ", c.vocab_size);
  if (steps <= 0 || steps > c.seq_len) steps = c.seq_len;
  const std::vector<int> prompt_ids = tok.encode(prompt, /*bos=*/true, /*eos=*/false);
  const int n_prompt = static_cast<int>(prompt_ids.size());
  std::vector<int> seq{prompt_ids[0]};
  ForwardOptions opt;
  opt.logits = ForwardOptions::Logits::Last;
  std::string text;
  int token = prompt_ids[0];
  for (int pos = 0; pos < steps; ++pos) {
    int next;
    if (pos < n_prompt - 1) {
      next = prompt_ids[pos + 1];
    } else {
      const std::vector<float> logits = model.forward(seq, opt);
      next = 0;
      for (int i = 1; i < c.vocab_size; ++i)
        if (logits[i] > logits[next]) next = i;  // first maximum
    }
    if (next == LlamaTokenizer::kBos) break;
    const std::string piece = tok.decode_piece(token, next);
    // Like llama2.c, a piece that is one unprintable byte (other than whitespace) is not printed.
    const bool printable = !(piece.size() == 1 && !std::isprint(static_cast<unsigned char>(piece[0])) &&
                             !std::isspace(static_cast<unsigned char>(piece[0])));
    if (printable && !piece.empty()) {
      text += piece;
      if (on_piece) on_piece(piece);
    }
    token = next;
    seq.push_back(next);
  }
  return text;
}

std::vector<std::string> split_documents(const std::string& text) {
  std::vector<std::string> parts;
  const std::string marker = "<|endoftext|>";
  if (text.find(marker) != std::string::npos) {
    size_t at = 0;
    for (;;) {
      const size_t e = text.find(marker, at);
      parts.push_back(text.substr(at, e == std::string::npos ? std::string::npos : e - at));
      if (e == std::string::npos) break;
      at = e + marker.size();
    }
  } else {
    // Blank-line separated: a line holding only whitespace ends the current document.
    std::string cur;
    size_t at = 0;
    while (at <= text.size()) {
      size_t e = text.find('\n', at);
      if (e == std::string::npos) e = text.size();
      const std::string line = text.substr(at, e - at);
      const bool blank = line.find_first_not_of(" \t\r") == std::string::npos;
      if (blank) {
        parts.push_back(cur);
        cur.clear();
      } else {
        if (!cur.empty()) cur += '\n';
        cur += line;
      }
      at = e + 1;
    }
    parts.push_back(cur);
  }
  std::vector<std::string> docs;
  for (auto& p : parts) {
    const size_t b = p.find_first_not_of(" \t\r\n");
    if (b == std::string::npos) continue;
    const size_t e = p.find_last_not_of(" \t\r\n");
    docs.push_back(p.substr(b, e - b + 1));
  }
  return docs;
}

void for_each_context(const LlamaTokenizer& tok, const std::vector<std::string>& documents, int ctx,
                      const std::function<bool(const std::vector<int>&, int, int, size_t)>& fn) {
  if (ctx < 1) fail("context length ", ctx, " must be positive");
  for (size_t d = 0; d < documents.size(); ++d) {
    const std::vector<int> ids = tok.encode(documents[d], /*bos=*/true, /*eos=*/false);
    const int n = static_cast<int>(ids.size());
    for (int start = 0; start + 1 < n; start += ctx)
      if (!fn(ids, start, std::min(ctx, n - start), d)) return;
  }
}

LossResult cross_entropy(const LlamaModel& model, const LlamaTokenizer& tok, const std::vector<std::string>& documents,
                         int ctx, long long max_predicted, const ForwardOptions& opt_in) {
  const LlamaConfig& c = model.config();
  if (ctx < 2 || ctx > c.seq_len) fail("cross-entropy: --ctx ", ctx, " must be in [2, ", c.seq_len, "] (seq_len)");
  if (tok.vocab_size() < c.vocab_size)
    fail("tokenizer has ", tok.vocab_size(), " tokens, model '", model.path(), "' needs ", c.vocab_size);
  ForwardOptions opt = opt_in;
  opt.logits = ForwardOptions::Logits::All;
  LossResult r;
  double sum = 0;
  const int V = c.vocab_size;
  for_each_context(tok, documents, ctx, [&](const std::vector<int>& ids, int start, int len, size_t) {
    const int n = static_cast<int>(ids.size());
    if (start == 0) ++r.documents;
    const std::vector<int> window(ids.begin() + start, ids.begin() + start + len);
    const std::vector<float> logits = model.forward(window, opt);
    ++r.contexts;
    for (int j = 0; j < len && start + j + 1 < n; ++j) {
      if (max_predicted > 0 && r.predicted >= max_predicted) break;
      const float* row = logits.data() + static_cast<size_t>(j) * V;
      double mx = row[0];
      for (int i = 1; i < V; ++i) mx = std::max(mx, static_cast<double>(row[i]));
      double se = 0;
      for (int i = 0; i < V; ++i) se += std::exp(static_cast<double>(row[i]) - mx);
      sum += (mx + std::log(se)) - static_cast<double>(row[ids[start + j + 1]]);
      ++r.predicted;
    }
    return !(max_predicted > 0 && r.predicted >= max_predicted);
  });
  if (r.predicted == 0) fail("cross-entropy: no token to predict (no document has two tokens or more)");
  r.mean_ce = sum / static_cast<double>(r.predicted);
  return r;
}

}  // namespace moesae::lm
