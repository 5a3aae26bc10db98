// moesae CUDA kernels: exact per-row Top-K (the global Top-K of Eq. 4 over the e*n candidates of the chosen
// experts, and the dense TopK SAE's selection over all F latents).
//
// One block per row:
//   1. radix select over a 32-bit key that orders like the float value (-0.0 and +0.0 share a key): four passes
//      of 8 bits, each a shared-memory histogram (warp-aggregated increments) of the keys that still match the
//      prefix chosen so far, find the key T of the k-th largest value and how many keys equal to T to keep;
//   2. an order-preserving compaction (block scans over the row in column order) keeps every key > T and the
//      first ones equal to T, so ties go to the smaller column, as the CPU reference breaks them;
//   3. a bitonic sort of the k kept (key, column) pairs: value descending, column ascending.
// Rows of up to kCachedCols columns are read from device memory once (their keys cached in shared memory).
#include <cub/block/block_scan.cuh>

#include <atomic>

#include "backend/cuda/kernels/kernels.h"

namespace moesae::cuda {
namespace {

constexpr int kCachedCols = 24576;  // 96 KiB of keys per block
constexpr int kStaticSmemAllowance = 8192;  // room left for the kernels' static shared memory (at most 5.3 KiB)

__device__ inline uint32_t order_key(float v) {
  const uint32_t u = __float_as_uint(v == 0.f ? 0.f : v);  // -0.0 == +0.0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// a before b: larger key first, then smaller column.
__device__ inline bool before(uint32_t ka, int32_t ia, uint32_t kb, int32_t ib) {
  return ka > kb || (ka == kb && ia < ib);
}

template <int THREADS, bool CACHE>
__global__ void __launch_bounds__(THREADS) topk_kernel(Mat<const float> x, int k, int p2, Mat<float> vals,
                                                       Mat<int32_t> idx, const int32_t* mask) {
  using Scan = cub::BlockScan<int, THREADS>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ unsigned hist[256];
  __shared__ unsigned s_prefix, s_kk;
  __shared__ int s_valid, s_gt_base, s_eq_base;
  extern __shared__ uint32_t smem[];
  uint32_t* sel_key = smem;                                       // p2
  int32_t* sel_col = reinterpret_cast<int32_t*>(smem + p2);       // p2
  uint32_t* row_key = reinterpret_cast<uint32_t*>(smem + 2 * p2);  // N when CACHE

  const int64_t r = blockIdx.x, N = x.cols;
  const float* row = &x.at(r, 0);
  const int tid = threadIdx.x, lane = tid % 32;
  auto valid = [&](int64_t j) { return mask == nullptr || mask[j] != 0; };
  auto key_at = [&](int64_t j) { return CACHE ? row_key[j] : order_key(row[j]); };

  if (tid == 0) s_valid = 0;
  __syncthreads();
  int my_valid = 0;
  for (int64_t j = tid; j < N; j += THREADS) {
    if (CACHE) row_key[j] = order_key(row[j]);
    my_valid += valid(j) ? 1 : 0;
  }
  atomicAdd(&s_valid, my_valid);
  __syncthreads();
  const int n_valid = s_valid;
  const bool take_all = n_valid <= k;

  // 1. radix select: after the passes, keys > prefix are all kept and kk keys == prefix are kept.
  uint32_t prefix = 0, pmask = 0;
  unsigned kk = unsigned(k);
  if (!take_all) {
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = tid; b < 256; b += THREADS) hist[b] = 0;
      __syncthreads();
      const int64_t n_round = (N + THREADS - 1) / THREADS * THREADS;  // whole warps reach the match below
      for (int64_t j = tid; j < n_round; j += THREADS) {
        bool counts = false;
        unsigned digit = 0;
        if (j < N && valid(j)) {
          const uint32_t key = key_at(j);
          counts = (key & pmask) == prefix;
          digit = (key >> shift) & 255u;
        }
        // Warp-aggregated increment: lanes with the same digit add once (values cluster in a few bins).
        const unsigned active = __ballot_sync(0xffffffffu, counts);
        if (counts) {
          const unsigned same = __match_any_sync(active, digit);
          if (lane == __ffs(same) - 1) atomicAdd(&hist[digit], unsigned(__popc(same)));
        }
      }
      __syncthreads();
      if (tid == 0) {
        unsigned above = 0;
        for (int dgt = 255; dgt >= 0; --dgt) {
          if (above + hist[dgt] >= kk) {
            s_prefix = prefix | (uint32_t(dgt) << shift);
            s_kk = kk - above;
            break;
          }
          above += hist[dgt];
        }
      }
      __syncthreads();
      prefix = s_prefix;
      kk = s_kk;
      pmask |= 255u << shift;
    }
  }
  const int kept_gt = take_all ? n_valid : k - int(kk);  // slots of the keys strictly above the threshold

