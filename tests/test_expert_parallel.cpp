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

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "comm/communicator.h"
#include "core/rng.h"
#include "parallel/data_parallel.h"
#include "parallel/expert_parallel.h"
#include "sae/sae.h"
#include "mpi_gtest.h"
#include "sae_test_util.h"
#include "slice_source.h"
#include "tensor_compare.h"
#include "temp_dir.h"
#include "train/trainer.h"

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

std::vector<float> floats(Backend& be, const Tensor& t) { return moesae::testing::host_floats(be, t); }
std::vector<int32_t> ints(Backend& be, const Tensor& t) { return moesae::testing::host_ints(be, t); }
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what) {
  moesae::testing::expect_relative_close(got, want, tol, what + " (rank " + std::to_string(rank()) + ")");
}

// The rows [first, first + rows) of a whole parameter (vectors: elements), as the sharded model holds them.
void load_slice(Backend& from, const Param& whole, Backend& be, Param& shard) {
  Tensor h = from.to_host(whole.value);
  const int64_t w = shard.row_elems(), n = shard.value.numel();
  Tensor part = shard.value.rank() == 1 ? host_vector(n) : host_tensor(shard.value.rows(), w);
  std::memcpy(part.host<float>(), h.host<float>() + shard.shard_first * w, size_t(n) * 4);
  be.upload(part, shard.value);
}

struct Variant {
  std::string name;
  ModelConfig model;
  // b_g value of experts 0 and 1 (router_bias): a large one routes every token there, so that the ranks holding
  // other experts serve no token at all. 0: random like the other parameters.
  float hot_router_bias = 0;
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
  ModelConfig hot = scale(8, 2, FeatureScaling::Mean);
  hot.router_bias = true;
  v.push_back({"scale E8 e2, every token routed to experts 0 and 1 (the other ranks serve none)", hot, 50.f});
  // A TopK SAE's dictionary in one block per rank (uneven at 3 ranks), with AuxK over the dead latents.
  v.push_back({"topk F128 (dictionary sharded), AuxK", moesae::testing::family_config(Arch::TopK, kD, 128, kK, 1, 1, kB)});
  ModelConfig t = moesae::testing::family_config(Arch::TopK, kD, 100, kK, 1, 1, kB);
  t.encoder_bias = true;
  t.k_aux = 5;
  v.push_back({"topk F100, b_enc, k_aux 5", t});
  ModelConfig narrow = moesae::testing::family_config(Arch::TopK, kD, 12, kK, 1, 1, kB);  // 3 latents a rank at 4
  narrow.k_aux = 4;
  v.push_back({"topk F12 (fewer latents per rank than k at 3 and 4 ranks)", narrow});
  return v;
}

// ---- one forward and backward step ----------------------------------------------------------------------------

