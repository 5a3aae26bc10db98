#include "run/grid.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <set>

#include "core/error.h"

namespace moesae {
namespace {

[[noreturn]] void fail_at(const Origin& o, const std::string& what) { fail(o.location(), ": ", what); }

// "a, b, c"
std::string join(const std::vector<std::string>& items) {
  std::string s;
  for (const auto& i : items) s += (s.empty() ? "" : ", ") + i;
  return s;
}

void check_keys(const std::string& file, const YAML::Node& map, const std::vector<std::string>& allowed,
                const std::string& where) {
  if (!map.IsMap()) fail_at(origin_of(file, map), where + " must be a mapping");
  for (auto it = map.begin(); it != map.end(); ++it) {
    const std::string key = it->first.Scalar();
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
      fail_at(origin_of(file, it->first), "unknown key '" + key + "' in " + where + " (valid: " + join(allowed) + ")");
  }
}

// A list of scalars (a lone scalar is a list of one when `scalar_ok`).
std::vector<YAML::Node> scalar_list(const std::string& file, const YAML::Node& n, const Origin& o, bool scalar_ok) {
  std::vector<YAML::Node> out;
  if (n.IsScalar() && scalar_ok) return {n};
  if (!n.IsSequence() || n.size() == 0)
    fail_at(o, std::string("expected a non-empty list of values") +
                   (n.IsScalar() ? " (a single value belongs in base)" : ""));
  for (const YAML::Node& v : n) {
    if (!v.IsScalar()) fail_at(origin_of(file, v, o.what), "values must be scalars (numbers, names, booleans)");
    out.push_back(v);
  }
  return out;
}

std::vector<std::string> preset_names(const GridSpec& g) {
  std::vector<std::string> names;
  for (const auto& kv : g.presets) names.push_back(kv.first);
  return names;
}

void check_preset_value(const GridSpec& g, const std::string& file, const YAML::Node& v, const std::string& what) {
  if (!g.presets.count(v.Scalar()))
    fail_at(origin_of(file, v, what), "preset '" + v.Scalar() + "' is not defined" +
                                          (g.presets.empty() ? std::string(" (the file has no presets:)")
                                                             : " (presets: " + join(preset_names(g)) + ")"));
}

// include / exclude / flops_match.when: one entry (a mapping) or a list of entries.
std::vector<GridFilter> parse_filters(const GridSpec& g, const std::string& file, const YAML::Node& n,
                                      const std::string& what) {
  std::vector<YAML::Node> entries;
  if (n.IsMap())
    entries.push_back(n);
  else if (n.IsSequence())
    for (const YAML::Node& e : n) entries.push_back(e);
  else
    fail_at(origin_of(file, n, what), "expected a mapping {key: value, ...} or a list of them");
  std::vector<GridFilter> out;
  for (const YAML::Node& e : entries) {
    const Origin o = origin_of(file, e, what);
    if (!e.IsMap()) fail_at(o, "each entry must be a mapping {key: value, ...}");
    if (e.size() == 0) fail_at(o, "an empty entry would match every point");
    GridFilter f;
    f.origin = o;
    for (auto it = e.begin(); it != e.end(); ++it) {
      const std::string path = it->first.Scalar();
      check_config_key(path, origin_of(file, it->first, what + " key '" + path + "'"), true);
      std::vector<YAML::Node> values = scalar_list(file, it->second, origin_of(file, it->second, what), true);
      if (path == "preset")
        for (const YAML::Node& v : values) check_preset_value(g, file, v, what);
      f.keys.emplace_back(path, values);
    }
    out.push_back(std::move(f));
  }
  return out;
}

FlopsMatch parse_flops_match(const GridSpec& g, const std::string& file, const YAML::Node& n) {
  FlopsMatch m;
  m.origin = origin_of(file, n, "flops_match");
  check_keys(file, n, {"reference", "adjust", "measure", "tolerance", "when"}, "flops_match");
  const YAML::Node ref = n["reference"];
  if (!ref || !ref.IsMap() || ref.size() == 0)
    fail_at(m.origin, "flops_match needs 'reference': the values that turn a point into its reference run, e.g. "
                      "{model.arch: topk, model.dict_size: 768}");
  for (auto it = ref.begin(); it != ref.end(); ++it) {
    const std::string path = it->first.Scalar();
    const Origin o = origin_of(file, it->first, "flops_match reference key '" + path + "'");
    check_config_key(path, o, false);
    if (!it->second.IsScalar()) fail_at(o, "expected one value");
    m.reference.push_back({path, it->second, o});
  }
  if (n["adjust"]) {
    if (!n["adjust"].IsScalar()) fail_at(origin_of(file, n["adjust"], "flops_match"), "'adjust' must be a key name");
    m.adjust = n["adjust"].Scalar();
    if (m.adjust != "model.dict_size")
      fail_at(origin_of(file, n["adjust"], "flops_match"),
              "adjust: '" + m.adjust + "' cannot be sized; the adjustable key is model.dict_size");
  }
  if (n["measure"]) {
    try {
      m.measure = parse_flops_measure(n["measure"].Scalar());
    } catch (const Error& e) {
      fail_at(origin_of(file, n["measure"], "flops_match"), e.what());
    }
  }
  if (n["tolerance"]) {
    char* end = nullptr;
    const std::string s = n["tolerance"].Scalar();
    m.tolerance = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0' || !(m.tolerance > 0 && m.tolerance < 1))
      fail_at(origin_of(file, n["tolerance"], "flops_match"),
              "tolerance must be a relative difference in (0, 1), e.g. 0.01 (got '" + s + "')");
  }
  if (n["when"]) m.when = parse_filters(g, file, n["when"], "flops_match when");
  return m;
}

bool parse_double(const std::string& s, double& v) {
  if (s.empty()) return false;
  char* end = nullptr;
  v = std::strtod(s.c_str(), &end);
  return *end == '\0' && std::isfinite(v) && !std::isspace(static_cast<unsigned char>(s[0]));
}

}  // namespace

std::string Origin::location() const {
  std::string s = file;
  if (line > 0) s += ":" + std::to_string(line);
  if (!what.empty()) s += ": " + what;
  return s;
}

Origin origin_of(const std::string& file, const YAML::Node& node, const std::string& what) {
  const YAML::Mark m = node.Mark();
  return {file, m.is_null() ? 0 : m.line + 1, what};
}

namespace {
// The run config's own complaint about a dotted key ("unknown key 'model.kk' (did you mean 'k'?)", "unknown section
// ..."), through a probe override; "" when the key is known.
std::string unknown_key_error(const std::string& path) {
  const std::string text = path + "=0", prefix = "override '" + text + "': ";
  try {
    run_config_from_yaml(YAML::Node(YAML::NodeType::Map), {text}, "probe");
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.rfind(prefix, 0) == 0) {
      const std::string body = msg.substr(prefix.size());
      if (body.rfind("unknown key", 0) == 0 || body.rfind("unknown section", 0) == 0) return body;
    }
  }
  return "";
}
}  // namespace

