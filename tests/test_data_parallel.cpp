// Data parallelism (src/parallel/data_parallel.h, Trainer::set_data_parallel) against a 1-process reference.
//
// This binary has its own main(): it runs at whatever rank count it was launched with.
//   build/tests/test_data_parallel                      1 rank (LocalComm); every test still runs and must pass
//   mpirun -np P build/tests/test_data_parallel         P ranks (MpiComm via comm::make_communicator("auto"))
// Every rank runs every test (the tests are collective: all ranks make the same collective calls in the same order;
// the collective checks come before any ASSERT, so a failure on one rank never leaves the others waiting). Ranks > 0 print only their failures
// (prefixed "[rank R]"); the failure flag is all-reduced, so every rank exits non-zero when any rank failed, and
// rank 0 prints one verdict line:
//   data_parallel: P ranks: all tests passed on every rank
//   data_parallel: P ranks: FAILED on rank(s) 1, 2
// MOESAE_DP_TEST_FAIL_RANK=R plants one failure on rank R (Verdict.InjectedFailure), to check that verdict.
// tests/cli/data_parallel.sh runs this at 2, 3 and 4 ranks; ctest also runs each test alone at 1 rank.
//
// The data: deterministic synthetic activations, identical on every rank; step s's global batch is rows
// [s B, (s+1) B) and rank r's share of it is rows [s B + r B/P, s B + (r+1) B/P) (B = 96, divisible by 1..4).
// The reference is a second model built from the same seed in the same process, trained without data
// parallelism on the whole global batches. Together the P ranks compute the 1-process gradient up to summation
// order, so losses, parameters and counters agree to rounding; the learning rate is small so that a near-tie in a
// Top-K selection does not flip and make the runs drift (see tests/test_train_cuda.cpp).
//
// Order matters for one test: StopRequest.OneRankStopsAll raises SIGTERM on one rank, and the trainer's stop flag
// (train/trainer.cpp) cannot be cleared, so it is defined last; do not run with --gtest_shuffle or --gtest_repeat.
#include <gtest/gtest.h>

#include <csignal>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "comm/communicator.h"
#include "core/log.h"
#include "data/synthetic.h"
#include "parallel/data_parallel.h"
#include "sae/geometric_median.h"
#include "sae/sae.h"
#include "mpi_gtest.h"
#include "temp_dir.h"
#include "train/batch_source.h"
#include "train/trainer.h"
#include "sae_test_util.h"
#include "slice_source.h"
#include "tensor_compare.h"

using namespace moesae;

namespace {

comm::Communicator* g_comm = nullptr;  // set by main() before the tests run

constexpr int kD = 16, kF = 128, kE = 8, kActive = 2, kK = 4;
constexpr int64_t kB = 96;  // the global batch: divisible by 1, 2, 3 and 4 ranks
constexpr int64_t kSteps = 25;
constexpr double kLr = 5e-4;
constexpr double kTol = 1e-4;  // relative: summation order only
// The trainer's "loss" on ranks > 0 vs rank 0, relative: bitwise equal (DataParallel::reduce_stats takes rank 0's
// load-balancing term, so no rank's own rounding enters).
constexpr double kLossAcrossRanks = 0;

int rank() { return g_comm->rank(); }
int ranks() { return g_comm->size(); }

// kSteps global batches followed by one held-out batch (identical on every rank: a function of the seed only).
const Tensor& global_data() {
  static const Tensor data = moesae::testing::synthetic_rows((kSteps + 1) * kB, kD, 256, kE, 5, 23);
  return data;
}

Tensor heldout_batch() { return global_data().row_range(kSteps * kB, (kSteps + 1) * kB); }

// Latents count as dead after 4 steps without firing, so the AuxK path and the counters' group minimum run.
ModelConfig model_config(Arch arch) {
  ModelConfig m = moesae::testing::family_config(arch, kD, kF, kK, kE, kActive, 4 * kB);
  if (arch == Arch::Scale) m.lb_alpha = 3.0f;
  return m;
}

TrainConfig train_config() {
  TrainConfig t;
  t.steps = kSteps;
  t.batch_size = kB;
  t.lr = kLr;
  t.log_every = 1;  // one metrics row per step
  t.seed = 7;
  t.geometric_median_init = true;
  return t;
}

std::unique_ptr<Sae> new_model(Backend& be, const ModelConfig& mc, uint64_t seed) {
  auto sae = make_sae(mc, be);
  Rng rng(seed);
  sae->init(rng);
  return sae;
}

struct TrainResult {
  std::unique_ptr<Sae> sae;
  MetricSeries metrics;
  TrainOutcome outcome;
};

// Data-parallel over g_comm (every rank trains its share), or (dp == false) the 1-process reference on whole
// global batches. The checkpoint (if any) is resumed from when present.
TrainResult train(Backend& be, const ModelConfig& mc, const TrainConfig& tc, bool dp, int64_t stop_after = -1,
          const std::string& ckpt = "") {
  TrainResult r;
  r.sae = new_model(be, mc, tc.seed);
  moesae::testing::SliceSource local(global_data(), tc.batch_size, dp ? ranks() : 1, dp ? rank() : 0);
  if (dp) {
    DataParallelSource source(local, *g_comm);
    DataParallel group(*g_comm);
    Trainer t(tc, *r.sae, source);
    t.set_data_parallel(&group);
    if (!ckpt.empty()) {
      t.set_checkpoint(ckpt, "test_data_parallel");
      t.resume_if_present();
    }
    r.outcome = t.run(stop_after);
    r.metrics = t.metrics();
  } else {
    Trainer t(tc, *r.sae, local);
    r.outcome = t.run(stop_after);
    r.metrics = t.metrics();
  }
  return r;
}

using moesae::testing::host_floats;
using moesae::testing::host_ints;

uint64_t fnv1a(const void* p, size_t bytes) {
  uint64_t h = 1469598103934665603ull;
  const auto* c = static_cast<const unsigned char*>(p);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ c[i]) * 1099511628211ull;
  return h;
}

