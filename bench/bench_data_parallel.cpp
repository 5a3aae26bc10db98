// Distributed training throughput: run under `mpirun -np P` (P = 1 is the baseline). Trains the Scale SAE
// (paper shape by default: d=768, F=24576, E=64, e=2, k=32, Feature Scaling) or the dense TopK SAE with the
// Trainer, batch_size tokens per step split over the ranks, data-parallel (--layout data) or with the experts
// sharded over the ranks (--layout expert; for TopK: its dictionary, one block per rank), and prints on rank 0 the tokens/s and the share of the step
// spent in communication (gradient all-reduce, batch statistics, and for experts dispatch / Top-K merge / combine).
// Not a test: bench/data_parallel_bench.sh runs it at 1 and 2 ranks and prints the ratio; see docs/performance.md.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <thread>

#include "backend/backend.h"
#include "comm/communicator.h"
#include "core/log.h"
#include "core/rng.h"
#include "parallel/data_parallel.h"
#include "parallel/expert_parallel.h"
#include "sae/sae.h"
#include "train/trainer.h"
#include "train_step.h"

using namespace moesae;

namespace {

// The same pre-drawn rows every step (drawing them is not what is measured).
class FixedBatches final : public BatchSource {
 public:
  FixedBatches(int64_t rows, int64_t d, uint64_t seed) : rows_(host_tensor(rows, d)) {
    Rng rng(seed);
    for (int64_t i = 0; i < rows_.numel(); ++i) rows_.host<float>()[i] = float(rng.normal());
  }
  int64_t dim() const override { return rows_.cols(); }
  void next(Tensor& out) override {
    std::copy(rows_.host<float>(), rows_.host<float>() + rows_.numel(), out.host<float>());
  }
  std::vector<uint64_t> state() const override { return {}; }
  void restore(const std::vector<uint64_t>&) override {}

 private:
  Tensor rows_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moesae data-parallel training throughput (run under mpirun -np P)"};
  int64_t batch = 2048, steps = 5;
  int d = 768, F = 24576, E = 64, e = 2, k = 32, threads = 0;
  std::string arch = "scale", layout = "data";
  app.add_option("--batch", batch, "tokens per step, over all ranks");
  app.add_option("--steps", steps, "timed steps (one untimed step first)");
  app.add_option("--arch", arch, "scale | topk");
  app.add_option("--layout", layout, "data | expert (the experts, or the TopK dictionary, sharded over the ranks)");
  app.add_option("--d", d);
  app.add_option("--dict-size", F);
  app.add_option("--experts", E);
  app.add_option("--k", k);
  app.add_option("--threads", threads, "CPU threads per rank (0: cores / ranks on this machine)");
  CLI11_PARSE(app, argc, argv);
  try {
    auto comm = comm::make_communicator("auto");
    const int P = comm->size(), rank = comm->rank();
    spdlog::set_level(spdlog::level::warn);
    if (threads == 0) threads = std::max(1, int(std::thread::hardware_concurrency()) / P);
    auto be = make_cpu_backend(threads);
    ModelConfig mc = arch == "topk" ? bench::topk_config(d, F) : bench::scale_config(d, F);
    if (mc.arch == Arch::Scale) {
      mc.experts = E;
      mc.active_experts = e;
    }
    mc.k = k;
    if (layout != "data" && layout != "expert") fail("--layout must be data or expert, got '", layout, "'");
    std::unique_ptr<ExpertParallel> ep;
    if (layout == "expert") ep = std::make_unique<ExpertParallel>(*comm, *be, mc);
    auto sae = make_sae(mc, *be, ep.get());
    Rng rng(0);
    sae->init(rng);
    FixedBatches local(batch / P, d, 1 + uint64_t(rank));
    DataParallelSource source(local, *comm);
    DataParallel dp(*comm);
    TrainConfig tc;
    tc.batch_size = batch;
    tc.log_every = 1000000;
    tc.geometric_median_init = false;
    tc.steps = 1;
    const auto comm_seconds = [&] { return dp.comm_seconds() + (ep ? ep->comm_seconds() : 0.0); };
    const auto distribute = [&](Trainer& t) {
      if (P > 1 || ep) t.set_data_parallel(&dp);
      if (ep) t.set_expert_parallel(ep.get(), nullptr, {});
    };
    Trainer warm(tc, *sae, source);
    distribute(warm);
    warm.run();  // untimed: first-touch allocations
    const double comm_before = comm_seconds(), bytes_before = ep ? ep->bytes_sent() : 0.0;
    tc.steps = steps;
    Trainer trainer(tc, *sae, source);
    distribute(trainer);
    Timer t;
    trainer.run();
    double secs = t.seconds(), comm_secs = comm_seconds() - comm_before;
    double a2a_mb = ep ? (ep->bytes_sent() - bytes_before) / 1e6 / double(steps) : 0.0;
    comm->all_reduce(&a2a_mb, 1, comm::ReduceOp::Sum);
    comm->all_reduce(&secs, 1, comm::ReduceOp::Max);
    comm->all_reduce(&comm_secs, 1, comm::ReduceOp::Max);
    if (rank == 0) {
      size_t grad_floats = 0;
      for (Param* p : sae->params().trainable())
        if (!p->sharded()) grad_floats += size_t(p->grad.numel());  // the all-reduced gradients
      std::printf("{\"arch\": \"%s\", \"layout\": \"%s\", \"ranks\": %d, \"threads_per_rank\": %d, \"batch\": %lld, "
                  "\"steps\": %lld, \"tokens_per_s\": %.1f, \"step_s\": %.4f, \"comm_share\": %.3f, "
                  "\"allreduce_mb\": %.1f, \"alltoall_mb\": %.1f}\n",
                  arch.c_str(), layout.c_str(), P, threads, (long long)batch, (long long)steps,
                  double(batch * steps) / secs, secs / double(steps), comm_secs / secs,
                  P > 1 ? double(grad_floats) * 4 / 1e6 : 0.0, a2a_mb);
    }
  } catch (const Error& err) {
    std::fprintf(stderr, "error: %s\n", err.what());
    comm::abort_job_after_error(1);
    return 1;
  }
  return 0;
}
