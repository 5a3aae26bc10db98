// MaxAct (eval/maxact.h, `moesae maxact`): bounded top-N per latent, ties, context windows clipped to the model
// context, decoded pieces, the JSON document, errors.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>

#include "data/activation_file.h"
#include "error_of.h"
#include "eval/maxact.h"
#include "lm_test_data.h"
#include "run/config.h"
#include "run/record.h"
#include "sae/sae.h"
#include "temp_dir.h"

using namespace moesae;
using moesae::testing::error_of;
using moesae::testing::TempDir;

namespace {

// A code of B rows and k slots from {id, value} pairs per row.
std::pair<Tensor, Tensor> code(const std::vector<std::vector<std::pair<int32_t, float>>>& rows, int64_t k) {
  Tensor ids = host_tensor(int64_t(rows.size()), k, DType::I32), vals = host_tensor(int64_t(rows.size()), k);
  for (size_t r = 0; r < rows.size(); ++r)
    for (int64_t j = 0; j < k; ++j) {
      const bool has = size_t(j) < rows[r].size();
      ids.host<int32_t>()[r * k + j] = has ? rows[r][size_t(j)].first : -1;
      vals.host<float>()[r * k + j] = has ? rows[r][size_t(j)].second : 0.f;
    }
  return {ids, vals};
}

// Pieces by id: 0 is BOS.
class FakeTokenizer final : public lm::Tokenizer {
 public:
  explicit FakeTokenizer(std::vector<std::string> pieces) : pieces_(std::move(pieces)) {}
  int vocab_size() const override { return int(pieces_.size()); }
  int bos_id() const override { return 0; }
  std::vector<int> encode(const std::string&, bool) const override { return {}; }
  std::string decode_piece(int, int token) const override { return pieces_.at(size_t(token)); }

 private:
  std::vector<std::string> pieces_;
};

// 12 rows (d = 2) in two contexts of 6 positions; token id of row r = r % 5 + 1.
std::string write_acts(const TempDir& dir, bool tokens) {
  const std::string path = dir.file(tokens ? "acts.h5" : "plain.h5");
  ActivationWriter::Options opt;
  opt.d = 2;
  opt.token_ids = tokens;
  opt.positions = tokens;
  ActivationWriter w(path, opt);
  Tensor x = host_tensor(12, 2), ids = host_vector(12, DType::I32), pos = host_vector(12, DType::I32);
  for (int r = 0; r < 12; ++r) {
    x.host<float>()[2 * r] = float(r);
    x.host<float>()[2 * r + 1] = 1.f;
    ids.host<int32_t>()[r] = r % 5 + 1;
    pos.host<int32_t>()[r] = r % 6;
  }
  if (tokens)
    w.append(x, ids, pos);
  else
    w.append(x);
  w.commit();
  return path;
}

}  // namespace

TEST(MaxAct, KeepsTheTopNPerLatentWithTiesToTheSmallerRow) {
  MaxActCollector c(4, 2);
  auto [i1, v1] = code({{{0, 1.f}, {1, 5.f}}, {{0, 3.f}, {2, 0.f}}, {{0, 3.f}, {1, -1.f}}}, 3);
  c.add(i1, v1, 100);
  auto [i2, v2] = code({{{0, 2.f}}, {{0, 3.f}, {3, 0.5f}}}, 2);
  c.add(i2, v2, 200);
  EXPECT_EQ(c.rows_seen(), 5);
  const auto b0 = c.best(0);
  ASSERT_EQ(b0.size(), 2u);  // values 1, 3, 3, 2, 3 at rows 100, 101, 102, 200, 201: the 3s at the smallest rows
  EXPECT_EQ(b0[0].row, 101);
  EXPECT_EQ(b0[1].row, 102);
  EXPECT_EQ(b0[0].value, 3.f);
  EXPECT_EQ(c.fire_count(0), 5);
  ASSERT_EQ(c.best(1).size(), 1u);  // the negative value does not count
  EXPECT_EQ(c.best(1)[0].row, 100);
  EXPECT_TRUE(c.best(2).empty());  // zero: not active
  EXPECT_EQ(c.fire_count(2), 0);
  EXPECT_EQ(c.best(3)[0].value, 0.5f);

  // Only the listed latents are tracked, in the order given; the kept set does not depend on the batch split.
  MaxActCollector some(4, 3, {3, 0});
  auto [i3, v3] = code({{{0, 1.f}, {1, 5.f}}, {{0, 3.f}, {2, 0.f}}, {{0, 3.f}, {1, -1.f}}, {{0, 2.f}}, {{0, 3.f}, {3, 0.5f}}},
                       2);
  some.add(i3, v3, 0);
  EXPECT_EQ(some.latents(), (std::vector<int64_t>{3, 0}));
  ASSERT_EQ(some.best(1).size(), 3u);
  EXPECT_EQ(some.best(1)[2].row, 4);  // 3, 3, 3 at rows 1, 2, 4
}