// The bits of every parameter and buffer of this rank's model equal rank 0's (collective).
void expect_replicas_identical(Sae& sae) {
  Backend& be = sae.backend();
  std::vector<Param*> all = sae.params().all();
  std::vector<int64_t> mine;
  for (Param* p : all) {
    Tensor h = be.to_host(p->value);
    mine.push_back(int64_t(fnv1a(h.host<unsigned char>(), size_t(h.numel()) * 4)));  // f32 and i32 only
  }
  std::vector<int64_t> every(mine.size() * size_t(ranks()));
  g_comm->all_gather(mine.data(), mine.size(), every.data());
  for (size_t i = 0; i < all.size(); ++i)
    EXPECT_EQ(mine[i], every[i]) << "'" << all[i]->name << "' on rank " << rank() << " is not bitwise rank 0's";
}

// The trainer's metrics rows are the same on every rank (they come from the group's reduced statistics): bit for
// bit, except "loss" within `loss_tol` relative (see the note in TrainerResumesExactly). Collective.
void expect_metrics_identical(const MetricSeries& m, double loss_tol) {
  for (const char* col : {"step", "tokens", "loss", "mse", "mse_sum", "l0", "dead_fraction", "lr", "grad_norm", "lb",
                          "auxk", "sparsity", "aux", "omega_mean"}) {
    // Every rank has the same columns (the same model); a missing one is skipped everywhere.
    if (!m.has(col)) continue;
    const std::vector<double>& mine = m.column(col);
    std::vector<double> every(mine.size() * size_t(ranks()));
    g_comm->all_gather(mine.data(), mine.size(), every.data());
    for (size_t i = 0; i < mine.size(); ++i) {
      const double r0 = every[i];
      if (std::string(col) == "loss" && loss_tol > 0)
        EXPECT_NEAR(mine[i], r0, loss_tol * std::fabs(r0)) << "metrics row " << i << " '" << col << "' on rank "
                                                            << rank() << " vs rank 0";
      else
        EXPECT_EQ(mine[i], r0) << "metrics row " << i << " '" << col << "' on rank " << rank() << " vs rank 0";
    }
  }
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what) {
  moesae::testing::expect_relative_close(got, want, tol, what + " (rank " + std::to_string(rank()) + ")");
}

// Fails consistently on every rank (no collective skipped on one rank only) when a stop request is pending: the
// trainer's stop flag cannot be cleared, so StopRequest.OneRankStopsAll must run last.
bool stop_pending() {
  DataParallel group(*g_comm);
  return group.any(stop_requested());
}

// ---- a. training parity with the 1-process reference --------------------------------------------------------

