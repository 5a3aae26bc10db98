// moesae: command-line entry point. Every failure ends with one "error: ..." line and a non-zero exit status.
#include <cstdio>
#include <vector>
#include <string>

#include "cli/commands.h"
#include "comm/communicator.h"
#include "core/error.h"
#include "core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include "core/version.h"

int main(int argc, char** argv) {
  using namespace moesae;
  CLI::App app{"moesae: Mixture-of-Experts sparse autoencoders (Scale SAE, Switch, TopK, Gated) on LM activations"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("moesae ") + kMoesaeVersion);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off")->capture_default_str();
  const std::vector<cli::Command> commands{
      cli::add_train(app), cli::add_run(app),    cli::add_plan(app),   cli::add_collect(app), cli::add_submit(app),
      cli::add_synth(app), cli::add_eval(app),   cli::add_export(app), cli::add_info(app),    cli::add_lm(app),     cli::add_maxact(app)};
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // A usage error (unknown option, missing argument, a file that does not exist): one line, like every other error.
    std::fprintf(stderr, "error: %s (see 'moesae --help')\n", e.what());
    return 2;
  }
  // Progress and log lines go to stderr, so stdout carries only results (eval --json, lm loss, tables).
  spdlog::set_default_logger(spdlog::stderr_color_mt("moesae"));
  spdlog::set_pattern("[%H:%M:%S] %^%v%$");
  try {
    set_log_level(log_level);
    for (const auto& c : commands)
      if (c.sub->parsed()) return c.run();
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    comm::abort_job_after_error(1);  // under mpirun: the other ranks must not wait for this one
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    comm::abort_job_after_error(1);
    return 1;
  }
  return 0;
}
