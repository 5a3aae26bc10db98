// moesae training: where training batches come from. The trainer only needs this interface; data/ provides
// the HDF5 activation stream and run/ adapts it. The state must make resumption exact.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace moesae {

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual int64_t dim() const = 0;
  // Fills a host f32 tensor [B, d] with the next training batch.
  virtual void next(Tensor& host_batch) = 0;
  // Cursor of the stream (opaque words), and its restoration: after restore(state()), next() continues exactly.
  virtual std::vector<uint64_t> state() const = 0;
  virtual void restore(const std::vector<uint64_t>& state) = 0;
};

}  // namespace moesae
