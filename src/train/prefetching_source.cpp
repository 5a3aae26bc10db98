#include "train/prefetching_source.h"

#include <utility>

#include "core/error.h"

namespace moesae {

PrefetchingSource::PrefetchingSource(BatchSource& inner, std::function<Tensor(int64_t, int64_t)> buffer)
    : inner_(inner), buffer_(std::move(buffer)) {}

PrefetchingSource::~PrefetchingSource() { drop_read_ahead(); }

void PrefetchingSource::next(Tensor& host_batch) {
  if (read_.valid()) {
    MOESAE_CHECK(host_batch.rows() == ahead_.rows() && host_batch.cols() == ahead_.cols(),
                 "prefetching batch source: a batch of ", host_batch.shape_str(), " asked for, ", ahead_.shape_str(),
                 " read ahead");
    std::future<void> read = std::move(read_);
    read.get();  // the reader's error, if any, surfaces here
    std::swap(host_batch, ahead_);
  } else {
    inner_.next(host_batch);
    if (!ahead_.defined() || ahead_.rows() != host_batch.rows() || ahead_.cols() != host_batch.cols())
      ahead_ = buffer_(host_batch.rows(), host_batch.cols());
  }
  cursor_taken_ = false;
  read_ = std::async(std::launch::async, [this] {
    cursor_ = inner_.state();
    cursor_taken_ = true;
    inner_.next(ahead_);
  });
}

std::vector<uint64_t> PrefetchingSource::state() const {
  if (!read_.valid()) return inner_.state();
  read_.wait();  // the cursor is taken before the read; waiting for the read keeps the inner source one-threaded
  if (!cursor_taken_) read_.get();  // the reader failed before it had the cursor: its error is this call's
  return cursor_;
}

void PrefetchingSource::restore(const std::vector<uint64_t>& state) {
  drop_read_ahead();
  inner_.restore(state);
}

void PrefetchingSource::drop_read_ahead() {
  if (!read_.valid()) return;
  try {
    read_.get();
  } catch (const std::exception&) {  // a batch nobody will ask for: its error does not matter
  }
}

}  // namespace moesae
