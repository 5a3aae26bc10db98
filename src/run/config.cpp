#include "run/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

#include "core/error.h"

namespace moesae {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- where a value came from ------------------------------------------------------------------------------------

// Locations for error messages: "file:line" for values of the file, "override 'k=v'" for overridden values.
struct Source {
  std::string name;
  std::map<std::string, std::string> overrides;  // dotted key (or a section it created) -> the override text

  std::string where(const std::string& dotted, const YAML::Node& node) const {
    auto it = overrides.find(dotted);
    if (it != overrides.end()) return "override '" + it->second + "'";
    return at(node);
  }
  std::string at(const YAML::Node& node) const {
    const YAML::Mark mark = node.Mark();
    return mark.is_null() ? name : name + ":" + std::to_string(mark.line + 1);
  }
};

// An allowed interval for a number, described in errors ("must be >= 1", "must be in [0, 1)").
struct Bound {
  double lo = -kInf, hi = kInf;
  bool lo_open = false, hi_open = false;

  bool contains(double v) const {
    return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  }
  std::string describe() const {
    std::ostringstream os;
    if (hi == kInf)
      os << "must be " << (lo_open ? "> " : ">= ") << lo;
    else if (lo == -kInf)
      os << "must be " << (hi_open ? "< " : "<= ") << hi;
    else
      os << "must be in " << (lo_open ? "(" : "[") << lo << ", " << hi << (hi_open ? ")" : "]");
    return os.str();
  }
};
const Bound kAnyNumber{};
const Bound kAtLeastOne{1};
const Bound kNonNegative{0};
const Bound kPositive{0, kInf, true};
const Bound kFractionBelowOne{0, 1, false, true};  // [0, 1)
const Bound kFraction{0, 1};                       // [0, 1]
const Bound kCosine{-1, 1};                        // [-1, 1]

const char* node_kind(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Sequence: return "a sequence";
    case YAML::NodeType::Null: return "no value";
    default: return "a scalar";
  }
}

// One configuration value: typed conversions whose errors name the location, the key and the expected type.
class Value {
 public:
  Value(const YAML::Node& node, std::string key, std::string where)
      : node_(node), key_(std::move(key)), where_(std::move(where)) {}

  [[noreturn]] void error(const std::string& problem) const { fail(where_, ": ", key_, ": ", problem); }

  std::string scalar(const char* expected) const {
    if (!node_.IsScalar()) error(std::string("expected ") + expected + ", got " + node_kind(node_));
    return node_.Scalar();
  }

  template <typename T>
  T integer(const Bound& bound) const {
    const std::string s = scalar("an integer");
    std::optional<long double> v = parse_integral(s);
    if (!v) {
      if (parse_real(s)) error("expected an integer, got " + s);
      error("expected an integer, got '" + s + "'");
    }
    check(static_cast<double>(*v), bound, s);
    if (*v < static_cast<long double>(std::numeric_limits<T>::min()) ||
        *v > static_cast<long double>(std::numeric_limits<T>::max()))
      error(s + " is out of range for this key");
    return static_cast<T>(*v);
  }

  double real(const Bound& bound) const {
    const std::string s = scalar("a number");
    std::optional<double> v = parse_real(s);
    if (!v) error("expected a number, got '" + s + "'");
    check(*v, bound, s);
    return *v;
  }

  float real_f32(const Bound& bound) const {
    const std::string s = scalar("a number");
    std::optional<double> v = parse_real(s);
    if (!v) error("expected a number, got '" + s + "'");
    float f = 0.f;
    const char* begin = s.data() + (s[0] == '+' ? 1 : 0);
    const auto res = std::from_chars(begin, s.data() + s.size(), f);  // direct to f32: exact round trips
    if (res.ec != std::errc() || !std::isfinite(f)) error(s + " is out of range for a 32-bit float");
    check(f, bound, s);
    return f;
  }

  bool boolean() const {
    const std::string s = scalar("true or false");
    bool b = false;
    if (!YAML::convert<bool>::decode(node_, b)) error("expected true or false, got '" + s + "'");
    return b;
  }

