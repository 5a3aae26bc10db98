// moesae CUDA kernels: reductions. Every sum is in double and in a fixed order (per-thread strided partials,
// a fixed shared-memory tree per block, block partials added in block order), so results repeat bit for bit.
#include "backend/cuda/kernels/kernels.h"

namespace moesae::cuda {
namespace {

constexpr int kReduceBlocks = 1024;

__device__ inline double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Shared-memory tree over the block's kThreads partials; thread 0 gets the block's sum.
__device__ inline double block_sum(double v) {
  __shared__ double s[kThreads];
  s[threadIdx.x] = v;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) s[threadIdx.x] += s[threadIdx.x + w];
    __syncthreads();
  }
  return s[0];
}

template <typename T, typename F>
__global__ void partial_sums_kernel(Mat<const T> x, F term, double* partial) {
  const int64_t n = x.size(), stride = int64_t(gridDim.x) * kThreads;
  double acc = 0;
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < n; i += stride)
    acc += term(x.at(i / x.cols, i % x.cols));
  const double total = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

template <typename T, typename F>
void partial_sums(const Ctx& ctx, Mat<const T> x, F term, double* partial) {
  if (x.size() == 0) return;
  partial_sums_kernel<<<reduce_blocks(x.size()), kThreads, 0, ctx.stream>>>(x, term, partial);
  MOESAE_LAUNCHED();
}

// Column sums, phase 1: rows in chunks of kChunkRows; each thread adds one column of one chunk in row order.
constexpr int64_t kChunkRows = 256;
__global__ void column_partials_kernel(Mat<const float> a, bool squares, double* part) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= a.cols) return;
  const int64_t chunks = (a.rows + kChunkRows - 1) / kChunkRows;
  for (int64_t q = blockIdx.y; q < chunks; q += gridDim.y) {  // gridDim.y is capped at 65535
    const int64_t r0 = q * kChunkRows, r1 = min(a.rows, r0 + kChunkRows);
    double acc = 0;
    for (int64_t r = r0; r < r1; ++r) {
      const double v = a.at(r, c);
      acc += squares ? v * v : v;
    }
    part[q * a.cols + c] = acc;
  }
}

// One warp per row: f(row index, lane) in each lane; rows spread over blocks of 8 warps.
template <typename F>
__global__ void warp_rows_kernel(int64_t rows, F f) {
  const int64_t r = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  if (r < rows) f(r, int(threadIdx.x % 32));
}
template <typename F>
void for_each_row_warp(const Ctx& ctx, int64_t rows, F f) {
  if (rows <= 0) return;
  constexpr int warps = kThreads / 32;
  warp_rows_kernel<<<unsigned((rows + warps - 1) / warps), kThreads, 0, ctx.stream>>>(rows, f);
  MOESAE_LAUNCHED();
}

}  // namespace

int reduce_blocks(int64_t n) {
  return int(std::min<int64_t>(kReduceBlocks, (n + kThreads - 1) / kThreads));
}

void reduce_partials(const Ctx& ctx, Mat<const float> x, ReduceOp op, double* partial) {
  switch (op) {
    case ReduceOp::Sum: return partial_sums(ctx, x, [] __device__(float v) { return double(v); }, partial);
    case ReduceOp::SumSquares:
      return partial_sums(ctx, x, [] __device__(float v) { return double(v) * v; }, partial);
    case ReduceOp::CountPositive:
      return partial_sums(ctx, x, [] __device__(float v) { return v > 0.f ? 1.0 : 0.0; }, partial);
  }
}

void count_nonzero_partials(const Ctx& ctx, Mat<const int32_t> x, double* partial) {
  partial_sums(ctx, x, [] __device__(int32_t v) { return v != 0 ? 1.0 : 0.0; }, partial);
}

double add_partials(const double* partial, int blocks) {
  double s = 0;
  for (int i = 0; i < blocks; ++i) s += partial[i];
  return s;
}

__global__ void clip_factor_kernel(const double* partial, const int64_t* first, int items, double max_norm,
                                   float* factor) {
  double sq = 0;
  for (int i = 0; i < items; ++i) {
    double s = 0;  // add_partials
    for (int64_t b = first[i]; b < first[i + 1]; ++b) s += partial[b];
    sq += s;
  }
  const double norm = sqrt(sq);
  *factor = max_norm > 0 && norm > max_norm ? static_cast<float>(max_norm / (norm + 1e-6)) : 1.f;
}

void clip_factor(const Ctx& ctx, const double* partial, const int64_t* first, int items, double max_norm,
                 float* factor) {
  clip_factor_kernel<<<1, 1, 0, ctx.stream>>>(partial, first, items, max_norm, factor);
  MOESAE_LAUNCHED();
}

