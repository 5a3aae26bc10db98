// In a build without CUDA, the CUDA backend's entry points exist and say so (one clear message).
#include "backend/cuda/cuda_backend.h"
#include "core/error.h"

#ifndef MOESAE_HAVE_CUDA
namespace moesae {

bool cuda_backend_available(std::string* why) {
  if (why) *why = "this moesae was built without CUDA (configure with nvcc on PATH)";
  return false;
}

std::unique_ptr<Backend> make_cuda_backend(const CudaOptions&) {
  fail("backend 'cuda': this moesae was built without CUDA (configure with nvcc on PATH and "
       "-DMOESAE_ENABLE_CUDA=ON)");
}

}  // namespace moesae
#endif