  std::string string(bool allow_empty) const {
    std::string s = scalar("a string");
    if (!allow_empty && s.empty()) error("must not be empty");
    return s;
  }

  // Enum values through the parse_* functions of sae/config.h; their message (which lists the valid names)
  // gets the location in front.
  template <typename E>
  E enumeration(E (*parse)(const std::string&)) const {
    const std::string s = scalar("a name");
    try {
      return parse(s);
    } catch (const Error& e) {
      fail(where_, ": ", e.what());
    }
  }

 private:
  void check(double v, const Bound& bound, const std::string& text) const {
    if (!bound.contains(v)) error(bound.describe() + " (got " + text + ")");
  }

  static std::optional<double> parse_real(const std::string& s) {
    if (s.empty()) return std::nullopt;
    const char* begin = s.data() + (s[0] == '+' ? 1 : 0);
    const char* end = s.data() + s.size();
    double v = 0;
    const auto res = std::from_chars(begin, end, v);
    if (res.ec != std::errc() || res.ptr != end || !std::isfinite(v)) return std::nullopt;
    return v;
  }

  // A decimal integer, or a real with an integral value (1e6, 2.0e4); long double holds every int64 and uint64.
  static std::optional<long double> parse_integral(const std::string& s) {
    if (s.empty()) return std::nullopt;
    const char* begin = s.data() + (s[0] == '+' ? 1 : 0);
    const char* end = s.data() + s.size();
    if (*begin != '-') {
      uint64_t u = 0;
      const auto res = std::from_chars(begin, end, u);
      if (res.ec == std::errc() && res.ptr == end) return static_cast<long double>(u);
    } else {
      int64_t i = 0;
      const auto res = std::from_chars(begin, end, i);
      if (res.ec == std::errc() && res.ptr == end) return static_cast<long double>(i);
    }
    std::optional<double> r = parse_real(s);
    if (r && std::floor(*r) == *r) return static_cast<long double>(*r);
    return std::nullopt;
  }

  YAML::Node node_;  // a handle (yaml-cpp nodes are references into the tree)
  std::string key_;
  std::string where_;
};

// ---- fields: one table per section, read in table order and written in table order ----------------------------

// A value as written by to_yaml: its text, and whether it must be quoted (strings).
struct Written {
  std::string text;
  bool quoted = false;
};

template <typename Cfg>
struct Field {
  std::string key;
  std::function<void(Cfg&, const Value&)> read;
  std::function<std::optional<Written>(const Cfg&)> write;  // nullopt: not written
};

// Shortest text that parses back to exactly the same value.
template <typename T>
std::string shortest(T v) {
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, res.ptr);
}

template <typename Cfg, typename T>
Field<Cfg> int_field(const char* key, T Cfg::*member, const Bound& bound) {
  return {key, [member, bound](Cfg& c, const Value& v) { c.*member = v.integer<T>(bound); },
          [member](const Cfg& c) { return std::optional<Written>({std::to_string(c.*member)}); }};
}

template <typename Cfg>
Field<Cfg> real_field(const char* key, double Cfg::*member, const Bound& bound) {
  return {key, [member, bound](Cfg& c, const Value& v) { c.*member = v.real(bound); },
          [member](const Cfg& c) { return std::optional<Written>({shortest(c.*member)}); }};
}

template <typename Cfg>
Field<Cfg> real_field(const char* key, float Cfg::*member, const Bound& bound) {
  return {key, [member, bound](Cfg& c, const Value& v) { c.*member = v.real_f32(bound); },
          [member](const Cfg& c) { return std::optional<Written>({shortest(c.*member)}); }};
}

template <typename Cfg>
Field<Cfg> bool_field(const char* key, bool Cfg::*member) {
  return {key, [member](Cfg& c, const Value& v) { c.*member = v.boolean(); },
          [member](const Cfg& c) { return std::optional<Written>({c.*member ? "true" : "false"}); }};
}

template <typename Cfg>
Field<Cfg> string_field(const char* key, std::string Cfg::*member, bool allow_empty) {
  return {key, [member, allow_empty](Cfg& c, const Value& v) { c.*member = v.string(allow_empty); },
          [member](const Cfg& c) { return std::optional<Written>({c.*member, true}); }};
}

