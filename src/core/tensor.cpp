#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

namespace moesae {

const char* dtype_name(DType t) { return t == DType::F32 ? "f32" : "i32"; }
const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

Tensor::Tensor(std::shared_ptr<Buffer> buf, DType dt, int64_t rows, int64_t cols, int rank, int64_t offset,
               int64_t ld)
    : buf_(std::move(buf)), dtype_(dt), rank_(rank), rows_(rows), cols_(cols), offset_(offset),
      ld_(ld < 0 ? cols : ld) {
  MOESAE_CHECK(rank == 1 || rank == 2);
  MOESAE_CHECK(rank == 2 || cols == 1);
}

std::string Tensor::shape_str() const {
  std::ostringstream os;
  if (rank_ == 1)
    os << "[" << rows_ << "]";
  else
    os << "[" << rows_ << ", " << cols_ << "]";
  return os.str();
}

Tensor Tensor::row_range(int64_t r0, int64_t r1) const {
  MOESAE_CHECK(0 <= r0 && r0 <= r1 && r1 <= rows_, "row_range ", r0, ":", r1, " of ", shape_str());
  return Tensor(buf_, dtype_, r1 - r0, cols_, rank_, offset_ + r0 * (rank_ == 1 ? 1 : ld_), rank_ == 1 ? 1 : ld_);
}

Tensor Tensor::col_range(int64_t c0, int64_t c1) const {
  MOESAE_CHECK(rank_ == 2 && 0 <= c0 && c0 <= c1 && c1 <= cols_, "col_range on ", shape_str());
  return Tensor(buf_, dtype_, rows_, c1 - c0, 2, offset_ + c0, ld_);
}

Tensor Tensor::reshape(int64_t rows, int64_t cols) const {
  MOESAE_CHECK(contiguous() && rows * cols == numel(), "reshape ", shape_str(), " to ", rows, "x", cols);
  return Tensor(buf_, dtype_, rows, cols, 2, offset_, cols);
}

Tensor Tensor::flatten() const {
  MOESAE_CHECK(contiguous(), "flatten of a strided view");
  return Tensor(buf_, dtype_, numel(), 1, 1, offset_, 1);
}

static Tensor host_alloc(int64_t rows, int64_t cols, int rank, DType dt) {
  size_t bytes = static_cast<size_t>(std::max<int64_t>(rows * cols, 1)) * dtype_size(dt);
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!p) fail("out of host memory allocating ", bytes, " bytes");
  std::memset(p, 0, bytes);
  auto buf = std::make_shared<Buffer>(p, bytes, Device::CPU, [](void* q) { std::free(q); });
  return Tensor(buf, dt, rows, cols, rank);
}

Tensor host_tensor(int64_t rows, int64_t cols, DType dt) { return host_alloc(rows, cols, 2, dt); }
Tensor host_vector(int64_t n, DType dt) { return host_alloc(n, 1, 1, dt); }

}  // namespace moesae
