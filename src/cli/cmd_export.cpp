// `moesae export RUN.h5 --format saelens --out DIR`
#include "cli/commands.h"
#include "core/log.h"
#include "run/export_saelens.h"

namespace moesae::cli {

Command add_export(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("export", "Export a trained SAE for other tools (SAELens: cfg.json + safetensors)");
  struct Args {
    std::string record, format = "saelens", out;
  };
  auto a = std::make_shared<Args>();
  sub->add_option("record", a->record, "run record (RUN.h5)")->required()->check(CLI::ExistingFile);
  sub->add_option("--format", a->format, "export format")->check(CLI::IsMember({"saelens"}))->capture_default_str();
  sub->add_option("--out,-o", a->out, "output directory")->required();
  return {sub, [a]() {
            export_saelens(a->record, a->out);
            spdlog::info("exported {} to {} (cfg.json + sae_weights.safetensors)", a->record, a->out);
            return 0;
          }};
}

}  // namespace moesae::cli
