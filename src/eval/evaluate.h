// moesae eval: the core metric set of a trained SAE on held-out activations (and, for synthetic data, against the
// ground-truth dictionary). Names of the returned scalars are the `/final` attribute names of a run record.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "data/activation_stream.h"
#include "eval/config.h"
#include "lm/tokenizer.h"
#include "sae/sae.h"

namespace moesae {

struct EvalResult {
  std::map<std::string, double> scalars;             // mse, mse_sum, fvu, explained_variance, l0, ...
  std::map<std::string, std::vector<double>> vectors;  // expert_fraction [E], omega [E], overlap_histogram, ...
};

// What the token-level metrics need beyond the activations: the activation file the reader reads (for its token_ids
// and positions) and the tokenizer of the language model it came from (load_eval_tokenizer in eval/specialization.h).
// With both, and token_ids in the file, evaluate_sae adds the past-tense-verb metrics; otherwise they are skipped.
struct EvalTokens {
  const ActivationFile* file = nullptr;
  const lm::Tokenizer* tokenizer = nullptr;
};

// Held-out reconstruction and sparsity: mse (Eq. A.1), mse_sum (summed over d), fvu, explained_variance, l0,
// dead_fraction (latents that never fired on the evaluated tokens), eval_tokens; and, for MoE models,
// expert_fraction, expert_entropy, expert_entropy_normalized, idle_experts.
EvalResult evaluate_reconstruction(Sae& sae, EvalReader& reader, int64_t batch_size, int64_t max_tokens);

// Everything (definitions in docs/metrics.md): evaluate_reconstruction plus
//  - decoder redundancy: redundancy, mean_max_cosine; for MoE models intra_expert_redundancy (a near-duplicate in
//    the latent's own expert) and inter_expert_redundancy (in a seeded random group of the same size; §3.3.1);
//  - neuron activation similarity (Appendix A.4, Eq. A.3) over every evaluated token: activation_similarity; the
//    distribution of pairwise overlaps k_ij (Appendix D) over the first eval.overlap_tokens tokens: the vector
//    overlap_histogram (fraction of token pairs with k_ij = 0, 1, ...), overlap_tokens, overlap_mean;
//  - omega: omega_mean, omega_min, omega_max and the omega vector; train_dead_fraction (dead-latent counters);
//  - with a ground-truth dictionary (host [G, d]): gt_mmcs and gt_recovered;
//  - with `tokens` (file with token_ids + tokenizer): the past-tense verbs of the evaluated rows
//    (eval/specialization.h): specialization_tokens, specialization_words, activation_similarity_verbs and the vector
//    overlap_histogram_verbs; for MoE models the expert activation CDF (Fig. 6b): vectors specialization_cdf and
//    specialization_fraction, scalar specialization_top10.
EvalResult evaluate_sae(Sae& sae, EvalReader& reader, const EvalConfig& cfg, int64_t default_batch,
                        const Tensor* true_dictionary, const EvalTokens& tokens = {});

}  // namespace moesae
