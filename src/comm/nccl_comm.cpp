// moesae comm: the NCCL communicator. UNTESTED (no GPU on the build machine): compiled and linked in CUDA builds only.
#include "comm/nccl_comm.h"

#if defined(MOESAE_HAVE_CUDA) && __has_include(<nccl.h>)
#define MOESAE_HAVE_NCCL 1
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "comm/mpi_comm.h"
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 28, 3)
#pragma weak ncclAlltoAll
#endif
#endif

namespace moesae::comm {

#ifndef MOESAE_HAVE_NCCL

bool nccl_available() { return false; }

std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm) {
  fail("communicator 'nccl' is not available: this build has no CUDA/NCCL");
}

#else

namespace {

ncclDataType_t nccl_type(ElemType t) {
  switch (t) {
    case ElemType::F32: return ncclFloat32;
    case ElemType::F64: return ncclFloat64;
    case ElemType::I32: return ncclInt32;
    case ElemType::I64: return ncclInt64;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Max: return ncclMax;
    case ReduceOp::Min: return ncclMin;
  }
  return ncclSum;
}

std::string describe(const char* op, size_t n, ElemType t) {
  return std::string(op) + "(" + elem_name(t) + ", n=" + std::to_string(n) + ")";
}

class NcclComm final : public Communicator {
 public:
  explicit NcclComm(MPI_Comm world) : ctl_(world) {
    rank_ = ctl_.rank();
    size_ = ctl_.size();
    ctl_.set_timeout(timeout_s_);
    MPI_Comm node;
    MPI_Comm_split_type(ctl_.mpi_comm(), MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node);
    int local = 0, node_size = 1;
    MPI_Comm_rank(node, &local);
    MPI_Comm_size(node, &node_size);

    // Every rank must know whether all can proceed, else the healthy ones would wait in init for the broken one.
    std::string why;
    int ndev = 0;  // cudaGetDeviceCount leaves it untouched on failure
    cudaError_t ce = cudaGetDeviceCount(&ndev);
    if (ce != cudaSuccess || ndev == 0) {
      why = ce != cudaSuccess ? cudaGetErrorString(ce) : "no CUDA device";
      cudaGetLastError();
    } else if ((ce = cudaSetDevice(local % ndev)) != cudaSuccess) {  // as the CUDA backend picks its device
      why = std::string("cudaSetDevice: ") + cudaGetErrorString(ce);
    }
    // NCCL refuses two ranks on one GPU ("Duplicate GPU detected"): compare the node's PCI bus ids (ranks that each
    // see only their own GPU as device 0 are fine).
    constexpr int kBusId = 32;
    std::vector<char> bus(size_t(node_size) * kBusId, '\0');
    if (why.empty() && cudaDeviceGetPCIBusId(bus.data() + size_t(local) * kBusId, kBusId, local % ndev) != cudaSuccess)
      std::snprintf(bus.data() + size_t(local) * kBusId, kBusId, "unknown-%d", local);
    MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, bus.data(), kBusId, MPI_CHAR, node);
    MPI_Comm_free(&node);
    for (int r = 0; r < node_size && why.empty(); ++r)
      if (r != local && std::strncmp(bus.data() + size_t(r) * kBusId, bus.data() + size_t(local) * kBusId, kBusId) == 0)
        why = "local ranks " + std::to_string(std::min(r, local)) + " and " + std::to_string(std::max(r, local)) +
              " share GPU " + std::string(bus.data() + size_t(local) * kBusId) +
              ": NCCL needs one GPU per rank (start fewer ranks per node, or make more GPUs visible)";
    ncclUniqueId id;
    std::memset(&id, 0, sizeof(id));
    if (rank_ == 0 && why.empty()) {
      ncclResult_t r = ncclGetUniqueId(&id);
      if (r != ncclSuccess) why = std::string("ncclGetUniqueId: ") + ncclGetErrorString(r);
    }
    int64_t ok = why.empty() ? 1 : 0;
    ctl_.all_reduce(&ok, 1, ReduceOp::Min);
    if (!ok)
      fail("nccl communicator: rank ", rank_, ": ", why.empty() ? "another rank has no usable GPU" : why);

