#include "run/experiment.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <thread>

#include "core/h5.h"
#include "core/log.h"
#include "data/activation_file.h"
#include "run/grid.h"
#include "run/plan.h"
#include "run/process.h"
#include "run/record.h"
#include "comm/communicator.h"
#include "run/train_run.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

extern char** environ;

namespace moesae {
namespace {

namespace fs = std::filesystem;

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

// base <- overlay, recursively for mappings; scalars and sequences are replaced; an empty overlay section keeps base.
YAML::Node merge(const YAML::Node& base, const YAML::Node& overlay) {
  if (base && overlay.IsNull()) return YAML::Clone(base);
  if (!base || !base.IsMap() || !overlay.IsMap()) return YAML::Clone(overlay);
  YAML::Node out = YAML::Clone(base);
  for (auto it = overlay.begin(); it != overlay.end(); ++it) {
    const std::string key = it->first.as<std::string>();
    const YAML::Node& cur = out;
    out[key] = merge(cur[key], it->second);
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

// ---- a run's configuration tree, with the origin of every key (for errors) --------------------------------------

// yaml-cpp's Clone (which run_config_from_yaml applies) drops line marks, so the run config's own messages cannot
// carry the line; each key's origin is kept here instead, and conversion errors are relocated to it.
const char* const kSentinel = "<point>";

struct Layered {
  YAML::Node tree{YAML::NodeType::Map};
  std::map<std::string, Origin> origins;  // "model.k" (and "model") -> where the effective value was written

  Layered copy() const {
    Layered l;
    l.tree = YAML::Clone(tree);
    l.origins = origins;
    return l;
  }
  // Merges a mapping of run-config sections over the tree.
  // Merges a mapping of run-config sections over the tree (keys in `skip` are not sections: a run's name).
  void overlay(const YAML::Node& sections, const std::string& file, const std::string& what,
               const std::set<std::string>& skip = {}) {
    if (!sections || sections.IsNull()) return;
    YAML::Node kept(YAML::NodeType::Map);
    for (auto it = sections.begin(); it != sections.end(); ++it) {
      const std::string section = it->first.Scalar();
      if (skip.count(section)) continue;
      kept[section] = it->second;
      if (!origins.count(section) || !it->second.IsMap()) origins[section] = origin_of(file, it->first, what);
      if (it->second.IsMap())
        for (auto k = it->second.begin(); k != it->second.end(); ++k)
          origins[section + "." + k->first.Scalar()] = origin_of(file, k->first, what);
    }
    tree = merge(tree, kept);
  }
  void set(const std::string& path, const YAML::Node& value, const Origin& o) {
    const size_t dot = path.find('.');
    const std::string section = path.substr(0, dot), key = path.substr(dot + 1);
    const YAML::Node& ro = tree;
    if (!ro[section] || !ro[section].IsMap()) tree[section] = YAML::Node(YAML::NodeType::Map);
    tree[section][key] = YAML::Clone(value);
    origins[path] = o;
    if (!origins.count(section)) origins[section] = o;
  }
  void remove(const std::string& path) {
    const size_t dot = path.find('.');
    const std::string section = path.substr(0, dot), key = path.substr(dot + 1);
    const YAML::Node& ro = tree;
    if (ro[section] && ro[section].IsMap()) tree[section].remove(key);
    origins.erase(path);
  }
  std::optional<std::string> written(const std::string& path) const {
    const size_t dot = path.find('.');
    const YAML::Node& ro = tree;
    const YAML::Node s = ro[path.substr(0, dot)];
    if (!s || !s.IsMap()) return std::nullopt;
    const YAML::Node v = s[path.substr(dot + 1)];
    if (!v || !v.IsScalar()) return std::nullopt;
    return v.Scalar();
  }
};

// A conversion error relocated to where the offending key was written: "file:7: grid key 'model.k': <message>
// (grid point ...)". Messages without a key of the tree keep the experiment file's name.
[[noreturn]] void relocate(const std::string& msg, const std::map<std::string, Origin>& origins,
                           const std::string& file, const std::string& context) {
  const std::string suffix = context.empty() ? "" : " (" + context + ")";
  const std::string sentinel = kSentinel;
  if (msg.rfind(sentinel, 0) != 0) fail(msg, suffix);  // e.g. an --set override: already located
  size_t p = sentinel.size();
  if (p < msg.size() && msg[p] == ':') {
    size_t q = p + 1;
    while (q < msg.size() && std::isdigit(static_cast<unsigned char>(msg[q]))) ++q;
    if (q > p + 1) p = q;
  }
  if (msg.compare(p, 2, ": ") == 0) p += 2;
  const std::string body = msg.substr(p);
  const Origin* where = nullptr;
  static const std::regex key_re(R"(\b(data|model|train|eval|lm)\.[A-Za-z0-9_]+)");
  for (auto it = std::sregex_iterator(body.begin(), body.end(), key_re); it != std::sregex_iterator() && !where; ++it)
    if (auto o = origins.find(it->str()); o != origins.end()) where = &o->second;
  static const std::regex section_re(R"(section '([^']*)')");
  std::smatch m;
  if (!where && std::regex_search(body, m, section_re))
    if (auto o = origins.find(m[1].str()); o != origins.end()) where = &o->second;
  if (!where) fail(file, ": ", body, suffix);
  fail(where->location(), ": ", body, where->what == context ? "" : suffix);
}

RunConfig convert(const Layered& l, const std::vector<std::string>& overrides, const std::string& file,
                  const std::string& context) {
  try {
    return run_config_from_yaml(l.tree, overrides, kSentinel);
  } catch (const Error& e) {
    relocate(e.what(), l.origins, file, context);
  }
}

std::optional<RunConfig> try_convert(const Layered& l, const std::vector<std::string>& overrides) {
  try {
    return run_config_from_yaml(l.tree, overrides, kSentinel);
  } catch (const Error&) {
    return std::nullopt;
  }
}

// dict_size while flops_match sizes a point: divisible by every expert count of the form 2^a 3^b 5 7 (a <= 20,
// b <= 3), and large enough for any k, so that the rest of the point can be resolved first.
constexpr int kPlaceholderDictSize = 990904320;  // 2^20 * 3^3 * 5 * 7

// Keys a reference that changes model.arch does not inherit from the point (they belong to the point's routing).
const char* const kRoutingKeys[] = {"model.experts",       "model.active_experts", "model.feature_scaling",
                                    "model.weight",        "model.select_on",      "model.lb_assignment",
                                    "model.router_bias",   "model.heaviside"};

// Chooses model.dict_size (a multiple of the point's experts, with k <= e F / E) so that the point's FLOPs per
// token (rule.measure) are within rule.tolerance of its reference's (paper §3.1: FLOPS-matched comparisons).
int size_by_flops(const FlopsMatch& rule, const Layered& point, const Experiment& e,
                  const std::vector<std::string>& overrides, const std::string& context) {
  const std::string& file = e.source;
  const std::string where = rule.origin.location();
  Layered probe = point.copy();
  probe.set("model.dict_size", YAML::Node(kPlaceholderDictSize), rule.origin);
  RunConfig cfg;
  try {
    cfg = run_config_from_yaml(probe.tree, overrides, kSentinel);
  } catch (const Error& err) {
    const std::string msg = err.what();
    if (msg.find(std::to_string(kPlaceholderDictSize)) != std::string::npos)
      fail(where, ": cannot size model.dict_size: model.experts must divide 2^20 3^3 5 7 (", context, ")");
    relocate(msg, probe.origins, file, context);
  }
  int d = data_shape(e, cfg).d;
  if (d <= 0) {
    if (rule.measure != FlopsMeasure::Encoder)
      fail(where, ": measure '", to_string(rule.measure),
           "' needs the input dimension d, which is not known before the data exists: set model.d in base (e.g. "
           "768 for GPT-2 small), or use measure: encoder (",
           context, ")");
    d = 1;  // the encoder measure is proportional to d: any d sizes the same
  }
  Layered ref = point.copy();
  bool sets_arch = false;
  for (const Assignment& a : rule.reference) sets_arch = sets_arch || a.path == "model.arch";
  if (sets_arch)
    for (const char* key : kRoutingKeys) ref.remove(key);
  for (const Assignment& a : rule.reference) ref.set(a.path, a.value, a.origin);
  RunConfig rc = convert(ref, overrides, file, "flops_match reference of " + context);
  rc.model.d = d;
  const double target = flops_per_token(rc.model, rc.train.batch_size).get(rule.measure);

  ModelConfig m = cfg.model;
  m.d = d;
  const int64_t E = m.experts;
  const int64_t jmin = m.arch == Arch::Gated ? 1 : std::max<int64_t>(1, (m.k + m.active_experts - 1) / m.active_experts);
  const int64_t jmax = INT_MAX / E;
  auto cost = [&](int64_t j) {
    m.dict_size = static_cast<int>(E * j);
    return flops_per_token(m, cfg.train.batch_size).get(rule.measure);
  };
  if (jmin > jmax) fail(where, ": no valid model.dict_size for model.k ", m.k, " (", context, ")");
  int64_t lo = jmin, hi = jmax;
  if (cost(hi) < target) lo = hi;
  while (lo < hi) {  // the smallest j whose cost reaches the target (cost grows with j)
    const int64_t mid = lo + (hi - lo) / 2;
    if (cost(mid) >= target)
      hi = mid;
    else
      lo = mid + 1;
  }
  int64_t best = lo;
  if (lo > jmin && std::fabs(cost(lo - 1) - target) <= std::fabs(cost(lo) - target)) best = lo - 1;
  const double got = cost(best), rel = (got - target) / target;
  if (std::fabs(rel) > rule.tolerance) {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  ": no model.dict_size (a multiple of experts = %lld with k <= e F/E) gives %s FLOPs/token within "
                  "%g%% of the reference's %s: the nearest, %lld, gives %s (%+.1f%%)",
                  static_cast<long long>(E), to_string(rule.measure), 100 * rule.tolerance, si_count(target).c_str(),
                  static_cast<long long>(E * best), si_count(got).c_str(), 100 * rel);
    fail(where, buf, " (", context, ")");
  }
  return static_cast<int>(E * best);
}

std::string describe(const std::vector<std::pair<std::string, std::string>>& values) {
  std::string s;
  for (const auto& [k, v] : values) s += (s.empty() ? "" : ", ") + k + "=" + v;
  return s;
}

// One process trains a run at a time: it holds <record>.lock while it does.
int lock_run(const std::string& record) { return lock_file(record + ".lock", false); }
void unlock_run(int fd, const std::string& record) { unlock_file(fd, record + ".lock"); }
bool run_locked(const std::string& record) { return file_locked(record + ".lock"); }

bool g_interrupted = false;

enum class Outcome { Finished, Skipped, Failed, Interrupted, Busy };

// Whether to train a run: its record may already hold this configuration (skip), another process may hold its
// lock (busy); otherwise *lock receives the held lock and the answer is to train.
enum class Decision { Train, Skip, Busy };
Decision decide(const ExperimentRun& r, bool force, const std::string& tag, int* lock) {
  if (!force && fs::exists(r.record)) {
    bool match = false;
    try {
      match = record_matches(r.record, r.config);
    } catch (const Error& err) {
      spdlog::warn("{} {}: cannot read {} ({}): retraining", tag, r.name, r.record, err.what());
    }
    if (match) {
      spdlog::info("{} {}: finished earlier ({}), skipped", tag, r.name, r.record);
      return Decision::Skip;
    }
    spdlog::warn("{} {}: {} was trained with another configuration: retraining", tag, r.name, r.record);
  }
  if (auto dir = fs::path(r.record).parent_path(); !dir.empty()) fs::create_directories(dir);
  *lock = lock_run(r.record);
  if (*lock < 0) {
    spdlog::warn("{} {}: another process is training it ({}.lock is held): skipped", tag, r.name, r.record);
    return Decision::Busy;
  }
  if (!force && fs::exists(r.record)) {  // finished by another process between the check above and the lock
    bool match = false;
    try {
      match = record_matches(r.record, r.config);
    } catch (const Error&) {
    }
    if (match) {
      unlock_run(*lock, r.record);
      *lock = -1;
      spdlog::info("{} {}: finished by another process ({}), skipped", tag, r.name, r.record);
      return Decision::Skip;
    }
  }
  return Decision::Train;
}

// Trains one run in this process unless its record already holds this configuration. Under mpirun with several
// ranks (`comm` of size > 1) every rank calls this for the same run: rank 0 decides and holds the lock, and all
// ranks train it together (in the layout of its parallel: section, run/train_run.cpp).
Outcome run_one(const ExperimentRun& r, bool force, const std::string& tag, comm::Communicator* comm) {
  const bool leader = !comm || comm->rank() == 0;
  int lock = -1;
  int32_t decision = 0;
  if (leader) decision = int32_t(decide(r, force, tag, &lock));
  if (comm && comm->size() > 1) comm->broadcast(&decision, 1, 0);
  if (Decision(decision) == Decision::Skip) return Outcome::Skipped;
  if (Decision(decision) == Decision::Busy) return Outcome::Busy;
  auto release = [&] {
    if (lock >= 0) unlock_run(lock, r.record);
    lock = -1;
  };
  spdlog::info("{} {}", tag, r.name);
  try {
    TrainRunResult res = train_run(r.config, TrainRunOptions{r.record, -1, false});
    release();
    if (!res.finished) {
      spdlog::warn("{} stopped at step {}; rerun to resume", r.name, res.steps_done);
      return Outcome::Interrupted;
    }
    return Outcome::Finished;
  } catch (const Error& err) {
    release();
    spdlog::error("run '{}' failed: {}", r.name, err.what());
    if (comm && comm->size() > 1) throw;  // the other ranks are inside the same run: the job must end
    return Outcome::Failed;
  } catch (...) {
    release();
    throw;
  }
}

// Grid-level progress: done/total, failures, and an ETA from the throughput so far (or the rate estimate).
class Progress {
 public:
  Progress(const Experiment& e, const std::vector<const ExperimentRun*>& runs) : name_(e.name) {
    planned_ = plan_runs(e, runs);
    for (size_t i = 0; i < runs.size(); ++i) remaining_[runs[i]] = planned_[i].remaining_flops;
    total_ = runs.size();
  }
  void ended(const ExperimentRun* r, Outcome o) {
    if (o == Outcome::Failed || o == Outcome::Interrupted || o == Outcome::Busy) ++failed_;
    if (o == Outcome::Finished || o == Outcome::Skipped) ++done_;
    if (o == Outcome::Skipped) ++skipped_;
    if (o == Outcome::Finished) work_done_ += remaining_[r];
    remaining_[r] = 0;
  }
  void line(int running) {
    double left = 0;
    for (const auto& kv : remaining_) left += kv.second;
    // The throughput of the runs trained so far; before the first one ends, the rate estimate ("~").
    double rate = work_done_ > 0 ? work_done_ / std::max(clock_.seconds(), 1e-9) : 0;
    std::string prefix;
    if (rate <= 0 && left > 0) {
      if (!estimate_) estimate_ = estimate_rate(planned_).flops_per_s;
      rate = *estimate_;
      prefix = "~";
    }
    const std::string eta = left <= 0 ? "0s" : rate > 0 ? prefix + format_duration(left / rate) : "?";
    spdlog::info("{}: {}/{} runs done ({} skipped), {} not finished{} | elapsed {} | ETA {}", name_, done_, total_,
                 skipped_, failed_, running > 0 ? ", " + std::to_string(running) + " running" : std::string(),
                 format_duration(clock_.seconds()), eta);
  }

 private:
  std::string name_;
  std::vector<PlannedRun> planned_;
  std::map<const ExperimentRun*, double> remaining_;
  size_t total_ = 0, done_ = 0, failed_ = 0, skipped_ = 0;
  double work_done_ = 0;
  std::optional<double> estimate_;
  Timer clock_;
};

int run_sequential(const Experiment& e, const std::vector<const ExperimentRun*>& selected, bool force,
                   bool progress, comm::Communicator* comm = nullptr) {
  std::optional<Progress> p;
  if (progress && selected.size() > 1) p.emplace(e, selected);
  int failed = 0, n = 0;
  for (const ExperimentRun* r : selected) {
    ++n;
    const std::string tag = "[" + std::to_string(n) + "/" + std::to_string(selected.size()) + "]";
    const Outcome o = run_one(*r, force, tag, comm);
    if (o == Outcome::Interrupted) {
      g_interrupted = true;
      return failed + 1;
    }
    if (o == Outcome::Failed || o == Outcome::Busy) ++failed;
    if (p) {
      p->ended(r, o);
      if (o != Outcome::Skipped || n == int(selected.size())) p->line(0);
    }
  }
  return failed;
}

// The last line of a child's log that says why it failed.
std::string failure_line(const std::string& log, const std::string& id) {
  std::ifstream in(log);
  std::string line, best;
  while (std::getline(in, line))
    if (line.rfind("error: ", 0) == 0 || line.find("run '" + id + "' failed: ") != std::string::npos) best = line;
  const size_t p = best.find("run '" + id + "' failed: ");
  if (p != std::string::npos) return best.substr(p + id.size() + 15);
  return best.rfind("error: ", 0) == 0 ? best.substr(7) : best;
}


// Up to `jobs` runs at once, each `moesae run FILE --worker --only ID` in a child process with its share of the CPU
// threads, its output appended to <out>/logs/<id>.log.
int run_parallel(const Experiment& e, const std::vector<const ExperimentRun*>& selected, const ExperimentOptions& opt,
                 bool force) {
  std::vector<const ExperimentRun*> todo;
  Progress progress(e, selected);
  int busy = 0;
  for (const ExperimentRun* r : selected) {
    if (!force && fs::exists(r->record)) {
      bool match = false;
      try {
        match = record_matches(r->record, r->config);
      } catch (const Error&) {
      }
      if (match) {
        spdlog::info("{}: finished earlier ({}), skipped", r->name, r->record);
        progress.ended(r, Outcome::Skipped);
        continue;
      }
    }
    if (run_locked(r->record)) {
      spdlog::warn("{}: another process is training it ({}.lock is held): skipped", r->name, r->record);
      progress.ended(r, Outcome::Busy);
      ++busy;
      continue;
    }
    todo.push_back(r);
  }
  if (todo.empty()) {
    progress.line(0);
    return busy;
  }
  const std::string exe = opt.executable.empty() ? own_executable() : opt.executable;
  const size_t slots = std::min<size_t>(std::max(opt.jobs, 1), todo.size());
  int budget = int(std::thread::hardware_concurrency());
  if (const char* omp = std::getenv("OMP_NUM_THREADS"); omp && std::atoi(omp) > 0) budget = std::atoi(omp);
  const int threads = std::max(1, budget / int(slots));
  const std::string logs = e.out + "/logs";
  fs::create_directories(logs);
  spdlog::info("{}: {} run(s) to train, {} at a time, {} thread(s) each; logs in {}/", e.name, todo.size(), slots,
               threads, logs);
  install_stop_signal_handlers();
  // Children log at least at info into their files, whatever this terminal shows.
  const std::string level(spdlog::level::to_string_view(std::min(spdlog::get_level(), spdlog::level::info)).data());

  struct Child {
    pid_t pid;
    const ExperimentRun* run;
    std::string log;
    Timer timer;
  };
  std::vector<Child> running;
  size_t next = 0;
  int failed = 0, interrupted = 0;
  bool stopping = false;
  Timer since_line;

  auto launch = [&](const ExperimentRun* r) {
    std::vector<std::string> args{exe, "--log-level", level, "run", e.source, "--worker", "--only", r->name};
    if (force) args.push_back("--rerun");
    for (const std::string& o : e.overrides) args.insert(args.end(), {"--set", o});
    std::vector<std::string> env;  // this environment with the thread count of one child
    for (char** v = environ; *v; ++v)
      if (std::strncmp(*v, "OMP_NUM_THREADS=", 16) != 0 && std::strncmp(*v, "OPENBLAS_NUM_THREADS=", 21) != 0)
        env.emplace_back(*v);
    if (r->config.train.threads == 0)
      for (const char* var : {"OMP_NUM_THREADS=", "OPENBLAS_NUM_THREADS="}) env.push_back(var + std::to_string(threads));
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& v : env) envp.push_back(v.data());
    envp.push_back(nullptr);
    const std::string log = logs + "/" + r->name + ".log";
    {
      std::ofstream header(log, std::ios::app);
      std::string cmd;
      for (const auto& a : args) cmd += (cmd.empty() ? "" : " ") + a;
      header << "==== " << iso_time_utc() << " " << cmd << "\n";
    }
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) fail("cannot open the log '", log, "': ", std::strerror(errno));
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) fail("cannot start a child process: ", std::strerror(errno));
    if (pid == 0) {  // the child: only async-signal-safe calls until exec
#ifdef __linux__
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // the parent dies: checkpoint and stop
      if (::getppid() != parent) ::_exit(3);
#endif
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::execve(exe.c_str(), argv.data(), envp.data());
      ::_exit(127);
    }
    ::close(fd);
    running.push_back({pid, r, log, Timer()});
    spdlog::info("started {} (log: {})", r->name, log);
  };

