// moesae eval: the core metric set of a trained SAE on held-out activations (and, for synthetic data, against the
// ground-truth dictionary). Names of the returned scalars are the `/final` attribute names of a run record.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "data/activation_stream.h"
#include "eval/config.h"
#include "sae/sae.h"

namespace moesae {

struct EvalResult {
  std::map<std::string, double> scalars;             // mse, mse_sum, fvu, explained_variance, l0, ...
  std::map<std::string, std::vector<double>> vectors;  // expert_fraction [E], omega [E]
};

// Held-out reconstruction and sparsity: mse (Eq. A.1), mse_sum (summed over d), fvu, explained_variance, l0,
// dead_fraction (latents that never fired on the evaluated tokens), eval_tokens; and, for MoE models,
// expert_fraction, expert_entropy, expert_entropy_normalized, idle_experts.
EvalResult evaluate_reconstruction(Sae& sae, EvalReader& reader, int64_t batch_size, int64_t max_tokens);

// Everything: evaluate_reconstruction plus decoder redundancy (redundancy, mean_max_cosine; for MoE models also
// intra_expert_redundancy, the fraction of latents with a near-duplicate in their own expert), omega (omega_mean,
// omega vector), train_dead_fraction (dead-latent counters), and with a ground-truth dictionary (host [G, d])
// gt_mmcs and gt_recovered.
EvalResult evaluate_sae(Sae& sae, EvalReader& reader, const EvalConfig& cfg, int64_t default_batch,
                        const Tensor* true_dictionary);

}  // namespace moesae