  // 2. order-preserving compaction (column order), gt count in the low 16 bits, eq count in the high 16 bits.
  if (tid == 0) s_gt_base = s_eq_base = 0;
  __syncthreads();
  for (int64_t base = 0; base < N; base += THREADS) {
    const int64_t j = base + tid;
    bool gt = false, eq = false;
    uint32_t key = 0;
    if (j < N && valid(j)) {
      key = key_at(j);
      gt = take_all || key > prefix;
      eq = !take_all && key == prefix;
    }
    int packed = (gt ? 1 : 0) | (eq ? 1 << 16 : 0), total;
    Scan(scan_tmp).ExclusiveSum(packed, packed, total);
    const int pos_gt = s_gt_base + (packed & 0xffff), pos_eq = s_eq_base + (packed >> 16);
    if (gt) {
      sel_key[pos_gt] = key;
      sel_col[pos_gt] = int32_t(j);
    } else if (eq && pos_eq < int(kk)) {
      sel_key[kept_gt + pos_eq] = key;
      sel_col[kept_gt + pos_eq] = int32_t(j);
    }
    __syncthreads();
    if (tid == 0) {
      s_gt_base += total & 0xffff;
      s_eq_base += total >> 16;
    }
    __syncthreads();
  }
  const int filled = take_all ? n_valid : k;
  for (int s = filled + tid; s < p2; s += THREADS) {
    sel_key[s] = 0;
    sel_col[s] = INT32_MAX;  // sorts after every real column
  }
  __syncthreads();

  // 3. bitonic sort of p2 (key, column) pairs into "before" order.
  for (int size = 2; size <= p2; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = tid; i < p2; i += THREADS) {
        const int o = i ^ stride;
        if (o > i) {
          const bool first_half = (i & size) == 0;
          const bool swap = first_half ? before(sel_key[o], sel_col[o], sel_key[i], sel_col[i])
                                       : before(sel_key[i], sel_col[i], sel_key[o], sel_col[o]);
          if (swap) {
            const uint32_t tk = sel_key[i];
            sel_key[i] = sel_key[o];
            sel_key[o] = tk;
            const int32_t tc = sel_col[i];
            sel_col[i] = sel_col[o];
            sel_col[o] = tc;
          }
        }
      }
      __syncthreads();
    }
  }
  for (int s = tid; s < k; s += THREADS) {
    if (s < filled) {
      vals.at(r, s) = row[sel_col[s]];
      idx.at(r, s) = sel_col[s];
    } else {
      vals.at(r, s) = 0.f;
      idx.at(r, s) = -1;
    }
  }
}

template <int THREADS, bool CACHE>
void launch(const Ctx& ctx, Mat<const float> x, int k, int p2, Mat<float> vals, Mat<int32_t> idx,
            const int32_t* mask) {
  const size_t smem = size_t(2 * p2) * 4 + (CACHE ? size_t(x.cols) * 4 : 0);
  // The 48 KiB default covers static + dynamic shared memory: opt in, once per device, to all the device allows
  // (a host API call per launch costs microseconds).
  constexpr int kDevices = 64;
  static std::atomic<bool> opted_in[kDevices] = {};  // setting it twice (two threads at once) is harmless
  if (ctx.device < 0 || ctx.device >= kDevices || !opted_in[ctx.device].load()) {
    MOESAE_CUDA(cudaFuncSetAttribute(topk_kernel<THREADS, CACHE>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     ctx.smem_optin - kStaticSmemAllowance));
    if (ctx.device >= 0 && ctx.device < kDevices) opted_in[ctx.device].store(true);
  }
  topk_kernel<THREADS, CACHE><<<unsigned(x.rows), THREADS, smem, ctx.stream>>>(x, k, p2, vals, idx, mask);
  MOESAE_LAUNCHED();
}

}  // namespace

void topk_rows(const Ctx& ctx, Mat<const float> x, int k, Mat<float> vals, Mat<int32_t> idx, const int32_t* mask) {
  if (x.rows == 0 || k == 0) return;
  MOESAE_CHECK(k > 0 && k <= kMaxTopK, "topk_rows on CUDA supports 1 <= k <= ", kMaxTopK, ", got k=", k);
  int p2 = 1;
  while (p2 < k) p2 <<= 1;
  // Cache the row's keys in shared memory when they fit the device's opt-in limit (with room for the rest).
  const bool cache = x.cols <= kCachedCols &&
                     size_t(x.cols) * 4 + size_t(2 * p2) * 4 + kStaticSmemAllowance <= size_t(ctx.smem_optin);
  if (x.cols <= 2048 && cache) {
    launch<128, true>(ctx, x, k, p2, vals, idx, mask);
  } else if (cache) {
    launch<512, true>(ctx, x, k, p2, vals, idx, mask);
  } else {
    launch<1024, false>(ctx, x, k, p2, vals, idx, mask);
  }
}

}  // namespace moesae::cuda
