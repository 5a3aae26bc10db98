// Tests for the synthetic ground-truth generator: determinism, independence from how generation is split,
// dictionary geometry, code statistics (active count, frequency ordering, group concentration), consistency of
// activations with codes, and the HDF5 round trip of activations and ground truth.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <map>

#include "core/h5.h"
#include "data/activation_file.h"
#include "data/synthetic.h"
#include "error_of.h"
#include "temp_dir.h"

using namespace moesae;
using moesae::testing::TempDir;
using moesae::testing::error_of;

namespace {

SynthConfig small_config() {
  SynthConfig c;
  c.tokens = 10000;
  c.d = 16;
  c.features = 128;
  c.groups = 8;
  c.active = 6;
  c.seed = 5;
  return c;
}

bool same(const Tensor& a, const Tensor& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data<float>(), b.data<float>(), a.numel() * sizeof(float)) == 0;
}

double dot(const float* a, const float* b, int64_t d) {
  double s = 0;
  for (int64_t i = 0; i < d; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

}  // namespace

TEST(Synthetic, DeterministicInTheSeedAndIndependentOfHowItIsSplit) {
  const SynthConfig c = small_config();
  const int64_t B = SyntheticGenerator::kBlockTokens;
  SyntheticGenerator g1(c), g2(c);
  EXPECT_TRUE(same(g1.dictionary(), g2.dictionary()));
  Tensor whole = host_tensor(3 * B, c.d), parts = host_tensor(3 * B, c.d);
  g1.generate(0, whole);
  g2.generate(0, parts.row_range(0, B));
  g2.generate(B, parts.row_range(B, 3 * B));
  EXPECT_TRUE(same(whole, parts));
  SynthConfig other = c;
  other.seed = 6;
  SyntheticGenerator g3(other);
  EXPECT_FALSE(same(g1.dictionary(), g3.dictionary()));
  Tensor x3 = host_tensor(3 * B, c.d);
  g3.generate(0, x3);
  EXPECT_FALSE(same(whole, x3));
  EXPECT_NE(error_of([&] { g1.generate(100, whole); }).find("must start at a multiple of 4096 tokens"),
            std::string::npos);
}

TEST(Synthetic, DictionaryIsUnitNormAndClusteredByGroup) {
  SynthConfig c = small_config();
  c.d = 64;
  c.cluster_tightness = 0.5;
  SyntheticGenerator g(c);
  const Tensor& D = g.dictionary();
  ASSERT_EQ(D.rows(), c.features);
  ASSERT_EQ(D.cols(), c.d);
  for (int64_t j = 0; j < c.features; ++j) {
    EXPECT_NEAR(dot(D.data<float>() + j * c.d, D.data<float>() + j * c.d, c.d), 1.0, 1e-5);
    EXPECT_EQ(g.groups()[j], j % c.groups);
  }
  double within = 0, between = 0;
  int64_t n_within = 0, n_between = 0;
  for (int64_t a = 0; a < c.features; ++a)
    for (int64_t b = a + 1; b < c.features; ++b) {
      const double cs = dot(D.data<float>() + a * c.d, D.data<float>() + b * c.d, c.d);
      (g.groups()[a] == g.groups()[b] ? within : between) += cs;
      ++(g.groups()[a] == g.groups()[b] ? n_within : n_between);
    }
  within /= n_within;
  between /= n_between;
  EXPECT_NEAR(within, 0.5, 0.12);  // t^2 / (t^2 + (1-t)^2) = 0.5 for t = 0.5
  EXPECT_NEAR(between, 0.0, 0.05);
  // Tightness 0: an unclustered random dictionary.
  c.cluster_tightness = 0;
  SyntheticGenerator flat(c);
  const Tensor& F = flat.dictionary();
  EXPECT_NEAR(dot(F.data<float>(), F.data<float>() + c.groups * c.d, c.d), 0.0, 0.45);
}

TEST(Synthetic, CodeStatisticsMatchTheConfig) {
  SynthConfig c = small_config();
  c.tokens = 40960;
  SyntheticGenerator g(c);
  Tensor x = host_tensor(c.tokens, c.d);
  SparseCodes codes;
  g.generate(0, x, &codes);
  ASSERT_EQ(codes.offsets.size(), static_cast<size_t>(c.tokens + 1));
  const double mean_active = static_cast<double>(codes.features.size()) / c.tokens;
  EXPECT_NEAR(mean_active, c.active, 0.03 * c.active);
  // Frequencies: analytic ones are non-increasing and sum to `active`; empirical ones follow them.
  const auto& p = g.frequencies();
  double sum_p = 0;
  for (size_t j = 0; j < p.size(); ++j) {
    sum_p += p[j];
    if (j) EXPECT_LE(p[j], p[j - 1] + 1e-15);
  }
  EXPECT_NEAR(sum_p, c.active, 1e-6);
  std::vector<double> count(c.features, 0);
  double magnitude_sum = 0;
  for (size_t i = 0; i < codes.features.size(); ++i) {
    ++count[codes.features[i]];
    EXPECT_GT(codes.values[i], 0.0f);
    magnitude_sum += codes.values[i];
  }
  EXPECT_NEAR(magnitude_sum / codes.values.size(), 1.0, 0.02);  // lognormal with mean 1
  for (int j : {0, 1, 5, 20, 100})
    EXPECT_NEAR(count[j] / c.tokens, p[j], 4 * std::sqrt(p[j] / c.tokens) + 1e-3) << "feature " << j;
  double head = 0, tail = 0;
  for (int j = 0; j < 16; ++j) head += count[j];
  for (int j = 112; j < 128; ++j) tail += count[j];
  EXPECT_GT(head, 4 * tail);  // power law: the first features fire far more often
  // Each token's features come mostly from one group (in_group = 0.9).
  const auto modal_share = [&](const SparseCodes& k, int64_t groups) {
    double share = 0;
    int64_t tokens = 0;
    for (size_t t = 0; t + 1 < k.offsets.size(); ++t) {
      const int64_t n = k.offsets[t + 1] - k.offsets[t];
      if (n < 3) continue;
      std::vector<int> per_group(groups, 0);
      for (int64_t i = k.offsets[t]; i < k.offsets[t + 1]; ++i) ++per_group[k.features[i] % groups];
      share += static_cast<double>(*std::max_element(per_group.begin(), per_group.end())) / n;
      ++tokens;
    }
    return share / tokens;
  };
  const double concentrated = modal_share(codes, c.groups);
  SynthConfig spread = c;
  spread.in_group = 1.0 / c.groups;  // no preference for the token's group
  spread.second_group = 0;
  SyntheticGenerator gs(spread);
  SparseCodes codes_spread;
  gs.generate(0, x, &codes_spread);
  const double diffuse = modal_share(codes_spread, c.groups);
  EXPECT_GT(concentrated, 0.65);
  EXPECT_LT(diffuse, 0.55);
}

TEST(Synthetic, ActivationsAreTheCodesTimesTheDictionary) {
  SynthConfig c = small_config();
  SyntheticGenerator g(c);
  Tensor x = host_tensor(SyntheticGenerator::kBlockTokens, c.d);
  SparseCodes codes;
  g.generate(0, x, &codes);
  for (int64_t t = 0; t < x.rows(); t += 97) {
    std::vector<double> y(c.d, 0.0);
    for (int64_t i = codes.offsets[t]; i < codes.offsets[t + 1]; ++i) {
      if (i > codes.offsets[t]) EXPECT_LT(codes.features[i - 1], codes.features[i]);
      for (int64_t k = 0; k < c.d; ++k)
        y[k] += codes.values[i] * g.dictionary().data<float>()[codes.features[i] * c.d + k];
    }
    for (int64_t k = 0; k < c.d; ++k) EXPECT_NEAR(x.data<float>()[t * c.d + k], y[k], 1e-4) << t;
  }
  // Noise adds an isotropic perturbation of the configured size.
  c.noise = 0.1;
  SyntheticGenerator noisy(c);
  Tensor xn = host_tensor(SyntheticGenerator::kBlockTokens, c.d);
  noisy.generate(0, xn);
  double var = 0;
  for (int64_t i = 0; i < xn.numel(); ++i) {
    const double e = xn.data<float>()[i] - x.data<float>()[i];
    var += e * e;
  }
  EXPECT_NEAR(std::sqrt(var / xn.numel()), 0.1, 0.005);
}

TEST(Synthetic, FileRoundTripOfActivationsAndGroundTruth) {
  TempDir dir;
  SynthConfig c = small_config();
  c.tokens = 9000;  // not a multiple of the block size
  const std::string path = dir.file("synth.h5");
  write_synthetic(c, path);
  ActivationFile f(path);
  EXPECT_EQ(f.tokens(), c.tokens);
  EXPECT_EQ(f.d(), c.d);
  EXPECT_FALSE(f.f16());
  EXPECT_EQ(f.meta().model, "synthetic");
  SyntheticGenerator g(c);
  Tensor expected = host_tensor(c.tokens, c.d), got = host_tensor(c.tokens, c.d);
  g.generate(0, expected);
  f.read_rows(0, got);
  EXPECT_TRUE(same(expected, got));
  EXPECT_TRUE(same(read_ground_truth(path), g.dictionary()));
  const GroundTruth gt = load_ground_truth(path);
  EXPECT_EQ(gt.frequencies, g.frequencies());
  EXPECT_EQ(gt.groups, g.groups());
  h5::File h(path, h5::File::Mode::Read);
  EXPECT_EQ(h.attr_int("/ground_truth", "features"), c.features);
  EXPECT_EQ(h.attr_double("/ground_truth", "alpha"), c.alpha);
  EXPECT_EQ(h.attr_int("/", "seed"), 5);
  EXPECT_EQ(h.shape("/ground_truth/group_centres"), (std::vector<int64_t>{c.groups, c.d}));
  // Writing again gives the same file contents.
  const std::string again = dir.file("again.h5");
  write_synthetic(c, again);
  ActivationFile f2(again);
  f2.read_rows(0, got);
  EXPECT_TRUE(same(expected, got));
}

TEST(Synthetic, F16OutputAndErrors) {
  TempDir dir;
  SynthConfig c = small_config();
  c.tokens = 100;
  c.f16 = true;
  const std::string path = dir.file("h.h5");
  write_synthetic(c, path);
  EXPECT_TRUE(ActivationFile(path).f16());
  EXPECT_EQ(error_of([&] { read_ground_truth(dir.file("missing.h5")); }),
            "cannot open HDF5 file '" + dir.file("missing.h5") + "': no such file");
  const std::string plain = dir.file("plain.h5");
  {
    h5::File h(plain, h5::File::Mode::Create);
    h.write("activations", host_tensor(2, 2));
  }
  EXPECT_EQ(error_of([&] { read_ground_truth(plain); }),
            "'" + plain + "' has no /ground_truth group (it is not a synthetic activation file)");
  SynthConfig bad = small_config();
  bad.groups = 200;
  EXPECT_EQ(error_of([&] { SyntheticGenerator g(bad); }), "synthetic.groups must be in [1, features] (got 200)");
  bad = small_config();
  bad.active = 100;
  EXPECT_NE(error_of([&] { SyntheticGenerator g(bad); }).find("synthetic.active = 100 is unreachable"),
            std::string::npos);
  bad = small_config();
  bad.cluster_tightness = 1.0;
  EXPECT_EQ(error_of([&] { SyntheticGenerator g(bad); }), "synthetic.cluster_tightness must be in [0, 1) (got 1)");
}