// The reference on the CPU; the expert-parallel model on `device` (nullptr: the CPU too), where GEMMs may round
// differently: then `tol` is looser and a near-tie may select another latent (`min_same` of the selections equal).
void check_step(const Variant& v, Backend* device = nullptr, double tol = kTol, double min_same = 1.0) {
  SCOPED_TRACE(v.name);
  const ModelConfig& mc = v.model;
  auto be = make_cpu_backend(1);
  Backend& xb = device ? *device : *be;
  auto ref = make_sae(mc, *be);
  Rng rng(11);
  ref->init(rng);
  // Every parameter random (omega far from 0, so Feature Scaling's every term counts).
  uint64_t seed = 100;
  for (Param* p : ref->params().trainable())
    moesae::testing::randomize(*be, p->value, ++seed, p->name == "omega" ? 0.5 : 0.3);
  ref->apply_decoder_constraint();
  if (v.hot_router_bias != 0) {
    Param& bg = ref->params().get("b_g");
    Tensor h = be->to_host(bg.value);
    h.host<float>()[0] = h.host<float>()[1] = v.hot_router_bias;
    be->upload(h, bg.value);
  }
  {  // every third latent dead (AuxK works on those)
    Param& fired = ref->params().get("tokens_since_fired");
    Tensor h = be->to_host(fired.value);
    for (int64_t f = 0; f < h.numel(); ++f) h.host<int32_t>()[f] = f % 3 == 0 ? int32_t(mc.dead_threshold_tokens + 1) : 0;
    be->upload(h, fired.value);
  }

  ExpertParallel ep(*g_comm, xb, mc);
  auto sae = make_sae(mc, xb, &ep);
  DataParallel group(*g_comm);
  if (ranks() > 1) sae->set_batch_group(&group);
  for (Param* p : sae->params().all()) load_slice(*be, ref->params().get(p->name), xb, *p);

  const Tensor xg = global_batch(3);
  SaeStats want = ref->forward(be->from_host(xg), true);
  ref->zero_grad();
  ref->backward();
  SaeStats got = sae->forward(xb.from_host(my_rows(xg)), true);
  got = group.reduce_stats(got, kD);
  sae->zero_grad();
  sae->backward();
  group.all_reduce_gradients(sae->params(), xb, DataParallel::Which::Replicated);
  // Collectives first: every sharded gradient and value, whole, on rank 0.
  std::vector<std::pair<std::string, Tensor>> whole_grads;
  for (Param* p : sae->params().trainable()) whole_grads.push_back({p->name, gather_whole(*g_comm, xb, *p, p->grad)});
  const int64_t served = ep.served();
  int64_t served_total = served;
  g_comm->all_reduce(&served_total, 1, comm::ReduceOp::Sum);

  EXPECT_NEAR(got.loss, want.loss, tol * std::fabs(want.loss));
  EXPECT_NEAR(got.mse, want.mse, tol * std::fabs(want.mse));
  EXPECT_NEAR(got.lb, want.lb, tol * std::fabs(want.lb));
  EXPECT_NEAR(got.l0, want.l0, min_same < 1 ? 0.05 : 1e-9);
  EXPECT_NEAR(got.aux, want.aux, tol * std::fabs(want.aux));
  if (mc.arch == Arch::TopK) {
    EXPECT_GT(want.aux, 0.0) << "AuxK did not run";
    EXPECT_EQ(served_total, kB * ranks()) << "every token visits every block of the dictionary";
  } else {  // dedup per destination: a token is served at most once per rank and at least once
    EXPECT_GE(served_total, kB);
    EXPECT_LE(served_total, kB * std::min(ranks(), mc.active_experts));
  }
  if (v.hot_router_bias != 0)  // experts 0 and 1 live on rank 0 at every rank count here (E = 8, P <= 4)
    EXPECT_EQ(served, rank() == 0 ? kB : 0) << "rank " << rank() << " served " << served << " tokens";

  // This rank's tokens: reconstruction and code (ids and values, in Top-K order).
  const int64_t b = kB / ranks(), r0 = rank() * b;
  const std::vector<float> xhat_ref = floats(*be, ref->reconstruction());
  expect_close(floats(xb, sae->reconstruction()),
               std::vector<float>(xhat_ref.begin() + r0 * kD, xhat_ref.begin() + (r0 + b) * kD), tol, "x_hat");
  const std::vector<int32_t> ids_ref = ints(*be, ref->code().ids), ids = ints(xb, sae->code().ids);
  const std::vector<float> vals_ref = floats(*be, ref->code().vals), vals = floats(xb, sae->code().vals);
  ASSERT_EQ(ids.size(), size_t(b * kK));
  size_t same = 0;
  for (int64_t i = 0; i < b * kK; ++i) {
    const bool eq = ids[i] == ids_ref[r0 * kK + i];
    same += eq;
    if (eq) EXPECT_NEAR(vals[i], vals_ref[r0 * kK + i], 1e-4 * (1 + std::fabs(vals_ref[r0 * kK + i])));
  }
  EXPECT_GE(double(same), min_same * double(b * kK)) << "selected latents differ from the 1-process Top-K";

  // Gradients: replicated ones (all-reduced) on every rank; sharded ones whole on rank 0.
  for (auto& [name, whole] : whole_grads) {
    const std::vector<float> want_g = floats(*be, ref->params().get(name).grad);
    if (rank() == 0) expect_close(std::vector<float>(whole.host<float>(), whole.host<float>() + whole.numel()),
                                  want_g, min_same < 1 ? 20 * tol : tol, "grad " + name);
    Param& p = sae->params().get(name);
    if (!p.sharded()) expect_close(floats(xb, p.grad), want_g, min_same < 1 ? 20 * tol : tol, "grad " + name + " (replicated)");
  }
}

