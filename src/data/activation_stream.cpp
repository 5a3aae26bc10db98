// moesae data: shuffled, resumable training batches and sequential eval batches (see activation_stream.h).
#include "data/activation_stream.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace moesae {
namespace {

constexpr uint64_t kStateMagic = 0x6d6f657361655354ull;  // "moesaeST"
constexpr uint64_t kStateVersion = 1;
constexpr size_t kStateHeaderWords = 20;

constexpr uint64_t kSamplingStream = 1, kChunkOrderStream = 2;
constexpr int64_t kParallelFloats = int64_t(1) << 16;  // smaller copies and checks run on one thread

void require_batch_tensor(const ActivationFile& file, const Tensor& out) {
  if (!out.defined() || out.device() != Device::CPU || out.dtype() != DType::F32 || out.rank() != 2 ||
      out.cols() != file.d())
    fail("'", file.path(), "': batches of dataset '", file.dataset(), "' need a host f32 [B, ", file.d(),
         "] tensor, got ", out.defined() ? out.shape_str() : std::string("an undefined tensor"));
}

}  // namespace

RowRange shard_range(RowRange range, int rank, int world) {
  if (world < 1 || rank < 0 || rank >= world) fail("invalid data shard: rank ", rank, " of world ", world);
  const int64_t n = range.size();
  const auto edge = [&](int64_t r) { return range.begin + n / world * r + std::min<int64_t>(r, n % world); };
  return {edge(rank), edge(rank + 1)};
}

DataSplit split_rows(const DataConfig& c, int64_t tokens, const std::string& path) {
  if (c.eval_tokens < 0) fail("data.eval_tokens must be >= 0 (got ", c.eval_tokens, ")");
  if (!(c.eval_fraction >= 0.0 && c.eval_fraction < 1.0))
    fail("data.eval_fraction must be in [0, 1) (got ", c.eval_fraction, ")");
  const int64_t held_out =
      c.eval_tokens > 0 ? c.eval_tokens : static_cast<int64_t>(std::floor(c.eval_fraction * tokens));
  if (tokens - held_out < 1)
    fail("'", path, "' has ", tokens, " rows; holding out ", held_out, " for evaluation leaves no training rows");
  return {{0, tokens - held_out}, {tokens - held_out, tokens}};
}

void check_finite(const ActivationFile& file, const Tensor& rows, int64_t row0) {
  const int64_t n = rows.rows(), d = rows.cols(), ld = rows.ld();
  const float* p = rows.data<float>();
  uint32_t any_bad = 0;  // a float is NaN or +-inf exactly when its exponent bits are all ones
#pragma omp parallel for schedule(static) reduction(| : any_bad) if (n * d >= kParallelFloats)
  for (int64_t r = 0; r < n; ++r) {
    const uint32_t* bits = reinterpret_cast<const uint32_t*>(p + r * ld);
    for (int64_t c = 0; c < d; ++c) any_bad |= static_cast<uint32_t>((bits[c] & 0x7f800000u) == 0x7f800000u);
  }
  if (!any_bad) return;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < d; ++c)
      if (!std::isfinite(p[r * ld + c]))
        fail("non-finite value in '", file.path(), "' dataset '", file.dataset(), "' rows ", row0, "..", row0 + n,
             " (first at row ", row0 + r, ", column ", c, ": ", p[r * ld + c], ")");
}

// ---- StreamState ---------------------------------------------------------------------------------------------

std::vector<uint64_t> StreamState::encode() const {
  std::vector<uint64_t> w = {kStateMagic, kStateVersion, seed,    rank,      world,        train_begin, train_end,
                             chunk_rows,  capacity,      epoch,   chunk_pos, chunk_offset, batches};
  w.insert(w.end(), rng.begin(), rng.end());
  w.push_back(buffer_rows.size());
  w.insert(w.end(), buffer_rows.begin(), buffer_rows.end());
  return w;
}

