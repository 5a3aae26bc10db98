#include "sae/config.h"

#include <array>
#include <utility>

#include "core/error.h"

namespace moesae {
namespace {

template <typename E, size_t N>
E parse_enum(const std::string& s, const std::array<std::pair<const char*, E>, N>& table, const char* key) {
  std::string valid;
  for (auto& [name, value] : table) {
    if (s == name) return value;
    valid += valid.empty() ? "" : ", ";
    valid += name;
  }
  fail("model.", key, ": unknown value '", s, "' (valid: ", valid, ")");
}

template <typename E, size_t N>
const char* name_of(E v, const std::array<std::pair<const char*, E>, N>& table) {
  for (auto& [name, value] : table)
    if (value == v) return name;
  return "?";
}

const std::array<std::pair<const char*, Arch>, 4> kArch{
    {{"topk", Arch::TopK}, {"gated", Arch::Gated}, {"switch", Arch::Switch}, {"scale", Arch::Scale}}};
const std::array<std::pair<const char*, FeatureScaling>, 5> kFs{{{"none", FeatureScaling::None},
                                                                 {"mean", FeatureScaling::Mean},
                                                                 {"identity", FeatureScaling::Identity},
                                                                 {"learned", FeatureScaling::Learned},
                                                                 {"reference", FeatureScaling::Reference}}};
const std::array<std::pair<const char*, ExpertWeight>, 3> kW{{{"p", ExpertWeight::P},
                                                              {"double_softmax", ExpertWeight::DoubleSoftmax},
                                                              {"uniform", ExpertWeight::Uniform}}};
const std::array<std::pair<const char*, SelectOn>, 2> kSel{{{"raw", SelectOn::Raw}, {"weighted", SelectOn::Weighted}}};
const std::array<std::pair<const char*, DecoderNorm>, 2> kDn{
    {{"row", DecoderNorm::Row}, {"column", DecoderNorm::Column}}};
const std::array<std::pair<const char*, LbAssignment>, 2> kLb{
    {{"tope", LbAssignment::TopE}, {"top1", LbAssignment::Top1}}};
const std::array<std::pair<const char*, MseNormalization>, 2> kMse{
    {{"mean", MseNormalization::Mean}, {"sum", MseNormalization::Sum}}};
const std::array<std::pair<const char*, Compat>, 2> kCompat{{{"paper", Compat::Paper}, {"reference", Compat::Reference}}};

}  // namespace

void apply_compat_reference(ModelConfig& m) {
  m.compat = Compat::Reference;
  m.weight = ExpertWeight::DoubleSoftmax;
  m.select_on = SelectOn::Weighted;
  m.decoder_norm = (m.arch == Arch::Scale || m.arch == Arch::Switch) ? DecoderNorm::Column : DecoderNorm::Row;
  m.lb_assignment = LbAssignment::Top1;
  m.mse_normalization = MseNormalization::Sum;
  m.encoder_bias = true;
  m.router_bias = true;
  if (m.feature_scaling == FeatureScaling::Mean) m.feature_scaling = FeatureScaling::Reference;
}

void validate(const ModelConfig& m) {
  if (m.d <= 0) fail("model: input dimension d must be positive (got ", m.d, ")");
  if (m.dict_size <= 0) fail("model.dict_size must be positive (got ", m.dict_size, ")");
  if (m.k <= 0) fail("model.k must be positive (got ", m.k, ")");
  if (m.arch == Arch::TopK || m.arch == Arch::Gated) {
    if (m.experts != 1) fail("model.experts must be 1 for arch ", to_string(m.arch), " (got ", m.experts, ")");
  }
  if (m.experts <= 0) fail("model.experts must be positive (got ", m.experts, ")");
  if (m.dict_size % m.experts != 0)
    fail("model.dict_size (", m.dict_size, ") must be divisible by model.experts (", m.experts, ")");
  if (m.active_experts < 1 || m.active_experts > m.experts)
    fail("model.active_experts must be in [1, experts=", m.experts, "] (got ", m.active_experts, ")");
  if (m.arch == Arch::Switch && m.active_experts != 1)
    fail("model.active_experts must be 1 for arch switch (got ", m.active_experts, "); use arch scale for e > 1");
  const int64_t candidates = int64_t(m.active_experts) * m.latents_per_expert();
  if (m.arch != Arch::Gated && m.k > candidates)
    fail("model.k (", m.k, ") exceeds the candidate latents per token (active_experts * dict_size / experts = ",
         candidates, ")");
  if (m.arch == Arch::Switch && m.feature_scaling != FeatureScaling::None)
    fail("model.feature_scaling is a Scale SAE option; arch switch takes none");
  if ((m.arch == Arch::TopK || m.arch == Arch::Gated) && m.feature_scaling != FeatureScaling::None)
    fail("model.feature_scaling needs experts (arch scale)");
  if (m.lb_alpha < 0) fail("model.lb_alpha must be >= 0");
  if (m.l1_coeff < 0) fail("model.l1_coeff must be >= 0");
  if (m.dead_threshold_tokens <= 0 || m.dead_threshold_tokens >= (int64_t(1) << 30))
    fail("model.dead_threshold_tokens must be in [1, 2^30) (got ", m.dead_threshold_tokens, ")");
}

const char* to_string(Arch a) { return name_of(a, kArch); }
const char* to_string(FeatureScaling f) { return name_of(f, kFs); }
const char* to_string(ExpertWeight w) { return name_of(w, kW); }
const char* to_string(SelectOn s) { return name_of(s, kSel); }
const char* to_string(DecoderNorm n) { return name_of(n, kDn); }
const char* to_string(LbAssignment a) { return name_of(a, kLb); }
const char* to_string(MseNormalization m) { return name_of(m, kMse); }
const char* to_string(Compat c) { return name_of(c, kCompat); }
Arch parse_arch(const std::string& s) { return parse_enum(s, kArch, "arch"); }
FeatureScaling parse_feature_scaling(const std::string& s) { return parse_enum(s, kFs, "feature_scaling"); }
ExpertWeight parse_expert_weight(const std::string& s) { return parse_enum(s, kW, "weight"); }
SelectOn parse_select_on(const std::string& s) { return parse_enum(s, kSel, "select_on"); }
DecoderNorm parse_decoder_norm(const std::string& s) { return parse_enum(s, kDn, "decoder_norm"); }
LbAssignment parse_lb_assignment(const std::string& s) { return parse_enum(s, kLb, "lb_assignment"); }
MseNormalization parse_mse_normalization(const std::string& s) { return parse_enum(s, kMse, "mse_normalization"); }
Compat parse_compat(const std::string& s) { return parse_enum(s, kCompat, "compat"); }

}  // namespace moesae
