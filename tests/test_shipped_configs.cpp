// Every config and experiment file shipped in configs/ and experiments/ parses and validates.
#include <gtest/gtest.h>

#include <set>

#include <filesystem>

#include "run/config.h"
#include "run/experiment.h"

using namespace moesae;
namespace fs = std::filesystem;

TEST(ShippedConfigs, RunConfigsParse) {
  int n = 0;
  for (auto& entry : fs::directory_iterator(fs::path(MOESAE_SOURCE_DIR) / "configs")) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    RunConfig c = load_run_config(entry.path().string(), {"data.path=acts.h5"});
    c.model.d = 768;
    EXPECT_NO_THROW(validate(c.model));
    ++n;
  }
  EXPECT_GE(n, 4);
}

TEST(ShippedConfigs, ExperimentsParse) {
  int n = 0;
  for (auto& entry : fs::directory_iterator(fs::path(MOESAE_SOURCE_DIR) / "experiments")) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    Experiment e = load_experiment(entry.path().string());
    EXPECT_FALSE(e.runs.empty());
    ++n;
  }
  EXPECT_GE(n, 1);
}

TEST(ShippedConfigs, SyntheticComparesTheFourFamiliesAtMatchedActiveWidth) {
  Experiment e = load_experiment((fs::path(MOESAE_SOURCE_DIR) / "experiments" / "synthetic.yaml").string());
  ASSERT_EQ(e.runs.size(), 4u);
  EXPECT_TRUE(e.has_synthetic);
  for (const auto& r : e.runs) {
    const ModelConfig& m = r.config.model;
    EXPECT_EQ(m.active_experts * (m.dict_size / m.experts), 256) << r.name;
  }
}

// The main job: real stories260K activations, TopK / Switch / Scale FLOPS-matched (every model computes d = 64
// encoder latents per token, as the paper's d = 768 comparison), Loss Recovered in and out of domain.
TEST(ShippedConfigs, QuickstartIsFlopsMatchedOnRealActivations) {
  Experiment e = load_experiment((fs::path(MOESAE_SOURCE_DIR) / "experiments" / "quickstart.yaml").string());
  EXPECT_TRUE(e.has_extract);
  EXPECT_EQ(e.extract.model, "stories260K/stories260K.bin");
  ASSERT_EQ(e.runs.size(), 3u);
  std::set<Arch> archs;
  for (const auto& r : e.runs) {
    const ModelConfig& m = r.config.model;
    archs.insert(m.arch);
    EXPECT_EQ(m.active_experts * (m.dict_size / m.experts), 64) << r.name;
    EXPECT_EQ(r.config.data.path, e.extract_path) << r.name;
    EXPECT_TRUE(r.config.lm.enabled()) << r.name;
    EXPECT_FALSE(r.config.lm.ood_text.empty()) << r.name;
  }
  EXPECT_EQ(archs, (std::set<Arch>{Arch::TopK, Arch::Switch, Arch::Scale}));
}

// The paper's experiment grids, in both sizes: Fig. 3 FLOPS-matched (every model computes d encoder rows per token;
// MoE dictionaries 32 d wide), Fig. 4 / Fig. 5 / Appendix C over e, Feature Scaling and the low-pass, each with the
// paper's defaults and compat: reference.
TEST(ShippedConfigs, PaperGridsInBothSizes) {
  for (const std::string size : {"", "-gpt2"}) {
    SCOPED_TRACE(size);
    const int d = size.empty() ? 64 : 768;
    auto load = [&](const std::string& stem) {
      return load_experiment((fs::path(MOESAE_SOURCE_DIR) / "experiments" / (stem + size + ".yaml")).string());
    };
    const Experiment fig3 = load("fig3-flops-matched");
    std::set<std::string> compat;
    int grid_points = 0;
    for (const auto& r : fig3.runs) {
      const ModelConfig& m = r.config.model;
      compat.insert(to_string(m.compat));
      EXPECT_TRUE(fig3.has_extract);
      EXPECT_TRUE(r.config.lm.enabled());
      if (!r.grid_point) continue;
      ++grid_points;
      EXPECT_EQ(m.active_experts * (m.dict_size / m.experts), d) << r.name;  // the paper's FLOPS matching
      if (m.arch != Arch::TopK) EXPECT_EQ(m.dict_size, 32 * d) << r.name;
    }
    EXPECT_EQ(compat, (std::set<std::string>{"paper", "reference"}));
    EXPECT_EQ(grid_points, 5 * 2 * (size.empty() ? 6 : 7));
    std::set<int> e_values;
    for (const auto& r : load("fig4-active-experts").runs) e_values.insert(r.config.model.active_experts);
    EXPECT_EQ(e_values, (std::set<int>{1, 2, 4, 8, 16}));
    std::set<std::string> fs_values;
    for (const auto& r : load("fig5-feature-scaling").runs) fs_values.insert(to_string(r.config.model.feature_scaling));
    EXPECT_TRUE(fs_values.count("none") && fs_values.count("mean")) << fs_values.size();
    std::set<std::string> lowpass;
    for (const auto& r : load("appc-decomposition").runs) lowpass.insert(to_string(r.config.model.feature_scaling));
    EXPECT_TRUE(lowpass.count("identity") && lowpass.count("learned")) << lowpass.size();
  }
}