TEST(MaxAct, Errors) {
  EXPECT_EQ(error_of([] { MaxActCollector(4, 0); }), "maxact: --top must be at least 1 (got 0)");
  EXPECT_EQ(error_of([] { MaxActCollector(4, 2, {1, 4}); }), "maxact: latent 4 is outside [0, 4)");
  EXPECT_EQ(error_of([] { MaxActCollector(4, 2, {1, 1}); }), "maxact: latent 1 is listed twice");
  MaxActCollector c(4, 2);
  auto [ids, vals] = code({{{7, 1.f}}}, 1);
  EXPECT_EQ(error_of([&] { c.add(ids, vals, 10); }), "maxact: latent id 7 of row 10 is outside [-1, 4)");
}

TEST(MaxAct, JsonContextsStayInsideTheirModelContext) {
  TempDir dir;
  const ActivationFile file(write_acts(dir, true));
  MaxActCollector c(4, 2, {1});
  // Latent 1 fires most on rows 3 (position 3 of context 0) and 6 (position 0 of context 1).
  auto [ids, vals] = code({{}, {}, {}, {{1, 9.f}}, {}, {}, {{1, 8.f}}, {}, {}, {}, {}, {{1, 1.f}}}, 1);
  c.add(ids, vals, 0);
  const FakeTokenizer tok({"<s>", " a", " b", "c", " d", "."});
  const nlohmann::json j = maxact_latents_json(c, file, &tok, {2, 4}, 2);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0]["latent"], 1);
  EXPECT_EQ(j[0]["expert"], 0);
  EXPECT_EQ(j[0]["fired"], 3);
  EXPECT_EQ(j[0]["max_activation"], 9.0);
  const auto& ex = j[0]["examples"];
  ASSERT_EQ(ex.size(), 2u);
  // Row 3: two tokens before (rows 1, 2), and after it only rows 4, 5: row 6 starts the next context.
  EXPECT_EQ(ex[0]["row"], 3);
  EXPECT_EQ(ex[0]["activation"], 9.0);
  EXPECT_EQ(ex[0]["position"], 3);
  EXPECT_EQ(ex[0]["token_id"], 4);
  EXPECT_EQ(ex[0]["token"], " d");
  EXPECT_EQ(ex[0]["context"]["start_row"], 1);
  EXPECT_EQ(ex[0]["context"]["index"], 2);
  EXPECT_EQ(ex[0]["context"]["token_ids"], (std::vector<int>{2, 3, 4, 5, 1}));
  EXPECT_EQ(ex[0]["context"]["text"], " bc d. a");
  // Row 6 is position 0: nothing before it.
  EXPECT_EQ(ex[1]["row"], 6);
  EXPECT_EQ(ex[1]["context"]["start_row"], 6);
  EXPECT_EQ(ex[1]["context"]["index"], 0);
  EXPECT_EQ(ex[1]["context"]["token_ids"], (std::vector<int>{2, 3, 4, 5, 1}));
  // Without a tokenizer: ids only; without token ids in the file: rows and activations only.
  const nlohmann::json no_tok = maxact_latents_json(c, file, nullptr, {2, 4}, 2);
  EXPECT_FALSE(no_tok[0]["examples"][0].contains("token"));
  EXPECT_TRUE(no_tok[0]["examples"][0]["context"].contains("token_ids"));
  const ActivationFile plain(write_acts(dir, false));
  const nlohmann::json bare = maxact_latents_json(c, plain, &tok, {2, 4}, 2);
  EXPECT_EQ(bare[0]["examples"][0], (nlohmann::json{{"row", 3}, {"activation", 9.0}}));
}

