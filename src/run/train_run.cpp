#include "run/train_run.h"

#include <filesystem>

#include "core/h5.h"
#include "core/log.h"
#include "data/synthetic.h"
#include "run/record.h"
#include "run/stream_source.h"
#include "train/trainer.h"

namespace moesae {
namespace {

// The ground-truth dictionary when the activation file is synthetic (it has /ground_truth/dictionary).
bool has_ground_truth(const std::string& path) {
  h5::File f(path, h5::File::Mode::Read);
  return f.exists("/ground_truth/dictionary");
}

}  // namespace

std::string checkpoint_path_for(const std::string& record_path) { return record_path + ".ckpt.h5"; }

TrainRunResult train_run(const RunConfig& config_in, const TrainRunOptions& opt) {
  if (opt.out.empty()) fail("no output record path given (--out)");
  RunConfig config = config_in;
  if (config.data.path.empty()) fail("data.path is not set: give the activation file in the config or with --set data.path=...");
  ActivationStream stream(config.data, config.train.seed);
  if (config.model.d != 0 && config.model.d != stream.d())
    fail("model.d is ", config.model.d, " but '", config.data.path, "' has d=", stream.d());
  config.model.d = static_cast<int>(stream.d());
  validate(config.model);
  if (config.train.batch_size > stream.train_rows().size())
    spdlog::warn("train.batch_size {} exceeds the {} training rows of '{}': batches repeat rows within an epoch",
                 config.train.batch_size, stream.train_rows().size(), config.data.path);
  const std::string yaml = to_yaml(config);
  const std::string ckpt = checkpoint_path_for(opt.out);
  if (auto dir = std::filesystem::path(opt.out).parent_path(); !dir.empty()) std::filesystem::create_directories(dir);
  if (opt.restart && std::filesystem::exists(ckpt)) std::filesystem::remove(ckpt);

  auto be = make_cpu_backend(config.train.threads);
  auto sae = make_sae(config.model, *be);
  Rng rng(config.train.seed);
  sae->init(rng);
  StreamBatchSource source(stream);
  Trainer trainer(config.train, *sae, source);
  trainer.set_checkpoint(ckpt, yaml);
  std::unique_ptr<Tensor> truth;
  if (has_ground_truth(config.data.path)) truth = std::make_unique<Tensor>(read_ground_truth(config.data.path));
  trainer.set_eval_hook([&](Sae& s) {
    EvalReader reader = stream.eval_reader();
    return evaluate_sae(s, reader, config.eval, config.train.batch_size, truth.get()).scalars;
  });
  trainer.resume_if_present();
  spdlog::info("training {} (F={}, E={}, e={}, k={}, d={}) for {} steps of {} tokens, lr {:.3g}",
               to_string(config.model.arch), config.model.dict_size, config.model.experts,
               config.model.active_experts, config.model.k, config.model.d, config.train.steps,
               config.train.batch_size, trainer.base_lr());
  install_stop_signal_handlers();
  TrainOutcome outcome = trainer.run(opt.stop_after);
  TrainRunResult result;
  result.steps_done = outcome.steps_done;
  result.seconds = outcome.seconds;
  if (!outcome.finished) return result;

  EvalReader reader = stream.eval_reader();
  result.final = evaluate_sae(*sae, reader, config.eval, config.train.batch_size, truth.get());
  result.final.scalars["train_seconds"] = outcome.seconds;
  result.final.scalars["steps"] = double(outcome.steps_done);

  RunRecord rec;
  rec.arch = to_string(config.model.arch);
  rec.config_yaml = yaml;
  rec.metrics = trainer.metrics();
  rec.eval = trainer.eval_metrics();
  rec.final_scalars = result.final.scalars;
  rec.final_vectors = result.final.vectors;
  for (Param* p : sae->params().all()) rec.weights[p->name] = be->to_host(p->value);
  rec.save(opt.out);
  std::filesystem::remove(ckpt);
  result.finished = true;
  spdlog::info("wrote {}: mse {:.4g}, fvu {:.4g}, L0 {:.1f}, redundancy {:.4f}", opt.out, result.final.scalars["mse"],
               result.final.scalars["fvu"], result.final.scalars["l0"], result.final.scalars["redundancy"]);
  return result;
}

std::unique_ptr<Sae> load_sae_from_record(const std::string& record_path, Backend& be, RunConfig* config_out) {
  RunRecord rec = RunRecord::load(record_path, true);
  RunConfig cfg = parse_run_config_text(rec.config_yaml, {}, record_path + " /config");
  if (cfg.model.d <= 0) {
    auto it = rec.weights.find("W_dec");
    if (it == rec.weights.end()) fail("record '", record_path, "' has no /weights/W_dec");
    cfg.model.d = static_cast<int>(it->second.cols());
  }
  auto sae = make_sae(cfg.model, be);
  for (Param* p : sae->params().all()) {
    auto it = rec.weights.find(p->name);
    if (it == rec.weights.end()) fail("record '", record_path, "' has no weight '", p->name, "'");
    if (it->second.numel() != p->value.numel())
      fail("record '", record_path, "': weight '", p->name, "' has ", it->second.numel(), " elements, the model needs ",
           p->value.numel());
    be.upload(it->second.rank() == p->value.rank() ? it->second : it->second.reshape(p->value.rows(), p->value.cols()),
              p->value);
  }
  if (config_out) *config_out = cfg;
  return sae;
}

}  // namespace moesae