void column_sums(const Ctx& ctx, Mat<const float> a, bool squares, double* out) {
  const int64_t cols = a.cols, chunks = (a.rows + kChunkRows - 1) / kChunkRows;
  if (cols == 0) return;
  if (chunks == 0) {
    MOESAE_CUDA(cudaMemsetAsync(out, 0, cols * sizeof(double), ctx.stream));
    return;
  }
  Scratch<double> part(ctx, chunks * cols);
  double* pp = part.get();
  const dim3 grid(unsigned((cols + kThreads - 1) / kThreads), unsigned(std::min<int64_t>(chunks, 65535)));
  column_partials_kernel<<<grid, kThreads, 0, ctx.stream>>>(a, squares, pp);
  MOESAE_LAUNCHED();
  for_each(ctx, cols, [=] __device__(int64_t c) {
    double s = 0;
    for (int64_t q = 0; q < chunks; ++q) s += pp[q * cols + c];
    out[c] = s;
  });
}

void group_column_sums(const Ctx& ctx, Mat<const float> a, const int64_t* offsets, int64_t G, int64_t max_rows,
                       float alpha, Mat<float> out) {
  const int64_t cols = a.cols;
  if (G == 0 || cols == 0) return;
  // Phase 1: each group's rows in chunks of kChunkRows (chunk q of group g: partial (g, q, c), 0 past its rows);
  // phase 2: the chunks of each group added in order.
  const int64_t chunks = std::max<int64_t>(1, (max_rows + kChunkRows - 1) / kChunkRows);
  Scratch<double> part(ctx, G * chunks * cols);
  double* pp = part.get();
  for_each(ctx, G * chunks * cols, [=] __device__(int64_t i) {
    const int64_t c = i % cols, gq = i / cols, g = gq / chunks, q = gq % chunks;
    const int64_t r0 = offsets[g] + q * kChunkRows, r1 = min(offsets[g + 1], r0 + kChunkRows);
    double s = 0;
    for (int64_t r = r0; r < r1; ++r) s += a.at(r, c);
    pp[i] = s;
  });
  for_each_2d(ctx, G, cols, [=] __device__(int64_t g, int64_t c) {
    double s = 0;
    for (int64_t q = 0; q < chunks; ++q) s += pp[(g * chunks + q) * cols + c];
    out.at(g, c) = static_cast<float>(double(alpha) * s);
  });
}

void row_squared_error(const Ctx& ctx, Mat<const float> a, Mat<const float> b, float* out) {
  for_each_row_warp(ctx, a.rows, [=] __device__(int64_t r, int lane) {
    double s = 0;
    for (int64_t j = lane; j < a.cols; j += 32) {
      const double d = double(a.at(r, j)) - b.at(r, j);
      s += d * d;
    }
    s = warp_sum(s);
    if (lane == 0) out[r] = static_cast<float>(s);
  });
}

void softmax_rows(const Ctx& ctx, Mat<const float> logits, Mat<float> probs) {
  for_each_row_warp(ctx, logits.rows, [=] __device__(int64_t r, int lane) {
    float mx = -INFINITY;
    for (int64_t j = lane; j < logits.cols; j += 32) mx = fmaxf(mx, logits.at(r, j));
    mx = warp_max(mx);
    double s = 0;
    for (int64_t j = lane; j < logits.cols; j += 32) {
      const float p = expf(logits.at(r, j) - mx);
      probs.at(r, j) = p;
      s += p;
    }
    s = warp_sum(s);
    const float inv = static_cast<float>(1.0 / s);
    for (int64_t j = lane; j < logits.cols; j += 32) probs.at(r, j) *= inv;
  });
}

void softmax_rows_backward(const Ctx& ctx, Mat<const float> probs, Mat<const float> dprobs, Mat<float> dlogits) {
  for_each_row_warp(ctx, probs.rows, [=] __device__(int64_t r, int lane) {
    double s = 0;
    for (int64_t j = lane; j < probs.cols; j += 32) s += double(probs.at(r, j)) * dprobs.at(r, j);
    s = warp_sum(s);
    for (int64_t j = lane; j < probs.cols; j += 32)
      dlogits.at(r, j) = static_cast<float>(probs.at(r, j) * (dprobs.at(r, j) - s));
  });
}

void normalize_rows(const Ctx& ctx, Mat<float> w, float eps) {
  for_each_row_warp(ctx, w.rows, [=] __device__(int64_t r, int lane) {
    double s = 0;
    for (int64_t j = lane; j < w.cols; j += 32) s += double(w.at(r, j)) * w.at(r, j);
    s = warp_sum(s);
    const float inv = static_cast<float>(1.0 / (sqrt(s) + eps));
    for (int64_t j = lane; j < w.cols; j += 32) w.at(r, j) *= inv;
  });
}

void project_out_rows(const Ctx& ctx, Mat<float> g, Mat<const float> w) {
  for_each_row_warp(ctx, g.rows, [=] __device__(int64_t r, int lane) {
    double s = 0;
    for (int64_t j = lane; j < g.cols; j += 32) s += double(g.at(r, j)) * w.at(r, j);
    s = warp_sum(s);
    const float a = static_cast<float>(s);
    for (int64_t j = lane; j < g.cols; j += 32) g.at(r, j) -= a * w.at(r, j);
  });
}

}  // namespace moesae::cuda
