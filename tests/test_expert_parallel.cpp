// Expert parallelism (src/parallel/expert_parallel.h, MoeSae with an ExpertExchange) against the 1-process model.
//
// Like tests/test_data_parallel.cpp this binary has its own main() and runs at whatever rank count it is launched
// with (alone: 1 rank, LocalComm; under mpirun -np P: P ranks), every rank running every test with the collective
// calls ahead of the ASSERTs, and the verdict all-reduced (tests/mpi_gtest.h). tests/cli/expert_parallel.sh runs
// it at 2, 3 and 4 ranks; ctest runs each test alone at 1 rank too.
//
// The experts are split into contiguous blocks, unevenly where E is not a multiple of P (E = 7 here). Rank r holds
// rows [r B/P, (r+1) B/P) of each global batch (B = 96). The reference is the same model without expert
// parallelism, in the same process, on the whole batch; its parameters are sliced into the sharded model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "comm/communicator.h"
#include "core/rng.h"
#include "parallel/data_parallel.h"
#include "parallel/expert_parallel.h"
#include "sae/sae.h"
#include "mpi_gtest.h"
#include "sae_test_util.h"

using namespace moesae;

namespace {

comm::Communicator* g_comm = nullptr;  // set by main()

constexpr int kD = 16, kK = 6;
constexpr int64_t kB = 96;
constexpr double kTol = 2e-5;  // relative: summation order only

int rank() { return g_comm->rank(); }
int ranks() { return g_comm->size(); }

Tensor global_batch(uint64_t seed) { return moesae::testing::synthetic_rows(kB, kD, 256, 8, 5, seed); }
Tensor my_rows(const Tensor& global) {
  const int64_t b = kB / ranks();
  Tensor h = host_tensor(b, kD);
  std::memcpy(h.host<float>(), global.row_range(rank() * b, (rank() + 1) * b).host<float>(), size_t(b * kD) * 4);
  return h;
}

std::vector<float> floats(Backend& be, const Tensor& t) {
  Tensor h = be.to_host(t);
  return std::vector<float>(h.host<float>(), h.host<float>() + h.numel());
}
std::vector<int32_t> ints(Backend& be, const Tensor& t) {
  Tensor h = be.to_host(t);
  return std::vector<int32_t>(h.host<int32_t>(), h.host<int32_t>() + h.numel());
}

// ||got - want|| <= tol ||want|| (Frobenius).
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  EXPECT_LE(std::sqrt(num), tol * std::sqrt(den) + 1e-30)
      << what << ": relative Frobenius error " << std::sqrt(num) / std::max(std::sqrt(den), 1e-30) << " (rank "
      << rank() << ")";
}

// The rows [first, first + rows) of a whole parameter (vectors: elements), as the sharded model holds them.
void load_slice(Backend& be, const Param& whole, Param& shard) {
  Tensor h = be.to_host(whole.value);
  const int64_t w = shard.row_elems(), n = shard.value.numel();
  Tensor part = shard.value.rank() == 1 ? host_vector(n) : host_tensor(shard.value.rows(), w);
  std::memcpy(part.host<float>(), h.host<float>() + shard.shard_first * w, size_t(n) * 4);
  be.upload(part, shard.value);
}

struct Variant {
  std::string name;
  ModelConfig model;
};

ModelConfig scale(int E, int e, FeatureScaling fs) {
  ModelConfig m = moesae::testing::family_config(Arch::Scale, kD, E * 16, kK, E, e, 4 * kB);
  m.feature_scaling = fs;
  return m;
}