  while (next < todo.size() || !running.empty()) {
    if (stop_requested() && !stopping) {
      stopping = true;
      spdlog::warn("stopping: asking {} running run(s) to checkpoint", running.size());
      for (const Child& c : running) ::kill(c.pid, SIGTERM);
    }
    while (!stopping && running.size() < slots && next < todo.size()) launch(todo[next++]);
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      auto it = std::find_if(running.begin(), running.end(), [&](const Child& c) { return c.pid == pid; });
      if (it == running.end()) continue;
      const Child c = *it;
      running.erase(it);
      Outcome o = Outcome::Failed;
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        o = fs::exists(c.run->record) ? Outcome::Finished : Outcome::Failed;
        if (o == Outcome::Finished) spdlog::info("finished {} in {}", c.run->name, format_duration(c.timer.seconds()));
      }
      if ((WIFEXITED(status) && WEXITSTATUS(status) == 3) || (stopping && WIFSIGNALED(status))) {
        o = Outcome::Interrupted;
        ++interrupted;
        spdlog::warn("{} stopped with a checkpoint; rerun to resume", c.run->name);
      } else if (o == Outcome::Failed) {
        ++failed;
        std::string why = WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                                              : failure_line(c.log, c.run->name);
        if (WIFEXITED(status) && WEXITSTATUS(status) == 127) why = "cannot execute '" + exe + "'";
        spdlog::error("run '{}' failed: {} (log: {})", c.run->name, why.empty() ? "see the log" : why, c.log);
      }
      progress.ended(c.run, o);
      progress.line(int(running.size()));
      since_line.reset();
      continue;
    }
    if (pid < 0 && errno == ECHILD) break;
    if (since_line.seconds() > 30) {
      progress.line(int(running.size()));
      since_line.reset();
    }
    struct timespec ts {0, 100 * 1000 * 1000};
    ::nanosleep(&ts, nullptr);
  }
  const int never_started = int(todo.size() - next);
  if (interrupted > 0 || never_started > 0) g_interrupted = true;
  return failed + interrupted + never_started + busy;
}

}  // namespace