TEST(ExpertParallel, OneStepMatchesOneProcess) {
  for (const Variant& v : variants()) check_step(v);
}

// The same with the expert-parallel model on the CUDA backend (exchanges staged through the host), against the
// CPU reference. Skipped where no GPU is visible (every rank sees the same machine's answer).
TEST(ExpertParallel, OneStepOnCudaMatchesOneProcessOnCpu) {
  std::string why;
  if (!cuda_backend_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
  BackendOptions o;
  o.kind = BackendKind::Cuda;
  auto cuda = make_backend(o);
  for (const Variant& v : variants()) check_step(v, cuda.get(), 1e-4, 0.98);
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
  for (FeatureScaling fs : {FeatureScaling::Learned, FeatureScaling::Reference}) {
    const ModelConfig mc = scale(7, 2, fs);
    auto be = make_cpu_backend(1);
    auto ref = make_sae(mc, *be);
    Rng r1(5);
    ref->init(r1);
    ExpertParallel ep(*g_comm, *be, mc);
    auto sae = make_sae(mc, *be, &ep);
    Rng r2(5);
    sae->init(r2);
    EXPECT_EQ(r1.next_u64(), r2.next_u64()) << "the generators must end in the same state";
    std::vector<std::pair<std::string, Tensor>> whole;
    for (Param* p : sae->params().all()) whole.push_back({p->name, gather_whole(*g_comm, *be, *p, p->value)});
    if (fs == FeatureScaling::Reference) {  // the reference code's A starts at the identity
      const std::vector<float> a = floats(*be, sae->params().get("A_lowpass").value);
      for (int i = 0; i < kD; ++i)
        for (int j = 0; j < kD; ++j) ASSERT_EQ(a[size_t(i * kD + j)], i == j ? 1.f : 0.f) << "A[" << i << "," << j << "]";
    }
    if (rank() != 0) continue;
    for (auto& [name, t] : whole) {
      const Tensor want = be->to_host(ref->params().get(name).value);
      ASSERT_EQ(t.numel(), want.numel()) << name;
      EXPECT_EQ(0, std::memcmp(t.host<float>(), want.host<float>(), size_t(t.numel()) * 4)) << name << " differs";
    }
  }
}

// Shard files of other steps and other shard counts go; exactly the kept set's files stay (local files, rank 0).
TEST(ExpertParallel, StaleShardsAreRemovedExactly) {
  if (rank() != 0) return;
  moesae::testing::TempDir tmp;
  const std::string ckpt = tmp.file("r.ckpt.h5");
  const std::vector<std::string> names = {"r.ckpt.h5.step5.shard0of2", "r.ckpt.h5.step5.shard1of2",
                                          "r.ckpt.h5.step5.shard5of20", "r.ckpt.h5.step5.shard1of24",
                                          "r.ckpt.h5.step4.shard0of2",  "r.ckpt.h5.step50.shard0of2",
                                          "r.ckpt.h5x.step5.shard0of2", "other.h5"};
  for (const auto& n : names) std::ofstream(tmp.file(n)) << "x";
  const ShardSet keep{5, 2};
  remove_stale_shards(ckpt, &keep);
  std::vector<std::string> left;
  for (const auto& e : std::filesystem::directory_iterator(tmp.path())) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"other.h5", "r.ckpt.h5.step5.shard0of2", "r.ckpt.h5.step5.shard1of2",
                                            "r.ckpt.h5x.step5.shard0of2"}));
  remove_checkpoint(ckpt);
  left.clear();
  for (const auto& e : std::filesystem::directory_iterator(tmp.path())) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"other.h5", "r.ckpt.h5x.step5.shard0of2"}));
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
  const ModelConfig gated = moesae::testing::family_config(Arch::Gated, kD, 64, kK, 1, 1, 4 * kB);
  EXPECT_THROW({ ExpertParallel no(*g_comm, *be, gated); }, Error);
  ExpertParallel ep(*g_comm, *be, moesae::testing::family_config(Arch::Switch, kD, 64, kK, 4, 1, 4 * kB));
  EXPECT_THROW(make_sae(gated, *be, &ep), Error);
}


