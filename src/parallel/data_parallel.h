// moesae parallel: data parallelism. P processes (ranks) each train an identical replica of the SAE on their own
// share of every batch (train.batch_size / P rows, read from their own shard of the activation file). After the
// backward pass the gradients of every parameter are summed over the ranks (MPI all-reduces added in rank
// order, so every replica applies the bitwise-same update and the replicas never drift apart); the models take
// their batch statistics over the group's batch (sae/batch_group.h). Together, P ranks compute the gradient of
// the 1-rank objective on the union of their rows, up to floating-point summation order.
#pragma once
#include <memory>
#include <vector>

#include "backend/backend.h"
#include "comm/communicator.h"
#include "sae/batch_group.h"
#include "sae/params.h"
#include "sae/sae.h"
#include "train/batch_source.h"

namespace moesae {

class DataParallel final : public BatchGroup {
 public:
  explicit DataParallel(comm::Communicator& comm) : comm_(comm) {}

  int rank() const { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  comm::Communicator& communicator() { return comm_; }

  void sum(double* values, size_t n) override;
  void min(int32_t* values, size_t n) override;
  // True on every rank when `flag` is true on any rank (e.g. a stop request seen by one rank only).
  bool any(bool flag);
  // The gradient of every trainable parameter (or only the replicated ones, or only the expert-sharded ones:
  // Param::sharded()), summed over the ranks.
  enum class Which { All, Replicated, Sharded };
  void all_reduce_gradients(ParamSet& params, Backend& be, Which which = Which::All);
  // The group's batch: every rank's rows [B, d] in rank order (host [P B, d]).
  Tensor gather_batch(const Tensor& host_local);
  // The group batch's statistics from each rank's (losses added, means re-weighted); d = model width.
  SaeStats reduce_stats(const SaeStats& local, int64_t d);
  // Every rank waits here until rank 0 arrives, however long its own work (an evaluation, a checkpoint, a record)
  // takes: the collective watchdog (MOESAE_COMM_TIMEOUT) would otherwise take a busy rank 0 for a dead one.
  void wait_for_rank0();
  static constexpr double kRank0WorkTimeout = 7 * 24 * 3600.0;
  // Seconds spent in this object's collectives since construction (the communication share of a step).
  double comm_seconds() const { return comm_seconds_; }

 private:
  comm::Communicator& comm_;
  std::vector<float> packed_;
  double comm_seconds_ = 0;
};

// This rank's share of a data-parallel stream: next() is the local source's; state() holds every rank's cursor
// (gathered, so the checkpoint rank 0 writes restores all ranks). At one rank both are exactly the local
// source's. restore() of a cursor written at another rank count keeps the local stream at its start, with a
// warning: the parameters and optimizer state resume exactly, the data shards are new.
class DataParallelSource final : public BatchSource {
 public:
  DataParallelSource(BatchSource& local, comm::Communicator& comm) : local_(local), comm_(comm) {}
  int64_t dim() const override { return local_.dim(); }
  void next(Tensor& host_batch) override { local_.next(host_batch); }
  std::vector<uint64_t> state() const override;
  void restore(const std::vector<uint64_t>& state) override;

 private:
  BatchSource& local_;
  comm::Communicator& comm_;
};

}  // namespace moesae
