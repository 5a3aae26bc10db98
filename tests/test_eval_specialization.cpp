// Expert specialization on past-tense verbs (§3.3.1, Fig. 6b; eval/specialization.h): the verb rule, finding the
// verbs' tokens in a stream of pieces (word boundaries, contexts), and the expert activation CDF.
#include <gtest/gtest.h>

#include <algorithm>

#include "error_of.h"
#include "eval/specialization.h"
#include "lm/llama_tokenizer.h"
#include "lm_test_data.h"

using namespace moesae;
using moesae::testing::error_of;

TEST(PastTense, Rule) {
  for (const char* w : {"walked", "jumped", "smiled", "cried", "agreed", "freed", "went", "saw", "said", "thought",
                        "led", "fed", "bled", "found", "named", "excited"})
    EXPECT_TRUE(is_past_tense_verb(w)) << w;
  for (const char* w : {"was", "were", "had", "did", "need", "seed", "speed", "indeed", "proceed", "bed", "red", "shed",
                        "fred", "hundred", "naked", "wicked", "sacred", "ed", "ted", "cut", "put", "read", "ground",
                        "walk", "happy", "walked2", "Walked"})
    EXPECT_FALSE(is_past_tense_verb(w)) << w;  // (the rule sees lower-case words)
  const auto& irregular = irregular_past_tense_forms();
  EXPECT_TRUE(std::is_sorted(irregular.begin(), irregular.end()));
  EXPECT_EQ(std::adjacent_find(irregular.begin(), irregular.end()), irregular.end());
  EXPECT_GT(irregular.size(), 100u);
}

TEST(PastTense, WordsFromPieces) {
  // "Once upon a time, Tim walked to the park and saw a red ball. He smiled"
  const std::vector<std::string> pieces = {" Once", " upon", " a",   " time", ",",  " Tim", " walk", "ed", " to",
                                           " the",  " park", " and", " saw",  " a",  " red", " ball", ".",  " He",
                                           " sm",   "iled"};
  const PastTenseTokens v = find_past_tense_pieces(pieces, {});
  EXPECT_EQ(v.rows, (std::vector<int64_t>{7, 12}));  // the rows of "ed" and " saw"; "smiled" runs into the end
  EXPECT_EQ(v.words, (std::vector<std::string>{"walked", "saw"}));
  EXPECT_EQ(v.distinct_words, 2);
  // Capitals are lower-cased; a word at the very start has no known beginning ("ed" could end any word).
  EXPECT_EQ(find_past_tense_pieces({"jumped", " Jumped", "!", " jumped", "-", "liked", " "}, {}).words,
            (std::vector<std::string>{"jumped", "jumped", "liked"}));
  // A word cut by a context boundary (positions restart) is not whole in either context; in one context it is.
  const std::vector<std::string> split = {" He", " walk", "ed", " home", "."};
  EXPECT_TRUE(find_past_tense_pieces(split, {10, 11, 0, 1, 2}).rows.empty());
  EXPECT_EQ(find_past_tense_pieces(split, {10, 11, 12, 13, 14}).rows, (std::vector<int64_t>{2}));
  EXPECT_EQ(find_past_tense_pieces(split, {10, 11, 12, 0, 1}).rows, (std::vector<int64_t>{2}));  // ends at the cut
  // Non-ASCII letters make a word unknown ("caféd" is not "caf" + "d").
  EXPECT_TRUE(find_past_tense_pieces({" caf", "\xc3\xa9", "d", "."}, {}).rows.empty());
  EXPECT_EQ(error_of([] { find_past_tense_pieces({" a"}, {1, 2}); }), "past-tense verbs: 2 positions for 1 tokens");
}

