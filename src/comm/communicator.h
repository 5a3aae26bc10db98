// moesae comm: the Communicator interface. One interface, three implementations:
//   LocalComm (1 rank, copies), MpiComm (host buffers, the CPU path), NcclComm (device buffers; CUDA builds only).
// Every operation is collective: all ranks call it in the same order with matching arguments.
//
// Failures never hang silently. A collective that does not complete within the timeout (env MOESAE_COMM_TIMEOUT,
// seconds, default 300) prints "error: rank R: collective <name> did not complete within T s (a rank died or
// hangs)" to stderr and aborts the whole job (MPI_Abort / ncclCommAbort + MPI_Abort).
//
// Layer: comm/ sits above core/ and below parallel/; nothing above it knows how bytes move.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace moesae::comm {

enum class ReduceOp { Sum, Max, Min };
// Element types the collectives move. (Separate from moesae::DType, which is the tensor element type.)
enum class ElemType { F32, F64, I32, I64 };

inline size_t elem_size(ElemType t) { return (t == ElemType::F32 || t == ElemType::I32) ? 4 : 8; }
const char* elem_name(ElemType t);
const char* reduce_op_name(ReduceOp op);

template <typename T> struct ElemOf;
template <> struct ElemOf<float> { static constexpr ElemType value = ElemType::F32; };
template <> struct ElemOf<double> { static constexpr ElemType value = ElemType::F64; };
template <> struct ElemOf<int32_t> { static constexpr ElemType value = ElemType::I32; };
template <> struct ElemOf<int64_t> { static constexpr ElemType value = ElemType::I64; };

// Seconds a collective may take before the job is aborted: MOESAE_COMM_TIMEOUT if set (a positive number),
// otherwise 300. A malformed value is an Error.
double timeout_from_env();

