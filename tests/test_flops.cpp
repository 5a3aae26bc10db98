// FLOPs accounting (run/flops.h) against hand counts for small shapes, parameter counts against built models, and
// the memory estimate's formula. The hand counts follow docs/grids.md ("FLOPs accounting") term by term.
#include <gtest/gtest.h>

#include "backend/backend.h"
#include "run/flops.h"
#include "sae/sae.h"
#include "sae_test_util.h"

using namespace moesae;

namespace {

// The shared small shape, without Feature Scaling unless a test sets it.
ModelConfig model(Arch arch, int d, int F, int E, int e, int k) {
  ModelConfig m = moesae::testing::small_config(arch, d, F, E, e, k);
  m.feature_scaling = FeatureScaling::None;
  return m;
}

}  // namespace

// TopK, d = 4, F = 8, k = 2, B = 2, no AuxK.
TEST(Flops, TopKHandCount) {
  ModelConfig m = model(Arch::TopK, 4, 8, 1, 1, 2);
  m.auxk = false;
  const FlopsBreakdown f = flops_per_token(m, 2);
  EXPECT_EQ(f.term("encoder", "forward"), 64);    // 2 d F = 2*4*8
  EXPECT_EQ(f.term("select", "forward"), 8);      // F candidates ranked
  EXPECT_EQ(f.term("decode", "forward"), 16);     // 2 k d
  EXPECT_EQ(f.term("decode", "backward"), 32);    // dcoef + W_dec rows: 4 k d
  EXPECT_EQ(f.term("encoder", "backward"), 32);   // W_enc rows + du: 4 k d
  // P = W_enc 32 + W_dec 32 + b_pre 4 = 68; optimizer 16 P / B = 544; decoder constraint 7 F d / B = 112.
  EXPECT_EQ(parameter_count(m), 68);
  EXPECT_EQ(f.term("optimizer", "step"), 544);
  EXPECT_EQ(f.term("decoder_constraint", "step"), 112);
  EXPECT_EQ(f.forward(), 88);
  EXPECT_EQ(f.backward(), 64);
  EXPECT_EQ(f.train(), 808);
  EXPECT_EQ(f.get(FlopsMeasure::Encoder), 64);
  EXPECT_EQ(f.get(FlopsMeasure::Forward), 88);
  EXPECT_EQ(f.terms.size(), 7u);
}

// AuxK (k_aux = d/2 = 2): Top-k_aux over F plus a k_aux decode forward (training only), 8 k_aux d backward.
TEST(Flops, TopKWithAuxK) {
  ModelConfig m = model(Arch::TopK, 4, 8, 1, 1, 2);
  const FlopsBreakdown f = flops_per_token(m, 2);
  EXPECT_EQ(f.term("auxk", "forward"), 8 + 16);
  EXPECT_EQ(f.term("auxk", "backward"), 64);
  EXPECT_EQ(f.train(), 808 + 24 + 64);
  EXPECT_EQ(f.get(FlopsMeasure::Forward), 88);  // AuxK is not part of a forward pass
  m.auxk_alpha = 0;                             // off: nothing
  EXPECT_EQ(flops_per_token(m, 2).train(), 808);
}

// Gated, d = 4, F = 8, B = 2: dense in both directions.
TEST(Flops, GatedHandCount) {
  const ModelConfig m = model(Arch::Gated, 4, 8, 1, 1, 2);
  const FlopsBreakdown f = flops_per_token(m, 2);
  EXPECT_EQ(f.term("encoder", "forward"), 64);      // W_gate u, shared by both paths
  EXPECT_EQ(f.term("decode", "forward"), 64);       // f W_dec
  EXPECT_EQ(f.term("aux_decode", "forward"), 64);   // ReLU(pi_gate) W_dec (frozen decoder)
  EXPECT_EQ(f.term("decode", "backward"), 128);     // W_dec gradient + dpi_mag
  EXPECT_EQ(f.term("aux_decode", "backward"), 64);  // dgate = dfrozen W_dec^T
  EXPECT_EQ(f.term("encoder", "backward"), 128);    // W_gate gradient + du
  EXPECT_EQ(parameter_count(m), 92);                // 2*32 + 3*8 + 4
  EXPECT_EQ(f.step(), 16 * 92 / 2 + 112);
  EXPECT_EQ(f.train(), 192 + 320 + 848);
}