void check_config_key(const std::string& path, const Origin& origin, bool allow_preset) {
  if (allow_preset && path == "preset") return;
  const size_t dot = path.find('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == path.size() || path.find('.', dot + 1) != std::string::npos)
    fail_at(origin, std::string("expected a run-config key section.key (e.g. model.k or train.lr)") +
                        (allow_preset ? " or preset" : ""));
  const std::string err = unknown_key_error(path);
  if (!err.empty()) fail_at(origin, err);
}

GridSpec parse_grid(const std::string& file, const YAML::Node& root) {
  GridSpec g;
  if (const YAML::Node p = root["presets"]) {
    if (!p.IsMap()) fail_at(origin_of(file, p, "presets"), "expected a mapping of named presets");
    for (auto it = p.begin(); it != p.end(); ++it) {
      const std::string name = it->first.Scalar();
      const std::string what = "preset '" + name + "'";
      const YAML::Node body = it->second;
      if (!body.IsMap()) fail_at(origin_of(file, it->first, what), "a preset is a mapping of run-config sections");
      for (auto s = body.begin(); s != body.end(); ++s) {
        const std::string section = s->first.Scalar();
        if (!s->second.IsMap()) {
          const std::string err = unknown_key_error(section + ".x");
          if (err.rfind("unknown section", 0) == 0) fail_at(origin_of(file, s->first, what), err);
          fail_at(origin_of(file, s->first, what), "section '" + section + "' must be a mapping of keys");
        }
        for (auto k = s->second.begin(); k != s->second.end(); ++k)
          check_config_key(section + "." + k->first.Scalar(), origin_of(file, k->first, what), false);
      }
      g.presets[name] = body;
      g.preset_origins[name] = origin_of(file, it->first, what);
    }
  }
  std::set<std::string> varied;
  auto add_varied = [&](const std::string& path, const Origin& o) {
    if (!varied.insert(path).second) fail_at(o, "'" + path + "' is varied twice (each key may vary on one axis)");
    g.varied.push_back(path);
  };
  if (const YAML::Node grid = root["grid"]) {
    if (!grid.IsMap()) fail_at(origin_of(file, grid, "grid"), "expected a mapping {key: [values], ...}");
    for (auto it = grid.begin(); it != grid.end(); ++it) {
      const std::string path = it->first.Scalar();
      const std::string what = "grid key '" + path + "'";
      const Origin o = origin_of(file, it->first, what);
      check_config_key(path, o, true);
      add_varied(path, o);
      std::vector<std::vector<Assignment>> axis;
      for (const YAML::Node& v : scalar_list(file, it->second, o, false)) {
        if (path == "preset") check_preset_value(g, file, v, what);
        axis.push_back({{path, v, origin_of(file, v, what)}});
      }
      g.axes.push_back(std::move(axis));
    }
  }
  if (const YAML::Node zip = root["zip"]) {
    std::vector<YAML::Node> groups;
    if (zip.IsMap())
      groups.push_back(zip);
    else if (zip.IsSequence())
      for (const YAML::Node& z : zip) groups.push_back(z);
    else
      fail_at(origin_of(file, zip, "zip"), "expected a list of groups {key: [values], ...}");
    for (const YAML::Node& group : groups) {
      if (!group.IsMap() || group.size() == 0)
        fail_at(origin_of(file, group, "zip"), "each group is a non-empty mapping {key: [values], ...}");
      std::vector<std::vector<Assignment>> axis;
      size_t len = 0;
      std::string first;
      for (auto it = group.begin(); it != group.end(); ++it) {
        const std::string path = it->first.Scalar();
        const std::string what = "zip key '" + path + "'";
        const Origin o = origin_of(file, it->first, what);
        check_config_key(path, o, true);
        add_varied(path, o);
        const std::vector<YAML::Node> values = scalar_list(file, it->second, o, false);
        if (axis.empty()) {
          len = values.size(), first = path;
          axis.resize(len);
        } else if (values.size() != len) {
          fail_at(o, "has " + std::to_string(values.size()) + " values but '" + first + "' has " +
                         std::to_string(len) + " (the lists of a zip group have equal lengths)");
        }
        for (size_t i = 0; i < len; ++i) {
          if (path == "preset") check_preset_value(g, file, values[i], what);
          axis[i].push_back({path, values[i], origin_of(file, values[i], what)});
        }
      }
      g.axes.push_back(std::move(axis));
    }
  }
  if (root["include"]) g.include = parse_filters(g, file, root["include"], "include");
  if (root["exclude"]) g.exclude = parse_filters(g, file, root["exclude"], "exclude");
  if (const YAML::Node fm = root["flops_match"]) {
    if (fm.IsSequence()) {
      for (const YAML::Node& rule : fm) g.flops_match.push_back(parse_flops_match(g, file, rule));
    } else {
      g.flops_match.push_back(parse_flops_match(g, file, fm));
    }
  }
  return g;
}

std::vector<GridPoint> expand_grid(const GridSpec& spec) {
  std::vector<GridPoint> points{GridPoint{}};
  for (const auto& axis : spec.axes) {
    std::vector<GridPoint> next;
    next.reserve(points.size() * axis.size());
    for (const GridPoint& p : points)
      for (const auto& alternative : axis) {
        GridPoint q = p;
        q.insert(q.end(), alternative.begin(), alternative.end());
        next.push_back(std::move(q));
      }
    points = std::move(next);
  }
  return points;
}

bool same_value(const std::string& want, const std::string& have) {
  double a = 0, b = 0;
  if (parse_double(want, a) && parse_double(have, b)) return a == b;
  bool x = false, y = false;
  if (YAML::convert<bool>::decode(YAML::Node(want), x) && YAML::convert<bool>::decode(YAML::Node(have), y))
    return x == y;
  return want == have;
}

bool filter_matches(const GridFilter& filter, const ValueLookup& lookup) {
  for (const auto& [path, values] : filter.keys) {
    const std::optional<std::string> have = lookup(path);
    if (!have) return false;
    bool any = false;
    for (const YAML::Node& v : values) any = any || same_value(v.Scalar(), *have);
    if (!any) return false;
  }
  return true;
}

std::string resolved_value(const RunConfig& config, const std::string& path) {
  const size_t dot = path.find('.');
  const std::string section = path.substr(0, dot), key = path.substr(dot + 1);
  if (path == "model.heaviside") return config.model.weight == ExpertWeight::Uniform ? "true" : "false";
  if (path == "model.d") return std::to_string(config.model.d);
  const YAML::Node root = YAML::Load(to_yaml(config));
  const YAML::Node v = root[section][key];
  return v && v.IsScalar() ? v.Scalar() : "";
}

uint64_t fnv1a64(const std::string& text) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char ch : text) {
    h ^= ch;
    h *= 1099511628211ull;
  }
  return h;
}

