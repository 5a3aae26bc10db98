// moesae models: the MoE router. p = softmax(W_r (x - b_r) [+ b_g]) (Section 2.2.1), T = top-e experts of p,
// expert weights w_i per config (p_i: Eq. 2.4; double softmax or uniform: reference code / heaviside), and the
// load-balancing loss L_lb = E * sum_i f_i P_i (Eq. 2.2).
#pragma once
#include <vector>

#include "core/rng.h"

#include "sae/batch_group.h"
#include "sae/config.h"
#include "sae/params.h"

namespace moesae {

struct Routing {
  Tensor experts;  // i32 [B, e], each row sorted by ascending expert id
  Tensor weights;  // f32 [B, e], w for the expert in the same slot
  ExpertGroups groups;
  std::vector<double> fraction;  // f_i (per lb_assignment), sums to 1
  std::vector<double> topE_fraction;  // fraction of (token, slot) pairs routed to each expert (always top-e)
  double lb = 0;                 // E * sum_i f_i P_i
};

class Router {
 public:
  Router(const ModelConfig& config, Backend& be, ParamSet& params);
  void init(Rng& rng);
  Routing forward(const Tensor& x);
  // dweights: dL/dw [B, e] (slot order of forward's experts). lb_weight: the coefficient of L_lb in the loss.
  void backward(const Tensor& dweights, double lb_weight);
  // Data parallelism: f_i and P_i over the group's batch (sae/batch_group.h).
  void set_batch_group(BatchGroup* group) { group_ = group; }

 private:
  const ModelConfig& cfg_;
  Backend& be_;
  Param *w_r_, *b_r_, *b_g_ = nullptr;
  Tensor ur_, probs_, pvals_, experts_, weights_;
  std::vector<double> fraction_;
  BatchGroup* group_ = nullptr;
  int64_t group_rows_ = 0;  // tokens of the group's batch in the last forward
};

}  // namespace moesae
