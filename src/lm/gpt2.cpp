// moesae lm: Hugging Face GPT-2 safetensors weights, batched causal forward with sgemm, hooks, KV-cached decoding.
#include "lm/gpt2.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "lm/attention.h"
#include "core/safetensors.h"

namespace moesae::lm {

namespace {

namespace fs = std::filesystem;

std::string shape_text(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ']';
  return os.str();
}

// The safetensors header of `file` (already checked by safetensors::read): each tensor's stored dtype, and the
// `__metadata__` strings.
void read_header(const std::string& file, std::map<std::string, std::string>& dtypes,
                 std::map<std::string, std::string>& metadata) {
  std::ifstream in(file, std::ios::binary);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  if (!in) fail("model '", file, "': cannot read the safetensors header");
  const nlohmann::json h = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!h.is_object()) fail("model '", file, "': bad safetensors header");
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (it->is_object())
        for (auto m = it->begin(); m != it->end(); ++m)
          if (m->is_string()) metadata[m.key()] = m->get<std::string>();
    } else if (it->is_object() && it->contains("dtype") && (*it)["dtype"].is_string()) {
      dtypes[it.key()] = (*it)["dtype"].get<std::string>();
    }
  }
}

// A positive decimal integer without leading zeros (the whole string), or -1.
long parse_positive(const std::string& s) {
  if (s.empty() || s.size() > 9 || s[0] == '0' || s.find_first_not_of("0123456789") != std::string::npos) return -1;
  const long v = std::stol(s);
  return v > 0 ? v : -1;
}

// The twelve per-block weights, by the name after "h.{i}.".
const char* const kBlockTensors[] = {
    "ln_1.weight",        "ln_1.bias",        "attn.c_attn.weight", "attn.c_attn.bias",
    "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight",        "ln_2.bias",
    "mlp.c_fc.weight",    "mlp.c_fc.bias",    "mlp.c_proj.weight",  "mlp.c_proj.bias",
};

// out[T, d] = LayerNorm(x[T, d]) = (x - mean) / sqrt(var + eps) * w + b, mean and (biased) variance over each row.
void layernorm(float* out, const float* x, const float* w, const float* b, int T, int d, float eps) {
#pragma omp parallel for schedule(static) if (T >= 16)
  for (int t = 0; t < T; ++t) {
    const float* xr = x + static_cast<size_t>(t) * d;
    float* o = out + static_cast<size_t>(t) * d;
    float mean = 0.f;
    for (int j = 0; j < d; ++j) mean += xr[j];
    mean /= static_cast<float>(d);
    float var = 0.f;
    for (int j = 0; j < d; ++j) var += (xr[j] - mean) * (xr[j] - mean);
    var /= static_cast<float>(d);
    const float inv = 1.f / std::sqrt(var + eps);
    for (int j = 0; j < d; ++j) o[j] = (xr[j] - mean) * inv * w[j] + b[j];
  }
}

// Y[T, out] = X[T, in] W[in, out] + b[out]: a HF Conv1D (weights stored [in, out]). Bias rows first, then one sgemm
// accumulating onto them (beta = 1).
void conv1d(float* Y, const float* X, const float* W, const float* b, int T, int in, int out) {
  for (int t = 0; t < T; ++t)
    std::memcpy(Y + static_cast<size_t>(t) * out, b, static_cast<size_t>(out) * sizeof(float));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, out, in, 1.f, X, in, W, out, 1.f, Y, out);
}

// GELU in place: "gelu_new" 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), or the exact 0.5 x (1 + erf(x / sqrt 2)).
void gelu(float* h, size_t n, bool tanh_approx) {
  const float k = 0.7978845608028654f;  // sqrt(2 / pi)
  // Elementwise (threads change nothing in the result).
  const long long N = static_cast<long long>(n);
  if (tanh_approx) {
#pragma omp parallel for schedule(static) if (N >= 16384)
    for (long long i = 0; i < N; ++i) {
      const float x = h[i];
      h[i] = 0.5f * x * (1.f + std::tanh(k * (x + 0.044715f * x * x * x)));
    }
  } else {
#pragma omp parallel for schedule(static) if (N >= 16384)
    for (long long i = 0; i < N; ++i) h[i] = 0.5f * h[i] * (1.f + std::erf(h[i] * 0.7071067811865476f));
  }
}

}  // namespace

