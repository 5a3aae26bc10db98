#include "run/submit.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "run/process.h"

namespace moesae {
namespace fs = std::filesystem;

namespace {

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(what, " '", path, "' cannot be read");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Written to <path>.tmp.<pid>, then renamed: never a half-written file at `path`.
void write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      fail("cannot write '", path, "'");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    fail("cannot write '", path, "': ", ec.message());
  }
}

std::string absolute(const std::string& p) { return fs::absolute(p).lexically_normal().string(); }

// Runs argv, capturing standard output; returns the exit status (-1: could not run it).
int run_capture(const std::vector<std::string>& argv, std::string& out) {
  int fds[2];
  if (::pipe(fds) != 0) fail("pipe: ", std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) fail("fork: ", std::strerror(errno));
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "error: cannot run %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(fds[1]);
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

std::string fill_template(const std::string& text, const std::map<std::string, std::string>& values,
                          const std::string& what) {
  for (const auto& [name, value] : values)
    if (value.empty() || value.find_first_of(" \t\n'\"") != std::string::npos)
      fail(what, ": the value of @", name, "@ ('", value,
           "') must be non-empty, without spaces, quotes or newlines (the template quotes it with '...')");
  std::string out;
  size_t at = 0;
  while (at < text.size()) {
    const size_t a = text.find('@', at);
    if (a == std::string::npos) break;
    size_t b = a + 1;
    while (b < text.size() && (std::isupper(static_cast<unsigned char>(text[b])) || text[b] == '_')) ++b;
    if (b < text.size() && text[b] == '@' && b > a + 1) {
      const std::string name = text.substr(a + 1, b - a - 1);
      const auto it = values.find(name);
      if (it == values.end()) {
        const size_t line = static_cast<size_t>(std::count(text.begin(), text.begin() + static_cast<long>(a), '\n'));
        fail(what, ":", line + 1, ": placeholder @", name, "@ has no value");
      }
      out.append(text, at, a - at);
      out += it->second;
      at = b + 1;
    } else {
      out.append(text, at, a + 1 - at);
      at = a + 1;
    }
  }
  out.append(text, at, std::string::npos);
  return out;
}

SubmitResult submit_experiment(const Experiment& e, const SubmitOptions& o) {
  if (o.max_running < 1) fail("submit: --max-running must be >= 1");
  if (o.cpus < 1) fail("submit: --cpus must be >= 1");
  if (!e.overrides.empty())
    fail("submit: --set overrides cannot reach the array tasks (they run the grid file as it is); put the change "
         "in the file");
  const std::string tmpl_path =
      o.template_path.empty() ? std::string(MOESAE_SOURCE_DIR) + "/slurm/moesae-array.sbatch" : o.template_path;
  const std::string tmpl = read_file(tmpl_path, "job-array template");
  const std::vector<const ExperimentRun*> selected = select_runs(e, o.only);

  // The data first, here, so that the array tasks find it ready.
  if (prepare_experiment_data(e))
    fail("submit: the data of '", e.source, "' was regenerated with new settings; records trained on the old data "
         "would be skipped by the array tasks: run `moesae run ", e.source, " --rerun` or move the old records away");

  SubmitResult r;
  for (const ExperimentRun* run : selected) {
    const RunStatus st = run_status(*run);
    if (st.state == RunStatus::State::Done) continue;
    if (st.state == RunStatus::State::Running)
      spdlog::warn("submit: {} is being trained by another process now; its task will skip it if still busy",
                   run->name);
    r.runs.push_back(run->name);
  }
  const std::string dir = e.out + "/slurm";
  fs::create_directories(dir);
  const std::string log_dir = absolute(o.log_dir.empty() ? dir + "/logs" : o.log_dir);
  fs::create_directories(log_dir);  // sbatch does not create it
  r.runs_file = absolute(dir + "/" + e.name + "-runs.txt");
  r.script = absolute(dir + "/" + e.name + ".sbatch");
  if (r.runs.empty()) {
    spdlog::info("submit: every selected run of {} is finished: nothing to submit", e.source);
    return r;
  }
  std::string list;
  for (const std::string& id : r.runs) list += id + "\n";
  write_file_atomic(r.runs_file, list);
  const std::map<std::string, std::string> values{
      {"JOB_NAME", o.job_name.empty() ? "moesae-" + e.name : o.job_name},
      {"ARRAY", "0-" + std::to_string(r.runs.size() - 1) + "%" + std::to_string(o.max_running)},
      {"LOG_DIR", log_dir},
      {"CPUS", std::to_string(o.cpus)},
      {"TIME", o.time},
      {"WORKDIR", absolute(fs::current_path().string())},
      {"MOESAE", absolute(o.moesae.empty() ? own_executable() : o.moesae)},
      {"GRID", absolute(e.source)},
      {"RUNS_FILE", r.runs_file},
      {"OUT_DIR", absolute(e.out)},
  };
  write_file_atomic(r.script, fill_template(tmpl, values, tmpl_path));
  spdlog::info("submit: {} run(s) of {} -> {} (array 0-{}%{}, runs in {}, logs in {})", r.runs.size(), e.source,
               r.script, r.runs.size() - 1, o.max_running, r.runs_file, log_dir);
  if (o.dry_run) return r;

  std::vector<std::string> argv{"sbatch", "--parsable"};
  if (o.wait) argv.push_back("--wait");
  argv.insert(argv.end(), o.sbatch_args.begin(), o.sbatch_args.end());
  argv.push_back(r.script);
  std::string out;
  r.sbatch_status = run_capture(argv, out);
  const std::string first = out.substr(0, out.find('\n'));
  r.job_id = first.substr(0, first.find(';'));  // --parsable: "jobid[;cluster]"
  if (r.job_id.empty())
    fail("submit: sbatch did not submit ", r.script, " (exit status ", r.sbatch_status,
         r.sbatch_status == 127 ? ": sbatch not found; is SLURM installed here?" : "; see its message above", ")");
  return r;
}

}  // namespace moesae