template <typename Cfg, typename E>
Field<Cfg> enum_field(const char* key, E Cfg::*member, E (*parse)(const std::string&), const char* (*name)(E)) {
  return {key, [member, parse](Cfg& c, const Value& v) { c.*member = v.enumeration(parse); },
          [member, name](const Cfg& c) { return std::optional<Written>({name(c.*member)}); }};
}

// A field written by to_yaml only when its value differs from the default: keys added after runs were recorded
// leave those runs' resolved YAML (and config hash) unchanged.
template <typename Cfg>
Field<Cfg> unless_default(Field<Cfg> f) {
  auto write = f.write;
  f.write = [write](const Cfg& c) { return write(c) && write(c)->text == write(Cfg{})->text ? std::nullopt : write(c); };
  return f;
}

const std::vector<Field<DataConfig>>& data_fields() {
  static const std::vector<Field<DataConfig>> f = {
      string_field("path", &DataConfig::path, true),
      string_field("dataset", &DataConfig::dataset, false),
      real_field("eval_fraction", &DataConfig::eval_fraction, kFractionBelowOne),
      int_field("eval_tokens", &DataConfig::eval_tokens, kNonNegative),
      int_field("shuffle_buffer", &DataConfig::shuffle_buffer, kAtLeastOne),
      int_field("chunk_rows", &DataConfig::chunk_rows, kAtLeastOne),
      unless_default(enum_field("prefetch", &DataConfig::prefetch, parse_prefetch, prefetch_name)),
  };
  return f;
}

// Model keys in reading order: arch (with its defaults) before the sizes it defaults, feature_scaling before compat
// (the preset maps mean to the reference low-pass), compat before the option keys that override it.
const std::vector<Field<ModelConfig>>& model_fields() {
  static const std::vector<Field<ModelConfig>> f = {
      {"arch",
       [](ModelConfig& m, const Value& v) {
         m.arch = v.enumeration(parse_arch);
         if (m.arch == Arch::Switch) m.active_experts = 1;
         if (m.arch == Arch::TopK || m.arch == Arch::Gated) m.experts = m.active_experts = 1;
         m.feature_scaling = m.arch == Arch::Scale ? FeatureScaling::Mean : FeatureScaling::None;
       },
       [](const ModelConfig& m) { return std::optional<Written>({to_string(m.arch)}); }},
      int_field("dict_size", &ModelConfig::dict_size, kAtLeastOne),
      int_field("experts", &ModelConfig::experts, kAtLeastOne),
      int_field("active_experts", &ModelConfig::active_experts, kAtLeastOne),
      int_field("k", &ModelConfig::k, kAtLeastOne),
      enum_field("feature_scaling", &ModelConfig::feature_scaling, parse_feature_scaling, to_string),
      {"compat",
       [](ModelConfig& m, const Value& v) {
         m.compat = v.enumeration(parse_compat);
         if (m.compat == Compat::Reference) apply_compat_reference(m);
       },
       [](const ModelConfig& m) { return std::optional<Written>({to_string(m.compat)}); }},
      enum_field("weight", &ModelConfig::weight, parse_expert_weight, to_string),
      enum_field("select_on", &ModelConfig::select_on, parse_select_on, to_string),
      enum_field("decoder_norm", &ModelConfig::decoder_norm, parse_decoder_norm, to_string),
      enum_field("lb_assignment", &ModelConfig::lb_assignment, parse_lb_assignment, to_string),
      enum_field("mse_normalization", &ModelConfig::mse_normalization, parse_mse_normalization, to_string),
      bool_field("encoder_bias", &ModelConfig::encoder_bias),
      bool_field("router_bias", &ModelConfig::router_bias),
      real_field("lb_alpha", &ModelConfig::lb_alpha, kNonNegative),
      bool_field("auxk", &ModelConfig::auxk),
      int_field("k_aux", &ModelConfig::k_aux, kNonNegative),
      real_field("auxk_alpha", &ModelConfig::auxk_alpha, kNonNegative),
      int_field("dead_threshold_tokens", &ModelConfig::dead_threshold_tokens, kAtLeastOne),
      real_field("l1_coeff", &ModelConfig::l1_coeff, kNonNegative),
      {"d", [](ModelConfig& m, const Value& v) { m.d = v.integer<int>(kAtLeastOne); },
       [](const ModelConfig& m) {
         return m.d > 0 ? std::optional<Written>({std::to_string(m.d)}) : std::nullopt;
       }},
  };
  return f;
}
// Model keys that are not fields of ModelConfig (handled after the table).
const char* const kHeaviside = "heaviside";