Gpt2Model Gpt2Model::load(const std::string& path) {
  std::error_code ec;
  std::string file = path;
  if (fs::is_directory(path, ec)) {
    file = (fs::path(path) / "model.safetensors").string();
    if (!fs::is_regular_file(file, ec)) {
      if (fs::exists(fs::path(path) / "model.safetensors.index.json", ec))
        fail("model directory '", path, "' holds a sharded checkpoint (model.safetensors.index.json); only a single "
             "model.safetensors is supported");
      fail("model directory '", path, "' holds no model.safetensors");
    }
  } else if (!fs::is_regular_file(path, ec)) {
    fail("model '", path, "': no such file");
  }

  // ---- config.json beside the weights (optional) ----
  const fs::path cfg_path = fs::path(file).parent_path() / "config.json";
  nlohmann::json cj;
  const bool has_cfg = fs::is_regular_file(cfg_path, ec);
  if (has_cfg) {
    std::ifstream in(cfg_path);
    try {
      cj = nlohmann::json::parse(in);
    } catch (const std::exception& e) {
      fail("model config '", cfg_path.string(), "': not valid JSON (", e.what(), ")");
    }
    if (!cj.is_object()) fail("model config '", cfg_path.string(), "': not a JSON object");
  }
  const std::string cfg_name = cfg_path.string();
  // An integer entry of config.json, or -1 when absent / null.
  auto cfg_int = [&](const char* key) -> long {
    if (!has_cfg || !cj.contains(key) || cj[key].is_null()) return -1;
    if (!cj[key].is_number_integer() || cj[key].get<long>() <= 0)
      fail("model config '", cfg_name, "': ", key, " must be a positive integer (it is ", cj[key].dump(), ")");
    return cj[key].get<long>();
  };
  auto cfg_bool = [&](const char* key, bool dflt) -> bool {
    if (!has_cfg || !cj.contains(key) || cj[key].is_null()) return dflt;
    if (!cj[key].is_boolean()) fail("model config '", cfg_name, "': ", key, " must be true or false");
    return cj[key].get<bool>();
  };
  if (has_cfg && cj.contains("model_type") && cj["model_type"].is_string() && cj["model_type"] != "gpt2")
    fail("model config '", cfg_name, "': model_type is '", cj["model_type"].get<std::string>(),
         "'; only GPT-2 (\"gpt2\") safetensors models are supported");
  if (cfg_bool("add_cross_attention", false))
    fail("model config '", cfg_name, "': add_cross_attention (encoder-decoder GPT-2) is not supported");

  // ---- tensors ----
  std::map<std::string, safetensors::Entry> stored = safetensors::read(file);
  std::map<std::string, std::string> dtypes, metadata;
  read_header(file, dtypes, metadata);

  // Canonical names (without "transformer."), checked against the GPT-2 set.
  const std::string prefix = "transformer.";
  std::map<std::string, std::string> canon;  // canonical -> stored
  int n_layer = 0;
  for (const auto& kv : stored) {
    const std::string& name = kv.first;
    const std::string c = name.compare(0, prefix.size(), prefix) == 0 ? name.substr(prefix.size()) : name;
    if (!canon.emplace(c, name).second)
      fail("model '", file, "': tensor '", c, "' is stored twice (with and without the 'transformer.' prefix)");
    if (c == "wte.weight" || c == "wpe.weight" || c == "ln_f.weight" || c == "ln_f.bias" || c == "lm_head.weight")
      continue;
    bool known = false;
    if (c.compare(0, 2, "h.") == 0) {
      const size_t dot = c.find('.', 2);
      const std::string num = dot == std::string::npos ? "" : c.substr(2, dot - 2);
      const long idx = num == "0" ? 0 : parse_positive(num);  // the block index: "0", "1", ... (no leading zeros)
      if (idx >= 0 && idx < 100000) {
        const std::string rest = c.substr(dot + 1);
        known = rest == "attn.bias" || rest == "attn.masked_bias";  // causal-mask buffers of older exports
        for (const char* t : kBlockTensors) known = known || rest == t;
        if (known) n_layer = std::max(n_layer, static_cast<int>(idx) + 1);
      }
    }
    if (!known) fail("model '", file, "': unexpected tensor '", name, "' (not part of a GPT-2 model)");
  }
  if (n_layer == 0) fail("model '", file, "': no transformer blocks (no tensor named h.{i}.*): not a GPT-2 model");

  Gpt2Model m;
  m.path_ = file;
  // The name a canonical tensor has (or would have) in this file: prefixed when the file's names are.
  bool prefixed = false;
  for (const auto& kv : canon) prefixed = prefixed || kv.second.compare(0, prefix.size(), prefix) == 0;
  auto stored_name = [&](const std::string& c) { return prefixed && c != "lm_head.weight" ? prefix + c : c; };
  // Looks a weight up by canonical name, checks dtype and shape; keeps its buffer alive in the model.
  auto get = [&](const std::string& c, const std::vector<int64_t>& want, const char* what) -> const float* {
    const auto it = canon.find(c);
    if (it == canon.end()) fail("model '", file, "': missing tensor '", stored_name(c), "' (", what, ")");
    const safetensors::Entry& e = stored.at(it->second);
    if (e.tensor.dtype() != DType::F32)
      fail("model '", file, "': tensor '", e.name, "' has dtype ", dtypes[e.name],
           "; GPT-2 weights must be floating point (F32, F16, BF16 or F64)");
    if (e.shape != want) {
      const bool transposed = want.size() == 2 && e.shape.size() == 2 && e.shape[0] == want[1] && e.shape[1] == want[0];
      fail("model '", file, "': tensor '", e.name, "' has shape ", shape_text(e.shape), ", expected ",
           shape_text(want), " (", what, ")",
           transposed ? "; it is transposed: GPT-2's Conv1D weights are stored [in, out], not nn.Linear's [out, in]"
                      : "");
    }
    m.weights_.push_back(e.tensor);
    return e.tensor.data<float>();
  };
  // wte and wpe fix V, d and n_ctx; c_fc of block 0 fixes the MLP width H.
  auto shape_of = [&](const std::string& c, const char* what) -> std::vector<int64_t> {
    const auto it = canon.find(c);
    if (it == canon.end()) fail("model '", file, "': missing tensor '", stored_name(c), "' (", what, ")");
    const std::vector<int64_t>& s = stored.at(it->second).shape;
    if (s.size() != 2 || s[0] <= 0 || s[1] <= 0 || s[0] > (1 << 24) || s[1] > (1 << 20))
      fail("model '", file, "': tensor '", it->second, "' has shape ", shape_text(s), ", expected ", what);
    return s;
  };
  const std::vector<int64_t> wte_s = shape_of("wte.weight", "[vocab, d_model]");
  const int64_t V = wte_s[0], d = wte_s[1];
  const int64_t n_ctx = shape_of("wpe.weight", "[n_ctx, d_model]")[0];
  const std::vector<int64_t> fc_s = shape_of("h.0.mlp.c_fc.weight", "[d_model, mlp width]");
  if (fc_s[0] != d)
    fail("model '", file, "': tensor '", stored_name("h.0.mlp.c_fc.weight"), "' has shape ", shape_text(fc_s),
         ", expected [", d, ", mlp width] (Conv1D [d_model, mlp width]", fc_s[1] == d ? "; it is transposed: GPT-2's "
         "Conv1D weights are stored [in, out], not nn.Linear's [out, in]" : "", ")");
  const int64_t H = fc_s[1];

  Gpt2Config& c = m.cfg_;
  c.n_embd = static_cast<int>(d);
  c.n_layer = n_layer;
  c.n_ctx = static_cast<int>(n_ctx);
  c.vocab_size = static_cast<int>(V);
  c.n_inner = static_cast<int>(H);

  // config.json, when present, must describe these weights.
  auto agree = [&](const char* key, long have) {
    const long v = cfg_int(key);
    if (v >= 0 && v != have)
      fail("model config '", cfg_name, "': ", key, " = ", v, " but the weights in '", file, "' have ", have);
  };
  agree("n_embd", d);
  agree("n_layer", n_layer);
  agree("n_positions", n_ctx);
  agree("vocab_size", V);
  agree("n_inner", H);
  if (has_cfg && cj.contains("layer_norm_epsilon") && !cj["layer_norm_epsilon"].is_null()) {
    if (!cj["layer_norm_epsilon"].is_number() || cj["layer_norm_epsilon"].get<double>() <= 0)
      fail("model config '", cfg_name, "': layer_norm_epsilon must be a positive number");
    c.layer_norm_eps = cj["layer_norm_epsilon"].get<float>();
  }
  if (has_cfg && cj.contains("activation_function") && !cj["activation_function"].is_null()) {
    const std::string act = cj["activation_function"].is_string() ? cj["activation_function"].get<std::string>() : "";
    if (act == "gelu_new" || act == "gelu_pytorch_tanh" || act == "gelu_fast")
      c.gelu_tanh = true;
    else if (act == "gelu")
      c.gelu_tanh = false;
    else
      fail("model config '", cfg_name, "': activation_function ", cj["activation_function"].dump(),
           " is not supported (gelu_new, gelu_pytorch_tanh, gelu_fast or gelu)");
  }
  c.scale_attn_weights = cfg_bool("scale_attn_weights", true);
  c.scale_attn_by_inverse_layer_idx = cfg_bool("scale_attn_by_inverse_layer_idx", false);
  c.tied_classifier = cfg_bool("tie_word_embeddings", true);

  // Heads: config.json, then the safetensors metadata, then the released GPT-2 widths (64-dimensional heads).
  long heads = cfg_int("n_head");
  if (heads < 0) heads = cfg_int("num_attention_heads");
  if (heads > 0) {
    c.n_head_from = "config.json";
  } else if (metadata.count("n_head")) {
    heads = parse_positive(metadata["n_head"]);
    if (heads <= 0)
      fail("model '", file, "': safetensors metadata n_head = '", metadata["n_head"], "' is not a positive integer");
    c.n_head_from = "metadata";
  } else if (d == 768 || d == 1024 || d == 1280 || d == 1600) {
    heads = d / 64;
    c.n_head_from = "GPT-2 width";
  } else {
    fail("model '", file, "': the number of attention heads is unknown: no config.json with n_head beside the file, "
         "no n_head in the safetensors metadata, and d_model = ", d, " is not a released GPT-2 width "
         "(768, 1024, 1280, 1600)");
  }
  if (d % heads != 0)
    fail("model '", file, "': d_model = ", d, " is not a multiple of n_head = ", heads, " (from ", c.n_head_from, ")");
  c.n_head = static_cast<int>(heads);

  // Every weight, with its shape.
  m.wte_ = get("wte.weight", {V, d}, "token embedding [vocab, d_model]");
  m.wpe_ = get("wpe.weight", {n_ctx, d}, "position embedding [n_ctx, d_model]");
  m.blocks_.resize(static_cast<size_t>(n_layer));
  for (int l = 0; l < n_layer; ++l) {
    const std::string p = "h." + std::to_string(l) + ".";
    Block& b = m.blocks_[static_cast<size_t>(l)];
    b.ln1_w = get(p + "ln_1.weight", {d}, "[d_model]");
    b.ln1_b = get(p + "ln_1.bias", {d}, "[d_model]");
    b.attn_w = get(p + "attn.c_attn.weight", {d, 3 * d}, "Conv1D [d_model, 3 d_model]");
    b.attn_b = get(p + "attn.c_attn.bias", {3 * d}, "[3 d_model]");
    b.attn_proj_w = get(p + "attn.c_proj.weight", {d, d}, "Conv1D [d_model, d_model]");
    b.attn_proj_b = get(p + "attn.c_proj.bias", {d}, "[d_model]");
    b.ln2_w = get(p + "ln_2.weight", {d}, "[d_model]");
    b.ln2_b = get(p + "ln_2.bias", {d}, "[d_model]");
    b.fc_w = get(p + "mlp.c_fc.weight", {d, H}, "Conv1D [d_model, mlp width]");
    b.fc_b = get(p + "mlp.c_fc.bias", {H}, "[mlp width]");
    b.fc_proj_w = get(p + "mlp.c_proj.weight", {H, d}, "Conv1D [mlp width, d_model]");
    b.fc_proj_b = get(p + "mlp.c_proj.bias", {d}, "[d_model]");
  }
  m.lnf_w_ = get("ln_f.weight", {d}, "final layer norm [d_model]");
  m.lnf_b_ = get("ln_f.bias", {d}, "final layer norm [d_model]");
  if (c.tied_classifier) {
    m.cls_ = m.wte_;
  } else {
    if (!canon.count("lm_head.weight"))
      fail("model '", file, "': config.json sets tie_word_embeddings to false but there is no lm_head.weight");
    m.cls_ = get("lm_head.weight", {V, d}, "classifier [vocab, d_model]");
  }
  m.shape_ = LmShape{"gpt2", c.n_embd, c.n_layer, c.vocab_size, c.n_ctx};
  return m;
}

