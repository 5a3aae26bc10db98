// moesae models: the dense TopK SAE (Gao et al. 2024): z = TopK(ReLU(W_enc (x - b_pre) [+ b_enc])),
// x^ = W_dec^T z + b_pre, with AuxK on dead latents.
#pragma once
#include "sae/sae.h"

namespace moesae {

class TopKSae final : public Sae {
 public:
  TopKSae(const ModelConfig& config, Backend& backend);
  void init(Rng& rng) override;
  SaeStats forward(const Tensor& x, bool train) override;
  void backward() override;

 private:
  // AuxK: the top-k_aux dead latents (by pre-activation) reconstruct the residual e = x - x^ (not detached, as
  // in the reference code):
  // L_aux = auxk_alpha * sum_b ||e_b - e^_b||^2 / sum_b ||x_b - mean(x)||^2  (times d with mse_normalization: sum).
  double auxk_forward(const Tensor& x, const Tensor& pre);

  Param *w_enc_, *b_enc_ = nullptr, *w_dec_, *b_pre_;
  Tensor x_, u_, coef_;
  // AuxK state of the last forward (aux_k_ == 0: no AuxK term this step).
  int aux_k_ = 0;
  Tensor aux_vals_, aux_ids_, aux_resid_, aux_hat_;
  double aux_coef_ = 0;  // dL/d(e^) = aux_coef_ * (e^ - e)
};

}  // namespace moesae
