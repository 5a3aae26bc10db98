// moesae parallel: expert parallelism (expert-parallel.md §0-§3). The E experts of a Switch or Scale SAE are
// sharded over the P ranks of a communicator in contiguous blocks (rank r holds [floor(E r / P), floor(E (r+1) / P)),
// so uneven counts are allowed); every rank routes its own share of the batch. A dense TopK SAE's dictionary is
// sharded the same way, as P "experts" (blocks of latents) that every token visits (e = P, weights 1, no router).
//
// One training step (the model side is sae/moe_sae.cpp):
//   dispatch   each token goes once to every rank holding one of its chosen experts (dedup per destination
//              rank), with its router weights and the local index of each slot's expert: two all-to-all-v (float
//              rows u | w, int rows origin row | participants | slots) after one count exchange;
//   keep       the exact distributed global Top-K (parallel/distributed_topk.h), each token's home being its
//              origin rank; tokens whose experts all live on one rank skip it;
//   combine    each serving rank sends back the token's partial reconstruction and its kept entries; the origin
//              sums the partials in ascending rank order (deterministic) and merges the entries;
//   backward   dL/dx^ out on the same routes, dL/du and dL/dw back, summed in rank order.
// Buffers are staged through the host (a host communicator: MPI or local), so the CPU and CUDA backends share it.
#pragma once
#include <vector>

#include "backend/backend.h"
#include "comm/communicator.h"
#include "sae/config.h"
#include "sae/expert_exchange.h"
#include "sae/params.h"

namespace moesae {

class ExpertParallel final : public ExpertExchange {
 public:
  // For a Switch or Scale SAE (its experts) or a TopK SAE (its dictionary, one block per rank).
  ExpertParallel(comm::Communicator& comm, Backend& be, const ModelConfig& model);

  // The first expert of `rank` when E experts are split over `ranks` (rank == ranks gives E).
  static int first_expert_of(int rank, int ranks, int experts);
  int owner(int expert) const;
  int experts() const override { return experts_; }
  int first_expert() const override { return first_expert_of(comm_.rank(), comm_.size(), experts_); }
  int local_experts() const override { return first_expert_of(comm_.rank() + 1, comm_.size(), experts_) - first_expert(); }
  comm::Communicator& communicator() { return comm_; }

  DispatchedTokens dispatch(const Tensor& u, const Tensor& experts, const Tensor& weights) override;
  std::vector<int32_t> keep(const Tensor& scores, const Tensor& ids) override;
  void combine(const Tensor& partial, const Tensor& ids, const Tensor& vals, const Tensor& scores, Tensor out,
               Tensor code_ids, Tensor code_vals) override;
  Tensor dispatch_rows(const Tensor& rows) override;
  void combine_backward(const Tensor& du, const Tensor& dweights, Tensor out_du, Tensor out_dweights) override;

  // Seconds spent in this object's exchanges since construction (packing included), and the bytes this rank sent
  // to other ranks (its own rows stay local).
  double comm_seconds() const { return comm_seconds_; }
  double bytes_sent() const { return bytes_sent_; }
  // Tokens this rank's experts served in the last dispatch.
  int64_t served() const { return recv_total_; }

 private:
  // Rows [n, width] from the origin side to the serving side (forward) or back (reverse), in the step's routes;
  // returns the received rows packed in source-rank order.
  template <typename T>
  std::vector<T> exchange(const std::vector<T>& packed, int64_t width, bool reverse);
  // The rows of origin tensor `t` [B, w] in dispatch order (by destination rank, then token).
  std::vector<float> pack_origin(const Tensor& t);
  // Sum, in rank order, of the rows [n, width] that came back for each origin token, into out [B, width].
  void sum_returned(const std::vector<float>& rows, int64_t width, int64_t col0, int64_t cols, Tensor out);

  comm::Communicator& comm_;
  Backend& be_;
  int experts_, slots_, d_;
  double comm_seconds_ = 0, bytes_sent_ = 0;
  // The step's routes. Origin side: the tokens sent to each rank (ascending), per destination. Serving side:
  // where each received row came from.
  int64_t origin_rows_ = 0;
  std::vector<std::vector<int32_t>> to_rank_;
  std::vector<int64_t> send_counts_, recv_counts_;
  int64_t recv_total_ = 0;
  std::vector<int32_t> recv_source_, recv_row_, recv_participants_;
};

// Checkpoints and evaluation under expert parallelism: the whole of a parameter (or of a tensor shaped like it,
// an Adam moment) on rank 0, assembled from every rank's rows of a sharded one (host tensor; an empty Tensor on
// the other ranks). Replicated parameters are rank 0's copy. Collective over `comm`.
Tensor gather_whole(comm::Communicator& comm, Backend& be, const Param& p, const Tensor& local);
// Every parameter and buffer of `sharded` into the unsharded model `whole` (rank 0; nullptr elsewhere).
void gather_model(comm::Communicator& comm, ParamSet& sharded, Backend& be, ParamSet* whole, Backend* whole_be);

}  // namespace moesae
