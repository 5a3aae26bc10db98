// What one training step asks of its backend, counted on the CPU through CountingBackend: the number of backend
// operations (on CUDA, kernel launches: one or a few each) must not grow with the number of experts, since the
// experts' encoders and Feature Scaling run as grouped operations; and the calls that bring data back to the host
// (on CUDA, waits for the device) are only those the host must wait for: the routing counts, TopK's dead-latent
// count and AuxK's normalisation, and one at the end of the step for the statistics and the gradient norm together
// (the router's mean probabilities and omega are queued to arrive with the counts).
#include <gtest/gtest.h>

#include <cstring>
#include <map>
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
  std::map<std::string, int64_t> by_name;
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
  for (int s = 0; s < 2; ++s) bench::train_step(model);
  be.reset();
  bench::train_step(model);
  StepCount c{be.operations(), be.round_trips(), be.by_name(), ""};
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
  // Switch and Scale: the routing counts, then the end of the step. Omega, the mean probabilities, the statistics
  // and the gradient norm are queued read-backs that ride on those two.
  for (const ModelConfig& mc : {moe(Arch::Switch, 8, FeatureScaling::None), moe(Arch::Scale, 8, FeatureScaling::None),
                                moe(Arch::Scale, 8, FeatureScaling::Mean), moe(Arch::Scale, 8, FeatureScaling::Learned)}) {
    const StepCount c = count_step(mc);
    EXPECT_EQ(c.round_trips, 2) << c.detail;
    EXPECT_EQ(c.by_name.count("group_by_expert") ? c.by_name.at("group_by_expert") : 0, 1) << c.detail;
    EXPECT_EQ(c.by_name.count("synchronize") ? c.by_name.at("synchronize") : 0, 1) << c.detail;
  }
  ModelConfig top1 = moe(Arch::Switch, 8, FeatureScaling::None);
  top1.lb_assignment = LbAssignment::Top1;  // the argmax per token is queued as well
  EXPECT_EQ(count_step(top1).round_trips, 2);
  // TopK: the dead-latent count and the end of the step; AuxK's normalisation too while latents are dead.
  ModelConfig topk = moesae::testing::family_config(Arch::TopK, kD, kF, kK, 1, 1, kNeverDead);
  EXPECT_EQ(count_step(topk).round_trips, 2) << "no dead latents";
  topk.dead_threshold_tokens = 1;  // latents that did not fire in the last step are dead: AuxK runs
  const StepCount aux = count_step(topk);
  EXPECT_EQ(aux.round_trips, 3) << aux.detail;
  // Gated: the end of the step only (its sparsity and auxiliary terms are in the statistics' read-back).
  EXPECT_EQ(count_step(moesae::testing::family_config(Arch::Gated, kD, kF, kK, 1, 1, kNeverDead)).round_trips,
            1);
}

// The counting model of a queued read-back (as on CUDA): it arrives with the next round trip, or costs one of its own.
TEST(StepOperations, QueuedReadBacksRideOnTheNextRoundTrip) {
  auto cpu = make_cpu_backend(1);
  CountingBackend be(*cpu);
  const Tensor rows = moesae::testing::synthetic_rows(kBatch, kD, 256, 8, 6, 11);
  const Tensor x = be.from_host(rows);
  be.reset();
  Backend::Pending p = be.reduce_many_later({{Backend::ReduceOp::SumSquares, x}});
  Tensor h = host_tensor(kBatch, kD);
  Backend::Pending d = be.download_later(x, h);
  EXPECT_FALSE(p.ready() || d.ready());
  EXPECT_EQ(be.round_trips(), 0);
  be.threshold_mask(be.zeros_vector(4, DType::I32), 0, be.empty_vector(4, DType::I32));
  EXPECT_EQ(be.round_trips(), 1);
  EXPECT_TRUE(p.ready() && d.ready());
  EXPECT_EQ(p.get()[0], cpu->sum_squares(x));
  EXPECT_EQ(0, std::memcmp(h.data<float>(), rows.data<float>(), size_t(rows.numel()) * 4));
  EXPECT_EQ(be.round_trips(), 1);
  Backend::Pending alone = be.reduce_many_later({{Backend::ReduceOp::Sum, x}});
  EXPECT_EQ(alone.get()[0], cpu->sum(x));
  EXPECT_EQ(be.round_trips(), 2) << "asked for first: a round trip of its own";
  EXPECT_EQ(be.sum(x), cpu->sum(x));
  EXPECT_EQ(be.round_trips(), 3) << "reduce_many is one round trip";
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
        for (int s = 0; s < 3; ++s) bench::train_step(model);
        for (Param* p : model.sae->params().all()) params[rows_per_call ? 1 : 0].push_back(be.to_host(p->value));
      }
      ASSERT_EQ(params[0].size(), params[1].size());
      for (size_t i = 0; i < params[0].size(); ++i)
        EXPECT_EQ(0, std::memcmp(params[0][i].data<float>(), params[1][i].data<float>(), params[0][i].numel() * 4))
            << "parameter " << i << " after 3 steps, feature_scaling " << int(fs) << " encoder_bias " << bias;
    }
}
