// The CUDA backend: device memory, copies, cuBLAS products and the elementwise operations (device lambdas);
// the larger kernels are in kernels/ (reduce, topk, segments, sparse). See cuda_backend.h for the contract.
#include <cuda_bf16.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device_info.h"
#include "backend/cuda/kernels/kernels.h"
#include "core/log.h"

namespace moesae {
namespace cuda {

const char* error_op_name(int code) {
  static const char* names[kErrCount] = {"none",          "gather_rows",         "scatter_rows",
                                         "gather",        "scatter_add",         "gather_cols",
                                         "scatter_add_cols", "sparse_rows_matmul", "sparse_rows_dot",
                                         "sparse_rows_outer_add", "group_by_expert", "candidates_to_latents",
                                         "update_fired"};
  return code > 0 && code < kErrCount ? names[code] : "unknown operation";
}

}  // namespace cuda

namespace {

using cuda::Mat;
using cuda::mat;

// The device of this process: the local rank (as launchers export it) modulo the visible devices, else 0.
int default_device(int count) {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "LOCAL_RANK"})
    if (const char* v = std::getenv(var)) return std::atoi(v) % count;
  return 0;
}

void check_same_shape(const Tensor& a, const Tensor& b, const char* op) {
  MOESAE_CHECK(a.rows() == b.rows() && a.cols() == b.cols(), op, ": shape ", a.shape_str(), " vs ", b.shape_str());
}

// Owns the stream, the device word for index errors and the pinned staging buffer of the host round trips, for
// as long as any tensor of the backend lives.
struct StreamOwner {
  int device = 0;
  cudaStream_t stream = nullptr;
  int* error = nullptr;
  void* staging = nullptr;  // pinned host memory: the error word's copy, then what a round trip reads back
  size_t staging_bytes = 0;
  // Pinned ring for small uploads (group offsets, pointer lists): two halves, each reused only after the copies
  // issued from it have run (the event recorded when it was left).
  char* ring = nullptr;
  size_t ring_head = 0;
  int ring_half = 0;
  cudaEvent_t ring_left[2] = {nullptr, nullptr};
  bool ring_used[2] = {false, false};
  // Pinned area for queued read-backs (reduce_many_later, download_later, clip_by_global_norm): asynchronous copies
  // land here; at the next wait each arrival hands its bytes to its Pending, and the area is free again.
  char* deferred = nullptr;
  size_t deferred_bytes = 0, deferred_used = 0;
  std::vector<std::function<void()>> arrivals;  // run in queue order after the wait
  ~StreamOwner() {
    if (stream) cudaStreamSynchronize(stream);
    for (cudaEvent_t e : ring_left)
      if (e) cudaEventDestroy(e);
    if (ring) cudaFreeHost(ring);
    if (deferred) cudaFreeHost(deferred);
    if (staging) cudaFreeHost(staging);
    if (error) cudaFree(error);
    if (stream) cudaStreamDestroy(stream);
  }
};