// ---- loading ------------------------------------------------------------------------------------------------------

Experiment load_experiment(const std::string& path, const std::vector<std::string>& overrides) {
  if (!fs::exists(path)) fail("experiment file '", path, "' does not exist");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    fail(path, ":", e.mark.line + 1, ": malformed YAML: ", e.msg);
  }
  check_keys(path, root,
             {"name", "description", "out", "synthetic", "extract", "base", "base_file", "runs", "grid", "zip",
              "include", "exclude", "presets", "flops_match"},
             "the experiment");
  if (root["synthetic"] && root["extract"])
    fail_at(path, root["extract"], "an experiment has either 'synthetic' or 'extract' data, not both");
  Experiment e;
  e.source = path;
  e.overrides = overrides;
  e.name = root["name"] ? scalar<std::string>(path, root["name"], "name") : fs::path(path).stem().string();
  if (root["description"]) e.description = scalar<std::string>(path, root["description"], "description");
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

  // The base: base_file, then base over it.
  Layered base;
  if (const YAML::Node bf = root["base_file"]) {
    const std::string given = scalar<std::string>(path, bf, "base_file");
    fs::path file = given;
    if (file.is_relative()) {
      const fs::path beside = fs::path(path).parent_path() / file;
      if (fs::exists(beside))
        file = beside;
      else if (!fs::exists(file))
        fail_at(path, bf, "base_file '" + given + "' does not exist (looked in '" + beside.string() +
                              "' and the current directory)");
    } else if (!fs::exists(file)) {
      fail_at(path, bf, "base_file '" + given + "' does not exist");
    }
    YAML::Node tree;
    try {
      tree = YAML::LoadFile(file.string());
    } catch (const YAML::Exception& err) {
      fail(file.string(), ":", err.mark.line + 1, ": malformed YAML: ", err.msg);
    }
    if (!tree.IsNull() && !tree.IsMap())
      fail(file.string(), ": a run configuration must be a mapping of sections (data, model, train, eval, lm)");
    base.overlay(tree, file.string(), "");
  }
  if (const YAML::Node b = root["base"]) {
    if (!b.IsNull() && !b.IsMap()) fail_at(path, b, "'base' must be a mapping of run-config sections");
    base.overlay(b, path, "");
  }
  const GridSpec grid = parse_grid(path, root);
  auto apply_preset = [&](Layered& l, const std::string& name) {
    l.overlay(grid.presets.at(name), path, "preset '" + name + "'");
  };
  auto fill_data_path = [&](Layered& l) {
    if (l.written("data.path")) return;
    if (e.has_synthetic) l.set("data.path", YAML::Node(e.synthetic_path), Origin{path, 0, "synthetic"});
    if (e.has_extract) l.set("data.path", YAML::Node(e.extract_path), Origin{path, 0, "extract"});
  };

  // Named runs.
  std::set<std::string> names;
  if (const YAML::Node runs = root["runs"]) {
    if (!runs.IsSequence() || runs.size() == 0) fail(path, ": 'runs' must be a non-empty list of runs");
    for (const YAML::Node& r : runs) {
      if (!r.IsMap() || !r["name"]) fail_at(path, r, "every run needs a 'name'");
      ExperimentRun run;
      run.name = scalar<std::string>(path, r["name"], "name");
      if (run.name.empty() || run.name[0] == '.' || run.name.find('/') != std::string::npos)
        fail_at(path, r["name"], "run name '" + run.name + "' must be a file name (not empty, no '/', no leading '.')");
      if (!names.insert(run.name).second) fail_at(path, r["name"], "duplicate run name '" + run.name + "'");
      const std::string context = "run '" + run.name + "'";
      Layered l = base.copy();
      if (const YAML::Node p = r["preset"]) {
        if (!p.IsScalar() || !grid.presets.count(p.Scalar())) {
          std::string known;
          for (const auto& kv : grid.presets) known += (known.empty() ? "" : ", ") + kv.first;
          fail_at(path, p, "preset '" + (p.IsScalar() ? p.Scalar() : std::string("?")) + "' is not defined" +
                               (known.empty() ? " (the file has no presets:)" : " (presets: " + known + ")"));
        }
        run.preset = p.Scalar();
        apply_preset(l, run.preset);
      }
      l.overlay(r, path, context, {"name", "preset"});
      fill_data_path(l);
      run.config = convert(l, overrides, path, context);
      run.record = e.out + "/" + run.name + ".h5";
      run.hash = config_hash(run.config);
      e.runs.push_back(std::move(run));
    }
  }

  // Grid points.
  if (grid.has_points()) {
    e.varied = grid.varied;
    std::map<std::string, std::string> by_hash;  // hash -> description of the point that has it
    size_t kept = 0;
    for (const GridPoint& point : expand_grid(grid)) {
      ExperimentRun run;
      run.grid_point = true;
      Layered l = base.copy();
      for (const Assignment& a : point)
        if (a.path == "preset") {
          run.preset = a.value.Scalar();
          apply_preset(l, run.preset);
        }
      for (const Assignment& a : point) {
        run.values.emplace_back(a.path, a.value.Scalar());
        if (a.path != "preset") l.set(a.path, a.value, a.origin);
      }
      fill_data_path(l);
      std::string context = "grid point " + describe(run.values);

      // Filters (and flops_match `when`) see the resolved values of the point as written; for a point that is not
      // valid as written (yet), those with a placeholder dict_size, then the values written in the file.
      const std::optional<RunConfig> as_written = try_convert(l, overrides);
      std::optional<RunConfig> placeholder;
      if (!as_written) {
        Layered p = l.copy();
        p.set("model.dict_size", YAML::Node(kPlaceholderDictSize), Origin{});
        placeholder = try_convert(p, overrides);
      }
      const ValueLookup lookup = [&](const std::string& key) -> std::optional<std::string> {
        if (key == "preset") return run.preset.empty() ? std::nullopt : std::optional<std::string>(run.preset);
        if (as_written) return resolved_value(*as_written, key);
        if (placeholder && key != "model.dict_size") return resolved_value(*placeholder, key);
        return l.written(key);
      };
      const auto matches = [&](const std::vector<GridFilter>& filters) {
        return std::any_of(filters.begin(), filters.end(), [&](const GridFilter& f) { return filter_matches(f, lookup); });
      };
      if (!grid.include.empty() && !matches(grid.include)) continue;
      if (matches(grid.exclude)) continue;
      ++kept;

      bool sized = false;
      for (const FlopsMatch& rule : grid.flops_match) {
        if (!rule.when.empty() && !matches(rule.when)) continue;
        sized = true;
        const int F = size_by_flops(rule, l, e, overrides, context);
        l.set("model.dict_size", YAML::Node(F), Origin{rule.origin.file, rule.origin.line, "flops_match"});
        auto it = std::find_if(run.values.begin(), run.values.end(), [](const auto& kv) { return kv.first == "model.dict_size"; });
        if (it != run.values.end())
          it->second = std::to_string(F);
        else
          run.values.emplace_back("model.dict_size", std::to_string(F));
        if (std::find(e.varied.begin(), e.varied.end(), "model.dict_size") == e.varied.end())
          e.varied.push_back("model.dict_size");
        break;
      }
      run.config = sized || !as_written ? convert(l, overrides, path, context) : *as_written;
      run.hash = config_hash(run.config);
      run.name = point_label(run.values) + "-" + run.hash.substr(0, 8);
      run.record = e.out + "/" + run.name + ".h5";
      if (auto it = by_hash.find(run.hash); it != by_hash.end())
        fail(path, ": grid points ", it->second, " and ", describe(run.values),
             " resolve to the same configuration; vary something else or exclude one of them");
      by_hash[run.hash] = describe(run.values);
      if (!names.insert(run.name).second)
        fail(path, ": grid point ", describe(run.values), " has the id '", run.name, "' of a named run");
      e.runs.push_back(std::move(run));
    }
    if (kept == 0 && e.runs.empty()) fail(path, ": include/exclude removed every grid point: nothing to run");
  }
  if (e.runs.empty())
    fail(path, ": the experiment has no runs: give 'runs:' (named runs) or 'grid:' / 'zip:' (a grid of runs)");
  return e;
}

