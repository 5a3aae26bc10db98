// moesae CUDA kernels: products with sparse codes (ids [B, k], -1 = empty slot) — the sparse decode of Eq. 1/5
// and its gradients — and the ordered scatter-add. One block per output row; every sum runs in slot order, and
// the gradient scatters are turned into gathers by grouping the (b, j) entries by latent (segments.cu).
#include "backend/cuda/kernels/kernels.h"

namespace moesae::cuda {
namespace {

int threads_for(int64_t d) { return int(std::min<int64_t>(256, std::max<int64_t>(32, (d + 31) / 32 * 32))); }

// out[b] = beta out[b] + sum_j coef[b,j] W[ids[b,j]]: threads over the columns, slots in j order.
__global__ void sparse_matmul_kernel(Mat<const float> coef, Mat<const int32_t> ids, Mat<const float> w, float beta,
                                     Mat<float> out, int* err) {
  constexpr int kSlots = 128;  // slots staged in shared memory at a time
  __shared__ int32_t s_id[kSlots];
  __shared__ float s_coef[kSlots];
  const int64_t b = blockIdx.x, d = out.cols, k = ids.cols;
  constexpr int kPerThread = 4;  // columns per thread held in registers
  for (int64_t t0 = 0; t0 < d; t0 += int64_t(blockDim.x) * kPerThread) {
    float acc[kPerThread];
#pragma unroll
    for (int u = 0; u < kPerThread; ++u) {
      const int64_t t = t0 + threadIdx.x + int64_t(u) * blockDim.x;
      acc[u] = t < d ? (beta == 0.f ? 0.f : (beta == 1.f ? out.at(b, t) : beta * out.at(b, t))) : 0.f;
    }
    for (int64_t j0 = 0; j0 < k; j0 += kSlots) {
      const int64_t n = min(int64_t(kSlots), k - j0);
      __syncthreads();
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
        int32_t f = ids.at(b, j0 + j);
        if (f < -1 || f >= w.rows) {
          report(err, kErrSparseMatmul);
          f = -1;
        }
        s_id[j] = f;
        s_coef[j] = coef.at(b, j0 + j);
      }
      __syncthreads();
      for (int64_t j = 0; j < n; ++j) {
        const int32_t f = s_id[j];
        if (f < 0) continue;
        const float a = s_coef[j];
#pragma unroll
        for (int u = 0; u < kPerThread; ++u) {
          const int64_t t = t0 + threadIdx.x + int64_t(u) * blockDim.x;
          if (t < d) acc[u] += a * w.at(f, t);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kPerThread; ++u) {
      const int64_t t = t0 + threadIdx.x + int64_t(u) * blockDim.x;
      if (t < d) out.at(b, t) = acc[u];
    }
  }
}

// out[b,j] = x[b] . W[ids[b,j]]: x[b] in shared memory (read in place when d is too wide for it), one warp per
// slot, lanes over the columns.
template <bool STAGE_X>
__global__ void sparse_dot_kernel(Mat<const float> x, Mat<const int32_t> ids, Mat<const float> w, Mat<float> out,
                                  int* err) {
  extern __shared__ float s_x[];
  const int64_t b = blockIdx.x, d = x.cols;
  if (STAGE_X) {
    for (int64_t t = threadIdx.x; t < d; t += blockDim.x) s_x[t] = x.at(b, t);
    __syncthreads();
  }
  const float* xb = STAGE_X ? s_x : &x.at(b, 0);
  const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int64_t j = threadIdx.x / 32; j < ids.cols; j += warps) {
    const int32_t f = ids.at(b, j);
    if (f < 0 || f >= w.rows) {
      if (lane == 0) {
        if (f != -1) report(err, kErrSparseDot);
        out.at(b, j) = 0.f;
      }
      continue;
    }
    float s = 0.f;
    for (int64_t t = lane; t < d; t += 32) s += xb[t] * w.at(f, t);
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) out.at(b, j) = s;
  }
}

// G[f] += alpha coef[b,j] x[b] for the entries of latent f (order[offsets[f] .. offsets[f+1]) = b * k + j,
// increasing): one block per latent, threads over the columns (kPerThread each, in registers). The entries are
// staged in shared memory a chunk at a time, so a latent that fires on most tokens streams x rows instead of
// chasing order -> coef pointers one entry at a time.
__global__ void outer_add_kernel(Mat<const float> coef, Mat<const float> x, int64_t k, float alpha,
                                 const int32_t* order, const int32_t* offsets, Mat<float> g) {
  constexpr int kStage = 128, kPerThread = 4;
  __shared__ int64_t s_b[kStage];
  __shared__ float s_a[kStage];
  const int64_t f = blockIdx.x;
  const int32_t e0 = offsets[f], e1 = offsets[f + 1];
  if (e0 == e1) return;  // the whole block returns
  for (int64_t t0 = 0; t0 < g.cols; t0 += int64_t(blockDim.x) * kPerThread) {
    float acc[kPerThread];
#pragma unroll
    for (int u = 0; u < kPerThread; ++u) {
      const int64_t t = t0 + threadIdx.x + int64_t(u) * blockDim.x;
      acc[u] = t < g.cols ? g.at(f, t) : 0.f;
    }
    for (int32_t c0 = e0; c0 < e1; c0 += kStage) {
      const int n = min(kStage, e1 - c0);
      __syncthreads();  // the previous chunk is consumed
      for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const int32_t o = order[c0 + i];
        const int64_t b = o / k;
        s_b[i] = b;
        s_a[i] = alpha * coef.at(b, o % k);
      }
      __syncthreads();
#pragma unroll 4
      for (int i = 0; i < n; ++i) {
        const int64_t b = s_b[i];
        const float a = s_a[i];
#pragma unroll
        for (int u = 0; u < kPerThread; ++u) {
          const int64_t t = t0 + threadIdx.x + int64_t(u) * blockDim.x;
          if (t < g.cols) acc[u] += a * x.at(b, t);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kPerThread; ++u) {
      const int64_t t = t0 + threadIdx.x + int64_t(u) * blockDim.x;
      if (t < g.cols) g.at(f, t) = acc[u];
    }
  }
}

// dst[f] += src[order[e]] for e in [offsets[f], offsets[f+1]), in order of e: one warp per key. The lanes load 32
// entries at once and every lane adds the broadcast values in order (same bits as one thread walking the list).
__global__ void ordered_scatter_add_kernel(const float* src, const int32_t* order, const int32_t* offsets,
                                           int64_t keys, float* dst) {
  const int64_t f = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (f >= keys) return;  // the whole warp returns
  const int32_t e0 = offsets[f], e1 = offsets[f + 1];
  if (e0 == e1) return;
  float acc = dst[f];
  for (int32_t c = e0; c < e1; c += 32) {
    const float v = c + lane < e1 ? src[order[c + lane]] : 0.f;
    const int n = min(32, e1 - c);
    for (int i = 0; i < n; ++i) acc += __shfl_sync(0xffffffffu, v, i);
  }
  if (lane == 0) dst[f] = acc;
}

}  // namespace

void sparse_rows_matmul(const Ctx& ctx, Mat<const float> coef, Mat<const int32_t> ids, Mat<const float> w,
                        float beta, Mat<float> out) {
  if (out.rows == 0 || out.cols == 0) return;
  sparse_matmul_kernel<<<unsigned(out.rows), threads_for((out.cols + 3) / 4), 0, ctx.stream>>>(coef, ids, w, beta,
                                                                                                out, ctx.error);
  MOESAE_LAUNCHED();
}

void sparse_rows_dot(const Ctx& ctx, Mat<const float> x, Mat<const int32_t> ids, Mat<const float> w,
                     Mat<float> out) {
  if (out.rows == 0 || out.cols == 0) return;
  const size_t smem = size_t(x.cols) * sizeof(float);
  if (smem <= 32 * 1024)
    sparse_dot_kernel<true><<<unsigned(out.rows), 256, smem, ctx.stream>>>(x, ids, w, out, ctx.error);
  else
    sparse_dot_kernel<false><<<unsigned(out.rows), 256, 0, ctx.stream>>>(x, ids, w, out, ctx.error);
  MOESAE_LAUNCHED();
}

void sparse_rows_outer_add(const Ctx& ctx, Mat<const float> coef, Mat<const int32_t> ids, Mat<const float> x,
                           float alpha, Mat<float> g) {
  const int64_t n = ids.rows * ids.cols, F = g.rows;
  if (n == 0 || F == 0 || g.cols == 0) return;
  // The (b, j) entries as a flat key array (ids may be a strided view).
  Scratch<int32_t> keys(ctx, n), order(ctx, n), offsets(ctx, F + 1);
  int32_t* kp = keys.get();
  const int64_t k = ids.cols;
  for_each(ctx, n, [=] __device__(int64_t i) { kp[i] = ids.at(i / k, i % k); });
  group_by_key(ctx, kp, n, F, order.get(), offsets.get(), kErrSparseOuterAdd);
  outer_add_kernel<<<unsigned(F), threads_for((g.cols + 3) / 4), 0, ctx.stream>>>(coef, x, k, alpha, order.get(),
                                                                                   offsets.get(), g);
  MOESAE_LAUNCHED();
}

void scatter_add(const Ctx& ctx, const float* src, const int32_t* idx, int64_t n, float* dst, int64_t dst_size) {
  if (n == 0 || dst_size == 0) return;
  Scratch<int32_t> order(ctx, n), offsets(ctx, dst_size + 1);
  group_by_key(ctx, idx, n, dst_size, order.get(), offsets.get(), kErrScatterAdd);
  constexpr int warps = kThreads / 32;
  ordered_scatter_add_kernel<<<unsigned((dst_size + warps - 1) / warps), kThreads, 0, ctx.stream>>>(
      src, order.get(), offsets.get(), dst_size, dst);
  MOESAE_LAUNCHED();
}

}  // namespace moesae::cuda