StreamState StreamState::decode(const std::vector<uint64_t>& w, const std::string& where) {
  if (w.size() < kStateHeaderWords || w[0] != kStateMagic)
    fail(where, ": not an activation stream state");
  if (w[1] != kStateVersion) fail(where, ": activation stream state version ", w[1], " is not supported");
  StreamState s;
  size_t i = 2;
  for (uint64_t* f : {&s.seed, &s.rank, &s.world, &s.train_begin, &s.train_end, &s.chunk_rows, &s.capacity,
                      &s.epoch, &s.chunk_pos, &s.chunk_offset, &s.batches})
    *f = w[i++];
  for (auto& r : s.rng) r = w[i++];
  const uint64_t count = w[i++];
  if (w.size() != kStateHeaderWords + count)
    fail(where, ": activation stream state is truncated (", w.size(), " words, expected ",
         kStateHeaderWords + count, ")");
  s.buffer_rows.assign(w.begin() + kStateHeaderWords, w.end());
  return s;
}

// ---- EvalReader ------------------------------------------------------------------------------------------------

EvalReader::EvalReader(std::shared_ptr<const ActivationFile> file, RowRange rows)
    : file_(std::move(file)), rows_(rows), cursor_(rows.begin) {
  if (rows.begin < 0 || rows.end > file_->tokens() || rows.begin > rows.end)
    fail("'", file_->path(), "': eval rows ", rows.begin, "..", rows.end, " are outside the dataset's ",
         file_->tokens(), " rows");
}

int64_t EvalReader::next(Tensor& out, Tensor* positions_out) {
  require_batch_tensor(*file_, out);
  const int64_t n = std::min(out.rows(), rows_.end - cursor_);
  if (n <= 0) return 0;
  Tensor part = out.row_range(0, n);
  file_->read_rows(cursor_, part);
  check_finite(*file_, part, cursor_);
  if (positions_out) {
    if (positions_out->rows() < n || positions_out->dtype() != DType::I32)
      fail("eval reader: the positions buffer must hold ", n, " i32 entries");
    file_->read_positions(cursor_, positions_out->row_range(0, n));
  }
  cursor_ += n;
  return n;
}

// ---- ActivationStream ------------------------------------------------------------------------------------------

ActivationStream::ActivationStream(const DataConfig& c, uint64_t seed, int rank, int world)
    : file_(std::make_shared<const ActivationFile>(c.path, c.dataset)),
      seed_(seed),
      rank_(rank),
      world_(world),
      rng_(mix_seed(mix_seed(seed, kSamplingStream), static_cast<uint64_t>(rank))) {
  if (c.shuffle_buffer < 1) fail("data.shuffle_buffer must be >= 1 (got ", c.shuffle_buffer, ")");
  if (c.chunk_rows < 1) fail("data.chunk_rows must be >= 1 (got ", c.chunk_rows, ")");
  split_ = split_rows(c, file_->tokens(), c.path);
  train_ = shard_range(split_.train, rank, world);
  if (train_.size() < 1)
    fail("'", c.path, "': the ", split_.train.size(), " training rows cannot be split over ", world,
         " ranks (rank ", rank, " gets none)");
  chunk_rows_ = std::min(c.chunk_rows, train_.size());
  capacity_ = std::min(c.shuffle_buffer, train_.size());
  n_chunks_ = (train_.size() + chunk_rows_ - 1) / chunk_rows_;
  buffer_ = host_tensor(capacity_, file_->d());
  ids_.assign(static_cast<size_t>(capacity_), -1);
  start_epoch(0);
}

std::vector<int64_t> ActivationStream::chunk_order(uint64_t epoch) const {
  std::vector<int64_t> order(static_cast<size_t>(n_chunks_));
  for (int64_t i = 0; i < n_chunks_; ++i) order[i] = i;
  Rng r(mix_seed(mix_seed(mix_seed(seed_, kChunkOrderStream), static_cast<uint64_t>(rank_)), epoch));
  for (int64_t i = n_chunks_ - 1; i > 0; --i) std::swap(order[i], order[r.below(static_cast<uint64_t>(i) + 1)]);
  return order;
}

