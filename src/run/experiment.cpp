#include "run/experiment.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <set>

#include "core/log.h"
#include "run/record.h"
#include "run/train_run.h"

namespace moesae {
namespace {

[[noreturn]] void fail_at(const std::string& file, const YAML::Node& node, const std::string& what) {
  fail(file, ":", node.Mark().line + 1, ": ", what);
}

void check_keys(const std::string& file, const YAML::Node& map, const std::set<std::string>& allowed,
                const std::string& where) {
  if (!map.IsMap()) fail_at(file, map, where + " must be a mapping");
  for (auto it = map.begin(); it != map.end(); ++it) {
    const std::string key = it->first.as<std::string>();
    if (!allowed.count(key)) {
      std::string valid;
      for (auto& a : allowed) valid += (valid.empty() ? "" : ", ") + a;
      fail_at(file, it->first, "unknown key '" + key + "' in " + where + " (valid: " + valid + ")");
    }
  }
}

// base <- overlay, recursively for mappings; scalars and sequences are replaced.
YAML::Node merge(const YAML::Node& base, const YAML::Node& overlay) {
  if (!base || !base.IsMap() || !overlay.IsMap()) return YAML::Clone(overlay);
  YAML::Node out = YAML::Clone(base);
  for (auto it = overlay.begin(); it != overlay.end(); ++it) {
    const std::string key = it->first.as<std::string>();
    out[key] = merge(out[key], it->second);
  }
  return out;
}

template <typename T>
T scalar(const std::string& file, const YAML::Node& n, const std::string& key) {
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    fail_at(file, n, "'" + key + "' has the wrong type");
  }
}

SynthConfig parse_synthetic(const std::string& file, const YAML::Node& n) {
  check_keys(file, n,
             {"tokens", "d", "features", "groups", "tightness", "alpha", "active", "in_group", "second_group",
              "magnitude_sigma", "noise", "seed", "f16"},
             "synthetic");
  SynthConfig c;
  auto num = [&](const char* key, auto& field) {
    if (!n[key]) return;
    using T = std::decay_t<decltype(field)>;
    if constexpr (std::is_integral_v<T>) {
      const double v = scalar<double>(file, n[key], key);  // accepts 1e6
      if (v != std::floor(v) || v < 0 || v > 9.0e15)
        fail_at(file, n[key], std::string("synthetic.") + key + " must be a non-negative integer");
      field = static_cast<T>(v);
    } else {
      field = scalar<double>(file, n[key], key);
    }
  };
  num("tokens", c.tokens);
  num("d", c.d);
  num("features", c.features);
  num("groups", c.groups);
  num("tightness", c.cluster_tightness);
  num("alpha", c.alpha);
  num("active", c.active);
  num("in_group", c.in_group);
  num("second_group", c.second_group);
  num("magnitude_sigma", c.magnitude_sigma);
  num("noise", c.noise);
  num("seed", c.seed);
  if (n["f16"]) c.f16 = scalar<bool>(file, n["f16"], "f16");
  return c;
}

ExtractSpec parse_extract(const std::string& file, const YAML::Node& n) {
  check_keys(file, n, {"model", "tokenizer", "text", "format", "layer", "ctx", "max_tokens", "exclude_bos"},
             "extract");
  ExtractSpec s;
  auto str = [&](const char* key, std::string& field) {
    if (n[key]) field = scalar<std::string>(file, n[key], std::string("extract.") + key);
  };
  auto integer = [&](const char* key, auto& field, double lo) {
    if (!n[key]) return;
    const double v = scalar<double>(file, n[key], std::string("extract.") + key);  // accepts 3e5
    if (v != std::floor(v) || v < lo || v > 9.0e15)
      fail_at(file, n[key], std::string("extract.") + key + " must be an integer >= " + std::to_string(int(lo)));
    field = static_cast<std::decay_t<decltype(field)>>(v);
  };
  str("model", s.model);
  str("tokenizer", s.tokenizer);
  str("text", s.text);
  str("format", s.format);
  if (s.format != "txt" && s.format != "pubmedqa")
    fail_at(file, n["format"], "extract.format '" + s.format + "' is not a text format (valid: txt, pubmedqa)");
  if (!n["layer"]) fail_at(file, n, "extract needs 'layer' (the block whose resid_post is captured)");
  integer("layer", s.layer, 0);
  integer("ctx", s.ctx, 2);
  integer("max_tokens", s.max_tokens, 0);
  if (n["exclude_bos"]) s.exclude_bos = scalar<bool>(file, n["exclude_bos"], "extract.exclude_bos");
  return s;
}

}  // namespace

