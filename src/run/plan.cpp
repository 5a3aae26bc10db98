#include "run/plan.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include "core/log.h"
#include "run/grid.h"
#include "run/record.h"

namespace moesae {

std::vector<PlannedRun> plan_runs(const Experiment& e, const std::vector<const ExperimentRun*>& runs) {
  std::vector<PlannedRun> out;
  for (const ExperimentRun* r : runs) {
    PlannedRun p;
    p.run = r;
    p.status = run_status(*r);
    const DataShape shape = data_shape(e, r->config);
    p.cost = run_cost(r->config, shape.d, shape.train_rows);
    using S = RunStatus::State;
    double left = 1.0;
    if (p.status.state == S::Done) left = 0;
    if ((p.status.state == S::Partial && !p.status.checkpoint_stale) || p.status.state == S::Running)
      left = 1.0 - double(p.status.step) / double(std::max<int64_t>(p.status.steps, 1));
    p.remaining_flops = left * p.cost.total_flops;
    out.push_back(std::move(p));
  }
  return out;
}

RateEstimate estimate_rate(const std::vector<PlannedRun>& planned) {
  double flops = 0, seconds = 0;
  int n = 0;
  for (const PlannedRun& p : planned) {
    if (p.status.state != RunStatus::State::Done || !p.cost.known) continue;
    try {
      const RunRecord rec = RunRecord::load(p.run->record, false);
      auto t = rec.final_scalars.find("train_seconds");
      if (t == rec.final_scalars.end() || !(t->second > 0)) continue;
      flops += p.cost.total_flops;
      seconds += t->second;
      ++n;
    } catch (const Error&) {
    }
  }
  if (n > 0 && seconds > 0) return {flops / seconds, std::to_string(n) + " finished run" + (n > 1 ? "s" : "")};
  return {measured_cpu_rate(), "GEMM estimate"};
}

std::string plan_table(const Experiment& e, const PlanOptions& opt) {
  const std::vector<const ExperimentRun*> runs = select_runs(e, opt.only);
  const std::vector<PlannedRun> planned = plan_runs(e, runs);
  RateEstimate rate;
  if (opt.rate_gflops > 0)
    rate = {opt.rate_gflops * 1e9, "--rate"};
  else
    rate = estimate_rate(planned);

  // Extra columns: the varied keys not already shown (arch, F, E, e, k).
  std::vector<std::string> extra;
  for (const std::string& k : e.varied)
    if (k != "model.arch" && k != "model.dict_size" && k != "model.experts" && k != "model.active_experts" &&
        k != "model.k")
      extra.push_back(k);
  // The value as written in the file for the keys a grid point varies (1e-4 stays 1e-4), else the resolved one.
  auto value_of = [](const ExperimentRun& r, const std::string& key) {
    if (key == "preset") return r.preset.empty() ? std::string("-") : r.preset;
    for (const auto& [k, v] : r.values)
      if (k == key) return v;
    return resolved_value(r.config, key);
  };
  int id_w = 2;
  for (const ExperimentRun* r : runs) id_w = std::max(id_w, int(r->name.size()));
  std::vector<int> extra_w;
  for (const std::string& k : extra) {
    int w = int(k.size());
    for (const ExperimentRun* r : runs) w = std::max(w, int(value_of(*r, k).size()));
    extra_w.push_back(w);
  }

  std::string out;
  char buf[1024];
  std::map<std::string, int> counts;
  int unknown_d = 0;
  double total = 0, remaining = 0;
  for (const PlannedRun& p : planned) {
    ++counts[p.status.text().substr(0, p.status.text().find(' '))];
    if (!p.cost.known) ++unknown_d;
    total += p.cost.total_flops;
    remaining += p.remaining_flops;
  }
  std::string states;
  for (const auto& [k, v] : counts) states += (states.empty() ? "" : ", ") + std::to_string(v) + " " + k;
  out += e.name + ": " + std::to_string(runs.size()) + " run" + (runs.size() == 1 ? "" : "s") + " (" + states +
         "); records in " + e.out + "/\n";
  std::snprintf(buf, sizeof buf, "%-*s %-7s %7s %5s %3s %4s", id_w, "id", "arch", "F", "E", "e", "k");
  out += buf;
  for (size_t i = 0; i < extra.size(); ++i) {
    std::snprintf(buf, sizeof buf, " %*s", extra_w[i], extra[i].c_str());
    out += buf;
  }
  std::snprintf(buf, sizeof buf, " %10s %8s %9s %9s  %s\n", "FLOPs/tok", "params", "memory", "est.time", "status");
  out += buf;
  for (const PlannedRun& p : planned) {
    const ExperimentRun& r = *p.run;
    const ModelConfig& m = r.config.model;
    std::snprintf(buf, sizeof buf, "%-*s %-7s %7d %5d %3d %4d", id_w, r.name.c_str(), to_string(m.arch), m.dict_size,
                  m.experts, m.active_experts, m.k);
    out += buf;
    for (size_t i = 0; i < extra.size(); ++i) {
      std::snprintf(buf, sizeof buf, " %*s", extra_w[i], value_of(r, extra[i]).c_str());
      out += buf;
    }
    if (p.cost.known) {
      const double secs = rate.flops_per_s > 0 ? p.cost.total_flops / rate.flops_per_s : 0;
      std::snprintf(buf, sizeof buf, " %10s %8s %9s %9s  %s\n", si_count(p.cost.flops.train()).c_str(),
                    si_count(double(p.cost.params)).c_str(), bytes_text(p.cost.memory.total()).c_str(),
                    format_duration(secs).c_str(), p.status.text().c_str());
    } else {
      std::snprintf(buf, sizeof buf, " %10s %8s %9s %9s  %s\n", "?", "?", "?", "?", p.status.text().c_str());
    }
    out += buf;
  }
  if (opt.terms) {
    out += "\nFLOPs per token by term (docs/grids.md):\n";
    for (const PlannedRun& p : planned)
      if (p.cost.known) out += "  " + p.run->name + ": " + p.cost.flops.describe() + "\n";
  }
  std::snprintf(buf, sizeof buf, "training FLOPs: %s in all, %s still to do; est. %s at %s FLOP/s (%s)\n",
                si_count(total).c_str(), si_count(remaining).c_str(),
                format_duration(rate.flops_per_s > 0 ? remaining / rate.flops_per_s : 0).c_str(),
                si_count(rate.flops_per_s).c_str(), rate.source.c_str());
  out += buf;
  // Records in the output directory that belong to no run of the file (points edited or removed since).
  std::error_code ec;
  std::vector<std::string> others;
  std::set<std::string> known{e.synthetic_path, e.extract_path};
  for (const ExperimentRun& r : e.runs) known.insert(r.record);
  for (const auto& entry : std::filesystem::directory_iterator(e.out, ec)) {
    const std::string p = (std::filesystem::path(e.out) / entry.path().filename()).string();
    const std::string name = entry.path().filename().string();
    if (name.size() > 3 && name.compare(name.size() - 3, 3, ".h5") == 0 && name.find(".ckpt.h5") == std::string::npos &&
        !known.count(p))
      others.push_back(name);
  }
  if (!others.empty()) {
    std::sort(others.begin(), others.end());
    out += std::to_string(others.size()) + " other .h5 file(s) in " + e.out + "/ belong to no run of this file (e.g. " +
           others[0] + ")\n";
  }
  if (unknown_d > 0)
    out += std::to_string(unknown_d) +
           " run(s) have no known input dimension yet ('?'): set model.d, or run once to prepare the data\n";
  return out;
}

}  // namespace moesae
