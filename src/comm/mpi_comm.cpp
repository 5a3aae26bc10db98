#include "comm/mpi_comm.h"

#include <sched.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <thread>

namespace moesae::comm {

namespace {

bool mpi_is_up() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

void finalize_at_exit() {
  if (mpi_is_up()) MPI_Finalize();
}

MPI_Datatype mpi_type(ElemType t) {
  switch (t) {
    case ElemType::F32: return MPI_FLOAT;
    case ElemType::F64: return MPI_DOUBLE;
    case ElemType::I32: return MPI_INT32_T;
    case ElemType::I64: return MPI_INT64_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return MPI_SUM;
    case ReduceOp::Max: return MPI_MAX;
    case ReduceOp::Min: return MPI_MIN;
  }
  return MPI_OP_NULL;
}

int as_int(int64_t v, const std::string& what) {
  if (v < 0 || v > INT_MAX) fail("mpi: ", what, ": count ", v, " does not fit MPI's int counts");
  return int(v);
}

std::string describe(const char* op, size_t n, ElemType t) {
  return std::string(op) + "(" + elem_name(t) + ", n=" + std::to_string(n) + ")";
}

}  // namespace

void mpi_init() {
  int init = 0;
  MPI_Initialized(&init);
  if (init) return;
  int provided = 0;
  if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
    fail("mpi: MPI_Init_thread failed");
  std::atexit(finalize_at_exit);
}

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int init = 0;
  MPI_Initialized(&init);
  if (init) return;
  int provided = 0;
  if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) fail("mpi: MPI_Init_thread failed");
  owns_ = true;
}

MpiRuntime::~MpiRuntime() {
  if (owns_ && mpi_is_up()) MPI_Finalize();
}

MpiComm::MpiComm(MPI_Comm parent) {
  if (!mpi_is_up()) fail("mpi: MPI is not initialised (call comm::mpi_init() or hold an MpiRuntime)");
  MPI_Comm_rank(parent, &rank_);
  MPI_Comm_size(parent, &size_);
  MPI_Request req;
  check_rc(MPI_Comm_idup(parent, &comm_, &req), "comm_dup");
  wait(&req, "comm_dup");
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
}

std::unique_ptr<Communicator> MpiComm::split(int color, int key) {
  MPI_Comm part = MPI_COMM_NULL;
  check_rc(MPI_Comm_split(comm_, color, key, &part), "comm_split");  // blocking: MPI has no non-blocking split
  std::unique_ptr<MpiComm> c;
  try {
    c = std::make_unique<MpiComm>(part);  // a duplicate with the watchdog's error handling
  } catch (...) {
    MPI_Comm_free(&part);
    throw;
  }
  MPI_Comm_free(&part);
  c->set_timeout(timeout());
  return c;
}

MpiComm::~MpiComm() {
  if (comm_ != MPI_COMM_NULL && mpi_is_up()) MPI_Comm_free(&comm_);
}

void MpiComm::check_rc(int rc, const std::string& collective) const {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  fail("mpi: collective ", collective, " failed on rank ", rank_, ": ", std::string(msg, size_t(len)));
}

void MpiComm::wait(MPI_Request* req, const std::string& collective) const {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  for (unsigned spin = 0;; ++spin) {
    int done = 0;
    check_rc(MPI_Test(req, &done, MPI_STATUS_IGNORE), collective);
    if (done) return;
    if (spin < 64) continue;  // short messages complete within a few polls
    const double waited = std::chrono::duration<double>(clock::now() - t0).count();
    if (waited > timeout_s_) abort_on_timeout(rank_, collective, timeout_s_);
    if (waited < 0.5)
      sched_yield();  // stay responsive; yields the core to oversubscribed peers
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // a long wait: stop burning the core
  }
}

void MpiComm::barrier() {
  MPI_Request req;
  check_rc(MPI_Ibarrier(comm_, &req), "barrier");
  wait(&req, "barrier");
}

