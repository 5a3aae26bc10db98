#include "eval/evaluate.h"

#include <algorithm>

#include "core/log.h"
#include "eval/activation_similarity.h"
#include "eval/expert_load.h"
#include "eval/ground_truth.h"
#include "eval/reconstruction.h"
#include "eval/redundancy.h"
#include "eval/similarity.h"
#include "eval/sparsity.h"
#include "eval/specialization.h"

namespace moesae {
namespace {

// Where the evaluation pass hands the sparse codes for the token-level metrics: the per-latent firing counts of every
// evaluated token (Eq. A.3), the active sets of the first `head_tokens` tokens (the Appendix D histogram) and those of
// the tokens at `selected` (sorted indices into the evaluated rows: the past-tense verbs).
struct CodeTaps {
  int64_t head_tokens = 0;
  ActiveSets* head = nullptr;
  const std::vector<int64_t>* selected = nullptr;
  ActiveSets* selected_sets = nullptr;
  std::vector<int64_t> fire_counts;  // out: c_f over every evaluated token
};

EvalResult evaluate_pass(Sae& sae, EvalReader& reader, int64_t batch_size, int64_t max_tokens, CodeTaps* taps) {
  Backend& be = sae.backend();
  const ModelConfig& mc = sae.config();
  reader.reset();
  const int64_t available = reader.rows().size();
  const int64_t budget = max_tokens > 0 ? std::min(max_tokens, available) : available;
  if (budget <= 0) fail("no held-out tokens to evaluate on (set data.eval_fraction or data.eval_tokens)");
  Tensor host = be.host_buffer(std::min(batch_size, budget), mc.d);
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
    const Tensor ids = be.to_host(sae.code().ids), vals = be.to_host(sae.code().vals);
    sparsity.add(ids, vals);
    if (taps) {
      if (taps->head && seen < taps->head_tokens) taps->head->add(ids, vals, taps->head_tokens - seen);
      if (taps->selected)  // the selected rows in [seen, seen + n)
        for (auto it = std::lower_bound(taps->selected->begin(), taps->selected->end(), seen);
             it != taps->selected->end() && *it < seen + n; ++it)
          taps->selected_sets->add_row(ids.data<int32_t>() + (*it - seen) * ids.ld(),
                                       vals.data<float>() + (*it - seen) * vals.ld(), ids.cols());
    }
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
  if (taps) taps->fire_counts = sparsity.fire_counts();
  return r;
}

// K_total of Eq. A.3: k for the Top-K models (TopK, Switch, Scale), whose codes have k active latents per token at
// most; the mean number of active latents per evaluated token (l0) for the Gated SAE, whose L0 varies.
double k_total_for(const ModelConfig& mc, double l0) { return mc.arch == Arch::Gated ? l0 : double(mc.k); }

// The overlap fractions with k + 1 bins (k_ij = 0 .. k) for the Top-K models, so runs with the same k have histograms
// of one length; the Gated SAE's end at its largest active set.
std::vector<double> histogram_bins(const OverlapDistribution& od, const ModelConfig& mc) {
  std::vector<double> f = od.fractions();
  if (mc.arch != Arch::Gated && f.size() < size_t(mc.k) + 1) f.resize(size_t(mc.k) + 1, 0.0);
  return f;
}

}  // namespace

EvalResult evaluate_reconstruction(Sae& sae, EvalReader& reader, int64_t batch_size, int64_t max_tokens) {
  return evaluate_pass(sae, reader, batch_size, max_tokens, nullptr);
}

EvalResult evaluate_sae(Sae& sae, EvalReader& reader, const EvalConfig& cfg, int64_t default_batch,
                        const Tensor* true_dictionary, const EvalTokens& tokens) {
  const ModelConfig& mc = sae.config();
  const int64_t budget = cfg.max_tokens > 0 ? std::min(cfg.max_tokens, reader.rows().size()) : reader.rows().size();
  // Past-tense verbs among the evaluated rows (needs their token ids and a tokenizer), found before the pass so that
  // their codes are kept as they go by.
  std::vector<int64_t> verb_rows;
  PastTenseTokens verbs;
  const bool with_verbs = tokens.file && tokens.tokenizer && tokens.file->has_token_ids() && budget > 0;
  if (with_verbs) {
    if (reader.rows().end > tokens.file->tokens())
      fail("evaluation: the held-out rows [", reader.rows().begin, ", ", reader.rows().end, ") are not rows of '",
           tokens.file->path(), "' (", tokens.file->tokens(), " rows)");
    Tensor ids = host_vector(budget, DType::I32);
    tokens.file->read_token_ids(reader.rows().begin, ids);
    std::vector<int32_t> positions;
    if (tokens.file->has_positions()) {
      Tensor pos = host_vector(budget, DType::I32);
      tokens.file->read_positions(reader.rows().begin, pos);
      positions.assign(pos.data<int32_t>(), pos.data<int32_t>() + budget);
    }
    verbs = find_past_tense_tokens(std::vector<int32_t>(ids.data<int32_t>(), ids.data<int32_t>() + budget), positions,
                                   *tokens.tokenizer);
    verb_rows = verbs.rows;
  }
  ActiveSets head(mc.dict_size), verb_sets(mc.dict_size);
  CodeTaps taps;
  taps.head_tokens = cfg.overlap_tokens > 0 ? cfg.overlap_tokens : budget;
  taps.head = &head;
  if (with_verbs) {
    taps.selected = &verb_rows;
    taps.selected_sets = &verb_sets;
  }
  EvalResult r = evaluate_pass(sae, reader, cfg.batch_size > 0 ? cfg.batch_size : default_batch, cfg.max_tokens, &taps);

  // Neuron activation similarity (Appendix A.4, Eq. A.3), exact over every evaluated token by counting, and the
  // distribution of the pairwise overlaps k_ij (Appendix D), exact over all pairs of the first overlap_tokens tokens.
  Timer timer;
  const int64_t evaluated = static_cast<int64_t>(r.scalars["eval_tokens"]);
  const double k_total = k_total_for(mc, r.scalars["l0"]);
  if (evaluated >= 2 && k_total > 0) {
    r.scalars["activation_similarity"] = activation_similarity_from_counts(taps.fire_counts, evaluated, k_total);
    if (head.tokens() >= 2) {
      const OverlapDistribution od = overlap_distribution(head, k_total);
      r.vectors["overlap_histogram"] = histogram_bins(od, mc);
      r.scalars["overlap_tokens"] = double(head.tokens());
      r.scalars["overlap_mean"] = od.mean_overlap;
    }
  }
  if (with_verbs) {
    r.scalars["specialization_tokens"] = double(verb_sets.tokens());
    r.scalars["specialization_words"] = double(verbs.distinct_words);
    if (verb_sets.tokens() >= 2 && k_total > 0) {
      const OverlapDistribution od = overlap_distribution(verb_sets, k_total);
      r.scalars["activation_similarity_verbs"] = od.similarity;
      r.vectors["overlap_histogram_verbs"] = histogram_bins(od, mc);
    }
    // Expert activation CDF over the verbs (Fig. 6b), for MoE models.
    if (mc.experts > 1 && verb_sets.tokens() > 0 && verb_sets.mean_size() > 0) {
      const ExpertSpecialization sp = expert_specialization(verb_sets, mc.experts, mc.latents_per_expert());
      r.vectors["specialization_cdf"] = sp.cdf;
      r.vectors["specialization_fraction"] = sp.fraction;
      r.scalars["specialization_top10"] = sp.top10;
    }
  } else if (tokens.file && tokens.tokenizer && !tokens.file->has_token_ids()) {
    spdlog::debug("'{}' has no token_ids: no past-tense-verb metrics", tokens.file->path());
  }
  spdlog::debug("activation similarity and overlaps: {:.3f} s", timer.seconds());

  Tensor w_dec = sae.backend().to_host(sae.decoder());
  Redundancy red = decoder_redundancy(w_dec, cfg.redundancy_threshold);
  r.scalars["redundancy"] = red.redundant_fraction;
  r.scalars["mean_max_cosine"] = red.mean_max_cosine;
  r.scalars["redundancy_threshold"] = cfg.redundancy_threshold;
  if (mc.experts > 1 && mc.latents_per_expert() > 1) {  // the same fraction within each expert and within random
    // groups of the same size (§3.3.1, Fig. 6a)
    const ExpertSimilarity es =
        expert_similarity(w_dec, mc.latents_per_expert(), cfg.redundancy_threshold, uint64_t(cfg.inter_expert_seed));
    r.scalars["intra_expert_redundancy"] = es.intra;
    r.scalars["inter_expert_redundancy"] = es.inter;
  }
  r.scalars["train_dead_fraction"] = sae.dead_fraction();
  std::vector<float> omega = sae.omega();
  if (!omega.empty()) {
    double m = 0;
    for (float w : omega) m += w;
    r.scalars["omega_mean"] = m / double(omega.size());
    r.scalars["omega_min"] = *std::min_element(omega.begin(), omega.end());
    r.scalars["omega_max"] = *std::max_element(omega.begin(), omega.end());
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
