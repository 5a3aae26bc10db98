// Tests for the activation stream: determinism, exact resume through a checkpoint file, the train/eval split,
// sharding, the memory bound, epoch coverage and NaN/Inf detection.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include "core/h5.h"
#include "data/activation_file.h"
#include "data/activation_stream.h"
#include "error_of.h"
#include "temp_dir.h"

using namespace moesae;
using moesae::testing::TempDir;
using moesae::testing::error_of;

namespace {

constexpr int64_t kD = 4;

// Writes `tokens` rows where row r is (r, r + 0.25, r + 0.5, r + 0.75): a batch row names its file row.
// `poison` (if >= 0) puts `bad` at column 2 of that row.
std::string write_file(const TempDir& dir, const std::string& name, int64_t tokens, bool f16 = false,
                       int64_t poison = -1, float bad = 0.0f) {
  const std::string path = dir.file(name);
  ActivationWriter::Options opt;
  opt.d = kD;
  opt.f16 = f16;
  opt.chunk_rows = 64;
  ActivationWriter w(path, opt);
  Tensor t = host_tensor(tokens, kD);
  for (int64_t r = 0; r < tokens; ++r)
    for (int64_t c = 0; c < kD; ++c) t.host<float>()[r * kD + c] = static_cast<float>(r) + 0.25f * c;
  if (poison >= 0) t.host<float>()[poison * kD + 2] = bad;
  w.append(t);
  w.commit();
  return path;
}

DataConfig config(const std::string& path, int64_t buffer, int64_t chunk, int64_t eval_tokens = 0,
                  double eval_fraction = 0.05) {
  DataConfig c;
  c.path = path;
  c.shuffle_buffer = buffer;
  c.chunk_rows = chunk;
  c.eval_tokens = eval_tokens;
  c.eval_fraction = eval_fraction;
  return c;
}

// The file row ids of a batch, checking each row is intact (all columns from the same file row).
std::vector<int64_t> row_ids(const Tensor& batch) {
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < batch.rows(); ++i) {
    const float* p = batch.host<float>() + i * batch.ld();
    const int64_t r = static_cast<int64_t>(p[0]);
    for (int64_t c = 0; c < kD; ++c) EXPECT_EQ(p[c], static_cast<float>(r) + 0.25f * c) << "torn row " << r;
    ids.push_back(r);
  }
  return ids;
}

std::vector<float> draw(ActivationStream& s, int batches, int64_t batch_rows) {
  std::vector<float> all;
  Tensor b = host_tensor(batch_rows, kD);
  for (int i = 0; i < batches; ++i) {
    s.next_batch(b);
    all.insert(all.end(), b.host<float>(), b.host<float>() + b.numel());
  }
  return all;
}

}  // namespace

TEST(DataSplit, EvalTailTrainHeadAndErrors) {
  DataConfig c;
  auto s = split_rows(c, 1000, "f.h5");  // eval_fraction 0.05
  EXPECT_EQ(s.train, (RowRange{0, 950}));
  EXPECT_EQ(s.eval, (RowRange{950, 1000}));
  c.eval_tokens = 7;  // overrides the fraction
  s = split_rows(c, 1000, "f.h5");
  EXPECT_EQ(s.eval, (RowRange{993, 1000}));
  c.eval_tokens = 1000;
  EXPECT_EQ(error_of([&] { split_rows(c, 1000, "f.h5"); }),
            "'f.h5' has 1000 rows; holding out 1000 for evaluation leaves no training rows");
  c.eval_tokens = 0;
  c.eval_fraction = 1.0;
  EXPECT_NE(error_of([&] { split_rows(c, 1000, "f.h5"); }).find("data.eval_fraction must be in [0, 1)"),
            std::string::npos);
}

