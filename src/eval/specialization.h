// moesae eval: expert specialization on past-tense verbs (paper §3.3.1, Fig. 6b; reference-implementations.md §3.8.6).
//
// Token set. The paper uses "a specialized dataset of 1,500 past-tense verbs" (the reference code: a hand list put in
// a template sentence). Here the set comes from the evaluation rows themselves, which must carry `token_ids` (an
// activation file extracted from a language model), so every verb is seen in real context:
//   1. Each row's token is decoded with the model's tokenizer (decode_piece(-1, id): the raw piece, leading space
//      kept; the BOS / end-of-text token is a line break). The concatenated pieces are cut into words: maximal runs of
//      ASCII letters, lower-cased. A word is kept only when it is complete and seen whole by the model: the character
//      before it and the one after it are known non-letters inside the rows, no byte >= 0x80 touches it, and all its
//      rows lie in one context (consecutive `positions`, when the file has them).
//   2. A word is a past-tense verb when it is in the fixed list of irregular simple-past forms below, or it is a
//      regular "-ed" form: at least 4 letters, ends in "ed", not in the stoplist of common "-ed" words that are not
//      past tenses (bed, need, hundred, naked, ...), and not ending in "eed" unless it is agreed, disagreed, freed,
//      decreed, guaranteed or refereed. The auxiliaries was, were, had, did (and could, would, ...) are not in the
//      list: they dominate narrative text and act as function words. Irregular forms identical to their present tense
//      (cut, put, let, read, ...) or mostly nouns (ground, wound, rose, ...) are left out too.
//   3. The token of a verb is the row holding the word's last letter (a causal LM has then read the whole word).
// Expert activation. A token activates expert i when at least one of its active latents (z > 0) belongs to expert i
// (latent l is in expert l / n): the experts that actually contribute to its reconstruction, always a subset of the
// routed top-e set (routing itself is internal to the model). The reference code counts the experts owning the token's
// top-3 latents instead of all of its active latents.
// Distribution (Fig. 6b). counts_i = verb tokens that activated expert i; share_i = counts_i / sum_j counts_j; experts
// sorted by descending share; cdf[r] = share of the top r + 1 experts (cdf[E - 1] = 1). A steep CDF = specialization.
// top10 = cdf at ceil(E / 10) experts: the share of activations handled by the top 10 % of experts.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "eval/activation_similarity.h"
#include "eval/config.h"
#include "lm/tokenizer.h"

namespace moesae {

// The past-tense rule of step 2 on one lower-case ASCII word.
bool is_past_tense_verb(const std::string& word);
// The fixed irregular simple-past forms of step 2 (sorted, unique).
const std::vector<std::string>& irregular_past_tense_forms();

struct PastTenseTokens {
  std::vector<int64_t> rows;        // indices into the given sequence of the verbs' last tokens, increasing
  std::vector<std::string> words;   // the verb of each
  int64_t distinct_words = 0;
};

// Steps 1-3 on decoded pieces: pieces[r] = text of row r; positions[r] = its context position (empty: one stream).
PastTenseTokens find_past_tense_pieces(const std::vector<std::string>& pieces, const std::vector<int32_t>& positions);
// The same from token ids decoded with `tok` (see step 1). Fails on a token id outside the tokenizer's vocabulary.
PastTenseTokens find_past_tense_tokens(const std::vector<int32_t>& token_ids, const std::vector<int32_t>& positions,
                                       const lm::Tokenizer& tok);

struct ExpertSpecialization {
  int64_t tokens = 0;                // tokens of the set
  std::vector<int64_t> counts;       // [E] tokens that activated each expert (expert id order)
  std::vector<double> fraction;      // [E] counts / tokens (expert id order)
  std::vector<double> cdf;           // [E] cumulative share, experts by descending share
  double top10 = 0;                  // cdf[ceil(E / 10) - 1]
};

// The distribution over `experts` experts of `latents_per_expert` latents from the tokens' active sets. Fails without
// tokens, when the sets' dictionary is not experts * latents_per_expert wide, or when no token activated any expert.
ExpertSpecialization expert_specialization(const ActiveSets& tokens, int64_t experts, int64_t latents_per_expert);

// The tokenizer of the `lm:` section's model (load_eval_lm in eval/loss_recovered.h, for callers that need only the
// tokenizer); nullptr when the section names no model.
std::unique_ptr<lm::Tokenizer> load_eval_tokenizer(const LmEvalConfig& lm);

}  // namespace moesae