const Bound kAutoOrIndex{-1};  // -1: automatic, else an index >= 0

const std::vector<Field<TrainConfig>>& train_fields() {
  static const std::vector<Field<TrainConfig>> f = {
      int_field("steps", &TrainConfig::steps, kAtLeastOne),
      int_field("batch_size", &TrainConfig::batch_size, kAtLeastOne),
      real_field("lr", &TrainConfig::lr, kNonNegative),
      real_field("decay_fraction", &TrainConfig::decay_fraction, kFraction),
      int_field("warmup_steps", &TrainConfig::warmup_steps, kNonNegative),
      real_field("beta1", &TrainConfig::beta1, kFractionBelowOne),
      real_field("beta2", &TrainConfig::beta2, kFractionBelowOne),
      real_field("eps", &TrainConfig::eps, kPositive),
      real_field("grad_clip", &TrainConfig::grad_clip, kAnyNumber),
      int_field("seed", &TrainConfig::seed, kNonNegative),
      int_field("log_every", &TrainConfig::log_every, kAtLeastOne),
      int_field("eval_every", &TrainConfig::eval_every, kNonNegative),
      int_field("checkpoint_every", &TrainConfig::checkpoint_every, kNonNegative),
      bool_field("geometric_median_init", &TrainConfig::geometric_median_init),
      int_field("threads", &TrainConfig::threads, kNonNegative),
      unless_default(enum_field("backend", &TrainConfig::backend, parse_backend_kind, backend_kind_name)),
      unless_default(int_field("device", &TrainConfig::device, kAutoOrIndex)),
      unless_default(enum_field("gemm_precision", &TrainConfig::gemm_precision, parse_gemm_precision,
                                gemm_precision_name)),
  };
  return f;
}

const std::vector<Field<EvalConfig>>& eval_fields() {
  static const std::vector<Field<EvalConfig>> f = {
      real_field("redundancy_threshold", &EvalConfig::redundancy_threshold, kCosine),
      real_field("recovered_threshold", &EvalConfig::recovered_threshold, kCosine),
      int_field("max_tokens", &EvalConfig::max_tokens, kNonNegative),
      int_field("batch_size", &EvalConfig::batch_size, kNonNegative),
      // The keys below are written only when they differ from their defaults, so that adding them left the resolved
      // YAML (and the config hash) of every existing run unchanged.
      unless_default(int_field("inter_expert_seed", &EvalConfig::inter_expert_seed, kNonNegative)),
      unless_default(int_field("overlap_tokens", &EvalConfig::overlap_tokens, kNonNegative)),
  };
  return f;
}


const std::vector<Field<LmEvalConfig>>& lm_fields() {
  static const std::vector<Field<LmEvalConfig>> f = {
      string_field("model", &LmEvalConfig::model, true),
      string_field("tokenizer", &LmEvalConfig::tokenizer, true),
      int_field("layer", &LmEvalConfig::layer, kAutoOrIndex),
      int_field("ctx", &LmEvalConfig::ctx, Bound{2}),
      int_field("max_tokens", &LmEvalConfig::max_tokens, kNonNegative),
      string_field("text", &LmEvalConfig::text, false),
      string_field("text_format", &LmEvalConfig::text_format, false),
      int_field("skip_documents", &LmEvalConfig::skip_documents, kAutoOrIndex),
      string_field("ood_text", &LmEvalConfig::ood_text, true),
      string_field("ood_format", &LmEvalConfig::ood_format, false),
  };
  return f;
}

template <typename Cfg>
std::vector<std::string> keys_of(const std::vector<Field<Cfg>>& fields) {
  std::vector<std::string> keys;
  for (const auto& f : fields) keys.push_back(f.key);
  return keys;
}

