#include "run/collect.h"

#include <hdf5.h>

#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>

#include "core/h5.h"
#include "core/version.h"
#include "run/grid.h"
#include "run/plan.h"
#include "run/record.h"

namespace moesae {
namespace {

constexpr const char* kFormat = "moesae-grid-collection";
constexpr int64_t kFormatVersion = 1;

// A 1-D dataset of variable-length UTF-8 strings (h5py: f[name].asstr()[()]).
void write_strings(h5::File& f, const std::string& name, const std::vector<std::string>& values) {
  const hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, H5T_VARIABLE);
  H5Tset_cset(type, H5T_CSET_UTF8);
  const hsize_t n = values.size();
  const hid_t space = H5Screate_simple(1, &n, nullptr);
  const hid_t ds = H5Dcreate2(f.id(), name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  std::vector<const char*> ptrs;
  for (const std::string& v : values) ptrs.push_back(v.c_str());
  const bool ok = ds >= 0 && (n == 0 || H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()) >= 0);
  if (ds >= 0) H5Dclose(ds);
  H5Sclose(space);
  H5Tclose(type);
  if (!ok) fail("'", f.path(), "': cannot write the string dataset '", name, "'");
}

bool is_number(const std::string& s, double& v) {
  if (s.empty()) return false;
  char* end = nullptr;
  v = std::strtod(s.c_str(), &end);
  return *end == '\0';
}

}  // namespace

