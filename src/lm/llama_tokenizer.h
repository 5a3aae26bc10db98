// moesae lm: the llama2.c tokenizer (SentencePiece-style BPE scored merges, byte fallback).
//
// File format: int32 max_token_length, then for each token: float32 merge score, int32 byte length, the bytes.
// Token ids 0, 1, 2 are <unk>, <s> (BOS) and </s> (EOS); ids 3..258 are the raw bytes "<0x00>".."<0xFF>".
#pragma once
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "lm/tokenizer.h"

namespace moesae::lm {

class LlamaTokenizer final : public Tokenizer {
 public:
  static constexpr int kBos = 1;
  static constexpr int kEos = 2;
  static constexpr int kByteOffset = 3;  // raw byte b has id b + 3

  // Reads the whole file (every token until end of file). When expected_vocab > 0, the file must hold at least
  // that many tokens and only those are kept (llama2.c reads exactly the model's vocab_size tokens).
  static LlamaTokenizer load(const std::string& path, int expected_vocab = 0);

  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  int bos_id() const override { return kBos; }
  int max_token_length() const { return max_token_length_; }
  const std::string& piece(int id) const;
  float score(int id) const;
  // Id of an exact vocabulary string, or -1.
  int lookup(const std::string& s) const;

  // llama2.c encoding: [BOS], a dummy-prefix " " for non-empty text, UTF-8 code points (byte fallback), then
  // greedy merges of the adjacent pair whose concatenation is in the vocabulary with the highest score. [EOS].
  std::vector<int> encode(const std::string& text, bool bos, bool eos) const;
  std::vector<int> encode(const std::string& text, bool bos = true) const override { return encode(text, bos, false); }

  // The text of `token` following `prev`: after BOS a leading space is dropped; "<0xXX>" is the raw byte; BOS
  // itself is the empty string.
  std::string decode_piece(int prev, int token) const override;

 private:
  std::string path_;
  int max_token_length_ = 0;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int> index_;
};

}  // namespace moesae::lm
