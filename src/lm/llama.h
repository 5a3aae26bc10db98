// moesae lm: a llama2.c checkpoint (Llama-2 architecture) with a batched forward pass and residual-stream hooks.
//
// Checkpoint format ("version 0", the legacy llama2.c export): 7 int32 (dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size, seq_len; a negative vocab_size means the classifier is stored separately), then fp32
// arrays: token embedding [vocab, dim], attention RMS weights [L, dim], wq [L, dim, dim], wk [L, kv_dim, dim],
// wv [L, kv_dim, dim], wo [L, dim, dim], FFN RMS weights [L, dim], w1 [L, hidden, dim], w2 [L, dim, hidden],
// w3 [L, hidden, dim], final RMS weight [dim], RoPE tables (real, imag: [seq_len, head_size/2] each; not used),
// then the classifier [vocab, dim] when not shared. Matrices are [out, in], row-major.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "lm/language_model.h"

namespace moesae::lm {

struct LlamaConfig {
  int dim = 0;
  int hidden_dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;
  int seq_len = 0;
  bool shared_classifier = true;
  int head_size() const { return dim / n_heads; }
  int kv_dim() const { return head_size() * n_kv_heads; }
};

class LlamaModel final : public LanguageModel {
 public:
  // Reads and validates the checkpoint (sizes against the file length). Fails with one message naming the file.
  static LlamaModel load(const std::string& path);

  const LlamaConfig& config() const { return cfg_; }
  const LmShape& shape() const override { return shape_; }
  const std::string& path() const override { return path_; }

 protected:
  int kv_width() const override { return cfg_.kv_dim(); }
  std::vector<float> run(const int* tokens, int T, int pos0, float* kc, float* vc, size_t layer_stride,
                         const ForwardOptions& opt) const override;

 private:
  LlamaConfig cfg_;
  LmShape shape_;
  std::string path_;
  std::vector<float> w_;  // every weight, in file order
  // Offsets into w_.
  size_t emb_ = 0, rms_att_ = 0, wq_ = 0, wk_ = 0, wv_ = 0, wo_ = 0, rms_ffn_ = 0, w1_ = 0, w2_ = 0, w3_ = 0,
         rms_final_ = 0, cls_ = 0;
};

}  // namespace moesae::lm