const std::vector<Field<ParallelConfig>>& parallel_fields() {
  static const std::vector<Field<ParallelConfig>> f = {
      unless_default(int_field("expert_parallel", &ParallelConfig::expert_parallel, kNonNegative)),
      unless_default(int_field("data_parallel", &ParallelConfig::data_parallel, kNonNegative)),
  };
  return f;
}

const char* const kSections[] = {"data", "model", "train", "eval", "lm", "parallel"};

std::vector<std::string> section_keys(const std::string& section) {
  if (section == "data") return keys_of(data_fields());
  if (section == "model") {
    std::vector<std::string> k = keys_of(model_fields());
    k.push_back(kHeaviside);
    return k;
  }
  if (section == "train") return keys_of(train_fields());
  if (section == "lm") return keys_of(lm_fields());
  if (section == "parallel") return keys_of(parallel_fields());
  return keys_of(eval_fields());
}

// ---- structure checks: sections, unknown and duplicate keys -------------------------------------------------------

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// " (did you mean 'x'?)" for the closest candidate within a few edits, else the list of valid names.
std::string suggestion(const std::string& name, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::numeric_limits<size_t>::max();
  for (const auto& c : candidates) {
    const size_t d = edit_distance(name, c);
    if (d < best_d) best_d = d, best = c;
  }
  if (!best.empty() && best_d <= std::max<size_t>(2, name.size() / 3)) return " (did you mean '" + best + "'?)";
  std::string all;
  for (const auto& c : candidates) all += (all.empty() ? "" : ", ") + c;
  return " (valid: " + all + ")";
}

bool is_section(const std::string& s) {
  return std::find(std::begin(kSections), std::end(kSections), s) != std::end(kSections);
}

// The top level is a mapping of known sections, each a mapping (or empty), without duplicate keys.
void check_structure(const YAML::Node& root, const Source& src, bool check_unknown) {
  if (!root.IsMap()) fail(src.at(root), ": a run configuration must be a mapping of sections (data, model, train, eval, lm, parallel)");
  std::map<std::string, YAML::Mark> seen_sections;
  for (auto it = root.begin(); it != root.end(); ++it) {
    const std::string section = it->first.Scalar();
    if (check_unknown && !is_section(section))
      fail(src.where(section, it->first), ": unknown section '", section, "'",
           suggestion(section, {std::begin(kSections), std::end(kSections)}));
    if (!seen_sections.emplace(section, it->first.Mark()).second)
      fail(src.at(it->first), ": duplicate section '", section, "' (first at line ",
           seen_sections[section].line + 1, ")");
    const YAML::Node body = it->second;
    if (body.IsNull()) continue;
    if (!body.IsMap())
      fail(src.where(section, body), ": section '", section, "' must be a mapping of keys, got ", node_kind(body));
    if (!is_section(section)) continue;
    const std::vector<std::string> keys = section_keys(section);
    std::map<std::string, YAML::Mark> seen;
    for (auto kt = body.begin(); kt != body.end(); ++kt) {
      const std::string key = kt->first.Scalar();
      const std::string dotted = section + "." + key;
      if (!seen.emplace(key, kt->first.Mark()).second)
        fail(src.at(kt->first), ": duplicate key '", dotted, "' (first at line ", seen[key].line + 1, ")");
      if (!check_unknown || std::find(keys.begin(), keys.end(), key) != keys.end()) continue;
      std::string hint;
      for (const char* other : kSections) {
        const std::vector<std::string> ok = section_keys(other);
        if (other != section && std::find(ok.begin(), ok.end(), key) != ok.end())
          hint = " ('" + key + "' belongs in section '" + other + "')";
      }
      fail(src.where(dotted, kt->first), ": unknown key '", dotted, "'",
           hint.empty() ? suggestion(key, keys) : hint);
    }
  }
}

// ---- overrides --------------------------------------------------------------------------------------------------

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

