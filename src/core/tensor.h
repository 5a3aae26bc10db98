// moesae core: Tensor = a (possibly strided, at most 2-D) view into a device or host buffer.
// Memory is allocated by a Backend (see backend/backend.h); nothing here knows how device memory works.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace moesae {

enum class Device { CPU, CUDA };
enum class DType { F32, I32 };

inline size_t dtype_size(DType) { return 4; }
const char* dtype_name(DType t);
const char* device_name(Device d);

// Owned allocation. The deleter is supplied by the allocating backend.
struct Buffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  Device device = Device::CPU;
  std::function<void(void*)> deleter;
  Buffer(void* p, size_t b, Device d, std::function<void(void*)> del)
      : ptr(p), bytes(b), device(d), deleter(std::move(del)) {}
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() {
    if (ptr && deleter) deleter(ptr);
  }
};

// A row-major matrix view: rows x cols with row stride `ld` (in elements). A 1-D tensor has rank 1 and is
// stored as rows = size, cols = 1, ld = 1. Elements are 4 bytes (f32 or i32).
class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<Buffer> buf, DType dt, int64_t rows, int64_t cols, int rank, int64_t offset = 0,
         int64_t ld = -1);

  bool defined() const { return static_cast<bool>(buf_); }
  DType dtype() const { return dtype_; }
  Device device() const { return buf_ ? buf_->device : Device::CPU; }
  int rank() const { return rank_; }
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t ld() const { return ld_; }
  int64_t numel() const { return rows_ * cols_; }
  bool contiguous() const { return rank_ == 1 || ld_ == cols_ || rows_ <= 1; }
  std::string shape_str() const;

  // Raw element pointer (device pointer for CUDA tensors). Backends and host-side code use this.
  template <typename T>
  T* data() const {
    return reinterpret_cast<T*>(static_cast<char*>(buf_->ptr) + offset_ * 4);
  }
  // Host pointer: checks the tensor lives on the CPU.
  template <typename T>
  T* host() const {
    MOESAE_CHECK(device() == Device::CPU, "tensor is not on the host");
    return data<T>();
  }

  // Views (share the buffer).
  Tensor row_range(int64_t r0, int64_t r1) const;  // rows [r0, r1)
  Tensor col_range(int64_t c0, int64_t c1) const;  // cols [c0, c1) (keeps ld)
  Tensor reshape(int64_t rows, int64_t cols) const;  // contiguous only
  Tensor flatten() const;                            // contiguous only: rank-1 view

  const std::shared_ptr<Buffer>& buffer() const { return buf_; }

 private:
  std::shared_ptr<Buffer> buf_;
  DType dtype_ = DType::F32;
  int rank_ = 2;
  int64_t rows_ = 0, cols_ = 0, offset_ = 0, ld_ = 0;
};

// Plain host allocation (malloc-backed), independent of any backend: used by data loaders, metrics and tests.
Tensor host_tensor(int64_t rows, int64_t cols, DType dt = DType::F32);
Tensor host_vector(int64_t n, DType dt = DType::F32);

}  // namespace moesae