// Prints the one-line timeout error for `collective` and terminates the job (MPI_Abort when MPI is initialized,
// else _exit). Never returns.
[[noreturn]] void abort_on_timeout(int rank, const std::string& collective, double seconds);
// After an error has been reported on this rank of a multi-rank MPI job: aborts the whole job (MPI_Abort), so that
// no other rank waits for this one in a collective. Returns without doing anything when MPI is not running or the
// job has one rank.
void abort_job_after_error(int exit_code);

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // "local", "mpi", "nccl"
  // true when the data pointers given to the collectives must be device (CUDA) pointers (NCCL).
  virtual bool device_buffers() const { return false; }

  double timeout() const { return timeout_s_; }
  void set_timeout(double seconds);

  // In place: data[0..n) becomes the reduction over ranks. Floating-point sums are deterministic on the MPI and
  // local backends (summed in rank order, bitwise identical on every rank and equal to a sequential rank-order sum);
  // see mpi_comm.h. NCCL sums follow NCCL's ring/tree order (identical on all ranks, not rank order).
  void all_reduce(float* data, size_t n, ReduceOp op) { all_reduce_raw(data, n, ElemType::F32, op); }
  void all_reduce(double* data, size_t n, ReduceOp op) { all_reduce_raw(data, n, ElemType::F64, op); }
  void all_reduce(int32_t* data, size_t n, ReduceOp op) { all_reduce_raw(data, n, ElemType::I32, op); }
  void all_reduce(int64_t* data, size_t n, ReduceOp op) { all_reduce_raw(data, n, ElemType::I64, op); }

  // recv[r*n .. r*n+n) = rank r's send[0..n). recv holds size()*n elements; send may not alias recv.
  template <typename T>
  void all_gather(const T* send, size_t n, T* recv) {
    all_gather_raw(send, n, recv, ElemOf<T>::value);
  }
  // data[0..n) of `root` is copied to every rank.
  template <typename T>
  void broadcast(T* data, size_t n, int root) {
    broadcast_raw(data, n, ElemOf<T>::value, root);
  }
  virtual void barrier() = 0;
  // A communicator of the ranks that pass the same `color`, ranked by `key` (then by rank); collective. For the
  // 2-D layouts (expert-parallel groups x data-parallel replicas). The new one inherits timeout().
  virtual std::unique_ptr<Communicator> split(int color, int key);

  // Count exchange: returns recv_counts, where recv_counts[s] = send_counts[rank()] of rank s (host vectors on every
  // backend). send_counts has size() entries, all >= 0.
  std::vector<int64_t> exchange_counts(const std::vector<int64_t>& send_counts);

  // All-to-all-v with known counts (after exchange_counts): the send_counts[d] elements at send + send_offsets[d]
  // go to rank d, and the recv_counts[s] elements from rank s land at recv + recv_offsets[s]. Offsets are in
  // elements; the regions need not be packed but must not overlap on the receive side.
  template <typename T>
  void all_to_all_v(const T* send, const std::vector<int64_t>& send_counts, const std::vector<int64_t>& send_offsets,
                    T* recv, const std::vector<int64_t>& recv_counts, const std::vector<int64_t>& recv_offsets) {
    check_a2a_args(send_counts, send_offsets, recv_counts, recv_offsets);
    all_to_all_v_raw(send, send_counts, send_offsets, recv, recv_counts, recv_offsets, ElemOf<T>::value);
  }
  // All-to-all-v with the count exchange inside, into a caller-owned receive buffer of `recv_capacity` elements
  // (device memory on NCCL). Received rows are packed in source-rank order. Returns recv_counts.
  template <typename T>
  std::vector<int64_t> all_to_all_v(const T* send, const std::vector<int64_t>& send_counts,
                                    const std::vector<int64_t>& send_offsets, T* recv, size_t recv_capacity) {
    std::vector<int64_t> recv_counts = exchange_counts(send_counts);
    std::vector<int64_t> recv_offsets = packed_offsets(recv_counts);
    const int64_t total = recv_offsets.empty() ? 0 : recv_offsets.back() + recv_counts.back();
    if (total > int64_t(recv_capacity))
      fail("all_to_all_v: receive buffer holds ", recv_capacity, " elements but ", total, " arrive (rank ", rank(),
           ")");
    all_to_all_v(send, send_counts, send_offsets, recv, recv_counts, recv_offsets);
    return recv_counts;
  }
  // Host buffers only: the count exchange inside, the received elements returned packed in source-rank order.
  template <typename T>
  std::vector<T> all_to_all_v(const T* send, const std::vector<int64_t>& send_counts,
                              const std::vector<int64_t>& send_offsets, std::vector<int64_t>* recv_counts_out) {
    if (device_buffers()) fail("all_to_all_v: the ", name(), " communicator needs a device receive buffer");
    std::vector<int64_t> recv_counts = exchange_counts(send_counts);
    std::vector<int64_t> recv_offsets = packed_offsets(recv_counts);
    std::vector<T> recv(size_t(recv_offsets.empty() ? 0 : recv_offsets.back() + recv_counts.back()));
    all_to_all_v(send, send_counts, send_offsets, recv.data(), recv_counts, recv_offsets);
    if (recv_counts_out) *recv_counts_out = std::move(recv_counts);
    return recv;
  }

  // All-to-all with equal counts: send[d*n .. d*n+n) goes to rank d, and recv[s*n .. s*n+n) comes from rank s
  // (size()*n elements each; no count exchange). ncclAlltoAll on NCCL, MPI_Ialltoall on MPI.
  template <typename T>
  void all_to_all(const T* send, size_t n, T* recv) {
    all_to_all_raw(send, n, recv, ElemOf<T>::value);
  }

  // Exclusive prefix sum: the offsets of packed regions of the given counts.
  static std::vector<int64_t> packed_offsets(const std::vector<int64_t>& counts);

 protected:
  Communicator();
  virtual void all_reduce_raw(void* data, size_t n, ElemType t, ReduceOp op) = 0;
  virtual void all_gather_raw(const void* send, size_t n, void* recv, ElemType t) = 0;
  virtual void broadcast_raw(void* data, size_t n, ElemType t, int root) = 0;
  // Host-side count exchange (an all-to-all of one int64 per rank pair).
  virtual void exchange_counts_raw(const int64_t* send_counts, int64_t* recv_counts) = 0;
  virtual void all_to_all_v_raw(const void* send, const std::vector<int64_t>& send_counts,
                                const std::vector<int64_t>& send_offsets, void* recv,
                                const std::vector<int64_t>& recv_counts, const std::vector<int64_t>& recv_offsets,
                                ElemType t) = 0;
  // Default: all_to_all_v_raw with equal counts and packed offsets.
  virtual void all_to_all_raw(const void* send, size_t n, void* recv, ElemType t);
  void check_a2a_args(const std::vector<int64_t>& send_counts, const std::vector<int64_t>& send_offsets,
                      const std::vector<int64_t>& recv_counts, const std::vector<int64_t>& recv_offsets) const;
  void check_root(int root, const char* op) const;

  double timeout_s_;
};

// kind: "local" (1 rank), "mpi" (initialises MPI if needed, world communicator), "nccl" (CUDA builds; bootstrapped
// over MPI), or "auto" (mpi when launched by mpirun/srun with more than one rank, else local). Unknown kinds and
// backends missing from this build are an Error naming the choices.
std::unique_ptr<Communicator> make_communicator(const std::string& kind);

}  // namespace moesae::comm
