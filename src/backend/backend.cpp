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

Backend::Pending Backend::Pending::ready_with(std::vector<double> values) {
  Pending p;
  p.state_ = std::make_shared<State>();
  p.state_->ready = true;
  p.state_->values = std::move(values);
  return p;
}

const std::vector<double>& Backend::Pending::get() {
  static const std::vector<double> none;
  if (!state_) return none;
  if (!state_->ready) owner_->synchronize();  // every wait delivers what was queued before it
  MOESAE_CHECK(state_->ready, "a queued read-back did not arrive with the wait for the device");
  return state_->values;
}

std::vector<double> Backend::reduce_many(const std::vector<Reduction>& items) { return reduce_many_later(items).get(); }

Backend::Pending Backend::download_later(const Tensor& src, Tensor host_dst) {
  download(src, host_dst);
  return Pending::ready_with({});
}

double Backend::global_norm(const std::vector<double>& squares) {
  double sq = 0;
  for (double v : squares) sq += v;
  return std::sqrt(sq);
}

float Backend::clip_factor(double norm, double max_norm) {
  return max_norm > 0 && norm > max_norm ? static_cast<float>(max_norm / (norm + 1e-6)) : 1.f;
}

Backend::Pending Backend::clip_by_global_norm(const std::vector<Tensor>& xs, double max_norm) {
  std::vector<Reduction> squares;
  for (const Tensor& x : xs) squares.push_back({ReduceOp::SumSquares, x});
  std::vector<double> r = reduce_many(squares);
  const float s = clip_factor(global_norm(r), max_norm);
  if (s != 1.f)
    for (const Tensor& x : xs) scale(x, s);
  return Pending::ready_with(std::move(r));
}

namespace {

// The groups of `offsets` checked against the rows of the operands they index (and the entries of per-group lists).
int64_t checked_groups(const std::vector<int64_t>& offsets, int64_t rows, const char* op) {
  MOESAE_CHECK(!offsets.empty(), op, ": no group offsets");
  MOESAE_CHECK(offsets.front() >= 0 && offsets.back() <= rows, op, ": groups span rows [", offsets.front(), ", ",
               offsets.back(), ") of ", rows);
  for (size_t i = 0; i + 1 < offsets.size(); ++i)
    MOESAE_CHECK(offsets[i] <= offsets[i + 1], op, ": group offsets decrease at group ", i);
  return int64_t(offsets.size()) - 1;
}

}  // namespace

void Backend::grouped_gemm(bool trans_b, const Tensor& a, const Tensor& b, int64_t b_rows,
                           const std::vector<int64_t>& offsets, const std::vector<float>& alpha, float beta,
                           Tensor c) {
  const int64_t G = checked_groups(offsets, a.rows(), "grouped_gemm");
  const int64_t bi_rows = b_rows ? b_rows : b.rows();  // b_i is [bi_rows, b.cols()]
  const int64_t n = trans_b ? bi_rows : b.cols(), k = trans_b ? b.cols() : bi_rows;
  MOESAE_CHECK(c.rows() == a.rows() && c.cols() == n && a.cols() == k && int64_t(alpha.size()) == G &&
                   b_rows >= 0 && G * b_rows <= b.rows(),
               "grouped_gemm: a ", a.shape_str(), " b ", b.shape_str(), trans_b ? "^T" : "", " (", b_rows,
               " rows per group) c ", c.shape_str(), ", ", G, " groups, ", alpha.size(), " alphas");
  grouped_gemm_impl(trans_b, a, b, b_rows, offsets, alpha, beta, c);
}

void Backend::sum_group_rows(const Tensor& a, const std::vector<int64_t>& offsets, float alpha, Tensor out) {
  const int64_t G = checked_groups(offsets, a.rows(), "sum_group_rows");
  MOESAE_CHECK(out.rows() == G && out.cols() == a.cols(), "sum_group_rows: ", a.shape_str(), " in ", G,
               " groups into ", out.shape_str());
  sum_group_rows_impl(a, offsets, alpha, out);
}

void Backend::add_group_rows(Tensor a, const std::vector<int64_t>& offsets, const Tensor& v, float alpha) {
  const int64_t G = checked_groups(offsets, a.rows(), "add_group_rows");
  MOESAE_CHECK(v.rows() == G && v.cols() == a.cols(), "add_group_rows: ", v.shape_str(), " for ", G,
               " groups of ", a.shape_str());
  add_group_rows_impl(a, offsets, v, alpha);
}

void Backend::axpy_groups(const std::vector<float>& alpha, const std::vector<int64_t>& offsets, const Tensor& x,
                          Tensor y) {
  const int64_t G = checked_groups(offsets, x.rows(), "axpy_groups");
  MOESAE_CHECK(y.rows() == x.rows() && y.cols() == x.cols() && int64_t(alpha.size()) == G, "axpy_groups: ",
               x.shape_str(), " into ", y.shape_str(), ", ", G, " groups, ", alpha.size(), " alphas");
  axpy_groups_impl(alpha, offsets, x, y);
}

void Backend::grouped_gemm_impl(bool trans_b, const Tensor& a, const Tensor& b, int64_t b_rows,
                                const std::vector<int64_t>& offsets, const std::vector<float>& alpha, float beta,
                                Tensor c) {
  for (size_t i = 0; i + 1 < offsets.size(); ++i) {
    if (offsets[i] == offsets[i + 1]) continue;
    const Tensor bi = b_rows == 0 ? b : b.row_range(int64_t(i) * b_rows, int64_t(i + 1) * b_rows);
    gemm(false, trans_b, alpha[i], a.row_range(offsets[i], offsets[i + 1]), bi, beta,
         c.row_range(offsets[i], offsets[i + 1]));
  }
}

void Backend::sum_group_rows_impl(const Tensor& a, const std::vector<int64_t>& offsets, float alpha, Tensor out) {
  for (size_t i = 0; i + 1 < offsets.size(); ++i)
    sum_rows(a.row_range(offsets[i], offsets[i + 1]), out.row_range(int64_t(i), int64_t(i) + 1).flatten(), alpha,
             0.f);
}

void Backend::add_group_rows_impl(Tensor a, const std::vector<int64_t>& offsets, const Tensor& v, float alpha) {
  for (size_t i = 0; i + 1 < offsets.size(); ++i)
    if (offsets[i] < offsets[i + 1])
      add_row_vector(a.row_range(offsets[i], offsets[i + 1]), v.row_range(int64_t(i), int64_t(i) + 1).flatten(),
                     alpha);
}

void Backend::axpy_groups_impl(const std::vector<float>& alpha, const std::vector<int64_t>& offsets,
                               const Tensor& x, Tensor y) {
  for (size_t i = 0; i + 1 < offsets.size(); ++i)
    if (offsets[i] < offsets[i + 1])
      axpy(alpha[i], x.row_range(offsets[i], offsets[i + 1]), y.row_range(offsets[i], offsets[i + 1]));
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
  if (options.kind == BackendKind::Cpu) {
    if (options.gemm_precision != GemmPrecision::FP32)  // it would do nothing: an error, not a silent fp32 run
      fail("train.gemm_precision ", gemm_precision_name(options.gemm_precision),
           " applies to train.backend: cuda only (the CPU backend computes in fp32); set train.backend: cuda or drop "
           "it");
    return make_cpu_backend(options.threads);
  }
  CudaOptions c;
  c.device = options.device;
  c.precision = options.gemm_precision;
  return make_cuda_backend(c);
}

}  // namespace moesae
