// moesae CUDA kernels: the operations that need more than one elementwise pass (reductions, selection,
// grouping, sparse products). Host-callable; every one is issued on ctx.stream and is deterministic (fixed
// reduction orders, stable sorts). Simple elementwise operations live in cuda_backend.cu as device lambdas.
#pragma once
#include <cstdint>

#include "backend/cuda/kernels/launch.cuh"

namespace moesae::cuda {

// ---- reduce.cu ------------------------------------------------------------------------------------------------
enum class ReduceOp { Sum, SumSquares, CountPositive };
// A reduction of every element in double, in two parts so that the caller decides when the host waits:
// reduce_partials writes reduce_blocks(size) block partials to device memory (nothing for an empty view), and
// add_partials adds their host copy in block order. CountPositive counts entries > 0.
int reduce_blocks(int64_t n);
void reduce_partials(const Ctx& ctx, Mat<const float> x, ReduceOp op, double* partial);
void count_nonzero_partials(const Ctx& ctx, Mat<const int32_t> x, double* partial);  // entries != 0
double add_partials(const double* partial, int blocks);
// Backend::clip_factor(Backend::global_norm(...)) on the device, from reduce_partials' sums of squares of `items` tensors (tensor i's block
// partials are partial[first[i], first[i+1]), first a device array): one thread adds them in the host's order, so
// the factor is, bit for bit, the one the host would compute from the same partials.
void clip_factor(const Ctx& ctx, const double* partial, const int64_t* first, int items, double max_norm,
                 float* factor);
// out[j] = sum_i a[i,j] (or a[i,j]^2), in double, rows added in a fixed chunked order; out is a device array.
void column_sums(const Ctx& ctx, Mat<const float> a, bool squares, double* out);
// out[g, c] = alpha * sum of a[r, c] over the rows r in [offsets[g], offsets[g+1]) (device offsets, G + 1 of them;
// max_rows: the largest group), in double, in a fixed order (row chunks, then the chunks in order).
void group_column_sums(const Ctx& ctx, Mat<const float> a, const int64_t* offsets, int64_t G, int64_t max_rows,
                       float alpha, Mat<float> out);
// The group of row r: the g with offsets[g] <= r < offsets[g+1] (r within [offsets[0], offsets[G])).
__device__ inline int64_t group_of(const int64_t* offsets, int64_t G, int64_t r) {
  int64_t lo = 0, hi = G;  // the last g in [0, G) with offsets[g] <= r
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    if (offsets[mid] <= r) lo = mid; else hi = mid;
  }
  return lo;
}
// Row-wise operations, one warp per row (lanes stride the columns, a fixed shuffle tree adds them).
void row_squared_error(const Ctx& ctx, Mat<const float> a, Mat<const float> b, float* out);
void softmax_rows(const Ctx& ctx, Mat<const float> logits, Mat<float> probs);
void softmax_rows_backward(const Ctx& ctx, Mat<const float> probs, Mat<const float> dprobs, Mat<float> dlogits);
void normalize_rows(const Ctx& ctx, Mat<float> w, float eps);
void project_out_rows(const Ctx& ctx, Mat<float> g, Mat<const float> w);

// ---- topk.cu --------------------------------------------------------------------------------------------------
// Per row: the k largest values sorted descending, ties by the smaller column (radix select over the 32-bit
// order-preserving key, an order-preserving compaction of the selected columns, a bitonic sort of k).
// mask (device, optional): only columns with mask != 0 compete; missing slots get value 0 and index -1.
constexpr int kMaxTopK = 4096;  // AuxK's k_aux = d/2 up to d = 8192
void topk_rows(const Ctx& ctx, Mat<const float> x, int k, Mat<float> vals, Mat<int32_t> idx, const int32_t* mask);

// ---- segments.cu ----------------------------------------------------------------------------------------------
// Stable grouping of n keys in [0, num_keys) (-1 = skip; anything else out of range is reported as `error_code`):
// order[0 .. offsets[num_keys]) lists the positions i grouped by key, increasing i within a key; key f owns
// order[offsets[f] .. offsets[f+1]). order has n entries, offsets num_keys + 1 (both device, caller-allocated).
void group_by_key(const Ctx& ctx, const int32_t* keys, int64_t n, int64_t num_keys, int32_t* order,
                  int32_t* offsets, int error_code);

// ---- sparse.cu ------------------------------------------------------------------------------------------------
// out[b] = beta out[b] + sum_j coef[b,j] W[ids[b,j]]   (one block per row, slots added in j order)
void sparse_rows_matmul(const Ctx& ctx, Mat<const float> coef, Mat<const int32_t> ids, Mat<const float> w,
                        float beta, Mat<float> out);
// out[b,j] = x[b] . W[ids[b,j]]   (0 for empty slots)
void sparse_rows_dot(const Ctx& ctx, Mat<const float> x, Mat<const int32_t> ids, Mat<const float> w,
                     Mat<float> out);
// G[ids[b,j]] += alpha coef[b,j] x[b]   (each row of G adds its contributions in (b, j) order)
void sparse_rows_outer_add(const Ctx& ctx, Mat<const float> coef, Mat<const int32_t> ids, Mat<const float> x,
                           float alpha, Mat<float> g);
// dst[idx[m]] += src[m] in order of m (flat, contiguous; idx -1 skipped).
void scatter_add(const Ctx& ctx, const float* src, const int32_t* idx, int64_t n, float* dst, int64_t dst_size);

}  // namespace moesae::cuda
