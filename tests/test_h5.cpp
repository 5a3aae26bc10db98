// Tests for the HDF5 wrapper: round trips of every supported type, f16 storage, attributes, groups, error
// messages, and the atomic writer's all-or-nothing guarantee.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/h5.h"
#include "error_of.h"
#include "temp_dir.h"

using namespace moesae;
using moesae::testing::TempDir;
using moesae::testing::error_of;

namespace {

// Runs `fn` and returns the moesae::Error message it throws (fails the test if it does not throw).
Tensor iota_tensor(int64_t rows, int64_t cols, float scale = 0.5f) {
  Tensor t = host_tensor(rows, cols);
  for (int64_t i = 0; i < t.numel(); ++i) t.host<float>()[i] = scale * static_cast<float>(i) - 3.0f;
  return t;
}

}  // namespace

TEST(H5, F32AndI32RoundTrip) {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  Tensor m = iota_tensor(5, 3);
  Tensor v = host_vector(4, DType::I32);
  for (int i = 0; i < 4; ++i) v.host<int32_t>()[i] = -7 + 1000 * i;
  {
    h5::File f(path, h5::File::Mode::Create);
    f.write("m", m);
    f.write("/nested/deeper/v", v);
  }
  h5::File f(path, h5::File::Mode::Read);
  EXPECT_EQ(f.shape("m"), (std::vector<int64_t>{5, 3}));
  EXPECT_EQ(f.dtype_name("m"), "f32");
  EXPECT_EQ(f.dtype_name("nested/deeper/v"), "i32");
  Tensor m2 = f.read("m");
  ASSERT_EQ(m2.rank(), 2);
  ASSERT_EQ(m2.rows(), 5);
  ASSERT_EQ(m2.cols(), 3);
  EXPECT_EQ(0, std::memcmp(m.host<float>(), m2.host<float>(), 15 * sizeof(float)));
  Tensor v2 = f.read("/nested/deeper/v");
  ASSERT_EQ(v2.rank(), 1);
  ASSERT_EQ(v2.dtype(), DType::I32);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(v2.host<int32_t>()[i], -7 + 1000 * i);
}

TEST(H5, StridedTensorWritesItsViewOnly) {
  TempDir dir;
  const std::string path = dir.file("s.h5");
  Tensor m = iota_tensor(4, 6);
  Tensor view = m.col_range(2, 5);  // 4 x 3 with ld 6
  {
    h5::File f(path, h5::File::Mode::Create);
    f.write("view", view);
  }
  h5::File f(path, h5::File::Mode::Read);
  Tensor r = f.read("view");
  ASSERT_EQ(r.cols(), 3);
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(r.host<float>()[i * 3 + j], m.host<float>()[i * 6 + 2 + j]);
}

TEST(H5, VectorsOfF64I64U64) {
  TempDir dir;
  const std::string path = dir.file("v.h5");
  const std::vector<double> d = {1.5, -2.25, 1e300};
  const std::vector<int64_t> i = {-(int64_t{1} << 62), 0, 42};
  const std::vector<uint64_t> u = {~uint64_t{0}, 0x0123456789abcdefull};
  {
    h5::File f(path, h5::File::Mode::Create);
    f.write_f64("d", d);
    f.write_i64("g/i", i);
    f.write_u64("g/u", u);
    f.write_u64("empty", {});
  }
  h5::File f(path, h5::File::Mode::Read);
  EXPECT_EQ(f.read_f64("d"), d);
  EXPECT_EQ(f.read_i64("g/i"), i);
  EXPECT_EQ(f.read_u64("g/u"), u);
  EXPECT_TRUE(f.read_u64("empty").empty());
  EXPECT_EQ(f.dtype_name("d"), "f64");
  EXPECT_EQ(f.dtype_name("g/u"), "u64");
  EXPECT_NE(error_of([&] { f.read_i64("d"); }).find("expected an integer type"), std::string::npos);
}

TEST(H5, RewritingADatasetReplacesIt) {
  TempDir dir;
  const std::string path = dir.file("r.h5");
  h5::File f(path, h5::File::Mode::Create);
  f.write_f64("x", {1, 2, 3});
  f.write_f64("x", {4, 5, 6});  // same shape: written in place
  EXPECT_EQ(f.read_f64("x"), (std::vector<double>{4, 5, 6}));
  f.write_f64("x", {7});  // another shape: replaced
  EXPECT_EQ(f.read_f64("x"), (std::vector<double>{7}));
}

