#include "train/prefetching_source.h"

#include <omp.h>

#include <utility>

#include "core/error.h"

namespace moesae {

PrefetchingSource::PrefetchingSource(BatchSource& inner, std::function<Tensor(int64_t, int64_t)> buffer, int threads)
    : inner_(inner), buffer_(std::move(buffer)), threads_(threads > 0 ? threads : omp_get_max_threads()) {}

PrefetchingSource::~PrefetchingSource() {
  drop_read_ahead();
  if (reader_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    reader_.join();
  }
}

void PrefetchingSource::next(Tensor& host_batch) {
  if (reading_ahead_) {
    wait_for_read();
    MOESAE_CHECK(host_batch.rows() == ahead_.rows() && host_batch.cols() == ahead_.cols(),
                 "prefetching batch source: a batch of ", host_batch.shape_str(), " asked for, ", ahead_.shape_str(),
                 " read ahead");
    reading_ahead_ = false;
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));  // the reader's error surfaces here
    std::swap(host_batch, ahead_);
  } else {
    inner_.next(host_batch);
    if (!ahead_.defined() || ahead_.rows() != host_batch.rows() || ahead_.cols() != host_batch.cols())
      ahead_ = buffer_(host_batch.rows(), host_batch.cols());
  }
  start_read();
}

std::vector<uint64_t> PrefetchingSource::state() const {
  if (!reading_ahead_) return inner_.state();
  wait_for_read();  // the cursor is taken before the read; waiting for the read keeps the inner source one-threaded
  if (!cursor_taken_) {  // the reader failed before it had the cursor (and read nothing): its error is this call's
    reading_ahead_ = false;
    std::rethrow_exception(std::exchange(error_, nullptr));
  }
  return cursor_;
}

void PrefetchingSource::restore(const std::vector<uint64_t>& state) {
  drop_read_ahead();
  inner_.restore(state);
}

void PrefetchingSource::start_read() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    busy_ = true;
  }
  if (!reader_.joinable()) reader_ = std::thread(&PrefetchingSource::reader_loop, this);
  cv_.notify_all();
  reading_ahead_ = true;
}

void PrefetchingSource::wait_for_read() const {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return !busy_; });
}

void PrefetchingSource::drop_read_ahead() {
  if (!reading_ahead_) return;
  wait_for_read();
  reading_ahead_ = false;
  error_ = nullptr;  // a batch nobody will ask for: its error does not matter
}

void PrefetchingSource::reader_loop() {
  omp_set_num_threads(threads_);  // (a new thread starts from the environment's count)
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return busy_ || quit_; });
    if (quit_) return;
    lock.unlock();
    bool taken = false;
    std::exception_ptr error;
    try {
      cursor_ = inner_.state();
      taken = true;
      inner_.next(ahead_);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    cursor_taken_ = taken;
    error_ = error;
    busy_ = false;
    cv_.notify_all();
  }
}

}  // namespace moesae
