// A full training run on the backend under test matches the same run on the CPU reference (make_cpu_backend(1)),
// for the TopK, Switch, Scale (Feature Scaling: mean) and Gated SAEs on small synthetic data: per-step losses (and
// their MSE terms) agree to 1e-3 relative, and on a held-out batch after training the selected latents agree for
// >= 99% of the (token, slot) entries and the reconstructions agree closely. A training step waits for the device
// no more than a handful of times (max_host_waits_per_step).
//
// Backends under test: "cuda" (make_cuda_backend, FP32 GEMM; skipped with the reason when no CUDA device is usable)
// and "cpu3" (make_cpu_backend(3)), which runs everywhere and keeps the comparison logic itself tested.
//
// The step is the trainer's (train_step, src/train/train_step.h) with the scheduled learning rate.
//
// Sensitivity: Top-K selection is discontinuous, so two correct backends whose roundings differ can pick different
// latents at a near-tie, and training then drifts apart (Adam turns a tiny gradient difference into an lr-sized
// step). The learning rate is chosen so that, in a CPU experiment adding up to 1e-6 relative noise to every
// arithmetic output, all four models stay within the tolerances. When a loss comparison fails, the message says at
// which step the selections first differed: a failure at step 0-1 with identical selections is a bug, a drift that
// starts after a selection flip is more likely a near-tie (check the selection agreement it reports).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "data/synthetic.h"
#include "sae/sae.h"
#include "train/adam.h"
#include "train/config.h"
#include "train/train_step.h"
#include "sae_test_util.h"

using namespace moesae;