TEST(H5, F16StorageConvertsAndRoundsToNearestEven) {
  TempDir dir;
  const std::string path = dir.file("h.h5");
  // Values with known half-precision images.
  const float in[] = {1.0f, -2.5f, 65504.0f, 1.0f + 1.0f / 2048,  // halfway between 1 and 1+2^-10: ties to even
                      1.0f + 3.0f / 2048, 70000.0f, 0x1.0p-24f, 0x1.0p-26f, 0.0f, -0.0f, 1.0f / 3};
  const float want[] = {1.0f, -2.5f, 65504.0f, 1.0f, 1.0f + 2.0f / 1024, std::numeric_limits<float>::infinity(),
                        0x1.0p-24f, 0.0f, 0.0f, -0.0f, 0.333251953125f};
  const int n = sizeof(in) / sizeof(in[0]);
  Tensor t = host_tensor(1, n);
  std::memcpy(t.host<float>(), in, sizeof(in));
  {
    h5::File f(path, h5::File::Mode::Create);
    f.create_extensible_2d("h", n, /*f16=*/true, 64);
    f.append_rows("h", t);
    f.append_rows("h", t);
  }
  h5::File f(path, h5::File::Mode::Read);
  EXPECT_EQ(f.dtype_name("h"), "f16");
  EXPECT_EQ(f.shape("h"), (std::vector<int64_t>{2, n}));
  Tensor back = host_tensor(1, n);
  f.read_rows("h", 1, back);
  for (int i = 0; i < n; ++i) {
    EXPECT_EQ(back.host<float>()[i], want[i]) << "element " << i;
    EXPECT_EQ(std::signbit(back.host<float>()[i]), std::signbit(want[i])) << "element " << i;
  }
  Tensor whole = f.read("h");  // read() converts f16 to f32 too
  EXPECT_EQ(whole.dtype(), DType::F32);
  EXPECT_EQ(whole.host<float>()[n + 4], want[4]);
}

TEST(H5, F16NaNStaysNaN) {
  TempDir dir;
  const std::string path = dir.file("nan.h5");
  Tensor t = host_tensor(1, 2);
  t.host<float>()[0] = std::numeric_limits<float>::quiet_NaN();
  t.host<float>()[1] = -std::numeric_limits<float>::infinity();
  h5::File f(path, h5::File::Mode::Create);
  f.create_2d("h", 1, 2, true, 16);
  f.write_rows("h", 0, t);
  Tensor back = host_tensor(1, 2);
  f.read_rows("h", 0, back);
  EXPECT_TRUE(std::isnan(back.host<float>()[0]));
  EXPECT_TRUE(std::isinf(back.host<float>()[1]) && back.host<float>()[1] < 0);
}

TEST(H5, RowRangesIntoStridedViewsAndOneDimensionalDatasets) {
  TempDir dir;
  const std::string path = dir.file("rows.h5");
  h5::File f(path, h5::File::Mode::Create);
  f.create_2d("m", 10, 3, false, 4);
  Tensor src = iota_tensor(10, 3);
  f.write_rows("m", 0, src.row_range(0, 6));
  f.write_rows("m", 6, src.row_range(6, 10));
  Tensor wide = host_tensor(3, 5);
  Tensor view = wide.col_range(1, 4);
  f.read_rows("m", 7, view);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(wide.host<float>()[r * 5 + 0], 0.0f);
    EXPECT_EQ(wide.host<float>()[r * 5 + 4], 0.0f);
    for (int c = 0; c < 3; ++c) EXPECT_EQ(wide.host<float>()[r * 5 + 1 + c], src.host<float>()[(7 + r) * 3 + c]);
  }
  f.create_extensible_1d("ids", DType::I32, 8);
  Tensor ids = host_vector(5, DType::I32);
  for (int i = 0; i < 5; ++i) ids.host<int32_t>()[i] = 100 + i;
  f.append_rows("ids", ids);
  f.append_rows("ids", ids);
  Tensor part = host_vector(3, DType::I32);
  f.read_rows("ids", 4, part);
  EXPECT_EQ(part.host<int32_t>()[0], 104);
  EXPECT_EQ(part.host<int32_t>()[1], 100);
  EXPECT_EQ(part.host<int32_t>()[2], 101);
  EXPECT_NE(error_of([&] { f.read_rows("m", 8, host_tensor(3, 3)); }).find("rows 8..11 are out of range"),
            std::string::npos);
  EXPECT_NE(error_of([&] { f.read_rows("m", 0, host_tensor(2, 4)); }).find("has shape [10, 3]"), std::string::npos);
  EXPECT_NE(error_of([&] { f.append_rows("m", host_tensor(1, 3)); }).find("cannot extend dataset 'm'"),
            std::string::npos);
}

