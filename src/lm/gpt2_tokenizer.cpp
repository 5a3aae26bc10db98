// moesae lm: the GPT-2 byte-level BPE tokenizer (see gpt2_tokenizer.h).
#include "lm/gpt2_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <mutex>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace moesae::lm {

namespace {

namespace fs = std::filesystem;

struct CodePointRange {
  uint32_t lo, hi;  // inclusive
};
#include "lm/unicode_categories.inc"

const std::string kEndOfText = "<|endoftext|>";
constexpr uint32_t kInvalid = 0xFFFFFFFFu;  // a byte that does not start a valid UTF-8 sequence

bool in_ranges(uint32_t cp, const CodePointRange* r, size_t n) {
  // The first range whose upper end is >= cp; cp is in it when its lower end is <= cp.
  const CodePointRange* end = r + n;
  const CodePointRange* it = std::lower_bound(r, end, cp, [](const CodePointRange& a, uint32_t v) { return a.hi < v; });
  return it != end && it->lo <= cp;
}

// The character classes of the pre-tokenization regex.
enum class Cls : uint8_t { Letter, Number, Space, Other };

Cls classify(uint32_t cp) {
  if (cp < 0x80) {  // ASCII
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return Cls::Letter;
    if (cp >= '0' && cp <= '9') return Cls::Number;
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return Cls::Space;
    return Cls::Other;
  }
  if (cp == kInvalid) return Cls::Other;
  // \s: Unicode White_Space (what the `regex` module of encoder.py and HF's tokenizers match).
  if (cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
      cp == 0x202F || cp == 0x205F || cp == 0x3000)
    return Cls::Space;
  if (in_ranges(cp, kLetterRanges, std::size(kLetterRanges))) return Cls::Letter;
  if (in_ranges(cp, kNumberRanges, std::size(kNumberRanges))) return Cls::Number;
  return Cls::Other;
}

// Decodes the code point at s[i]; sets len to its byte length. Malformed sequences (bad lead or continuation byte,
// overlong form, surrogate, > U+10FFFF, truncated) give kInvalid for a single byte.
uint32_t decode_utf8(const std::string& s, size_t i, size_t& len) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  len = 1;
  if (b0 < 0x80) return b0;
  int n;
  uint32_t cp, min;
  if ((b0 & 0xE0) == 0xC0) {
    n = 2, cp = b0 & 0x1Fu, min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 3, cp = b0 & 0x0Fu, min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 4, cp = b0 & 0x07u, min = 0x10000;
  } else {
    return kInvalid;
  }
  if (i + static_cast<size_t>(n) > s.size()) return kInvalid;
  for (int k = 1; k < n; ++k) {
    const auto b = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
    if ((b & 0xC0) != 0x80) return kInvalid;
    cp = (cp << 6) | (b & 0x3Fu);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return kInvalid;
  len = static_cast<size_t>(n);
  return cp;
}

// encoder.py's bytes_to_unicode: byte b -> the code point that spells it in vocab.json and merges.txt. The printable
// bytes '!'..'~', 0xA1..0xAC and 0xAE..0xFF stand for themselves; the other 68 get 256, 257, ... in byte order.
std::vector<uint32_t> bytes_to_unicode() {
  std::vector<uint32_t> map(256);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    map[b] = printable ? b : next++;
  }
  return map;
}