TEST(DataSplit, ShardsAreDisjointAndCoverTheRange) {
  const RowRange r{10, 107};
  for (int world : {1, 2, 3, 4, 7}) {
    int64_t expect_begin = r.begin;
    for (int rank = 0; rank < world; ++rank) {
      RowRange s = shard_range(r, rank, world);
      EXPECT_EQ(s.begin, expect_begin);
      EXPECT_LE(std::abs(s.size() - r.size() / world), 1);
      expect_begin = s.end;
    }
    EXPECT_EQ(expect_begin, r.end);
  }
  EXPECT_NE(error_of([&] { shard_range(r, 2, 2); }).find("invalid data shard: rank 2 of world 2"), std::string::npos);
}

TEST(ActivationStream, TrainAndEvalRowsAreDisjointAndCoverTheFile) {
  TempDir dir;
  const std::string path = write_file(dir, "a.h5", 500);
  ActivationStream s(config(path, 64, 16, /*eval_tokens=*/40), 1);
  EXPECT_EQ(s.train_rows(), (RowRange{0, 460}));
  std::set<int64_t> trained;
  Tensor b = host_tensor(32, kD);
  for (int i = 0; i < 60; ++i) {  // > 4 epochs
    s.next_batch(b);
    for (int64_t r : row_ids(b)) trained.insert(r);
  }
  EXPECT_EQ(trained.size(), 460u);
  EXPECT_EQ(*trained.rbegin(), 459);
  EvalReader e = s.eval_reader();
  std::vector<int64_t> evaluated;
  Tensor eb = host_tensor(16, kD);
  for (int64_t n; (n = e.next(eb)) > 0;) {
    auto ids = row_ids(eb.row_range(0, n));
    evaluated.insert(evaluated.end(), ids.begin(), ids.end());
  }
  ASSERT_EQ(evaluated.size(), 40u);
  for (size_t i = 0; i < evaluated.size(); ++i) EXPECT_EQ(evaluated[i], 460 + static_cast<int64_t>(i));
  e.reset();
  EXPECT_EQ(e.next(eb), 16);
  EXPECT_EQ(row_ids(eb)[0], 460);
}

TEST(ActivationStream, DeterministicInTheSeed) {
  TempDir dir;
  const std::string path = write_file(dir, "a.h5", 300);
  ActivationStream a(config(path, 50, 16), 7), b(config(path, 50, 16), 7), c(config(path, 50, 16), 8);
  const auto xa = draw(a, 20, 10), xb = draw(b, 20, 10), xc = draw(c, 20, 10);
  EXPECT_EQ(0, std::memcmp(xa.data(), xb.data(), xa.size() * sizeof(float)));
  EXPECT_NE(0, std::memcmp(xa.data(), xc.data(), xa.size() * sizeof(float)));
}

TEST(ActivationStream, BatchesAreShuffledAcrossChunks) {
  TempDir dir;
  const std::string path = write_file(dir, "a.h5", 1000);
  ActivationStream s(config(path, 256, 32), 3);
  Tensor b = host_tensor(64, kD);
  s.next_batch(b);
  std::set<int64_t> chunks;
  for (int64_t r : row_ids(b)) chunks.insert(r / 32);
  EXPECT_GE(chunks.size(), 5u);  // the first batch mixes rows of the 8 chunks in the buffer
  auto ids = row_ids(b);
  EXPECT_FALSE(std::is_sorted(ids.begin(), ids.end()));
}