template <typename T>
void MpiComm::sum_in_rank_order(T* data, size_t n, const std::string& what) {
  const size_t p = size_t(size_);
  const MPI_Datatype type = mpi_type(ElemOf<T>::value);
  MPI_Request req;
  if (n <= kGatherSumMax) {  // one round: everyone gets everything and sums it in rank order
    std::vector<T> all(n * p);
    const int cnt = as_int(int64_t(n), what);
    check_rc(MPI_Iallgather(data, cnt, type, all.data(), cnt, type, comm_, &req), what);
    wait(&req, what);
    for (size_t i = 0; i < n; ++i) {
      T acc = all[i];
      for (size_t r = 1; r < p; ++r) acc += all[r * n + i];
      data[i] = acc;
    }
    return;
  }
  // Reduce-scatter by rank-owned chunks (bounds n*r/P), each summed in rank order by its owner, then all-gather.
  std::vector<int> bound(p + 1), len(p), zero(p, 0), mine_cnt(p), mine_off(p);
  for (size_t r = 0; r <= p; ++r) bound[r] = as_int(int64_t(n * r / p), what);
  for (size_t r = 0; r < p; ++r) len[r] = bound[r + 1] - bound[r];
  const int L = len[size_t(rank_)];
  for (size_t r = 0; r < p; ++r) {
    mine_cnt[r] = L;
    mine_off[r] = as_int(int64_t(r) * L, what);
  }
  std::vector<T> pieces(size_t(L) * p);
  check_rc(MPI_Ialltoallv(data, len.data(), bound.data(), type, pieces.data(), mine_cnt.data(), mine_off.data(), type,
                          comm_, &req),
           what);
  wait(&req, what);
  T* mine = data + bound[size_t(rank_)];
  for (int i = 0; i < L; ++i) {
    T acc = pieces[size_t(i)];
    for (size_t r = 1; r < p; ++r) acc += pieces[r * size_t(L) + size_t(i)];
    mine[i] = acc;
  }
  check_rc(MPI_Iallgatherv(MPI_IN_PLACE, 0, type, data, len.data(), bound.data(), type, comm_, &req), what);
  wait(&req, what);
}

void MpiComm::all_reduce_raw(void* data, size_t n, ElemType t, ReduceOp op) {
  const std::string what = std::string("all_reduce(") + reduce_op_name(op) + ", " + elem_name(t) +
                           ", n=" + std::to_string(n) + ")";
  if (n == 0) return;
  if (op == ReduceOp::Sum && t == ElemType::F32) return sum_in_rank_order(static_cast<float*>(data), n, what);
  if (op == ReduceOp::Sum && t == ElemType::F64) return sum_in_rank_order(static_cast<double*>(data), n, what);
  MPI_Request req;
  check_rc(MPI_Iallreduce(MPI_IN_PLACE, data, as_int(int64_t(n), what), mpi_type(t), mpi_op(op), comm_, &req), what);
  wait(&req, what);
}

void MpiComm::all_gather_raw(const void* send, size_t n, void* recv, ElemType t) {
  const std::string what = describe("all_gather", n, t);
  const int cnt = as_int(int64_t(n), what);
  as_int(int64_t(n) * size_, what);
  MPI_Request req;
  check_rc(MPI_Iallgather(send, cnt, mpi_type(t), recv, cnt, mpi_type(t), comm_, &req), what);
  wait(&req, what);
}

void MpiComm::broadcast_raw(void* data, size_t n, ElemType t, int root) {
  check_root(root, "broadcast");
  const std::string what = describe("broadcast", n, t);
  MPI_Request req;
  check_rc(MPI_Ibcast(data, as_int(int64_t(n), what), mpi_type(t), root, comm_, &req), what);
  wait(&req, what);
}

void MpiComm::exchange_counts_raw(const int64_t* send_counts, int64_t* recv_counts) {
  MPI_Request req;
  check_rc(MPI_Ialltoall(send_counts, 1, MPI_INT64_T, recv_counts, 1, MPI_INT64_T, comm_, &req),
           "all_to_all_v(count exchange)");
  wait(&req, "all_to_all_v(count exchange)");
}

void MpiComm::all_to_all_v_raw(const void* send, const std::vector<int64_t>& send_counts,
                               const std::vector<int64_t>& send_offsets, void* recv,
                               const std::vector<int64_t>& recv_counts, const std::vector<int64_t>& recv_offsets,
                               ElemType t) {
  int64_t total = 0;
  for (int64_t c : send_counts) total += c;
  const std::string what = describe("all_to_all_v", size_t(total), t);
  const size_t p = size_t(size_);
  std::vector<int> sc(p), so(p), rc(p), ro(p);
  for (size_t r = 0; r < p; ++r) {
    sc[r] = as_int(send_counts[r], what);
    so[r] = as_int(send_offsets[r], what);
    rc[r] = as_int(recv_counts[r], what);
    ro[r] = as_int(recv_offsets[r], what);
  }
  MPI_Request req;
  check_rc(MPI_Ialltoallv(send, sc.data(), so.data(), mpi_type(t), recv, rc.data(), ro.data(), mpi_type(t), comm_,
                          &req),
           what);
  wait(&req, what);
}

void MpiComm::all_to_all_raw(const void* send, size_t n, void* recv, ElemType t) {
  const std::string what = describe("all_to_all", n * size_t(size_), t);
  MPI_Request req;
  check_rc(MPI_Ialltoall(send, as_int(int64_t(n), what), mpi_type(t), recv, as_int(int64_t(n), what), mpi_type(t),
                         comm_, &req),
           what);
  wait(&req, what);
}

}  // namespace moesae::comm