// Switch, d = 4, F = 16, E = 4 (n = 4), k = 2, B = 2.
TEST(Flops, SwitchHandCount) {
  const ModelConfig m = model(Arch::Switch, 4, 16, 4, 1, 2);
  const FlopsBreakdown f = flops_per_token(m, 2);
  EXPECT_EQ(f.term("router", "forward"), 36);     // 2 d E + E
  EXPECT_EQ(f.term("encoder", "forward"), 32);    // 2 d n: one expert
  EXPECT_EQ(f.term("select", "forward"), 4);      // n candidates
  EXPECT_EQ(f.term("decode", "forward"), 16);
  EXPECT_EQ(f.term("router", "backward"), 64);    // dW_r + du_r: 4 d E
  EXPECT_EQ(f.backward(), 32 + 32 + 64);
  EXPECT_EQ(parameter_count(m), 152);             // W_enc 64 + W_dec 64 + b_pre 4 + W_r 16 + b_r 4
  EXPECT_EQ(f.train(), 88 + 128 + 16 * 152 / 2 + 7 * 16 * 4 / 2);
  EXPECT_EQ(f.get(FlopsMeasure::Encoder), 32);
}

// Scale with Feature Scaling (mean), d = 4, F = 16, E = 4, e = 2 (c = 8 candidates), k = 2, B = 2.
TEST(Flops, ScaleMeanHandCount) {
  ModelConfig m = model(Arch::Scale, 4, 16, 4, 2, 2);
  m.feature_scaling = FeatureScaling::Mean;
  const FlopsBreakdown f = flops_per_token(m, 2);
  EXPECT_EQ(f.term("encoder", "forward"), 64);  // 2 d e n
  EXPECT_EQ(f.term("select", "forward"), 8);    // e n candidates
  // 2 d e (s = u . a_i per routed pair) + 2 e n (rank-1 update) + F d / B (the E mean rows, per step)
  EXPECT_EQ(f.term("feature_scaling", "forward"), 16 + 16 + 32);
  // 2 k d (W_j . u) + 6 d E (u . a_i for all E, G^T U, G L) + F d / B (mean gradient to every row)
  EXPECT_EQ(f.term("feature_scaling", "backward"), 16 + 96 + 32);
  EXPECT_EQ(parameter_count(m), 156);  // switch's 152 + omega [E]
  EXPECT_EQ(f.forward(), 36 + 64 + 8 + 16 + 64);
  EXPECT_EQ(f.backward(), 32 + 32 + 64 + 144);
  EXPECT_EQ(f.train(), 188 + 272 + 16 * 156 / 2 + 112 * 2);
  EXPECT_EQ(f.get(FlopsMeasure::Encoder), 64);

  m.select_on = SelectOn::Weighted;  // the candidates are scaled by w_i before ranking
  EXPECT_EQ(flops_per_token(m, 2).term("select", "forward"), 16);
}

TEST(Flops, ScaleLowPassVariants) {
  ModelConfig m = model(Arch::Scale, 4, 16, 4, 2, 2);
  m.feature_scaling = FeatureScaling::Reference;  // a_i = A mean_i: E x d x d GEMMs per step
  FlopsBreakdown f = flops_per_token(m, 2);
  EXPECT_EQ(f.term("feature_scaling", "forward"), 64 + 2 * 4 * 16 / 2);
  EXPECT_EQ(f.term("feature_scaling", "backward"), 144 + 4 * 4 * 16 / 2);
  EXPECT_EQ(parameter_count(m), 156 + 16);  // + A [d, d]

  m.feature_scaling = FeatureScaling::Identity;  // subtract w_i times min(n, d) columns per routed pair
  f = flops_per_token(m, 2);
  EXPECT_EQ(f.term("feature_scaling", "forward"), 2 * 2 * 4);
  EXPECT_EQ(f.term("feature_scaling", "backward"), 16 + 4);
  EXPECT_EQ(parameter_count(m), 156);

  m.feature_scaling = FeatureScaling::Learned;  // a second encoder-sized GEMM
  f = flops_per_token(m, 2);
  EXPECT_EQ(f.term("feature_scaling", "forward"), 64);
  EXPECT_EQ(f.term("feature_scaling", "backward"), 64);
  EXPECT_EQ(parameter_count(m), 156 + 64);  // + A_LP [F, d]
}

