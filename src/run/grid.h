// moesae run: the grid part of an experiment file (run/experiment.h): axes to expand into runs, filters, presets and
// the FLOPs-matching rule. The format, the expansion order, the filter semantics and the run ids are documented in
// docs/grids.md.
//
//   presets: {paper: {model: {compat: paper}}, reference: {model: {compat: reference}}}
//   grid:                                     # cartesian product (the first axis varies slowest)
//     model.k: [8, 32]
//     preset: [paper, reference]
//   zip:                                      # each group: equal-length lists varied together (one axis)
//     - {model.arch: [scale, switch, topk], model.experts: [64, 32, 1], model.active_experts: [2, 1, 1]}
//   include: [{model.arch: scale}]            # when present: keep only points matching at least one entry
//   exclude: [{model.arch: topk, model.k: 8}] # drop points matching any entry (an entry: all of its keys)
//   flops_match: {reference: {model.arch: topk, model.dict_size: 768}, adjust: model.dict_size, measure: encoder}
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "run/config.h"
#include "run/flops.h"

namespace moesae {

// Where a value came from, for error messages: "file:line: what".
struct Origin {
  std::string file;
  int line = 0;      // 1-based; 0: unknown
  std::string what;  // "grid key 'model.k'", "preset 'paper'", "run 'a'", "flops_match", or "" (base)
  std::string location() const;  // "file:7: grid key 'model.k'"
};
// The origin of a YAML node of `file` (its line).
Origin origin_of(const std::string& file, const YAML::Node& node, const std::string& what = "");

// One value a grid point sets: a dotted run-config path ("model.k") or "preset", and its YAML scalar.
struct Assignment {
  std::string path;
  YAML::Node value;
  Origin origin;
};
using GridPoint = std::vector<Assignment>;

// One include/exclude entry: it matches a point when every key matches (a list of values: any of them).
struct GridFilter {
  std::vector<std::pair<std::string, std::vector<YAML::Node>>> keys;
  Origin origin;
};

// Sizes `adjust` (model.dict_size) so that the point's FLOPs per token equal those of its reference: the point's
// own configuration with the `reference` values applied (when the reference changes model.arch, the point's
// routing keys are dropped first).
struct FlopsMatch {
  Origin origin;
  std::vector<Assignment> reference;
  std::string adjust = "model.dict_size";
  FlopsMeasure measure = FlopsMeasure::Train;
  double tolerance = 0.01;        // relative
  std::vector<GridFilter> when;   // the points the rule applies to (any entry); empty: all
};

struct GridSpec {
  // Axes in expansion order; an axis is a list of alternatives, each a list of assignments (one for a `grid:` key,
  // one per key for a `zip:` group).
  std::vector<std::vector<std::vector<Assignment>>> axes;
  std::vector<std::string> varied;  // the varied paths, in axis order
  std::vector<GridFilter> include, exclude;
  std::map<std::string, YAML::Node> presets;  // name -> overlay of run-config sections
  std::map<std::string, Origin> preset_origins;
  std::vector<FlopsMatch> flops_match;  // the first rule whose `when` matches a point applies
  bool has_points() const { return !axes.empty(); }
};

// Reads grid, zip, include, exclude, presets and flops_match of an experiment file's root (all optional). Keys and
// preset names are checked here (errors name the file, the line and the key); values when the points are converted.
GridSpec parse_grid(const std::string& file, const YAML::Node& root);

// The cartesian product of the axes (the last axis varies fastest); one empty point when there are no axes.
std::vector<GridPoint> expand_grid(const GridSpec& spec);

// The value text a path has for a point (nullopt: the point has none); used to evaluate filters.
using ValueLookup = std::function<std::optional<std::string>(const std::string& path)>;
bool filter_matches(const GridFilter& filter, const ValueLookup& lookup);
// A filter value against a point's value text: numerically when both are numbers (1e-4 == 0.0001), as booleans when
// both are booleans, else as strings.
bool same_value(const std::string& want, const std::string& have);

// Fails ("file:7: grid key 'model.kk': unknown key 'model.kk' (did you mean 'k'?)", the run config's wording) unless
// `path` is a key of the run configuration (or "preset" where allowed).
void check_config_key(const std::string& path, const Origin& origin, bool allow_preset);

// The value of a dotted path in a resolved configuration, as to_yaml writes it ("8", "scale", "0.0001").
std::string resolved_value(const RunConfig& config, const std::string& path);

// 64-bit FNV-1a of to_yaml(config) with model.d = 0 (as record matching compares configs), 16 hex digits. The same
// on every machine and in every run; changes exactly when the resolved configuration does.
std::string config_hash(const RunConfig& config);
uint64_t fnv1a64(const std::string& text);

// The readable part of a point's id from its varied values: "scale-k8-e2", "topk-F768-lr1e-4". Keys with a
// short name: model.dict_size F, experts E, active_experts e, k k, feature_scaling fs, train.lr lr, ...; model.arch
// and preset values stand alone. At most 60 characters of [A-Za-z0-9._+-].
std::string point_label(const std::vector<std::pair<std::string, std::string>>& values);

}  // namespace moesae