TEST(MaxAct, CommandWritesTheDocumentedJson) {
  TempDir dir;
  const std::string acts = write_acts(dir, true);
  // A record of an untrained Scale SAE (d = 2, F = 8, E = 4, k = 2) on that file.
  const RunConfig cfg = parse_run_config_text(
      "data: {path: '" + acts + "', eval_tokens: 6}\nmodel: {arch: scale, dict_size: 8, experts: 4, active_experts: 2, "
      "k: 2}\ntrain: {batch_size: 4}\n", {}, "maxact-test");
  RunConfig resolved = cfg;
  resolved.model.d = 2;
  auto be = make_cpu_backend(1);
  auto sae = make_sae(resolved.model, *be);
  Rng rng(1);
  sae->init(rng);
  RunRecord rec;
  rec.arch = "scale";
  rec.config_yaml = to_yaml(resolved);
  for (Param* p : sae->params().all()) rec.weights[p->name] = be->to_host(p->value);
  rec.save(dir.file("run.h5"));

  const std::string cli = MOESAE_CLI, out = dir.file("latents.json");
  ASSERT_EQ(std::system((cli + " maxact '" + dir.file("run.h5") + "' --top 3 --latents 0-2,7 --no-lm --out '" + out +
                         "' 2>/dev/null")
                            .c_str()),
            0);
  nlohmann::json j;
  std::ifstream(out) >> j;
  EXPECT_EQ(j["format"], "moesae-maxact");
  EXPECT_EQ(j["format_version"], 1);
  EXPECT_EQ(j["split"], "eval");
  EXPECT_EQ(j["rows"], (std::vector<int64_t>{6, 12}));  // the held-out split: the last 6 rows
  EXPECT_EQ(j["dict_size"], 8);
  EXPECT_EQ(j["latents_per_expert"], 2);
  EXPECT_TRUE(j["tokenizer"].is_null());
  ASSERT_EQ(j["latents"].size(), 4u);
  EXPECT_EQ(j["latents"][3]["latent"], 7);
  EXPECT_EQ(j["latents"][3]["expert"], 3);
  int64_t fired = 0;
  for (const auto& l : j["latents"]) {
    EXPECT_LE(l["examples"].size(), 3u);
    fired += l["fired"].get<int64_t>();
    double last = 1e30;
    for (const auto& e : l["examples"]) {
      EXPECT_GE(e["row"].get<int64_t>(), 6);
      EXPECT_LE(e["activation"].get<double>(), last);  // descending
      last = e["activation"].get<double>();
      EXPECT_TRUE(e["context"].contains("token_ids"));
    }
  }
  EXPECT_GT(fired, 0);
  // --split all scans every row; bad options give one error line and a non-zero status.
  ASSERT_EQ(std::system((cli + " maxact '" + dir.file("run.h5") + "' --split all --out '" + out + "' 2>/dev/null").c_str()), 0);
  std::ifstream(out) >> j;
  EXPECT_EQ(j["rows"], (std::vector<int64_t>{0, 12}));
  EXPECT_EQ(j["latents"].size(), 8u);
  const std::string err = dir.file("err.txt");
  EXPECT_NE(std::system((cli + " maxact '" + dir.file("run.h5") + "' --latents 5-2 --out '" + out + "' 2>'" + err + "'").c_str()), 0);
  EXPECT_EQ(moesae::testing::read_all(err), "error: --latents: range '5-2' is empty\n");
  EXPECT_NE(std::system((cli + " maxact '" + dir.file("run.h5") + "' --latents 9 --out '" + out + "' 2>'" + err + "'").c_str()), 0);
  EXPECT_EQ(moesae::testing::read_all(err), "error: maxact: latent 9 is outside [0, 8)\n");
}
