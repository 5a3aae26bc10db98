// moesae models: the SAE interface shared by TopK, Gated, Switch and Scale SAEs.
// Forward and backward are written by hand in terms of Backend operations, so every model runs on any backend.
//
// Loss normalisation (config `mse_normalization`): with c = 1/(B d) ("mean", paper Eq. A.1) or c = 1/B ("sum",
// the reference code), the reconstruction term is c * sum_b ||x_b - x^_b||^2, and every auxiliary term (load
// balancing, AuxK, the Gated SAE's L1 and auxiliary reconstruction) carries the same normalisation, so the "sum"
// objective is exactly d times the "mean" objective.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/rng.h"
#include "sae/batch_group.h"
#include "sae/config.h"
#include "sae/params.h"

namespace moesae {

// Scalars of one forward pass (host values).
struct SaeStats {
  int64_t tokens = 0;
  double loss = 0;        // total objective
  double recon = 0;       // reconstruction term (normalised as configured)
  double lb = 0;          // load-balancing loss E * sum_i f_i P_i (unweighted; 1 at uniform routing)
  double lb_term = 0;     // its weighted share of `loss` (lb_alpha times the normalisation factor times lb)
  double aux = 0;         // weighted AuxK term (TopK) or auxiliary reconstruction (Gated)
  double sparsity = 0;    // weighted L1 term (Gated)
  double sq_error = 0;    // sum_b ||x_b - x^_b||^2
  double mse = 0;         // sq_error / (B d)   (Eq. A.1)
  double mse_sum = 0;     // sq_error / B       (summed over d, the reference code's number)
  double l0 = 0;          // mean number of active latents per token
  std::vector<double> expert_fraction;  // f_i: fraction of (token, slot) routings to expert i (MoE only)
};

// The sparse code of the last forward pass: latent ids i32 [B, k] (-1: empty) and activations f32 [B, k]
// (unweighted z). For the Gated SAE k = F and ids are 0..F-1.
struct SparseCode {
  Tensor ids;
  Tensor vals;
};

class Sae {
 public:
  Sae(const ModelConfig& config, Backend& backend);
  virtual ~Sae() = default;
  Sae(const Sae&) = delete;
  Sae& operator=(const Sae&) = delete;

  const ModelConfig& config() const { return cfg_; }
  Backend& backend() { return be_; }
  ParamSet& params() { return params_; }

  // Random initialisation (PyTorch Linear-style U(-1/sqrt(d), 1/sqrt(d)) encoders, decoder = normalised copy).
  virtual void init(Rng& rng) = 0;
  // b_pre (and the router's b_r) at the geometric median of a batch (host tensor [B, d]); §1.5 of the notes.
  virtual void init_biases_from_batch(const Tensor& host_batch);
  // Forward pass on x [B, d] (backend tensor); keeps what backward() needs. `train` adds the training-only
  // terms (AuxK). The loss depends on the dead-latent counters but does not change them: record_firing() does,
  // once per training step. Returns the pass's statistics: forward_pass, then stats().
  SaeStats forward(const Tensor& x, bool train) {
    forward_pass(x, train);
    return stats();
  }
  // The forward pass alone. Its statistics are queued on the backend (Backend::Pending) and arrive with a later
  // wait for the device, so a training step asks for them at its end, where it waits once for them and the
  // gradient norm together.
  virtual void forward_pass(const Tensor& x, bool train) = 0;
  // The last forward pass's statistics (waiting for them if they have not arrived).
  SaeStats stats();
  // Dead-latent bookkeeping for the last forward: every latent's tokens-since-fired counter grows by B, and
  // resets for each latent that fired (z > 0) on some token.
  void record_firing();
  // Accumulates the gradients of the last training forward's loss into the parameters' grads.
  virtual void backward() = 0;

  const Tensor& reconstruction() const { return x_hat_; }
  const SparseCode& code() const { return code_; }
  // Decoder W_dec [F, d] in global latent order (row j = latent j's direction); under expert parallelism this
  // rank's rows only (Param::shard_first).
  Tensor decoder() { return params_.get("W_dec").value; }
  // omega per expert (Feature Scaling), empty when the model has none.
  std::vector<float> omega();

  void zero_grad();
  // Unit-norm decoder rows (or per-expert columns with decoder_norm: column), applied before each step.
  void apply_decoder_constraint();
  // Removes each decoder row's gradient component parallel to the row (after clipping, before the update).
  void project_decoder_gradient();
  // Fraction of latents that have not fired within dead_threshold_tokens tokens.
  double dead_fraction();
  int64_t dead_count();

  // Data parallelism: batch statistics over the group's batch (see sae/batch_group.h); nullptr: this process.
  virtual void set_batch_group(BatchGroup* group) { group_ = group; }

 protected:
  // Loss normalisation constant c (see the top of this file) for this process's batch of `batch` rows (c uses
  // the group's batch under data parallelism), and the matching factor for auxiliary terms.
  double recon_scale(int64_t batch) const;
  // Rows of the whole group's batch when this process holds `local` of them.
  int64_t group_batch(int64_t local) const { return group_ ? local * group_->size() : local; }
  double aux_factor() const;
  // Shared forward tail, queued: x^ stats (sq_error, mse, mse_sum) from x and x_hat_, and l0 = the entries > 0 of
  // `code` per token, with the model's `extra` reductions in the same read-back. When they arrive, stats() hands
  // the extras' results to `finish`, which adds the model's own terms and the loss.
  using FinishStats = std::function<void(const std::vector<double>& extra, SaeStats& s)>;
  void queue_stats(const Tensor& x, const Tensor& code, std::vector<Backend::Reduction> extra, FinishStats finish);
  // dL_recon/dx^ = 2 c (x^ - x) into dxhat.
  void reconstruction_grad(const Tensor& x, Tensor dxhat);
  // The references' initialisation: encoder U(-1/sqrt(d), 1/sqrt(d)), decoder = the encoder with unit rows (or
  // columns, per decoder_norm). Sharded parameters (expert parallelism) get their rows of the whole draw.
  void init_encoder_and_tied_decoder(Param& w_enc, Param& w_dec, Rng& rng);

  ModelConfig cfg_;
  Backend& be_;
  ParamSet params_;
  Param* fired_ = nullptr;  // buffer "tokens_since_fired" i32 [F]
  BatchGroup* group_ = nullptr;
  Tensor x_hat_;
  SparseCode code_;

 private:
  Backend::Pending stats_pending_;  // the last forward pass's (queue_stats)
  int64_t stats_rows_ = 0;
  FinishStats finish_stats_;
};

class ExpertExchange;
// experts: expert parallelism (sae/expert_exchange.h; mixture-of-experts models only), nullptr: none.
std::unique_ptr<Sae> make_sae(const ModelConfig& config, Backend& backend, ExpertExchange* experts = nullptr);

}  // namespace moesae
