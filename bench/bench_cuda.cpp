// GPU benchmark of the CUDA backend, in one run on one GPU:
//   1. the device and its two ceilings measured in the same run: device-to-device copy bandwidth (cudaMemcpyAsync,
//      bytes read + written) and the cuBLAS GEMM peak at 8192^3 for fp32 (cublasSgemm), tf32 and bf16 inputs with
//      fp32 accumulation (cublasGemmEx), on random data;
//   2. training-step throughput (tokens/s, median step) of the paper's Scale SAE (d=768, F=24576, E=64, e=2, k=32,
//      Feature Scaling mean) and of the dense TopK SAE (F=24576, k=32) at each gemm precision of the backend;
//   3. the encoder GEMMs at the exact shapes the models issue (TopK: one [B,768]x[768,24576] product; Scale: the E
//      [~B*e/E, 768]x[768, 384] products as one grouped product and as one product per expert, and the whole
//      encoder of sae/moe_sae.cpp as it runs on CUDA: gather, grouped products, Feature Scaling, relu, scatter), as
//      TFLOP/s and as a fraction of the cuBLAS peak of the same precision;
//   4. the memory-bound kernels (topk_rows, sparse_rows_matmul / _dot / _outer_add) as GB/s and as a fraction of
//      the copy bandwidth;
//   5. the same training steps in PyTorch on the same GPU (bench/torch_reference.py --device cuda), and the ratios;
//   6. a summary table (last lines of the output).
// Phase shares from core/profile.h are not reported: its scopes read the host clock, and the backend's work is
// asynchronous, so a scope measures launches, not the GPU time of its phase (item 3 measures the encoder instead).
// Only the ceilings use cudart/cuBLAS directly; everything else goes through the Backend interface.
// Not a test: see docs/performance.md.
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/counting_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "bench_util.h"
#include "train_step.h"
#include "core/error.h"
#include "core/log.h"
#include "core/rng.h"
#include "sae/sae.h"
#include "train/adam.h"

#ifdef MOESAE_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif

using namespace moesae;

#ifdef MOESAE_HAVE_CUDA
namespace {

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Seconds per call of fn on the backend: `warmup` untimed calls, then the median over `reps` timings of `inner`
// back-to-back calls (synchronising the backend before the clock starts and before it is read).
template <typename Fn>
double time_backend(Backend& be, int reps, int inner, Fn&& fn, int warmup = 2) {
  for (int w = 0; w < warmup; ++w) fn();
  be.synchronize();
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    Timer tm;
    for (int i = 0; i < inner; ++i) fn();
    be.synchronize();
    t.push_back(tm.seconds() / inner);
  }
  return median(t);
}

Tensor normal_host(int64_t rows, int64_t cols, uint64_t seed, bool absolute = false) {
  Tensor h = host_tensor(rows, cols);
  Rng rng(seed);
  float* p = h.host<float>();
  for (int64_t i = 0; i < h.numel(); ++i) {
    const float v = float(rng.normal());
    p[i] = absolute ? std::fabs(v) : v;
  }
  return h;
}

Tensor uniform_host(int64_t rows, int64_t cols, float bound, uint64_t seed) {
  Tensor h = host_tensor(rows, cols);
  Rng rng(seed);
  float* p = h.host<float>();
  for (int64_t i = 0; i < h.numel(); ++i) p[i] = float(rng.uniform(-bound, bound));
  return h;
}

// i32 [rows, k]: k distinct random ids in [0, n) per row.
Tensor distinct_ids_host(int64_t rows, int k, int64_t n, uint64_t seed) {
  Tensor h = host_tensor(rows, k, DType::I32);
  Rng rng(seed);
  int32_t* p = h.host<int32_t>();
  for (int64_t b = 0; b < rows; ++b) {
    std::set<int32_t> seen;
    for (int j = 0; j < k; ++j) {
      int32_t id;
      do id = int32_t(rng.below(uint64_t(n)));
      while (!seen.insert(id).second);
      p[b * k + j] = id;
    }
  }
  return h;
}

// ---- the models ---------------------------------------------------------------------------------------------------

using bench::scale_config;
using bench::topk_config;

struct StepTiming {
  bool ok = false;
  std::string error;
  double median_tps = 0, best_tps = 0, median_ms = 0;
  double host_waits = 0;  // times one step waited for the device (Backend::host_waits), the timed steps' mean
  double operations = 0;  // backend operations per step (CountingBackend): each one or a few kernel launches
  double fallbacks = 0;   // grouped products per step run one product per group (Backend::grouped_gemm_fallbacks)
};

