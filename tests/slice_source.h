// A BatchSource over a host tensor for the multi-rank training tests: rank `part` of `parts` gets its share of
// every global batch.
#pragma once
#include <cstring>
#include <functional>
#include <vector>

#include "core/error.h"
#include "train/batch_source.h"

namespace moesae::testing {

// Rank r's share of every global batch: rows [s B + r B/P, s B + (r+1) B/P) of step s. The cursor is {step}.
// At P = 1 (or for the reference) it yields the whole global batches.
class SliceSource final : public BatchSource {
 public:
  SliceSource(const Tensor& data, int64_t global_batch, int parts, int part)
      : data_(data), b_(global_batch / parts), offset_(int64_t(part) * (global_batch / parts)), global_(global_batch) {}
  int64_t dim() const override { return data_.cols(); }
  void next(Tensor& host_batch) override {
    if (host_batch.rows() != b_ || host_batch.cols() != data_.cols() || !host_batch.contiguous())
      fail("SliceSource: asked for a [", host_batch.rows(), ", ", host_batch.cols(), "] batch, holds [", b_, ", ",
           data_.cols(), "]");
    const int64_t batches = data_.rows() / global_;
    const int64_t row0 = int64_t(step_ % uint64_t(batches)) * global_ + offset_;
    const Tensor src = data_.row_range(row0, row0 + b_);
    std::memcpy(host_batch.host<float>(), src.host<float>(), size_t(b_ * data_.cols()) * sizeof(float));
    ++step_;
    if (on_next) on_next(step_);
  }
  std::vector<uint64_t> state() const override { return {step_}; }
  void restore(const std::vector<uint64_t>& s) override {
    if (s.size() != 1) fail("SliceSource: cursor of ", s.size(), " words");
    step_ = s[0];
  }
  std::function<void(uint64_t)> on_next;  // called after each batch with the number of batches served

 private:
  const Tensor& data_;
  int64_t b_, offset_, global_;
  uint64_t step_ = 0;
};

}  // namespace moesae::testing
