// moesae comm: LocalComm, the 1-rank communicator. Every collective is a copy (or nothing); host buffers.
#pragma once
#include "comm/communicator.h"

namespace moesae::comm {

class LocalComm final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string name() const override { return "local"; }
  void barrier() override {}
  std::unique_ptr<Communicator> split(int color, int key) override;

 protected:
  void all_reduce_raw(void* data, size_t n, ElemType t, ReduceOp op) override;
  void all_gather_raw(const void* send, size_t n, void* recv, ElemType t) override;
  void broadcast_raw(void* data, size_t n, ElemType t, int root) override;
  void exchange_counts_raw(const int64_t* send_counts, int64_t* recv_counts) override;
  void all_to_all_v_raw(const void* send, const std::vector<int64_t>& send_counts,
                        const std::vector<int64_t>& send_offsets, void* recv, const std::vector<int64_t>& recv_counts,
                        const std::vector<int64_t>& recv_offsets, ElemType t) override;
};

}  // namespace moesae::comm
