// moesae lm: what every language model of the runtime offers (llama2.c checkpoints, GPT-2): its shape, a batched
// causal forward over one context with hooks on the residual stream, and incremental decoding for generation.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace moesae::lm {

// The sizes every consumer of a language model needs (extraction, cross-entropy, splicing, generation).
struct LmShape {
  std::string arch;    // "llama" or "gpt2"
  int dim = 0;         // residual-stream width d_model
  int n_layers = 0;    // blocks
  int vocab_size = 0;  // logits per position
  int seq_len = 0;     // longest context
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

// Checks hooks against n_layers and returns the last block the forward pass must run (n_layers - 1, or with
// Logits::None the deepest hooked block; -1 when nothing is to be computed). One error per bad hook.
int last_block_to_run(const std::vector<ResidHook>& hooks, ForwardOptions::Logits logits, int n_layers,
                      const char* who);
// Applies the hooks of block `layer` to x[T, dim], in the order given.
void apply_hooks(const std::vector<ResidHook>& hooks, int layer, float* x, int T, int dim);

// The state of an incremental decode (generation): the tokens so far and each model's key/value cache.
struct DecodeState {
  virtual ~DecodeState() = default;
  std::vector<int> tokens;
};

// A model implements shape(), path(), kv_width() and run(); forward, start and step are built on run().
class LanguageModel {
 public:
  virtual ~LanguageModel() = default;
  virtual const LmShape& shape() const = 0;
  // The file the weights were read from.
  virtual const std::string& path() const = 0;

  // Causal forward over one context tokens[0..T) (positions 0..T-1, 1 <= T <= seq_len). Returns logits row-major:
  // [T, vocab] (Logits::All), [1, vocab] (Logits::Last) or empty (Logits::None).
  std::vector<float> forward(const std::vector<int>& tokens, const ForwardOptions& opt = {}) const;

  // Incremental decoding with a key/value cache: start(), then step(state, token) appends `token` at the next
  // position and returns that position's logits [vocab]. Equal (to float rounding) to the last row of forward().
  std::unique_ptr<DecodeState> start() const;
  std::vector<float> step(DecodeState& state, int token) const;

 protected:
  // Floats per position per block in the key (and the value) cache.
  virtual int kv_width() const = 0;
  // The blocks over tokens[0..T) at positions pos0 .. pos0 + T - 1 (token ids already checked). Keys and values of
  // block l at position p live at kc/vc + l * layer_stride + p * kv_width() (layer_stride 0: one buffer reused by
  // every block; positions < pos0 must already be there). Returns logits as forward() does.
  virtual std::vector<float> run(const int* tokens, int T, int pos0, float* kc, float* vc, size_t layer_stride,
                                 const ForwardOptions& opt) const = 0;
};

}  // namespace moesae::lm
