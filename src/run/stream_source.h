// moesae run: adapts the HDF5 activation stream (data/) to the trainer's BatchSource interface (train/).
#pragma once
#include "data/activation_stream.h"
#include "train/batch_source.h"

namespace moesae {

class StreamBatchSource final : public BatchSource {
 public:
  explicit StreamBatchSource(ActivationStream& stream) : stream_(stream) {}
  int64_t dim() const override { return stream_.d(); }
  void next(Tensor& host_batch) override { stream_.next_batch(host_batch); }
  std::vector<uint64_t> state() const override { return stream_.state().encode(); }
  void restore(const std::vector<uint64_t>& s) override {
    stream_.restore(StreamState::decode(s, "checkpoint data cursor"));
  }

 private:
  ActivationStream& stream_;
};

}  // namespace moesae