// (Plain TESTs rather than a parameterised suite: gtest runs parameterised suites after every plain TEST, and the
// stop test must run last.)
void check_parity(Arch arch, LbAssignment lb = LbAssignment::TopE) {
  if (stop_pending()) GTEST_FAIL() << "a stop request is pending (StopRequest.OneRankStopsAll must run last)";
  ModelConfig mc = model_config(arch);
  mc.lb_assignment = lb;
  const TrainConfig tc = train_config();
  auto be = make_cpu_backend(1);
  TrainResult dp = train(*be, mc, tc, true);
  TrainResult ref = train(*be, mc, tc, false);
  // The collective checks first, so that a failed ASSERT below never leaves the other ranks waiting in one:
  // every replica is bitwise rank 0's, and so are its metrics.
  expect_replicas_identical(*dp.sae);
  expect_metrics_identical(dp.metrics, kLossAcrossRanks);

  // Both ran to the end, every rank in lockstep.
  EXPECT_TRUE(dp.outcome.finished);
  EXPECT_EQ(dp.outcome.steps_done, kSteps);
  EXPECT_TRUE(ref.outcome.finished);

  // The reference trained: every parameter moved far more than the tolerance (agreement on nothing proves
  // nothing; over 25 small steps the noisy per-batch MSE hardly moves, so the parameters are the measure).
  ASSERT_EQ(ref.metrics.column("mse").size(), size_t(kSteps));
  {
    auto init = new_model(*be, mc, tc.seed);
    for (Param* p : ref.sae->params().trainable()) {
      const std::vector<float> a = host_floats(*be, init->params().get(p->name).value), b = host_floats(*be, p->value);
      double moved = 0, norm = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        moved += (double(b[i]) - a[i]) * (double(b[i]) - a[i]);
        norm += double(a[i]) * a[i];
      }
      EXPECT_GT(std::sqrt(moved), 100 * kTol * std::sqrt(norm)) << "'" << p->name << "' hardly moved in training";
      EXPECT_GT(moved, 0.0) << "'" << p->name << "' did not move in training";
    }
  }

  // Per-step loss and MSE (the trainer's metrics: the group's reduced statistics).
  for (const char* col : {"loss", "mse", "l0"}) {
    const auto& got = dp.metrics.column(col);
    const auto& want = ref.metrics.column(col);
    ASSERT_EQ(got.size(), want.size()) << col;
    for (size_t s = 0; s < want.size(); ++s)
      EXPECT_NEAR(got[s], want[s], kTol * std::fabs(want[s])) << col << " at step " << s << " (rank " << rank() << ")";
  }
  if (mc.arch == Arch::Scale || mc.arch == Arch::Switch) {
    const auto& got = dp.metrics.column("lb");
    const auto& want = ref.metrics.column("lb");
    for (size_t s = 0; s < want.size(); ++s)
      EXPECT_NEAR(got[s], want[s], kTol * std::fabs(want[s])) << "lb at step " << s;
  }
  if (mc.arch == Arch::TopK) {  // AuxK ran (dead latents exist at some step) and agrees
    const auto& got = dp.metrics.column("auxk");
    const auto& want = ref.metrics.column("auxk");
    for (size_t s = 0; s < want.size(); ++s)
      EXPECT_NEAR(got[s], want[s], kTol * std::fabs(want[s]) + 1e-12) << "auxk at step " << s;
  }

  // Final parameters (relative Frobenius per parameter) and the dead-latent counters (exactly).
  for (Param* p : ref.sae->params().trainable()) {
    Param* q = dp.sae->params().find(p->name);
    ASSERT_NE(q, nullptr) << p->name;
    expect_close(host_floats(*be, q->value), host_floats(*be, p->value), kTol, "final " + p->name);
  }
  for (Param* p : ref.sae->params().buffers()) {
    Param* q = dp.sae->params().find(p->name);
    ASSERT_NE(q, nullptr) << p->name;
    if (p->value.dtype() == DType::I32)
      EXPECT_EQ(host_ints(*be, q->value), host_ints(*be, p->value)) << "buffer " << p->name;
    else
      expect_close(host_floats(*be, q->value), host_floats(*be, p->value), kTol, "buffer " + p->name);
  }
  EXPECT_EQ(dp.sae->dead_count(), ref.sae->dead_count());

  // Held-out selection: (id, active) per (token, slot) for >= 99% of the entries (the Gated SAE's ids are all
  // latents, so its activity decides).
  Tensor x = be->from_host(heldout_batch());
  dp.sae->forward(x, false);
  const std::vector<int32_t> ids_dp = host_ints(*be, dp.sae->code().ids);
  const std::vector<float> vals_dp = host_floats(*be, dp.sae->code().vals);
  ref.sae->forward(x, false);
  const std::vector<int32_t> ids_ref = host_ints(*be, ref.sae->code().ids);
  const std::vector<float> vals_ref = host_floats(*be, ref.sae->code().vals);
  ASSERT_EQ(ids_dp.size(), ids_ref.size());
  size_t same = 0, active = 0;
  for (size_t i = 0; i < ids_ref.size(); ++i) {
    same += ids_dp[i] == ids_ref[i] && (vals_dp[i] > 0.f) == (vals_ref[i] > 0.f);
    active += vals_ref[i] > 0.f;
  }
  EXPECT_GT(active, size_t(kB)) << "the reference's held-out code is (nearly) empty";
  EXPECT_GE(double(same), 0.99 * double(ids_ref.size()))
      << same << " of " << ids_ref.size() << " held-out (token, slot) selections agree";
}

