// moesae lm: greedy text generation with any LanguageModel + Tokenizer (key/value-cached decoding).
#pragma once
#include <functional>
#include <string>

#include "lm/language_model.h"
#include "lm/tokenizer.h"

namespace moesae::lm {

// Greedy (temperature 0) generation with llama2.c semantics: the prompt is encoded with BOS first and its tokens
// count toward `steps` (<= 0 or more than seq_len: seq_len); generation stops when the model produces BOS (the
// tokenizer's bos_id()) or after `steps` positions. Each position is one model.step() on the key/value cache.
// Returns the decoded text (no trailing newline); on_piece, when given, receives each printed piece as produced (a
// piece that is a single unprintable, non-whitespace byte is not printed, as in llama2.c).
std::string generate_greedy(const LanguageModel& model, const Tokenizer& tok, const std::string& prompt, int steps,
                            const std::function<void(const std::string&)>& on_piece = {});

}  // namespace moesae::lm
