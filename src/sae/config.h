// moesae models: the model configuration. Defaults are the paper's equations (arXiv 2511.05745); every
// deviation of the public reference code (reference-implementations.md §3.10, §4) is a named option, and
// `compat: reference` sets them all at once (apply_compat below).
#pragma once
#include <cstdint>
#include <string>

namespace moesae {

enum class Arch { TopK, Gated, Switch, Scale };
// Low-pass component L_i of Feature Scaling (Eq. 2.5, Appendix C): W^_i = L_i + (1 + w_i)(W_i - L_i).
enum class FeatureScaling {
  None,       // no feature scaling
  Mean,       // L_i = mean encoder row of expert i (paper, Eq. 2.5 / C.1)
  Identity,   // L_i = I (rectangular n x d identity; Eq. C.2)
  Learned,    // L_i = A_LP,i, a learned n x d matrix per expert (Eq. C.3), initialised to the mean rows
  Reference,  // L_i = A * mean_i with one shared learned d x d matrix A, init I (the reference code)
};
enum class ExpertWeight { P, DoubleSoftmax, Uniform };  // w_i = p_i (Eq. 2.4) | softmax_T(p) (code) | 1
enum class SelectOn { Raw, Weighted };                  // global Top-K ranks f_ij (Eq. 2.3) | w_i f_ij (code)
enum class DecoderNorm { Row, Column };                 // unit feature rows | unit columns per expert (code bug)
enum class LbAssignment { TopE, Top1 };                 // f_i counts all e chosen experts | argmax only (code)
enum class MseNormalization { Mean, Sum };              // (1/d) sum (A.1) | sum over d (code)
enum class Compat { Paper, Reference };

struct ModelConfig {
  Arch arch = Arch::Scale;
  int d = 0;               // input dimension (taken from the data)
  int dict_size = 0;       // F, total latents
  int experts = 1;         // E
  int active_experts = 1;  // e
  int k = 32;              // Top-K (target L0)

  FeatureScaling feature_scaling = FeatureScaling::None;
  ExpertWeight weight = ExpertWeight::P;
  SelectOn select_on = SelectOn::Raw;
  DecoderNorm decoder_norm = DecoderNorm::Row;
  LbAssignment lb_assignment = LbAssignment::TopE;
  MseNormalization mse_normalization = MseNormalization::Mean;
  bool encoder_bias = false;
  bool router_bias = false;
  Compat compat = Compat::Paper;

  float lb_alpha = 3.0f;  // load-balancing weight alpha (Eq. 2.2), relative to the mean-normalised MSE

  // AuxK (TopK SAE; Gao et al. 2024): dead latents reconstruct the residual.
  bool auxk = true;
  int k_aux = 0;                                // 0: d / 2
  float auxk_alpha = 1.0f / 32.0f;
  int64_t dead_threshold_tokens = 10'000'000;  // a latent is dead after this many tokens without firing

  // Gated SAE (Rajamanoharan et al. 2024): sparsity penalty on ReLU(pi_gate).
  float l1_coeff = 1.0f;

  // Derived.
  int latents_per_expert() const { return dict_size / experts; }
  int resolved_k_aux() const { return k_aux > 0 ? k_aux : d / 2; }
};

// Sets every reference-code option (reference-implementations.md §3.10): double-softmax weights, selection on
// weighted activations, per-column decoder norm, top-1 load-balance fractions, encoder and router biases,
// MSE summed over d, and (if Feature Scaling is on) the A * mean low-pass.
void apply_compat_reference(ModelConfig& m);

// Checks consistency (divisibility, ranges); throws moesae::Error naming the offending key.
void validate(const ModelConfig& m);

const char* to_string(Arch a);
const char* to_string(FeatureScaling f);
const char* to_string(ExpertWeight w);
const char* to_string(SelectOn s);
const char* to_string(DecoderNorm n);
const char* to_string(LbAssignment a);
const char* to_string(MseNormalization m);
const char* to_string(Compat c);
// Parsers: throw moesae::Error listing the valid names.
Arch parse_arch(const std::string& s);
FeatureScaling parse_feature_scaling(const std::string& s);
ExpertWeight parse_expert_weight(const std::string& s);
SelectOn parse_select_on(const std::string& s);
DecoderNorm parse_decoder_norm(const std::string& s);
LbAssignment parse_lb_assignment(const std::string& s);
MseNormalization parse_mse_normalization(const std::string& s);
Compat parse_compat(const std::string& s);

}  // namespace moesae