    static_assert(sizeof(ncclUniqueId) % sizeof(int64_t) == 0, "ncclUniqueId is not a multiple of 8 bytes");
    int64_t words[sizeof(ncclUniqueId) / sizeof(int64_t)];
    std::memcpy(words, &id, sizeof(id));
    ctl_.broadcast(words, sizeof(words) / sizeof(words[0]), 0);
    std::memcpy(&id, words, sizeof(id));

    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;  // init and group calls return ncclInProgress; we poll with a deadline
    check(ncclCommInitRankConfig(&comm_, size_, id, rank_, &cfg), "comm_init");
    wait_async("comm_init");
    if (cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking) != cudaSuccess)
      fail("nccl communicator: rank ", rank_, ": cudaStreamCreate failed");
  }

  ~NcclComm() override {
    if (comm_) {
      // Finalize (non-blocking) within the deadline; abort instead when it fails or does not finish.
      ncclResult_t st = ncclCommFinalize(comm_);
      const auto t0 = std::chrono::steady_clock::now();
      while (st == ncclInProgress && elapsed_since(t0) <= timeout_s_) {
        if (ncclCommGetAsyncError(comm_, &st) != ncclSuccess) st = ncclSystemError;
        std::this_thread::yield();
      }
      if (st == ncclSuccess)
        ncclCommDestroy(comm_);
      else
        ncclCommAbort(comm_);
    }
    if (stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "nccl"; }
  bool device_buffers() const override { return true; }

  void barrier() override {
    wait_stream("barrier");  // drain our own work, then a host barrier
    ctl_.barrier();
  }

 protected:
  void all_reduce_raw(void* data, size_t n, ElemType t, ReduceOp op) override {
    const std::string what = std::string("all_reduce(") + reduce_op_name(op) + ", " + elem_name(t) +
                             ", n=" + std::to_string(n) + ")";
    if (n == 0) return;
    check(ncclAllReduce(data, data, n, nccl_type(t), nccl_op(op), comm_, stream_), what);
    wait_stream(what);
  }
  void all_gather_raw(const void* send, size_t n, void* recv, ElemType t) override {
    const std::string what = describe("all_gather", n, t);
    if (n == 0) return;
    check(ncclAllGather(send, recv, n, nccl_type(t), comm_, stream_), what);
    wait_stream(what);
  }
  void broadcast_raw(void* data, size_t n, ElemType t, int root) override {
    check_root(root, "broadcast");
    const std::string what = describe("broadcast", n, t);
    if (n == 0) return;
    check(ncclBroadcast(data, data, n, nccl_type(t), root, comm_, stream_), what);
    wait_stream(what);
  }
  void exchange_counts_raw(const int64_t* send_counts, int64_t* recv_counts) override {
    std::vector<int64_t> sc(send_counts, send_counts + size_);
    std::vector<int64_t> rc = ctl_.exchange_counts(sc);
    std::memcpy(recv_counts, rc.data(), rc.size() * sizeof(int64_t));
  }
  void all_to_all_v_raw(const void* send, const std::vector<int64_t>& send_counts,
                        const std::vector<int64_t>& send_offsets, void* recv, const std::vector<int64_t>& recv_counts,
                        const std::vector<int64_t>& recv_offsets, ElemType t) override {
    int64_t total = 0;
    for (int64_t c : send_counts) total += c;
    const std::string what = describe("all_to_all_v", size_t(total), t);
    const size_t es = elem_size(t);
    const ncclDataType_t type = nccl_type(t);
    check(ncclGroupStart(), what);
    for (int r = 0; r < size_; ++r) {
      const size_t i = size_t(r);
      if (send_counts[i] > 0)
        check(ncclSend(static_cast<const char*>(send) + size_t(send_offsets[i]) * es, size_t(send_counts[i]), type, r,
                       comm_, stream_),
              what);
      if (recv_counts[i] > 0)
        check(ncclRecv(static_cast<char*>(recv) + size_t(recv_offsets[i]) * es, size_t(recv_counts[i]), type, r,
                       comm_, stream_),
              what);
    }
    check(ncclGroupEnd(), what);
    wait_stream(what);
  }
  void all_to_all_raw(const void* send, size_t n, void* recv, ElemType t) override {
    const std::string what = describe("all_to_all", n * size_t(size_), t);
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 28, 3)
    if (has_alltoall()) {
      check(ncclAlltoAll(send, recv, n, nccl_type(t), comm_, stream_), what);
      wait_stream(what);
      return;
    }
#endif
    Communicator::all_to_all_raw(send, n, recv, t);  // grouped send/recv
  }

 private:
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 28, 3)
  // ncclAlltoAll is new in NCCL 2.28.3: the library loaded at run time may be older than the header (the symbol is
  // declared weak below, so an older library leaves it null instead of failing at load or first call).
  static bool has_alltoall() {
    static const bool ok = [] {
      int v = 0;
      return &ncclAlltoAll != nullptr && ncclGetVersion(&v) == ncclSuccess && v >= NCCL_VERSION(2, 28, 3);
    }();
    return ok;
  }