std::vector<Variant> variants() {
  std::vector<Variant> v;
  v.push_back({"switch E8", moesae::testing::family_config(Arch::Switch, kD, 128, kK, 8, 1, 4 * kB)});
  v.push_back({"scale E8 e2 FS mean", scale(8, 2, FeatureScaling::Mean)});
  v.push_back({"scale E7 e3 FS reference", scale(7, 3, FeatureScaling::Reference)});
  v.push_back({"scale E7 e2 FS learned", scale(7, 2, FeatureScaling::Learned)});
  v.push_back({"scale E8 e2 FS identity", scale(8, 2, FeatureScaling::Identity)});
  ModelConfig w = scale(8, 4, FeatureScaling::Mean);  // the reference code's choices
  w.select_on = SelectOn::Weighted;
  w.weight = ExpertWeight::DoubleSoftmax;
  w.encoder_bias = true;
  w.lb_assignment = LbAssignment::Top1;
  v.push_back({"scale E8 e4 weighted select, double softmax, b_enc, top-1 lb", w});
  ModelConfig small = scale(4, 4, FeatureScaling::Mean);  // every token on every rank (e = E)
  small.dict_size = 4 * 4;                                 // n = 4: a rank may hold fewer than k candidates
  v.push_back({"scale E4 e4 n4 (fewer than k candidates per rank)", small});
  return v;
}

// ---- one forward and backward step ----------------------------------------------------------------------------

void check_step(const Variant& v) {
  SCOPED_TRACE(v.name);
  const ModelConfig& mc = v.model;
  auto be = make_cpu_backend(1);
  auto ref = make_sae(mc, *be);
  Rng rng(11);
  ref->init(rng);
  // Every parameter random (omega far from 0, so Feature Scaling's every term counts).
  uint64_t seed = 100;
  for (Param* p : ref->params().trainable())
    moesae::testing::randomize(*be, p->value, ++seed, p->name == "omega" ? 0.5 : 0.3);
  ref->apply_decoder_constraint();

  ExpertParallel ep(*g_comm, *be, mc);
  auto sae = make_sae(mc, *be, &ep);
  DataParallel group(*g_comm);
  if (ranks() > 1) sae->set_batch_group(&group);
  for (Param* p : sae->params().all()) load_slice(*be, ref->params().get(p->name), *p);

  const Tensor xg = global_batch(3);
  SaeStats want = ref->forward(be->from_host(xg), true);
  ref->zero_grad();
  ref->backward();
  SaeStats got = sae->forward(be->from_host(my_rows(xg)), true);
  got = group.reduce_stats(got, kD);
  sae->zero_grad();
  sae->backward();
  group.all_reduce_gradients(sae->params(), *be, DataParallel::Which::Replicated);
  // Collectives first: every sharded gradient and value, whole, on rank 0.
  std::vector<std::pair<std::string, Tensor>> whole_grads;
  for (Param* p : sae->params().trainable()) whole_grads.push_back({p->name, gather_whole(*g_comm, *be, *p, p->grad)});
  const int64_t served = ep.served();
  int64_t served_total = served;
  g_comm->all_reduce(&served_total, 1, comm::ReduceOp::Sum);

  EXPECT_NEAR(got.loss, want.loss, kTol * std::fabs(want.loss));
  EXPECT_NEAR(got.mse, want.mse, kTol * std::fabs(want.mse));
  EXPECT_NEAR(got.lb, want.lb, kTol * std::fabs(want.lb));
  EXPECT_NEAR(got.l0, want.l0, 1e-9);
  // Dedup per destination: a token is served at most once per rank and at least once.
  EXPECT_GE(served_total, kB);
  EXPECT_LE(served_total, kB * std::min(ranks(), mc.active_experts));

  // This rank's tokens: reconstruction and code (ids and values, in Top-K order).
  const int64_t b = kB / ranks(), r0 = rank() * b;
  const std::vector<float> xhat_ref = floats(*be, ref->reconstruction());
  expect_close(floats(*be, sae->reconstruction()),
               std::vector<float>(xhat_ref.begin() + r0 * kD, xhat_ref.begin() + (r0 + b) * kD), kTol, "x_hat");
  const std::vector<int32_t> ids_ref = ints(*be, ref->code().ids), ids = ints(*be, sae->code().ids);
  const std::vector<float> vals_ref = floats(*be, ref->code().vals), vals = floats(*be, sae->code().vals);
  ASSERT_EQ(ids.size(), size_t(b * kK));
  size_t same = 0;
  for (int64_t i = 0; i < b * kK; ++i) {
    same += ids[i] == ids_ref[r0 * kK + i];
    EXPECT_NEAR(vals[i], vals_ref[r0 * kK + i], 1e-4 * (1 + std::fabs(vals_ref[r0 * kK + i])));
  }
  EXPECT_EQ(same, size_t(b * kK)) << "selected latents differ from the 1-process Top-K";

  // Gradients: replicated ones (all-reduced) on every rank; sharded ones whole on rank 0.
  for (auto& [name, whole] : whole_grads) {
    const std::vector<float> want_g = floats(*be, ref->params().get(name).grad);
    if (rank() == 0) expect_close(std::vector<float>(whole.host<float>(), whole.host<float>() + whole.numel()),
                                  want_g, kTol, "grad " + name);
    Param& p = sae->params().get(name);
    if (!p.sharded()) expect_close(floats(*be, p.grad), want_g, kTol, "grad " + name + " (replicated)");
  }
}