// One full training step as bench_train_step and the trainer run it, `warmup` untimed then `steps` timed; each
// timed step ends with be.synchronize() before the host clock is read.
StepTiming bench_model(const ModelConfig& mc, const Tensor& acts, int steps, int warmup, Backend& device) {
  StepTiming r;
  CountingBackend be(device, false);  // a counter per call: nothing measurable beside a GPU step
  try {
    bench::StepModel model = bench::make_step_model(mc, acts, steps + warmup, be);
    auto one_step = [&]() { bench::train_step(model); };
    for (int i = 0; i < warmup; ++i) one_step();
    be.synchronize();
    be.reset();
    std::vector<double> t;
    int64_t waits = 0;
    const int64_t fallbacks0 = be.grouped_gemm_fallbacks();
    for (int i = 0; i < steps; ++i) {
      Timer tm;
      const int64_t w0 = be.host_waits();
      one_step();
      waits += be.host_waits() - w0;
      be.synchronize();
      t.push_back(tm.seconds());
    }
    r.host_waits = double(waits) / std::max(steps, 1);
    r.operations = double(be.operations()) / std::max(steps, 1);
    r.fallbacks = double(be.grouped_gemm_fallbacks() - fallbacks0) / std::max(steps, 1);
    const double B = double(acts.rows());
    r.median_ms = 1e3 * median(t);
    r.median_tps = B / median(t);
    r.best_tps = B / *std::min_element(t.begin(), t.end());
    r.ok = true;
  } catch (const std::exception& e) {
    r.error = e.what();
  }
  return r;
}

// ---- the encoder GEMMs at the models' shapes ----------------------------------------------------------------------

struct EncoderResult {
  bool ok = false;
  std::string error;
  double topk_tflops = 0, topk_ms = 0;              // one gemm [B, d] x [d, F]
  double scale_gemm_tflops = 0, scale_gemm_ms = 0;  // the E products [m_i, d] x [d, n] as one grouped_gemm
  double scale_loop_tflops = 0, scale_loop_ms = 0;  // the same, one gemm call per expert
  double scale_phase_tflops = 0, scale_phase_ms = 0;  // moe_sae.cpp's whole encoder (main-gemm FLOPs)
  int64_t min_rows = 0, max_rows = 0;
};

EncoderResult bench_encoder(Backend& be, int64_t B, int d, int F, int E, int e, int reps) {
  EncoderResult r;
  try {
    const int n = F / E;
    Tensor u = be.from_host(normal_host(B, d, 11));
    Tensor w = be.from_host(uniform_host(F, d, float(1.0 / std::sqrt(double(d))), 12));

    // TopK: pre = u W_enc^T, exactly as TopKSae::forward issues it.
    {
      Tensor pre = be.empty(B, F);
      const double s = time_backend(be, reps, 3, [&] { be.gemm(false, true, 1.f, u, w, 0.f, pre); });
      r.topk_ms = 1e3 * s;
      r.topk_tflops = 2.0 * double(B) * d * F / s / 1e12;
    }

    // Scale: a random top-e routing (e distinct experts per token, uniform), grouped by the backend.
    Tensor experts_h = distinct_ids_host(B, e, E, 13);
    for (int64_t b = 0; b < B; ++b) std::sort(experts_h.host<int32_t>() + b * e, experts_h.host<int32_t>() + (b + 1) * e);
    Tensor experts = be.from_host(experts_h);
    ExpertGroups groups = be.group_by_expert(experts, E);
    r.min_rows = B * e;
    for (int i = 0; i < E; ++i) {
      const int64_t m = groups.offsets[i + 1] - groups.offsets[i];
      r.min_rows = std::min(r.min_rows, m);
      r.max_rows = std::max(r.max_rows, m);
    }
    const double scale_flops = 2.0 * double(B) * e * n * d;
    const float om = 0.1f;  // a non-zero omega (Feature Scaling mean)

    // GEMMs only: tokens gathered by expert once, then the experts' products as one grouped call, and one call per
    // expert (the same products: what grouping saves is launches).
    const std::vector<int64_t>& offsets = groups.offsets;
    const std::vector<float> scale(E, 1.f + om), neg_omega(E, -om), ones(E, 1.f);
    {
      Tensor ug = be.empty(B * e, d), y = be.empty(B * e, n);
      be.gather_rows(u, groups.tokens, ug);
      double s = time_backend(be, reps, 3, [&] { be.grouped_gemm(true, ug, w, n, offsets, scale, 0.f, y); });
      r.scale_gemm_ms = 1e3 * s;
      r.scale_gemm_tflops = scale_flops / s / 1e12;
      s = time_backend(be, reps, 3, [&] {
        for (int i = 0; i < E; ++i) {
          const int64_t r0 = offsets[i], r1 = offsets[i + 1];
          if (r1 == r0) continue;
          be.gemm(false, true, 1.f + om, ug.row_range(r0, r1), w.row_range(int64_t(i) * n, int64_t(i + 1) * n), 0.f,
                  y.row_range(r0, r1));
        }
      });
      r.scale_loop_ms = 1e3 * s;
      r.scale_loop_tflops = scale_flops / s / 1e12;
    }

    // The whole encoder as MoeSae::encode_experts issues it on CUDA (all experts in one run: gather, grouped
    // products, the rank-1 Feature Scaling correction, relu, scatter into the candidates), FLOPs of the main product.
    {
      Tensor lowpass = be.empty(E, d);
      std::vector<int64_t> blocks(E + 1);
      for (int i = 0; i <= E; ++i) blocks[i] = int64_t(i) * n;
      be.sum_group_rows(w, blocks, 1.f / float(n), lowpass);
      Tensor ones_n = be.empty(1, n);
      be.fill(ones_n, 1.f);
      Tensor cand = be.empty(B * e, n);
      const int64_t M = offsets[E];
      Tensor ug = be.empty(M, d), y = be.empty(M, n), sv = be.empty(M, 4).col_range(0, 1);
      const double s = time_backend(be, reps, 2, [&] {
        be.gather_rows(u, groups.tokens.row_range(0, M), ug);
        be.grouped_gemm(true, ug, w, n, offsets, scale, 0.f, y);
        be.grouped_gemm(true, ug, lowpass, 1, offsets, ones, 0.f, sv);
        be.grouped_gemm(false, sv, ones_n, 0, offsets, neg_omega, 1.f, y);
        be.relu(y);
        be.scatter_rows(y, groups.cand_rows.row_range(0, M), cand);
      });
      r.scale_phase_ms = 1e3 * s;
      r.scale_phase_tflops = scale_flops / s / 1e12;
    }
    r.ok = true;
  } catch (const std::exception& ex) {
    r.error = ex.what();
  }
  return r;
}

