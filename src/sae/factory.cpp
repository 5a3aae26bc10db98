#include "sae/gated_sae.h"
#include "sae/moe_sae.h"
#include "sae/topk_sae.h"

namespace moesae {

std::unique_ptr<Sae> make_sae(const ModelConfig& config, Backend& backend, ExpertExchange* experts) {
  if (experts && config.arch != Arch::Switch && config.arch != Arch::Scale)
    fail("expert parallelism needs a mixture-of-experts model (switch or scale), not ", to_string(config.arch));
  switch (config.arch) {
    case Arch::TopK: return std::make_unique<TopKSae>(config, backend);
    case Arch::Gated: return std::make_unique<GatedSae>(config, backend);
    case Arch::Switch:
    case Arch::Scale: return std::make_unique<MoeSae>(config, backend, experts);
  }
  fail("unknown model architecture");
}

}  // namespace moesae
