// The SAE spliced into the language model (eval/loss_recovered): an identity SAE leaves the loss unchanged, zeroing
// raises it, Loss Recovered follows its definition, and the `lm:` section of a run drives the whole evaluation.
// Needs the shared data (stories260K, TinyStories, PubMedQA); skips without it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "error_of.h"
#include "eval/loss_recovered.h"
#include "lm/cross_entropy.h"
#include "lm/data_path.h"
#include "lm/documents.h"
#include "lm/llama.h"
#include "lm/llama_tokenizer.h"
#include "lm_test_data.h"
#include "run/config.h"
#include "run/experiment.h"
#include "run/lm_extract.h"
#include "run/record.h"
#include "run/train_run.h"
#include "temp_dir.h"

using namespace moesae;
using moesae::testing::error_of;
using moesae::testing::read_all;
using moesae::testing::TempDir;

namespace {

constexpr int kLayer = 2;
constexpr int kCtx = 64;
constexpr long long kTokens = 1500;

Param& param(Sae& sae, const std::string& name) {
  for (Param* p : sae.params().all())
    if (p->name == name) return *p;
  throw std::runtime_error("no parameter " + name);
}

// A TopK SAE with F = 2d, W_enc = W_dec = [I; -I], zero biases and k = d: z = (relu(x), relu(-x)) and
// x^ = relu(x) - relu(-x) = x exactly.
std::unique_ptr<Sae> identity_sae(Backend& be, int d) {
  ModelConfig m;
  m.arch = Arch::TopK;
  m.d = d;
  m.dict_size = 2 * d;
  m.k = d;
  auto sae = make_sae(m, be);
  for (Param* p : sae->params().all()) {
    Tensor h = be.to_host(p->value);
    std::fill(h.data<float>(), h.data<float>() + h.numel(), 0.f);
    if (p->name == "W_enc" || p->name == "W_dec")
      for (int j = 0; j < d; ++j) {
        h.data<float>()[j * h.ld() + j] = 1.f;
        h.data<float>()[(d + j) * h.ld() + j] = -1.f;
      }
    be.upload(h, p->value);
  }
  return sae;
}

std::vector<std::string> first_documents(const std::string& text, size_t n) {
  auto docs = lm::split_documents(read_all(text));
  docs.resize(std::min(n, docs.size()));
  return docs;
}

}  // namespace

TEST(LmSplice, IdentitySaeLeavesTheLossUnchangedAndZeroingRaisesIt) {
  REQUIRE_DATA(f);
  const lm::LlamaModel m = lm::LlamaModel::load(f.model);
  const lm::LlamaTokenizer tok = lm::LlamaTokenizer::load(f.tokenizer, m.config().vocab_size);
  const auto docs = first_documents(f.text, 40);
  auto be = make_cpu_backend(1);
  auto sae = identity_sae(*be, m.config().dim);
  const SpliceResult r = splice_sae(m, tok, docs, *sae, SpliceOptions{kLayer, kCtx, kTokens});
  EXPECT_EQ(r.predicted, kTokens);
  EXPECT_NEAR(r.ce_sae, r.ce_clean, 1e-9);
  EXPECT_NEAR(r.ce_sae_keep_pos0, r.ce_clean, 1e-9);
  EXPECT_GT(r.ce_zero, r.ce_clean + 1.0);
  EXPECT_NEAR(r.loss_recovered, 1.0, 1e-9);
  EXPECT_NEAR(r.delta_ce, 0.0, 1e-9);
  EXPECT_NEAR(r.fvu, 0.0, 1e-12);
  EXPECT_NEAR(r.mse, 0.0, 1e-12);
  EXPECT_GT(r.l0, 1.0);
  // The clean CE is exactly lm::cross_entropy's on the same budget.
  EXPECT_DOUBLE_EQ(r.ce_clean, lm::cross_entropy(m, tok, docs, kCtx, kTokens).mean_ce);
}

