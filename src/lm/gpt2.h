// moesae lm: a Hugging Face GPT-2 (`model.safetensors`) with a batched forward pass, residual-stream hooks and a
// key/value cache for incremental decoding.
//
// Weights (HF GPT2Model / GPT2LMHeadModel export; every name may carry a "transformer." prefix):
//   wte.weight [V, d], wpe.weight [n_ctx, d],
//   h.{i}.ln_1.weight/bias [d], h.{i}.attn.c_attn.weight [d, 3d] / .bias [3d], h.{i}.attn.c_proj.weight [d, d] /
//   .bias [d], h.{i}.ln_2.weight/bias [d], h.{i}.mlp.c_fc.weight [d, H] / .bias [H], h.{i}.mlp.c_proj.weight [H, d] /
//   .bias [d], ln_f.weight/bias [d].
// The attention and MLP matrices are HF `Conv1D` weights, stored [in, out] (y = x W + b), not nn.Linear's [out, in].
// H is 4d for every released GPT-2 (config n_inner = null). Ignored: lm_head.weight (the classifier is tied to wte
// unless config.json says "tie_word_embeddings": false), and the h.{i}.attn.bias / .attn.masked_bias buffers of
// older exports. Tensors may be stored F32, F16, BF16 or F64 (read as f32). Anything else is an error.
//
// The number of heads is not in the weights. It is taken, first match wins, from `n_head` in config.json beside the
// file; from `n_head` in the safetensors `__metadata__`; or, for the released GPT-2 widths (d = 768, 1024, 1280,
// 1600: GPT-2 small, medium, large, xl, all with 64-dimensional heads), d / 64. Otherwise loading fails.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "lm/language_model.h"

namespace moesae::lm {

struct Gpt2Config {
  int n_embd = 0;       // d_model
  int n_layer = 0;      // blocks (the count of h.{i})
  int n_head = 0;       // attention heads
  int n_ctx = 0;        // positions (wpe rows)
  int vocab_size = 0;   // wte rows
  int n_inner = 0;      // MLP hidden width H (4 * n_embd for GPT-2)
  float layer_norm_eps = 1e-5f;
  bool gelu_tanh = true;                  // "gelu_new" (tanh approximation); false: exact erf "gelu"
  bool scale_attn_weights = true;         // scores / sqrt(head_dim)
  bool scale_attn_by_inverse_layer_idx = false;  // scores further / (layer + 1) (HF option, off for GPT-2)
  bool tied_classifier = true;            // logits = ln_f(x) wte^T (false: lm_head.weight)
  std::string n_head_from;                // where n_head came from: "config.json", "metadata", "GPT-2 width"
  int head_dim() const { return n_embd / n_head; }
};

class Gpt2Model final : public LanguageModel {
 public:
  // `path`: a model.safetensors file, or a directory holding one (and optionally config.json). Fails with one
  // message naming the file (and the tensor) for a missing file, a missing or unexpected tensor, a wrong shape or
  // dtype, or an inconsistent config.json.
  static Gpt2Model load(const std::string& path);

  const Gpt2Config& config() const { return cfg_; }
  const LmShape& shape() const override { return shape_; }
  const std::string& path() const override { return path_; }

 protected:
  int kv_width() const override { return cfg_.n_embd; }
  std::vector<float> run(const int* tokens, int T, int pos0, float* kc, float* vc, size_t layer_stride,
                         const ForwardOptions& opt) const override;

 private:
  struct Block {
    const float *ln1_w, *ln1_b;        // [d]
    const float *attn_w, *attn_b;      // [d, 3d], [3d]: q | k | v
    const float *attn_proj_w, *attn_proj_b;  // [d, d], [d]
    const float *ln2_w, *ln2_b;        // [d]
    const float *fc_w, *fc_b;          // [d, H], [H]
    const float *fc_proj_w, *fc_proj_b;  // [H, d], [d]
  };

  Gpt2Config cfg_;
  LmShape shape_;
  std::string path_;
  std::vector<Tensor> weights_;  // owns the buffers the pointers below point into
  const float* wte_ = nullptr;   // [V, d]
  const float* wpe_ = nullptr;   // [n_ctx, d]
  const float* lnf_w_ = nullptr;
  const float* lnf_b_ = nullptr;
  const float* cls_ = nullptr;   // [V, d]: wte_, or lm_head.weight when untied
  std::vector<Block> blocks_;
};

}  // namespace moesae::lm