std::string read_file(const std::string& path, const char* what) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) fail("tokenizer ", what, " '", path, "': no such file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("tokenizer ", what, " '", path, "': cannot open the file");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

struct Gpt2Tokenizer::Cache {
  std::mutex mu;
  std::unordered_map<std::string, std::vector<int>> words;
};

Gpt2Tokenizer Gpt2Tokenizer::load(const std::string& path) {
  std::error_code ec;
  fs::path vocab_path, merges_path;
  if (fs::is_directory(path, ec)) {
    vocab_path = fs::path(path) / "vocab.json";
    merges_path = fs::path(path) / "merges.txt";
  } else if (fs::is_regular_file(path, ec)) {
    vocab_path = path;
    merges_path = fs::path(path).parent_path() / "merges.txt";
  } else {
    fail("tokenizer '", path, "': no such file or directory (a GPT-2 tokenizer is a directory holding vocab.json and "
         "merges.txt, or its vocab.json)");
  }
  const std::string vname = vocab_path.string(), mname = merges_path.string();

  // Code point -> byte (the inverse alphabet).
  const std::vector<uint32_t> to_cp = bytes_to_unicode();
  std::unordered_map<uint32_t, unsigned char> to_byte;
  for (int b = 0; b < 256; ++b) to_byte[to_cp[static_cast<size_t>(b)]] = static_cast<unsigned char>(b);
  // A vocab.json / merges.txt string -> raw bytes; false when a character is outside the alphabet.
  auto unmap = [&](const std::string& s, std::string& out) -> bool {
    out.clear();
    for (size_t i = 0; i < s.size();) {
      size_t len;
      const uint32_t cp = decode_utf8(s, i, len);
      const auto it = to_byte.find(cp);
      if (it == to_byte.end()) return false;
      out += static_cast<char>(it->second);
      i += len;
    }
    return true;
  };

  // ---- vocab.json: {token string: id}, ids 0 .. N-1 each exactly once ----
  nlohmann::json vj;
  try {
    vj = nlohmann::json::parse(read_file(vname, "vocabulary"));
  } catch (const nlohmann::json::exception& e) {
    fail("tokenizer vocabulary '", vname, "': not valid JSON (", e.what(), ")");
  }
  if (!vj.is_object() || vj.empty())
    fail("tokenizer vocabulary '", vname, "': not a JSON object of {token: id} (GPT-2's vocab.json)");
  Gpt2Tokenizer t;
  t.path_ = vname;
  const size_t n = vj.size();
  t.bytes_.assign(n, std::string());
  std::vector<bool> seen(n, false);
  std::string raw;
  for (auto it = vj.begin(); it != vj.end(); ++it) {
    if (!it->is_number_integer())
      fail("tokenizer vocabulary '", vname, "': the id of token '", it.key(), "' is not an integer");
    const long long id = it->get<long long>();
    if (id < 0 || static_cast<size_t>(id) >= n)
      fail("tokenizer vocabulary '", vname, "': token '", it.key(), "' has id ", id, ", outside [0, ", n,
           ") (ids must be 0 .. size-1)");
    if (seen[static_cast<size_t>(id)]) fail("tokenizer vocabulary '", vname, "': id ", id, " is used twice");
    seen[static_cast<size_t>(id)] = true;
    if (!unmap(it.key(), raw))
      fail("tokenizer vocabulary '", vname, "': token '", it.key(), "' (id ", id,
           ") has a character outside GPT-2's byte alphabet (not a byte-level BPE vocabulary)");
    t.bytes_[static_cast<size_t>(id)] = raw;
  }
  // Every id is used (n distinct ids in [0, n)). Index by bytes; the first id wins should two tokens share bytes.
  for (int id = static_cast<int>(n) - 1; id >= 0; --id) t.index_[t.bytes_[static_cast<size_t>(id)]] = id;
  for (int b = 0; b < 256; ++b) {
    const int id = t.lookup(std::string(1, static_cast<char>(b)));
    if (id < 0) fail("tokenizer vocabulary '", vname, "': no token for byte ", b, " (a byte-level BPE needs all 256)");
    t.byte_id_[b] = id;
  }
  t.eot_ = t.lookup(kEndOfText);
  if (t.eot_ < 0) fail("tokenizer vocabulary '", vname, "': no ", kEndOfText, " token");

  // ---- merges.txt: "left right" per line, in rank order ----
  const std::string mtext = read_file(mname, "merges");
  size_t at = 0;
  int line_no = 0;
  std::string left, right;
  while (at < mtext.size()) {
    size_t e = mtext.find('\n', at);
    if (e == std::string::npos) e = mtext.size();
    std::string line = mtext.substr(at, e - at);
    at = e + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_no == 1 && line.rfind("#version", 0) == 0) continue;
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 >= line.size() || line.find(' ', sp + 1) != std::string::npos)
      fail("tokenizer merges '", mname, "': line ", line_no, " is not two tokens separated by one space: '", line, "'");
    if (!unmap(line.substr(0, sp), left) || !unmap(line.substr(sp + 1), right))
      fail("tokenizer merges '", mname, "': line ", line_no, " has a character outside GPT-2's byte alphabet");
    const int a = t.lookup(left), b = t.lookup(right), ab = t.lookup(left + right);
    if (a < 0 || b < 0 || ab < 0)
      fail("tokenizer merges '", mname, "': line ", line_no, " ('", line, "') merges tokens that are not in '", vname,
           "' (merges.txt and vocab.json do not belong together)");
    const uint64_t key = (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b);
    t.merges_.emplace(key, std::make_pair(t.n_merges_, ab));  // a repeated pair keeps its first (lowest) rank
    ++t.n_merges_;
  }
  if (t.n_merges_ == 0) fail("tokenizer merges '", mname, "': no merges");
  t.cache_ = std::make_shared<Cache>();
  return t;
}

int Gpt2Tokenizer::lookup(const std::string& bytes) const {
  const auto it = index_.find(bytes);
  return it == index_.end() ? -1 : it->second;
}

const std::string& Gpt2Tokenizer::token_bytes(int id) const {
  if (id < 0 || id >= vocab_size())
    fail("tokenizer '", path_, "': token id ", id, " out of range [0, ", vocab_size(), ")");
  return bytes_[static_cast<size_t>(id)];
}

std::string Gpt2Tokenizer::decode_piece(int prev, int token) const {
  (void)prev;
  return token_bytes(token);
}