// ---- status -------------------------------------------------------------------------------------------------------

DataShape data_shape(const Experiment& e, const RunConfig& c) {
  DataShape s;
  auto train_rows = [&](int64_t tokens) {
    const int64_t held = c.data.eval_tokens > 0 ? std::min(c.data.eval_tokens, tokens)
                                                : static_cast<int64_t>(std::floor(c.data.eval_fraction * double(tokens)));
    return std::max<int64_t>(tokens - held, 0);
  };
  if (e.has_synthetic && c.data.path == e.synthetic_path) {
    s.d = static_cast<int>(e.synthetic.d);
    s.train_rows = train_rows(static_cast<int64_t>(e.synthetic.tokens));
  } else if (!c.data.path.empty() && fs::exists(c.data.path)) {
    // Activation file headers, cached by path and modification time (plan/collect ask once per run).
    static std::map<std::pair<std::string, std::string>, std::pair<int, int64_t>> cache;
    std::error_code ec;
    const auto mtime = fs::last_write_time(c.data.path, ec).time_since_epoch().count();
    const auto key = std::make_pair(c.data.path + "\n" + c.data.dataset, std::to_string(mtime));
    auto it = cache.find(key);
    if (it == cache.end()) {
      std::pair<int, int64_t> v{0, 0};
      try {
        ActivationFile f(c.data.path, c.data.dataset);
        v = {static_cast<int>(f.d()), f.tokens()};
      } catch (const Error&) {
      }
      it = cache.emplace(key, v).first;
    }
    s.d = it->second.first;
    s.train_rows = it->second.first > 0 ? train_rows(it->second.second) : 0;
  }
  if (c.model.d > 0) s.d = c.model.d;
  return s;
}

