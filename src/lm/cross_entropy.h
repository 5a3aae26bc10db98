// moesae lm: mean next-token cross-entropy of a language model over documents, for one or several forward variants
// (clean, SAE spliced in, zero-ablated) on exactly the same contexts and predicted tokens.
#pragma once
#include <string>
#include <vector>

#include "lm/language_model.h"
#include "lm/tokenizer.h"

namespace moesae::lm {

struct LossResult {
  double mean_ce = 0;       // mean next-token cross-entropy (nats) over the predicted positions
  long long predicted = 0;  // number of predicted positions
  long long contexts = 0;
  long long documents = 0;
};

// Each document is encoded with BOS and cut into consecutive contexts of `ctx` tokens (lm::for_each_context);
// context i covers tokens [i*ctx, (i+1)*ctx) and predicts each following token of the same document (the last
// position predicts the first token of the next context). Stops after max_predicted predictions when > 0.
// One result per variant, in order; each context is tokenized once and run once per variant.
std::vector<LossResult> cross_entropies(const LanguageModel& model, const Tokenizer& tok,
                                        const std::vector<std::string>& documents, int ctx, long long max_predicted,
                                        const std::vector<ForwardOptions>& variants);

// cross_entropies with one variant.
LossResult cross_entropy(const LanguageModel& model, const Tokenizer& tok, const std::vector<std::string>& documents,
                         int ctx, long long max_predicted = 0, const ForwardOptions& opt = {});

}  // namespace moesae::lm
