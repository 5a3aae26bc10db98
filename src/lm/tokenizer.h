// moesae lm: what every tokenizer of the runtime offers (llama2.c's scored BPE, GPT-2's byte-level BPE).
#pragma once
#include <string>
#include <vector>

namespace moesae::lm {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  virtual int vocab_size() const = 0;
  // The token that starts every document (llama2.c: <s> = 1; GPT-2: <|endoftext|> = 50256); generation stops when
  // the model produces it.
  virtual int bos_id() const = 0;
  // Text to ids, with bos_id() first when `bos`.
  virtual std::vector<int> encode(const std::string& text, bool bos = true) const = 0;
  // The text of `token` following `prev` (prev = -1 at the start).
  virtual std::string decode_piece(int prev, int token) const = 0;
  // Concatenated decode_piece over a sequence.
  std::string decode(const std::vector<int>& tokens) const;
};

}  // namespace moesae::lm
