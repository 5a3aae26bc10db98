// moesae CUDA: error checks for the CUDA runtime and cuBLAS (one clear message naming the call and where).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/error.h"

#define MOESAE_CUDA(call)                                                                                     \
  do {                                                                                                        \
    const cudaError_t moesae_e_ = (call);                                                                     \
    if (moesae_e_ != cudaSuccess)                                                                             \
      ::moesae::fail("CUDA error in ", #call, ": ", cudaGetErrorString(moesae_e_), " (", __FILE__, ":", __LINE__, \
                     ")");                                                                                    \
  } while (0)

#define MOESAE_CUBLAS(call)                                                                                    \
  do {                                                                                                         \
    const cublasStatus_t moesae_s_ = (call);                                                                   \
    if (moesae_s_ != CUBLAS_STATUS_SUCCESS)                                                                    \
      ::moesae::fail("cuBLAS error in ", #call, ": ", cublasGetStatusString(moesae_s_), " (", __FILE__, ":",    \
                     __LINE__, ")");                                                                           \
  } while (0)

// After a kernel launch: a bad launch configuration fails here, not silently.
#define MOESAE_LAUNCHED() MOESAE_CUDA(cudaGetLastError())