// ---- memory-bound kernels -----------------------------------------------------------------------------------------

struct KernelResult {
  std::string short_name, name, bytes_rule;
  bool ok = false;
  std::string error;
  double ms = 0, gbs = 0;
  double footprint_mb = 0;  // bytes of the operation's distinct inputs (to compare with the L2 size)
};

std::vector<KernelResult> bench_kernels(Backend& be, int64_t B, int d, int F, int e, int n, int k, int reps) {
  std::vector<KernelResult> out;
  auto add = [&](const char* short_name, const std::string& name, const std::string& rule, double bytes,
                 double footprint, auto&& fn) {
    KernelResult kr;
    kr.short_name = short_name;
    kr.name = name;
    kr.bytes_rule = rule;
    kr.footprint_mb = footprint / 1e6;
    try {
      const double s = time_backend(be, reps, 20, fn);  // 20 calls per wait: the wait (~20 us) is noise
      kr.ms = 1e3 * s;
      kr.gbs = bytes / s / 1e9;
      kr.ok = true;
    } catch (const std::exception& ex) {
      kr.error = ex.what();
    }
    out.push_back(kr);
  };

  // topk_rows on the TopK SAE's pre-activations: relu(u W^T), as the model computes them.
  try {
    Tensor pre = be.empty(B, F);
    {
      Tensor u = be.from_host(normal_host(B, d, 21));
      Tensor w = be.from_host(uniform_host(F, d, float(1.0 / std::sqrt(double(d))), 22));
      be.gemm(false, true, 1.f, u, w, 0.f, pre);
      be.relu(pre);
    }
    Tensor vals = be.empty(B, k), idx = be.empty(B, k, DType::I32);
    const double bytes = 4.0 * B * F + 8.0 * B * k;
    add("topk[BxF]", "topk_rows [" + std::to_string(B) + " x " + std::to_string(F) + "] k=" + std::to_string(k),
        "input read once + vals/ids written", bytes, 4.0 * B * F,
        [&] { be.topk_rows(pre, k, vals, idx); });
  } catch (const std::exception& ex) {
    KernelResult kr;
    kr.short_name = "topk[BxF]";
    kr.name = "topk_rows [B x F]";
    kr.error = ex.what();
    out.push_back(kr);
  }

  // topk_rows on the Scale SAE's candidates [B, e*n] (post-ReLU pre-activations of the chosen experts).
  try {
    Tensor cand = be.from_host(normal_host(B, int64_t(e) * n, 23));
    be.relu(cand);
    Tensor vals = be.empty(B, k), idx = be.empty(B, k, DType::I32);
    const double bytes = 4.0 * B * e * n + 8.0 * B * k;
    add("topk[Bx(e*n)]", "topk_rows [" + std::to_string(B) + " x " + std::to_string(e * n) + "] k=" + std::to_string(k),
        "input read once + vals/ids written", bytes, 4.0 * B * e * n, [&] { be.topk_rows(cand, k, vals, idx); });
  } catch (const std::exception& ex) {
    KernelResult kr;
    kr.short_name = "topk[Bx(e*n)]";
    kr.name = "topk_rows [B x e*n]";
    kr.error = ex.what();
    out.push_back(kr);
  }

  // Sparse codes: B x k random distinct latent ids, positive coefficients; W [F, d].
  try {
    Tensor ids = be.from_host(distinct_ids_host(B, k, F, 24));
    Tensor coef = be.from_host(normal_host(B, k, 25, /*absolute=*/true));
    Tensor w = be.from_host(uniform_host(F, d, float(1.0 / std::sqrt(double(d))), 26));
    Tensor x = be.from_host(normal_host(B, d, 27));
    Tensor xo = be.empty(B, d);
    Tensor dots = be.empty(B, k);
    Tensor g = be.zeros(F, d);
    const double code = 8.0 * B * k;  // coef + ids
    const double rows = 4.0 * B * k * d;
    add("spmm", "sparse_rows_matmul (decode) [" + std::to_string(B) + " x " + std::to_string(k) + "] W [" +
            std::to_string(F) + " x " + std::to_string(d) + "]",
        "one W row gathered per entry + output written", rows + 4.0 * B * d + code, 4.0 * F * d + code,
        [&] { be.sparse_rows_matmul(coef, ids, w, 0.f, xo); });
    add("sp_dot", "sparse_rows_dot (decode backward)", "one W row gathered per entry + x read", rows + 4.0 * B * d + code,
        4.0 * F * d + 4.0 * B * d + code, [&] { be.sparse_rows_dot(x, ids, w, dots); });
    add("outer_add", "sparse_rows_outer_add (decoder grad)", "one x row gathered per entry + G read and written once",
        rows + 8.0 * F * d + code, 4.0 * F * d + 4.0 * B * d + code,
        [&] { be.sparse_rows_outer_add(coef, ids, x, 1.f, g); });
  } catch (const std::exception& ex) {
    KernelResult kr;
    kr.short_name = "sparse";
    kr.name = "sparse_rows_*";
    kr.error = ex.what();
    out.push_back(kr);
  }
  return out;
}

