#include "comm/local_comm.h"

#include <cstring>

namespace moesae::comm {

std::unique_ptr<Communicator> LocalComm::split(int, int) {
  auto c = std::make_unique<LocalComm>();
  c->set_timeout(timeout());
  return c;
}

void LocalComm::all_reduce_raw(void*, size_t, ElemType, ReduceOp) {}  // one rank: the data is the result

void LocalComm::all_gather_raw(const void* send, size_t n, void* recv, ElemType t) {
  if (n > 0 && send != recv) std::memmove(recv, send, n * elem_size(t));
}

void LocalComm::broadcast_raw(void*, size_t, ElemType, int root) { check_root(root, "broadcast"); }

void LocalComm::exchange_counts_raw(const int64_t* send_counts, int64_t* recv_counts) {
  recv_counts[0] = send_counts[0];
}

void LocalComm::all_to_all_v_raw(const void* send, const std::vector<int64_t>& send_counts,
                                 const std::vector<int64_t>& send_offsets, void* recv,
                                 const std::vector<int64_t>& recv_counts, const std::vector<int64_t>& recv_offsets,
                                 ElemType t) {
  if (send_counts[0] != recv_counts[0])
    fail("all_to_all_v: rank 0 sends ", send_counts[0], " elements to itself but expects ", recv_counts[0]);
  const size_t es = elem_size(t);
  if (send_counts[0] > 0)
    std::memmove(static_cast<char*>(recv) + recv_offsets[0] * es,
                 static_cast<const char*>(send) + send_offsets[0] * es, size_t(send_counts[0]) * es);
}

}  // namespace moesae::comm
