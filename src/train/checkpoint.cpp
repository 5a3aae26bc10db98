#include "train/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <memory>

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

std::string shard_path(const std::string& path, const ShardSet& set, int index) {
  return path + ".step" + std::to_string(set.step) + ".shard" + std::to_string(index) + "of" +
         std::to_string(set.count);
}

void save_checkpoint(const std::string& path, const std::string& config_yaml, Sae& sae, Adam& adam,
                     const CheckpointState& state, const ShardSet* shards) {
  Backend& be = sae.backend();
  h5::AtomicWriter w(path);
  h5::File& f = w.file();
  f.set_attr("/", "kind", std::string("moesae checkpoint"));
  f.set_attr("/", "config_yaml", config_yaml);
  f.set_attr("/", "step", state.step);
  f.set_attr("/", "adam_step", adam.steps_taken());
  if (shards) {
    f.set_attr("/", "shard_step", shards->step);
    f.set_attr("/", "shard_count", int64_t(shards->count));
  }
  f.write_u64("/data_cursor", state.data_cursor);
  for (const char* g : {"/params", "/adam_m", "/adam_v", "/buffers"}) f.create_group(g);
  auto params = sae.params().trainable();
  for (size_t i = 0; i < params.size(); ++i) {
    if (shards && params[i]->sharded()) continue;  // in the shard files
    f.write("/params/" + params[i]->name, be.to_host(params[i]->value));
    f.write("/adam_m/" + params[i]->name, be.to_host(adam.first_moments()[i]));
    f.write("/adam_v/" + params[i]->name, be.to_host(adam.second_moments()[i]));
  }
  for (Param* b : sae.params().buffers()) f.write("/buffers/" + b->name, be.to_host(b->value));
  save_log(f, "/metrics", state.metrics);
  save_log(f, "/eval", state.eval_metrics);
  f.write_f64("/interval", encode(state.interval));
  w.commit();
}

void save_checkpoint_shard(const std::string& path, const ShardSet& set, int index, Sae& sae, Adam& adam) {
  Backend& be = sae.backend();
  h5::AtomicWriter w(shard_path(path, set, index));
  h5::File& f = w.file();
  f.set_attr("/", "kind", std::string("moesae checkpoint shard"));
  f.set_attr("/", "shard", int64_t(index));
  for (const char* g : {"/params", "/adam_m", "/adam_v"}) f.create_group(g);
  auto params = sae.params().trainable();
  for (size_t i = 0; i < params.size(); ++i) {
    const Param& p = *params[i];
    if (!p.sharded()) continue;
    const int64_t w_row = p.row_elems(), rows = p.value.numel() / w_row;
    const Tensor* tensors[3] = {&p.value, &adam.first_moments()[i], &adam.second_moments()[i]};
    const char* groups[3] = {"/params/", "/adam_m/", "/adam_v/"};
    for (int t = 0; t < 3; ++t) {  // stored as [rows, row_elems], with the rows' place in the whole parameter
      const std::string dset = groups[t] + p.name;
      f.write(dset, be.to_host(*tensors[t]).reshape(rows, w_row));
      f.set_attr(dset, "first_row", p.shard_first);
      f.set_attr(dset, "full_rows", p.full_rows);
    }
  }
  w.commit();
}

namespace {

// The shard files next to PATH: (file name, its step) for every PATH.step<S>.shard<i>of<N>.
std::vector<std::pair<std::filesystem::path, int64_t>> shard_files(const std::string& path) {
  std::vector<std::pair<std::filesystem::path, int64_t>> out;
  const std::filesystem::path p(path);
  const std::filesystem::path dir = p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
  const std::string prefix = p.filename().string() + ".step";
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const size_t at = name.find(".shard", prefix.size());
    if (at == std::string::npos || name.find(".tmp.") != std::string::npos) continue;
    try {
      out.push_back({entry.path(), std::stoll(name.substr(prefix.size(), at - prefix.size()))});
    } catch (const std::exception&) {
    }
  }
  return out;
}

}  // namespace