// Saving the state after N batches (through a checkpoint file) and restoring it into a fresh stream yields
// exactly the batches the uninterrupted stream produces next, including across epoch boundaries.
TEST(ActivationStream, ExactResumeThroughACheckpointFile) {
  TempDir dir;
  for (bool f16 : {false, true}) {
    const std::string path = write_file(dir, f16 ? "h.h5" : "f.h5", 1000, f16);
    struct Case {
      int64_t buffer, chunk, batch;
      int before, after;
    };
    for (const Case& k : {Case{200, 64, 32, 7, 40}, Case{200, 64, 32, 0, 5}, Case{2000, 128, 100, 13, 20},
                          Case{20, 7, 50, 3, 9}}) {  // the last: buffer smaller than a batch
      const DataConfig cfg = config(path, k.buffer, k.chunk);
      ActivationStream original(cfg, 42);
      draw(original, k.before, k.batch);
      const std::string ckpt = dir.file("ckpt.h5");
      {
        h5::File f(ckpt, h5::File::Mode::Create);
        f.write_u64("data_stream", original.state().encode());
      }
      const auto expected = draw(original, k.after, k.batch);
      ActivationStream resumed(cfg, 42);
      {
        h5::File f(ckpt, h5::File::Mode::Read);
        resumed.restore(StreamState::decode(f.read_u64("data_stream"), "checkpoint"));
      }
      EXPECT_EQ(resumed.batches(), static_cast<uint64_t>(k.before));
      const auto got = draw(resumed, k.after, k.batch);
      ASSERT_EQ(got.size(), expected.size());
      EXPECT_EQ(0, std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)))
          << "buffer " << k.buffer << " chunk " << k.chunk << " batch " << k.batch << " f16 " << f16;
      EXPECT_EQ(resumed.epoch(), original.epoch());
    }
  }
}

TEST(ActivationStream, RestoreRefusesAStateFromAnotherConfiguration) {
  TempDir dir;
  const std::string path = write_file(dir, "a.h5", 300);
  ActivationStream a(config(path, 50, 16), 7);
  draw(a, 3, 10);
  const StreamState st = a.state();
  ActivationStream other_seed(config(path, 50, 16), 8);
  EXPECT_EQ(error_of([&] { other_seed.restore(st); }),
            "cannot resume the activation stream of '" + path + "': it was saved with seed 7 but the current run has 8");
  ActivationStream other_buffer(config(path, 60, 16), 7);
  EXPECT_NE(error_of([&] { other_buffer.restore(st); }).find("shuffle buffer rows 50 but the current run has 60"),
            std::string::npos);
  std::vector<uint64_t> words = st.encode();
  words.pop_back();
  EXPECT_NE(error_of([&] { StreamState::decode(words, "checkpoint 'c.h5'"); })
                .find("checkpoint 'c.h5': activation stream state is truncated"),
            std::string::npos);
  EXPECT_EQ(error_of([&] { StreamState::decode({1, 2, 3}, "checkpoint 'c.h5'"); }),
            "checkpoint 'c.h5': not an activation stream state");
}

TEST(ActivationStream, MemoryIsBoundedByTheShuffleBuffer) {
  TempDir dir;
  const std::string path = write_file(dir, "big.h5", 5000);
  ActivationStream s(config(path, 100, 32), 5);
  EXPECT_EQ(s.buffer_capacity(), 100);
  Tensor b = host_tensor(40, kD);
  for (int i = 0; i < 300; ++i) {  // > 2 epochs
    s.next_batch(b);
    EXPECT_LE(s.buffer_rows(), 100);
    EXPECT_EQ(s.buffer_rows(), 60);  // topped up to 100 before each batch of 40
  }
  EXPECT_LE(s.largest_read_rows(), 32);
  EXPECT_GE(s.epoch(), 2u);
  ActivationStream restored(config(path, 100, 32), 5);
  restored.restore(s.state());
  EXPECT_LE(restored.largest_read_rows(), 32);
  // A training range smaller than the buffer caps the buffer at the training rows.
  ActivationStream tiny(config(path, 100000, 32, /*eval_tokens=*/4950), 5);
  EXPECT_EQ(tiny.buffer_capacity(), 50);
}

