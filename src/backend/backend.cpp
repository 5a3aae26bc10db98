#include "backend/backend.h"

#include <cmath>

#include "backend/cuda/cuda_backend.h"
#include "core/error.h"

namespace moesae {

Tensor Backend::zeros(int64_t rows, int64_t cols, DType dt) {
  Tensor t = empty(rows, cols, dt);
  if (dt == DType::F32) fill(t, 0.f); else fill_i32(t, 0);
  return t;
}

Tensor Backend::zeros_vector(int64_t n, DType dt) {
  Tensor t = empty_vector(n, dt);
  if (dt == DType::F32) fill(t, 0.f); else fill_i32(t, 0);
  return t;
}

Tensor Backend::to_host(const Tensor& src) {
  Tensor h = src.rank() == 1 ? host_vector(src.rows(), src.dtype()) : host_tensor(src.rows(), src.cols(), src.dtype());
  download(src, h);
  return h;
}

Tensor Backend::from_host(const Tensor& host_src) {
  Tensor t = host_src.rank() == 1 ? empty_vector(host_src.rows(), host_src.dtype())
                                  : empty(host_src.rows(), host_src.cols(), host_src.dtype());
  upload(host_src, t);
  return t;
}

AdamScalars adam_scalars(float lr, float beta1, float beta2, int64_t step) {
  const double bc1 = 1.0 - std::pow(double(beta1), double(step));
  const double bc2 = 1.0 - std::pow(double(beta2), double(step));
  return {static_cast<float>(lr / bc1), static_cast<float>(1.0 / std::sqrt(bc2))};
}

BackendKind parse_backend_kind(const std::string& name) {
  if (name == "cpu") return BackendKind::Cpu;
  if (name == "cuda") return BackendKind::Cuda;
  fail("unknown backend '", name, "' (expected cpu or cuda)");
}

const char* backend_kind_name(BackendKind kind) { return kind == BackendKind::Cuda ? "cuda" : "cpu"; }

GemmPrecision parse_gemm_precision(const std::string& name) {
  if (name == "fp32") return GemmPrecision::FP32;
  if (name == "tf32") return GemmPrecision::TF32;
  if (name == "bf16") return GemmPrecision::BF16;
  fail("unknown GEMM precision '", name, "' (expected fp32, tf32 or bf16)");
}

const char* gemm_precision_name(GemmPrecision p) {
  switch (p) {
    case GemmPrecision::FP32: return "fp32";
    case GemmPrecision::TF32: return "tf32";
    case GemmPrecision::BF16: return "bf16";
  }
  return "?";
}

std::unique_ptr<Backend> make_backend(const BackendOptions& options) {
  if (options.kind == BackendKind::Cpu) return make_cpu_backend(options.threads);
  CudaOptions c;
  c.device = options.device;
  c.precision = options.gemm_precision;
  return make_cuda_backend(c);
}

}  // namespace moesae
