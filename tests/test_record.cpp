// Tests for run records: a full write/read round trip, the on-disk layout that docs/records.md promises, and that a
// failed save leaves the previous record intact.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <regex>

#include "core/h5.h"
#include "core/version.h"
#include "run/record.h"
#include "error_of.h"
#include "temp_dir.h"

using namespace moesae;
using moesae::testing::TempDir;
using moesae::testing::error_of;

namespace {

RunRecord example_record() {
  RunRecord r;
  r.arch = "scale";
  r.config_yaml = "model:\n  arch: scale\n  dict_size: 64\n";
  r.add_metrics_row({{"step", 10}, {"loss", 0.5}, {"l0", 8}});
  r.add_metrics_row({{"step", 20}, {"loss", 0.25}, {"l0", 8}, {"lr", 1e-4}});  // lr appears late
  r.add_eval_row({{"step", 20}, {"mse", 0.125}});
  r.final_scalars = {{"mse", 0.1}, {"fvu", 0.05}, {"redundancy", 0.0}};
  r.final_vectors["expert_fraction"] = {0.25, 0.75};
  Tensor w = host_tensor(3, 2);
  for (int i = 0; i < 6; ++i) w.host<float>()[i] = 0.5f * i - 1.0f;
  r.weights["W_dec"] = w;
  Tensor ids = host_vector(3, DType::I32);
  for (int i = 0; i < 3; ++i) ids.host<int32_t>()[i] = 7 * i;
  r.weights["latent_ids"] = ids;
  return r;
}

}  // namespace