namespace {

constexpr int kD = 32, kF = 256, kE = 8, kActive = 2, kK = 8;
constexpr int64_t kBatch = 256, kSteps = 30;
constexpr double kLr = 8e-4;

struct BackendCase {
  std::string name;
  bool cuda = false;
  int cpu_threads = 0;
};

struct ModelCase {
  std::string name;
  Arch arch;
};

void PrintTo(const BackendCase& c, std::ostream* os) { *os << c.name; }
void PrintTo(const ModelCase& c, std::ostream* os) { *os << c.name; }

// Latents count as dead after 4 steps without firing, so the AuxK path (threshold_mask, masked Top-K) runs.
ModelConfig model_config(Arch arch) { return moesae::testing::family_config(arch, kD, kF, kK, kE, kActive, 4 * kBatch); }

// Synthetic activations with sparse structure: kSteps training batches followed by one held-out batch.
Tensor make_data() { return moesae::testing::synthetic_rows((kSteps + 1) * kBatch, kD, 512, kE, 6, 17); }

// The active (token, latent) pairs of a code: id >= 0 and value > 0.
using Pairs = std::set<std::pair<int64_t, int32_t>>;
Pairs active_pairs(const Tensor& ids, const Tensor& vals) {
  Pairs out;
  for (int64_t b = 0; b < ids.rows(); ++b)
    for (int64_t j = 0; j < ids.cols(); ++j) {
      const int32_t id = ids.host<int32_t>()[b * ids.cols() + j];
      if (id >= 0 && vals.host<float>()[b * vals.cols() + j] > 0.f) out.insert({b, id});
    }
  return out;
}

// |a ∩ b| and |a ∪ b|.
std::pair<int64_t, int64_t> overlap(const Pairs& a, const Pairs& b) {
  int64_t both = 0;
  for (const auto& p : a) both += int64_t(b.count(p));
  return {both, int64_t(a.size() + b.size()) - both};
}

struct RunResult {
  std::vector<double> losses, mse;  // per training step: the objective and its reconstruction error
  std::vector<Pairs> selected;      // per training step: the active (token, latent) pairs
  double heldout_loss = 0;
  Tensor ids, vals, xhat;      // held-out code and reconstruction (host)
  int64_t max_host_waits = 0;  // the most times one training step waited for the device (Backend::host_waits)
};

// The host round trips a training step may make (CUDA; the CPU backend never waits; see train/train_step.h): one
// at the end for the statistics and the gradient norm together; Switch and Scale add the routing counts (the
// router's mean probabilities and Scale's omega arrive with them); TopK adds the dead-latent count and, while
// latents are dead, AuxK's normalisation.
int64_t max_host_waits_per_step(Arch arch) {
  switch (arch) {
    case Arch::TopK: return 3;
    case Arch::Switch: return 2;
    case Arch::Scale: return 2;
    case Arch::Gated: return 1;
  }
  return 0;
}

RunResult train(Backend& be, const ModelConfig& mc, const Tensor& data) {
  auto sae = make_sae(mc, be);
  Rng rng(5);
  sae->init(rng);
  TrainConfig tc;
  tc.steps = kSteps;
  tc.batch_size = kBatch;
  Adam adam(sae->params(), be, tc);
  Tensor x = be.empty(kBatch, mc.d);
  RunResult r;
  for (int64_t step = 0; step < kSteps; ++step) {
    const Tensor batch = data.row_range(step * kBatch, (step + 1) * kBatch);
    if (step == 0) sae->init_biases_from_batch(batch);
    be.upload(batch, x);
    const int64_t waits = be.host_waits();
    StepOptions options;
    options.lr = lr_at(tc, kLr, step);
    options.grad_clip = tc.grad_clip;
    const SaeStats s = train_step(*sae, adam, x, options).stats;
    r.max_host_waits = std::max(r.max_host_waits, be.host_waits() - waits);
    r.losses.push_back(s.loss);
    r.mse.push_back(s.mse);
    r.selected.push_back(active_pairs(be.to_host(sae->code().ids), be.to_host(sae->code().vals)));
  }
  sae->apply_decoder_constraint();
  Tensor heldout = be.from_host(data.row_range(kSteps * kBatch, (kSteps + 1) * kBatch));
  r.heldout_loss = sae->forward(heldout, false).loss;
  r.ids = be.to_host(sae->code().ids);
  r.vals = be.to_host(sae->code().vals);
  r.xhat = be.to_host(sae->reconstruction());
  return r;
}

class TrainParity : public ::testing::TestWithParam<std::tuple<BackendCase, ModelCase>> {
 protected:
  void SetUp() override {
    if (std::get<0>(GetParam()).cuda) {
      std::string why;
      if (!cuda_backend_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
    }
  }
  // Built just before its run: make_cpu_backend(n) sets the process-wide thread counts.
  std::unique_ptr<Backend> backend_under_test() {
    const BackendCase& c = std::get<0>(GetParam());
    if (!c.cuda) return make_cpu_backend(c.cpu_threads);
    CudaOptions o;
    o.precision = GemmPrecision::FP32;
    return make_cuda_backend(o);
  }
};

}  // namespace

TEST_P(TrainParity, MatchesCpuReference) {
  const ModelCase& model = std::get<1>(GetParam());
  const ModelConfig mc = model_config(model.arch);
  const Tensor data = make_data();

  RunResult want, got;
  {
    auto ref = make_cpu_backend(1);
    want = train(*ref, mc, data);
  }
  {
    auto be = backend_under_test();
    got = train(*be, mc, data);
  }

  EXPECT_LE(got.max_host_waits, max_host_waits_per_step(model.arch))
      << "host round trips in one training step on " << std::get<0>(GetParam()).name;
  if (!std::get<0>(GetParam()).cuda) EXPECT_EQ(got.max_host_waits, 0) << "the CPU backend never waits";

  // The reference run learned something (so the agreement below is not agreement on nothing).
  ASSERT_EQ(want.losses.size(), size_t(kSteps));
  const double first5 = std::accumulate(want.mse.begin(), want.mse.begin() + 5, 0.0);
  const double last5 = std::accumulate(want.mse.end() - 5, want.mse.end(), 0.0);
  EXPECT_LT(last5, 0.95 * first5) << "the reference run did not train (MSE over the first vs the last 5 steps)";

  // Per-step losses and MSE. Failure messages carry the selection agreement, to tell a bug from a near-tie drift.
  ASSERT_EQ(got.losses.size(), want.losses.size());
  int64_t first_flip = -1;
  for (size_t s = 0; s < want.losses.size(); ++s) {
    const auto [both, either] = overlap(want.selected[s], got.selected[s]);
    if (both != either && first_flip < 0) first_flip = int64_t(s);
    std::ostringstream context;
    context << "step " << s << ": " << both << " of " << either << " active (token, latent) pairs agree; selections "
            << (first_flip < 0 ? "identical so far" : "first differed at step " + std::to_string(first_flip));
    EXPECT_NEAR(got.losses[s], want.losses[s], 1e-3 * std::fabs(want.losses[s])) << "loss, " << context.str();
    EXPECT_NEAR(got.mse[s], want.mse[s], 1e-3 * std::fabs(want.mse[s])) << "MSE, " << context.str();
  }
  EXPECT_NEAR(got.heldout_loss, want.heldout_loss, 1e-3 * std::fabs(want.heldout_loss)) << "held-out loss";

  // Held-out selection: slot by slot for the Top-K models (their ids are the selection), and as sets of active
  // (token, latent) pairs for every model (the Gated SAE's ids are all latents; its values decide).
  ASSERT_EQ(got.ids.rows(), want.ids.rows());
  ASSERT_EQ(got.ids.cols(), want.ids.cols());
  const int64_t B = want.ids.rows(), k = want.ids.cols();
  std::vector<bool> token_agrees(B, true);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < k; ++j) {
      const int64_t i = b * k + j;
      if (got.ids.host<int32_t>()[i] != want.ids.host<int32_t>()[i] ||
          (got.vals.host<float>()[i] > 0.f) != (want.vals.host<float>()[i] > 0.f))
        token_agrees[b] = false;
    }
  if (model.arch != Arch::Gated) {
    int64_t same = 0;
    for (int64_t i = 0; i < B * k; ++i) same += got.ids.host<int32_t>()[i] == want.ids.host<int32_t>()[i];
    EXPECT_GE(double(same), 0.99 * double(B * k)) << same << " of " << B * k << " held-out (token, slot) ids agree";
  }
  const Pairs pw = active_pairs(want.ids, want.vals), pg = active_pairs(got.ids, got.vals);
  ASSERT_GT(pw.size(), size_t(B)) << "the reference code is (nearly) empty";
  const auto [both, either] = overlap(pw, pg);
  EXPECT_GE(double(both), 0.99 * double(either))
      << both << " of " << either << " active held-out (token, latent) pairs agree";