TEST(ExpertParallel, OneStepMatchesOneProcess) {
  for (const Variant& v : variants()) check_step(v);
}

// ---- the partition and the initialisation ---------------------------------------------------------------------

TEST(ExpertParallel, ContiguousBlocksCoverEveryExpertOnce) {
  for (int P = 1; P <= 6; ++P)
    for (int E = P; E <= 13; ++E) {
      ASSERT_EQ(ExpertParallel::first_expert_of(0, P, E), 0);
      ASSERT_EQ(ExpertParallel::first_expert_of(P, P, E), E);
      for (int r = 0; r < P; ++r) {
        const int a = ExpertParallel::first_expert_of(r, P, E), c = ExpertParallel::first_expert_of(r + 1, P, E);
        EXPECT_GE(c - a, E / P) << "P " << P << " E " << E << " rank " << r;
        EXPECT_LE(c - a, (E + P - 1) / P) << "P " << P << " E " << E << " rank " << r;
      }
    }
}

TEST(ExpertParallel, InitialisationIsTheOneProcessModelSliced) {
  const ModelConfig mc = scale(7, 2, FeatureScaling::Learned);
  auto be = make_cpu_backend(1);
  auto ref = make_sae(mc, *be);
  Rng r1(5);
  ref->init(r1);
  ExpertParallel ep(*g_comm, *be, mc);
  auto sae = make_sae(mc, *be, &ep);
  Rng r2(5);
  sae->init(r2);
  std::vector<std::pair<std::string, Tensor>> whole;
  for (Param* p : sae->params().all()) whole.push_back({p->name, gather_whole(*g_comm, *be, *p, p->value)});
  if (rank() != 0) return;
  for (auto& [name, t] : whole) {
    const Tensor want = be->to_host(ref->params().get(name).value);
    ASSERT_EQ(t.numel(), want.numel()) << name;
    EXPECT_EQ(0, std::memcmp(t.host<float>(), want.host<float>(), size_t(t.numel()) * 4)) << name << " differs";
  }
}

TEST(ExpertParallel, RefusesMoreRanksThanExperts) {
  ModelConfig mc = moesae::testing::family_config(Arch::Switch, kD, 16 * ranks(), kK, ranks(), 1, 4 * kB);
  auto be = make_cpu_backend(1);
  EXPECT_NO_THROW({ ExpertParallel ok(*g_comm, *be, mc); });
  if (ranks() > 1) {
    mc.experts = ranks() - 1;
    mc.dict_size = 16 * mc.experts;
    EXPECT_THROW({ ExpertParallel too_few(*g_comm, *be, mc); }, Error);
  }
  const ModelConfig topk = moesae::testing::family_config(Arch::TopK, kD, 64, kK, 1, 1, 4 * kB);
  ExpertParallel ep(*g_comm, *be, moesae::testing::family_config(Arch::Switch, kD, 64, kK, 4, 1, 4 * kB));
  EXPECT_THROW(make_sae(topk, *be, &ep), Error);
}

}  // namespace

int main(int argc, char** argv) { return moesae::testing::run_mpi_gtest(argc, argv, "expert_parallel", &g_comm); }