#endif

  // Accepts ncclSuccess and ncclInProgress (non-blocking communicator); anything else aborts the communicator.
  void check(ncclResult_t r, const std::string& what) {
    if (r == ncclSuccess || r == ncclInProgress) return;
    fail_and_abort(r, what);
  }

  [[noreturn]] void fail_and_abort(ncclResult_t r, const std::string& what) {
    std::string last = comm_ ? ncclGetLastError(comm_) : "";
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    fail("nccl: collective ", what, " failed on rank ", rank_, ": ", ncclGetErrorString(r),
         last.empty() ? "" : " (" + last + ")");
  }

  double elapsed_since(std::chrono::steady_clock::time_point t0) const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

  void on_timeout(const std::string& what) {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    abort_on_timeout(rank_, what, timeout_s_);
  }

  // Polls the communicator's async state until it leaves ncclInProgress (non-blocking init / group calls).
  void wait_async(const std::string& what) {
    if (!comm_) fail("nccl: collective ", what, " on rank ", rank_, ": the communicator was aborted");
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      ncclResult_t st = ncclInProgress;
      ncclResult_t r = ncclCommGetAsyncError(comm_, &st);
      if (r != ncclSuccess) fail_and_abort(r, what);
      if (st == ncclSuccess) return;
      if (st != ncclInProgress) fail_and_abort(st, what);
      if (elapsed_since(t0) > timeout_s_) on_timeout(what);
      std::this_thread::yield();
    }
  }

  // The nccl-tests watchdog: poll the stream and the async error; never block in cudaStreamSynchronize.
  void wait_stream(const std::string& what) {
    wait_async(what);
    const auto t0 = std::chrono::steady_clock::now();
    for (;;) {
      cudaError_t ce = cudaStreamQuery(stream_);
      if (ce == cudaSuccess) return;
      if (ce != cudaErrorNotReady) {
        if (comm_) ncclCommAbort(comm_);
        comm_ = nullptr;
        fail("nccl: collective ", what, " failed on rank ", rank_, ": CUDA error ", cudaGetErrorString(ce));
      }
      ncclResult_t st = ncclSuccess;
      ncclResult_t r = ncclCommGetAsyncError(comm_, &st);
      if (r != ncclSuccess) fail_and_abort(r, what);
      if (st != ncclSuccess && st != ncclInProgress) fail_and_abort(st, what);
      if (elapsed_since(t0) > timeout_s_) on_timeout(what);
      std::this_thread::yield();
    }
  }

  MpiComm ctl_;  // control plane: bootstrap, count exchange, host barrier
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  int rank_ = 0, size_ = 1;
};

}  // namespace

bool nccl_available() { return true; }

std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm world) { return std::make_unique<NcclComm>(world); }

#endif

}  // namespace moesae::comm