// Whether a record was trained with this run's configuration (the input dimension comes from the data).
bool record_matches(const std::string& record, const RunConfig& config) {
  RunConfig stored = parse_run_config_text(RunRecord::load(record, false).config_yaml, {}, record);
  RunConfig wanted = config;
  stored.model.d = wanted.model.d = 0;
  return to_yaml(stored) == to_yaml(wanted);
}

std::string RunStatus::text() const {
  const std::string progress = std::to_string(step) + "/" + std::to_string(steps);
  switch (state) {
    case State::Done: return "done";
    case State::Stale: return "stale";
    case State::Todo: return "todo";
    case State::Partial: return checkpoint_stale ? "partial (other config)" : "partial " + progress;
    case State::Running: return step > 0 ? "running " + progress : "running";
  }
  return "?";
}

RunStatus run_status(const ExperimentRun& r) {
  RunStatus s;
  s.steps = r.config.train.steps;
  const std::string ckpt = checkpoint_path_for(r.record);
  if (fs::exists(ckpt)) {
    try {
      h5::File f(ckpt, h5::File::Mode::Read);
      s.step = f.attr_int("/", "step");
      f.close();
      RunConfig stored = parse_run_config_text(checkpoint_config(ckpt), {}, ckpt);
      RunConfig wanted = r.config;
      stored.model.d = wanted.model.d = 0;
      s.checkpoint_stale = checkpoint_identity(stored) != checkpoint_identity(wanted);
    } catch (const Error&) {  // replaced while we read it, or not a checkpoint
    }
  }
  if (run_locked(r.record)) {
    s.state = RunStatus::State::Running;
    return s;
  }
  if (fs::exists(r.record)) {
    bool match = false;
    try {
      match = record_matches(r.record, r.config);
    } catch (const Error&) {
    }
    s.state = match ? RunStatus::State::Done : RunStatus::State::Stale;
    return s;
  }
  s.state = fs::exists(ckpt) ? RunStatus::State::Partial : RunStatus::State::Todo;
  return s;
}