// ---- the ceilings (cudart / cuBLAS directly) ----------------------------------------------------------------------

struct Ceilings {
  bool ok = false;
  std::string error;
  double copy_gbs = 0;
  std::map<std::string, double> gemm_tflops;  // "fp32" | "tf32" | "bf16"
};

struct DeviceSummary {
  std::string name;
  int sms = 0, cc_major = 0, cc_minor = 0;
  double mem_gib = 0, l2_mib = 0;
};

#define BENCH_CUDA_CHECK(call)                                                                               \
  do {                                                                                                       \
    const cudaError_t err_ = (call);                                                                         \
    if (err_ != cudaSuccess)                                                                                 \
      ::moesae::fail(#call, " failed: ", cudaGetErrorName(err_), ": ", cudaGetErrorString(err_), " (",       \
                     __FILE__, ":", __LINE__, ")");                                                          \
  } while (0)

#define BENCH_CUBLAS_CHECK(call)                                                                             \
  do {                                                                                                       \
    const cublasStatus_t st_ = (call);                                                                       \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                        \
      ::moesae::fail(#call, " failed: ", cublasGetStatusName(st_), ": ", cublasGetStatusString(st_), " (",   \
                     __FILE__, ":", __LINE__, ")");                                                          \
  } while (0)

// For destructors, which must not throw: reports a failed release on stderr.
void warn_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) std::fprintf(stderr, "bench_cuda: %s failed: %s\n", what, cudaGetErrorString(err));
}
void warn_cublas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS) std::fprintf(stderr, "bench_cuda: %s failed: %s\n", what, cublasGetStatusString(st));
}

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { BENCH_CUDA_CHECK(cudaMalloc(&p, bytes)); }
  ~DeviceBuffer() {
    if (p) warn_cuda(cudaFree(p), "cudaFree");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { BENCH_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() {
    if (s) warn_cuda(cudaStreamDestroy(s), "cudaStreamDestroy");
  }
};

struct EventPair {
  cudaEvent_t a = nullptr, b = nullptr;
  EventPair() {
    BENCH_CUDA_CHECK(cudaEventCreate(&a));
    BENCH_CUDA_CHECK(cudaEventCreate(&b));
  }
  ~EventPair() {
    if (a) warn_cuda(cudaEventDestroy(a), "cudaEventDestroy");
    if (b) warn_cuda(cudaEventDestroy(b), "cudaEventDestroy");
  }
  // Seconds of fn on stream s, by events.
  template <typename Fn>
  double time(cudaStream_t s, Fn&& fn) {
    BENCH_CUDA_CHECK(cudaEventRecord(a, s));
    fn();
    BENCH_CUDA_CHECK(cudaEventRecord(b, s));
    BENCH_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0.f;
    BENCH_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    return 1e-3 * double(ms);
  }
};

struct CublasHandle {
  cublasHandle_t h = nullptr;
  CublasHandle() { BENCH_CUBLAS_CHECK(cublasCreate(&h)); }
  ~CublasHandle() {
    if (h) warn_cublas(cublasDestroy(h), "cublasDestroy");
  }
};

DeviceSummary query_device(int device) {
  BENCH_CUDA_CHECK(cudaSetDevice(device));
  cudaDeviceProp p{};
  BENCH_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  DeviceSummary s;
  s.name = p.name;
  s.sms = p.multiProcessorCount;
  s.cc_major = p.major;
  s.cc_minor = p.minor;
  s.mem_gib = double(p.totalGlobalMem) / double(1ull << 30);
  s.l2_mib = double(p.l2CacheSize) / double(1 << 20);
  return s;
}

uint16_t to_bf16(float f) {  // round to nearest even (finite inputs)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

Ceilings measure_ceilings(int device, size_t copy_bytes, int gemm_n, int reps, const std::vector<std::string>& precs) {
  Ceilings c;
  try {
    BENCH_CUDA_CHECK(cudaSetDevice(device));
    Stream stream;
    EventPair ev;

    // Device-to-device copy: bytes read + bytes written per copy; two warm-ups, median of `reps`.
    {
      DeviceBuffer src(copy_bytes), dst(copy_bytes);
      BENCH_CUDA_CHECK(cudaMemsetAsync(src.p, 0x5a, copy_bytes, stream.s));  // non-zero pattern
      BENCH_CUDA_CHECK(cudaMemsetAsync(dst.p, 0x00, copy_bytes, stream.s));
      std::vector<double> t;
      for (int r = -2; r < reps; ++r) {
        const double s = ev.time(stream.s, [&] {
          BENCH_CUDA_CHECK(cudaMemcpyAsync(dst.p, src.p, copy_bytes, cudaMemcpyDeviceToDevice, stream.s));
        });
        if (r >= 0) t.push_back(s);
      }
      c.copy_gbs = 2.0 * double(copy_bytes) / median(t) / 1e9;
    }

    // GEMM n^3 on random data (uniform in [-1, 1)), C = A B, fp32 output; three warm-ups, median of `reps`.
    {
      const size_t nn = size_t(gemm_n) * size_t(gemm_n);
      CublasHandle cublas;
      BENCH_CUBLAS_CHECK(cublasSetStream(cublas.h, stream.s));
      BENCH_CUBLAS_CHECK(cublasSetMathMode(cublas.h, CUBLAS_DEFAULT_MATH));  // Sgemm: no TF32
      DeviceBuffer a32(nn * 4), b32(nn * 4), c32(nn * 4), a16(nn * 2), b16(nn * 2);
      {
        std::vector<float> h(nn);
        std::vector<uint16_t> h16(nn);
        Rng rng(31);
        for (DeviceBuffer* dst : {&a32, &b32}) {
          for (size_t i = 0; i < nn; i += 2) {  // two 24-bit uniforms per 64-bit draw
            const uint64_t v = rng.next_u64();
            h[i] = float(double(v >> 40) * 0x1.0p-23 - 1.0);
            if (i + 1 < nn) h[i + 1] = float(double((v >> 8) & 0xffffffu) * 0x1.0p-23 - 1.0);
          }
          for (size_t i = 0; i < nn; ++i) h16[i] = to_bf16(h[i]);
          BENCH_CUDA_CHECK(cudaMemcpy(dst->p, h.data(), nn * 4, cudaMemcpyHostToDevice));
          BENCH_CUDA_CHECK(
              cudaMemcpy(dst == &a32 ? a16.p : b16.p, h16.data(), nn * 2, cudaMemcpyHostToDevice));
        }
        // Pageable copies may still be landing, and cuBLAS's stream does not wait for them.
        BENCH_CUDA_CHECK(cudaDeviceSynchronize());
      }
      const float alpha = 1.f, beta = 0.f;
      const int n = gemm_n;
      for (const std::string& p : precs) {
        auto call = [&] {
          if (p == "fp32") {
            BENCH_CUBLAS_CHECK(cublasSgemm(cublas.h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha,
                                           static_cast<const float*>(a32.p), n, static_cast<const float*>(b32.p), n,
                                           &beta, static_cast<float*>(c32.p), n));
          } else if (p == "tf32") {
            BENCH_CUBLAS_CHECK(cublasGemmEx(cublas.h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a32.p, CUDA_R_32F, n,
                                            b32.p, CUDA_R_32F, n, &beta, c32.p, CUDA_R_32F, n,
                                            CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
          } else if (p == "bf16") {
            BENCH_CUBLAS_CHECK(cublasGemmEx(cublas.h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha, a16.p, CUDA_R_16BF, n,
                                            b16.p, CUDA_R_16BF, n, &beta, c32.p, CUDA_R_32F, n, CUBLAS_COMPUTE_32F,
                                            CUBLAS_GEMM_DEFAULT));
          } else {
            fail("unknown precision ", p);
          }
        };
        std::vector<double> t;
        for (int r = -3; r < reps; ++r) {
          const double s = ev.time(stream.s, call);
          if (r >= 0) t.push_back(s);
        }
        c.gemm_tflops[p] = 2.0 * double(n) * n * n / median(t) / 1e12;
      }
    }
    BENCH_CUDA_CHECK(cudaStreamSynchronize(stream.s));
    c.ok = true;
  } catch (const std::exception& e) {
    c.error = e.what();
  }
  return c;
}

std::string find_torch_script(const std::string& given) {
  namespace fs = std::filesystem;
  if (!given.empty()) return given;
  std::vector<fs::path> candidates = {fs::path(MOESAE_SOURCE_DIR) / "bench" / "torch_reference.py"};
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back(exe.parent_path().parent_path().parent_path() / "bench" / "torch_reference.py");
  candidates.push_back(fs::current_path(ec) / "bench" / "torch_reference.py");
  for (const auto& c : candidates)
    if (fs::exists(c, ec)) return c.string();
  return candidates.front().string();
}

std::string last_lines(const std::string& path, int n) {
  std::ifstream f(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(f, l);)
    if (!l.empty()) lines.push_back(l);
  std::string out;
  for (size_t i = lines.size() > size_t(n) ? lines.size() - n : 0; i < lines.size(); ++i) out += "    " + lines[i] + "\n";
  return out;
}

struct PeerResult {
  bool ok = false;
  double topk = 0, scale = 0;
  std::string line;
};

// Runs bench/torch_reference.py on the GPU (median step, the given float32 matmul mode) and prints its JSON line, or
// why it gave none (the last lines of its stderr).
PeerResult run_torch_peer(const std::string& python, const std::string& script, const std::string& device,
                          const std::string& precision, const std::string& acts_path, const std::string& err_path,
                          int batch, int d, int F, int E, int e, int k, int steps, int warmup) {
  const std::string cmd = python + " " + script + " --device " + device + " --stat median --precision " + precision +
                          " --acts " + acts_path + " --d " + std::to_string(d) + " --batch " + std::to_string(batch) +
                          " --dict-size " + std::to_string(F) + " --experts " + std::to_string(E) + " --active " +
                          std::to_string(e) + " --k " + std::to_string(k) + " --steps " + std::to_string(steps) +
                          " --warmup " + std::to_string(warmup) + " 2>" + err_path;
  const bench::PeerOutput po = bench::run_peer(cmd);
  const int rc = po.rc < 0 ? -1 : WIFEXITED(po.rc) ? WEXITSTATUS(po.rc) : 128 + WTERMSIG(po.rc);
  PeerResult pr;
  if (rc == 0) {
    pr.topk = po.number("topk_tokens_per_s");
    pr.scale = po.number("scale_dense_tokens_per_s");
  }
  pr.ok = pr.topk > 0 && pr.scale > 0;
  pr.line = po.stdout_text;
  while (!pr.line.empty() && pr.line.back() == '\n') pr.line.pop_back();
  if (!pr.ok)
    std::printf("[%s] PyTorch peer unavailable (%s %s exited %d):\n%s", precision.c_str(), python.c_str(),
                script.c_str(), rc, last_lines(err_path, 3).c_str());
  else
    std::printf("[%s] PyTorch %s\n", precision.c_str(), pr.line.c_str());
  return pr;
}

std::string fmt_num(double v, const char* f = "%.0f") {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace
#endif  // MOESAE_HAVE_CUDA

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // line by line, so a run cut short still shows what it measured
  CLI::App app{"moesae CUDA benchmark: ceilings, training steps, encoder GEMMs, kernels, PyTorch peer"};
  int batch = 8192, steps = 20, warmup = 3, device = 0, gemm_n = 8192, reps = 10;
  double copy_gib = 2.0;
  std::string python = "python3", torch_script, precisions_arg = "fp32,tf32,bf16";
  bool no_torch = false, quick = false;
  app.add_option("--batch", batch, "tokens per step (default 8192; --quick: 2048)");
  app.add_option("--steps", steps, "timed steps per model and precision (default 20; --quick: 5)");
  app.add_option("--warmup", warmup, "untimed steps first (default 3; --quick: 2)");
  app.add_option("--device", device, "CUDA device index");
  app.add_option("--precisions", precisions_arg, "gemm precisions to run, comma-separated (fp32,tf32,bf16)");
  app.add_option("--gemm-size", gemm_n, "square cuBLAS GEMM size for the peak (default 8192; --quick: 4096)");
  app.add_option("--copy-gib", copy_gib, "bytes of the device-to-device copy, GiB (default 2)");
  app.add_option("--reps", reps, "timed repeats of the ceilings and kernels (median; default 10; --quick: 5)");
  app.add_option("--python", python, "python with a CUDA torch for the peer implementation");
  app.add_option("--torch-script", torch_script, "path of bench/torch_reference.py (default: found from the source "
                                                 "tree, the executable's location or the working directory)");
  app.add_flag("--no-torch", no_torch, "skip the PyTorch peer");
  app.add_flag("--quick", quick, "smaller batch, GEMM and repeat counts (a smoke run)");
  CLI11_PARSE(app, argc, argv);
  if (quick) {
    if (!app.count("--batch")) batch = 2048;
    if (!app.count("--steps")) steps = 5;
    if (!app.count("--warmup")) warmup = 2;
    if (!app.count("--gemm-size")) gemm_n = 4096;
    if (!app.count("--reps")) reps = 5;
  }
  steps = std::max(steps, 1);
  reps = std::max(reps, 1);
  std::vector<std::string> precs;
  {
    std::stringstream ss(precisions_arg);
    for (std::string p; std::getline(ss, p, ',');) {
      if (p.empty()) continue;
      if (p != "fp32" && p != "tf32" && p != "bf16") {
        std::fprintf(stderr, "bench_cuda: unknown precision '%s' (expected fp32, tf32, bf16)\n", p.c_str());
        return 2;
      }
      precs.push_back(p);
    }
  }

#ifndef MOESAE_HAVE_CUDA
  std::printf("bench_cuda: this moesae was built without CUDA (MOESAE_HAVE_CUDA unset); nothing to measure\n");
  return 0;
#else
  {
    std::string why;
    if (!cuda_backend_available(&why)) {
      std::printf("bench_cuda: no usable CUDA device (%s); nothing to measure\n", why.c_str());
      return 0;
    }
  }
  const int d = 768, F = 24576, E = 64, e = 2, k = 32, n = F / E;

  DeviceSummary dev;
  try {
    dev = query_device(device);
  } catch (const std::exception& ex) {
    std::printf("bench_cuda: device %d: %s\n", device, ex.what());
    return 1;
  }
  int runtime = 0, driver = 0;  // 0 when the query fails
  if (cudaRuntimeGetVersion(&runtime) != cudaSuccess) runtime = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) driver = 0;
  std::printf("moesae bench_cuda: device %d = %s (sm_%d%d, %d SMs, %.1f GiB, L2 %.0f MiB), CUDA runtime %d.%d, "
              "driver %d.%d\n",
              device, dev.name.c_str(), dev.cc_major, dev.cc_minor, dev.sms, dev.mem_gib, dev.l2_mib, runtime / 1000,
              (runtime % 1000) / 10, driver / 1000, (driver % 1000) / 10);
  std::printf("batch %d, median of %d timed steps after %d warm-up steps; ceilings and kernels: median of %d%s\n",
              batch, steps, warmup, reps, quick ? " (--quick)" : "");

  // 1. Ceilings.
  const size_t copy_bytes = size_t(copy_gib * double(1ull << 30)) / 4 * 4;
  std::vector<std::string> all_precs = {"fp32", "tf32", "bf16"};
  Ceilings ceil = measure_ceilings(device, copy_bytes, gemm_n, reps, all_precs);
  if (!ceil.ok) {
    std::printf("ceilings FAILED: %s\n", ceil.error.c_str());
  } else {
    std::printf("[ceiling] D2D copy %.2f GiB (cudaMemcpyAsync, read + write): %.0f GB/s\n", copy_gib, ceil.copy_gbs);
    for (const auto& p : all_precs)
      std::printf("[ceiling] cuBLAS %s GEMM %d^3 (%s): %.1f TFLOP/s\n", p.c_str(), gemm_n,
                  p == "fp32"   ? "cublasSgemm"
                  : p == "tf32" ? "cublasGemmEx, CUBLAS_COMPUTE_32F_FAST_TF32"
                                : "cublasGemmEx, bf16 in, fp32 accumulate/out",
                  ceil.gemm_tflops[p]);
  }
  auto peak = [&](const std::string& p) { return ceil.ok ? ceil.gemm_tflops[p] : 0.0; };
  auto pct = [](double a, double b) { return b > 0 ? 100.0 * a / b : 0.0; };

  // Activations: random normal, as bench_train_step.
  Tensor acts = normal_host(batch, d, 1);

  // 2 + 3. Training steps and encoder GEMMs per precision.
  const ModelConfig scale = scale_config(d, F), topk = topk_config(d, F);
  std::map<std::string, StepTiming> step_scale, step_topk;
  std::map<std::string, EncoderResult> enc;
  std::vector<KernelResult> kernels;
  std::printf("phase shares: not reported (core/profile.h scopes read the host clock while the GPU runs "
              "asynchronously); the encoder is timed on its own below\n");
  for (const auto& p : precs) {
    std::unique_ptr<Backend> be;
    try {
      CudaOptions co;
      co.device = device;
      co.precision = parse_gemm_precision(p);
      be = make_cuda_backend(co);
    } catch (const std::exception& ex) {
      std::printf("[%s] backend FAILED: %s\n", p.c_str(), ex.what());
      continue;
    }
    StepTiming rs = bench_model(scale, acts, steps, warmup, *be);
    StepTiming rt = bench_model(topk, acts, steps, warmup, *be);
    step_scale[p] = rs;
    step_topk[p] = rt;
    auto report = [&](const char* name, const StepTiming& r) {
      if (!r.ok)
        std::printf("[%s] %-32s FAILED: %s\n", p.c_str(), name, r.error.c_str());
      else
        std::printf("[%s] %-32s %10.0f tokens/s (median step %.2f ms; best step %.0f tokens/s; per step %.0f "
                    "backend operations, %.0f host waits, %.0f grouped products run per group)\n",
                    p.c_str(), name, r.median_tps, r.median_ms, r.best_tps, r.operations, r.host_waits, r.fallbacks);
    };
    report("Scale SAE step (E=64,e=2,k=32,FS)", rs);
    report("TopK SAE step (F=24576,k=32)", rt);

    EncoderResult er = bench_encoder(*be, batch, d, F, E, e, reps);
    enc[p] = er;
    if (!er.ok) {
      std::printf("[%s] encoder GEMMs FAILED: %s\n", p.c_str(), er.error.c_str());
    } else {
      std::printf("[%s] TopK encoder gemm [%d,%d]x[%d,%d]: %.3f ms, %.1f TFLOP/s = %.0f%% of cuBLAS %s peak\n",
                  p.c_str(), batch, d, d, F, er.topk_ms, er.topk_tflops, pct(er.topk_tflops, peak(p)), p.c_str());
      std::printf("[%s] Scale encoder: %d products [%lld..%lld rows,%d]x[%d,%d] as one grouped_gemm: %.3f ms, %.1f "
                  "TFLOP/s = %.0f%% of peak; one gemm per expert: %.3f ms (grouped %.2fx); whole encoder (gather, "
                  "grouped products, FS rank-1, relu, scatter): %.3f ms, %.1f TFLOP/s = %.0f%%\n",
                  p.c_str(), E, (long long)er.min_rows, (long long)er.max_rows, d, d, n, er.scale_gemm_ms,
                  er.scale_gemm_tflops, pct(er.scale_gemm_tflops, peak(p)), er.scale_loop_ms,
                  er.scale_loop_ms / er.scale_gemm_ms, er.scale_phase_ms, er.scale_phase_tflops,
                  pct(er.scale_phase_tflops, peak(p)));
    }

    // 4. Kernels (independent of the gemm precision apart from how the inputs were made): once, on the first.
    if (kernels.empty()) {
      kernels = bench_kernels(*be, batch, d, F, e, n, k, reps);
      for (const auto& kr : kernels) {
        if (!kr.ok)
          std::printf("[kernel] %-58s FAILED: %s\n", kr.name.c_str(), kr.error.c_str());
        else
          std::printf("[kernel] %-58s %8.3f ms %7.0f GB/s = %3.0f%% of copy bw  (bytes: %s; distinct data %.0f MB%s)\n",
                      kr.name.c_str(), kr.ms, kr.gbs, pct(kr.gbs, ceil.copy_gbs), kr.bytes_rule.c_str(),
                      kr.footprint_mb, kr.footprint_mb < dev.l2_mib * 1.048576 ? ", fits in L2" : "");
      }
    }
  }

  // 5. The PyTorch peer on the same GPU, same activations, median step; fp32 and tf32 matmul modes.
  std::map<std::string, PeerResult> peer;
  if (!no_torch) {
    // Our backends are gone by now; hand their pool's cached blocks back to the driver for PyTorch's process.
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) cudaMemPoolTrimTo(pool, 0);
    const std::string script = find_torch_script(torch_script);
    const std::string acts_path = "/tmp/moesae_bench_cuda_acts." + std::to_string(::getpid()) + ".f32";
    const std::string err_path = "/tmp/moesae_bench_cuda_torch." + std::to_string(::getpid()) + ".err";
    {
      std::ofstream f(acts_path, std::ios::binary);
      f.write(reinterpret_cast<const char*>(acts.host<float>()), acts.numel() * 4);
    }
    for (const std::string p : {"fp32", "tf32"}) {
      if (std::find(precs.begin(), precs.end(), p) == precs.end()) continue;
      peer[p] = run_torch_peer(python, script, "cuda:" + std::to_string(device), p, acts_path, err_path, batch, d, F,
                               E, e, k, steps, warmup);
    }
    std::remove(acts_path.c_str());
    std::remove(err_path.c_str());
    for (const auto& [p, pr] : peer) {
      if (!pr.ok) continue;
      const StepTiming& rt = step_topk[p];
      const StepTiming& rs = step_scale[p];
      if (rt.ok)
        std::printf("[%s] TopK step: moesae %.0f vs PyTorch %.0f tokens/s -> %.2fx\n", p.c_str(), rt.median_tps,
                    pr.topk, rt.median_tps / pr.topk);
      if (rs.ok)
        std::printf("[%s] Scale step: moesae %.0f vs PyTorch dense-all-experts %.0f tokens/s -> %.2fx\n", p.c_str(),
                    rs.median_tps, pr.scale, rs.median_tps / pr.scale);
    }
  }

  // 6. Summary.
  std::printf("\n==== bench_cuda summary: %s, %d SMs, batch %d, median of %d steps ====\n", dev.name.c_str(), dev.sms,
              batch, steps);
  if (ceil.ok)
    std::printf("ceilings: copy %.0f GB/s | cuBLAS %d^3 TFLOP/s: fp32 %.1f, tf32 %.1f, bf16 %.1f\n", ceil.copy_gbs,
                gemm_n, peak("fp32"), peak("tf32"), peak("bf16"));
  else
    std::printf("ceilings: FAILED (%s)\n", ceil.error.c_str());
  std::printf("%-5s %12s %12s %9s %9s %9s %12s %12s %7s %7s\n", "prec", "TopK tok/s", "Scale tok/s", "TopK enc",
              "Scale gm", "Scale enc", "torch TopK", "torch Scale", "TopK x", "Scale x");
  for (const auto& p : precs) {
    auto tps = [](const std::map<std::string, StepTiming>& m, const std::string& p) {
      auto it = m.find(p);
      return it != m.end() && it->second.ok ? fmt_num(it->second.median_tps) : std::string("FAIL");
    };
    std::string e1 = "-", e2 = "-", e3 = "-";
    if (enc.count(p) && enc[p].ok) {
      e1 = fmt_num(pct(enc[p].topk_tflops, peak(p)), "%.0f%%");
      e2 = fmt_num(pct(enc[p].scale_gemm_tflops, peak(p)), "%.0f%%");
      e3 = fmt_num(pct(enc[p].scale_phase_tflops, peak(p)), "%.0f%%");
    }
    std::string t1 = "-", t2 = "-", x1 = "-", x2 = "-";
    if (peer.count(p) && peer[p].ok) {
      t1 = fmt_num(peer[p].topk);
      t2 = fmt_num(peer[p].scale);
      if (step_topk.count(p) && step_topk[p].ok) x1 = fmt_num(step_topk[p].median_tps / peer[p].topk, "%.2fx");
      if (step_scale.count(p) && step_scale[p].ok) x2 = fmt_num(step_scale[p].median_tps / peer[p].scale, "%.2fx");
    }
    std::printf("%-5s %12s %12s %9s %9s %9s %12s %12s %7s %7s\n", p.c_str(), tps(step_topk, p).c_str(),
                tps(step_scale, p).c_str(), e1.c_str(), e2.c_str(), e3.c_str(), t1.c_str(), t2.c_str(), x1.c_str(),
                x2.c_str());
  }
  std::printf("(enc: TopK encoder gemm / Scale grouped expert gemms / Scale whole encoder, %% of cuBLAS peak of the "
              "same precision; torch: PyTorch %s on this GPU, dense all experts for Scale)\n",
              no_torch ? "skipped" : "fp32/tf32 matmul");
  std::string kl = "kernels (GB/s, % of copy):";
  for (size_t i = 0; i < kernels.size(); ++i) {
    const std::string& nm = kernels[i].short_name;
    if (kernels[i].ok)
      kl += " " + nm + " " + fmt_num(kernels[i].gbs) + " (" + fmt_num(pct(kernels[i].gbs, ceil.copy_gbs)) +
            "%)";
    else
      kl += " " + nm + " FAIL";
  }
  std::printf("%s\n", kl.c_str());
  return 0;
#endif
}
