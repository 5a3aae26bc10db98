// Shared by the training benchmarks: a model ready to train on one fixed batch, and one training step as the
// Trainer takes it (moesae::train_step) without the data loading and logging around it.
#pragma once
#include <memory>

#include "core/rng.h"
#include "sae/sae.h"
#include "train/adam.h"
#include "train/train_step.h"

namespace moesae::bench {

// The paper's shape of the Scale SAE (E = 64, e = 2, k = 32, Feature Scaling) at width F, and the dense TopK SAE
// of the same F and k.
inline ModelConfig scale_config(int d, int F) {
  ModelConfig scale;
  scale.arch = Arch::Scale;
  scale.d = d;
  scale.dict_size = F;
  scale.experts = 64;
  scale.active_experts = 2;
  scale.k = 32;
  scale.feature_scaling = FeatureScaling::Mean;
  return scale;
}

inline ModelConfig topk_config(int d, int F) {
  ModelConfig topk = scale_config(d, F);
  topk.arch = Arch::TopK;
  topk.experts = 1;
  topk.active_experts = 1;
  topk.feature_scaling = FeatureScaling::None;
  return topk;
}

struct StepModel {
  std::unique_ptr<Sae> sae;
  std::unique_ptr<Adam> adam;
  Tensor x;  // the batch on the backend
};

// `acts` is a host batch [B, d]; `steps` bounds the Adam steps that will be taken (its learning-rate schedule).
inline StepModel make_step_model(const ModelConfig& mc, const Tensor& acts, int steps, Backend& be) {
  StepModel m;
  m.sae = make_sae(mc, be);
  Rng rng(0);
  m.sae->init(rng);
  TrainConfig tc;
  tc.steps = steps;
  m.adam = std::make_unique<Adam>(m.sae->params(), be, tc);
  m.x = be.from_host(acts);
  m.sae->init_biases_from_batch(acts);
  return m;
}

inline void train_step(StepModel& m) {
  StepOptions options;
  options.lr = 1e-4;
  options.grad_clip = 1.0;
  moesae::train_step(*m.sae, *m.adam, m.x, options);
}

}  // namespace moesae::bench