void remove_stale_shards(const std::string& path, const ShardSet* keep) {
  std::vector<std::string> kept;
  if (keep)
    for (int i = 0; i < keep->count; ++i) kept.push_back(std::filesystem::path(shard_path(path, *keep, i)).filename());
  for (const auto& [file, step] : shard_files(path)) {
    if (std::find(kept.begin(), kept.end(), file.filename().string()) != kept.end()) continue;
    std::error_code ec;
    std::filesystem::remove(file, ec);
  }
}

void remove_checkpoint(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
  remove_stale_shards(path, nullptr);
}

std::string checkpoint_config(const std::string& path) {
  h5::File f(path, h5::File::Mode::Read);
  if (!f.has_attr("/", "kind") || f.attr_string("/", "kind") != "moesae checkpoint")
    fail("it is not a moesae checkpoint");
  if (!f.has_attr("/", "config_yaml")) fail("it records no configuration");
  return f.attr_string("/", "config_yaml");
}

CheckpointState load_checkpoint(const std::string& path, const std::string& config_yaml, Sae& sae, Adam& adam,
                                const ConfigMatch& matches) {
  Backend& be = sae.backend();
  std::string written;
  try {
    written = checkpoint_config(path);
  } catch (const Error& e) {
    fail("cannot resume from '", path, "': ", e.what());
  }
  if (matches ? !matches(written) : written != config_yaml)
    fail("checkpoint '", path, "' was written with a different configuration; remove it or use the original config");
  h5::File f(path, h5::File::Mode::Read);
  CheckpointState st;
  st.step = f.attr_int("/", "step");
  adam.set_steps_taken(f.attr_int("/", "adam_step"));
  st.data_cursor = f.read_u64("/data_cursor");
  // Shard files (a sharded checkpoint): each covers some rows of every sharded parameter.
  std::vector<std::unique_ptr<h5::File>> shards;
  if (f.has_attr("/", "shard_count")) {
    const ShardSet set{f.attr_int("/", "shard_step"), int(f.attr_int("/", "shard_count"))};
    for (int i = 0; i < set.count; ++i) {
      const std::string sp = shard_path(path, set, i);
      if (!std::filesystem::exists(sp))
        fail("checkpoint '", path, "' is missing its shard file '", sp, "' (", set.count, " shards of step ", set.step,
             "); move or copy a checkpoint together with its PATH.step*.shard* files");
      shards.push_back(std::make_unique<h5::File>(sp, h5::File::Mode::Read));
    }
  }
  // A whole parameter is in the manifest; a sharded one (in the file, or in this model) is assembled row by row.
  auto load_into = [&](const std::string& dset, const Param& p, Tensor dst) {
    const int64_t w = p.row_elems(), rows = dst.numel() / w, first = p.sharded() ? p.shard_first : 0;
    Tensor h;
    if (f.exists(dset)) {
      Tensor whole = f.read(dset);
      const int64_t want = p.global_rows() * w;
      if (whole.numel() != want)
        fail("checkpoint '", path, "': ", dset, " has ", whole.numel(), " elements, expected ", want);
      h = whole.reshape(p.global_rows(), w).row_range(first, first + rows);
    } else {
      h = host_tensor(rows, w);
      if (shards.empty()) fail("checkpoint '", path, "' has no ", dset);
      int64_t covered = 0;
      for (const auto& sf : shards) {
        if (!sf->exists(dset)) fail("checkpoint shard '", sf->path(), "' has no ", dset);
        const int64_t s0 = sf->attr_int(dset, "first_row"), sn = sf->shape(dset)[0];
        if (sf->attr_int(dset, "full_rows") != p.global_rows() || sf->shape(dset).size() != 2 || sf->shape(dset)[1] != w)
          fail("checkpoint shard '", sf->path(), "': ", dset, " does not fit the model's ", p.global_rows(), " x ", w);
        const int64_t a = std::max(s0, first), b = std::min(s0 + sn, first + rows);
        if (a >= b) continue;
        sf->read_rows(dset, a - s0, h.row_range(a - first, b - first));
        covered += b - a;
      }
      if (covered != rows)
        fail("checkpoint '", path, "': the shards cover ", covered, " of the ", rows, " rows of ", dset, " needed here");
    }
    be.upload(dst.rank() == 1 ? h.flatten() : h.reshape(dst.rows(), dst.cols()), dst);
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
