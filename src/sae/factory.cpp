#include "sae/gated_sae.h"
#include "sae/moe_sae.h"
#include "sae/topk_sae.h"

namespace moesae {

std::unique_ptr<Sae> make_sae(const ModelConfig& config, Backend& backend, ExpertExchange* experts) {
  if (experts && config.arch == Arch::Gated)
    fail("expert parallelism needs a mixture-of-experts model (switch or scale) or a topk SAE, not gated");
  switch (config.arch) {
    case Arch::TopK: return std::make_unique<TopKSae>(config, backend, experts);
    case Arch::Gated: return std::make_unique<GatedSae>(config, backend);
    case Arch::Switch:
    case Arch::Scale: return std::make_unique<MoeSae>(config, backend, experts);
  }
  fail("unknown model architecture");
}

}  // namespace moesae