// ---- training: Trainer with set_expert_parallel --------------------------------------------------------------

constexpr int64_t kSteps = 20;

const Tensor& train_data() {  // kSteps global batches, then one held-out batch
  static const Tensor data = moesae::testing::synthetic_rows((kSteps + 1) * kB, kD, 256, 8, 5, 31);
  return data;
}
Tensor heldout() { return train_data().row_range(kSteps * kB, (kSteps + 1) * kB); }

TrainConfig train_config() {
  TrainConfig t;
  t.steps = kSteps;
  t.batch_size = kB;
  t.lr = 5e-4;  // small: a near-tie in a Top-K must not flip and make the runs drift
  t.log_every = 1;
  t.eval_every = 5;
  t.seed = 7;
  t.geometric_median_init = true;
  return t;
}

// Held-out MSE of a model, the periodic evaluation of these runs (rank 0 only).
std::map<std::string, double> heldout_eval(Sae& s) {
  Backend& be = s.backend();
  const SaeStats st = s.forward(be.from_host(heldout()), false);
  return {{"heldout_mse", st.mse}};
}

struct TrainedRun {
  std::unique_ptr<comm::Communicator> ep_comm, replica_comm;
  std::unique_ptr<ExpertParallel> ep;
  std::unique_ptr<DataParallel> replicas;
  std::unique_ptr<Sae> sae, whole;  // whole: rank 0's gathered model (expert-parallel runs)
  MetricSeries metrics, eval;
  TrainOutcome outcome;
  Sae& final_model() { return whole ? *whole : *sae; }
};

// Expert-parallel over groups of `ep_size` consecutive ranks (also at ep_size 1: an ExpertParallel of one rank);
// ep_size == 0: the 1-process reference on whole batches, run by every rank alone; -1: plain data parallelism.
// Collective unless ep_size == 0.
std::unique_ptr<TrainedRun> train(Backend& be, const ModelConfig& mc, int ep_size, int64_t stop_after = -1,
                           const std::string& ckpt = "") {
  auto r = std::make_unique<TrainedRun>();
  const TrainConfig tc = train_config();
  const bool reference = ep_size == 0;
  if (ep_size > 0) {
    r->ep_comm = g_comm->split(rank() / ep_size, rank() % ep_size);
    if (ranks() / ep_size > 1) {
      r->replica_comm = g_comm->split(rank() % ep_size, rank() / ep_size);
      r->replicas = std::make_unique<DataParallel>(*r->replica_comm);
    }
    r->ep = std::make_unique<ExpertParallel>(*r->ep_comm, be, mc);
  }
  r->sae = make_sae(mc, be, r->ep.get());
  Rng rng(tc.seed);
  r->sae->init(rng);
  moesae::testing::SliceSource local(train_data(), kB, reference ? 1 : ranks(), reference ? 0 : rank());
  DataParallelSource source(local, *g_comm);
  DataParallel group(*g_comm);
  Trainer t(tc, *r->sae, reference ? static_cast<BatchSource&>(local) : source);
  if (!reference) t.set_data_parallel(&group);
  if (r->ep) t.set_expert_parallel(r->ep.get(), r->replicas.get(), [&] { return make_sae(mc, be); });
  t.set_eval_hook(heldout_eval);
  if (!ckpt.empty()) {
    t.set_checkpoint(ckpt, "test_expert_parallel");
    t.resume();
  }
  r->outcome = t.run(stop_after);
  r->whole = t.gather_whole_model();
  r->metrics = t.metrics();
  r->eval = t.eval_metrics();
  return r;
}