// ---- running ------------------------------------------------------------------------------------------------------

std::vector<const ExperimentRun*> select_runs(const Experiment& e, const std::vector<std::string>& only) {
  std::set<const ExperimentRun*> chosen;
  for (const std::string& name : only) {
    const ExperimentRun* hit = nullptr;
    std::vector<std::string> prefixed;
    for (const ExperimentRun& r : e.runs) {
      if (r.name == name) hit = &r;
      if (r.grid_point && r.name.rfind(name + "-", 0) == 0 && r.name.size() == name.size() + 9) prefixed.push_back(r.name);
    }
    if (!hit && prefixed.size() == 1)
      for (const ExperimentRun& r : e.runs)
        if (r.name == prefixed[0]) hit = &r;
    if (!hit) {
      std::string names;
      int shown = 0;
      for (const ExperimentRun& r : e.runs)
        if (shown++ < 30) names += (names.empty() ? "" : ", ") + r.name;
      if (e.runs.size() > 30) names += ", ... (" + std::to_string(e.runs.size()) + " in all)";
      fail("--only ", name, ": ", e.source, " has no run of that name (runs: ", names, ")");
    }
    chosen.insert(hit);
  }
  std::vector<const ExperimentRun*> out;
  for (const ExperimentRun& r : e.runs)
    if (only.empty() || chosen.count(&r)) out.push_back(&r);
  return out;
}