CollectSummary collect_experiment(const Experiment& e, const std::string& out_path,
                                  const std::vector<std::string>& only) {
  const std::vector<const ExperimentRun*> runs = select_runs(e, only);
  const std::vector<PlannedRun> planned = plan_runs(e, runs);
  CollectSummary summary;
  summary.runs = int(runs.size());

  // Read every finished record once (a record is complete or absent: they are renamed into place).
  std::vector<std::optional<RunRecord>> records(runs.size());
  std::vector<std::string> status(runs.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    const ExperimentRun& r = *runs[i];
    status[i] = planned[i].status.text();
    if (planned[i].status.state != RunStatus::State::Done) {
      summary.missing.emplace_back(r.name, status[i]);
      continue;
    }
    try {
      RunRecord rec = RunRecord::load(r.record, false);
      RunConfig stored = parse_run_config_text(rec.config_yaml, {}, r.record);
      RunConfig wanted = r.config;
      stored.model.d = wanted.model.d = 0;
      if (to_yaml(stored) != to_yaml(wanted)) {  // replaced by another configuration since the status was taken
        status[i] = "stale";
        summary.missing.emplace_back(r.name, status[i]);
        continue;
      }
      records[i] = std::move(rec);
      status[i] = "finished";
      ++summary.collected;
    } catch (const Error& err) {
      status[i] = "unreadable";
      summary.missing.emplace_back(r.name, std::string("unreadable: ") + err.what());
    }
  }

  std::set<std::string> final_names;
  for (const auto& rec : records)
    if (rec)
      for (const auto& kv : rec->final_scalars) final_names.insert(kv.first);

  if (auto dir = std::filesystem::path(out_path).parent_path(); !dir.empty())
    std::filesystem::create_directories(dir);
  h5::AtomicWriter writer(out_path);
  h5::File& f = writer.file();
  f.set_attr("/", "format", std::string(kFormat));
  f.set_attr("/", "format_version", kFormatVersion);
  f.set_attr("/", "moesae_version", std::string(kMoesaeVersion));
  f.set_attr("/", "created", iso_time_utc());
  f.set_attr("/", "name", e.name);
  f.set_attr("/", "source", e.source);
  f.set_attr("/", "out", e.out);
  f.set_attr("/", "runs", int64_t(summary.runs));
  f.set_attr("/", "collected", int64_t(summary.collected));

  // The run table: parallel 1-D datasets under /table, one row per run.
  f.create_group("/table");
  f.set_attr("/table", "rows", int64_t(runs.size()));
  std::vector<std::string> columns;
  auto strings = [&](const std::string& name, const std::vector<std::string>& v) {
    write_strings(f, "/table/" + name, v);
    columns.push_back(name);
  };
  auto ints = [&](const std::string& name, const std::vector<int64_t>& v) {
    f.write_i64("/table/" + name, v);
    columns.push_back(name);
  };
  auto reals = [&](const std::string& name, const std::vector<double>& v) {
    f.write_f64("/table/" + name, v);
    columns.push_back(name);
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  std::vector<std::string> ids, archs, paths, presets;
  std::vector<int64_t> F, E, e_active, k, d, params;
  std::vector<double> flops, memory, total_flops;
  for (size_t i = 0; i < runs.size(); ++i) {
    const ExperimentRun& r = *runs[i];
    const ModelConfig& m = r.config.model;
    ids.push_back(r.name);
    archs.push_back(to_string(m.arch));
    paths.push_back(r.record);
    presets.push_back(r.preset);
    F.push_back(m.dict_size), E.push_back(m.experts), e_active.push_back(m.active_experts), k.push_back(m.k);
    const RunCost& c = planned[i].cost;
    d.push_back(c.d);
    params.push_back(c.known ? c.params : -1);
    flops.push_back(c.known ? c.flops.train() : nan);
    total_flops.push_back(c.known ? c.total_flops : nan);
    memory.push_back(c.known ? c.memory.total() : nan);
  }
  strings("id", ids);
  strings("status", status);
  strings("record", paths);
  strings("arch", archs);
  strings("preset", presets);
  ints("dict_size", F);
  ints("experts", E);
  ints("active_experts", e_active);
  ints("k", k);
  ints("d", d);
  ints("params", params);
  reals("flops_per_token", flops);
  reals("train_flops", total_flops);
  reals("memory_bytes", memory);
  std::set<std::string> taken(columns.begin(), columns.end());
  // Varied keys (dotted names): numbers as float64, anything else as strings.
  for (const std::string& key : e.varied) {
    if (key == "preset") continue;  // the preset column
    std::vector<std::string> text;
    bool numeric = true;
    std::vector<double> values;
    for (const ExperimentRun* r : runs) {
      text.push_back(resolved_value(r->config, key));
      double v = 0;
      numeric = numeric && is_number(text.back(), v);
      values.push_back(v);
    }
    if (numeric)
      reals(key, values);
    else
      strings(key, text);
    taken.insert(key);
  }
  // Final metrics: one float64 column each, NaN for runs without a finished record.
  for (const std::string& name : final_names) {
    std::vector<double> v;
    for (const auto& rec : records) {
      double x = nan;
      if (rec)
        if (auto it = rec->final_scalars.find(name); it != rec->final_scalars.end()) x = it->second;
      v.push_back(x);
    }
    reals(taken.count(name) ? "final." + name : name, v);
  }
  std::string cols;
  for (const std::string& c : columns) cols += (cols.empty() ? "" : ",") + c;
  f.set_attr("/table", "columns", cols);

  // Each finished run's /config and /final, under /runs/<id>.
  f.create_group("/runs");
  for (size_t i = 0; i < runs.size(); ++i) {
    if (!records[i]) continue;
    const RunRecord& rec = *records[i];
    const std::string g = "/runs/" + runs[i]->name;
    f.create_group(g);
    f.set_attr(g, "arch", rec.arch);
    f.set_attr(g, "status", rec.status);
    f.set_attr(g, "created", rec.created);
    f.set_attr(g, "moesae_version", rec.moesae_version);
    f.set_attr(g, "record", runs[i]->record);
    f.set_attr(g, "hash", runs[i]->hash);
    f.create_group(g + "/config");
    f.set_attr(g + "/config", "yaml", rec.config_yaml);
    f.create_group(g + "/final");
    for (const auto& [name, value] : rec.final_scalars) f.set_attr(g + "/final", name, value);
    for (const auto& [name, values] : rec.final_vectors) f.write_f64(g + "/final/" + name, values);
  }
  writer.commit();
  return summary;
}

}  // namespace moesae
