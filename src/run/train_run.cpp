#include "run/train_run.h"

#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <map>
#include <set>

#include <yaml-cpp/yaml.h>

#include "core/h5.h"
#include "core/log.h"
#include "data/synthetic.h"
#include "comm/communicator.h"
#include "eval/loss_recovered.h"
#include "parallel/data_parallel.h"
#include "parallel/expert_parallel.h"
#include "run/record.h"
#include "run/stream_source.h"
#include "train/prefetching_source.h"
#include "train/trainer.h"

namespace moesae {
namespace {

// "model.k: 4 -> 8, train.steps: 60 -> 80": the keys whose values differ between two to_yaml() texts.
std::string config_differences(const std::string& was, const std::string& now) {
  std::map<std::string, std::string> a, b;
  const auto flatten = [](const std::string& text, std::map<std::string, std::string>& out) {
    try {
      const YAML::Node root = YAML::Load(text);
      for (auto section = root.begin(); section != root.end(); ++section) {
        if (!section->second.IsMap()) continue;
        for (auto kv = section->second.begin(); kv != section->second.end(); ++kv)
          out[section->first.Scalar() + "." + kv->first.Scalar()] = kv->second.IsScalar() ? kv->second.Scalar() : "...";
      }
    } catch (const YAML::Exception&) {
    }
  };
  flatten(was, a);
  flatten(now, b);
  std::set<std::string> keys;
  for (const auto* m : {&a, &b})
    for (const auto& kv : *m) keys.insert(kv.first);
  std::string diff;
  int differing = 0;
  for (const std::string& key : keys) {
    const auto ia = a.find(key), ib = b.find(key);
    const std::string va = ia == a.end() ? "(absent)" : ia->second, vb = ib == b.end() ? "(absent)" : ib->second;
    if (va == vb) continue;
    if (++differing <= 4) diff += (differing > 1 ? ", " : "") + key + ": " + va + " -> " + vb;
  }
  if (differing > 4) diff += ", and " + std::to_string(differing - 4) + " more";
  return diff.empty() ? "the configuration text differs" : diff;
}

const char* const kStartOver = "delete it to start the run over (moesae train: --restart)";

// Refuses, before any work is done, a checkpoint this run cannot resume from: not a moesae checkpoint, unreadable,
// or written with a different configuration (the message names the keys that differ).
void check_resumable(const std::string& ckpt, const std::string& yaml) {
  std::string written;
  try {
    written = checkpoint_config(ckpt);
  } catch (const Error& e) {
    fail("cannot resume from '", ckpt, "': ", e.what(), "; ", kStartOver);
  }
  if (!same_checkpoint_identity(written, yaml))
    fail("checkpoint '", ckpt, "' was written with a different configuration (", config_differences(written, yaml),
         "); resume with the original configuration, or ", kStartOver);
}

}  // namespace

std::map<std::string, double> evaluate_lm_for_run(Sae& sae, const LmEvalConfig& lm, const EvalLm& loaded,
                                                  const ActivationFile& acts) {
  const std::string docs = acts.attribute("documents");
  return evaluate_lm(sae, lm, loaded, acts.meta().layer, acts.attribute("text"), docs.empty() ? -1 : std::stoll(docs));
}

std::string checkpoint_path_for(const std::string& record_path) { return record_path + ".ckpt.h5"; }

TrainRunResult train_run(const RunConfig& config_in, const TrainRunOptions& opt) {
  if (opt.out.empty()) fail("no output record path given (--out)");
  RunConfig config = config_in;
  if (config.data.path.empty()) fail("data.path is not set: give the activation file in the config or with --set data.path=...");
  if (!std::filesystem::exists(config.data.path))
    fail("data.path: activation file '", config.data.path, "' does not exist");
  // Under mpirun/srun with several ranks: data and/or expert parallelism (the parallel: layout), each rank on its
  // own shard of the data.
  std::unique_ptr<comm::Communicator> comm = comm::make_communicator("auto");
  const int rank = comm->rank(), ranks = comm->size();
  if (rank > 0) spdlog::set_level(spdlog::level::warn);  // one progress log: rank 0's
  if (ranks > 1 && config.train.batch_size % ranks != 0) {
    if (rank > 0) comm->barrier();  // rank 0 reports it once and aborts the job
    fail("train.batch_size ", config.train.batch_size, " does not split evenly over ", ranks,
         " ranks (use a multiple of ", ranks, ")");
  }
  BackendOptions backend = backend_options(config.train);
  if (ranks > 1 && backend.threads == 0 && !std::getenv("OMP_NUM_THREADS")) {
    // Ranks sharing a machine share its cores (spinning OpenMP threads of several ranks on one core are slow).
    int local = 1;
    for (const char* var : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"})
      if (const char* v = std::getenv(var)) {
        local = std::max(1, std::atoi(v));
        break;
      }
    // The cores this rank may run on: all of them divided by the ranks here, unless the launcher bound the rank to
    // fewer (then those). Not written to the config, so the run stays resumable at any rank count.
    const int all = std::max(1, int(std::thread::hardware_concurrency()));
    int usable = all;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) usable = std::max(1, int(CPU_COUNT(&set)));
    backend.threads = usable < all ? usable : std::max(1, all / local);
  }
  ActivationStream stream(config.data, config.train.seed, rank, ranks);
  if (stream.eval_rows().size() == 0)  // checked now rather than after training, by the final evaluation
    fail("no held-out tokens to evaluate on: data.eval_fraction and data.eval_tokens are both 0");
  if (config.model.d != 0 && config.model.d != stream.d())
    fail("model.d is ", config.model.d, " but '", config.data.path, "' has d=", stream.d());
  config.model.d = static_cast<int>(stream.d());
  validate(config.model);
  if (config.train.batch_size / ranks > stream.train_rows().size())
    spdlog::warn("train.batch_size {} exceeds the {} training rows of '{}'{}: batches repeat rows within an epoch",
                 config.train.batch_size / ranks, stream.train_rows().size(), config.data.path,
                 ranks > 1 ? " (this rank's share and shard)" : "");
  const std::string yaml = to_yaml(config), ckpt_yaml = checkpoint_identity(config);  // the record's, the checkpoint's
  const std::string ckpt = checkpoint_path_for(opt.out);
  if (auto dir = std::filesystem::path(opt.out).parent_path(); !dir.empty()) std::filesystem::create_directories(dir);
  if (opt.restart && rank == 0) remove_checkpoint(ckpt);  // and its shard files
  comm->barrier();  // every rank sees the same checkpoint (or none)
  if (std::filesystem::exists(ckpt)) check_resumable(ckpt, ckpt_yaml);

  check_lm_eval_files(config.lm);  // before training, not after

  // The layout (parallel/config.h): groups of expert_parallel consecutive ranks shard the experts; the ranks at
  // the same place in every group hold the same experts (replicas).
  ParallelConfig layout;
  try {
    layout = resolve_layout(config.parallel, ranks, config.model);
  } catch (const Error&) {
    if (rank > 0) comm->barrier();  // every rank fails alike: rank 0 reports it once and aborts the job
    throw;
  }
  auto be = make_backend(backend);
  std::unique_ptr<comm::Communicator> ep_comm, replica_comm;
  std::unique_ptr<ExpertParallel> ep;
  std::unique_ptr<DataParallel> replicas;
  if (layout.expert_parallel > 1) {
    const int group = rank / layout.expert_parallel, member = rank % layout.expert_parallel;
    ep_comm = comm->split(group, member);
    if (layout.data_parallel > 1) {
      replica_comm = comm->split(member, group);
      replicas = std::make_unique<DataParallel>(*replica_comm);
    }
    ep = std::make_unique<ExpertParallel>(*ep_comm, *be, config.model);
  }
  auto sae = make_sae(config.model, *be, ep.get());
  Rng rng(config.train.seed);
  sae->init(rng);
  StreamBatchSource stream_source(stream);
  // data.prefetch: the next batch is read while the step runs (train/prefetching_source.h); by default with the
  // CUDA backend, whose steps leave the host waiting (on the CPU the step already has every core).
  const Prefetch want = config.data.prefetch;
  bool read_ahead = want == Prefetch::On || (want == Prefetch::Auto && be->device() == Device::CUDA);
  if (read_ahead && !h5::library_is_threadsafe()) {
    if (want == Prefetch::On && rank == 0)
      spdlog::warn("data.prefetch: true needs a thread-safe HDF5 library (this one is not); batches are read in turn");
    read_ahead = false;
  }
  std::unique_ptr<PrefetchingSource> prefetch;
  if (read_ahead)
    prefetch = std::make_unique<PrefetchingSource>(
        stream_source, [&](int64_t rows, int64_t cols) { return be->host_buffer(rows, cols); },
        be->device() == Device::CUDA ? 0 : 1);  // on the CPU the step has the cores: the reader takes one
  DataParallelSource source(prefetch ? static_cast<BatchSource&>(*prefetch) : stream_source, *comm);
  DataParallel dp(*comm);
  Trainer trainer(config.train, *sae, source);
  if (ranks > 1) trainer.set_data_parallel(&dp);
  // Under expert parallelism rank 0 evaluates and writes the record from the whole model, gathered into a model
  // built for the occasion.
  if (ep) trainer.set_expert_parallel(ep.get(), replicas.get(), [&] { return make_sae(config.model, *be); });
  trainer.set_checkpoint(ckpt, ckpt_yaml,
                         [ckpt_yaml](const std::string& written) { return same_checkpoint_identity(written, ckpt_yaml); });
  std::unique_ptr<Tensor> truth;
  if (has_ground_truth(config.data.path)) truth = std::make_unique<Tensor>(read_ground_truth(config.data.path));
  trainer.set_eval_hook([&](Sae& s) {
    EvalReader reader = stream.eval_reader();
    return evaluate_sae(s, reader, config.eval, config.train.batch_size, truth.get()).scalars;
  });
  try {
    trainer.resume();
  } catch (const Error& e) {
    fail("cannot resume from '", ckpt, "': ", e.what(), "; ", kStartOver);
  }
  spdlog::info("training {} (F={}, E={}, e={}, k={}, d={}) for {} steps of {} tokens, lr {:.3g}{}",
               to_string(config.model.arch), config.model.dict_size, config.model.experts,
               config.model.active_experts, config.model.k, config.model.d, config.train.steps,
               config.train.batch_size, trainer.base_lr(),
               ranks > 1 ? fmt::format(", {} ({} tokens each)", describe_layout(layout, config.model.arch == Arch::TopK), config.train.batch_size / ranks)
                         : std::string());
  if (prefetch) spdlog::info("reading each next batch on a background thread while the step runs (data.prefetch)");
  install_stop_signal_handlers();
  TrainOutcome outcome = trainer.run(opt.stop_after);
  TrainRunResult result;
  result.steps_done = outcome.steps_done;
  result.seconds = outcome.seconds;
  if (!outcome.finished) return result;
  std::unique_ptr<Sae> whole = trainer.gather_whole_model();  // expert parallelism: to rank 0 (collective)
  if (rank > 0) {  // rank 0 evaluates and writes the record (data parallelism: the replicas are identical)
    dp.wait_for_rank0();
    result.finished = true;
    return result;
  }

  Sae& model = whole ? *whole : *sae;
  EvalReader reader = stream.eval_reader();
  // With an LM (lm.model) and token ids on file: the past-tense-verb specialization metrics too.
  const EvalLm loaded_lm = load_eval_lm(config.lm);  // once, for the specialization metrics and Loss Recovered
  result.final = evaluate_sae(model, reader, config.eval, config.train.batch_size, truth.get(),
                              {&stream.file(), loaded_lm.tokenizer.get()});
  if (config.lm.enabled())
    for (const auto& [k, v] : evaluate_lm_for_run(model, config.lm, loaded_lm, stream.file()))
      result.final.scalars[k] = v;
  result.final.scalars["train_seconds"] = outcome.seconds;
  result.final.scalars["steps"] = double(outcome.steps_done);

  RunRecord rec;
  rec.arch = to_string(config.model.arch);
  rec.config_yaml = yaml;
  rec.metrics = trainer.metrics();
  rec.eval = trainer.eval_metrics();
  rec.final_scalars = result.final.scalars;
  rec.final_vectors = result.final.vectors;
  for (Param* p : model.params().all()) rec.weights[p->name] = be->to_host(p->value);
  rec.save(opt.out);
  remove_checkpoint(ckpt);
  if (ranks > 1) dp.wait_for_rank0();  // the other ranks waited for the record
  result.finished = true;
  spdlog::info("wrote {}: mse {:.4g}, fvu {:.4g}, L0 {:.1f}, redundancy {:.4f}", opt.out, result.final.scalars["mse"],
               result.final.scalars["fvu"], result.final.scalars["l0"], result.final.scalars["redundancy"]);
  return result;
}

EvalData open_eval_data(const RunConfig& run, const std::string& data_override, bool all_rows) {
  EvalData e;
  e.config = run.data;
  if (!data_override.empty()) e.config.path = data_override;
  if (e.config.path.empty()) fail("the run names no activation file: give one with --data");
  if (!std::filesystem::exists(e.config.path)) fail("activation file '", e.config.path, "' does not exist");
  e.file = std::make_shared<const ActivationFile>(e.config.path, e.config.dataset);
  e.file->expect_d(run.model.d, "the SAE");
  e.rows = all_rows ? RowRange{0, e.file->tokens()} : split_rows(e.config, e.file->tokens(), e.config.path).eval;
  if (e.rows.size() == 0)
    fail("the ", all_rows ? "whole file" : "held-out split", " of '", e.config.path, "' has no rows");
  return e;
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