void apply_override(YAML::Node& root, const std::string& text, Source& src) {
  const size_t eq = text.find('=');
  const std::string key = trim(text.substr(0, eq));
  const size_t dot = key.find('.');
  if (eq == std::string::npos || dot == std::string::npos || dot == 0 || dot + 1 == key.size() ||
      key.find('.', dot + 1) != std::string::npos)
    fail("override '", text, "': expected section.key=value (e.g. model.k=16 or train.lr=1e-4)");
  const std::string section = key.substr(0, dot), name = key.substr(dot + 1);
  YAML::Node value;
  try {
    value = YAML::Load(text.substr(eq + 1));
  } catch (const YAML::Exception& e) {
    fail("override '", text, "': malformed YAML value: ", e.msg);
  }
  if (!root[section] || root[section].IsNull()) {
    if (!root[section]) src.overrides.emplace(section, text);  // a section only this override mentions
    root[section] = YAML::Node(YAML::NodeType::Map);
  }
  root[section][name] = value;
  src.overrides[key] = text;
}

// ---- conversion -------------------------------------------------------------------------------------------------

template <typename Cfg>
void read_section(const YAML::Node& root, const std::string& section, const std::vector<Field<Cfg>>& fields,
                  const Source& src, Cfg& cfg) {
  const YAML::Node body = root[section];
  if (!body || body.IsNull()) return;
  for (const auto& f : fields) {
    const YAML::Node node = body[f.key];
    if (!node) continue;
    const std::string dotted = section + "." + f.key;
    f.read(cfg, Value(node, dotted, src.where(dotted, node)));
  }
}

// heaviside: true = weight: uniform; an explicit weight must agree.
void read_heaviside(const YAML::Node& root, const Source& src, ModelConfig& m) {
  const YAML::Node body = root["model"];
  if (!body || body.IsNull() || !body[kHeaviside]) return;
  const std::string dotted = std::string("model.") + kHeaviside;
  const Value v(body[kHeaviside], dotted, src.where(dotted, body[kHeaviside]));
  const bool heaviside = v.boolean();
  if (body["weight"] && heaviside != (m.weight == ExpertWeight::Uniform))
    v.error(std::string(heaviside ? "true" : "false") + " conflicts with model.weight: " + to_string(m.weight) +
            " (heaviside: true means weight: uniform)");
  if (heaviside) m.weight = ExpertWeight::Uniform;
}

// Cross-key model checks (sae/config.h validate), located at the key the message names when there is one.
void validate_model(const YAML::Node& root, const Source& src, const ModelConfig& model) {
  const YAML::Node body = root["model"];
  if (!body || body.IsNull() || !body["dict_size"])
    fail(src.name, ": missing required key 'model.dict_size' (the total number of latents F)");
  ModelConfig m = model;
  if (m.d <= 0) m.d = 1;  // the input dimension comes from the data; everything else can be checked now
  try {
    validate(m);
  } catch (const Error& e) {
    const std::string msg = e.what();
    std::string where = src.name;
    if (msg.rfind("model.", 0) == 0) {
      const size_t end = msg.find_first_not_of("abcdefghijklmnopqrstuvwxyz_", 6);
      const std::string key = msg.substr(6, end == std::string::npos ? std::string::npos : end - 6);
      if (body[key]) where = src.where("model." + key, body[key]);
    }
    fail(where, ": ", msg);
  }
}

RunConfig convert(const YAML::Node& root, const Source& src) {
  RunConfig c;
  read_section(root, "data", data_fields(), src, c.data);
  c.model.feature_scaling = FeatureScaling::Mean;  // the default arch is the paper's Scale SAE (Eq. 2.5)
  read_section(root, "model", model_fields(), src, c.model);
  read_heaviside(root, src, c.model);
  read_section(root, "train", train_fields(), src, c.train);
  read_section(root, "eval", eval_fields(), src, c.eval);
  read_section(root, "lm", lm_fields(), src, c.lm);
  read_section(root, "parallel", parallel_fields(), src, c.parallel);
  // The reference code's redundancy metric compares against 0.8 (reference-implementations.md §3.8.4, §3.10 #11).
  if (c.model.compat == Compat::Reference && !(root["eval"] && root["eval"]["redundancy_threshold"]))
    c.eval.redundancy_threshold = 0.8;
  validate_model(root, src, c.model);
  for (const char* key : {"text_format", "ood_format"}) {
    const std::string& v = std::string(key) == "text_format" ? c.lm.text_format : c.lm.ood_format;
    if (v != "txt" && v != "pubmedqa") {
      const std::string dotted = std::string("lm.") + key;
      fail(src.where(dotted, root["lm"][key]), ": ", dotted, " '", v, "' is not a text format (valid: txt, pubmedqa)");
    }
  }
  return c;
}