TEST(DataParallelParity, TopK) { check_parity(Arch::TopK); }
TEST(DataParallelParity, Switch) { check_parity(Arch::Switch); }
TEST(DataParallelParity, Scale) { check_parity(Arch::Scale); }
// The reference code's load-balancing statistic (f_i from the argmax expert only), summed over the ranks too.
TEST(DataParallelParity, ScaleTop1LoadBalancing) { check_parity(Arch::Scale, LbAssignment::Top1); }
TEST(DataParallelParity, Gated) { check_parity(Arch::Gated); }

// ---- b. the data cursor --------------------------------------------------------------------------------------

std::vector<float> next_rows(BatchSource& src) {
  Tensor t = host_tensor(kB / ranks(), kD);
  src.next(t);
  return std::vector<float>(t.host<float>(), t.host<float>() + t.numel());
}

// This rank's share of global batch `step`.
std::vector<float> share_of(int64_t step) {
  const int64_t b = kB / ranks();
  const Tensor t = global_data().row_range(step * kB + rank() * b, step * kB + (rank() + 1) * b);
  return std::vector<float>(t.host<float>(), t.host<float>() + t.numel());
}

TEST(DataParallelSource, StateThenRestoreContinuesExactly) {
  moesae::testing::SliceSource local(global_data(), kB, ranks(), rank());
  DataParallelSource src(local, *g_comm);
  EXPECT_EQ(src.dim(), kD);
  for (int i = 0; i < 3 + rank(); ++i) next_rows(src);  // the ranks' cursors differ: each must get its own back
  const std::vector<uint64_t> cursor = src.state();    // collective
  if (ranks() == 1) {
    EXPECT_EQ(cursor, local.state()) << "at one rank the cursor is the local source's";
  } else {
    ASSERT_GE(cursor.size(), size_t(2));
    EXPECT_EQ(cursor[1], uint64_t(ranks())) << "a multi-rank cursor records the rank count";
  }
  std::vector<std::vector<float>> want;
  for (int i = 0; i < 4; ++i) want.push_back(next_rows(src));

  moesae::testing::SliceSource local2(global_data(), kB, ranks(), rank());
  DataParallelSource again(local2, *g_comm);
  EXPECT_NO_THROW(again.restore(cursor));
  EXPECT_EQ(local2.state(), std::vector<uint64_t>{uint64_t(3 + rank())}) << "rank " << rank() << " got a wrong cursor";
  for (int i = 0; i < 4; ++i) EXPECT_EQ(next_rows(again), want[size_t(i)]) << "batch " << i << " after restore";
  EXPECT_EQ(want[0], share_of(3 + rank()));
}

