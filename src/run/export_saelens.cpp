#include "run/export_saelens.h"

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "run/config.h"
#include "run/record.h"

namespace moesae {
namespace {

Tensor transpose(const Tensor& t) {
  Tensor out = host_tensor(t.cols(), t.rows());
  for (int64_t i = 0; i < t.rows(); ++i)
    for (int64_t j = 0; j < t.cols(); ++j) out.host<float>()[j * t.rows() + i] = t.host<float>()[i * t.ld() + j];
  return out;
}

std::vector<int64_t> shape_of(const Tensor& t) {
  if (t.rank() == 1) return {t.rows()};
  return {t.rows(), t.cols()};
}

}  // namespace

void export_saelens(const std::string& record_path, const std::string& out_dir) {
  RunRecord rec = RunRecord::load(record_path, true);
  RunConfig cfg = parse_run_config_text(rec.config_yaml, {}, record_path + " /config");
  auto weight = [&](const std::string& name) -> const Tensor& {
    auto it = rec.weights.find(name);
    if (it == rec.weights.end()) fail("record '", record_path, "' has no weight '", name, "'");
    return it->second;
  };
  const Tensor& w_enc = weight("W_enc");
  const Tensor& w_dec = weight("W_dec");
  const int64_t F = w_dec.rows(), d = w_dec.cols();
  std::vector<safetensors::Entry> entries;
  Tensor wt = transpose(w_enc);
  entries.push_back({"W_enc", wt, {d, F}});
  Tensor b_enc = host_vector(F);  // zeros unless the model has an encoder bias
  if (rec.weights.count("b_enc")) b_enc = weight("b_enc");
  if (cfg.model.arch == Arch::Gated) b_enc = weight("b_gate");
  entries.push_back({"b_enc", b_enc, {F}});
  entries.push_back({"W_dec", w_dec, {F, d}});
  entries.push_back({"b_dec", weight("b_pre"), {d}});

  nlohmann::json j;
  j["d_in"] = d;
  j["d_sae"] = F;
  j["dtype"] = "float32";
  j["device"] = "cpu";
  j["apply_b_dec_to_input"] = true;
  j["normalize_activations"] = "none";
  j["reshape_activations"] = "none";
  j["metadata"] = {{"producer", "moesae"}, {"source_record", record_path}, {"moesae_version", rec.moesae_version}};
  switch (cfg.model.arch) {
    case Arch::TopK:
      j["architecture"] = "topk";
      j["k"] = cfg.model.k;
      break;
    case Arch::Gated:
      j["architecture"] = "gated";
      entries.push_back({"b_gate", weight("b_gate"), {F}});
      entries.push_back({"r_mag", weight("r_mag"), {F}});
      entries.push_back({"b_mag", weight("b_mag"), {F}});
      break;
    case Arch::Switch:
    case Arch::Scale:
      j["architecture"] = std::string("moesae_") + to_string(cfg.model.arch);
      j["k"] = cfg.model.k;
      j["experts"] = cfg.model.experts;
      j["active_experts"] = cfg.model.active_experts;
      j["weight"] = to_string(cfg.model.weight);
      j["select_on"] = to_string(cfg.model.select_on);
      j["feature_scaling"] = to_string(cfg.model.feature_scaling);
      for (auto& [name, t] : rec.weights)
        if (name != "W_enc" && name != "W_dec" && name != "b_pre" && name != "b_enc" && name != "tokens_since_fired")
          entries.push_back({name, t, shape_of(t)});
      break;
  }
  if (std::filesystem::exists(out_dir) && !std::filesystem::is_directory(out_dir))
    fail("cannot export to '", out_dir, "': it exists and is not a directory");
  std::filesystem::create_directories(out_dir);
  safetensors::write(out_dir + "/sae_weights.safetensors", entries, {{"format", "pt"}});
  const std::string tmp = out_dir + "/cfg.json.tmp";
  {
    std::ofstream f(tmp);
    f << j.dump(2) << "\n";
    if (!f) fail("cannot write '", tmp, "'");
  }
  std::filesystem::rename(tmp, out_dir + "/cfg.json");
}

}  // namespace moesae