  // Reconstructions: tight on the tokens whose selection agrees (at least 95% of them); a token that selected
  // differently at a near-tie may differ by more.
  ASSERT_EQ(got.xhat.numel(), want.xhat.numel());
  double scale = 0, num = 0, den = 0;
  for (int64_t i = 0; i < want.xhat.numel(); ++i)
    scale = std::max(scale, double(std::fabs(want.xhat.host<float>()[i])));
  int64_t agreeing = 0;
  for (int64_t b = 0; b < B; ++b) {
    if (!token_agrees[b]) continue;
    ++agreeing;
    for (int64_t t = 0; t < mc.d; ++t) {
      const double w = want.xhat.host<float>()[b * mc.d + t], g = got.xhat.host<float>()[b * mc.d + t];
      num += (g - w) * (g - w);
      den += w * w;
      ASSERT_NEAR(g, w, 1e-3 * (1.0 + scale)) << "held-out reconstruction of token " << b << " at " << t;
    }
  }
  EXPECT_GE(agreeing, B * 95 / 100) << "held-out tokens with identical selections";
  EXPECT_LE(std::sqrt(num), 1e-3 * std::sqrt(den)) << "held-out reconstruction of the agreeing tokens, relative "
                                                      "Frobenius error";
}

INSTANTIATE_TEST_SUITE_P(
    Models, TrainParity,
    ::testing::Combine(::testing::Values(BackendCase{"cpu3", false, 3}, BackendCase{"cuda", true, 0}),
                       ::testing::Values(ModelCase{"TopK", Arch::TopK}, ModelCase{"Switch", Arch::Switch},
                                         ModelCase{"Scale", Arch::Scale}, ModelCase{"Gated", Arch::Gated})),
    [](const ::testing::TestParamInfo<std::tuple<BackendCase, ModelCase>>& info) {
      return std::get<0>(info.param).name + "_" + std::get<1>(info.param).name;
    });
