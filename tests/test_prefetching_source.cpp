// PrefetchingSource (train/prefetching_source.h): the batches and resume cursors of the wrapped activation stream,
// exactly, while the next batch is read on a background thread; errors of a background read surface at the next()
// that would have returned the batch; held-out rows read on the calling thread meanwhile (thread-safe HDF5) are
// intact. Data: small activation files written here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "core/h5.h"
#include "data/activation_file.h"
#include "data/activation_stream.h"
#include "error_of.h"
#include "run/stream_source.h"
#include "temp_dir.h"
#include "train/prefetching_source.h"

using namespace moesae;
using moesae::testing::error_of;
using moesae::testing::TempDir;

namespace {

constexpr int64_t kD = 8, kTokens = 3000, kBatch = 64;

// Row r holds r + c / 16 in column c (a batch row names its file row); `poison` puts a NaN in that row.
std::string write_file(const TempDir& dir, int64_t poison = -1) {
  const std::string path = dir.file("acts.h5");
  ActivationWriter::Options opt;
  opt.d = kD;
  opt.chunk_rows = 100;
  ActivationWriter w(path, opt);
  Tensor t = host_tensor(kTokens, kD);
  for (int64_t r = 0; r < kTokens; ++r)
    for (int64_t c = 0; c < kD; ++c) t.host<float>()[r * kD + c] = float(r) + float(c) / 16.f;
  if (poison >= 0) t.host<float>()[poison * kD + 3] = std::numeric_limits<float>::quiet_NaN();
  w.append(t);
  w.commit();
  return path;
}

DataConfig config(const std::string& path) {
  DataConfig c;
  c.path = path;
  c.shuffle_buffer = 500;  // several epochs' worth of refills over the run below
  c.chunk_rows = 128;
  c.eval_tokens = 200;
  return c;
}

Tensor buffer(int64_t rows, int64_t cols) { return host_tensor(rows, cols); }

bool same(const Tensor& a, const Tensor& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.host<float>(), b.host<float>(), size_t(a.numel()) * 4) == 0;
}

// A stream over `path` with `seed`, read ahead.
struct ReadAhead {
  ReadAhead(const std::string& path, uint64_t seed) : stream(config(path), seed), inner(stream), ahead(inner, buffer) {}
  ActivationStream stream;
  StreamBatchSource inner;
  PrefetchingSource ahead;
};

// Every case reads the file on two threads at once (the reader and the caller's own stream or held-out reader).
class PrefetchingSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!h5::library_is_threadsafe()) GTEST_SKIP() << "this HDF5 library is not thread-safe: no background reads";
  }
};

}  // namespace

TEST_F(PrefetchingSourceTest, SameBatchesAndCursorsAsTheStream) {
  TempDir dir;
  const std::string path = write_file(dir);
  ActivationStream plain_stream(config(path), 7);
  StreamBatchSource plain(plain_stream);
  ReadAhead r(path, 7);
  PrefetchingSource& ahead = r.ahead;
  Tensor want = host_tensor(kBatch, kD), got = host_tensor(kBatch, kD);
  for (int step = 0; step < 120; ++step) {  // over 2 epochs of the 2800 training rows
    EXPECT_EQ(ahead.state(), plain.state()) << "cursor before step " << step;
    plain.next(want);
    ahead.next(got);
    ASSERT_TRUE(same(want, got)) << "batch " << step;
  }
  EXPECT_EQ(ahead.dim(), kD);
}

TEST_F(PrefetchingSourceTest, ResumesExactlyFromACursorTakenWhileReadingAhead) {
  TempDir dir;
  const std::string path = write_file(dir);
  ReadAhead r(path, 3);
  PrefetchingSource& ahead = r.ahead;
  Tensor b = host_tensor(kBatch, kD);
  for (int step = 0; step < 17; ++step) ahead.next(b);
  const std::vector<uint64_t> cursor = ahead.state();  // a batch is read ahead at this point
  std::vector<Tensor> rest;
  for (int step = 0; step < 10; ++step) {
    ahead.next(b);
    Tensor copy = host_tensor(kBatch, kD);
    std::memcpy(copy.host<float>(), b.host<float>(), size_t(b.numel()) * 4);
    rest.push_back(copy);
  }
  // A fresh stream restored from the cursor, plain and prefetching, and the prefetching source restored in place.
  ActivationStream fresh_stream(config(path), 3);
  StreamBatchSource fresh(fresh_stream);
  fresh.restore(cursor);
  ReadAhead r2(path, 3);
  PrefetchingSource& again = r2.ahead;
  again.restore(cursor);
  ahead.restore(cursor);
  Tensor x = host_tensor(kBatch, kD), y = host_tensor(kBatch, kD), z = host_tensor(kBatch, kD);
  for (size_t i = 0; i < rest.size(); ++i) {
    fresh.next(x);
    again.next(y);
    ahead.next(z);
    EXPECT_TRUE(same(rest[i], x)) << "plain stream restored, batch " << i;
    EXPECT_TRUE(same(rest[i], y)) << "prefetching source restored before its first batch, batch " << i;
    EXPECT_TRUE(same(rest[i], z)) << "prefetching source restored in place, batch " << i;
  }
}

