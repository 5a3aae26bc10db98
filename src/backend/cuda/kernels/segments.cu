// moesae CUDA kernels: stable grouping of positions by key (a CSR transpose), the building block of every
// deterministic scatter: scatter_add, the sparse decoder gradient, and the grouping of tokens by expert.
// A stable radix sort (CUB) of (key, position) pairs, then each key's first slot by binary search.
#include <cub/device/device_radix_sort.cuh>

#include "backend/cuda/kernels/kernels.h"

namespace moesae::cuda {

void group_by_key(const Ctx& ctx, const int32_t* keys, int64_t n, int64_t num_keys, int32_t* order,
                  int32_t* offsets, int error_code) {
  if (n == 0) {
    MOESAE_CUDA(cudaMemsetAsync(offsets, 0, (num_keys + 1) * sizeof(int32_t), ctx.stream));
    return;
  }
  MOESAE_CHECK(n < INT32_MAX && num_keys < INT32_MAX, "group_by_key: ", n, " entries, ", num_keys, " keys");
  // Keys to sort: skipped (-1) and invalid entries go last, as key num_keys.
  Scratch<uint32_t> in_keys(ctx, n), out_keys(ctx, n);
  Scratch<int32_t> positions(ctx, n);
  uint32_t* ik = in_keys.get();
  int32_t* pos = positions.get();
  int* err = ctx.error;
  for_each(ctx, n, [=] __device__(int64_t i) {
    const int32_t k = keys[i];
    const bool ok = k >= 0 && k < num_keys;
    if (!ok && k != -1) report(err, error_code);
    ik[i] = ok ? uint32_t(k) : uint32_t(num_keys);
    pos[i] = int32_t(i);
  });
  int end_bit = 1;
  while ((int64_t(1) << end_bit) <= num_keys) ++end_bit;
  size_t tmp_bytes = 0;
  MOESAE_CUDA(cub::DeviceRadixSort::SortPairs(nullptr, tmp_bytes, ik, out_keys.get(), pos, order, n, 0, end_bit,
                                              ctx.stream));
  Scratch<unsigned char> tmp(ctx, int64_t(tmp_bytes));
  MOESAE_CUDA(cub::DeviceRadixSort::SortPairs(tmp.get(), tmp_bytes, ik, out_keys.get(), pos, order, n, 0, end_bit,
                                              ctx.stream));
  // offsets[f] = first sorted slot with key >= f (lower bound), f = 0..num_keys.
  const uint32_t* sk = out_keys.get();
  for_each(ctx, num_keys + 1, [=] __device__(int64_t f) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (sk[mid] < uint32_t(f)) lo = mid + 1; else hi = mid;
    }
    offsets[f] = int32_t(lo);
  });
}

}  // namespace moesae::cuda
