// Helpers shared by the model tests.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/backend.h"
#include "core/rng.h"
#include "data/synthetic.h"
#include "sae/sae.h"

namespace moesae::testing {

inline Tensor random_host(int64_t rows, int64_t cols, uint64_t seed, double scale = 1.0, double offset = 0.0) {
  Tensor t = host_tensor(rows, cols);
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) t.host<float>()[i] = static_cast<float>(offset + scale * rng.normal());
  return t;
}

// Sets every element of a (host-backed) parameter to random values.
inline void randomize(Backend& be, Tensor p, uint64_t seed, double scale, double offset = 0.0) {
  Tensor h = be.to_host(p);
  Rng rng(seed);
  for (int64_t i = 0; i < h.numel(); ++i) h.host<float>()[i] = static_cast<float>(offset + scale * rng.normal());
  be.upload(h, p);
}

inline std::vector<float> to_vec(Backend& be, const Tensor& t) {
  Tensor h = be.to_host(t);
  if (t.dtype() == DType::I32) {
    std::vector<float> out(h.numel());
    for (int64_t i = 0; i < h.numel(); ++i) out[i] = float(h.host<int32_t>()[i]);
    return out;
  }
  return std::vector<float>(h.host<float>(), h.host<float>() + h.numel());
}

// `rows` synthetic activations (data/synthetic.h: clustered features with a little noise), the same on every call.
inline Tensor synthetic_rows(int64_t rows, int d, int features, int groups, double active, uint64_t seed) {
  SynthConfig s;
  const int64_t block = SyntheticGenerator::kBlockTokens;
  s.tokens = std::max<int64_t>(1, (rows + block - 1) / block) * block;  // whole generation blocks
  s.d = d;
  s.features = features;
  s.groups = groups;
  s.active = active;
  s.noise = 0.02;
  s.seed = seed;
  SyntheticGenerator gen(s);
  Tensor t = host_tensor(rows, d);
  gen.generate(0, t);
  return t;
}

// One of the four families at a test size: E experts for Switch and Scale, e = `active` for Scale (with Feature
// Scaling, mean variant), mean-normalised MSE; latents count as dead after `dead_tokens` tokens without firing.
inline ModelConfig family_config(Arch arch, int d, int F, int k, int E, int active, int64_t dead_tokens) {
  ModelConfig m;
  m.arch = arch;
  m.d = d;
  m.dict_size = F;
  m.k = k;
  m.experts = arch == Arch::Switch || arch == Arch::Scale ? E : 1;
  m.active_experts = arch == Arch::Scale ? active : 1;
  if (arch == Arch::Scale) m.feature_scaling = FeatureScaling::Mean;
  m.dead_threshold_tokens = dead_tokens;
  return m;
}

inline ModelConfig small_config(Arch arch, int d = 6, int F = 16, int E = 1, int e = 1, int k = 4) {
  ModelConfig m;
  m.arch = arch;
  m.d = d;
  m.dict_size = F;
  m.experts = E;
  m.active_experts = e;
  m.k = k;
  m.mse_normalization = MseNormalization::Sum;  // larger loss: better conditioned finite differences
  return m;
}

}  // namespace moesae::testing