Experiment load_experiment(const std::string& path, const std::vector<std::string>& overrides) {
  if (!std::filesystem::exists(path)) fail("experiment file '", path, "' does not exist");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    fail(path, ":", e.mark.line + 1, ": malformed YAML: ", e.msg);
  }
  check_keys(path, root, {"name", "description", "out", "synthetic", "extract", "base", "runs"}, "the experiment");
  if (root["synthetic"] && root["extract"])
    fail_at(path, root["extract"], "an experiment has either 'synthetic' or 'extract' data, not both");
  Experiment e;
  e.source = path;
  e.name = root["name"] ? scalar<std::string>(path, root["name"], "name")
                        : std::filesystem::path(path).stem().string();
  e.out = root["out"] ? scalar<std::string>(path, root["out"], "out") : "out/" + e.name;
  if (root["synthetic"]) {
    e.has_synthetic = true;
    e.synthetic = parse_synthetic(path, root["synthetic"]);
    e.synthetic_path = e.out + "/data.h5";
  }
  if (root["extract"]) {
    e.has_extract = true;
    e.extract = parse_extract(path, root["extract"]);
    e.extract_path = e.out + "/acts.h5";
  }
  const YAML::Node base = root["base"] ? root["base"] : YAML::Node(YAML::NodeType::Map);
  if (!root["runs"] || !root["runs"].IsSequence() || root["runs"].size() == 0)
    fail(path, ": 'runs' must be a non-empty list of runs");
  std::set<std::string> names;
  for (const YAML::Node& r : root["runs"]) {
    if (!r.IsMap() || !r["name"]) fail_at(path, r, "every run needs a 'name'");
    ExperimentRun run;
    run.name = scalar<std::string>(path, r["name"], "name");
    if (!names.insert(run.name).second) fail_at(path, r["name"], "duplicate run name '" + run.name + "'");
    YAML::Node overlay = YAML::Clone(r);
    overlay.remove("name");
    YAML::Node merged = merge(base, overlay);
    if (e.has_synthetic && !(merged["data"] && merged["data"]["path"])) merged["data"]["path"] = e.synthetic_path;
    if (e.has_extract && !(merged["data"] && merged["data"]["path"])) merged["data"]["path"] = e.extract_path;
    run.config = run_config_from_yaml(merged, overrides, path + " (run '" + run.name + "')");
    run.record = e.out + "/" + run.name + ".h5";
    e.runs.push_back(std::move(run));
  }
  return e;
}

// Whether a record was trained with this run's configuration (the input dimension comes from the data).
bool record_matches(const std::string& record, const RunConfig& config) {
  RunConfig stored = parse_run_config_text(RunRecord::load(record, false).config_yaml, {}, record);
  RunConfig wanted = config;
  stored.model.d = wanted.model.d = 0;
  return to_yaml(stored) == to_yaml(wanted);
}