bool experiment_interrupted() { return g_interrupted; }

bool prepare_experiment_data(const Experiment& e) {
  fs::create_directories(e.out);
  // One process prepares the data; others (a second `moesae run`, the tasks of a SLURM array) wait for it and
  // then find it ready.
  struct DataLock {
    std::string path;
    int fd = -1;
    ~DataLock() {
      if (fd >= 0) unlock_file(fd, path);
    }
  } data_lock;
  if (e.has_synthetic || e.has_extract) {
    data_lock.path = (e.has_synthetic ? e.synthetic_path : e.extract_path) + ".lock";
    data_lock.fd = lock_file(data_lock.path, true);
  }
  bool data_changed = false;
  if (e.has_synthetic && fs::exists(e.synthetic_path) && !synthetic_file_matches(e.synthetic_path, e.synthetic)) {
    spdlog::warn("{} was generated with other synthetic settings: regenerating it and retraining every run",
                 e.synthetic_path);
    data_changed = true;
  }
  if (e.has_synthetic && (data_changed || !fs::exists(e.synthetic_path))) {
    Timer t;
    spdlog::info("generating synthetic activations: {} tokens, d={}, {} features in {} groups -> {}",
                 e.synthetic.tokens, e.synthetic.d, e.synthetic.features, e.synthetic.groups, e.synthetic_path);
    write_synthetic(e.synthetic, e.synthetic_path);
    spdlog::info("synthetic data ready in {:.1f}s", t.seconds());
  }
  if (e.has_extract && fs::exists(e.extract_path) && !extracted_file_matches(e.extract_path, e.extract)) {
    spdlog::warn("{} was extracted with other settings: extracting again and retraining every run", e.extract_path);
    data_changed = true;
  }
  if (e.has_extract && (data_changed || !fs::exists(e.extract_path))) {
    spdlog::info("extracting activations: {} layer {} on {} -> {}", e.extract.model, e.extract.layer, e.extract.text,
                 e.extract_path);
    extract_activations(e.extract, e.extract_path);
  }
  return data_changed;
}

