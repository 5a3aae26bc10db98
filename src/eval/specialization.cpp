#include "eval/specialization.h"

#include <algorithm>
#include <set>

#include "eval/loss_recovered.h"

namespace moesae {
namespace {

std::vector<std::string> sorted_unique(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

// Common "-ed" words (>= 4 letters, not ending in "eed") that are not past tenses: nouns, adjectives, names.
const std::vector<std::string>& ed_stoplist() {
  static const std::vector<std::string> v = sorted_unique({
      "beloved", "biped",  "bobsled", "crooked", "deathbed", "dogged",  "embed",   "flowerbed", "fred",   "hatred",
      "hotbed",  "hundred", "infrared", "jagged", "kindred",  "moped",   "naked",   "ragged",    "riverbed", "rugged",
      "sacred",  "seabed", "shed",     "shred",   "sickbed",  "sled",    "unwed",   "waterbed",  "wicked",  "wretched",
  });
  return v;
}

// "-eed" words that are past tenses (every other "-eed" word is not: need, seed, speed, indeed, proceed, ...).
const std::vector<std::string>& eed_past_tenses() {
  static const std::vector<std::string> v =
      sorted_unique({"agreed", "decreed", "disagreed", "freed", "guaranteed", "refereed"});
  return v;
}

bool contains(const std::vector<std::string>& sorted, const std::string& w) {
  return std::binary_search(sorted.begin(), sorted.end(), w);
}

bool ends_with(const std::string& w, const char* suffix) {
  const size_t n = std::char_traits<char>::length(suffix);
  return w.size() >= n && w.compare(w.size() - n, n, suffix) == 0;
}

bool ascii_letter(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

}  // namespace

const std::vector<std::string>& irregular_past_tense_forms() {
  // Simple-past forms of common irregular verbs. Left out: forms identical to the present (cut, put, let, set, hit,
  // hurt, read, beat, ...), forms that are mostly nouns or adjectives (ground, wound, rose, bound, bore, lay, lit), and
  // past participles that are not simple pasts (begun, sung, drunk, ...).
  static const std::vector<std::string> v = sorted_unique({
      "arose",    "ate",       "awoke",     "became",    "began",    "bent",     "bit",      "bled",     "blew",
      "bought",   "bred",      "broke",     "brought",   "built",    "burnt",    "came",     "caught",   "chose",
      "clung",    "crept",     "dealt",     "dove",      "drank",    "dreamt",   "drew",     "drove",    "dug",
      "dwelt",    "fed",       "fell",      "felt",      "fled",     "flew",     "flung",    "forbade",  "foresaw",
      "forgave",  "forgot",    "fought",    "found",     "froze",    "gave",     "got",      "grew",     "heard",
      "held",     "hid",       "hung",      "kept",      "knelt",    "knew",     "laid",     "leapt",    "learnt",
      "led",      "left",      "lent",      "lost",      "made",     "meant",    "met",      "mistook",  "overcame",
      "overheard", "overtook", "paid",      "ran",       "rang",     "rebuilt",  "rode",     "said",     "sang",
      "sank",     "sat",       "saw",       "sent",      "shook",    "shone",    "shot",     "shrank",   "slept",
      "slew",     "slid",      "slung",     "smelt",     "sold",     "sought",   "spat",     "sped",     "spent",
      "spilt",    "spoke",     "sprang",    "spun",      "stank",    "stole",    "stood",    "strode",   "strove",
      "struck",   "stuck",     "stung",     "swam",      "swept",    "swore",    "swung",    "taught",   "thought",
      "threw",    "told",      "took",      "tore",      "understood", "undid",  "wept",     "went",     "withdrew",
      "woke",     "won",       "wore",      "wove",      "wrote",    "wrung",
  });
  return v;
}

bool is_past_tense_verb(const std::string& w) {
  if (contains(irregular_past_tense_forms(), w)) return true;
  if (w.size() < 4 || !ends_with(w, "ed")) return false;
  for (char c : w)
    if (c < 'a' || c > 'z') return false;
  if (ends_with(w, "eed")) return contains(eed_past_tenses(), w);
  return !contains(ed_stoplist(), w);
}

namespace {

// Steps 1-3 over `count` rows whose decoded text is piece(r) (decoded on the fly: no copy of the whole text).
template <typename PieceFn>
PastTenseTokens scan_past_tense(size_t count, const PieceFn& piece, const std::vector<int32_t>& positions) {
  if (!positions.empty() && positions.size() != count)
    fail("past-tense verbs: ", positions.size(), " positions for ", count, " tokens");
  PastTenseTokens out;
  std::set<std::string> distinct;
  // The word being read: its letters, first and last rows, and whether it can still count.
  std::string word;
  int64_t first_row = -1, last_row = -1;
  bool in_word = false, valid = false;
  const auto finish = [&] {  // at a known non-letter after the word
    if (in_word && valid) {
      const bool one_context =
          positions.empty() ||
          int64_t(positions[size_t(last_row)]) - positions[size_t(first_row)] == last_row - first_row;
      if (one_context && is_past_tense_verb(word)) {
        out.rows.push_back(last_row);
        out.words.push_back(word);
        distinct.insert(word);
      }
    }
    in_word = false;
    word.clear();
  };
  for (size_t r = 0; r < count; ++r) {
    const std::string p = piece(r);
    for (size_t c = 0; c < p.size(); ++c) {
      const unsigned char ch = static_cast<unsigned char>(p[c]);
      if (ascii_letter(ch) || ch >= 0x80) {
        if (!in_word) {
          in_word = true;
          // The character before the word must be a known non-letter: not before the first row.
          valid = !(r == 0 && c == 0);
          first_row = int64_t(r);
        }
        if (ch >= 0x80) valid = false;  // a non-ASCII letter or symbol touches it
        word.push_back(static_cast<char>(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch));
        last_row = int64_t(r);
      } else {
        finish();
      }
    }
  }
  // A word running into the end of the rows may continue: not counted.
  out.distinct_words = static_cast<int64_t>(distinct.size());
  return out;
}

}  // namespace

PastTenseTokens find_past_tense_pieces(const std::vector<std::string>& pieces, const std::vector<int32_t>& positions) {
  return scan_past_tense(pieces.size(), [&](size_t r) { return pieces[r]; }, positions);
}

PastTenseTokens find_past_tense_tokens(const std::vector<int32_t>& token_ids, const std::vector<int32_t>& positions,
                                       const lm::Tokenizer& tok) {
  for (size_t r = 0; r < token_ids.size(); ++r)
    if (token_ids[r] < 0 || token_ids[r] >= tok.vocab_size())
      fail("past-tense verbs: token id ", token_ids[r], " of row ", r, " is outside the tokenizer's vocabulary of ",
           tok.vocab_size());
  // BOS / end-of-text separates documents: a line break (its own decoding may be empty or "<|endoftext|>").
  const auto piece = [&](size_t r) {
    return token_ids[r] == tok.bos_id() ? std::string("\n") : tok.decode_piece(-1, token_ids[r]);
  };
  return scan_past_tense(token_ids.size(), piece, positions);
}

ExpertSpecialization expert_specialization(const ActiveSets& tokens, int64_t experts, int64_t latents_per_expert) {
  if (experts < 1 || latents_per_expert < 1 || tokens.dict_size() != experts * latents_per_expert)
    fail("expert specialization: ", experts, " experts of ", latents_per_expert, " latents do not make the ",
         tokens.dict_size(), " latents of the code");
  if (tokens.tokens() == 0) fail("expert specialization: no tokens in the set");
  ExpertSpecialization s;
  s.tokens = tokens.tokens();
  s.counts.assign(static_cast<size_t>(experts), 0);
  std::vector<int64_t> seen(static_cast<size_t>(experts), -1);  // last token that counted each expert
  for (int64_t t = 0; t < tokens.tokens(); ++t) {
    const int32_t* l = tokens.latents(t);
    for (int64_t j = 0; j < tokens.size(t); ++j) {
      const size_t e = static_cast<size_t>(l[j] / latents_per_expert);
      if (seen[e] != t) seen[e] = t, ++s.counts[e];  // an expert counts once per token
    }
  }
  int64_t total = 0;
  for (int64_t c : s.counts) total += c;
  if (total == 0) fail("expert specialization: none of the ", s.tokens, " tokens activated any latent");
  s.fraction.resize(static_cast<size_t>(experts));
  for (size_t e = 0; e < s.counts.size(); ++e) s.fraction[e] = double(s.counts[e]) / double(s.tokens);
  std::vector<int64_t> sorted = s.counts;
  std::sort(sorted.begin(), sorted.end(), std::greater<int64_t>());
  s.cdf.resize(sorted.size());
  int64_t run = 0;
  for (size_t r = 0; r < sorted.size(); ++r) {
    run += sorted[r];
    s.cdf[r] = double(run) / double(total);  // Fig. 6b
  }
  const int64_t top = (experts + 9) / 10;  // ceil(E / 10)
  s.top10 = s.cdf[static_cast<size_t>(top - 1)];
  return s;
}

std::unique_ptr<lm::Tokenizer> load_eval_tokenizer(const LmEvalConfig& cfg) {
  return std::move(load_eval_lm(cfg).tokenizer);
}

}  // namespace moesae
