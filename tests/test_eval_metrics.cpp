// evaluate_sae (eval/evaluate.h) end to end on a small Scale SAE: the new /final scalars and vectors (intra- vs
// inter-expert redundancy, activation similarity and the overlap histogram, omega range, and with token ids + a
// tokenizer the past-tense-verb metrics), checked against the metric functions applied to the same codes; and the
// eval config keys.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "data/activation_stream.h"
#include "error_of.h"
#include "eval/activation_similarity.h"
#include "eval/evaluate.h"
#include "eval/similarity.h"
#include "run/config.h"
#include "sae_test_util.h"
#include "temp_dir.h"

using namespace moesae;
using moesae::testing::TempDir;

namespace {

class FakeTokenizer final : public lm::Tokenizer {
 public:
  int vocab_size() const override { return int(kPieces.size()); }
  int bos_id() const override { return 0; }
  std::vector<int> encode(const std::string&, bool) const override { return {}; }
  std::string decode_piece(int, int token) const override { return kPieces.at(size_t(token)); }
  static inline const std::vector<std::string> kPieces = {"<s>", " the", " dog", " walk", "ed", " saw", "."};
};

constexpr int64_t kRows = 400, kEval0 = 200, kD = 6, kCtx = 50;
// Row r holds token kSentence[r % 7] at position r % kCtx: " the dog walked. saw." over and over.
const int kSentence[7] = {1, 2, 3, 4, 6, 5, 6};

std::string write_acts(const TempDir& dir) {
  const std::string path = dir.file("acts.h5");
  ActivationWriter::Options opt;
  opt.d = kD;
  opt.token_ids = opt.positions = true;
  ActivationWriter w(path, opt);
  Tensor x = moesae::testing::random_host(kRows, kD, 3);
  Tensor ids = host_vector(kRows, DType::I32), pos = host_vector(kRows, DType::I32);
  for (int64_t r = 0; r < kRows; ++r) {
    ids.host<int32_t>()[r] = kSentence[r % 7];
    pos.host<int32_t>()[r] = int32_t(r % kCtx);
  }
  w.append(x, ids, pos);
  w.commit();
  return path;
}

// The held-out rows that hold a whole past-tense verb, by hand: "ed" of " walk"+"ed" when both are in the rows and in
// one context, and " saw"; each needs the next row (a "." always) inside the rows.
int64_t expected_verbs() {
  int64_t n = 0;
  for (int64_t r = kEval0; r + 1 < kRows; ++r) {
    if (r % 7 == 3 && r - 1 >= kEval0 && r % kCtx != 0) ++n;  // walked
    if (r % 7 == 5) ++n;                                     // saw
  }
  return n;
}

}  // namespace

