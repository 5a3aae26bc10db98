// Finite-difference gradient checks of every model and every option (the backward passes are written by hand).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "sae/moe_sae.h"
#include "sae_test_util.h"

using namespace moesae;
using namespace moesae::testing;

namespace {

struct GradCase {
  std::string name;
  ModelConfig cfg;
};

// Central differences on the double-accumulated loss. The models are evaluated in f32, so the step is fairly
// large; points whose finite difference crosses a kink (a Top-K selection or ReLU change) are detected by
// comparing the selected ids at +h and -h, and skipped.
// `objective` picks the differentiated quantity per parameter (default: the total loss); `skip` names parameters
// whose gradient is intentionally not the derivative of any evaluated objective.
using Objective = double (*)(const SaeStats&, const std::string& param);
double total_loss(const SaeStats& s, const std::string&) { return s.loss; }

void check_gradients(const ModelConfig& cfg, uint64_t seed, int dead_latents = 0, Objective objective = total_loss,
                     const std::string& skip = "") {
  auto be = make_cpu_backend(1);
  auto sae = make_sae(cfg, *be);
  Rng rng(seed);
  sae->init(rng);
  const int64_t B = 9;
  Tensor x = be->from_host(random_host(B, cfg.d, seed + 1, 1.0, 0.3));
  // Move every parameter away from its special initial value (omega = 0, A = I, zero biases).
  int salt = 0;
  for (Param* p : sae->params().trainable()) {
    if (p->name == "W_enc" || p->name == "W_dec" || p->name == "W_r") continue;
    double scale = p->name == "omega" ? 0.4 : (p->name == "A_lowpass" ? 0.3 : 0.2);
    double offset = p->name == "A_lowpass" && cfg.feature_scaling == FeatureScaling::Reference ? 0.0 : 0.0;
    randomize(*be, p->value, seed + 100 + salt++, scale, offset);
  }
  if (Param* a = sae->params().find("A_lowpass"); a && cfg.feature_scaling == FeatureScaling::Reference) {
    Tensor h = be->to_host(a->value);  // A = I + noise
    for (int64_t i = 0; i < cfg.d; ++i) h.host<float>()[i * cfg.d + i] += 1.f;
    be->upload(h, a->value);
  }
  if (dead_latents > 0) {  // mark the first latents dead for AuxK
    Param& fired = sae->params().get("tokens_since_fired");
    Tensor h = be->to_host(fired.value);
    for (int i = 0; i < dead_latents; ++i) h.host<int32_t>()[i * 2] = static_cast<int32_t>(cfg.dead_threshold_tokens + 1);
    be->upload(h, fired.value);
  }

  sae->zero_grad();
  SaeStats s0 = sae->forward(x, true);
  ASSERT_TRUE(std::isfinite(s0.loss));
  if (dead_latents > 0) ASSERT_GT(s0.aux, 0.0) << "AuxK term expected";
  sae->backward();
  // Signature of the active set: id where the latent is active, -2 elsewhere (gates, ReLUs and Top-K).
  auto active_set = [&]() {
    std::vector<float> ids = to_vec(*be, sae->code().ids), vals = to_vec(*be, sae->code().vals);
    for (size_t i = 0; i < ids.size(); ++i)
      if (!(vals[i] > 0.f)) ids[i] = -2.f;
    return ids;
  };
  const std::vector<float> ids0 = active_set();

  int checked = 0;
  for (Param* p : sae->params().trainable()) {
    if (p->name == skip) continue;
    Tensor host_val = be->to_host(p->value);
    const std::vector<float> grad = to_vec(*be, p->grad);
    const int64_t n = host_val.numel();
    const int64_t stride = std::max<int64_t>(1, n / 24);
    double max_abs_grad = 0;
    for (float g : grad) max_abs_grad = std::max(max_abs_grad, double(std::fabs(g)));
    for (int64_t i = 0; i < n; i += stride) {
      const float orig = host_val.host<float>()[i];
      const float h = 2e-3f * std::max(1.f, std::fabs(orig));
      auto loss_at = [&](float v, std::vector<float>* ids) {
        host_val.host<float>()[i] = v;
        be->upload(host_val, p->value);
        double l = objective(sae->forward(x, true), p->name);
        if (ids) *ids = active_set();
        return l;
      };
      std::vector<float> ids_p, ids_m;
      const double lp = loss_at(orig + h, &ids_p);
      const double lm = loss_at(orig - h, &ids_m);
      host_val.host<float>()[i] = orig;
      be->upload(host_val, p->value);
      if (ids_p != ids0 || ids_m != ids0) continue;  // selection changed: not differentiable here
      const double l0 = objective(sae->forward(x, true), p->name);
      const double fwd = (lp - l0) / double(h), bwd = (l0 - lm) / double(h);
      if (std::fabs(fwd - bwd) > 0.05 * std::max({std::fabs(fwd), std::fabs(bwd), 1e-3}))
        continue;  // a kink inside [-h, h] (e.g. the Gated L1 on a gate crossing 0)
      const double fd = (lp - lm) / (2.0 * double(h));
      const double tol = 2e-2 * std::max({std::fabs(fd), std::fabs(double(grad[i])), 1e-2 * max_abs_grad}) + 2e-4;
      EXPECT_NEAR(grad[i], fd, tol) << cfg.dict_size << " param " << p->name << "[" << i << "]";
      ++checked;
    }
  }
  EXPECT_GT(checked, 20);
}

ModelConfig scale_cfg(FeatureScaling fs) {
  ModelConfig m = small_config(Arch::Scale, 6, 16, 4, 2, 5);
  m.feature_scaling = fs;
  return m;
}

}  // namespace

