// Tests for activation files: writer/reader round trips (f32 and f16, metadata, token ids) and the errors a
// user sees for a missing file, a missing dataset, a wrong shape or type, and a d mismatch.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "data/activation_file.h"
#include "error_of.h"
#include "temp_dir.h"

using namespace moesae;
using moesae::testing::TempDir;
using moesae::testing::error_of;

namespace {

// Row r, column c holds r + c / 8 (exact in f16 for r < 256).
float value_at(int64_t r, int64_t c) { return static_cast<float>(r) + static_cast<float>(c) / 8.0f; }

Tensor rows_from(int64_t r0, int64_t n, int64_t d) {
  Tensor t = host_tensor(n, d);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < d; ++c) t.host<float>()[i * d + c] = value_at(r0 + i, c);
  return t;
}

}  // namespace

TEST(ActivationFile, RoundTripWithMetadataAndTokenIds) {
  for (bool f16 : {false, true}) {
    TempDir dir;
    const std::string path = dir.file("acts.h5");
    const int64_t d = 6;
    ActivationWriter::Options opt;
    opt.d = d;
    opt.f16 = f16;
    opt.token_ids = true;
    opt.chunk_rows = 7;
    opt.meta = {"stories260K", "3", "resid_post", "llama2c-512"};
    {
      ActivationWriter w(path, opt);
      int64_t r = 0;
      for (int64_t n : {5, 1, 17, 0, 9}) {
        Tensor ids = host_vector(n, DType::I32);
        for (int64_t i = 0; i < n; ++i) ids.host<int32_t>()[i] = static_cast<int32_t>(1000 + r + i);
        w.append(rows_from(r, n, d), ids);
        r += n;
      }
      EXPECT_EQ(w.rows(), 32);
      EXPECT_FALSE(std::filesystem::exists(path));
      w.commit();
    }
    ActivationFile f(path);
    EXPECT_EQ(f.tokens(), 32);
    EXPECT_EQ(f.d(), d);
    EXPECT_EQ(f.f16(), f16);
    EXPECT_EQ(f.meta().model, "stories260K");
    EXPECT_EQ(f.meta().layer, "3");
    EXPECT_EQ(f.meta().hook, "resid_post");
    EXPECT_EQ(f.meta().tokenizer, "llama2c-512");
    ASSERT_TRUE(f.has_token_ids());
    Tensor out = host_tensor(10, d);
    f.read_rows(20, out);
    for (int64_t i = 0; i < 10; ++i)
      for (int64_t c = 0; c < d; ++c) EXPECT_EQ(out.host<float>()[i * d + c], value_at(20 + i, c));
    Tensor ids = host_vector(3, DType::I32);
    f.read_token_ids(29, ids);
    EXPECT_EQ(ids.host<int32_t>()[0], 1029);
    EXPECT_EQ(ids.host<int32_t>()[2], 1031);
  }
}

TEST(ActivationFile, F16StorageRoundsToHalfPrecision) {
  TempDir dir;
  const std::string path = dir.file("h.h5");
  ActivationWriter::Options opt;
  opt.d = 3;
  opt.f16 = true;
  Tensor x = host_tensor(1, 3);
  x.host<float>()[0] = 0.1f;
  x.host<float>()[1] = -1234.567f;
  x.host<float>()[2] = 3.0e-3f;
  {
    ActivationWriter w(path, opt);
    w.append(x);
    w.commit();
  }
  ActivationFile f(path);
  Tensor y = host_tensor(1, 3);
  f.read_rows(0, y);
  for (int c = 0; c < 3; ++c) {
    const float a = x.host<float>()[c], b = y.host<float>()[c];
    EXPECT_LE(std::fabs(a - b), std::fabs(a) * (1.0f / 2048)) << c;  // half: 11 significant bits
    EXPECT_NE(a, b) << c;                                           // none of these is exact in f16
  }
}

TEST(ActivationFile, WriterWithoutCommitLeavesNothing) {
  TempDir dir;
  const std::string path = dir.file("partial.h5");
  {
    ActivationWriter::Options opt;
    opt.d = 4;
    ActivationWriter w(path, opt);
    w.append(rows_from(0, 3, 4));
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(ActivationFile, WriterRejectsWrongShapesAndMissingTokenIds) {
  TempDir dir;
  const std::string path = dir.file("w.h5");
  ActivationWriter::Options opt;
  opt.d = 4;
  opt.token_ids = true;
  ActivationWriter w(path, opt);
  EXPECT_NE(error_of([&] { w.append(rows_from(0, 2, 5), host_vector(2, DType::I32)); })
                .find("cannot append [2, 5] f32 rows to dataset 'activations' of f32 rows with d=4"),
            std::string::npos);
  EXPECT_NE(error_of([&] { w.append(rows_from(0, 2, 4)); }).find("records token ids"), std::string::npos);
  EXPECT_NE(error_of([&] { w.append(rows_from(0, 2, 4), host_vector(3, DType::I32)); })
                .find("appending 2 rows needs 2 i32 token ids (got [3])"),
            std::string::npos);
  ActivationWriter::Options bad;
  EXPECT_NE(error_of([&] { ActivationWriter z(dir.file("z.h5"), bad); }).find("d must be >= 1"), std::string::npos);
}

TEST(ActivationFile, ClearErrorsForMissingFileDatasetShapeTypeAndD) {
  TempDir dir;
  const std::string missing = dir.file("nope.h5");
  EXPECT_EQ(error_of([&] { ActivationFile f(missing); }), "cannot open HDF5 file '" + missing + "': no such file");

  const std::string path = dir.file("odd.h5");
  {
    h5::File f(path, h5::File::Mode::Create);
    f.write_f64("one_d", {1, 2, 3});
    Tensor ints = host_tensor(2, 2, DType::I32);
    f.write("ints", ints);
    f.write("good", rows_from(0, 4, 3));
  }
  EXPECT_EQ(error_of([&] { ActivationFile f(path); }), "'" + path + "': no dataset 'activations'");
  EXPECT_EQ(error_of([&] { ActivationFile f(path, "one_d"); }),
            "'" + path + "': dataset 'one_d' is 1-D (shape [3]); activations must be 2-D [tokens, d]");
  EXPECT_EQ(error_of([&] { ActivationFile f(path, "ints"); }),
            "'" + path + "': dataset 'ints' holds i32; activations must be f32 or f16");
  ActivationFile good(path, "good");
  EXPECT_EQ(good.meta().model, "");  // metadata is optional on read
  EXPECT_FALSE(good.has_token_ids());
  EXPECT_EQ(error_of([&] { good.expect_d(64, "the SAE"); }),
            "'" + path + "': dataset 'good' has d=3 but the SAE expects d=64");
  good.expect_d(3);
  EXPECT_NE(error_of([&] { good.read_rows(0, host_tensor(2, 4)); }).find("has d=3; cannot read rows into a [2, 4]"),
            std::string::npos);
  EXPECT_EQ(error_of([&] { good.read_token_ids(0, host_vector(1, DType::I32)); }),
            "'" + path + "': no dataset 'token_ids'");
}

TEST(ActivationFile, MetadataOnTheRootGroupIsFound) {
  TempDir dir;
  const std::string path = dir.file("root_attrs.h5");
  {
    h5::File f(path, h5::File::Mode::Create);
    f.write("activations", rows_from(0, 2, 2));
    f.set_attr("/", "model", std::string("gpt2"));
  }
  ActivationFile f(path);
  EXPECT_EQ(f.meta().model, "gpt2");
  EXPECT_EQ(f.meta().hook, "");
}