TEST(RunRecord, RoundTrip) {
  TempDir dir;
  const std::string path = dir.file("run.h5");
  const RunRecord r = example_record();
  r.save(path);
  const RunRecord back = RunRecord::load(path);
  EXPECT_EQ(back.moesae_version, kMoesaeVersion);
  EXPECT_TRUE(std::regex_match(back.created, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"))) << back.created;
  EXPECT_EQ(back.arch, "scale");
  EXPECT_EQ(back.status, "finished");
  EXPECT_EQ(back.config_yaml, r.config_yaml);
  ASSERT_EQ(back.metrics.rows(), 2u);
  EXPECT_EQ(back.metrics.column("step"), (std::vector<double>{10, 20}));
  EXPECT_EQ(back.metrics.column("loss"), (std::vector<double>{0.5, 0.25}));
  EXPECT_TRUE(std::isnan(back.metrics.column("lr")[0]));
  EXPECT_EQ(back.metrics.column("lr")[1], 1e-4);
  EXPECT_EQ(back.eval.column("mse"), (std::vector<double>{0.125}));
  EXPECT_EQ(back.final_scalars, r.final_scalars);
  EXPECT_EQ(back.final_vectors, r.final_vectors);
  ASSERT_EQ(back.weights.size(), 2u);
  const Tensor& w = back.weights.at("W_dec");
  ASSERT_EQ(w.rows(), 3);
  ASSERT_EQ(w.cols(), 2);
  EXPECT_EQ(0, std::memcmp(w.host<float>(), r.weights.at("W_dec").host<float>(), 6 * sizeof(float)));
  EXPECT_EQ(back.weights.at("latent_ids").dtype(), DType::I32);
  EXPECT_EQ(back.weights.at("latent_ids").host<int32_t>()[2], 14);
  EXPECT_TRUE(RunRecord::load(path, /*with_weights=*/false).weights.empty());
  EXPECT_EQ(RunRecord::weight_names(path), (std::vector<std::string>{"W_dec", "latent_ids"}));
  EXPECT_EQ(RunRecord::load_weight(path, "W_dec").rows(), 3);
  EXPECT_EQ(error_of([&] { RunRecord::load_weight(path, "W_enc"); }),
            "run record '" + path + "' has no weight 'W_enc'");
}

// The layout documented in docs/records.md, checked through the plain HDF5 API.
TEST(RunRecord, OnDiskLayoutMatchesTheDocumentation) {
  TempDir dir;
  const std::string path = dir.file("run.h5");
  RunRecord r = example_record();
  r.created = "2025-01-31T12:00:00Z";
  r.save(path);
  h5::File f(path, h5::File::Mode::Read);
  EXPECT_EQ(f.attr_string("/", "format"), "moesae-run-record");
  EXPECT_EQ(f.attr_int("/", "format_version"), 1);
  EXPECT_EQ(f.attr_string("/", "created"), "2025-01-31T12:00:00Z");
  EXPECT_EQ(f.list("/"), (std::vector<std::string>{"config", "eval", "final", "metrics", "weights"}));
  EXPECT_EQ(f.dtype_name("/metrics/step"), "i64");
  EXPECT_EQ(f.dtype_name("/metrics/loss"), "f64");
  EXPECT_EQ(f.shape("/metrics/loss"), (std::vector<int64_t>{2}));
  EXPECT_EQ(f.attr_int("/metrics", "rows"), 2);
  EXPECT_EQ(f.attr_double("/final", "fvu"), 0.05);
  EXPECT_EQ(f.shape("/final/expert_fraction"), (std::vector<int64_t>{2}));
  EXPECT_EQ(f.dtype_name("/weights/W_dec"), "f32");
  EXPECT_EQ(f.shape("/weights/W_dec"), (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(f.attr_string("/config", "yaml"), r.config_yaml);
}

TEST(RunRecord, FailedSaveLeavesThePreviousRecordIntact) {
  TempDir dir;
  const std::string path = dir.file("run.h5");
  example_record().save(path);
  RunRecord bad = example_record();
  bad.arch = "topk";
  bad.weights["broken"] = Tensor();
  EXPECT_EQ(error_of([&] { bad.save(path); }),
            "run record '" + path + "': weight 'broken' must be a host tensor (copy it from the device first)");
  RunRecord slash = example_record();
  slash.add_metrics_row({{"step", 30}, {"a/b", 1.0}});
  EXPECT_EQ(error_of([&] { slash.save(path); }),
            "run record '" + path + "': metric name 'a/b' must be non-empty and contain no '/'");
  RunRecord no_step = example_record();
  no_step.add_metrics_row({{"loss", 1.0}});
  EXPECT_EQ(error_of([&] { no_step.save(path); }), "run record '" + path + "': /metrics row 2 has no 'step' value");
  EXPECT_EQ(RunRecord::load(path).arch, "scale");
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1u);  // no temporary file left behind
}

TEST(RunRecord, LoadingSomethingElseIsAClearError) {
  TempDir dir;
  const std::string missing = dir.file("missing.h5");
  EXPECT_EQ(error_of([&] { RunRecord::load(missing); }), "cannot open HDF5 file '" + missing + "': no such file");
  const std::string other = dir.file("other.h5");
  {
    h5::File f(other, h5::File::Mode::Create);
    f.write_f64("x", {1});
  }
  EXPECT_EQ(error_of([&] { RunRecord::load(other); }),
            "'" + other + "' is not a moesae run record (no root attribute format = \"moesae-run-record\")");
}

TEST(MetricSeries, ColumnsStayAlignedAndMismatchedLengthsAreRejected) {
  MetricSeries s;
  s.add_row({{"a", 1}});
  s.add_row({{"b", 2}});
  EXPECT_EQ(s.rows(), 2u);
  EXPECT_EQ(s.column("a")[0], 1);
  EXPECT_TRUE(std::isnan(s.column("a")[1]));
  EXPECT_TRUE(std::isnan(s.column("b")[0]));
  EXPECT_EQ(error_of([&] { s.column("c"); }), "no metric 'c'");
  EXPECT_EQ(error_of([&] { s.set_columns({{"a", {1, 2}}, {"b", {1}}}); }), "metric 'b' has 1 rows but 'a' has 2");
  s.set_columns({{"step", {1, 2, 3}}});
  EXPECT_EQ(s.rows(), 3u);
}