TEST(LmSplice, UntrainedSaeLosesLossAndPositionZeroIsReportedApart) {
  REQUIRE_DATA(f);
  const lm::LlamaModel m = lm::LlamaModel::load(f.model);
  const lm::LlamaTokenizer tok = lm::LlamaTokenizer::load(f.tokenizer, m.config().vocab_size);
  const auto docs = first_documents(f.text, 40);
  auto be = make_cpu_backend(1);
  ModelConfig mc;
  mc.arch = Arch::TopK;
  mc.d = m.config().dim;
  mc.dict_size = 128;
  mc.k = 4;
  auto sae = make_sae(mc, *be);
  Rng rng(3);
  sae->init(rng);
  const SpliceResult r = splice_sae(m, tok, docs, *sae, SpliceOptions{kLayer, kCtx, kTokens});
  EXPECT_GT(r.ce_sae, r.ce_clean);
  EXPECT_LT(r.loss_recovered, 1.0);
  EXPECT_NEAR(r.loss_recovered, (r.ce_zero - r.ce_sae) / (r.ce_zero - r.ce_clean), 1e-12);
  EXPECT_NEAR(r.delta_ce, r.ce_sae - r.ce_clean, 1e-12);
  // Keeping position 0 clean is a different intervention: the CE changes.
  EXPECT_NE(r.ce_sae_keep_pos0, r.ce_sae);
  EXPECT_GT(r.fvu, 0.0);
  EXPECT_GT(r.fvu_no_pos0, 0.0);
  EXPECT_NE(r.fvu_no_pos0, r.fvu);
  EXPECT_NEAR(r.l0, 4.0, 1e-9);

  // Bad inputs: one message each.
  EXPECT_NE(error_of([&] { splice_sae(m, tok, docs, *sae, SpliceOptions{7, kCtx, kTokens}); }).find("layer 7"),
            std::string::npos);
  mc.d = 32;
  auto narrow = make_sae(mc, *be);
  EXPECT_NE(error_of([&] { splice_sae(m, tok, docs, *narrow, SpliceOptions{kLayer, kCtx, kTokens}); })
                .find("the SAE has d=32"),
            std::string::npos);
  EXPECT_NE(error_of([] { loss_recovered_from(2.0, 2.5, 1.5); }).find("does not raise the loss"), std::string::npos);
}

TEST(LmSplice, RunWithLmSectionRecordsLossRecoveredInAndOutOfDomain) {
  REQUIRE_DATA(f);
  TempDir tmp;
  ExtractSpec spec;
  spec.model = f.model;
  spec.tokenizer = f.tokenizer;
  spec.text = f.text;
  spec.layer = kLayer;
  spec.ctx = kCtx;
  spec.max_tokens = 6000;
  const std::string acts = tmp.file("acts.h5");
  const LmExtractResult ex = extract_activations(spec, acts);
  EXPECT_TRUE(extracted_file_matches(acts, spec));
  ExtractSpec other = spec;
  other.layer = 1;
  EXPECT_FALSE(extracted_file_matches(acts, other));
  ActivationFile af(acts);
  ASSERT_TRUE(af.has_positions());
  EXPECT_EQ(af.attribute("documents"), std::to_string(ex.documents));
  EXPECT_EQ(af.attribute("text"), "tinystories_val.txt");

  const std::string yaml = "data: {path: '" + acts +
                           "', eval_tokens: 1000}\n"
                           "model: {arch: topk, dict_size: 128, k: 8}\n"
                           "train: {steps: 60, batch_size: 256, log_every: 30, threads: 1, seed: 1}\n"
                           "lm: {model: stories260K/stories260K.bin, ctx: 64, max_tokens: 800, "
                           "ood_text: text/pubmedqa_pqal.json, ood_format: pubmedqa}\n";
  const RunConfig cfg = parse_run_config_text(yaml, {}, "lm-splice-test");
  EXPECT_EQ(cfg.lm.layer, -1);
  const TrainRunResult tr = train_run(cfg, TrainRunOptions{tmp.file("run.h5"), -1, false});
  ASSERT_TRUE(tr.finished);
  const auto& s = RunRecord::load(tmp.file("run.h5"), false).final_scalars;
  for (const char* key : {"loss_recovered", "loss_recovered_keep_pos0", "delta_ce", "ce_clean", "ce_sae", "ce_zero",
                          "loss_recovered_ood", "fvu_ood", "mse_ood", "mse_ood_no_pos0", "l0_ood", "mse_no_pos0",
                          "fvu_no_pos0"})
    EXPECT_TRUE(s.count(key)) << key;
  EXPECT_EQ(s.at("lm_layer"), kLayer);                             // from the activation file's layer
  EXPECT_EQ(s.at("lm_skipped_documents"), double(ex.documents));  // the training documents are held out
  EXPECT_EQ(s.at("lm_tokens"), 800);
  EXPECT_GT(s.at("loss_recovered"), 0.0);
  EXPECT_LT(s.at("loss_recovered"), 1.0);
  EXPECT_GT(s.at("ce_clean_ood"), s.at("ce_clean"));  // biomedical text is out of the LM's domain

  // A missing LM file fails before training, and nothing is written.
  const RunConfig bad = parse_run_config_text(yaml, {"lm.model=nowhere/model.bin"}, "lm-splice-test");
  const std::string msg = error_of([&] { train_run(bad, TrainRunOptions{tmp.file("bad.h5"), -1, false}); });
  EXPECT_NE(msg.find("nowhere/model.bin"), std::string::npos) << msg;
  EXPECT_FALSE(std::filesystem::exists(tmp.file("bad.h5")));
  EXPECT_FALSE(std::filesystem::exists(tmp.file("bad.h5.ckpt.h5")));
  EXPECT_NE(error_of([&] { parse_run_config_text(yaml, {"lm.ood_format=csv"}, "t"); }).find("lm.ood_format 'csv'"),
            std::string::npos);

  // The CLI: lm loss with the SAE spliced in, and eval with an LM.
  const std::string cli = std::string(MOESAE_CLI);
  const std::string out = tmp.file("loss.txt");
  ASSERT_EQ(std::system((cli + " lm loss --ctx 64 --max-tokens 500 --sae '" + tmp.file("run.h5") + "' > '" + out +
                         "' 2>/dev/null")
                            .c_str()),
            0);
  const std::string text = read_all(out);
  EXPECT_NE(text.find("loss_recovered "), std::string::npos) << text;
  EXPECT_NE(text.find("ce_zero "), std::string::npos) << text;
  EXPECT_NE(std::system((cli + " lm loss --mode splice 2>/dev/null").c_str()), 0);
  ASSERT_EQ(std::system((cli + " eval '" + tmp.file("run.h5") + "' --no-lm --json > '" + out + "' 2>/dev/null").c_str()),
            0);
  EXPECT_EQ(read_all(out).find("loss_recovered"), std::string::npos);
  ASSERT_EQ(std::system((cli + " eval '" + tmp.file("run.h5") + "' --set \"lm.ood_text=''\" --set lm.max_tokens=300 > '" +
                         out + "' 2>/dev/null")
                            .c_str()),
            0);
  EXPECT_NE(read_all(out).find("loss_recovered"), std::string::npos);
  EXPECT_EQ(read_all(out).find("loss_recovered_ood"), std::string::npos);
}