// Every metrics column the same on every rank (the job's statistics), bit for bit. Collective.
void expect_metrics_agree_across_ranks(const MetricSeries& m) {
  for (const char* col : {"step", "mse", "l0", "dead_fraction", "grad_norm", "lb", "omega_mean"}) {
    if (!m.has(col)) continue;
    const std::vector<double>& mine = m.column(col);
    std::vector<double> every(mine.size() * size_t(ranks()));
    g_comm->all_gather(mine.data(), mine.size(), every.data());
    for (size_t i = 0; i < mine.size(); ++i)
      EXPECT_EQ(mine[i], every[i]) << "metrics row " << i << " '" << col << "' on rank " << rank() << " vs rank 0";
  }
}

void expect_same_model(Backend& be, Sae& got, Sae& want, double tol, const std::string& what) {
  for (Param* p : want.params().all()) {
    Param* q = got.params().find(p->name);
    ASSERT_NE(q, nullptr) << p->name;
    if (p->value.dtype() == DType::I32)
      EXPECT_EQ(ints(be, q->value), ints(be, p->value)) << what << ": buffer " << p->name;
    else if (tol == 0)
      EXPECT_EQ(floats(be, q->value), floats(be, p->value)) << what << ": " << p->name << " not bitwise equal";
    else
      expect_close(floats(be, q->value), floats(be, p->value), tol, what + ": " + p->name);
  }
}

void check_training(const ModelConfig& mc, int ep_size) {
  SCOPED_TRACE("expert_parallel " + std::to_string(ep_size) + " x data_parallel " +
               std::to_string(ranks() / ep_size));
  auto be = make_cpu_backend(1);
  auto ep = train(*be, mc, ep_size);
  auto ref = train(*be, mc, 0);
  expect_metrics_agree_across_ranks(ep->metrics);
  EXPECT_TRUE(ep->outcome.finished);
  if (mc.arch == Arch::TopK) {
    const auto& aux = ref->metrics.column("auxk");
    EXPECT_GT(*std::max_element(aux.begin(), aux.end()), 0.0) << "no latent died: AuxK never ran";
  }
  for (const char* col : {"loss", "mse", "l0", "lb", "auxk", "grad_norm", "omega_mean"}) {
    if (!ref->metrics.has(col)) continue;
    const auto &got = ep->metrics.column(col), &want = ref->metrics.column(col);
    ASSERT_EQ(got.size(), want.size()) << col;
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(got[i], want[i], 1e-4 * std::fabs(want[i]) + 1e-7) << col << " at step " << i + 1;
  }
  if (rank() != 0) return;
  // The whole model on rank 0: parameters, Adam-driven drift included, and the dead-latent counters exactly.
  expect_same_model(*be, ep->final_model(), ref->final_model(), 1e-4, "final");
  // The periodic evaluation ran on the gathered model.
  const auto &got = ep->eval.column("heldout_mse"), &want = ref->eval.column("heldout_mse");
  ASSERT_EQ(got.size(), want.size());
  ASSERT_EQ(got.size(), size_t(kSteps / 5 - 1));
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4 * want[i]) << "eval " << i;
}

ModelConfig training_model(Arch arch) {
  ModelConfig m = arch == Arch::Scale ? scale(8, 2, FeatureScaling::Mean)
                                      : moesae::testing::family_config(arch, kD, 128, kK, 8, 1, 2 * kB);
  m.dead_threshold_tokens = 2 * kB;  // latents die within the run: the counters' group minimum matters
  m.lb_alpha = 3.0f;
  return m;
}

TEST(ExpertParallelTraining, SwitchMatchesOneProcess) { check_training(training_model(Arch::Switch), ranks()); }
TEST(ExpertParallelTraining, TopKWithShardedDictionaryMatchesOneProcess) {
  check_training(training_model(Arch::TopK), ranks());
}
TEST(ExpertParallelTraining, ScaleWithFeatureScalingMatchesOneProcess) {
  check_training(training_model(Arch::Scale), ranks());
}
// 2-D: expert-parallel pairs, replicated over the other ranks (at 4 ranks: 2 x 2; at 2: 2 x 1; at 3: skipped).
TEST(ExpertParallelTraining, TwoDimensionalLayoutMatchesOneProcess) {
  if (ranks() % 2 != 0) GTEST_SKIP() << "needs an even rank count";
  check_training(training_model(Arch::Scale), 2);
}

