// `moesae submit GRID.yaml [--only ID ...] [--max-running M] [--cpus N] [--time T] [--sbatch-arg A ...]
//                          [--dry-run] [--wait]`
#include <cstdio>

#include "cli/commands.h"
#include "run/submit.h"

namespace moesae::cli {

Command add_submit(CLI::App& app) {
  CLI::App* sub = app.add_subcommand(
      "submit", "Submit the unfinished runs of an experiment (grid) file as a SLURM job array (one task per run)");
  struct Args {
    std::string file;
    SubmitOptions o;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("experiment", a->file, "experiment / grid file (YAML)")->required()->check(CLI::ExistingFile);
  sub->add_option("--only", a->o.only, "submit only these runs (ids; repeatable)");
  sub->add_option("--max-running", a->o.max_running, "array tasks running at once (%M)")->capture_default_str();
  sub->add_option("--cpus", a->o.cpus, "CPUs per task")->capture_default_str();
  sub->add_option("--time", a->o.time, "time limit per task (SLURM syntax)")->capture_default_str();
  sub->add_option("--job-name", a->o.job_name, "job name (default: moesae-<experiment name>)");
  sub->add_option("--log-dir", a->o.log_dir, "per-task logs (default: <out>/slurm/logs)");
  sub->add_option("--template", a->o.template_path, "job-array template (default: slurm/moesae-array.sbatch)");
  sub->add_option("--moesae", a->o.moesae, "the moesae binary the tasks run (default: this one)");
  sub->add_option("--sbatch-arg", a->o.sbatch_args, "extra sbatch argument, e.g. --sbatch-arg=--partition=gpu")
      ->allow_extra_args(false);
  sub->add_flag("--dry-run", a->o.dry_run, "write the sbatch and runs files, do not submit");
  sub->add_flag("--wait", a->o.wait, "wait until every task has ended (sbatch --wait)");
  return {sub, [a]() {
            const Experiment e = load_experiment(a->file);
            const SubmitResult r = submit_experiment(e, a->o);
            if (r.runs.empty()) {
              std::printf("nothing to submit: every selected run of %s is finished\n", a->file.c_str());
              return 0;
            }
            if (a->o.dry_run) {
              std::printf("%s (%zu runs; not submitted)\n", r.script.c_str(), r.runs.size());
              return 0;
            }
            std::printf("submitted job %s: %zu runs of %s (%s)\n", r.job_id.c_str(), r.runs.size(), a->file.c_str(),
                        r.script.c_str());
            if (a->o.wait && r.sbatch_status != 0) {
              std::fflush(stdout);
              std::fprintf(stderr, "error: job %s ended with failed tasks (sbatch exit status %d); see %s\n",
                           r.job_id.c_str(), r.sbatch_status, r.runs_file.c_str());
              return 1;
            }
            return 0;
          }};
}

}  // namespace moesae::cli
