// What one training step asks of its backend, counted on the CPU through CountingBackend: the number of backend
// operations (on CUDA, kernel launches: one or a few each) must not grow with the number of experts, since the
// experts' encoders and Feature Scaling run as grouped operations; and the calls that bring data back to the host
// (on CUDA, waits for the device) are a small fixed number per model: the step's statistics, the gradient norm,
// and per model the routing counts, the router's mean probabilities, omega, the dead-latent count and AuxK.
#include <gtest/gtest.h>

#include <cstring>
#include <sstream>

#include "../bench/train_step.h"
#include "backend/counting_backend.h"
#include "sae_test_util.h"

using namespace moesae;

namespace {

constexpr int kD = 32, kF = 512, kK = 8;
constexpr int64_t kBatch = 256;
constexpr int64_t kNeverDead = int64_t(1) << 29;  // dead-latent threshold in tokens: no latent is dead in 3 steps

struct StepCount {
  int64_t operations = 0, round_trips = 0;
  std::string detail;  // operations by name, for failure messages
};

// The third training step of a fresh model on synthetic rows (the first ones may take one-time paths), as a GPU
// backend gets it (grouped operations over all the groups at once).
StepCount count_step(const ModelConfig& mc) {
  auto cpu = make_cpu_backend(1);
  CountingBackend be(*cpu);
  be.set_group_rows_per_call(0);
  const Tensor rows = moesae::testing::synthetic_rows(kBatch, kD, 256, 8, 6, 11);
  bench::StepModel model = bench::make_step_model(mc, rows, 10, be);
  for (int s = 0; s < 2; ++s) bench::train_step(model, be);
  be.reset();
  bench::train_step(model, be);
  StepCount c{be.operations(), be.round_trips(), ""};
  std::ostringstream os;
  for (const auto& [name, n] : be.by_name()) os << name << " " << n << "; ";
  c.detail = os.str();
  return c;
}

ModelConfig moe(Arch arch, int experts, FeatureScaling fs, bool encoder_bias = false) {
  ModelConfig mc = moesae::testing::family_config(arch, kD, kF, kK, experts, arch == Arch::Scale ? 2 : 1,
                                                  kNeverDead);
  mc.feature_scaling = fs;
  mc.encoder_bias = encoder_bias;
  return mc;
}

}  // namespace

TEST(StepOperations, MoeStepDoesNotGrowWithTheNumberOfExperts) {
  for (Arch arch : {Arch::Switch, Arch::Scale})
    for (FeatureScaling fs : {FeatureScaling::None, FeatureScaling::Mean, FeatureScaling::Identity,
                              FeatureScaling::Learned, FeatureScaling::Reference})
      for (bool bias : {false, true}) {
        if (arch == Arch::Switch && fs != FeatureScaling::None) continue;
        const StepCount few = count_step(moe(arch, 4, fs, bias)), many = count_step(moe(arch, 32, fs, bias));
        std::ostringstream what;
        what << (arch == Arch::Scale ? "scale" : "switch") << " feature_scaling " << int(fs) << " encoder_bias "
             << bias << "\n  E=4:  " << few.detail << "\n  E=32: " << many.detail;
        EXPECT_EQ(many.operations, few.operations) << "backend operations per step, " << what.str();
        EXPECT_EQ(many.round_trips, few.round_trips) << what.str();
        // A few dozen operations in all (the per-expert loop it replaced issued ~6 per expert in the encoder).
        EXPECT_LT(many.operations, 150) << what.str();
      }
}

TEST(StepOperations, HostRoundTripsPerStep) {
  // Switch: routing counts, mean probabilities, statistics, gradient norm. Scale with Feature Scaling adds omega.
  EXPECT_EQ(count_step(moe(Arch::Switch, 8, FeatureScaling::None)).round_trips, 4);
  EXPECT_EQ(count_step(moe(Arch::Scale, 8, FeatureScaling::None)).round_trips, 4);
  EXPECT_EQ(count_step(moe(Arch::Scale, 8, FeatureScaling::Mean)).round_trips, 5);
  // TopK: the dead-latent count, statistics, gradient norm; AuxK's statistics while latents are dead.
  ModelConfig topk = moesae::testing::family_config(Arch::TopK, kD, kF, kK, 1, 1, kNeverDead);
  EXPECT_EQ(count_step(topk).round_trips, 3) << "no dead latents";
  topk.dead_threshold_tokens = 1;  // latents that did not fire in the last step are dead: AuxK runs
  const StepCount aux = count_step(topk);
  EXPECT_EQ(aux.round_trips, 4) << aux.detail;
  // Gated: statistics (with its sparsity and auxiliary terms in the same read back) and the gradient norm.
  EXPECT_EQ(count_step(moesae::testing::family_config(Arch::Gated, kD, kF, kK, 1, 1, kNeverDead)).round_trips,
            2);
}

// The CPU backend takes the experts a few at a time (group_rows_per_call), a GPU all at once: the same products per
// expert either way, so training gives the same bits.
TEST(StepOperations, ExpertRunsDoNotChangeTheResult) {
  for (FeatureScaling fs : {FeatureScaling::Mean, FeatureScaling::Identity, FeatureScaling::Learned})
    for (bool bias : {false, true}) {
      const ModelConfig mc = moe(Arch::Scale, 16, fs, bias);
      const Tensor rows = moesae::testing::synthetic_rows(kBatch, kD, 256, 8, 6, 11);
      std::vector<Tensor> params[2];
      for (int64_t rows_per_call : {int64_t(0), int64_t(40)}) {  // all experts at once; runs of about 40 rows
        auto cpu = make_cpu_backend(1);
        CountingBackend be(*cpu, false);
        be.set_group_rows_per_call(rows_per_call);
        bench::StepModel model = bench::make_step_model(mc, rows, 10, be);
        for (int s = 0; s < 3; ++s) bench::train_step(model, be);
        for (Param* p : model.sae->params().all()) params[rows_per_call ? 1 : 0].push_back(be.to_host(p->value));
      }
      ASSERT_EQ(params[0].size(), params[1].size());
      for (size_t i = 0; i < params[0].size(); ++i)
        EXPECT_EQ(0, std::memcmp(params[0][i].data<float>(), params[1][i].data<float>(), params[0][i].numel() * 4))
            << "parameter " << i << " after 3 steps, feature_scaling " << int(fs) << " encoder_bias " << bias;
    }
}
