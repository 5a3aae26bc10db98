// Every config and experiment file shipped in configs/ and experiments/ parses and validates.
#include <gtest/gtest.h>

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

TEST(ShippedConfigs, QuickstartComparesTheFourFamiliesAtMatchedActiveWidth) {
  Experiment e = load_experiment((fs::path(MOESAE_SOURCE_DIR) / "experiments" / "quickstart.yaml").string());
  ASSERT_EQ(e.runs.size(), 4u);
  for (const auto& r : e.runs) {
    const ModelConfig& m = r.config.model;
    EXPECT_EQ(m.active_experts * (m.dict_size / m.experts), 256) << r.name;
  }
}