int run_experiment(const Experiment& e, const ExperimentOptions& opt) {
  for (const std::string& name : opt.only)
    if (std::none_of(e.runs.begin(), e.runs.end(), [&](const ExperimentRun& r) { return r.name == name; })) {
      std::string names;
      for (const ExperimentRun& r : e.runs) names += (names.empty() ? "" : ", ") + r.name;
      fail("--only ", name, ": ", e.source, " has no run of that name (runs: ", names, ")");
    }
  std::filesystem::create_directories(e.out);
  bool data_changed = false;
  if (e.has_synthetic && std::filesystem::exists(e.synthetic_path) &&
      !synthetic_file_matches(e.synthetic_path, e.synthetic)) {
    spdlog::warn("{} was generated with other synthetic settings: regenerating it and retraining every run",
                 e.synthetic_path);
    data_changed = true;
  }
  if (e.has_synthetic && (data_changed || !std::filesystem::exists(e.synthetic_path))) {
    Timer t;
    spdlog::info("generating synthetic activations: {} tokens, d={}, {} features in {} groups -> {}",
                 e.synthetic.tokens, e.synthetic.d, e.synthetic.features, e.synthetic.groups, e.synthetic_path);
    write_synthetic(e.synthetic, e.synthetic_path);
    spdlog::info("synthetic data ready in {:.1f}s", t.seconds());
  }
  if (e.has_extract && std::filesystem::exists(e.extract_path) && !extracted_file_matches(e.extract_path, e.extract)) {
    spdlog::warn("{} was extracted with other settings: extracting again and retraining every run", e.extract_path);
    data_changed = true;
  }
  if (e.has_extract && (data_changed || !std::filesystem::exists(e.extract_path))) {
    spdlog::info("extracting activations: {} layer {} on {} -> {}", e.extract.model, e.extract.layer, e.extract.text,
                 e.extract_path);
    extract_activations(e.extract, e.extract_path);
  }
  int failed = 0, done = 0;
  const size_t total = opt.only.empty() ? e.runs.size() : opt.only.size();
  for (const ExperimentRun& r : e.runs) {
    if (!opt.only.empty() && std::find(opt.only.begin(), opt.only.end(), r.name) == opt.only.end()) continue;
    ++done;
    if (!opt.rerun && !data_changed && std::filesystem::exists(r.record)) {
      if (record_matches(r.record, r.config)) {
        spdlog::info("[{}/{}] {}: finished earlier ({}), skipped", done, total, r.name, r.record);
        continue;
      }
      spdlog::warn("[{}/{}] {}: {} was trained with another configuration: retraining", done, total, r.name,
                   r.record);
    }
    spdlog::info("[{}/{}] {}", done, total, r.name);
    try {
      TrainRunResult res = train_run(r.config, TrainRunOptions{r.record, -1, false});
      if (!res.finished) {
        spdlog::warn("{} stopped at step {}; rerun to resume", r.name, res.steps_done);
        return failed + 1;
      }
    } catch (const Error& err) {
      spdlog::error("run '{}' failed: {}", r.name, err.what());
      ++failed;
    }
  }
  return failed;
}

std::string comparison_table(const Experiment& e) {
  struct Col {
    const char* key;
    const char* title;
    const char* fmt;
  };
  const std::vector<Col> all_cols{
      {"mse", "MSE", "%10.4g"},          {"fvu", "FVU", "%8.4f"},
      {"l0", "L0", "%7.1f"},             {"redundancy", "redund.", "%8.4f"},
      {"gt_recovered", "recovered", "%9.3f"}, {"gt_mmcs", "MMCS", "%7.3f"},
      {"loss_recovered", "LossRec", "%8.4f"}, {"delta_ce", "dCE", "%7.4f"},
      {"fvu_ood", "FVU-ood", "%8.4f"},   {"loss_recovered_ood", "LR-ood", "%7.4f"},
      {"dead_fraction", "dead", "%6.3f"}, {"train_seconds", "time s", "%7.1f"}};
  // Columns that some finished run has (ground truth only for synthetic data, Loss Recovered only with an LM).
  std::vector<RunRecord> records;
  std::vector<bool> has_record;
  for (const ExperimentRun& r : e.runs) {
    has_record.push_back(std::filesystem::exists(r.record));
    records.push_back(has_record.back() ? RunRecord::load(r.record, false) : RunRecord());
  }
  std::vector<Col> cols;
  for (const Col& c : all_cols)
    for (size_t i = 0; i < records.size(); ++i)
      if (has_record[i] && records[i].final_scalars.count(c.key)) {
        cols.push_back(c);
        break;
      }
  std::string out;
  char buf[256];
  std::snprintf(buf, sizeof buf, "%-14s %-7s %6s %4s %3s %4s", "run", "arch", "F", "E", "e", "k");
  out += buf;
  for (auto& c : cols) {
    std::snprintf(buf, sizeof buf, " %*s", std::atoi(c.fmt + 1), c.title);
    out += buf;
  }
  out += "\n";
  for (size_t i = 0; i < e.runs.size(); ++i) {
    const ExperimentRun& r = e.runs[i];
    const ModelConfig& m = r.config.model;
    std::snprintf(buf, sizeof buf, "%-14s %-7s %6d %4d %3d %4d", r.name.c_str(), to_string(m.arch), m.dict_size,
                  m.experts, m.active_experts, m.k);
    out += buf;
    if (!has_record[i]) {
      out += "  (no record)\n";
      continue;
    }
    const RunRecord& rec = records[i];
    for (auto& c : cols) {
      auto it = rec.final_scalars.find(c.key);
      if (it == rec.final_scalars.end())
        std::snprintf(buf, sizeof buf, " %*s", std::atoi(c.fmt + 1), "-");
      else {
        std::string f = std::string(" ") + c.fmt;
        std::snprintf(buf, sizeof buf, f.c_str(), it->second);
      }
      out += buf;
    }
    out += "\n";
  }
  return out;
}

}  // namespace moesae
