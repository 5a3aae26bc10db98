// moesae lm: the GPT-2 byte-level BPE tokenizer (OpenAI's encoder.py; Hugging Face vocab.json + merges.txt files).
//
// Files: vocab.json maps each token string to its id (50,257 tokens for GPT-2, "<|endoftext|>" = 50256); token
// strings spell bytes through encoder.py's bytes_to_unicode alphabet (printable Latin-1 bytes stand for themselves,
// the other 68 bytes for U+0100..U+0143, e.g. ' ' = 'Ġ'). merges.txt lists the merges "a b" in rank order, one per
// line (an optional first line "#version ..." is skipped).
//
// Encoding, exactly as encoder.py (and HF's GPT2Tokenizer, tiktoken's "gpt2"):
//   1. Pre-tokenization with the regex 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      over UTF-8 code points (implemented by hand; \p{L}, \p{N}: Unicode general categories L*, N* from
//      unicode_categories.inc; \s: the Unicode White_Space code points). Invalid UTF-8 bytes count as [^\s\p{L}\p{N}].
//   2. Each pre-token's UTF-8 bytes start as single-byte tokens; the adjacent pair with the lowest merge rank is
//      merged (every occurrence, left to right) until no pair has a rank. Results are cached per pre-token.
// Special token: the literal text "<|endoftext|>" anywhere in the input encodes to 50256 (like tiktoken's
// allowed_special="all" and HF's added token); the text around it is encoded separately. encode_ordinary() treats
// it as plain text.
// Decoding: a token's bytes (inverse byte alphabet); 50256 decodes to the text "<|endoftext|>", so
// decode(encode(s, false)) == s for every string.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "lm/tokenizer.h"

namespace moesae::lm {

class Gpt2Tokenizer final : public Tokenizer {
 public:
  // `path`: a directory holding vocab.json and merges.txt, or vocab.json itself (merges.txt beside it). Fails with
  // one message naming the file for a missing or malformed file.
  static Gpt2Tokenizer load(const std::string& path);

  int vocab_size() const override { return static_cast<int>(bytes_.size()); }
  // <|endoftext|>: GPT-2 starts documents with it and ends generation on it.
  int bos_id() const override { return eot_; }
  int eot_id() const { return eot_; }
  // Number of merges (50,000 for GPT-2).
  int merge_count() const { return n_merges_; }

  // Text to ids with <|endoftext|> first when `bos`; the literal text "<|endoftext|>" becomes the special token.
  std::vector<int> encode(const std::string& text, bool bos = true) const override;
  // Text to ids without special tokens ("<|endoftext|>" is encoded as ordinary text).
  std::vector<int> encode_ordinary(const std::string& text) const;
  // The bytes of `token` (prev is not used: byte-level BPE pieces are context free).
  std::string decode_piece(int prev, int token) const override;
  // The raw bytes of a token id; fails when out of range.
  const std::string& token_bytes(int id) const;
  // Id of a token given by its raw bytes, or -1.
  int lookup(const std::string& bytes) const;

  // Step 1 of the encoding: the pre-tokens of `text`, as byte strings (they concatenate to `text`).
  static std::vector<std::string> pretokenize(const std::string& text);

 private:
  void bpe(const std::string& word, std::vector<int>& out) const;

  std::string path_;
  std::vector<std::string> bytes_;               // id -> raw bytes
  std::unordered_map<std::string, int> index_;   // raw bytes -> id
  int byte_id_[256] = {};                        // id of each single-byte token
  // (left id << 32 | right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int, int>> merges_;
  int n_merges_ = 0;
  int eot_ = -1;
  struct Cache;  // per-pre-token results, behind a mutex (encode is const and may run on several threads)
  std::shared_ptr<Cache> cache_;
};

}  // namespace moesae::lm