std::string config_hash(const RunConfig& config) {
  RunConfig c = config;
  c.model.d = 0;
  const uint64_t h = fnv1a64(to_yaml(c));
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string point_label(const std::vector<std::pair<std::string, std::string>>& values) {
  static const std::map<std::string, std::string> kShort = {
      {"preset", ""},          {"model.arch", ""},        {"model.compat", ""},
      {"model.dict_size", "F"}, {"model.experts", "E"},   {"model.active_experts", "e"},
      {"model.k", "k"},         {"model.feature_scaling", "fs"}, {"model.lb_alpha", "lb"},
      {"model.k_aux", "kaux"},  {"model.auxk_alpha", "auxa"},    {"model.l1_coeff", "l1"},
      {"train.lr", "lr"},       {"train.steps", "steps"}, {"train.batch_size", "bs"},
      {"train.seed", "seed"}};
  std::string label;
  for (const auto& [path, value] : values) {
    auto it = kShort.find(path);
    const std::string name = it != kShort.end() ? it->second : path.substr(path.find('.') + 1);
    std::string part;
    if (name.empty())
      part = value;
    else if (!value.empty() && (std::isdigit(static_cast<unsigned char>(value[0])) || value[0] == '.' ||
                                value[0] == '-' || value[0] == '+'))
      part = name + value;
    else
      part = name + "-" + value;
    for (char& c : part)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '+' || c == '-')) c = '_';
    if (part.empty()) continue;
    if (!label.empty() && label.size() + 1 + part.size() > 60) break;
    label += (label.empty() ? "" : "-") + part;
  }
  if (label.size() > 60) label.resize(60);
  return label.empty() ? "run" : label;
}

}  // namespace moesae
