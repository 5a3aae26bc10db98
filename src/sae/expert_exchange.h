// moesae models: expert parallelism as a Mixture-of-Experts model sees it. The experts are sharded over the
// ranks of an expert-parallel group (rank r holds a contiguous block of experts); every rank routes its own
// tokens, sends each token once to every rank holding one of its chosen experts (dispatch), runs its experts on
// the tokens it received, takes part in the exact distributed global Top-K (Eq. 2.3 over the candidates of
// several ranks; parallel/distributed_topk.h), decodes the kept latents and sends the token's partial
// reconstruction back (combine). Backward reuses the step's dispatch: dL/dx^ goes out on the same routes, dL/du
// and dL/dw come back. Implemented over a Communicator in parallel/expert_parallel.h; the models never see it.
//
// Tensors are the model's backend tensors. "Origin" rows are this rank's own tokens [B, ...]; "received" rows
// [M, ...] are the tokens dispatched to this rank, in the order dispatch() returned them.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"

namespace moesae {

struct DispatchedTokens {
  Tensor u;        // [M, d]: x - b_pre of each received token
  Tensor experts;  // i32 [M, e]: the LOCAL index (expert id - first_expert) of each slot held here, -1 elsewhere
  Tensor weights;  // [M, e]: the router weight w of each slot held here, 1 in the others
};

class ExpertExchange {
 public:
  virtual ~ExpertExchange() = default;
  // The model's E (for a TopK SAE with a sharded dictionary: the number of blocks, one per rank), and this rank's
  // experts: [first_expert, first_expert + local_experts).
  virtual int experts() const = 0;
  virtual int first_expert() const = 0;
  virtual int local_experts() const = 0;
  // Sends each origin token (u [B, d], experts/weights [B, e] from the router, slots sorted by expert id) to the
  // ranks holding its experts, once per rank. Starts a step: the routes are kept for the calls below.
  virtual DispatchedTokens dispatch(const Tensor& u, const Tensor& experts, const Tensor& weights) = 0;
  // The distributed global Top-K: scores/ids [M, K] are each received token's local Top-K sorted under the total
  // order (score desc, GLOBAL latent id asc, ids -1 last). Returns, per received token, the length of the prefix
  // that belongs to the token's global Top-K.
  virtual std::vector<int32_t> keep(const Tensor& scores, const Tensor& ids) = 0;
  // Combine: each received token's partial reconstruction [M, d] and kept entries (GLOBAL ids -1-padded, values z
  // and scores [M, K]) go back to the token's origin. out [B, d] = the partials summed in rank order; code_ids /
  // code_vals [B, K] = the token's kept entries of all ranks merged under the total order.
  virtual void combine(const Tensor& partial, const Tensor& ids, const Tensor& vals, const Tensor& scores, Tensor out,
                       Tensor code_ids, Tensor code_vals) = 0;
  // Backward: origin rows [B, d] (dL/dx^) to the received tokens [M, d], on the forward's routes.
  virtual Tensor dispatch_rows(const Tensor& rows) = 0;
  // Backward: per received token dL/du [M, d] and dL/dw [M, e] back to the origin, summed in rank order.
  virtual void combine_backward(const Tensor& du, const Tensor& dweights, Tensor out_du, Tensor out_dweights) = 0;
};

// The models' side of the distributed Top-K. ids/vals [M, K]: each served token's local Top-K (LOCAL latent ids,
// -1 for none; values z), scores: what it was ranked by (vals itself, or w z). Asks the exchange for the kept
// prefixes and clears the rest in place (id -1, value 0; with slots, an entry past the prefix takes the slot of
// the token's first entry, so per-slot gathers stay in range). Returns the GLOBAL ids (local + first_latent).
Tensor keep_global_topk(Backend& be, ExpertExchange& ex, int64_t first_latent, const Tensor& scores, Tensor ids,
                        Tensor vals, Tensor* slots = nullptr);

}  // namespace moesae
