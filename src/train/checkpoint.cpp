#include "train/checkpoint.h"

#include "core/h5.h"

namespace moesae {
namespace {

void save_log(h5::File& f, const std::string& group, const MetricSeries& log) {
  f.create_group(group);
  for (auto& [key, values] : log.columns()) f.write_f64(group + "/" + key, values);
}

MetricSeries load_log(h5::File& f, const std::string& group) {
  MetricSeries log;
  if (!f.exists(group)) return log;
  std::map<std::string, std::vector<double>> s;
  for (auto& key : f.list(group)) s[key] = f.read_f64(group + "/" + key);
  log.set_columns(std::move(s));
  return log;
}

std::vector<double> encode(const IntervalSums& s) {
  return {double(s.steps), s.loss, s.mse, s.mse_sum, s.l0, s.lb, s.aux, s.sparsity, s.lr, s.grad_norm};
}

IntervalSums decode_interval(const std::vector<double>& v, const std::string& path) {
  if (v.size() != 10 || !(v[0] >= 0))
    fail("checkpoint '", path, "': /interval has ", v.size(),
         " values, expected 10 (the steps and sums of the open metrics row)");
  IntervalSums s;
  s.steps = static_cast<int64_t>(v[0]);
  s.loss = v[1];
  s.mse = v[2];
  s.mse_sum = v[3];
  s.l0 = v[4];
  s.lb = v[5];
  s.aux = v[6];
  s.sparsity = v[7];
  s.lr = v[8];
  s.grad_norm = v[9];
  return s;
}

}  // namespace

void save_checkpoint(const std::string& path, const std::string& config_yaml, Sae& sae, Adam& adam,
                     const CheckpointState& state, const GatherWhole& gather, bool write) {
  Backend& be = sae.backend();
  const auto whole = [&](const Param& p, const Tensor& t) { return gather ? gather(p, t) : be.to_host(t); };
  // Everything gathered first (collective under expert parallelism), then written by one rank.
  std::vector<std::pair<std::string, Tensor>> tensors;
  auto params = sae.params().trainable();
  for (size_t i = 0; i < params.size(); ++i) {
    tensors.push_back({"/params/" + params[i]->name, whole(*params[i], params[i]->value)});
    tensors.push_back({"/adam_m/" + params[i]->name, whole(*params[i], adam.first_moments()[i])});
    tensors.push_back({"/adam_v/" + params[i]->name, whole(*params[i], adam.second_moments()[i])});
  }
  for (Param* b : sae.params().buffers()) tensors.push_back({"/buffers/" + b->name, whole(*b, b->value)});
  if (!write) return;
  h5::AtomicWriter w(path);
  h5::File& f = w.file();
  f.set_attr("/", "kind", std::string("moesae checkpoint"));
  f.set_attr("/", "config_yaml", config_yaml);
  f.set_attr("/", "step", state.step);
  f.set_attr("/", "adam_step", adam.steps_taken());
  f.write_u64("/data_cursor", state.data_cursor);
  for (const char* g : {"/params", "/adam_m", "/adam_v", "/buffers"}) f.create_group(g);
  for (const auto& [name, t] : tensors) f.write(name, t);
  save_log(f, "/metrics", state.metrics);
  save_log(f, "/eval", state.eval_metrics);
  f.write_f64("/interval", encode(state.interval));
  w.commit();
}

std::string checkpoint_config(const std::string& path) {
  h5::File f(path, h5::File::Mode::Read);
  if (!f.has_attr("/", "kind") || f.attr_string("/", "kind") != "moesae checkpoint")
    fail("it is not a moesae checkpoint");
  if (!f.has_attr("/", "config_yaml")) fail("it records no configuration");
  return f.attr_string("/", "config_yaml");
}

CheckpointState load_checkpoint(const std::string& path, const std::string& config_yaml, Sae& sae, Adam& adam) {
  Backend& be = sae.backend();
  std::string written;
  try {
    written = checkpoint_config(path);
  } catch (const Error& e) {
    fail("cannot resume from '", path, "': ", e.what());
  }
  if (written != config_yaml)
    fail("checkpoint '", path, "' was written with a different configuration; remove it or use the original config");
  h5::File f(path, h5::File::Mode::Read);
  CheckpointState st;
  st.step = f.attr_int("/", "step");
  adam.set_steps_taken(f.attr_int("/", "adam_step"));
  st.data_cursor = f.read_u64("/data_cursor");
  // The file holds whole parameters; a sharded one (expert parallelism) takes its rows.
  auto load_into = [&](const std::string& dset, const Param& p, Tensor dst) {
    Tensor h = f.read(dset);
    const int64_t want = p.global_rows() * p.row_elems();
    if (h.numel() != want) fail("checkpoint '", path, "': ", dset, " has ", h.numel(), " elements, expected ", want);
    if (p.sharded()) h = h.reshape(p.full_rows, p.row_elems()).row_range(p.shard_first, p.shard_first + dst.numel() / p.row_elems());
    be.upload(dst.rank() == 1 ? h.flatten() : h.rank() == 2 ? h : h.reshape(dst.rows(), dst.cols()), dst);
  };
  auto params = sae.params().trainable();
  for (size_t i = 0; i < params.size(); ++i) {
    load_into("/params/" + params[i]->name, *params[i], params[i]->value);
    load_into("/adam_m/" + params[i]->name, *params[i], adam.first_moments()[i]);
    load_into("/adam_v/" + params[i]->name, *params[i], adam.second_moments()[i]);
  }
  for (Param* b : sae.params().buffers()) load_into("/buffers/" + b->name, *b, b->value);
  st.metrics = load_log(f, "/metrics");
  st.eval_metrics = load_log(f, "/eval");
  if (f.exists("/interval")) st.interval = decode_interval(f.read_f64("/interval"), path);  // absent: no open row
  return st;
}

}  // namespace moesae