std::vector<std::string> Gpt2Tokenizer::pretokenize(const std::string& text) {
  // Code points with their byte offsets and classes (offs has one extra entry: the end of the text).
  std::vector<uint32_t> cps;
  std::vector<size_t> offs;
  std::vector<Cls> cls;
  for (size_t i = 0; i < text.size();) {
    size_t len;
    const uint32_t cp = decode_utf8(text, i, len);
    cps.push_back(cp);
    offs.push_back(i);
    cls.push_back(classify(cp));
    i += len;
  }
  offs.push_back(text.size());
  const size_t n = cps.size();
  std::vector<std::string> out;
  size_t i = 0;
  // The end of the run of class c starting at k.
  auto run_end = [&](size_t k, Cls c) {
    while (k < n && cls[k] == c) ++k;
    return k;
  };
  while (i < n) {
    size_t j = 0;  // end (exclusive) of the pre-token starting at i
    // 's|'t|'re|'ve|'m|'ll|'d  (case-sensitive)
    if (cps[i] == '\'' && i + 1 < n) {
      const uint32_t a = cps[i + 1], b = i + 2 < n ? cps[i + 2] : 0;
      if (a == 's' || a == 't' || a == 'm' || a == 'd')
        j = i + 2;
      else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        j = i + 3;
    }
    //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+  (an optional single leading ' ', then a run of one class)
    if (j == 0) {
      for (const Cls c : {Cls::Letter, Cls::Number, Cls::Other}) {
        if (cls[i] == c) {
          j = run_end(i, c);
          break;
        }
        if (cps[i] == ' ' && i + 1 < n && cls[i + 1] == c) {
          j = run_end(i + 1, c);
          break;
        }
      }
    }
    // \s+(?!\S) | \s+  : a whitespace run; when a non-space follows, its last character is left to start the next
    // pre-token (so " word" keeps its space), unless the run is that single character.
    if (j == 0) {
      const size_t e = run_end(i, Cls::Space);
      j = (e < n && e - i > 1) ? e - 1 : e;
    }
    out.emplace_back(text, offs[i], offs[j] - offs[i]);
    i = j;
  }
  return out;
}

void Gpt2Tokenizer::bpe(const std::string& word, std::vector<int>& out) const {
  {
    std::lock_guard<std::mutex> lock(cache_->mu);
    const auto it = cache_->words.find(word);
    if (it != cache_->words.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int> ids(word.size());
  for (size_t k = 0; k < word.size(); ++k) ids[k] = byte_id_[static_cast<unsigned char>(word[k])];
  std::vector<int> merged;
  while (ids.size() > 1) {
    // The adjacent pair of lowest merge rank.
    int best_rank = std::numeric_limits<int>::max(), a = -1, b = -1, ab = -1;
    for (size_t k = 0; k + 1 < ids.size(); ++k) {
      const uint64_t key = (static_cast<uint64_t>(ids[k]) << 32) | static_cast<uint32_t>(ids[k + 1]);
      const auto it = merges_.find(key);
      if (it != merges_.end() && it->second.first < best_rank) {
        best_rank = it->second.first;
        a = ids[k];
        b = ids[k + 1];
        ab = it->second.second;
      }
    }
    if (ab < 0) break;
    // Merge every occurrence of (a, b), scanning left to right without overlap (encoder.py's inner loop).
    merged.clear();
    for (size_t k = 0; k < ids.size();) {
      if (k + 1 < ids.size() && ids[k] == a && ids[k + 1] == b) {
        merged.push_back(ab);
        k += 2;
      } else {
        merged.push_back(ids[k]);
        ++k;
      }
    }
    ids.swap(merged);
  }
  out.insert(out.end(), ids.begin(), ids.end());
  std::lock_guard<std::mutex> lock(cache_->mu);
  if (cache_->words.size() >= (1u << 16)) cache_->words.clear();  // bound the memory of long runs
  cache_->words.emplace(word, std::move(ids));
}

std::vector<int> Gpt2Tokenizer::encode_ordinary(const std::string& text) const {
  std::vector<int> ids;
  ids.reserve(text.size() / 3 + 1);
  for (const std::string& w : pretokenize(text)) bpe(w, ids);
  return ids;
}

std::vector<int> Gpt2Tokenizer::encode(const std::string& text, bool bos) const {
  std::vector<int> ids;
  if (bos) ids.push_back(eot_);
  // The literal "<|endoftext|>" is the special token; the text between occurrences is encoded on its own.
  size_t at = 0;
  for (;;) {
    const size_t e = text.find(kEndOfText, at);
    const std::vector<int> part =
        encode_ordinary(text.substr(at, e == std::string::npos ? std::string::npos : e - at));
    ids.insert(ids.end(), part.begin(), part.end());
    if (e == std::string::npos) break;
    ids.push_back(eot_);
    at = e + kEndOfText.size();
  }
  return ids;
}

}  // namespace moesae::lm
