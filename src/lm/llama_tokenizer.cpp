// moesae lm: the llama2.c tokenizer (see llama_tokenizer.h).
#include "lm/llama_tokenizer.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "core/error.h"

namespace moesae::lm {

namespace {

// Parses "<0xXX>" (exactly six characters, two hex digits); returns the byte or -1.
int raw_byte(const std::string& p) {
  if (p.size() != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(p[3]), lo = hex(p[4]);
  return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

}  // namespace

LlamaTokenizer LlamaTokenizer::load(const std::string& path, int expected_vocab) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("tokenizer '", path, "': cannot open the file");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LlamaTokenizer t;
  t.path_ = path;
  size_t off = 0;
  auto read_i32 = [&](const char* what, int32_t& v) -> bool {
    if (off + 4 > bytes.size()) return false;
    std::memcpy(&v, bytes.data() + off, 4);
    off += 4;
    (void)what;
    return true;
  };
  int32_t maxlen = 0;
  if (!read_i32("max_token_length", maxlen))
    fail("tokenizer '", path, "': not a llama2.c tokenizer (file of ", bytes.size(), " bytes has no header)");
  if (maxlen <= 0 || maxlen > 4096)
    fail("tokenizer '", path, "': not a llama2.c tokenizer (max_token_length = ", maxlen, ")");
  t.max_token_length_ = maxlen;
  while (off < bytes.size()) {
    if (expected_vocab > 0 && static_cast<int>(t.pieces_.size()) == expected_vocab) break;
    const int id = static_cast<int>(t.pieces_.size());
    if (off + 8 > bytes.size())
      fail("tokenizer '", path, "': truncated in token ", id, " (", bytes.size() - off, " bytes left at offset ", off,
           ")");
    float score;
    int32_t len;
    std::memcpy(&score, bytes.data() + off, 4);
    std::memcpy(&len, bytes.data() + off + 4, 4);
    off += 8;
    if (len < 0 || len > maxlen)
      fail("tokenizer '", path, "': token ", id, " has length ", len, " (max_token_length is ", maxlen, ")");
    if (off + static_cast<size_t>(len) > bytes.size())
      fail("tokenizer '", path, "': truncated in token ", id, " (needs ", len, " bytes, ", bytes.size() - off,
           " left)");
    t.pieces_.emplace_back(bytes.data() + off, static_cast<size_t>(len));
    t.scores_.push_back(score);
    off += static_cast<size_t>(len);
  }
  if (expected_vocab > 0 && static_cast<int>(t.pieces_.size()) < expected_vocab)
    fail("tokenizer '", path, "' holds ", t.pieces_.size(), " tokens, the model needs ", expected_vocab);
  if (t.pieces_.size() < static_cast<size_t>(kByteOffset + 256))
    fail("tokenizer '", path, "' holds ", t.pieces_.size(), " tokens: too few for byte fallback (needs ",
         kByteOffset + 256, ")");
  for (int i = static_cast<int>(t.pieces_.size()) - 1; i >= 0; --i) t.index_[t.pieces_[i]] = i;  // first id wins
  return t;
}

const std::string& LlamaTokenizer::piece(int id) const {
  if (id < 0 || id >= vocab_size()) fail("tokenizer '", path_, "': token id ", id, " out of range [0, ", vocab_size(), ")");
  return pieces_[id];
}

float LlamaTokenizer::score(int id) const {
  piece(id);
  return scores_[id];
}

int LlamaTokenizer::lookup(const std::string& s) const {
  const auto it = index_.find(s);
  return it == index_.end() ? -1 : it->second;
}

std::vector<int> LlamaTokenizer::encode(const std::string& text, bool bos, bool eos) const {
  std::vector<int> ids;
  ids.reserve(text.size() + 3);
  if (bos) ids.push_back(kBos);
  if (!text.empty()) {
    const int space = lookup(" ");
    if (space < 0) fail("tokenizer '", path_, "' has no \" \" token (needed for the dummy prefix)");
    ids.push_back(space);
  }
  // Code points: a lead byte and its continuation bytes (10xxxxxx), at most 4 bytes.
  size_t i = 0;
  while (i < text.size()) {
    size_t j = i + 1;
    while (j < text.size() && j - i < 4 && (static_cast<unsigned char>(text[j]) & 0xC0) == 0x80) ++j;
    const std::string cp = text.substr(i, j - i);
    const int id = lookup(cp);
    if (id >= 0) {
      ids.push_back(id);
    } else {
      for (unsigned char b : cp) ids.push_back(static_cast<int>(b) + kByteOffset);
    }
    i = j;
  }
  // Merges: repeatedly fuse the best-scoring adjacent pair (the leftmost among equal scores). pair[k] caches the
  // vocabulary id of pieces[ids[k]] + pieces[ids[k+1]] (-1: not in the vocabulary); only the two pairs around a
  // merge change, so each merge costs one scan of the cached scores and two lookups.
  std::string buf;
  auto pair_id = [&](size_t k) {
    buf = pieces_[ids[k]];
    buf += pieces_[ids[k + 1]];
    return lookup(buf);
  };
  std::vector<int> pair(ids.size() > 1 ? ids.size() - 1 : 0);
  for (size_t k = 0; k < pair.size(); ++k) pair[k] = pair_id(k);
  for (;;) {
    int best_id = -1;
    size_t best_at = 0;
    for (size_t k = 0; k < pair.size(); ++k) {
      const int id = pair[k];
      if (id >= 0 && (best_id < 0 || scores_[id] > scores_[best_id])) {
        best_id = id;
        best_at = k;
      }
    }
    if (best_id < 0) break;
    ids[best_at] = best_id;
    ids.erase(ids.begin() + static_cast<std::ptrdiff_t>(best_at) + 1);
    pair.erase(pair.begin() + static_cast<std::ptrdiff_t>(best_at));
    if (best_at < pair.size()) pair[best_at] = pair_id(best_at);
    if (best_at > 0) pair[best_at - 1] = pair_id(best_at - 1);
  }
  if (eos) ids.push_back(kEos);
  return ids;
}

std::string LlamaTokenizer::decode_piece(int prev, int token) const {
  if (token == kBos) return {};
  const std::string& p = piece(token);
  const int b = raw_byte(p);
  if (b >= 0) return std::string(1, static_cast<char>(b));
  if (prev == kBos && !p.empty() && p[0] == ' ') return p.substr(1);
  return p;
}

}  // namespace moesae::lm
