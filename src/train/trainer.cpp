#include "train/trainer.h"

#include <atomic>
#include <cmath>
#include <csignal>
#include <filesystem>

#include "core/log.h"
#include "train/train_step.h"

namespace moesae {
namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

std::string si(double v) {
  char buf[32];
  if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

}  // namespace

void install_stop_signal_handlers() {
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
}
bool stop_requested() { return g_stop.load(); }

Trainer::Trainer(const TrainConfig& cfg, Sae& sae, BatchSource& data)
    : cfg_(cfg), sae_(sae), data_(data), adam_(sae.params(), sae.backend(), cfg) {
  if (cfg_.steps <= 0) fail("train.steps must be positive (got ", cfg_.steps, ")");
  if (cfg_.batch_size <= 0) fail("train.batch_size must be positive (got ", cfg_.batch_size, ")");
  if (data_.dim() != sae_.config().d)
    fail("data has d=", data_.dim(), " but the model was built for d=", sae_.config().d);
  base_lr_ = cfg_.lr > 0 ? cfg_.lr : default_lr(sae_.config().dict_size);
}

void Trainer::set_data_parallel(DataParallel* dp) {
  dp_ = dp;
  const int P = dp ? dp->size() : 1;
  if (cfg_.batch_size % P != 0)
    fail("train.batch_size ", cfg_.batch_size, " does not split evenly over ", P,
         " data-parallel ranks (use a multiple of ", P, ")");
  sae_.set_batch_group(dp && P > 1 ? dp : nullptr);
}

void Trainer::set_expert_parallel(ExpertParallel* ep, DataParallel* replicas, WholeModelFactory make_whole) {
  if (ep && !dp_) fail("expert parallelism needs the data-parallel group of all ranks (set_data_parallel first)");
  if (ep && dp_->size() != ep->communicator().size() * (replicas ? replicas->size() : 1))
    fail("expert parallelism: ", ep->communicator().size(), " expert-parallel ranks x ",
         replicas ? replicas->size() : 1, " replicas is not the ", dp_->size(), " ranks");
  ep_ = ep;
  replicas_ = replicas;
  make_whole_ = std::move(make_whole);
}

std::unique_ptr<Sae> Trainer::gather_whole_model() {
  if (!ep_) return nullptr;
  if (replicas_ && replicas_->rank() != 0) return nullptr;  // the first replica's experts are gathered
  std::unique_ptr<Sae> whole;
  if (dp_->rank() == 0) {
    if (!make_whole_) fail("expert parallelism: no way to build the whole model on rank 0 (set_expert_parallel)");
    whole = make_whole_();
  }
  gather_model(ep_->communicator(), sae_.params(), sae_.backend(), whole ? &whole->params() : nullptr,
               whole ? &whole->backend() : nullptr);
  return whole;
}

void Trainer::set_checkpoint(const std::string& path, const std::string& config_yaml, ConfigMatch matches) {
  ckpt_path_ = path;
  config_yaml_ = config_yaml;
  config_matches_ = std::move(matches);
}

bool Trainer::resume_if_present() {
  if (ckpt_path_.empty() || !std::filesystem::exists(ckpt_path_)) return false;
  state_ = load_checkpoint(ckpt_path_, config_yaml_, sae_, adam_, config_matches_);
  data_.restore(state_.data_cursor);
  spdlog::info("resumed from '{}' at step {}/{}", ckpt_path_, state_.step, cfg_.steps);
  return true;
}

bool Trainer::resume() {
  const bool resumed = resume_if_present();
  if (dp_ && dp_->size() > 1) {  // every rank must continue from the same step (one checkpoint, seen by all)
    int64_t lo = state_.step, hi = state_.step;
    dp_->communicator().all_reduce(&lo, 1, comm::ReduceOp::Min);
    dp_->communicator().all_reduce(&hi, 1, comm::ReduceOp::Max);
    if (lo != hi)
      fail("the ranks found different checkpoints at '", ckpt_path_, "' (steps ", lo, " to ", hi,
           "): put the record's directory on a file system every rank sees");
  }
  return resumed;
}

void Trainer::checkpoint() {
  if (ckpt_path_.empty()) return;
  state_.data_cursor = data_.state();  // collective under data parallelism: every rank's cursor
  if (ep_) {  // each expert-parallel rank of the first replica writes its shard, then rank 0 the manifest
    const ShardSet set{state_.step, ep_->communicator().size()};
    if (!replicas_ || replicas_->rank() == 0)
      save_checkpoint_shard(ckpt_path_, set, ep_->communicator().rank(), sae_, adam_);
    dp_->wait_for_rank0();  // every shard is on disk before the manifest names it
    if (dp_->rank() == 0) {
      save_checkpoint(ckpt_path_, config_yaml_, sae_, adam_, state_, &set);
      remove_stale_shards(ckpt_path_, &set);  // only now: the previous manifest's shards
    }
  } else if (!dp_ || dp_->rank() == 0) {
    save_checkpoint(ckpt_path_, config_yaml_, sae_, adam_, state_);
    remove_stale_shards(ckpt_path_, nullptr);  // of a sharded checkpoint this run resumed from
  }
  if (dp_) dp_->wait_for_rank0();  // the file is complete before any rank goes on (or exits)
}

TrainOutcome Trainer::run(int64_t stop_after) {
  Backend& be = sae_.backend();
  const ModelConfig& mc = sae_.config();
  const int64_t B = cfg_.batch_size;                   // the (group's) batch
  const int64_t local_b = dp_ ? B / dp_->size() : B;  // this process's share
  Tensor host_batch = be.host_buffer(local_b, mc.d);  // page-locked on CUDA: the upload of every step is a DMA
  Tensor x = be.empty(local_b, mc.d);
  TrainOutcome out;
  Timer total, interval;
  IntervalSums& acc = state_.interval;  // running sums over the logging interval (checkpointed with the state)
  const int64_t first = state_.step;
  if (dp_) sae_.set_batch_group(dp_->size() > 1 ? dp_ : nullptr);  // cleared again when run() returns
  if (ep_ && eval_hook_ && cfg_.eval_every > 0 && dp_->rank() == 0 && !make_whole_)
    fail("expert parallelism: periodic evaluation needs the whole model on rank 0 (set_expert_parallel)");
  StepOptions step_options;
  step_options.grad_clip = cfg_.grad_clip;
  step_options.shards = ep_ ? &ep_->communicator() : nullptr;
  if (dp_ || replicas_)
    step_options.reduce_gradients = [&] {
      if (dp_)
        dp_->all_reduce_gradients(sae_.params(), be, ep_ ? DataParallel::Which::Replicated : DataParallel::Which::All);
      // expert parallelism: an expert's gradient is summed over the replicas that hold it
      if (replicas_) replicas_->all_reduce_gradients(sae_.params(), be, DataParallel::Which::Sharded);
    };

  while (state_.step < cfg_.steps) {
    const bool stop = dp_ ? dp_->any(stop_requested()) : stop_requested();
    if (stop || (stop_after >= 0 && state_.step >= stop_after)) {
      checkpoint();
      out.interrupted = true;
      if (!dp_ || dp_->rank() == 0)
        spdlog::warn("stopped at step {} ({}); checkpoint written{}", state_.step,
                     stop ? "signal" : "stop_after", ckpt_path_.empty() ? " (none configured)" : "");
      break;
    }
    data_.next(host_batch);
    if (state_.step == 0 && cfg_.geometric_median_init)  // the median of the group's first batch
      sae_.init_biases_from_batch(dp_ && dp_->size() > 1 ? dp_->gather_batch(host_batch) : host_batch);
    be.upload(host_batch, x);

    const double lr = lr_at(cfg_, base_lr_, state_.step);
    step_options.lr = lr;
    const StepResult st = train_step(sae_, adam_, x, step_options);
    const SaeStats s = dp_ ? dp_->reduce_stats(st.stats, mc.d) : st.stats;
    if (!std::isfinite(s.loss))  // (the update is made by now; nothing is checkpointed from here)
      fail("training diverged at step ", state_.step, ": loss is ", s.loss, " (try a lower train.lr)");
    const double gnorm = st.grad_norm;
    ++state_.step;

    ++acc.steps;
    acc.loss += s.loss;
    acc.mse += s.mse;
    acc.mse_sum += s.mse_sum;
    acc.l0 += s.l0;
    acc.lb += s.lb;
    acc.aux += s.aux;
    acc.sparsity += s.sparsity;
    acc.lr += lr;
    acc.grad_norm += gnorm;
    const bool last = state_.step == cfg_.steps;
    if ((cfg_.log_every > 0 && state_.step % cfg_.log_every == 0) || last) {
      const double secs = interval.seconds(), n = double(acc.steps);
      // Throughput over the steps this process ran (a resumed interval's earlier steps ran before the restart).
      const double tps = double(B) * double(std::min(acc.steps, state_.step - first)) / std::max(secs, 1e-9);
      const double dead = sae_.dead_fraction();
      std::map<std::string, double> row{{"step", double(state_.step)},    {"loss", acc.loss / n},
                                        {"mse", acc.mse / n},             {"mse_sum", acc.mse_sum / n},
                                        {"l0", acc.l0 / n},               {"dead_fraction", dead},
                                        {"lr", acc.lr / n},               {"grad_norm", acc.grad_norm / n},
                                        {"tokens_per_s", tps},            {"tokens", double(state_.step * B)}};
      if (mc.arch == Arch::Scale || mc.arch == Arch::Switch) row["lb"] = acc.lb / n;
      if (mc.arch == Arch::TopK) row["auxk"] = acc.aux / n;
      if (mc.arch == Arch::Gated) {
        row["sparsity"] = acc.sparsity / n;
        row["aux"] = acc.aux / n;
      }
      auto omega = sae_.omega();
      if (!omega.empty()) {
        double m[2] = {0, double(omega.size())};  // sum and count (over every rank's experts when sharded)
        for (float w : omega) m[0] += w;
        if (ep_) ep_->communicator().all_reduce(m, 2, comm::ReduceOp::Sum);
        row["omega_mean"] = m[0] / m[1];
      }
      state_.metrics.add_row(row);
      const double done = double(state_.step - first), rate = done / std::max(total.seconds(), 1e-9);
      spdlog::info("step {}/{} | loss {:.5g} | mse {:.4g} | L0 {:.1f} | dead {:.1f}% | {} tok/s | ETA {}",
                   state_.step, cfg_.steps, acc.loss / n, acc.mse / n, acc.l0 / n, 100.0 * dead, si(tps),
                   format_duration(double(cfg_.steps - state_.step) / std::max(rate, 1e-9)));
      acc = IntervalSums{};
      interval.reset();
    }
    const bool evaluate = eval_hook_ && cfg_.eval_every > 0 && state_.step % cfg_.eval_every == 0 && !last;
    std::unique_ptr<Sae> whole = evaluate ? gather_whole_model() : nullptr;  // expert parallelism only
    if (evaluate && (!dp_ || dp_->rank() == 0)) {
      if (dp_) sae_.set_batch_group(nullptr);  // rank 0 evaluates alone: the statistics of its own batches
      auto row = eval_hook_(whole ? *whole : sae_);
      if (dp_) sae_.set_batch_group(dp_->size() > 1 ? dp_ : nullptr);
      row["step"] = double(state_.step);
      state_.eval_metrics.add_row(row);
    }
    if (evaluate && dp_) dp_->wait_for_rank0();  // the others wait out rank 0's evaluation
    if (cfg_.checkpoint_every > 0 && state_.step % cfg_.checkpoint_every == 0 && !last) checkpoint();
  }
  if (dp_) sae_.set_batch_group(nullptr);  // what follows (evaluation, export) runs on one rank
  out.steps_done = state_.step;
  out.finished = state_.step >= cfg_.steps;
  // The finished state is checkpointed too, so a failure in what follows (the final evaluation, writing the
  // record) never costs the training. It is taken before the final renormalisation, which resuming repeats.
  if (out.finished && state_.step > first) checkpoint();
  out.seconds = total.seconds();
  if (out.finished) sae_.apply_decoder_constraint();  // final weights satisfy the constraint
  return out;
}

}  // namespace moesae
