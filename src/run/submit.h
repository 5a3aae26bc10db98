// moesae run: SLURM job-array submission of an experiment (grid) file.
//   `moesae submit GRID.yaml`: prepares the data (synthetic / extracted) once, lists the runs that are not finished
//   into a runs file (one id per line: array task i trains line i+1), fills the job-array template
//   (slurm/moesae-array.sbatch: each task runs `moesae run GRID --only ID`, checkpoints on SLURM's signals and is
//   requeued) and submits it with sbatch. Resubmitting later submits only what is still unfinished.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "run/experiment.h"

namespace moesae {

struct SubmitOptions {
  std::vector<std::string> only;       // run ids (empty: every unfinished run)
  int max_running = 4;                 // %M: array tasks running at once
  int cpus = 4;                        // CPUs per task
  std::string time = "1-00:00:00";     // time limit per task (SLURM syntax)
  std::string job_name;                // default: moesae-<experiment name>
  std::string log_dir;                 // default: <out>/slurm/logs
  std::string template_path;           // default: <source dir>/slurm/moesae-array.sbatch
  std::string moesae;                  // the moesae binary (default: this process's executable)
  std::vector<std::string> sbatch_args;  // extra sbatch arguments (e.g. --partition=gpu)
  bool dry_run = false;                // write the files, do not call sbatch
  bool wait = false;                   // sbatch --wait: return when every task has ended
};

struct SubmitResult {
  std::vector<std::string> runs;  // the ids submitted (array task i = runs[i])
  std::string script;             // the filled sbatch file
  std::string runs_file;
  std::string job_id;             // empty for a dry run or when nothing was left to submit
  int sbatch_status = 0;          // sbatch's exit status (with --wait: non-zero when a task failed)
};

// Replaces every @NAME@ placeholder of `text` with values[NAME]; fails naming a placeholder left without a value
// (or a value that is empty, has spaces, quotes or newlines: the template quotes its values with '...').
std::string fill_template(const std::string& text, const std::map<std::string, std::string>& values,
                          const std::string& what);

// The whole submission (see the top of this file). Writes <out>/slurm/<name>.sbatch and <name>-runs.txt.
SubmitResult submit_experiment(const Experiment& e, const SubmitOptions& options);

}  // namespace moesae
