// moesae models: the dense TopK SAE (Gao et al. 2024): z = TopK(ReLU(W_enc (x - b_pre) [+ b_enc])),
// x^ = W_dec^T z + b_pre, with AuxK on dead latents.
// With a dictionary sharded over ranks (sae/expert_exchange.h, each rank one block of latents; every rank's tokens
// visit every rank) the Top-K and AuxK's top-k_aux are the exact distributed selections and x^ and e^ are summed
// from the ranks' partial decodes; without it, the 1-process model.
#pragma once
#include "sae/expert_exchange.h"
#include "sae/sae.h"

namespace moesae {

class TopKSae final : public Sae {
 public:
  // shards: the dictionary split into one block of latents per rank (the exchange's "experts" are the blocks; this
  // rank holds block first_expert()); nullptr: all F latents here.
  TopKSae(const ModelConfig& config, Backend& backend, ExpertExchange* shards = nullptr);
  void init(Rng& rng) override;
  void forward_pass(const Tensor& x, bool train) override;
  void backward() override;

 private:
  // AuxK: the top-k_aux dead latents (by pre-activation) reconstruct the residual e = x - x^ (not detached, as
  // in the reference code):
  // L_aux = auxk_alpha * sum_b ||e_b - e^_b||^2 / sum_b ||x_b - mean(x)||^2  (times d with mse_normalization: sum).
  double auxk_forward(const Tensor& x, const Tensor& pre);
  // Top-k of pre [M, Fl] (optionally among col_mask's latents) as local ids and values; with shards, cut to the
  // distributed selection. Returns the global ids.
  Tensor select(const Tensor& pre, int k, Tensor& vals, Tensor& ids, const Tensor* col_mask);

  ExpertExchange* shards_;
  int64_t first_latent_ = 0;  // this rank's block: latents [first_latent_, first_latent_ + W_enc rows)
  Param *w_enc_, *b_enc_ = nullptr, *w_dec_, *b_pre_;
  // xu_: u of the tokens this rank's latents serve (every rank's tokens when sharded); ids_/coef_: their selected
  // entries (local ids; coef = z).
  Tensor x_, u_, xu_, ids_, coef_;
  // AuxK state of the last forward (aux_k_ == 0: no AuxK term this step). aux_ids_: local ids.
  int aux_k_ = 0;
  Tensor aux_vals_, aux_ids_, aux_resid_, aux_hat_;
  double aux_coef_ = 0;  // dL/d(e^) = aux_coef_ * (e^ - e)
};

}  // namespace moesae
