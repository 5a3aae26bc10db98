// moesae CUDA backend: the Backend interface on one NVIDIA GPU (cuBLAS for dense products, own kernels for the
// rest; see backend/cuda/kernels/). Plain C++ header: safe to include from host-only code.
//
// Device memory comes from plain stream-ordered allocations (cudaMallocAsync on the backend's stream, returned
// to the device's memory pool when a tensor dies), never managed memory. Every operation is issued on one
// stream; the host waits for it only where data comes back (downloads, reduce_many and the single reductions,
// threshold_mask, group_by_expert's per-expert counts), once per such call with the device error word read in
// the same wait (host_waits() counts them). Small host arrays (group offsets, cuBLAS pointer lists, small
// uploads) go through a pinned ring with asynchronous copies, never a wait. The grouped operations take a few
// launches for all groups (cublasGemmGroupedBatchedEx for grouped_gemm). Operations are deterministic run to run
// (fixed reduction orders; sorts are stable); results agree with the CPU reference to float rounding (exactly for
// selections, ids and integer outputs).
#pragma once
#include <memory>
#include <string>

#include "backend/backend.h"

namespace moesae {

struct CudaOptions {
  int device = -1;  // -1: the local rank (OMPI/SLURM/MPI env vars) modulo the visible devices, else 0
  GemmPrecision precision = GemmPrecision::FP32;  // see backend.h
  // grouped_gemm as one cuBLAS product per group instead of cublasGemmGroupedBatchedEx (the tests compare the two;
  // bf16 always takes this path).
  bool per_group_gemm = false;
};

// True when this binary was built with CUDA and a CUDA device is visible; `why` receives the reason otherwise.
bool cuda_backend_available(std::string* why = nullptr);

// Fails with a clear message when no device is usable (or the build has no CUDA).
std::unique_ptr<Backend> make_cuda_backend(const CudaOptions& options = {});

}  // namespace moesae