void ActivationStream::start_epoch(uint64_t epoch) {
  epoch_ = epoch;
  chunk_pos_ = 0;
  chunk_offset_ = 0;
  order_ = chunk_order(epoch);
}

void ActivationStream::read_into_buffer(int64_t row0, int64_t n) {
  Tensor dst = buffer_.row_range(count_, count_ + n);
  file_->read_rows(row0, dst);
  check_finite(*file_, dst, row0);
  for (int64_t i = 0; i < n; ++i) ids_[count_ + i] = row0 + i;
  count_ += n;
  largest_read_ = std::max(largest_read_, n);
}

void ActivationStream::top_up() {
  while (count_ < capacity_) {
    const int64_t chunk_begin = train_.begin + order_[chunk_pos_] * chunk_rows_;
    const int64_t chunk_end = std::min(chunk_begin + chunk_rows_, train_.end);
    const int64_t start = chunk_begin + static_cast<int64_t>(chunk_offset_);
    const int64_t n = std::min(chunk_end - start, capacity_ - count_);
    read_into_buffer(start, n);
    chunk_offset_ += n;
    if (start + n == chunk_end) {
      chunk_offset_ = 0;
      if (++chunk_pos_ == static_cast<uint64_t>(n_chunks_)) start_epoch(epoch_ + 1);
    }
  }
}

void ActivationStream::next_batch(Tensor& out) {
  require_batch_tensor(*file_, out);
  const int64_t d = file_->d();
  const size_t row_bytes = static_cast<size_t>(d) * sizeof(float);
  float* buf = buffer_.data<float>();
  if (origin_.size() != size_t(capacity_)) {  // (the pushes below then never allocate)
    origin_.assign(size_t(capacity_), -1);
    source_.reserve(size_t(capacity_));
    moved_.reserve(size_t(capacity_));
  }
  top_up();
  for (int64_t i = 0; i < out.rows();) {
    if (count_ == 0) top_up();
    // The draws up to the next top-up: each takes a random slot into the batch and moves the last row into it. They
    // are planned on the slots first (origin_[s]: the slot whose row s holds now, -1 for its own), so that the rows
    // then move in parallel: a drawn row is still where it was when the run began, and every moved row comes from
    // past the buffer's new end, which nothing writes.
    const int64_t n = std::min(out.rows() - i, count_);
    source_.resize(size_t(n));
    moved_.clear();
    for (int64_t j = 0; j < n; ++j) {
      const int64_t slot = static_cast<int64_t>(rng_.below(static_cast<uint64_t>(count_)));
      source_[size_t(j)] = origin_[size_t(slot)] < 0 ? slot : origin_[size_t(slot)];
      --count_;
      if (slot != count_) {
        if (origin_[size_t(slot)] < 0) moved_.push_back(slot);
        origin_[size_t(slot)] = origin_[size_t(count_)] < 0 ? count_ : origin_[size_t(count_)];
        ids_[slot] = ids_[count_];
      }
    }
    float* dst = out.data<float>() + i * out.ld();
    const int64_t ld = out.ld();
    const bool parallel = n * d >= kParallelFloats;
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t j = 0; j < n; ++j) std::memcpy(dst + j * ld, buf + source_[size_t(j)] * d, row_bytes);
    const int64_t end = count_;
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t m = 0; m < int64_t(moved_.size()); ++m) {
      const int64_t slot = moved_[size_t(m)];
      if (slot < end) std::memcpy(buf + slot * d, buf + origin_[size_t(slot)] * d, row_bytes);
    }
    for (int64_t slot : moved_) origin_[size_t(slot)] = -1;
    i += n;
  }
  ++batches_;
}

StreamState ActivationStream::state() const {
  StreamState s;
  s.seed = seed_;
  s.rank = static_cast<uint64_t>(rank_);
  s.world = static_cast<uint64_t>(world_);
  s.train_begin = static_cast<uint64_t>(train_.begin);
  s.train_end = static_cast<uint64_t>(train_.end);
  s.chunk_rows = static_cast<uint64_t>(chunk_rows_);
  s.capacity = static_cast<uint64_t>(capacity_);
  s.epoch = epoch_;
  s.chunk_pos = chunk_pos_;
  s.chunk_offset = chunk_offset_;
  s.batches = batches_;
  s.rng = rng_.save();
  s.buffer_rows.assign(ids_.begin(), ids_.begin() + count_);
  return s;
}

