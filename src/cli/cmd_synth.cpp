// `moesae synth --out DATA.h5 --d D --features F --tokens N --seed S [...]`
#include "core/log.h"
#include "cli/commands.h"
#include "data/synthetic.h"

namespace moesae::cli {

Command add_synth(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("synth", "Write synthetic activations with a known ground-truth dictionary");
  auto c = std::make_shared<SynthConfig>();
  auto out = std::make_shared<std::string>();
  sub->add_option("--out,-o", *out, "activation file to write (HDF5)")->required();
  sub->add_option("--d", c->d, "activation dimension")->capture_default_str();
  sub->add_option("--features", c->features, "ground-truth features")->capture_default_str();
  sub->add_option("--tokens", c->tokens, "tokens (rows)")->capture_default_str();
  sub->add_option("--seed", c->seed, "random seed")->capture_default_str();
  sub->add_option("--groups", c->groups, "feature clusters (what experts can specialise on)")->capture_default_str();
  sub->add_option("--tightness", c->cluster_tightness, "cluster tightness in [0, 1)")->capture_default_str();
  sub->add_option("--alpha", c->alpha, "power-law exponent of feature frequencies")->capture_default_str();
  sub->add_option("--active", c->active, "mean active features per token")->capture_default_str();
  sub->add_option("--in-group", c->in_group, "fraction of active features from the token's groups")->capture_default_str();
  sub->add_option("--noise", c->noise, "Gaussian noise std per coordinate")->capture_default_str();
  sub->add_flag("--f16", c->f16, "store activations as float16");
  return {sub, [c, out]() {
            Timer t;
            write_synthetic(*c, *out);
            spdlog::info("wrote {} ({} tokens x d={}, {} features in {} groups) in {:.1f}s", *out, c->tokens, c->d,
                         c->features, c->groups, t.seconds());
            return 0;
          }};
}

}  // namespace moesae::cli