// Stop at step 8 with a checkpoint (a manifest and one shard file per rank), resume: bitwise the uninterrupted run.
// Then resume a copy of it in another layout (plain data parallelism: every rank assembles the whole model from
// all the shards), which continues the same training up to summation order.
TEST(ExpertParallelTraining, CheckpointResumesExactlyAndInAnotherLayout) {
  const ModelConfig mc = training_model(Arch::Scale);
  auto be = make_cpu_backend(1);
  // One directory for all ranks: rank 0's TempDir, its path broadcast (as int32 characters).
  std::unique_ptr<moesae::testing::TempDir> tmp;
  if (rank() == 0) tmp = std::make_unique<moesae::testing::TempDir>();
  std::vector<int32_t> chars(1024, 0);
  if (rank() == 0) {
    const std::string p = tmp->path().string();
    ASSERT_LT(p.size(), chars.size());
    std::copy(p.begin(), p.end(), chars.begin());
  }
  g_comm->broadcast(chars.data(), chars.size(), 0);
  std::string dir;
  for (size_t i = 0; i < chars.size() && chars[i] != 0; ++i) dir.push_back(char(chars[i]));
  const std::string ckpt = dir + "/run.ckpt.h5", copy = dir + "/copy.ckpt.h5";

  auto straight = train(*be, mc, ranks());
  auto first = train(*be, mc, ranks(), 8, ckpt);
  EXPECT_TRUE(first->outcome.interrupted);
  if (rank() == 0) {  // the manifest and its shards, one per expert-parallel rank, copied under another name
    int shards = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("run.ckpt.h5.step8.shard", 0) != 0) continue;
      ++shards;
      std::filesystem::copy_file(entry.path(), dir + "/copy.ckpt.h5" + name.substr(std::string("run.ckpt.h5").size()));
    }
    EXPECT_EQ(shards, ranks()) << "one shard file per expert-parallel rank";
    std::filesystem::copy_file(ckpt, copy);
  }
  g_comm->barrier();
  auto resumed = train(*be, mc, ranks(), -1, ckpt);
  auto other = train(*be, mc, -1, -1, copy);  // data parallel: whole parameters from the same file
  EXPECT_TRUE(resumed->outcome.finished);
  EXPECT_EQ(resumed->metrics.column("mse"), straight->metrics.column("mse"));
  // The other way round: a whole checkpoint (data-parallel) resumed with the experts sharded.
  const std::string whole_ckpt = dir + "/whole.ckpt.h5";
  train(*be, mc, -1, 8, whole_ckpt);
  auto sharded = train(*be, mc, ranks(), -1, whole_ckpt);
  // A 2-D layout (pairs of expert-parallel ranks; only the first replica writes shards) stops and resumes exactly.
  std::unique_ptr<TrainedRun> straight2, resumed2;
  if (ranks() % 2 == 0) {
    const std::string ckpt2 = dir + "/two.ckpt.h5";
    straight2 = train(*be, mc, 2);
    train(*be, mc, 2, 8, ckpt2);
    resumed2 = train(*be, mc, 2, -1, ckpt2);
  }
  if (rank() == 0) {
    expect_same_model(*be, resumed->final_model(), straight->final_model(), 0, "resumed");
    expect_same_model(*be, other->final_model(), straight->final_model(), 1e-4, "resumed data-parallel");
    expect_same_model(*be, sharded->final_model(), straight->final_model(), 1e-4, "whole checkpoint resumed sharded");
    if (straight2) expect_same_model(*be, resumed2->final_model(), straight2->final_model(), 0, "2-D resumed");
  }
  g_comm->barrier();  // rank 0 removes the directory on return
}

}  // namespace

int main(int argc, char** argv) { return moesae::testing::run_mpi_gtest(argc, argv, "expert_parallel", &g_comm); }