TEST(H5, AttributesGroupsAndListing) {
  TempDir dir;
  const std::string path = dir.file("attrs.h5");
  {
    h5::File f(path, h5::File::Mode::Create);
    f.create_group("/a/b");
    f.write_f64("/a/x", {1.0});
    f.set_attr("/", "name", std::string("héllo world"));
    f.set_attr("/", "pi", 3.25);
    f.set_attr("/a/b", "count", int64_t{-12});
    f.set_attr("/a/x", "units", std::string("tokens"));
    f.set_attr("/", "pi", 6.5);  // overwrite
  }
  h5::File f(path, h5::File::Mode::ReadWrite);
  EXPECT_TRUE(f.exists("/"));
  EXPECT_TRUE(f.exists("/a/b"));
  EXPECT_TRUE(f.exists("a/x"));
  EXPECT_FALSE(f.exists("/a/nope"));
  EXPECT_FALSE(f.exists("/nope/deeper"));
  EXPECT_EQ(f.attr_string("/", "name"), "héllo world");
  EXPECT_EQ(f.attr_double("/", "pi"), 6.5);
  EXPECT_EQ(f.attr_int("/a/b", "count"), -12);
  EXPECT_EQ(f.attr_double("/a/b", "count"), -12.0);  // integers read as doubles too
  EXPECT_EQ(f.attr_string("/a/x", "units"), "tokens");
  EXPECT_TRUE(f.has_attr("/", "pi"));
  EXPECT_FALSE(f.has_attr("/", "nope"));
  EXPECT_FALSE(f.has_attr("/missing", "pi"));
  EXPECT_EQ(f.attr_names("/"), (std::vector<std::string>{"name", "pi"}));
  EXPECT_EQ(f.list("/a"), (std::vector<std::string>{"b", "x"}));
  EXPECT_EQ(f.list("/"), (std::vector<std::string>{"a"}));
  EXPECT_NE(error_of([&] { f.attr_string("/", "missing"); }).find("object '/' has no attribute 'missing'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { f.attr_int("/", "pi"); }).find("is not a scalar integer"), std::string::npos);
  EXPECT_NE(error_of([&] { f.attr_string("/", "pi"); }).find("is not a scalar string"), std::string::npos);
  EXPECT_NE(error_of([&] { f.list("/a/x"); }).find("is not a group"), std::string::npos);
}

TEST(H5, MissingFileAndDatasetMessagesNameThePath) {
  TempDir dir;
  const std::string missing = dir.file("missing.h5");
  EXPECT_EQ(error_of([&] { h5::File f(missing, h5::File::Mode::Read); }),
            "cannot open HDF5 file '" + missing + "': no such file");
  const std::string text = dir.file("text.h5");
  std::ofstream(text) << "not hdf5";
  EXPECT_EQ(error_of([&] { h5::File f(text, h5::File::Mode::Read); }),
            "cannot open HDF5 file '" + text + "': not an HDF5 file");
  const std::string path = dir.file("d.h5");
  h5::File f(path, h5::File::Mode::Create);
  EXPECT_EQ(error_of([&] { f.read("activations"); }), "'" + path + "': no dataset 'activations'");
  EXPECT_EQ(error_of([&] { f.shape("/g/activations"); }), "'" + path + "': no dataset '/g/activations'");
  const std::string bad_dir = dir.file("no/such/dir/x.h5");
  EXPECT_NE(error_of([&] { h5::File g(bad_dir, h5::File::Mode::Create); }).find("cannot create HDF5 file '" + bad_dir),
            std::string::npos);
}

TEST(H5, AtomicWriterCommitReplacesTheFinalFile) {
  TempDir dir;
  const std::string path = dir.file("rec.h5");
  {
    h5::AtomicWriter w(path);
    w.file().write_f64("x", {1.0});
    EXPECT_FALSE(std::filesystem::exists(path));  // nothing at the final path before commit
    EXPECT_TRUE(std::filesystem::exists(w.tmp_path()));
    EXPECT_EQ(w.tmp_path(), path + ".tmp." + std::to_string(::getpid()));
    w.commit();
    EXPECT_FALSE(std::filesystem::exists(w.tmp_path()));
  }
  {
    h5::AtomicWriter w(path);
    w.file().write_f64("x", {2.0});
    w.commit();
  }
  h5::File f(path, h5::File::Mode::Read);
  EXPECT_EQ(f.read_f64("x"), (std::vector<double>{2.0}));
}

TEST(H5, AtomicWriterWithoutCommitLeavesOldFileIntactAndNoPartialFile) {
  TempDir dir;
  const std::string path = dir.file("rec.h5");
  {
    h5::AtomicWriter w(path);
    w.file().write_f64("x", {1.0});
    w.commit();
  }
  std::string tmp;
  try {
    h5::AtomicWriter w(path);
    tmp = w.tmp_path();
    w.file().write_f64("x", {99.0});
    w.file().read("does_not_exist");  // throws mid-write
    w.commit();
    FAIL() << "expected an error";
  } catch (const Error&) {
  }
  EXPECT_FALSE(std::filesystem::exists(tmp));
  h5::File f(path, h5::File::Mode::Read);
  EXPECT_EQ(f.read_f64("x"), (std::vector<double>{1.0}));
  size_t files = 0;
  for (auto& e : std::filesystem::directory_iterator(dir.path())) files += e.is_regular_file();
  EXPECT_EQ(files, 1u);
  // A writer that never commits and no previous file: nothing is left behind.
  const std::string fresh = dir.file("fresh.h5");
  { h5::AtomicWriter w(fresh); }
  EXPECT_FALSE(std::filesystem::exists(fresh));
  EXPECT_FALSE(std::filesystem::exists(fresh + ".tmp." + std::to_string(::getpid())));
}
