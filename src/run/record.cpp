// moesae run: writing and reading run records (see record.h and docs/records.md).
#include "run/record.h"

#include <cmath>
#include <ctime>
#include <limits>

#include "core/h5.h"
#include "core/version.h"

namespace moesae {
namespace {

constexpr const char* kFormat = "moesae-run-record";
constexpr int64_t kFormatVersion = 1;

// Record member names become HDF5 link or attribute names: one path component each.
void check_name(const std::string& path, const char* what, const std::string& name) {
  if (name.empty() || name == "." || name.find('/') != std::string::npos)
    fail("run record '", path, "': ", what, " name '", name, "' must be non-empty and contain no '/'");
}

// The "step" column as integers; fails (naming the record's final path) on a missing step.
std::vector<int64_t> steps_of(const std::string& path, const std::string& group, const MetricSeries& s) {
  if (!s.has("step")) return {};
  const auto& values = s.column("step");
  std::vector<int64_t> steps(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) fail("run record '", path, "': ", group, " row ", i, " has no 'step' value");
    steps[i] = std::llround(values[i]);
  }
  return steps;
}

void check_series(const std::string& path, const std::string& group, const MetricSeries& s) {
  for (const auto& kv : s.columns()) check_name(path, "metric", kv.first);
  steps_of(path, group, s);
}

void write_series(const std::string& path, h5::File& f, const std::string& group, const MetricSeries& s) {
  f.create_group(group);
  f.set_attr(group, "rows", static_cast<int64_t>(s.rows()));
  for (const auto& [name, values] : s.columns())
    if (name != "step") f.write_f64(group + "/" + name, values);
  if (s.has("step")) f.write_i64(group + "/step", steps_of(path, group, s));
}

MetricSeries read_series(const h5::File& f, const std::string& group) {
  std::map<std::string, std::vector<double>> columns;
  for (const std::string& name : f.list(group)) {
    const std::string dset = group + "/" + name;
    if (name == "step") {
      const auto steps = f.read_i64(dset);
      columns[name].assign(steps.begin(), steps.end());
    } else {
      columns[name] = f.read_f64(dset);
    }
  }
  MetricSeries s;
  try {
    s.set_columns(std::move(columns));
  } catch (const Error& e) {
    fail("run record '", f.path(), "': ", group, ": ", e.what());
  }
  return s;
}

void check_format(const h5::File& f) {
  if (!f.has_attr("/", "format") || f.attr_string("/", "format") != kFormat)
    fail("'", f.path(), "' is not a moesae run record (no root attribute format = \"", kFormat, "\")");
  const int64_t v = f.attr_int("/", "format_version");
  if (v > kFormatVersion)
    fail("'", f.path(), "' is a run record of format version ", v, "; this build reads up to ", kFormatVersion);
}

}  // namespace


// ---- RunRecord -------------------------------------------------------------------------------------------------

std::string iso_time_utc() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buf;
}

RunRecord::RunRecord() : moesae_version(kMoesaeVersion) {}

void RunRecord::save(const std::string& path) const {
  for (const auto& [name, t] : weights) {
    check_name(path, "weight", name);
    if (!t.defined() || t.device() != Device::CPU)
      fail("run record '", path, "': weight '", name, "' must be a host tensor (copy it from the device first)");
  }
  for (const auto& kv : final_scalars) check_name(path, "final metric", kv.first);
  for (const auto& kv : final_vectors) check_name(path, "final vector", kv.first);
  check_series(path, "/metrics", metrics);
  check_series(path, "/eval", eval);

  h5::AtomicWriter writer(path);
  h5::File& f = writer.file();
  f.set_attr("/", "format", std::string(kFormat));
  f.set_attr("/", "format_version", kFormatVersion);
  f.set_attr("/", "moesae_version", moesae_version);
  f.set_attr("/", "created", created.empty() ? iso_time_utc() : created);
  f.set_attr("/", "arch", arch);
  f.set_attr("/", "status", status);
  f.create_group("/config");
  f.set_attr("/config", "yaml", config_yaml);
  write_series(path, f, "/metrics", metrics);
  write_series(path, f, "/eval", eval);
  f.create_group("/final");
  for (const auto& [name, value] : final_scalars) f.set_attr("/final", name, value);
  for (const auto& [name, values] : final_vectors) f.write_f64("/final/" + name, values);
  f.create_group("/weights");
  for (const auto& [name, t] : weights) f.write("/weights/" + name, t);
  writer.commit();
}

RunRecord RunRecord::load(const std::string& path, bool with_weights) {
  h5::File f(path, h5::File::Mode::Read);
  check_format(f);
  RunRecord r;
  r.moesae_version = f.attr_string("/", "moesae_version");
  r.created = f.attr_string("/", "created");
  r.arch = f.attr_string("/", "arch");
  r.status = f.attr_string("/", "status");
  r.config_yaml = f.attr_string("/config", "yaml");
  r.metrics = read_series(f, "/metrics");
  r.eval = read_series(f, "/eval");
  for (const std::string& name : f.attr_names("/final")) r.final_scalars[name] = f.attr_double("/final", name);
  for (const std::string& name : f.list("/final")) r.final_vectors[name] = f.read_f64("/final/" + name);
  if (with_weights)
    for (const std::string& name : f.list("/weights")) r.weights[name] = f.read("/weights/" + name);
  return r;
}

std::vector<std::string> RunRecord::weight_names(const std::string& path) {
  h5::File f(path, h5::File::Mode::Read);
  check_format(f);
  return f.list("/weights");
}

Tensor RunRecord::load_weight(const std::string& path, const std::string& name) {
  h5::File f(path, h5::File::Mode::Read);
  check_format(f);
  if (!f.exists("/weights/" + name)) fail("run record '", path, "' has no weight '", name, "'");
  return f.read("/weights/" + name);
}

}  // namespace moesae
