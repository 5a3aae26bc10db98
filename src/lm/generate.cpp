#include "lm/generate.h"

#include <cctype>

#include "core/error.h"

namespace moesae::lm {

std::string generate_greedy(const LanguageModel& model, const Tokenizer& tok, const std::string& prompt, int steps,
                            const std::function<void(const std::string&)>& on_piece) {
  const LmShape& s = model.shape();
  if (steps <= 0 || steps > s.seq_len) steps = s.seq_len;
  const std::vector<int> prompt_ids = tok.encode(prompt, /*bos=*/true);
  for (int id : prompt_ids)
    if (id < 0 || id >= s.vocab_size)
      fail("generate: prompt token ", id, " is outside the vocabulary of model '", model.path(), "' (", s.vocab_size,
           " tokens): tokenizer and model do not match");
  const int n_prompt = static_cast<int>(prompt_ids.size());
  std::unique_ptr<DecodeState> state = model.start();
  std::string text;
  int token = prompt_ids[0];
  for (int pos = 0; pos < steps; ++pos) {
    const std::vector<float> logits = model.step(*state, token);  // logits of position pos + 1
    int next;
    if (pos < n_prompt - 1) {
      next = prompt_ids[pos + 1];
    } else {
      next = 0;
      for (int i = 1; i < s.vocab_size; ++i)
        if (logits[i] > logits[next]) next = i;  // first maximum
    }
    if (next == tok.bos_id()) break;
    const std::string piece = tok.decode_piece(token, next);
    const bool printable = !(piece.size() == 1 && !std::isprint(static_cast<unsigned char>(piece[0])) &&
                             !std::isspace(static_cast<unsigned char>(piece[0])));
    if (printable && !piece.empty()) {
      text += piece;
      if (on_piece) on_piece(piece);
    }
    token = next;
  }
  return text;
}

}  // namespace moesae::lm