TEST(PastTense, TokensDecodedWithTheStoriesTokenizer) {
  REQUIRE_DATA(f);
  const lm::LlamaTokenizer tok = lm::LlamaTokenizer::load(f.tokenizer);
  std::vector<int> ids = tok.encode("Lily walked to the park and saw a big dog. She smiled and played.", true);
  const std::vector<int> next = tok.encode("Then they jumped.", true);  // a second document after BOS
  ids.insert(ids.end(), next.begin(), next.end());
  const std::vector<int32_t> ids32(ids.begin(), ids.end());
  const PastTenseTokens v = find_past_tense_tokens(ids32, {}, tok);
  EXPECT_EQ(v.words, (std::vector<std::string>{"walked", "saw", "smiled", "played", "jumped"}));
  for (size_t i = 0; i < v.rows.size(); ++i) {  // each row holds the verb's last letter
    const std::string piece = tok.decode_piece(-1, ids[size_t(v.rows[i])]);
    EXPECT_EQ(v.words[i].back(), piece.back()) << v.words[i] << " / '" << piece << "'";
  }
  EXPECT_EQ(error_of([&] { find_past_tense_tokens({5, 9999}, {}, tok); }),
            "past-tense verbs: token id 9999 of row 1 is outside the tokenizer's vocabulary of 512");
}

TEST(ExpertSpecialization, HandCheckedCdf) {
  // E = 4 experts of n = 2 latents (expert of latent l: l / 2). Tokens: {0, 1} -> expert 0; {0, 2} -> 0, 1;
  // {7} -> 3; {1} -> 0. Counts [3, 1, 0, 1] of 5 activations; sorted [3, 1, 1, 0].
  ActiveSets s(8);
  s.add_set({0, 1});
  s.add_set({0, 2});
  s.add_set({7});
  s.add_set({1});
  const ExpertSpecialization sp = expert_specialization(s, 4, 2);
  EXPECT_EQ(sp.tokens, 4);
  EXPECT_EQ(sp.counts, (std::vector<int64_t>{3, 1, 0, 1}));
  EXPECT_EQ(sp.fraction, (std::vector<double>{0.75, 0.25, 0.0, 0.25}));
  EXPECT_EQ(sp.cdf, (std::vector<double>{0.6, 0.8, 1.0, 1.0}));
  EXPECT_DOUBLE_EQ(sp.top10, 0.6);  // ceil(4 / 10) = 1 expert
  // Invariant to the order of latents within an expert and to the order of tokens; a permutation of experts permutes
  // the counts but not the CDF.
  ActiveSets t(8);
  t.add_set({1});
  t.add_set({6});
  t.add_set({3, 1});
  t.add_set({1, 0});
  const ExpertSpecialization sq = expert_specialization(t, 4, 2);
  EXPECT_EQ(sq.counts, (std::vector<int64_t>{3, 1, 0, 1}));
  EXPECT_EQ(sq.cdf, sp.cdf);
  // Every token on one expert: a step CDF; spread evenly: a straight line.
  ActiveSets one(20), even(20);
  for (int i = 0; i < 10; ++i) {
    one.add_set({4});
    even.add_set({2 * i});
  }
  EXPECT_DOUBLE_EQ(expert_specialization(one, 10, 2).top10, 1.0);
  EXPECT_DOUBLE_EQ(expert_specialization(even, 10, 2).top10, 0.1);
  EXPECT_DOUBLE_EQ(expert_specialization(even, 10, 2).cdf[4], 0.5);
}

TEST(ExpertSpecialization, Errors) {
  ActiveSets s(8);
  EXPECT_EQ(error_of([&] { expert_specialization(s, 4, 2); }), "expert specialization: no tokens in the set");
  s.add_set({});
  EXPECT_EQ(error_of([&] { expert_specialization(s, 4, 2); }),
            "expert specialization: none of the 1 tokens activated any latent");
  EXPECT_EQ(error_of([&] { expert_specialization(s, 3, 2); }),
            "expert specialization: 3 experts of 2 latents do not make the 8 latents of the code");
  EXPECT_EQ(load_eval_tokenizer(LmEvalConfig{}), nullptr);  // no lm.model: no tokenizer
}
