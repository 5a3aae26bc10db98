#include "lm/tokenizer.h"

namespace moesae::lm {

std::string Tokenizer::decode(const std::vector<int>& tokens) const {
  std::string out;
  int prev = -1;
  for (int t : tokens) {
    out += decode_piece(prev, t);
    prev = t;
  }
  return out;
}

}  // namespace moesae::lm