TEST(ActivationStream, EveryTrainingRowIsServedOncePerEpochUpToTheBuffer) {
  TempDir dir;
  const std::string path = write_file(dir, "a.h5", 420);
  ActivationStream s(config(path, 64, 16, /*eval_tokens=*/20), 9);
  std::vector<int> served(420, 0);
  Tensor b = host_tensor(25, kD);
  for (int i = 0; i < 48; ++i) {  // 1200 rows = 3 epochs of 400
    s.next_batch(b);
    for (int64_t r : row_ids(b)) ++served[r];
  }
  for (int r = 0; r < 400; ++r) {
    EXPECT_GE(served[r], 2) << r;
    EXPECT_LE(served[r], 4) << r;
  }
  for (int r = 400; r < 420; ++r) EXPECT_EQ(served[r], 0) << "eval row " << r << " served for training";
}

TEST(ActivationStream, RanksReadDisjointSlices) {
  TempDir dir;
  const std::string path = write_file(dir, "a.h5", 330);
  std::set<int64_t> seen_by[3];
  for (int rank = 0; rank < 3; ++rank) {
    ActivationStream s(config(path, 40, 8, /*eval_tokens=*/30), 11, rank, 3);
    EXPECT_EQ(s.train_rows(), shard_range({0, 300}, rank, 3));
    Tensor b = host_tensor(20, kD);
    for (int i = 0; i < 15; ++i) {
      s.next_batch(b);
      for (int64_t r : row_ids(b)) seen_by[rank].insert(r);
    }
    EXPECT_EQ(seen_by[rank].size(), 100u);
    EXPECT_EQ(*seen_by[rank].begin(), 100 * rank);
  }
}

TEST(ActivationStream, NonFiniteValuesAreReportedWithFileAndRows) {
  TempDir dir;
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
    const std::string path = write_file(dir, "bad.h5", 200, false, /*poison=*/37, bad);
    ActivationStream s(config(path, 64, 16, /*eval_tokens=*/0, /*eval_fraction=*/0.0), 1);
    Tensor b = host_tensor(16, kD);
    const std::string msg = error_of([&] {
      for (int i = 0; i < 100; ++i) s.next_batch(b);
    });
    EXPECT_EQ(msg.rfind("non-finite value in '" + path + "' dataset 'activations' rows ", 0), 0u) << msg;
    EXPECT_NE(msg.find("(first at row 37, column 2: "), std::string::npos) << msg;
  }
}

TEST(ActivationStream, EvalReaderReportsNonFiniteRows) {
  TempDir dir;
  const std::string path =
      write_file(dir, "bad_eval.h5", 200, false, /*poison=*/195, std::numeric_limits<float>::quiet_NaN());
  ActivationStream s(config(path, 64, 16, /*eval_tokens=*/10), 1);
  EvalReader e = s.eval_reader();
  Tensor b = host_tensor(4, kD);
  EXPECT_EQ(e.next(b), 4);  // rows 190..194 are fine
  EXPECT_EQ(error_of([&] { e.next(b); }),
            "non-finite value in '" + path + "' dataset 'activations' rows 194..198 (first at row 195, column 2: nan)");
}

TEST(ActivationStream, ConfigErrorsNameTheKey) {
  TempDir dir;
  const std::string path = write_file(dir, "a.h5", 100);
  EXPECT_EQ(error_of([&] { ActivationStream s(config(path, 0, 16), 1); }), "data.shuffle_buffer must be >= 1 (got 0)");
  EXPECT_EQ(error_of([&] { ActivationStream s(config(path, 10, 0), 1); }), "data.chunk_rows must be >= 1 (got 0)");
  DataConfig c = config(path, 10, 10);
  c.dataset = "acts";
  EXPECT_EQ(error_of([&] { ActivationStream s(c, 1); }), "'" + path + "': no dataset 'acts'");
  ActivationStream s(config(path, 10, 10), 1);
  Tensor wrong = host_tensor(4, kD + 1);
  EXPECT_NE(error_of([&] { s.next_batch(wrong); }).find("need a host f32 [B, 4] tensor, got [4, 5]"),
            std::string::npos);
}
