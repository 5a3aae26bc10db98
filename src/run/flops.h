// moesae run: cost accounting of one training run: FLOPs per token (forward, backward and the per-step work
// amortised over the batch), trainable parameters, a memory estimate and a time estimate. The FLOPs follow what the
// CPU backend actually computes (src/sae/*.cpp), term by term, so that a grid can be FLOPS-matched as in the paper
// (§3.1: dense TopK/Gated width 768 vs Scale F = 24576 with (E, e) in {(256, 8), (128, 4), (64, 2)} vs Switch
// E = 32). Every term is documented in docs/grids.md ("FLOPs accounting").
//
// Conventions: a multiply-add is 2 FLOPs; a Top-K selection costs 1 FLOP per candidate it ranks; elementwise work
// linear in d, k or the candidates (bias adds, ReLU, residuals, copies) is not counted. Notation: d input dimension,
// F dict_size, E experts, e active_experts, n = F/E, c = latents whose encoder rows run per token (F for TopK and
// Gated, e*n for Switch and Scale), k, B batch size, P trainable parameters.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "run/config.h"

namespace moesae {

// What a FLOPs comparison counts (flops_match `measure:`).
enum class FlopsMeasure {
  Train,    // forward + backward + per-step work (optimizer, decoder constraint, ...) / B: what a training step costs
  Forward,  // the forward pass only (as at evaluation)
  Encoder,  // 2 d c: the encoder rows computed per token, the paper's §3.1 convention (768 = 24576 * e / E)
};
FlopsMeasure parse_flops_measure(const std::string& s);  // throws listing the valid names
const char* to_string(FlopsMeasure m);

// One named term of the per-token cost.
struct FlopsTerm {
  std::string name;   // "encoder", "router", "select", "decode", "feature_scaling", "auxk", "optimizer", ...
  std::string phase;  // "forward", "backward" or "step" (per-step work divided by the batch size)
  double flops = 0;   // per token
  bool train_only = false;  // computed by training steps only (AuxK): left out of FlopsMeasure::Forward
};

struct FlopsBreakdown {
  std::vector<FlopsTerm> terms;
  double encoder = 0;  // 2 d c (FlopsMeasure::Encoder)

  double phase(const std::string& p) const;  // sum of the terms of one phase
  double term(const std::string& name, const std::string& phase) const;  // 0 when absent
  double forward() const { return phase("forward"); }
  double backward() const { return phase("backward"); }
  double step() const { return phase("step"); }
  double train() const { return forward() + backward() + step(); }
  double get(FlopsMeasure m) const;
  std::string describe() const;  // "encoder(forward) 1.2M + ...": every term, for messages and `plan --terms`
};

// FLOPs per token of a model trained with `batch_size` tokens per step. Needs m.d > 0. `train` adds the terms
// that only training computes (AuxK); the forward measure leaves them out.
FlopsBreakdown flops_per_token(const ModelConfig& m, int64_t batch_size);

// Trainable parameters (the ParamSet of make_sae, counted by formula; tests check it against a built model) and
// state buffers (int32 elements: the dead-latent counters).
int64_t parameter_count(const ModelConfig& m);
int64_t buffer_count(const ModelConfig& m);

// Bytes a training run holds (an estimate; docs/grids.md): parameter state (value, gradient, Adam m and v: 16 bytes
// per parameter) and buffers, the activations of one batch (forward and backward), and the data stream's shuffle
// buffer and read chunk.
struct MemoryEstimate {
  double state = 0, activations = 0, data = 0;
  double total() const { return state + activations + data; }
};
// `train_rows`: the data's training rows when known (the shuffle buffer is capped at them), else 0.
MemoryEstimate memory_estimate(const RunConfig& c, int64_t train_rows);

// Everything `moesae plan` shows for one run; `known` is false when the input dimension is unknown.
struct RunCost {
  bool known = false;
  int d = 0;
  FlopsBreakdown flops;
  int64_t params = 0;
  MemoryEstimate memory;
  double total_flops = 0;  // steps * batch_size * train FLOPs per token
};
// `d`: the input dimension (config.model.d when it is set, else from the data; 0: unknown).
RunCost run_cost(const RunConfig& config, int d, int64_t train_rows);

// Sustained training FLOP/s of this machine's CPU backend: a short timed GEMM (about 0.1 s) scaled by the share of
// the GEMM rate a training step reaches (kTrainEfficiency). An estimate; `moesae plan` prefers the rate of the
// grid's finished runs.
double measured_cpu_rate();
constexpr double kTrainEfficiency = 0.2;

// "1.23G", "456k", "12" (powers of 1000); "2.1GiB", "512MiB" (powers of 1024).
std::string si_count(double v);
std::string bytes_text(double bytes);

}  // namespace moesae