TEST(LmSplice, ExperimentExtractsOnceTrainsAndReportsLossRecovered) {
  REQUIRE_DATA(f);
  TempDir tmp;
  const std::string path = tmp.file("exp.yaml");
  auto write = [&](int layer) {
    std::ofstream(path) << "name: lmexp\nout: '" << tmp.file("out") << "'\n"
                        << "extract: {model: '" << f.model << "', text: '" << f.text << "', layer: " << layer
                        << ", ctx: 64, max_tokens: 3000}\n"
                        << "base:\n  data: {eval_tokens: 500}\n  train: {steps: 20, batch_size: 128, threads: 1}\n"
                        << "  lm: {model: '" << f.model << "', ctx: 64, max_tokens: 200}\n"
                        << "runs:\n  - {name: topk, model: {arch: topk, dict_size: 64, k: 4}}\n";
  };
  write(2);
  Experiment e = load_experiment(path);
  ASSERT_EQ(run_experiment(e, {}), 0);
  const std::string acts = tmp.file("out") + "/acts.h5";
  EXPECT_EQ(ActivationFile(acts).meta().layer, "2");
  const std::string table = comparison_table(e);
  EXPECT_NE(table.find("LossRec"), std::string::npos) << table;
  EXPECT_EQ(table.find("recovered "), std::string::npos) << table;  // no ground truth on real data
  const auto t0 = std::filesystem::last_write_time(acts);
  ASSERT_EQ(run_experiment(e, {}), 0);  // finished: neither extracted nor trained again
  EXPECT_EQ(std::filesystem::last_write_time(acts), t0);
  write(1);  // other extraction settings: extract again, retrain
  e = load_experiment(path);
  ASSERT_EQ(run_experiment(e, {}), 0);
  EXPECT_EQ(ActivationFile(acts).meta().layer, "1");
  EXPECT_EQ(RunRecord::load(tmp.file("out") + "/topk.h5", false).final_scalars.at("lm_layer"), 1);

  std::ofstream(path) << "extract: {layer: 1}\nsynthetic: {d: 8}\nruns: [{name: a}]\n";
  EXPECT_NE(error_of([&] { load_experiment(path); }).find("either 'synthetic' or 'extract'"), std::string::npos);
  std::ofstream(path) << "extract: {ctx: 64}\nruns: [{name: a}]\n";
  EXPECT_NE(error_of([&] { load_experiment(path); }).find("extract needs 'layer'"), std::string::npos);
}