int run_experiment(const Experiment& e, const ExperimentOptions& opt) {
  g_interrupted = false;
  const std::vector<const ExperimentRun*> selected = select_runs(e, opt.only);
  if (opt.worker) return run_sequential(e, selected, opt.rerun, false);
  std::unique_ptr<comm::Communicator> comm = comm::make_communicator("auto");
  if (comm->size() > 1) {  // under mpirun: every run over all ranks (its parallel: layout), one run after another
    if (comm->rank() > 0) spdlog::set_level(spdlog::level::warn);
    if (opt.jobs > 1 && comm->rank() == 0)
      spdlog::warn("--jobs {} ignored: under mpirun the {} ranks train each run together", opt.jobs, comm->size());
    int32_t data_changed = 0;
    if (comm->rank() == 0) data_changed = prepare_experiment_data(e) ? 1 : 0;
    const double timeout = comm->timeout();
    comm->set_timeout(7 * 24 * 3600.0);  // the others wait for rank 0's data preparation, however long it takes
    comm->broadcast(&data_changed, 1, 0);
    comm->set_timeout(timeout);
    return run_sequential(e, selected, opt.rerun || data_changed != 0, true, comm.get());
  }
  const bool data_changed = prepare_experiment_data(e);
  const bool force = opt.rerun || data_changed;
  if (opt.jobs > 1) return run_parallel(e, selected, opt, force);
  return run_sequential(e, selected, force, true);
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
  int width = 14;
  for (const ExperimentRun& r : e.runs) {
    bool ok = fs::exists(r.record);
    RunRecord rec;
    if (ok) {
      try {
        rec = RunRecord::load(r.record, false);
      } catch (const Error&) {
        ok = false;
      }
    }
    has_record.push_back(ok);
    records.push_back(std::move(rec));
    width = std::max(width, int(r.name.size()));
  }
  std::vector<Col> cols;
  for (const Col& c : all_cols)
    for (size_t i = 0; i < records.size(); ++i)
      if (has_record[i] && records[i].final_scalars.count(c.key)) {
        cols.push_back(c);
        break;
      }
  std::string out;
  char buf[512];
  std::snprintf(buf, sizeof buf, "%-*s %-7s %6s %4s %3s %4s", width, "run", "arch", "F", "E", "e", "k");
  out += buf;
  for (auto& c : cols) {
    std::snprintf(buf, sizeof buf, " %*s", std::atoi(c.fmt + 1), c.title);
    out += buf;
  }
  out += "\n";
  for (size_t i = 0; i < e.runs.size(); ++i) {
    const ExperimentRun& r = e.runs[i];
    const ModelConfig& m = r.config.model;
    std::snprintf(buf, sizeof buf, "%-*s %-7s %6d %4d %3d %4d", width, r.name.c_str(), to_string(m.arch), m.dict_size,
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
