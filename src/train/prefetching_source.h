// moesae training: a BatchSource that reads the next batch on a background thread while the current step runs.
// With the CUDA backend the host mostly waits for the device during a step; reading and shuffling the next batch
// (several milliseconds for a batch of 8192 x 768, see docs/performance.md) then costs no step time.
//
// The batches and the resume cursor are exactly the wrapped source's: state() is the cursor after the batches
// handed out (the one read ahead is not counted), restore() drops the batch read ahead. An error of the background
// read (a NaN in the data, a missing file) is thrown by the next() that would have returned that batch. The wrapped
// source is used from one thread at a time (the reader, or the caller while no read is in flight); reading files
// next to it on other threads needs a thread-safe HDF5 (h5::library_is_threadsafe).
#pragma once
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include "train/batch_source.h"

namespace moesae {

class PrefetchingSource final : public BatchSource {
 public:
  // `buffer(rows, cols)` allocates the host batch the reader fills (e.g. Backend::host_buffer, page-locked on CUDA),
  // once: next() hands it out by swapping it with the caller's tensor, which must keep its shape. `threads`: OpenMP
  // threads of the reader's parallel copies (0: as many as the caller's); 1 where the step itself keeps the cores
  // busy (the CPU backend), or the two fight over them.
  PrefetchingSource(BatchSource& inner, std::function<Tensor(int64_t, int64_t)> buffer, int threads = 0);
  ~PrefetchingSource() override;
  PrefetchingSource(const PrefetchingSource&) = delete;
  PrefetchingSource& operator=(const PrefetchingSource&) = delete;

  int64_t dim() const override { return inner_.dim(); }
  void next(Tensor& host_batch) override;
  std::vector<uint64_t> state() const override;
  void restore(const std::vector<uint64_t>& state) override;

 private:
  void start_read();            // the reader reads the next batch into ahead_
  void wait_for_read() const;   // until the reader is idle
  void drop_read_ahead();       // waits for the reader and forgets its batch (and its error)
  void reader_loop();

  BatchSource& inner_;
  std::function<Tensor(int64_t, int64_t)> buffer_;
  Tensor ahead_;                  // the batch being read (or read) ahead
  std::vector<uint64_t> cursor_;  // the inner cursor before that batch
  mutable bool reading_ahead_ = false;  // a read was started and its batch not handed out (the caller's thread only)
  int threads_;                         // OpenMP threads of the reader's parallel loops
  // One reader thread for the source's life (a thread per batch would also start a new OpenMP team for the
  // stream's parallel copies each time), and what it shares with the caller, under mu_.
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  bool busy_ = false, quit_ = false, cursor_taken_ = false;
  mutable std::exception_ptr error_;
  std::thread reader_;
};

}  // namespace moesae
