// moesae models: the Gated SAE (Rajamanoharan et al. 2024).
//   u = x - b_dec;  pi_gate = W_gate u + b_gate;  pi_mag = (W_gate u) * exp(r_mag) + b_mag
//   f = 1[pi_gate > 0] * ReLU(pi_mag);  x^ = W_dec^T f + b_dec
//   L = ||x - x^||^2 + l1_coeff ||ReLU(pi_gate)||_1 + ||x - x^_frozen(ReLU(pi_gate))||^2
// where x^_frozen decodes through a frozen (stop-gradient) copy of W_dec and b_dec. Decoder rows are unit norm.
// The encoder is dense (the gate decides the support), so this model uses dense GEMMs in both directions.
#pragma once
#include "sae/sae.h"

namespace moesae {

class GatedSae final : public Sae {
 public:
  GatedSae(const ModelConfig& config, Backend& backend);
  void init(Rng& rng) override;
  void forward_pass(const Tensor& x, bool train) override;
  void backward() override;

 private:
  Param *w_gate_, *b_gate_, *r_mag_, *b_mag_, *w_dec_, *b_pre_;
  Tensor x_, u_, g_, gate_relu_, f_, exp_r_, frozen_hat_, iota_;
};

}  // namespace moesae