TEST(Gradients, TopK) { check_gradients(small_config(Arch::TopK), 1); }
TEST(Gradients, TopKWithEncoderBiasMeanNormalisation) {
  ModelConfig m = small_config(Arch::TopK);
  m.encoder_bias = true;
  m.mse_normalization = MseNormalization::Mean;
  check_gradients(m, 2);
}
TEST(Gradients, TopKAuxK) {
  ModelConfig m = small_config(Arch::TopK, 6, 16, 1, 1, 3);
  m.dead_threshold_tokens = 5;
  m.k_aux = 3;
  check_gradients(m, 3, /*dead_latents=*/6);
}
// The Gated SAE's auxiliary reconstruction decodes through a frozen (stop-gradient) decoder: W_dec's gradient is
// the derivative of the loss without that term; b_pre (= b_dec) is both frozen there and live in the encoder input,
// so it is checked through the end-to-end training tests instead.
double gated_objective(const SaeStats& s, const std::string& param) {
  return param == "W_dec" ? s.loss - s.aux : s.loss;
}
TEST(Gradients, Gated) {
  ModelConfig m = small_config(Arch::Gated);
  m.l1_coeff = 0.5f;
  check_gradients(m, 4, 0, gated_objective, "b_pre");
}
TEST(Gradients, Switch) { check_gradients(small_config(Arch::Switch, 6, 16, 4, 1, 3), 5); }
TEST(Gradients, SwitchHeaviside) {
  ModelConfig m = small_config(Arch::Switch, 6, 16, 4, 1, 3);
  m.weight = ExpertWeight::Uniform;
  check_gradients(m, 6);
}
TEST(Gradients, ScaleNoFeatureScaling) { check_gradients(scale_cfg(FeatureScaling::None), 7); }
TEST(Gradients, ScaleMean) { check_gradients(scale_cfg(FeatureScaling::Mean), 8); }
TEST(Gradients, ScaleIdentity) { check_gradients(scale_cfg(FeatureScaling::Identity), 9); }
TEST(Gradients, ScaleIdentityWideExperts) {  // n > d: the rectangular identity covers only the first d latents
  ModelConfig m = small_config(Arch::Scale, 4, 24, 3, 2, 5);
  m.feature_scaling = FeatureScaling::Identity;
  check_gradients(m, 10);
}
TEST(Gradients, ScaleLearned) { check_gradients(scale_cfg(FeatureScaling::Learned), 11); }
TEST(Gradients, ScaleReferenceLowPass) { check_gradients(scale_cfg(FeatureScaling::Reference), 12); }
TEST(Gradients, ScaleDoubleSoftmaxWeightedSelection) {
  ModelConfig m = scale_cfg(FeatureScaling::Mean);
  m.weight = ExpertWeight::DoubleSoftmax;
  m.select_on = SelectOn::Weighted;
  check_gradients(m, 13);
}
TEST(Gradients, ScaleUniformTop1Biases) {
  ModelConfig m = scale_cfg(FeatureScaling::Mean);
  m.weight = ExpertWeight::Uniform;
  m.lb_assignment = LbAssignment::Top1;
  m.encoder_bias = true;
  m.router_bias = true;
  check_gradients(m, 14);
}
TEST(Gradients, ScaleCompatReference) {
  ModelConfig m = scale_cfg(FeatureScaling::Mean);
  apply_compat_reference(m);
  check_gradients(m, 15);
}
TEST(Gradients, ScaleColumnNormDecoder) {
  ModelConfig m = scale_cfg(FeatureScaling::None);
  m.decoder_norm = DecoderNorm::Column;
  check_gradients(m, 16);
}
TEST(Gradients, ScaleAllExpertsActive) {
  ModelConfig m = small_config(Arch::Scale, 5, 12, 3, 3, 4);
  m.feature_scaling = FeatureScaling::Mean;
  check_gradients(m, 17);
}