void ActivationStream::restore(const StreamState& s) {
  const auto mismatch = [&](const char* what, uint64_t saved, uint64_t now) {
    if (saved != now)
      fail("cannot resume the activation stream of '", file_->path(), "': it was saved with ", what, " ", saved,
           " but the current run has ", now);
  };
  mismatch("seed", s.seed, seed_);
  mismatch("rank", s.rank, static_cast<uint64_t>(rank_));
  mismatch("world size", s.world, static_cast<uint64_t>(world_));
  mismatch("first training row", s.train_begin, static_cast<uint64_t>(train_.begin));
  mismatch("training row end", s.train_end, static_cast<uint64_t>(train_.end));
  mismatch("chunk_rows", s.chunk_rows, static_cast<uint64_t>(chunk_rows_));
  mismatch("shuffle buffer rows", s.capacity, static_cast<uint64_t>(capacity_));
  std::vector<int64_t> order = chunk_order(s.epoch);
  const int64_t chunk_len = [&] {
    if (s.chunk_pos >= order.size()) return int64_t{-1};
    const int64_t b = train_.begin + order[s.chunk_pos] * chunk_rows_;
    return std::min(b + chunk_rows_, train_.end) - b;
  }();
  if (chunk_len < 0 || s.chunk_offset >= static_cast<uint64_t>(chunk_len) ||
      s.buffer_rows.size() > static_cast<size_t>(capacity_))
    fail("cannot resume the activation stream of '", file_->path(), "': the saved read position is invalid");
  reload_buffer(s.buffer_rows);  // if this fails (e.g. the file changed) the stream must not be used further
  order_ = std::move(order);
  epoch_ = s.epoch;
  chunk_pos_ = s.chunk_pos;
  chunk_offset_ = s.chunk_offset;
  batches_ = s.batches;
  rng_.load(s.rng);
}

// Re-reads the rows named by `row_ids` into buffer slots 0..n-1, reading windows of at most chunk_rows rows.
void ActivationStream::reload_buffer(const std::vector<uint64_t>& row_ids) {
  const int64_t n = static_cast<int64_t>(row_ids.size()), d = file_->d();
  std::vector<std::pair<int64_t, int64_t>> by_row(static_cast<size_t>(n));  // (row id, slot)
  for (int64_t slot = 0; slot < n; ++slot) {
    const int64_t row = static_cast<int64_t>(row_ids[slot]);
    if (row < train_.begin || row >= train_.end)
      fail("cannot resume the activation stream of '", file_->path(), "': saved buffer row ", row,
           " is outside this rank's training rows ", train_.begin, "..", train_.end);
    by_row[slot] = {row, slot};
  }
  std::sort(by_row.begin(), by_row.end());
  Tensor window = host_tensor(std::min<int64_t>(chunk_rows_, std::max<int64_t>(n, 1)), d);
  for (size_t i = 0; i < by_row.size();) {
    const int64_t first = by_row[i].first;
    size_t j = i;
    while (j < by_row.size() && by_row[j].first < first + window.rows()) ++j;
    const int64_t len = by_row[j - 1].first - first + 1;
    Tensor rows = window.row_range(0, len);
    file_->read_rows(first, rows);
    check_finite(*file_, rows, first);
    largest_read_ = std::max(largest_read_, len);
    for (; i < j; ++i)
      std::memcpy(buffer_.data<float>() + by_row[i].second * d, rows.data<float>() + (by_row[i].first - first) * d,
                  static_cast<size_t>(d) * sizeof(float));
  }
  for (int64_t slot = 0; slot < n; ++slot) ids_[slot] = static_cast<int64_t>(row_ids[slot]);
  count_ = n;
}

}  // namespace moesae