TEST_F(PrefetchingSourceTest, ABackgroundReadErrorSurfacesAtItsBatch) {
  TempDir dir;
  const std::string path = write_file(dir, 1500);  // a NaN in a training row
  ActivationStream plain_stream(config(path), 5);
  StreamBatchSource plain(plain_stream);
  Tensor b = host_tensor(kBatch, kD);
  int fails_at = -1;
  std::string plain_error;
  for (int step = 0; step < 200 && fails_at < 0; ++step) {
    try {
      plain.next(b);
    } catch (const Error& e) {
      fails_at = step;
      plain_error = e.what();
    }
  }
  ASSERT_GE(fails_at, 0) << "the poisoned row was never read";
  EXPECT_NE(plain_error.find("non-finite value"), std::string::npos) << plain_error;
  ReadAhead r(path, 5);
  for (int step = 0; step < fails_at; ++step) r.ahead.next(b);  // the failing read has run in the background by now
  EXPECT_EQ(error_of([&] { r.ahead.next(b); }), plain_error);
  {
    ReadAhead dropped(path, 5);
    for (int step = 0; step < fails_at; ++step) dropped.ahead.next(b);
  }  // destroyed with a failed read ahead: nothing thrown
}

TEST_F(PrefetchingSourceTest, HeldOutRowsReadMeanwhileAreIntact) {
  TempDir dir;
  const std::string path = write_file(dir);
  ReadAhead r(path, 11);
  Tensor b = host_tensor(2000, kD), held = host_tensor(50, kD);  // large batches: reads long enough to overlap
  for (int step = 0; step < 30; ++step) {
    r.ahead.next(b);  // the next read starts; the held-out rows are read while it runs
    EvalReader reader = r.stream.eval_reader();
    int64_t row = kTokens - 200;
    for (int64_t n; (n = reader.next(held)) > 0; row += n)
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < kD; ++c)
          ASSERT_EQ(held.host<float>()[r * kD + c], float(row + r) + float(c) / 16.f) << "held-out row " << row + r;
  }
}

// A source whose batches are filled with their number and whose cursor is {batches served}; its state() fails once
// when `fail_state_at` batches have been served.
class CountingSource final : public BatchSource {
 public:
  int64_t dim() const override { return kD; }
  void next(Tensor& b) override {
    std::fill(b.host<float>(), b.host<float>() + b.numel(), float(served_++));
  }
  std::vector<uint64_t> state() const override {
    if (served_ == fail_state_at) {
      fail_state_at = -1;
      fail("cursor unavailable at ", served_);
    }
    return {uint64_t(served_)};
  }
  void restore(const std::vector<uint64_t>& s) override { served_ = int64_t(s.at(0)); }
  mutable int64_t fail_state_at = -1;

 private:
  int64_t served_ = 0;
};

TEST(PrefetchingSourceCursor, AReaderThatCannotTakeTheCursorFailsStateOnceAndReadsNothing) {
  CountingSource inner;
  inner.fail_state_at = 2;
  PrefetchingSource ahead(inner, buffer);
  Tensor b = host_tensor(4, kD);
  ahead.next(b);
  EXPECT_EQ(b.host<float>()[0], 0.f);
  ahead.next(b);  // the reader now fails to take the cursor after 2 batches
  EXPECT_EQ(b.host<float>()[0], 1.f);
  EXPECT_NE(error_of([&] { ahead.state(); }).find("cursor unavailable at 2"), std::string::npos);
  EXPECT_EQ(ahead.state(), std::vector<uint64_t>{2});
  ahead.next(b);  // read in turn: nothing was lost or skipped
  EXPECT_EQ(b.host<float>()[0], 2.f);
  EXPECT_EQ(ahead.state(), std::vector<uint64_t>{3});
  ahead.next(b);
  EXPECT_EQ(b.host<float>()[0], 3.f);
}

TEST_F(PrefetchingSourceTest, ABatchOfAnotherShapeIsAnError) {
  TempDir dir;
  const std::string path = write_file(dir);
  ReadAhead r(path, 1);
  Tensor b = host_tensor(kBatch, kD), other = host_tensor(kBatch / 2, kD);
  r.ahead.next(b);
  EXPECT_NE(error_of([&] { r.ahead.next(other); }).find("read ahead"), std::string::npos);
}
