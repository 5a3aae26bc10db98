// Training-batch reading: how long the activation stream takes to produce a batch (read, shuffle, NaN check) beside
// a plain memcpy of the same bytes (the host's memory limit, in the same run), and whether reading ahead on a
// background thread (data.prefetch, train/prefetching_source.h) hides it behind a step during which the host only
// waits, as it does for a CUDA step. The step is stood in for by a sleep of --step-ms: the ratio printed is
// tokens/s reading ahead vs reading in turn, beside its bound (load + step) / max(load, step). Writes a temporary
// activation file of random rows. Not a test: see docs/performance.md.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "bench_util.h"
#include "core/log.h"
#include "core/rng.h"
#include "data/activation_file.h"
#include "data/activation_stream.h"
#include "run/stream_source.h"
#include "train/prefetching_source.h"

using namespace moesae;

namespace {

// Tokens/s of `steps` steps that each take a batch from `source` and then wait `step_ms` (the device's step).
double run_steps(BatchSource& source, Tensor& batch, int steps, double step_ms) {
  source.next(batch);  // warm-up (the first read ahead starts here)
  Timer t;
  for (int s = 0; s < steps; ++s) {
    source.next(batch);
    std::this_thread::sleep_for(std::chrono::duration<double, std::milli>(step_ms));
  }
  return double(batch.rows()) * steps / t.seconds();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moesae bench_data: the activation stream's batch time, and reading ahead behind a step"};
  int64_t d = 768, rows = 100000, batch = 8192;
  int steps = 30;
  double step_ms = 5.0;
  bool f16 = false;
  std::string dir = std::filesystem::temp_directory_path().string();
  app.add_option("--d", d, "activation width");
  app.add_option("--rows", rows, "rows of the temporary activation file");
  app.add_option("--batch", batch, "rows per batch");
  app.add_option("--steps", steps, "timed steps");
  app.add_option("--step-ms", step_ms, "the stand-in step: milliseconds the host waits per step");
  app.add_flag("--f16", f16, "store the file as f16 (converted to f32 while reading)");
  app.add_option("--dir", dir, "where the temporary file goes");
  CLI11_PARSE(app, argc, argv);
  set_log_level("warn");

  const std::string path = dir + "/moesae_bench_data." + std::to_string(::getpid()) + ".h5";
  {
    ActivationWriter::Options o;
    o.d = d;
    o.f16 = f16;
    ActivationWriter w(path, o);
    Rng rng(1);
    Tensor piece = host_tensor(std::min<int64_t>(rows, 10000), d);
    for (int64_t i = 0; i < piece.numel(); ++i) piece.host<float>()[i] = float(rng.normal());
    for (int64_t r = 0; r < rows; r += piece.rows()) w.append(piece.row_range(0, std::min(piece.rows(), rows - r)));
    w.commit();
  }
  DataConfig dc;
  dc.path = path;
  dc.eval_tokens = 1000;
  std::printf("moesae bench_data: batch %lld x %lld, %s file of %lld rows, shuffle buffer %lld, %u hardware threads\n",
              (long long)batch, (long long)d, f16 ? "f16" : "f32", (long long)rows, (long long)dc.shuffle_buffer,
              std::thread::hardware_concurrency());

  Tensor b = host_tensor(batch, d), src = host_tensor(batch, d);
  std::memset(src.host<float>(), 0, size_t(src.numel()) * 4);
  const double copy_s = bench::best_of(10, [&] { std::memcpy(b.host<float>(), src.host<float>(), size_t(b.numel()) * 4); });
  double load_s = 0;
  {
    ActivationStream stream(dc, 7);
    load_s = bench::best_of(10, [&] { stream.next_batch(b); }, 3);
  }
  std::printf("batch from the stream: %.2f ms | memcpy of a batch: %.2f ms (%.1f GB/s) | stream / memcpy: %.1fx\n",
              1e3 * load_s, 1e3 * copy_s, double(b.numel()) * 4 / copy_s / 1e9, load_s / copy_s);

  ActivationStream in_turn_stream(dc, 7), ahead_stream(dc, 7);
  StreamBatchSource in_turn(in_turn_stream), inner(ahead_stream);
  PrefetchingSource ahead(inner, [](int64_t r, int64_t c) { return host_tensor(r, c); });
  const double tps_turn = run_steps(in_turn, b, steps, step_ms);
  const double tps_ahead = run_steps(ahead, b, steps, step_ms);
  const double bound = (load_s * 1e3 + step_ms) / std::max(load_s * 1e3, step_ms);
  std::printf("steps of %.1f ms: reading in turn %.0f tokens/s | reading ahead %.0f tokens/s | ratio %.2fx (bound %.2fx)\n",
              step_ms, tps_turn, tps_ahead, tps_ahead / tps_turn, bound);
  std::filesystem::remove(path);
  return 0;
}
