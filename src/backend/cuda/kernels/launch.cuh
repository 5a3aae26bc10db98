// moesae CUDA kernels: the shared launch vocabulary. A Mat is a (possibly strided) row-major view of device
// memory, passed to kernels by value; for_each / for_each_2d run a device lambda over every index.
#pragma once
#include <algorithm>
#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "core/tensor.h"

namespace moesae::cuda {

template <typename T>
struct Mat {
  T* p = nullptr;
  int64_t rows = 0, cols = 0, ld = 0;
  __host__ __device__ T& at(int64_t r, int64_t c) const { return p[r * ld + c]; }
  __host__ __device__ int64_t size() const { return rows * cols; }
};

// The device view of a tensor (rank-1 tensors are rows x 1 with stride 1).
template <typename T>
Mat<T> mat(const Tensor& t) {
  return Mat<T>{t.data<T>(), t.rows(), t.cols(), t.rank() == 1 ? 1 : t.ld()};
}

// Shared state of one backend's kernels: its stream, and a device word where a kernel that meets an index out
// of range records which operation it was (the backend checks it at its next host synchronisation).
struct Ctx {
  cudaStream_t stream = nullptr;
  int* error = nullptr;
  int device = 0;             // the backend's device (the stream's)
  int smem_optin = 48 << 10;  // its most shared memory per block, opting in (cudaDevAttrMaxSharedMemoryPerBlockOptin)
};

// Operation codes for Ctx::error (index 0 = no error).
enum ErrorCode : int {
  kErrNone = 0,
  kErrGatherRows,
  kErrScatterRows,
  kErrGather,
  kErrScatterAdd,
  kErrGatherCols,
  kErrScatterAddCols,
  kErrSparseMatmul,
  kErrSparseDot,
  kErrSparseOuterAdd,
  kErrGroupByExpert,
  kErrCandidates,
  kErrUpdateFired,
  kErrCount
};
const char* error_op_name(int code);

__device__ inline void report(int* error, int code) { atomicCAS(error, 0, code); }

// Temporary device memory for one operation: stream-ordered, so it is safe to free as soon as the work that
// uses it has been issued.
template <typename T>
class Scratch {
 public:
  Scratch(const Ctx& ctx, int64_t n) : stream_(ctx.stream) {
    if (n > 0) MOESAE_CUDA(cudaMallocAsync(reinterpret_cast<void**>(&p_), size_t(n) * sizeof(T), stream_));
  }
  ~Scratch() {
    if (p_) cudaFreeAsync(p_, stream_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  T* get() const { return p_; }

 private:
  T* p_ = nullptr;
  cudaStream_t stream_;
};

constexpr int kThreads = 256;
inline unsigned grid_for(int64_t n, int threads = kThreads) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 1 << 20)));
}

template <typename F>
__global__ void for_each_kernel(int64_t n, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    f(i);
}

// f(i) for i in [0, n).
template <typename F>
void for_each(const Ctx& ctx, int64_t n, F f) {
  if (n <= 0) return;
  for_each_kernel<<<grid_for(n), kThreads, 0, ctx.stream>>>(n, f);
  MOESAE_LAUNCHED();
}

// f(r, c) for every element of a rows x cols index space.
template <typename F>
void for_each_2d(const Ctx& ctx, int64_t rows, int64_t cols, F f) {
  if (rows <= 0 || cols <= 0) return;
  for_each(ctx, rows * cols, [=] __device__(int64_t i) { f(i / cols, i % cols); });
}

}  // namespace moesae::cuda