// The paper's §3.1 setting: every FLOPS-matched model computes 768 encoder rows per token.
TEST(Flops, PaperEncoderWidthsMatch) {
  const double dense = flops_per_token(model(Arch::TopK, 768, 768, 1, 1, 32), 8192).get(FlopsMeasure::Encoder);
  for (auto [E, e] : {std::pair{256, 8}, {128, 4}, {64, 2}})
    EXPECT_EQ(flops_per_token(model(Arch::Scale, 768, 24576, E, e, 32), 8192).get(FlopsMeasure::Encoder), dense);
  EXPECT_EQ(flops_per_token(model(Arch::Switch, 768, 24576, 32, 1, 32), 8192).get(FlopsMeasure::Encoder), dense);
  EXPECT_EQ(flops_per_token(model(Arch::Gated, 768, 768, 1, 1, 32), 8192).get(FlopsMeasure::Encoder), dense);
}

// The formula agrees with the ParamSet of every built model.
TEST(Flops, ParameterCountMatchesBuiltModels) {
  auto be = make_cpu_backend(1);
  std::vector<ModelConfig> configs;
  configs.push_back(model(Arch::TopK, 8, 32, 1, 1, 4));
  configs.push_back(model(Arch::Gated, 8, 32, 1, 1, 4));
  configs.push_back(model(Arch::Switch, 8, 32, 4, 1, 4));
  for (FeatureScaling fs : {FeatureScaling::None, FeatureScaling::Mean, FeatureScaling::Identity,
                            FeatureScaling::Learned, FeatureScaling::Reference}) {
    ModelConfig m = model(Arch::Scale, 8, 32, 4, 2, 4);
    m.feature_scaling = fs;
    configs.push_back(m);
  }
  ModelConfig biased = model(Arch::Scale, 8, 32, 4, 2, 4);
  apply_compat_reference(biased);  // encoder and router biases
  configs.push_back(biased);
  ModelConfig topk_bias = model(Arch::TopK, 8, 32, 1, 1, 4);
  topk_bias.encoder_bias = true;
  configs.push_back(topk_bias);
  for (const ModelConfig& m : configs) {
    auto sae = make_sae(m, *be);
    int64_t trainable = 0, buffers = 0;
    for (Param* p : sae->params().trainable()) trainable += p->value.numel();
    for (Param* p : sae->params().buffers()) buffers += p->value.numel();
    EXPECT_EQ(parameter_count(m), trainable) << to_string(m.arch) << " " << to_string(m.feature_scaling);
    EXPECT_EQ(buffer_count(m), buffers) << to_string(m.arch);
  }
}

TEST(Flops, MemoryEstimate) {
  RunConfig c;
  c.model = model(Arch::TopK, 4, 8, 1, 1, 2);
  c.model.auxk = false;
  c.train.batch_size = 2;
  c.data.shuffle_buffer = 100;
  c.data.chunk_rows = 10;
  MemoryEstimate mem = memory_estimate(c, 0);
  EXPECT_EQ(mem.state, 16.0 * 68 + 4.0 * 8);             // value, grad, Adam m, v; dead-latent counters
  EXPECT_EQ(mem.activations, 4.0 * 2 * (8 + 8 * 4 + 3 * 2));  // F + 8 d + 3 k floats per token
  EXPECT_EQ(mem.data, 4.0 * 4 * (100 + 10));
  EXPECT_EQ(memory_estimate(c, 50).data, 4.0 * 4 * (50 + 10));  // the buffer never exceeds the training rows

  const RunCost cost = run_cost(c, 0, 0);  // no d known: model.d = 4 is used
  EXPECT_TRUE(cost.known);
  EXPECT_EQ(cost.total_flops, double(c.train.steps) * 2 * flops_per_token(c.model, 2).train());
  c.model.d = 0;
  EXPECT_FALSE(run_cost(c, 0, 0).known);
  EXPECT_TRUE(run_cost(c, 4, 0).known);
}

TEST(Flops, Formatting) {
  EXPECT_EQ(si_count(12), "12");
  EXPECT_EQ(si_count(1234), "1.23k");
  EXPECT_EQ(si_count(45600000), "45.6M");
  EXPECT_EQ(si_count(2.5e12), "2.50T");
  EXPECT_EQ(bytes_text(512), "512B");
  EXPECT_EQ(bytes_text(3 * 1024.0 * 1024 * 1024), "3.00GiB");
  EXPECT_EQ(parse_flops_measure("encoder"), FlopsMeasure::Encoder);
  EXPECT_THROW(parse_flops_measure("flops"), Error);
}