TEST(EvaluateSae, ReportsSimilarityOverlapsOmegaAndVerbMetrics) {
  TempDir dir;
  auto file = std::make_shared<const ActivationFile>(write_acts(dir));
  auto be = make_cpu_backend(1);
  ModelConfig mc = moesae::testing::small_config(Arch::Scale, int(kD), 32, 4, 2, 4);
  mc.feature_scaling = FeatureScaling::Mean;
  auto sae = make_sae(mc, *be);
  Rng rng(5);
  sae->init(rng);
  moesae::testing::randomize(*be, sae->params().get("omega").value, 9, 0.5);
  const FakeTokenizer tok;
  EvalConfig cfg;
  cfg.overlap_tokens = 0;  // every evaluated token
  EvalReader reader(file, {kEval0, kRows});
  const EvalResult r = evaluate_sae(*sae, reader, cfg, 64, nullptr, EvalTokens{file.get(), &tok});

  // The same codes, collected here.
  ActiveSets all(mc.dict_size);
  Tensor x = host_tensor(kRows - kEval0, kD);
  file->read_rows(kEval0, x);
  sae->forward(be->from_host(x), false);
  all.add(be->to_host(sae->code().ids), be->to_host(sae->code().vals));
  const OverlapDistribution od = overlap_distribution(all, double(mc.k));
  EXPECT_NEAR(r.scalars.at("activation_similarity"), od.similarity, 1e-12);
  std::vector<double> bins = od.fractions();
  bins.resize(size_t(mc.k) + 1, 0.0);  // k + 1 bins for a Top-K model
  EXPECT_EQ(r.vectors.at("overlap_histogram"), bins);
  EXPECT_EQ(r.scalars.at("overlap_tokens"), double(kRows - kEval0));
  EXPECT_DOUBLE_EQ(r.scalars.at("overlap_mean"), od.mean_overlap);

  Tensor w_dec = be->to_host(sae->decoder());
  const ExpertSimilarity es = expert_similarity(w_dec, 8, 0.9, 0);
  EXPECT_EQ(r.scalars.at("intra_expert_redundancy"), es.intra);
  EXPECT_EQ(r.scalars.at("inter_expert_redundancy"), es.inter);

  const std::vector<double>& omega = r.vectors.at("omega");
  EXPECT_EQ(r.scalars.at("omega_min"), *std::min_element(omega.begin(), omega.end()));
  EXPECT_EQ(r.scalars.at("omega_max"), *std::max_element(omega.begin(), omega.end()));
  EXPECT_LT(r.scalars.at("omega_min"), r.scalars.at("omega_max"));

  EXPECT_EQ(r.scalars.at("specialization_tokens"), double(expected_verbs()));
  EXPECT_EQ(r.scalars.at("specialization_words"), 2.0);  // walked, saw
  const std::vector<double>& cdf = r.vectors.at("specialization_cdf");
  ASSERT_EQ(cdf.size(), 4u);
  EXPECT_TRUE(std::is_sorted(cdf.begin(), cdf.end()));
  EXPECT_DOUBLE_EQ(cdf.back(), 1.0);
  EXPECT_EQ(r.scalars.at("specialization_top10"), cdf[0]);  // ceil(4 / 10) = 1 expert
  EXPECT_EQ(r.vectors.at("specialization_fraction").size(), 4u);
  const std::vector<double>& hv = r.vectors.at("overlap_histogram_verbs");
  EXPECT_NEAR(std::accumulate(hv.begin(), hv.end(), 0.0), 1.0, 1e-12);
  EXPECT_GE(r.scalars.at("activation_similarity_verbs"), 0.0);
  EXPECT_LE(r.scalars.at("activation_similarity_verbs"), 1.0);

  // The overlap histogram over the first 50 tokens only; without token ids or tokenizer, no verb metrics.
  cfg.overlap_tokens = 50;
  const EvalResult head = evaluate_sae(*sae, reader, cfg, 64, nullptr);
  EXPECT_EQ(head.scalars.at("overlap_tokens"), 50.0);
  EXPECT_EQ(head.scalars.at("activation_similarity"), r.scalars.at("activation_similarity"));  // still every token
  EXPECT_EQ(head.scalars.count("specialization_tokens"), 0u);
  EXPECT_EQ(head.vectors.count("specialization_cdf"), 0u);
  // A different seed regroups the latents at random: still a fraction in [0, 1].
  cfg.inter_expert_seed = 7;
  const EvalResult other = evaluate_sae(*sae, reader, cfg, 64, nullptr);
  EXPECT_EQ(other.scalars.at("inter_expert_redundancy"), expert_similarity(w_dec, 8, 0.9, 7).inter);
}

TEST(EvaluateSae, TopKModelHasNoExpertMetrics) {
  TempDir dir;
  auto file = std::make_shared<const ActivationFile>(write_acts(dir));
  auto be = make_cpu_backend(1);
  auto sae = make_sae(moesae::testing::small_config(Arch::TopK, int(kD), 16, 1, 1, 3), *be);
  Rng rng(2);
  sae->init(rng);
  const FakeTokenizer tok;
  EvalReader reader(file, {kEval0, kRows});
  const EvalResult r = evaluate_sae(*sae, reader, EvalConfig{}, 64, nullptr, EvalTokens{file.get(), &tok});
  EXPECT_EQ(r.scalars.count("inter_expert_redundancy"), 0u);
  EXPECT_EQ(r.scalars.count("omega_min"), 0u);
  EXPECT_EQ(r.vectors.count("specialization_cdf"), 0u);   // one expert: nothing to specialize
  EXPECT_EQ(r.scalars.at("specialization_tokens"), double(expected_verbs()));
  EXPECT_TRUE(r.scalars.count("activation_similarity_verbs"));
  EXPECT_LE(r.scalars.at("activation_similarity"), 1.0);
}

TEST(EvalConfigKeys, ParsedAndWrittenOnlyWhenNotDefault) {
  const RunConfig def = parse_run_config_text("model: {dict_size: 64, k: 4}\n", {}, "t");
  EXPECT_EQ(def.eval.inter_expert_seed, 0);
  EXPECT_EQ(def.eval.overlap_tokens, 20000);
  const std::string yaml = to_yaml(def);
  EXPECT_EQ(yaml.find("inter_expert_seed"), std::string::npos);  // the resolved YAML of existing runs is unchanged
  EXPECT_EQ(yaml.find("overlap_tokens"), std::string::npos);
  const RunConfig set =
      parse_run_config_text("model: {dict_size: 64, k: 4}\neval: {inter_expert_seed: 3, overlap_tokens: 0}\n", {}, "t");
  EXPECT_EQ(set.eval.inter_expert_seed, 3);
  EXPECT_EQ(set.eval.overlap_tokens, 0);
  const RunConfig again = parse_run_config_text(to_yaml(set), {}, "t");  // round trip
  EXPECT_EQ(again.eval.inter_expert_seed, 3);
  EXPECT_EQ(again.eval.overlap_tokens, 0);
  const std::string msg = moesae::testing::error_of(
      [] { parse_run_config_text("model: {dict_size: 64, k: 4}\neval: {overlap_tokens: -1}\n", {}, "t"); });
  EXPECT_NE(msg.find("eval.overlap_tokens"), std::string::npos) << msg;
}