std::vector<float> Gpt2Model::run(const int* tokens, int T, int pos0, float* kc, float* vc, size_t layer_stride,
                                  const ForwardOptions& opt) const {
  const Gpt2Config& c = cfg_;
  const int last_layer = last_block_to_run(opt.hooks, opt.logits, c.n_layer, "gpt2");
  if (last_layer < 0) return {};

  const int d = c.n_embd, H = c.n_inner, hs = c.head_dim(), V = c.vocab_size, d3 = 3 * c.n_embd;
  const int S = pos0 + T;  // keys and values visible to the last query
  const size_t Td = static_cast<size_t>(T) * d;
  std::vector<float> x(Td), xb(Td), ob(Td), qkv(static_cast<size_t>(T) * d3);
  std::vector<float> att(static_cast<size_t>(T) * S), h(static_cast<size_t>(T) * H);

  // Embedding: token row of wte plus the learned position row of wpe.
  for (int t = 0; t < T; ++t) {
    const float* te = wte_ + static_cast<size_t>(tokens[t]) * d;
    const float* pe = wpe_ + static_cast<size_t>(pos0 + t) * d;
    float* xr = x.data() + static_cast<size_t>(t) * d;
    for (int j = 0; j < d; ++j) xr[j] = te[j] + pe[j];
  }

  for (int l = 0; l <= last_layer; ++l) {
    const Block& b = blocks_[static_cast<size_t>(l)];
    float* K = kc + static_cast<size_t>(l) * layer_stride;  // [S, d]: positions 0 .. S-1, heads side by side
    float* Vc = vc + static_cast<size_t>(l) * layer_stride;
    float scale = c.scale_attn_weights ? 1.0f / std::sqrt(static_cast<float>(hs)) : 1.0f;
    if (c.scale_attn_by_inverse_layer_idx) scale /= static_cast<float>(l + 1);

    // Attention (pre-norm): qkv[T, 3d] = ln_1(x) W_attn + b_attn; the new keys and values go to the cache.
    layernorm(xb.data(), x.data(), b.ln1_w, b.ln1_b, T, d, c.layer_norm_eps);
    conv1d(qkv.data(), xb.data(), b.attn_w, b.attn_b, T, d, d3);
    for (int t = 0; t < T; ++t) {
      const float* r = qkv.data() + static_cast<size_t>(t) * d3;
      std::memcpy(K + static_cast<size_t>(pos0 + t) * d, r + d, static_cast<size_t>(d) * sizeof(float));
      std::memcpy(Vc + static_cast<size_t>(pos0 + t) * d, r + 2 * d, static_cast<size_t>(d) * sizeof(float));
    }
    // ob[:, head h] = causal softmax(scale Q_h K_h^T) V_h (Q: the q part of qkv)
    causal_attention(qkv.data(), d3, K, Vc, d, ob.data(), d, T, pos0, c.n_head, c.n_head, hs, scale, att.data());
    // x += ob W_proj + b_proj
    conv1d(xb.data(), ob.data(), b.attn_proj_w, b.attn_proj_b, T, d, d);
    for (size_t i = 0; i < Td; ++i) x[i] += xb[i];

    // MLP (pre-norm): x += gelu(ln_2(x) W_fc + b_fc) W_proj + b_proj
    layernorm(xb.data(), x.data(), b.ln2_w, b.ln2_b, T, d, c.layer_norm_eps);
    conv1d(h.data(), xb.data(), b.fc_w, b.fc_b, T, d, H);
    gelu(h.data(), h.size(), c.gelu_tanh);
    conv1d(xb.data(), h.data(), b.fc_proj_w, b.fc_proj_b, T, H, d);
    for (size_t i = 0; i < Td; ++i) x[i] += xb[i];
    apply_hooks(opt.hooks, l, x.data(), T, d);  // resid_post of block l
  }
  if (opt.logits == ForwardOptions::Logits::None) return {};

  // logits[rows, V] = ln_f(x) wte^T (tied classifier), for every row or only the last.
  const int first = opt.logits == ForwardOptions::Logits::Last ? T - 1 : 0;
  const int rows = T - first;
  layernorm(xb.data(), x.data() + static_cast<size_t>(first) * d, lnf_w_, lnf_b_, rows, d, c.layer_norm_eps);
  std::vector<float> logits(static_cast<size_t>(rows) * V);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, V, d, 1.f, xb.data(), d, cls_, d, 0.f, logits.data(), V);
  return logits;
}

}  // namespace moesae::lm