RunConfig from_tree(YAML::Node root, const std::vector<std::string>& overrides, const std::string& source_name) {
  Source src{source_name, {}};
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);  // an empty document
  check_structure(root, src, /*check_unknown=*/false);       // overrides need a sound tree to land in
  for (const std::string& o : overrides) apply_override(root, o, src);
  check_structure(root, src, /*check_unknown=*/true);
  return convert(root, src);
}

template <typename Cfg>
void write_section(YAML::Emitter& out, const char* section, const std::vector<Field<Cfg>>& fields, const Cfg& cfg,
                   bool omit_if_empty = false) {
  if (omit_if_empty && std::none_of(fields.begin(), fields.end(), [&](const auto& f) { return bool(f.write(cfg)); }))
    return;
  out << YAML::Key << section << YAML::Value << YAML::BeginMap;
  for (const auto& f : fields) {
    const std::optional<Written> w = f.write(cfg);
    if (!w) continue;
    out << YAML::Key << f.key << YAML::Value;
    if (w->quoted) out << YAML::DoubleQuoted;
    out << w->text;
  }
  out << YAML::EndMap;
}

}  // namespace

RunConfig run_config_from_yaml(const YAML::Node& root, const std::vector<std::string>& overrides,
                               const std::string& source_name) {
  return from_tree(YAML::Clone(root), overrides, source_name);
}

RunConfig parse_run_config_text(const std::string& yaml_text, const std::vector<std::string>& overrides,
                                const std::string& source_name) {
  std::vector<YAML::Node> docs;
  try {
    docs = YAML::LoadAll(yaml_text);
  } catch (const YAML::ParserException& e) {
    fail(source_name, ":", e.mark.line + 1, ":", e.mark.column + 1, ": malformed YAML: ", e.msg);
  }
  if (docs.size() > 1)
    fail(source_name, ": ", docs.size(), " YAML documents ('---'); a run configuration is one document");
  return from_tree(docs.empty() ? YAML::Node() : docs[0], overrides, source_name);
}

RunConfig load_run_config(const std::string& yaml_path, const std::vector<std::string>& overrides) {
  std::ifstream in(yaml_path, std::ios::binary);
  if (!in) fail("cannot read run configuration '", yaml_path, "': ", std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail("cannot read run configuration '", yaml_path, "': read error");
  return parse_run_config_text(text.str(), overrides, yaml_path);
}

std::string to_yaml(const RunConfig& c) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  write_section(out, "data", data_fields(), c.data);
  write_section(out, "model", model_fields(), c.model);
  write_section(out, "train", train_fields(), c.train);
  write_section(out, "eval", eval_fields(), c.eval);
  write_section(out, "lm", lm_fields(), c.lm);
  write_section(out, "parallel", parallel_fields(), c.parallel, /*omit_if_empty=*/true);  // absent while automatic
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

bool same_checkpoint_identity(const std::string& written, const std::string& identity) {
  if (written == identity) return true;
  try {
    return checkpoint_identity(parse_run_config_text(written, {}, "the checkpoint's configuration")) == identity;
  } catch (const Error&) {
    return false;  // not a configuration this version reads: not the same run
  }
}

std::string checkpoint_identity(const RunConfig& c) {
  RunConfig without = c;
  without.parallel = ParallelConfig{};
  const TrainConfig defaults;
  without.train.device = defaults.device;    // which GPU, and how many CPU threads: where the run goes on, not
  without.train.threads = defaults.threads;  // what it trains (a resume elsewhere agrees to rounding)
  without.data.prefetch = DataConfig{}.prefetch;  // the same batches either way
  return to_yaml(without);
}

}  // namespace moesae
