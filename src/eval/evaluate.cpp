#include "eval/evaluate.h"

#include <algorithm>

#include "eval/expert_load.h"
#include "eval/ground_truth.h"
#include "eval/reconstruction.h"
#include "eval/redundancy.h"
#include "eval/sparsity.h"

namespace moesae {

EvalResult evaluate_reconstruction(Sae& sae, EvalReader& reader, int64_t batch_size, int64_t max_tokens) {
  Backend& be = sae.backend();
  const ModelConfig& mc = sae.config();
  reader.reset();
  const int64_t available = reader.rows().size();
  const int64_t budget = max_tokens > 0 ? std::min(max_tokens, available) : available;
  if (budget <= 0) fail("no held-out tokens to evaluate on (set data.eval_fraction or data.eval_tokens)");
  Tensor host = host_tensor(std::min(batch_size, budget), mc.d);
  ReconstructionAccumulator rec(mc.d);
  // Position 0 of every context has a much larger residual norm; with positions on file, the reconstruction
  // metrics are also reported over the other positions only (*_no_pos0).
  const bool positions = reader.has_positions();
  ReconstructionAccumulator rec_no_pos0(mc.d);
  Tensor pos = positions ? host_vector(host.rows(), DType::I32) : Tensor();
  Tensor kept = positions ? host_tensor(host.rows(), mc.d) : Tensor();      // x of the rows at position > 0
  Tensor kept_hat = positions ? host_tensor(host.rows(), mc.d) : Tensor();  // and their x^
  SparsityAccumulator sparsity(mc.dict_size);
  std::vector<double> routed(mc.experts, 0.0);
  const bool moe = mc.arch == Arch::Scale || mc.arch == Arch::Switch;
  int64_t seen = 0;
  while (seen < budget) {
    const int64_t n = std::min(reader.next(host, positions ? &pos : nullptr), budget - seen);
    if (n <= 0) break;
    Tensor xh = host.row_range(0, n);
    Tensor x = be.from_host(xh);
    SaeStats s = sae.forward(x, false);
    const Tensor x_hat = be.to_host(sae.reconstruction());
    rec.add(xh, x_hat);
    if (positions) {
      int64_t m = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (pos.data<int32_t>()[i] == 0) continue;
        std::copy_n(xh.data<float>() + i * xh.ld(), mc.d, kept.data<float>() + m * mc.d);
        std::copy_n(x_hat.data<float>() + i * x_hat.ld(), mc.d, kept_hat.data<float>() + m * mc.d);
        ++m;
      }
      if (m > 0) rec_no_pos0.add(kept.row_range(0, m), kept_hat.row_range(0, m));
    }
    sparsity.add(be.to_host(sae.code().ids), be.to_host(sae.code().vals));
    for (size_t i = 0; i < s.expert_fraction.size(); ++i) routed[i] += s.expert_fraction[i] * double(n);
    seen += n;
  }
  EvalResult r;
  r.scalars["eval_tokens"] = double(seen);
  r.scalars["mse"] = rec.mse();
  r.scalars["mse_sum"] = rec.mse_sum_d();
  r.scalars["fvu"] = rec.fvu();
  r.scalars["explained_variance"] = rec.explained_variance();
  if (positions && rec_no_pos0.tokens() > 0) {
    r.scalars["eval_tokens_no_pos0"] = double(rec_no_pos0.tokens());
    r.scalars["mse_no_pos0"] = rec_no_pos0.mse();
    r.scalars["mse_sum_no_pos0"] = rec_no_pos0.mse_sum_d();
    r.scalars["fvu_no_pos0"] = rec_no_pos0.fvu();
  }
  r.scalars["l0"] = sparsity.l0();
  r.scalars["dead_fraction"] = sparsity.dead_fraction();
  if (moe) {
    for (auto& v : routed) v /= double(seen);
    ExpertLoad load = expert_load_from_fractions(routed);
    r.vectors["expert_fraction"] = load.fractions;
    r.scalars["expert_entropy"] = load.entropy;
    r.scalars["expert_entropy_normalized"] = load.normalized_entropy;
    r.scalars["idle_experts"] = double(load.idle_experts);
  }
  return r;
}

EvalResult evaluate_sae(Sae& sae, EvalReader& reader, const EvalConfig& cfg, int64_t default_batch,
                        const Tensor* true_dictionary) {
  EvalResult r = evaluate_reconstruction(sae, reader, cfg.batch_size > 0 ? cfg.batch_size : default_batch,
                                         cfg.max_tokens);
  Tensor w_dec = sae.backend().to_host(sae.decoder());
  Redundancy red = decoder_redundancy(w_dec, cfg.redundancy_threshold);
  r.scalars["redundancy"] = red.redundant_fraction;
  r.scalars["mean_max_cosine"] = red.mean_max_cosine;
  r.scalars["redundancy_threshold"] = cfg.redundancy_threshold;
  const ModelConfig& mc = sae.config();
  if (mc.experts > 1 && mc.latents_per_expert() > 1)  // the same fraction within each expert (§3.3.1)
    r.scalars["intra_expert_redundancy"] =
        summarize_redundancy(max_cosine_within_groups(w_dec, mc.latents_per_expert()), cfg.redundancy_threshold)
            .redundant_fraction;
  r.scalars["train_dead_fraction"] = sae.dead_fraction();
  std::vector<float> omega = sae.omega();
  if (!omega.empty()) {
    double m = 0;
    for (float w : omega) m += w;
    r.scalars["omega_mean"] = m / double(omega.size());
    r.vectors["omega"] = std::vector<double>(omega.begin(), omega.end());
  }
  if (true_dictionary) {
    GroundTruthRecovery gt = ground_truth_recovery(w_dec, *true_dictionary, cfg.recovered_threshold);
    r.scalars["gt_mmcs"] = gt.mmcs;
    r.scalars["gt_recovered"] = gt.recovered_fraction;
  }
  return r;
}

}  // namespace moesae
