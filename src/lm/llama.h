// moesae lm: a llama2.c checkpoint (Llama-2 architecture) with a batched forward pass and residual-stream hooks.
//
// Checkpoint format ("version 0", the legacy llama2.c export): 7 int32 (dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size, seq_len; a negative vocab_size means the classifier is stored separately), then fp32
// arrays: token embedding [vocab, dim], attention RMS weights [L, dim], wq [L, dim, dim], wk [L, kv_dim, dim],
// wv [L, kv_dim, dim], wo [L, dim, dim], FFN RMS weights [L, dim], w1 [L, hidden, dim], w2 [L, dim, hidden],
// w3 [L, hidden, dim], final RMS weight [dim], RoPE tables (real, imag: [seq_len, head_size/2] each; not used),
// then the classifier [vocab, dim] when not shared. Matrices are [out, in], row-major.
#pragma once
#include <functional>
#include <string>
#include <vector>

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

// A hook on the residual stream after block `layer` ("resid_post", 0-based layer index).
struct ResidHook {
  enum class Kind { Capture, Replace, Zero };
  int layer = 0;
  Kind kind = Kind::Capture;
  std::vector<float>* out = nullptr;                         // Capture: receives a copy [T, dim]
  std::function<void(float* resid, int T, int dim)> replace;  // Replace: rewrites [T, dim] in place

  static ResidHook capture(int layer, std::vector<float>* out);
  static ResidHook rewrite(int layer, std::function<void(float*, int, int)> fn);
  static ResidHook zero(int layer);
};

struct ForwardOptions {
  std::vector<ResidHook> hooks;
  // Logits: all T rows, only the last row (generation), or none (stop after the last hooked layer: extraction).
  enum class Logits { All, Last, None } logits = Logits::All;
};

class LlamaModel {
 public:
  // Reads and validates the checkpoint (sizes against the file length). Fails with one message naming the file.
  static LlamaModel load(const std::string& path);

  const LlamaConfig& config() const { return cfg_; }
  const std::string& path() const { return path_; }

  // Causal forward over one context tokens[0..T) (positions 0..T-1, T <= seq_len). Returns logits row-major:
  // [T, vocab] (Logits::All), [1, vocab] (Logits::Last) or empty (Logits::None).
  std::vector<float> forward(const std::vector<int>& tokens, const ForwardOptions& opt = {}) const;

 private:
  LlamaConfig cfg_;
  std::string path_;
  std::vector<float> w_;  // every weight, in file order
  // Offsets into w_.
  size_t emb_ = 0, rms_att_ = 0, wq_ = 0, wk_ = 0, wv_ = 0, wo_ = 0, rms_ffn_ = 0, w1_ = 0, w2_ = 0, w3_ = 0,
         rms_final_ = 0, cls_ = 0;
};

// Greedy (temperature 0) generation with llama2.c semantics: the prompt's tokens (BOS first) count toward `steps`;
// generation stops at BOS or after `steps` positions. Returns the decoded text (no trailing newline);
// on_piece, when given, receives each printable piece as it is produced.
class LlamaTokenizer;
std::string generate_greedy(const LlamaModel& model, const LlamaTokenizer& tok, const std::string& prompt, int steps,
                            const std::function<void(const std::string&)>& on_piece = {});

// Text split into documents: on "<|endoftext|>" when the text contains it, else on blank lines (one or more empty
// lines separate two documents). Documents are trimmed of surrounding whitespace; empty ones are dropped.
std::vector<std::string> split_documents(const std::string& text);

struct LossResult {
  double mean_ce = 0;      // mean next-token cross-entropy (nats) over the predicted positions
  long long predicted = 0;  // number of predicted positions
  long long contexts = 0;
  long long documents = 0;
};

// The context cutting shared by cross_entropy and activation extraction: each document is encoded with BOS and cut
// into consecutive contexts of `ctx` tokens, context i covering tokens [i*ctx, (i+1)*ctx) while it has a token after
// its first one (documents of fewer than two tokens give none). fn(ids, start, len, doc) is called per context, in
// order (ids: the whole encoded document; doc: its index in `documents`); it returns false to stop.
void for_each_context(const LlamaTokenizer& tok, const std::vector<std::string>& documents, int ctx,
                      const std::function<bool(const std::vector<int>& ids, int start, int len, size_t doc)>& fn);

// Mean next-token cross-entropy: each document is encoded with BOS and cut into consecutive contexts of `ctx`
// tokens; context i covers tokens [i*ctx, (i+1)*ctx) and predicts each following token of the same document (the
// last position predicts the first token of the next context). Stops after max_predicted predictions when > 0.
LossResult cross_entropy(const LlamaModel& model, const LlamaTokenizer& tok, const std::vector<std::string>& documents,
                         int ctx, long long max_predicted = 0, const ForwardOptions& opt = {});

}  // namespace moesae::lm