// Packed bf16 copy of a (possibly strided) f32 tensor: the inputs of a bf16 GEMM.
void to_bf16(const cuda::Ctx& ctx, const Tensor& t, __nv_bfloat16* out) {
  auto m = mat<const float>(t);
  cuda::for_each_2d(ctx, m.rows, m.cols,
                    [=] __device__(int64_t r, int64_t c) { out[r * m.cols + c] = __float2bfloat16(m.at(r, c)); });
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const CudaOptions& opt) : precision_(opt.precision), per_group_gemm_(opt.per_group_gemm) {
    std::string why;
    const auto devices = cuda::list_devices(&why);
    if (devices.empty()) fail("backend 'cuda': no usable CUDA device (", why, ")");
    const int dev = opt.device >= 0 ? opt.device : default_device(int(devices.size()));
    if (dev >= int(devices.size()))
      fail("backend 'cuda': device ", dev, " requested but only ", devices.size(), " visible");
    owner_ = std::make_shared<StreamOwner>();
    owner_->device = dev;
    MOESAE_CUDA(cudaSetDevice(dev));
    MOESAE_CUDA(cudaStreamCreateWithFlags(&owner_->stream, cudaStreamNonBlocking));
    MOESAE_CUDA(cudaMalloc(reinterpret_cast<void**>(&owner_->error), sizeof(int)));
    MOESAE_CUDA(cudaMemsetAsync(owner_->error, 0, sizeof(int), owner_->stream));
    // Keep freed blocks in the device's pool (no return to the driver between steps).
    cudaMemPool_t pool;
    MOESAE_CUDA(cudaDeviceGetDefaultMemPool(&pool, dev));
    uint64_t threshold = UINT64_MAX;
    MOESAE_CUDA(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    MOESAE_CUBLAS(cublasCreate(&blas_));
    MOESAE_CUBLAS(cublasSetStream(blas_, owner_->stream));
    ctx_.stream = owner_->stream;
    ctx_.error = owner_->error;
    ctx_.device = dev;
    MOESAE_CUDA(cudaDeviceGetAttribute(&ctx_.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    name_ = "cuda:" + std::to_string(dev) + " (" + devices[dev].name + ", gemm " + gemm_precision_name(precision_) +
            ")";
  }
  ~CudaBackend() override {
    if (owner_ && owner_->stream) cudaStreamSynchronize(owner_->stream);
    if (blas_) cublasDestroy(blas_);
  }

  Device device() const override { return Device::CUDA; }
  std::string name() const override { return name_; }
  void synchronize() override { wait_for_device(nullptr, 0); }
  int64_t host_waits() const override { return host_waits_; }  // (a large pageable upload may wait uncounted)
  int64_t grouped_gemm_fallbacks() const override { return grouped_fallbacks_; }

  // ---- memory -------------------------------------------------------------------------------------------------
  Tensor empty(int64_t rows, int64_t cols, DType dt) override {
    return Tensor(allocate(rows * cols * 4), dt, rows, cols, 2, 0, cols);
  }
  Tensor empty_vector(int64_t n, DType dt) override { return Tensor(allocate(n * 4), dt, n, 1, 1); }
  void upload(const Tensor& src, Tensor dst) override {
    MOESAE_CHECK(src.device() == Device::CPU, "upload: the source is not a host tensor");
    on_device(dst, "upload");
    check_same_shape(src, dst, "upload");
    const size_t bytes = size_t(src.numel()) * 4;
    if (bytes > 0 && bytes <= kSmallUpload && src.contiguous() && dst.contiguous()) {
      // Small (a router gradient, per-expert scalars): through the pinned ring, so that the copy never waits.
      upload_bytes(src.data<float>(), bytes, dst.data<float>());
      return;
    }
    cudaPointerAttributes attr{};
    const bool known = cudaPointerGetAttributes(&attr, src.data<float>()) == cudaSuccess;
    if (!known) cudaGetLastError();  // an older runtime's answer for plain host memory: not an error to keep
    if (known && attr.type == cudaMemoryTypeHost) {
      // Page-locked (host_buffer): a DMA at the link's speed, asynchronous, so wait before the caller may write
      // to the buffer again.
      copy2d(src, dst, cudaMemcpyHostToDevice);
      wait_for_device(nullptr, 0);
      return;
    }
    copy2d(src, dst, cudaMemcpyHostToDevice);  // pageable: staged by the driver, which may wait for the stream
  }
  Tensor host_buffer(int64_t rows, int64_t cols, DType dt) override {
    const size_t bytes = size_t(std::max<int64_t>(rows * cols, 1)) * 4;
    void* p = nullptr;
    if (cudaMallocHost(&p, bytes) != cudaSuccess) {
      cudaGetLastError();
      return host_tensor(rows, cols, dt);  // no page-locked memory left: plain memory works, only slower
    }
    auto buf = std::make_shared<Buffer>(p, bytes, Device::CPU, [](void* q) { cudaFreeHost(q); });
    return Tensor(buf, dt, rows, cols, 2, 0, cols);
  }
  void download(const Tensor& src, Tensor dst) override {
    on_device(src, "download");
    MOESAE_CHECK(dst.device() == Device::CPU, "download: the destination is not a host tensor");
    copy2d(src, dst, cudaMemcpyDeviceToHost);
    wait_for_device(nullptr, 0);
  }
  void copy(const Tensor& src, Tensor dst) override {
    on_device(src, "copy");
    on_device(dst, "copy");
    copy2d(src, dst, cudaMemcpyDeviceToDevice);
  }

  // ---- elementwise ----------------------------------------------------------------------------------------------
  void fill(Tensor x, float value) override {
    auto m = dev_mat<float>(x, "fill");
    cuda::for_each_2d(ctx_, m.rows, m.cols, [=] __device__(int64_t r, int64_t c) { m.at(r, c) = value; });
  }
  void fill_i32(Tensor x, int32_t value) override {
    auto m = dev_mat<int32_t>(x, "fill_i32");
    cuda::for_each_2d(ctx_, m.rows, m.cols, [=] __device__(int64_t r, int64_t c) { m.at(r, c) = value; });
  }
  void scale(Tensor x, float a) override {
    auto m = dev_mat<float>(x, "scale");
    cuda::for_each_2d(ctx_, m.rows, m.cols, [=] __device__(int64_t r, int64_t c) { m.at(r, c) *= a; });
  }
  void axpy(float a, const Tensor& x, Tensor y) override {
    check_same_shape(x, y, "axpy");
    auto mx = dev_mat<const float>(x, "axpy");
    auto my = dev_mat<float>(y, "axpy");
    cuda::for_each_2d(ctx_, my.rows, my.cols,
                      [=] __device__(int64_t r, int64_t c) { my.at(r, c) = my.at(r, c) + a * mx.at(r, c); });
  }
  void mul(const Tensor& a, const Tensor& b, Tensor out) override {
    check_same_shape(a, b, "mul");
    check_same_shape(a, out, "mul");
    auto ma = dev_mat<const float>(a, "mul"), mb = dev_mat<const float>(b, "mul");
    auto mo = dev_mat<float>(out, "mul");
    cuda::for_each_2d(ctx_, mo.rows, mo.cols,
                      [=] __device__(int64_t r, int64_t c) { mo.at(r, c) = ma.at(r, c) * mb.at(r, c); });
  }
  void relu(Tensor x) override {
    auto m = dev_mat<float>(x, "relu");
    cuda::for_each_2d(ctx_, m.rows, m.cols, [=] __device__(int64_t r, int64_t c) {
      const float v = m.at(r, c);
      m.at(r, c) = v > 0.f ? v : 0.f;
    });
  }
  void relu_backward(const Tensor& y, Tensor dy) override {
    check_same_shape(y, dy, "relu_backward");
    auto my = dev_mat<const float>(y, "relu_backward");
    auto md = dev_mat<float>(dy, "relu_backward");
    cuda::for_each_2d(ctx_, md.rows, md.cols, [=] __device__(int64_t r, int64_t c) {
      if (!(my.at(r, c) > 0.f)) md.at(r, c) = 0.f;
    });
  }
  void add_row_vector(Tensor a, const Tensor& v, float alpha) override {
    MOESAE_CHECK(v.numel() == a.cols(), "add_row_vector: ", a.shape_str(), " + ", v.shape_str());
    auto m = dev_mat<float>(a, "add_row_vector");
    const float* pv = dev_ptr<float>(v, "add_row_vector");
    cuda::for_each_2d(ctx_, m.rows, m.cols, [=] __device__(int64_t r, int64_t c) { m.at(r, c) += alpha * pv[c]; });
  }
  void scale_rows(Tensor a, const Tensor& s) override {
    MOESAE_CHECK(s.numel() == a.rows(), "scale_rows: ", a.shape_str(), " by ", s.shape_str());
    auto m = dev_mat<float>(a, "scale_rows");
    const float* ps = dev_ptr<float>(s, "scale_rows");
    cuda::for_each_2d(ctx_, m.rows, m.cols, [=] __device__(int64_t r, int64_t c) { m.at(r, c) *= ps[r]; });
  }
  void scale_cols(Tensor a, const Tensor& s) override {
    MOESAE_CHECK(s.numel() == a.cols(), "scale_cols: ", a.shape_str(), " by ", s.shape_str());
    auto m = dev_mat<float>(a, "scale_cols");
    const float* ps = dev_ptr<float>(s, "scale_cols");
    cuda::for_each_2d(ctx_, m.rows, m.cols, [=] __device__(int64_t r, int64_t c) { m.at(r, c) *= ps[c]; });
  }
  void exp(const Tensor& x, Tensor out) override {
    check_same_shape(x, out, "exp");
    auto mx = dev_mat<const float>(x, "exp");
    auto mo = dev_mat<float>(out, "exp");
    cuda::for_each_2d(ctx_, mo.rows, mo.cols, [=] __device__(int64_t r, int64_t c) { mo.at(r, c) = expf(mx.at(r, c)); });
  }
  void sum_rows(const Tensor& a, Tensor out, float alpha, float beta) override {
    MOESAE_CHECK(out.numel() == a.cols(), "sum_rows: ", a.shape_str(), " into ", out.shape_str());
    const int64_t c = a.cols();
    cuda::Scratch<double> s(ctx_, c);
    cuda::column_sums(ctx_, dev_mat<const float>(a, "sum_rows"), false, s.get());
    float* po = dev_ptr<float>(out, "sum_rows");
    const double* ps = s.get();
    cuda::for_each(ctx_, c, [=] __device__(int64_t j) {
      po[j] = static_cast<float>((beta == 0.f ? 0.0 : double(beta) * po[j]) + double(alpha) * ps[j]);
    });
  }
  Pending reduce_many_later(const std::vector<Reduction>& items) override {
    // Every item's block partials into one device array, copied back in one piece and added in block order.
    std::vector<int64_t> first = partial_offsets(items);
    cuda::Scratch<double> part(ctx_, first.back());
    write_partials(items, first, part.get(), "reduce");
    return queue_sums(part.get(), std::move(first));
  }
  Pending download_later(const Tensor& src, Tensor dst) override {
    on_device(src, "download_later");
    MOESAE_CHECK(dst.device() == Device::CPU, "download_later: the destination is not a host tensor");
    check_same_shape(src, dst, "download_later");
    const size_t row = size_t(src.cols()) * 4, rows = size_t(src.rows());
    if (row * rows == 0) return Pending::ready_with({});
    auto state = std::make_shared<Pending::State>();
    char* host = deferred_reserve(row * rows);  // packed rows
    if (src.contiguous())
      MOESAE_CUDA(cudaMemcpyAsync(host, src.data<float>(), row * rows, cudaMemcpyDeviceToHost, ctx_.stream));
    else
      MOESAE_CUDA(cudaMemcpy2DAsync(host, row, src.data<float>(), size_t(src.ld()) * 4, row, rows,
                                    cudaMemcpyDeviceToHost, ctx_.stream));
    owner_->arrivals.push_back([state, host, dst, row, rows] {
      char* out = reinterpret_cast<char*>(dst.data<float>());
      if (dst.contiguous()) {
        std::memcpy(out, host, row * rows);
      } else {
        for (size_t r = 0; r < rows; ++r) std::memcpy(out + r * size_t(dst.ld()) * 4, host + r * row, row);
      }
      state->ready = true;
    });
    return pending(state);
  }
  Pending clip_by_global_norm(const std::vector<Tensor>& xs, double max_norm) override {
    // The sums of squares as reduce_many_later takes them; one thread adds them up, in the host's order, into the
    // factor (clip_factor), which the scaling reads on the device.
    std::vector<Reduction> squares;
    for (const Tensor& x : xs) squares.push_back({ReduceOp::SumSquares, x});
    std::vector<int64_t> first = partial_offsets(squares);
    cuda::Scratch<double> part(ctx_, first.back());
    write_partials(squares, first, part.get(), "clip_by_global_norm");
    if (max_norm > 0 && !xs.empty()) {
      cuda::Scratch<int64_t> dfirst(ctx_, int64_t(first.size()));
      upload_small(first, dfirst.get());
      cuda::Scratch<float> factor(ctx_, 1);
      cuda::clip_factor(ctx_, part.get(), dfirst.get(), int(xs.size()), max_norm, factor.get());
      const float* pf = factor.get();
      for (const Tensor& x : xs) {
        auto m = dev_mat<float>(x, "clip_by_global_norm");
        cuda::for_each_2d(ctx_, m.rows, m.cols, [=] __device__(int64_t r, int64_t c) {
          const float f = *pf;
          if (f != 1.f) m.at(r, c) *= f;  // (nothing written when nothing is clipped)
        });
      }
    }
    return queue_sums(part.get(), std::move(first));
  }
  void row_squared_error(const Tensor& a, const Tensor& b, Tensor out) override {
    check_same_shape(a, b, "row_squared_error");
    MOESAE_CHECK(out.numel() == a.rows());
    cuda::row_squared_error(ctx_, dev_mat<const float>(a, "row_squared_error"),
                            dev_mat<const float>(b, "row_squared_error"), dev_ptr<float>(out, "row_squared_error"));
  }

  // ---- dense linear algebra -------------------------------------------------------------------------------------
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: cuBLAS gets B first, then A.
  void gemm(bool ta, bool tb, float alpha, const Tensor& a, const Tensor& b, float beta, Tensor c) override {
    const int64_t m = ta ? a.cols() : a.rows(), ka = ta ? a.rows() : a.cols();
    const int64_t kb = tb ? b.cols() : b.rows(), n = tb ? b.rows() : b.cols();
    MOESAE_CHECK(ka == kb && c.rows() == m && c.cols() == n, "gemm shapes ", a.shape_str(), ta ? "^T" : "", " x ",
                 b.shape_str(), tb ? "^T" : "", " -> ", c.shape_str());
    on_device(a, "gemm");
    on_device(b, "gemm");
    on_device(c, "gemm");
    if (m == 0 || n == 0) return;
    if (ka == 0) {
      if (beta == 0.f) fill(c, 0.f); else scale(c, beta);
      return;
    }
    const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int lda = int(ld_of(a)), ldb = int(ld_of(b)), ldc = int(ld_of(c));
    switch (precision_) {
      case GemmPrecision::FP32:
        MOESAE_CUBLAS(cublasSgemm(blas_, opb, opa, int(n), int(m), int(ka), &alpha, b.data<float>(), ldb,
                                  a.data<float>(), lda, &beta, c.data<float>(), ldc));
        break;
      case GemmPrecision::TF32:
        MOESAE_CUBLAS(cublasGemmEx(blas_, opb, opa, int(n), int(m), int(ka), &alpha, b.data<float>(), CUDA_R_32F, ldb,
                                   a.data<float>(), CUDA_R_32F, lda, &beta, c.data<float>(), CUDA_R_32F, ldc,
                                   CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_GEMM_DEFAULT));
        break;
      case GemmPrecision::BF16: {
        // Inputs rounded to bf16 (packed copies), fp32 accumulation and output.
        cuda::Scratch<__nv_bfloat16> ha(ctx_, a.numel()), hb(ctx_, b.numel());
        to_bf16(ctx_, a, ha.get());
        to_bf16(ctx_, b, hb.get());
        MOESAE_CUBLAS(cublasGemmEx(blas_, opb, opa, int(n), int(m), int(ka), &alpha, hb.get(), CUDA_R_16BF,
                                   int(b.cols()), ha.get(), CUDA_R_16BF, int(a.cols()), &beta, c.data<float>(),
                                   CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
        break;
      }
    }
  }

  // ---- softmax and selection ------------------------------------------------------------------------------------
  void softmax_rows(const Tensor& logits, Tensor probs) override {
    check_same_shape(logits, probs, "softmax_rows");
    cuda::softmax_rows(ctx_, dev_mat<const float>(logits, "softmax_rows"), dev_mat<float>(probs, "softmax_rows"));
  }
  void softmax_rows_backward(const Tensor& probs, const Tensor& dprobs, Tensor dlogits) override {
    check_same_shape(probs, dprobs, "softmax_rows_backward");
    check_same_shape(probs, dlogits, "softmax_rows_backward");
    cuda::softmax_rows_backward(ctx_, dev_mat<const float>(probs, "softmax_rows_backward"),
                                dev_mat<const float>(dprobs, "softmax_rows_backward"),
                                dev_mat<float>(dlogits, "softmax_rows_backward"));
  }
  void topk_rows(const Tensor& x, int k, Tensor vals, Tensor idx, const Tensor* col_mask) override {
    MOESAE_CHECK(vals.rows() == x.rows() && idx.rows() == x.rows() && vals.cols() == k && idx.cols() == k,
                 "topk_rows: ", x.shape_str(), " k=", k, " into ", vals.shape_str(), "/", idx.shape_str());
    const int32_t* mask = nullptr;
    if (col_mask) {
      MOESAE_CHECK(col_mask->numel() == x.cols());
      mask = dev_ptr<int32_t>(*col_mask, "topk_rows");
    }
    cuda::topk_rows(ctx_, dev_mat<const float>(x, "topk_rows"), k, dev_mat<float>(vals, "topk_rows"),
                    dev_mat<int32_t>(idx, "topk_rows"), mask);
  }
  void sort_rows_by_index(Tensor idx, Tensor vals) override {
    MOESAE_CHECK(idx.rows() == vals.rows() && idx.cols() == vals.cols());
    auto mi = dev_mat<int32_t>(idx, "sort_rows_by_index");
    auto mv = dev_mat<float>(vals, "sort_rows_by_index");
    cuda::for_each(ctx_, mi.rows, [=] __device__(int64_t r) {  // insertion sort: rows are short (e <= 64)
      auto after = [](int32_t p, int32_t q) { return (p < 0 ? INT32_MAX : p) > (q < 0 ? INT32_MAX : q); };
      for (int64_t a = 1; a < mi.cols; ++a) {
        const int32_t ki = mi.at(r, a);
        const float kv = mv.at(r, a);
        int64_t b = a - 1;
        while (b >= 0 && after(mi.at(r, b), ki)) {
          mi.at(r, b + 1) = mi.at(r, b);
          mv.at(r, b + 1) = mv.at(r, b);
          --b;
        }
        mi.at(r, b + 1) = ki;
        mv.at(r, b + 1) = kv;
      }
    });
  }

  // ---- gather / scatter -----------------------------------------------------------------------------------------
  void gather_rows(const Tensor& src, const Tensor& idx, Tensor dst) override {
    MOESAE_CHECK(idx.numel() == dst.rows() && src.cols() == dst.cols(), "gather_rows: ", src.shape_str(), " by ",
                 idx.shape_str(), " into ", dst.shape_str());
    auto ms = dev_mat<const float>(src, "gather_rows");
    auto md = dev_mat<float>(dst, "gather_rows");
    const int32_t* ip = dev_ptr<int32_t>(idx, "gather_rows");
    int* err = ctx_.error;
    cuda::for_each_2d(ctx_, md.rows, md.cols, [=] __device__(int64_t m, int64_t c) {
      const int32_t r = ip[m];
      if (r < 0 || r >= ms.rows) {
        if (c == 0) cuda::report(err, cuda::kErrGatherRows);
        return;
      }
      md.at(m, c) = ms.at(r, c);
    });
  }
  void scatter_rows(const Tensor& src, const Tensor& idx, Tensor dst) override {
    MOESAE_CHECK(idx.numel() == src.rows() && src.cols() == dst.cols(), "scatter_rows: ", src.shape_str(), " by ",
                 idx.shape_str(), " into ", dst.shape_str());
    auto ms = dev_mat<const float>(src, "scatter_rows");
    auto md = dev_mat<float>(dst, "scatter_rows");
    const int32_t* ip = dev_ptr<int32_t>(idx, "scatter_rows");
    int* err = ctx_.error;
    cuda::for_each_2d(ctx_, ms.rows, ms.cols, [=] __device__(int64_t m, int64_t c) {
      const int32_t r = ip[m];
      if (r < 0 || r >= md.rows) {
        if (c == 0) cuda::report(err, cuda::kErrScatterRows);
        return;
      }
      md.at(r, c) = ms.at(m, c);
    });
  }
  void gather(const Tensor& src, const Tensor& idx, Tensor dst) override {
    MOESAE_CHECK(src.contiguous() && dst.contiguous() && idx.numel() == dst.numel() && src.dtype() == dst.dtype());
    const int32_t* sp = dev_ptr<int32_t>(src, "gather");  // 4-byte elements: copy bits
    const int32_t* ip = dev_ptr<int32_t>(idx, "gather");
    int32_t* dp = dev_ptr<int32_t>(dst, "gather");
    const int32_t empty = src.dtype() == DType::I32 ? -1 : 0;  // the bits of 0.0f are 0
    const int64_t limit = src.numel();
    int* err = ctx_.error;
    cuda::for_each(ctx_, dst.numel(), [=] __device__(int64_t m) {
      const int32_t i = ip[m];
      if (i < -1 || i >= limit) cuda::report(err, cuda::kErrGather);
      dp[m] = (i < 0 || i >= limit) ? empty : sp[i];
    });
  }
  void scatter_add(const Tensor& src, const Tensor& idx, Tensor dst) override {
    MOESAE_CHECK(src.contiguous() && dst.contiguous() && idx.numel() == src.numel());
    cuda::scatter_add(ctx_, dev_ptr<float>(src, "scatter_add"), dev_ptr<int32_t>(idx, "scatter_add"), src.numel(),
                      dev_ptr<float>(dst, "scatter_add"), dst.numel());
  }
  void gather_cols(const Tensor& src, const Tensor& col, Tensor dst) override {
    MOESAE_CHECK(src.rows() == col.rows() && col.rows() == dst.rows() && col.cols() == dst.cols() &&
                     src.dtype() == dst.dtype(),
                 "gather_cols: ", src.shape_str(), " by ", col.shape_str(), " into ", dst.shape_str());
    auto ms = dev_mat<const int32_t>(src, "gather_cols");
    auto mc = dev_mat<const int32_t>(col, "gather_cols");
    auto md = dev_mat<int32_t>(dst, "gather_cols");
    const int32_t empty = src.dtype() == DType::I32 ? -1 : 0;
    int* err = ctx_.error;
    cuda::for_each_2d(ctx_, md.rows, md.cols, [=] __device__(int64_t b, int64_t j) {
      const int32_t c = mc.at(b, j);
      if (c < -1 || c >= ms.cols) cuda::report(err, cuda::kErrGatherCols);
      md.at(b, j) = (c < 0 || c >= ms.cols) ? empty : ms.at(b, c);
    });
  }
  void scatter_add_cols(const Tensor& src, const Tensor& col, Tensor dst) override {
    MOESAE_CHECK(src.rows() == col.rows() && col.rows() == dst.rows() && col.cols() == src.cols(),
                 "scatter_add_cols: ", src.shape_str(), " by ", col.shape_str(), " into ", dst.shape_str());
    auto ms = dev_mat<const float>(src, "scatter_add_cols");
    auto mc = dev_mat<const int32_t>(col, "scatter_add_cols");
    auto md = dev_mat<float>(dst, "scatter_add_cols");
    int* err = ctx_.error;
    cuda::for_each(ctx_, mc.rows, [=] __device__(int64_t b) {  // one thread per row: slots added in j order
      for (int64_t j = 0; j < mc.cols; ++j) {
        const int32_t c = mc.at(b, j);
        if (c < -1 || c >= md.cols) cuda::report(err, cuda::kErrScatterAddCols);
        if (c >= 0 && c < md.cols) md.at(b, c) += ms.at(b, j);
      }
    });
  }

  // ---- sparse codes ---------------------------------------------------------------------------------------------
  void sparse_rows_matmul(const Tensor& coef, const Tensor& ids, const Tensor& w, float beta, Tensor out) override {
    MOESAE_CHECK(coef.rows() == ids.rows() && coef.cols() == ids.cols() && out.rows() == ids.rows() &&
                     out.cols() == w.cols(),
                 "sparse_rows_matmul: coef ", coef.shape_str(), " ids ", ids.shape_str(), " W ", w.shape_str(),
                 " out ", out.shape_str());
    cuda::sparse_rows_matmul(ctx_, dev_mat<const float>(coef, "sparse_rows_matmul"),
                             dev_mat<const int32_t>(ids, "sparse_rows_matmul"),
                             dev_mat<const float>(w, "sparse_rows_matmul"), beta,
                             dev_mat<float>(out, "sparse_rows_matmul"));
  }
  void sparse_rows_dot(const Tensor& x, const Tensor& ids, const Tensor& w, Tensor out) override {
    MOESAE_CHECK(x.rows() == ids.rows() && out.rows() == ids.rows() && out.cols() == ids.cols() &&
                     x.cols() == w.cols(),
                 "sparse_rows_dot: x ", x.shape_str(), " ids ", ids.shape_str(), " W ", w.shape_str());
    cuda::sparse_rows_dot(ctx_, dev_mat<const float>(x, "sparse_rows_dot"),
                          dev_mat<const int32_t>(ids, "sparse_rows_dot"), dev_mat<const float>(w, "sparse_rows_dot"),
                          dev_mat<float>(out, "sparse_rows_dot"));
  }
  void sparse_rows_outer_add(const Tensor& coef, const Tensor& ids, const Tensor& x, float alpha,
                             Tensor g) override {
    MOESAE_CHECK(coef.rows() == ids.rows() && coef.cols() == ids.cols() && x.rows() == ids.rows() &&
                     x.cols() == g.cols(),
                 "sparse_rows_outer_add: coef ", coef.shape_str(), " ids ", ids.shape_str(), " x ", x.shape_str(),
                 " G ", g.shape_str());
    cuda::sparse_rows_outer_add(ctx_, dev_mat<const float>(coef, "sparse_rows_outer_add"),
                                dev_mat<const int32_t>(ids, "sparse_rows_outer_add"),
                                dev_mat<const float>(x, "sparse_rows_outer_add"), alpha,
                                dev_mat<float>(g, "sparse_rows_outer_add"));
  }
  void identity_lowpass_dot(const Tensor& x, const Tensor& ids, int n, Tensor out) override {
    MOESAE_CHECK(x.rows() == ids.rows() && out.rows() == ids.rows() && out.cols() == ids.cols());
    auto mx = dev_mat<const float>(x, "identity_lowpass_dot");
    auto mi = dev_mat<const int32_t>(ids, "identity_lowpass_dot");
    auto mo = dev_mat<float>(out, "identity_lowpass_dot");
    cuda::for_each_2d(ctx_, mo.rows, mo.cols, [=] __device__(int64_t b, int64_t j) {
      const int32_t f = mi.at(b, j);
      const int64_t local = f < 0 ? mx.cols : f % n;
      mo.at(b, j) = local < mx.cols ? mx.at(b, local) : 0.f;
    });
  }
  void identity_lowpass_outer_add(const Tensor& coef, const Tensor& ids, int n, Tensor g) override {
    MOESAE_CHECK(g.rows() == ids.rows() && coef.rows() == ids.rows() && coef.cols() == ids.cols());
    auto mc = dev_mat<const float>(coef, "identity_lowpass_outer_add");
    auto mi = dev_mat<const int32_t>(ids, "identity_lowpass_outer_add");
    auto mg = dev_mat<float>(g, "identity_lowpass_outer_add");
    cuda::for_each(ctx_, mi.rows, [=] __device__(int64_t b) {  // slots in j order
      for (int64_t j = 0; j < mi.cols; ++j) {
        const int32_t f = mi.at(b, j);
        const int64_t local = f < 0 ? mg.cols : f % n;
        if (local < mg.cols) mg.at(b, local) += mc.at(b, j);
      }
    });
  }

  // ---- grouped rows: one or two launches for all the groups (public here: nvcc's device lambdas need it) ------
  void grouped_gemm_impl(bool tb, const Tensor& a, const Tensor& b, int64_t b_rows,
                         const std::vector<int64_t>& offsets, const std::vector<float>& alpha, float beta,
                         Tensor c) override {
    on_device(a, "grouped_gemm");
    on_device(b, "grouped_gemm");
    on_device(c, "grouped_gemm");
    const int64_t k = a.cols(), n = c.cols();
    // bf16 (inputs converted per product), an empty inner dimension, or a cuBLAS without the grouped product for
    // this precision: one gemm per group.
    if (per_group_gemm_ || precision_ == GemmPrecision::BF16 || k == 0 || n == 0) {
      if (!per_group_gemm_ && k > 0 && n > 0) ++grouped_fallbacks_;
      return Backend::grouped_gemm_impl(tb, a, b, b_rows, offsets, alpha, beta, c);
    }
    // Row-major c_i = a_i op(b_i) is column-major c_i^T = op(b_i)^T a_i^T, as in gemm(): cuBLAS's "A" is our b_i.
    std::vector<cublasOperation_t> op_b, op_a;
    std::vector<int> ms, ns, ks, ldbs, ldas, ldcs, sizes;
    std::vector<float> alphas, betas;
    std::vector<const void*> pb, pa;
    std::vector<void*> pc;
    for (size_t i = 0; i + 1 < offsets.size(); ++i) {
      const int64_t r0 = offsets[i], m = offsets[i + 1] - r0;
      if (m == 0) continue;
      const Tensor bi = b_rows == 0 ? b : b.row_range(int64_t(i) * b_rows, int64_t(i + 1) * b_rows);
      op_b.push_back(tb ? CUBLAS_OP_T : CUBLAS_OP_N);
      op_a.push_back(CUBLAS_OP_N);
      ms.push_back(int(n));
      ns.push_back(int(m));
      ks.push_back(int(k));
      ldbs.push_back(int(ld_of(bi)));
      ldas.push_back(int(ld_of(a)));
      ldcs.push_back(int(ld_of(c)));
      sizes.push_back(1);
      alphas.push_back(alpha[i]);
      betas.push_back(beta);
      pb.push_back(bi.data<float>());
      pa.push_back(a.data<float>() + r0 * ld_of(a));
      pc.push_back(c.data<float>() + r0 * ld_of(c));
    }
    const int groups = int(sizes.size());
    if (groups == 0) return;
    // The pointer-array products may assume 16-byte aligned operands (the fast compute types do): anything else
    // (rows at odd offsets of a narrow matrix) takes one product per group.
    auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    bool all_aligned = ld_of(a) % 4 == 0 && ld_of(c) % 4 == 0;
    for (int g = 0; g < groups && all_aligned; ++g)
      all_aligned = aligned(pa[g]) && aligned(pb[g]) && aligned(pc[g]) && ldbs[g] % 4 == 0;
    if (!all_aligned) {
      ++grouped_fallbacks_;
      return Backend::grouped_gemm_impl(tb, a, b, b_rows, offsets, alpha, beta, c);
    }
    cuda::Scratch<const void*> dpb(ctx_, groups), dpa(ctx_, groups);  // cuBLAS reads the pointer lists on device
    cuda::Scratch<void*> dpc(ctx_, groups);
    upload_small(pb, dpb.get());
    upload_small(pa, dpa.get());
    upload_small(pc, dpc.get());
    const cublasStatus_t st = cublasGemmGroupedBatchedEx(
        blas_, op_b.data(), op_a.data(), ms.data(), ns.data(), ks.data(), alphas.data(), dpb.get(), CUDA_R_32F,
        ldbs.data(), dpa.get(), CUDA_R_32F, ldas.data(), betas.data(), dpc.get(), CUDA_R_32F, ldcs.data(), groups,
        sizes.data(),
        precision_ == GemmPrecision::TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F);
    if (st == CUBLAS_STATUS_NOT_SUPPORTED) {
      spdlog::warn("cuda backend: this cuBLAS has no grouped GEMM for gemm_precision {}; one product per group",
                   gemm_precision_name(precision_));
      per_group_gemm_ = true;
      ++grouped_fallbacks_;
      return Backend::grouped_gemm_impl(tb, a, b, b_rows, offsets, alpha, beta, c);
    }
    MOESAE_CUBLAS(st);
  }
  void sum_group_rows_impl(const Tensor& a, const std::vector<int64_t>& offsets, float alpha, Tensor out) override {
    const int64_t G = int64_t(offsets.size()) - 1;
    cuda::Scratch<int64_t> off(ctx_, G + 1);
    upload_small(offsets, off.get());
    int64_t max_rows = 0;
    for (int64_t g = 0; g < G; ++g) max_rows = std::max(max_rows, offsets[g + 1] - offsets[g]);
    cuda::group_column_sums(ctx_, dev_mat<const float>(a, "sum_group_rows"), off.get(), G, max_rows, alpha,
                            dev_mat<float>(out, "sum_group_rows"));
  }
  void add_group_rows_impl(Tensor a, const std::vector<int64_t>& offsets, const Tensor& v, float alpha) override {
    const int64_t G = int64_t(offsets.size()) - 1, r0 = offsets.front(), rows = offsets.back() - r0;
    cuda::Scratch<int64_t> off(ctx_, G + 1);
    upload_small(offsets, off.get());
    auto ma = dev_mat<float>(a, "add_group_rows");
    auto mv = dev_mat<const float>(v, "add_group_rows");
    const int64_t* po = off.get();
    cuda::for_each_2d(ctx_, rows, ma.cols, [=] __device__(int64_t i, int64_t col) {
      const int64_t r = r0 + i;
      ma.at(r, col) += alpha * mv.at(cuda::group_of(po, G, r), col);
    });
  }
  void axpy_groups_impl(const std::vector<float>& alpha, const std::vector<int64_t>& offsets, const Tensor& x,
                        Tensor y) override {
    const int64_t G = int64_t(offsets.size()) - 1, r0 = offsets.front(), rows = offsets.back() - r0;
    cuda::Scratch<int64_t> off(ctx_, G + 1);
    cuda::Scratch<float> al(ctx_, G);
    upload_small(offsets, off.get());
    upload_small(alpha, al.get());
    auto mx = dev_mat<const float>(x, "axpy_groups");
    auto my = dev_mat<float>(y, "axpy_groups");
    const int64_t* po = off.get();
    const float* pa = al.get();
    cuda::for_each_2d(ctx_, rows, my.cols, [=] __device__(int64_t i, int64_t col) {
      const int64_t r = r0 + i;
      my.at(r, col) += pa[cuda::group_of(po, G, r)] * mx.at(r, col);
    });
  }

  // ---- mixture-of-experts routing -------------------------------------------------------------------------------
  ExpertGroups group_by_expert(const Tensor& experts, int num_experts) override {
    const int64_t B = experts.rows(), e = experts.cols(), n = B * e;
    ExpertGroups g;
    g.tokens = empty_vector(n, DType::I32);
    g.cand_rows = empty_vector(n, DType::I32);
    auto me = dev_mat<const int32_t>(experts, "group_by_expert");
    cuda::Scratch<int32_t> keys(ctx_, n), offsets(ctx_, num_experts + 1);
    int32_t* kp = keys.get();
    cuda::for_each(ctx_, n, [=] __device__(int64_t i) { kp[i] = me.at(i / e, i % e); });
    int32_t* rows = g.cand_rows.data<int32_t>();
    cuda::group_by_key(ctx_, kp, n, num_experts, rows, offsets.get(), cuda::kErrGroupByExpert);
    int32_t* tok = g.tokens.data<int32_t>();
    cuda::for_each(ctx_, n, [=] __device__(int64_t r) { tok[r] = rows[r] / int32_t(e); });
    // The per-expert counts: the one host round trip an MoE step needs. An expert id out of range is reported
    // here (the -1 entries are skipped and sort last).
    const auto* off = static_cast<const int32_t*>(
        wait_for_device(offsets.get(), size_t(num_experts + 1) * sizeof(int32_t)));
    g.offsets.assign(off, off + num_experts + 1);
    return g;
  }
  void candidates_to_latents(const Tensor& cand, const Tensor& experts, int n, Tensor latent, Tensor slots) override {
    MOESAE_CHECK(cand.rows() == experts.rows() && latent.rows() == cand.rows() && slots.rows() == cand.rows());
    auto mc = dev_mat<const int32_t>(cand, "candidates_to_latents");
    auto me = dev_mat<const int32_t>(experts, "candidates_to_latents");
    auto ml = dev_mat<int32_t>(latent, "candidates_to_latents");
    auto ms = dev_mat<int32_t>(slots, "candidates_to_latents");
    int* err = ctx_.error;
    cuda::for_each_2d(ctx_, mc.rows, mc.cols, [=] __device__(int64_t b, int64_t j) {
      const int32_t c = mc.at(b, j);
      if (c < 0 || c >= me.cols * int64_t(n)) {
        if (c != -1) cuda::report(err, cuda::kErrCandidates);
        ml.at(b, j) = -1;
        ms.at(b, j) = -1;
        return;
      }
      const int32_t s = c / n, x = me.at(b, s);
      ms.at(b, j) = x < 0 ? -1 : s;
      ml.at(b, j) = x < 0 ? -1 : x * n + c % n;
    });
  }
  void update_fired(const Tensor& ids, const Tensor& vals, int64_t tokens, Tensor counter) override {
    int32_t* cp = dev_ptr<int32_t>(counter, "update_fired");
    const int64_t F = counter.numel();
    const int64_t cap = int64_t(1) << 30;
    cuda::for_each(ctx_, F, [=] __device__(int64_t f) { cp[f] = int32_t(min(cap, int64_t(cp[f]) + tokens)); });
    auto mi = dev_mat<const int32_t>(ids, "update_fired");
    auto mv = dev_mat<const float>(vals, "update_fired");
    int* err = ctx_.error;
    cuda::for_each_2d(ctx_, mi.rows, mi.cols, [=] __device__(int64_t b, int64_t j) {
      const int32_t f = mi.at(b, j);
      if (f < -1 || f >= F) cuda::report(err, cuda::kErrUpdateFired);
      if (f >= 0 && f < F && mv.at(b, j) > 0.f) cp[f] = 0;
    });
  }
  int64_t threshold_mask(const Tensor& counter, int64_t threshold, Tensor mask) override {
    MOESAE_CHECK(counter.numel() == mask.numel());
    const int32_t* cp = dev_ptr<int32_t>(counter, "threshold_mask");
    int32_t* mp = dev_ptr<int32_t>(mask, "threshold_mask");
    cuda::for_each(ctx_, counter.numel(), [=] __device__(int64_t f) { mp[f] = cp[f] > threshold ? 1 : 0; });
    const int blocks = cuda::reduce_blocks(mask.numel());
    cuda::Scratch<double> part(ctx_, blocks);
    cuda::count_nonzero_partials(ctx_, Mat<const int32_t>{mp, mask.numel(), 1, 1}, part.get());
    const auto* host = static_cast<const double*>(wait_for_device(part.get(), size_t(blocks) * sizeof(double)));
    return static_cast<int64_t>(cuda::add_partials(host, blocks));
  }

  // ---- optimizer and constraints --------------------------------------------------------------------------------
  void adam_step(Tensor p, const Tensor& g, Tensor m, Tensor v, float lr, float b1, float b2, float eps,
                 int64_t step) override {
    MOESAE_CHECK(p.contiguous() && g.contiguous() && m.contiguous() && v.contiguous() && p.numel() == g.numel() &&
                 p.numel() == m.numel() && p.numel() == v.numel());
    const AdamScalars a = adam_scalars(lr, b1, b2, step);
    const float step_size = a.step_size, inv_sqrt_bc2 = a.inv_sqrt_bc2;
    float *pp = dev_ptr<float>(p, "adam_step"), *mp = dev_ptr<float>(m, "adam_step"),
          *vp = dev_ptr<float>(v, "adam_step");
    const float* gp = dev_ptr<float>(g, "adam_step");
    cuda::for_each(ctx_, p.numel(), [=] __device__(int64_t i) {  // fused: one pass over p, g, m, v
      const float gi = gp[i];
      const float mi = b1 * mp[i] + (1.f - b1) * gi;
      const float vi = b2 * vp[i] + (1.f - b2) * gi * gi;
      mp[i] = mi;
      vp[i] = vi;
      pp[i] -= step_size * mi / (sqrtf(vi) * inv_sqrt_bc2 + eps);
    });
  }
  void normalize_rows(Tensor w, float eps) override {
    cuda::normalize_rows(ctx_, dev_mat<float>(w, "normalize_rows"), eps);
  }
  void normalize_cols(Tensor w, float eps) override {
    auto mw = dev_mat<float>(w, "normalize_cols");
    cuda::Scratch<double> s(ctx_, mw.cols);
    cuda::column_sums(ctx_, Mat<const float>{mw.p, mw.rows, mw.cols, mw.ld}, true, s.get());
    const double* ps = s.get();
    cuda::for_each_2d(ctx_, mw.rows, mw.cols, [=] __device__(int64_t r, int64_t c) {
      mw.at(r, c) *= static_cast<float>(1.0 / (sqrt(ps[c]) + eps));
    });
  }
  void project_out_rows(Tensor g, const Tensor& w) override {
    check_same_shape(g, w, "project_out_rows");
    cuda::project_out_rows(ctx_, dev_mat<float>(g, "project_out_rows"), dev_mat<const float>(w, "project_out_rows"));
  }

 private:
  std::shared_ptr<Buffer> allocate(int64_t bytes) {
    void* p = nullptr;
    if (bytes > 0) {
      const cudaError_t e = cudaMallocAsync(&p, size_t(bytes), owner_->stream);
      if (e != cudaSuccess)
        fail("backend 'cuda': cannot allocate ", bytes, " bytes of device memory: ", cudaGetErrorString(e));
    }
    std::shared_ptr<StreamOwner> owner = owner_;  // the stream outlives every tensor allocated on it
    return std::make_shared<Buffer>(p, size_t(bytes), Device::CUDA, [owner](void* q) {
      cudaFreeAsync(q, owner->stream);
    });
  }
  // Leading dimension for cuBLAS: a rank-1 tensor is a 1 x n column-major matrix (stride 1).
  static int64_t ld_of(const Tensor& t) { return t.rank() == 1 ? 1 : std::max<int64_t>(1, t.ld()); }
  void on_device(const Tensor& t, const char* op) const {
    MOESAE_CHECK(t.defined() && t.device() == Device::CUDA, op, ": a ", device_name(t.device()),
                 " tensor was passed to the cuda backend");
  }
  template <typename T>
  Mat<T> dev_mat(const Tensor& t, const char* op) const {
    on_device(t, op);
    return mat<T>(t);
  }
  template <typename T>
  T* dev_ptr(const Tensor& t, const char* op) const {
    on_device(t, op);
    MOESAE_CHECK(t.contiguous(), op, ": expected a contiguous tensor, got ", t.shape_str());
    return t.data<T>();
  }
  void copy2d(const Tensor& src, Tensor dst, cudaMemcpyKind kind) {
    check_same_shape(src, dst, "copy");
    if (src.numel() == 0) return;
    if (src.contiguous() && dst.contiguous()) {
      MOESAE_CUDA(cudaMemcpyAsync(dst.data<float>(), src.data<float>(), size_t(src.numel()) * 4, kind, ctx_.stream));
      return;
    }
    MOESAE_CUDA(cudaMemcpy2DAsync(dst.data<float>(), size_t(dst.ld()) * 4, src.data<float>(), size_t(src.ld()) * 4,
                                  size_t(src.cols()) * 4, size_t(src.rows()), kind, ctx_.stream));
  }
  // Host bytes copied to device memory `dst` without waiting: staged in the pinned ring, then an asynchronous copy
  // on the stream (the host memory may go as soon as this returns). Over half the ring: a pageable copy (the driver
  // may wait for the stream).
  void upload_bytes(const void* src, size_t bytes, void* dst) {
    if (bytes == 0) return;
    if (bytes > kHalf) {
      MOESAE_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, ctx_.stream));
      return;
    }
    void* staged = ring_reserve(bytes);
    std::memcpy(staged, src, bytes);
    MOESAE_CUDA(cudaMemcpyAsync(dst, staged, bytes, cudaMemcpyHostToDevice, ctx_.stream));
  }
  // Queues the copy of block partials part[first[i], first[i+1]) back to the host; on arrival item i's sum, added in
  // block order, is value i of the Pending.
  // Where item i's block partials go in one device array: [first[i], first[i+1]); first.back() partials in all.
  static std::vector<int64_t> partial_offsets(const std::vector<Reduction>& items) {
    std::vector<int64_t> first(items.size() + 1, 0);
    for (size_t i = 0; i < items.size(); ++i) first[i + 1] = first[i] + cuda::reduce_blocks(items[i].x.numel());
    return first;
  }
  void write_partials(const std::vector<Reduction>& items, const std::vector<int64_t>& first, double* part,
                      const char* what) {
    for (size_t i = 0; i < items.size(); ++i) {
      const cuda::ReduceOp op = items[i].op == ReduceOp::Sum          ? cuda::ReduceOp::Sum
                                : items[i].op == ReduceOp::SumSquares ? cuda::ReduceOp::SumSquares
                                                                      : cuda::ReduceOp::CountPositive;
      cuda::reduce_partials(ctx_, dev_mat<const float>(items[i].x, what), op, part + first[i]);
    }
  }
  Pending queue_sums(const double* part, std::vector<int64_t> first) {
    const size_t bytes = size_t(first.back()) * sizeof(double);
    if (bytes == 0) return Pending::ready_with(std::vector<double>(first.size() - 1, 0.0));  // only empty tensors
    auto state = std::make_shared<Pending::State>();
    char* host = deferred_reserve(bytes);
    MOESAE_CUDA(cudaMemcpyAsync(host, part, bytes, cudaMemcpyDeviceToHost, ctx_.stream));
    owner_->arrivals.push_back([state, host, first = std::move(first)] {
      const auto* p = reinterpret_cast<const double*>(host);
      state->values.resize(first.size() - 1);
      for (size_t i = 0; i + 1 < first.size(); ++i)
        state->values[i] = cuda::add_partials(p + first[i], int(first[i + 1] - first[i]));
      state->ready = true;
    });
    return pending(state);
  }
  // `bytes` of the pinned area for a queued read-back's copy. A full area is emptied by a wait first (which delivers
  // what it holds); it grows only while empty, so no copy in flight ever points into freed memory.
  char* deferred_reserve(size_t bytes) {
    StreamOwner& o = *owner_;
    bytes = (bytes + 15) / 16 * 16;
    if (o.deferred_used + bytes > o.deferred_bytes) {
      const size_t need = o.deferred_used + bytes;  // what is queued between two waits, at least
      if (!o.arrivals.empty()) wait_for_device(nullptr, 0);
      if (need > o.deferred_bytes) {
        if (o.deferred) MOESAE_CUDA(cudaFreeHost(o.deferred));
        o.deferred = nullptr;
        o.deferred_bytes = 0;
        const size_t want = std::max<size_t>(size_t(1) << 20, 2 * need);
        MOESAE_CUDA(cudaMallocHost(reinterpret_cast<void**>(&o.deferred), want));
        o.deferred_bytes = want;
      }
    }
    char* p = o.deferred + o.deferred_used;
    o.deferred_used += bytes;
    return p;
  }
  template <typename T>
  void upload_small(const std::vector<T>& v, T* dst) {
    upload_bytes(v.data(), v.size() * sizeof(T), dst);
  }
  static constexpr size_t kSmallUpload = size_t(64) << 10;  // upload() sends these through the ring
  static constexpr size_t kHalf = size_t(1) << 20;          // each half of the ring
  void* ring_reserve(size_t bytes) {
    StreamOwner& o = *owner_;
    bytes = (bytes + 255) / 256 * 256;
    MOESAE_CHECK(bytes <= kHalf, "cuda backend: a small upload of ", bytes, " bytes (at most ", kHalf, ")");
    if (!o.ring) {
      MOESAE_CUDA(cudaMallocHost(reinterpret_cast<void**>(&o.ring), 2 * kHalf));
      for (cudaEvent_t& e : o.ring_left) MOESAE_CUDA(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    }
    if (o.ring_head + bytes > size_t(o.ring_half + 1) * kHalf) {  // this half is full: on to the other one
      MOESAE_CUDA(cudaEventRecord(o.ring_left[o.ring_half], ctx_.stream));
      o.ring_used[o.ring_half] = true;
      o.ring_half ^= 1;
      if (o.ring_used[o.ring_half]) {  // its copies were issued a whole half ago: normally long done
        if (cudaEventQuery(o.ring_left[o.ring_half]) == cudaErrorNotReady) ++host_waits_;
        MOESAE_CUDA(cudaEventSynchronize(o.ring_left[o.ring_half]));
      }
      o.ring_head = size_t(o.ring_half) * kHalf;
    }
    void* p = o.ring + o.ring_head;
    o.ring_head += bytes;
    return p;
  }

  // The one way the host waits for the device: copies `bytes` of device memory (if any) and the device error word
  // into the pinned staging buffer, synchronises the stream once, delivers the queued read-backs and returns the
  // staged copy of `src` (valid until the next wait). An index out of range inside a kernel (a bug above this layer) is reported here.
  const void* wait_for_device(const void* src, size_t bytes) {
    constexpr size_t kHead = 16;  // the error word, then the data (aligned for doubles)
    if (owner_->staging_bytes < kHead + bytes) {  // grow; nothing in flight reads it (every wait ends in a sync)
      if (owner_->staging) MOESAE_CUDA(cudaFreeHost(owner_->staging));
      owner_->staging = nullptr;
      owner_->staging_bytes = 0;
      const size_t want = std::max<size_t>(4096, 2 * (kHead + bytes));
      MOESAE_CUDA(cudaMallocHost(&owner_->staging, want));
      owner_->staging_bytes = want;
    }
    char* host = static_cast<char*>(owner_->staging);
    if (bytes > 0)
      MOESAE_CUDA(cudaMemcpyAsync(host + kHead, src, bytes, cudaMemcpyDeviceToHost, ctx_.stream));
    MOESAE_CUDA(cudaMemcpyAsync(host, ctx_.error, sizeof(int), cudaMemcpyDeviceToHost, ctx_.stream));
    MOESAE_CUDA(cudaStreamSynchronize(ctx_.stream));
    ++host_waits_;
    std::vector<std::function<void()>> arrived;  // the queued read-backs are all here now
    arrived.swap(owner_->arrivals);
    owner_->deferred_used = 0;
    for (const auto& arrive : arrived) arrive();
    int code = 0;
    std::memcpy(&code, host, sizeof(int));
    if (code != 0) {
      MOESAE_CUDA(cudaMemsetAsync(ctx_.error, 0, sizeof(int), ctx_.stream));
      fail("internal check failed: ", cuda::error_op_name(code), ": index out of range (cuda backend)");
    }
    return host + kHead;
  }

  GemmPrecision precision_;
  std::shared_ptr<StreamOwner> owner_;
  cuda::Ctx ctx_;
  cublasHandle_t blas_ = nullptr;
  std::string name_;
  int64_t host_waits_ = 0, grouped_fallbacks_ = 0;
  bool per_group_gemm_ = false;  // grouped_gemm as one cuBLAS call per group (CudaOptions, or no grouped product)
};

}  // namespace

bool cuda_backend_available(std::string* why) { return !cuda::list_devices(why).empty(); }

std::unique_ptr<Backend> make_cuda_backend(const CudaOptions& options) {
  return std::make_unique<CudaBackend>(options);
}

}  // namespace moesae
