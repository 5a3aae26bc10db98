// moesae CLI: each subcommand registers itself on the CLI11 app and returns the callback that runs it.
#pragma once
#include <functional>
#include <string>

#include <CLI/CLI.hpp>

namespace moesae::cli {

struct Command {
  CLI::App* sub;            // the registered subcommand
  std::function<int()> run;  // runs it after parsing; returns the exit status
};

// The options of commands that evaluate a finished run: the record, --data (default: the run's data.path) and
// --split eval|all.
void add_record_data_options(CLI::App* sub, std::string& record, std::string& data, std::string& split);

Command add_info(CLI::App& app);
Command add_train(CLI::App& app);
Command add_synth(CLI::App& app);
Command add_eval(CLI::App& app);
Command add_export(CLI::App& app);
Command add_run(CLI::App& app);
Command add_plan(CLI::App& app);
Command add_collect(CLI::App& app);
Command add_submit(CLI::App& app);
Command add_lm(CLI::App& app);
Command add_maxact(CLI::App& app);

}  // namespace moesae::cli
