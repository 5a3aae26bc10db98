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

}  // namespace moesae::lm
