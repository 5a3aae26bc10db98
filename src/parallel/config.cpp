#include "parallel/config.h"

#include "core/error.h"

namespace moesae {

ParallelConfig resolve_layout(const ParallelConfig& asked, int ranks, const ModelConfig& model) {
  const bool moe = model.arch == Arch::Switch || model.arch == Arch::Scale;
  const int experts = moe ? model.experts : model.dict_size;  // what is sharded: experts, or a TopK's latents
  ParallelConfig l = asked;
  if (l.expert_parallel < 0 || l.data_parallel < 0)
    fail("parallel.expert_parallel and parallel.data_parallel must be >= 0 (0: automatic)");
  const auto divides = [&](int part, const char* key) {
    if (ranks % part != 0)
      fail("parallel.", key, " is ", part, " but the job has ", ranks, " ranks (it must divide them)");
    return ranks / part;
  };
  if (l.expert_parallel == 0 && l.data_parallel == 0) {
    l.expert_parallel = moe ? ranks : 1;
    l.data_parallel = moe ? 1 : ranks;
    if (moe && ranks > experts)
      fail("expert parallelism over ", ranks, " ranks needs at least ", ranks, " experts (model.experts is ", experts,
           "): set parallel.data_parallel (e.g. parallel.data_parallel=", ranks, ")");
  } else if (l.data_parallel == 0) {
    l.data_parallel = divides(l.expert_parallel, "expert_parallel");
  } else if (l.expert_parallel == 0) {
    l.expert_parallel = divides(l.data_parallel, "data_parallel");
  } else if (l.expert_parallel * l.data_parallel != ranks) {
    fail("parallel.expert_parallel ", l.expert_parallel, " x parallel.data_parallel ", l.data_parallel, " is not the ",
         ranks, " ranks of the job");
  }
  if (l.expert_parallel > 1 && model.arch == Arch::Gated)
    fail("parallel.expert_parallel is ", l.expert_parallel, " but a gated SAE cannot be sharded (expert parallelism "
         "is for switch and scale SAEs, and the dictionary of a topk SAE)");
  if (l.expert_parallel > 1 && !moe && model.decoder_norm == DecoderNorm::Column)
    fail("parallel.expert_parallel is ", l.expert_parallel, " but a topk SAE with decoder_norm: column cannot shard "
         "its dictionary (the column norms span every latent); use decoder_norm: row or data parallelism");
  if (l.expert_parallel > experts)
    fail("parallel.expert_parallel is ", l.expert_parallel, " but the model has only ", experts,
         moe ? " experts" : " latents");
  return l;
}

std::string describe_layout(const ParallelConfig& l, bool dictionary) {
  if (l.expert_parallel <= 1) return "data-parallel over " + std::to_string(l.data_parallel) + " ranks";
  std::string s = std::string(dictionary ? "dictionary" : "experts") + " sharded over " +
                  std::to_string(l.expert_parallel) + " ranks";
  if (l.data_parallel > 1) s += ", " + std::to_string(l.data_parallel) + " data-parallel replicas";
  return s;
}

}  // namespace moesae