// A cursor in the multi-rank format (parallel/data_parallel.cpp: "moeSDP" v1, the rank count, then per rank its
// word count and words) as `written_by` ranks would have written it.
std::vector<uint64_t> foreign_cursor(int written_by) {
  std::vector<uint64_t> c{0x6d6f65534450'0001ull, uint64_t(written_by)};
  for (int r = 0; r < written_by; ++r) {
    c.push_back(1);
    c.push_back(uint64_t(5 + r));
  }
  return c;
}

TEST(DataParallelSource, CursorOfAnotherRankCountIsIgnored) {
  std::vector<std::vector<uint64_t>> others{foreign_cursor(ranks() + 1)};
  if (ranks() > 2) others.push_back(foreign_cursor(ranks() - 1));
  if (ranks() > 1) others.push_back({5});  // written by a 1-rank run: the local source's own format
  for (const auto& cursor : others) {
    moesae::testing::SliceSource local(global_data(), kB, ranks(), rank());
    DataParallelSource src(local, *g_comm);
    EXPECT_NO_THROW(src.restore(cursor));
    EXPECT_EQ(local.state(), std::vector<uint64_t>{0}) << "a foreign cursor moved the stream";
    EXPECT_EQ(next_rows(src), share_of(0)) << "the stream must start at its beginning";
  }
  // The same rank count: taken (every rank its own entry).
  moesae::testing::SliceSource local(global_data(), kB, ranks(), rank());
  DataParallelSource src(local, *g_comm);
  if (ranks() == 1) {
    src.restore({5});
    EXPECT_EQ(next_rows(src), share_of(5));
  } else {
    src.restore(foreign_cursor(ranks()));
    EXPECT_EQ(next_rows(src), share_of(5 + rank()));
  }
}

// A trainer stopped with a checkpoint (rank 0 writes it, holding every rank's cursor) and resumed continues
// exactly: the final parameters and the metrics equal those of an uninterrupted data-parallel run, bit for bit
// (the loss on ranks > 0 too).
TEST(DataParallelSource, TrainerResumesExactly) {
  if (stop_pending()) GTEST_FAIL() << "a stop request is pending (StopRequest.OneRankStopsAll must run last)";
  // Rank 0's temporary directory, shared by path (the ranks run on one machine in these tests).
  std::unique_ptr<moesae::testing::TempDir> dir;
  std::vector<int64_t> path_chars(512, 0);
  if (rank() == 0) {
    dir = std::make_unique<moesae::testing::TempDir>();
    const std::string p = dir->file("dp.ckpt.h5");
    for (size_t i = 0; i < p.size() && i + 1 < path_chars.size(); ++i) path_chars[i] = p[i];
  }
  g_comm->broadcast(path_chars.data(), path_chars.size(), 0);
  std::string ckpt;
  for (int64_t c : path_chars)
    if (c) ckpt.push_back(char(c));

  const ModelConfig mc = model_config(Arch::Scale);
  const TrainConfig tc = train_config();
  auto be = make_cpu_backend(1);
  TrainResult straight = train(*be, mc, tc, true);
  TrainResult first = train(*be, mc, tc, true, 11, ckpt);
  EXPECT_TRUE(first.outcome.interrupted);
  EXPECT_EQ(first.outcome.steps_done, 11);
  EXPECT_TRUE(std::filesystem::exists(ckpt)) << "rank 0 did not write the checkpoint";
  TrainResult resumed = train(*be, mc, tc, true, -1, ckpt);
  expect_replicas_identical(*resumed.sae);  // collectives before any ASSERT (see check_parity)
  g_comm->barrier();  // every rank is done with the checkpoint before rank 0 removes its directory
  EXPECT_TRUE(resumed.outcome.finished);
  for (Param* p : straight.sae->params().all()) {
    Param* q = resumed.sae->params().find(p->name);
    ASSERT_NE(q, nullptr);
    Tensor a = be->to_host(p->value), b = be->to_host(q->value);
    EXPECT_EQ(0, std::memcmp(a.host<unsigned char>(), b.host<unsigned char>(), size_t(a.numel()) * 4))
        << "'" << p->name << "' after resuming differs from the uninterrupted run (rank " << rank() << ")";
  }
  // The resumed run's first rows are rank 0's (from the checkpoint), hence kLossAcrossRanks on the loss.
  for (const char* col : {"loss", "mse", "l0", "lb", "grad_norm", "dead_fraction"}) {
    const auto& got = resumed.metrics.column(col);
    const auto& want = straight.metrics.column(col);
    ASSERT_EQ(got.size(), want.size()) << col;
    for (size_t i = 0; i < want.size(); ++i) {
      if (std::string(col) == "loss")
        EXPECT_NEAR(got[i], want[i], kLossAcrossRanks * std::fabs(want[i])) << col << " row " << i;
      else
        EXPECT_EQ(got[i], want[i]) << col << " row " << i;
    }
  }
}

// ---- c. geometric-median initialisation ---------------------------------------------------------------------

// The biases after step 0 are the geometric median of the whole first global batch (every rank's rows), as in the
// reference. A vanishing learning rate leaves step 0's Adam update below the biases' rounding, so they compare
// bit for bit.
TEST(GeometricMedianInit, UsesTheGroupsFirstBatch) {
  if (stop_pending()) GTEST_FAIL() << "a stop request is pending (StopRequest.OneRankStopsAll must run last)";
  const ModelConfig mc = model_config(Arch::Scale);
  TrainConfig tc = train_config();
  tc.lr = 1e-30;
  tc.geometric_median_init = true;
  auto be = make_cpu_backend(1);
  TrainResult dp = train(*be, mc, tc, true, 1);
  TrainResult ref = train(*be, mc, tc, false, 1);
  expect_replicas_identical(*dp.sae);  // collectives before any ASSERT (see check_parity)
  EXPECT_EQ(dp.outcome.steps_done, 1);
  const std::vector<float> want_median = host_floats(*be, geometric_median(global_data().row_range(0, kB)));
  for (const char* name : {"b_pre", "b_r"}) {
    Param* p = ref.sae->params().find(name);
    if (!p) continue;
    const std::vector<float> got = host_floats(*be, dp.sae->params().get(name).value);
    EXPECT_EQ(got, host_floats(*be, p->value)) << name << " differs from the reference's (rank " << rank() << ")";
    EXPECT_EQ(got, want_median) << name << " is not the median of the whole first global batch";
  }
  if (ranks() > 1) {  // the check can tell: the median of this rank's share alone is different
    const std::vector<float> local_median =
        host_floats(*be, geometric_median(global_data().row_range(rank() * (kB / ranks()), (rank() + 1) * (kB / ranks()))));
    EXPECT_NE(local_median, want_median);
  }
}

// ---- the verdict machinery ------------------------------------------------------------------------------------

// MOESAE_DP_TEST_FAIL_RANK=R: rank R records one failure here, which every rank's exit status must reflect.
TEST(Verdict, InjectedFailure) {
  const char* v = std::getenv("MOESAE_DP_TEST_FAIL_RANK");
  if (v && *v && std::atoi(v) == rank()) ADD_FAILURE() << "failure injected on rank " << rank();
}

// ---- d. a stop request on one rank ---------------------------------------------------------------------------

// The last rank receives SIGTERM (its handler sets the trainer's stop flag) while it reads the batch of step
// kStopAt; every rank stops after that step, at the same step, with the checkpoint written by rank 0.
// Defined last: the stop flag stays set in the last rank's process.
TEST(StopRequest, OneRankStopsAll) {
  if (stop_pending()) GTEST_FAIL() << "a stop request is pending (this test ran twice?)";
  constexpr int64_t kStopAt = 6;
  const int victim = ranks() - 1;
  const ModelConfig mc = model_config(Arch::Switch);
  const TrainConfig tc = train_config();
  auto be = make_cpu_backend(1);
  auto sae = new_model(*be, mc, tc.seed);
  moesae::testing::SliceSource local(global_data(), kB, ranks(), rank());
  if (rank() == victim) {
    install_stop_signal_handlers();
    local.on_next = [](uint64_t served) {
      if (served == uint64_t(kStopAt) + 1) std::raise(SIGTERM);  // during step kStopAt (0-based)
    };
  }
  DataParallelSource source(local, *g_comm);
  DataParallel group(*g_comm);
  Trainer t(tc, *sae, source);
  t.set_data_parallel(&group);
  const TrainOutcome out = t.run();
  if (rank() == victim) {
    EXPECT_TRUE(stop_requested());
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
  }
  EXPECT_TRUE(out.interrupted) << "rank " << rank() << " did not stop";
  EXPECT_FALSE(out.finished);
  EXPECT_EQ(out.steps_done, kStopAt + 1) << "rank " << rank();
  int64_t steps[2] = {out.steps_done, -out.steps_done};  // max and -min over the ranks
  g_comm->all_reduce(steps, 2, comm::ReduceOp::Max);
  EXPECT_EQ(steps[0], -steps[1]) << "the ranks stopped at different steps";
  expect_replicas_identical(*sae);
}

}  // namespace

// ---- main ---------------------------------------------------------------------------------------------------------

int main(int argc, char** argv) { return moesae::testing::run_mpi_gtest(argc, argv, "data_parallel", &g_comm); }
