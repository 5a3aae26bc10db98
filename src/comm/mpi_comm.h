// moesae comm: MpiComm, the MPI communicator on host buffers (the CPU path), and MPI start-up.
//
// Watchdog: every collective is issued non-blocking (MPI_Iallreduce, MPI_Iallgather, MPI_Ibcast, MPI_Ibarrier,
// MPI_Ialltoall, MPI_Ialltoallv) and completed by polling MPI_Test against a deadline of timeout() seconds
// (MOESAE_COMM_TIMEOUT, default 300). Past the deadline the rank prints
//   error: rank R: collective <name> did not complete within T s (a rank died or hangs)
// and calls MPI_Abort, so a dead or hung peer never leaves the job waiting forever. MPI errors (the communicator
// uses MPI_ERRORS_RETURN) become a moesae::Error naming the collective.
//
// Determinism: MPI_Allreduce does not promise a summation order (Open MPI picks the algorithm by message size and
// communicator size, so results may change with either). Floating-point SUM all-reduces therefore do not use it:
// every rank's contribution is summed in rank order (x0 + x1 + ... + x_{P-1}, left to right), which is bitwise
// identical on every rank and equal to a sequential sum. For n <= kGatherSumMax elements this is an all-gather and
// a local sum (one round); above it a reduce-scatter (MPI_Ialltoallv of 1/P chunks, summed in rank order by the
// chunk's owner) followed by an MPI_Iallgatherv: the same traffic as a ring all-reduce. MAX/MIN and integer sums
// are exact in any order and use MPI_Iallreduce.
#pragma once
#include "comm/communicator.h"
#include "comm/mpi_header.h"

namespace moesae::comm {

// Initialises MPI (MPI_Init_thread with MPI_THREAD_FUNNELED) unless it already is, and registers MPI_Finalize at
// exit. Idempotent. Use this, or an MpiRuntime in main, before creating an MpiComm.
void mpi_init();

// RAII alternative for main(): initialises MPI if needed and finalises it on destruction if it initialised it.
class MpiRuntime {
 public:
  MpiRuntime(int* argc = nullptr, char*** argv = nullptr);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

 private:
  bool owns_ = false;
};

class MpiComm final : public Communicator {
 public:
  // Duplicates `parent` (MPI must be initialised); the duplicate reports errors instead of aborting.
  explicit MpiComm(MPI_Comm parent = MPI_COMM_WORLD);
  ~MpiComm() override;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }
  void barrier() override;
  std::unique_ptr<Communicator> split(int color, int key) override;
  MPI_Comm mpi_comm() const { return comm_; }

  // Completes `req` by polling MPI_Test; aborts the job with the timeout error naming `collective` past the deadline.
  void wait(MPI_Request* req, const std::string& collective) const;

  static constexpr size_t kGatherSumMax = 4096;

 protected:
  void all_reduce_raw(void* data, size_t n, ElemType t, ReduceOp op) override;
  void all_gather_raw(const void* send, size_t n, void* recv, ElemType t) override;
  void broadcast_raw(void* data, size_t n, ElemType t, int root) override;
  void exchange_counts_raw(const int64_t* send_counts, int64_t* recv_counts) override;
  void all_to_all_v_raw(const void* send, const std::vector<int64_t>& send_counts,
                        const std::vector<int64_t>& send_offsets, void* recv, const std::vector<int64_t>& recv_counts,
                        const std::vector<int64_t>& recv_offsets, ElemType t) override;
  void all_to_all_raw(const void* send, size_t n, void* recv, ElemType t) override;

 private:
  template <typename T>
  void sum_in_rank_order(T* data, size_t n, const std::string& what);
  void check_rc(int rc, const std::string& collective) const;

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
};

}  // namespace moesae::comm
