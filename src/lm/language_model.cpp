#include "lm/language_model.h"

#include <algorithm>

#include "core/error.h"

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

int last_block_to_run(const std::vector<ResidHook>& hooks, ForwardOptions::Logits logits, int n_layers,
                      const char* who) {
  for (const auto& h : hooks) {
    if (h.layer < 0 || h.layer >= n_layers) fail(who, " hook: layer ", h.layer, " out of range [0, ", n_layers, ")");
    if (h.kind == ResidHook::Kind::Capture && !h.out) fail(who, " hook: capture at layer ", h.layer, " has no output");
    if (h.kind == ResidHook::Kind::Replace && !h.replace)
      fail(who, " hook: replace at layer ", h.layer, " has no function");
  }
  if (logits != ForwardOptions::Logits::None) return n_layers - 1;
  int last = -1;
  for (const auto& h : hooks) last = std::max(last, h.layer);
  return last;
}

void apply_hooks(const std::vector<ResidHook>& hooks, int layer, float* x, int T, int dim) {
  for (const auto& hook : hooks) {
    if (hook.layer != layer) continue;
    switch (hook.kind) {
      case ResidHook::Kind::Capture: hook.out->assign(x, x + static_cast<size_t>(T) * dim); break;
      case ResidHook::Kind::Replace: hook.replace(x, T, dim); break;
      case ResidHook::Kind::Zero: std::fill(x, x + static_cast<size_t>(T) * dim, 0.f); break;
    }
  }
}

namespace {

// The key/value cache of an incremental decode: [n_layers, seq_len, kv_width] keys and values.
struct KvCacheState final : DecodeState {
  const LanguageModel* owner = nullptr;  // the model whose start() made it (the cache's sizes are its own)
  std::vector<float> k, v;
};

void check_tokens(const LanguageModel& m, const int* tokens, int T) {
  for (int t = 0; t < T; ++t)
    if (tokens[t] < 0 || tokens[t] >= m.shape().vocab_size)
      fail(m.shape().arch, " forward: token id ", tokens[t], " out of range [0, ", m.shape().vocab_size,
           ") of model '", m.path(), "'");
}

}  // namespace

std::vector<float> LanguageModel::forward(const std::vector<int>& tokens, const ForwardOptions& opt) const {
  const LmShape& s = shape();
  const int T = static_cast<int>(tokens.size());
  if (T <= 0) fail(s.arch, " forward: empty context");
  if (T > s.seq_len) fail(s.arch, " forward: context of ", T, " tokens exceeds the model's seq_len ", s.seq_len);
  check_tokens(*this, tokens.data(), T);
  std::vector<float> kc(static_cast<size_t>(T) * kv_width()), vc(kc.size());
  return run(tokens.data(), T, 0, kc.data(), vc.data(), 0, opt);
}

std::unique_ptr<DecodeState> LanguageModel::start() const {
  auto st = std::make_unique<KvCacheState>();
  st->owner = this;
  const size_t n = static_cast<size_t>(shape().n_layers) * shape().seq_len * kv_width();
  st->k.assign(n, 0.f);
  st->v.assign(n, 0.f);
  return st;
}

std::vector<float> LanguageModel::step(DecodeState& state, int token) const {
  const LmShape& s = shape();
  auto* st = dynamic_cast<KvCacheState*>(&state);
  if (!st || st->owner != this) fail(s.arch, " step: the decode state was not made by this model's start()");
  const int pos = static_cast<int>(st->tokens.size());
  if (pos >= s.seq_len) fail(s.arch, " step: position ", pos, " is past the model's seq_len ", s.seq_len);
  check_tokens(*this, &token, 1);
  ForwardOptions opt;
  opt.logits = ForwardOptions::Logits::Last;
  std::vector<float> logits =
      run(&token, 1, pos, st->k.data(), st->v.data(), static_cast<size_t>(s.seq_len) * kv_width(), opt);
  st->tokens.push_back(token);
  return logits;
}

}  // namespace moesae::lm
