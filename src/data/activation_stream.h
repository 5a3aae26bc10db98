// moesae data: streaming training batches from an activation file with bounded memory, exact resume, and a
// held-out evaluation split.
//
// Split. The last `eval_tokens` rows of the file (or floor(eval_fraction * tokens) when eval_tokens is 0) are
// held out for evaluation; the rows before them are the training range. With data parallelism each rank takes a
// disjoint contiguous slice of the training range (shard_range).
//
// Training stream. The rank's training rows are cut into chunks of `chunk_rows` rows. Each epoch visits the
// chunks in a random order (a pure function of seed, rank and epoch) and reads each chunk front to back. Rows
// flow into a shuffle buffer of C = min(shuffle_buffer, training rows) rows. Before every batch the buffer is
// topped up to C rows from the read cursor; a batch of B rows is then drawn uniformly without replacement from
// the buffer (each draw takes a random slot and moves the last row into it). If C < B the buffer is topped up
// again whenever it empties mid-batch. At the end of the last chunk the next epoch starts.
// Memory: C x d floats plus C row ids (and 3 C more words for planning a batch's draws, whose rows then move in
// parallel), plus one transient read of at most chunk_rows rows on restore. Every read
// is at most min(chunk_rows, C) rows.
//
// Exact resume. The stream's complete state is: the read cursor (epoch, position in the epoch's chunk order,
// offset in the chunk), the sampling RNG state, the number of batches served, and the file row id of every
// buffer slot in slot order. The buffer's contents are re-read from the file by row id on restore, so a restored
// stream produces bit-identical batches to an uninterrupted one. StreamState::encode() flattens this to one u64
// vector (C + 20 words) for a checkpoint (h5::File::write_u64); it also records the seed, shard and sizes and
// restore() refuses a state taken under a different configuration.
//
// Every row read (training, restore and evaluation) is checked for NaN/Inf; the error names the file, the
// dataset, the row range read, and the first offending row and column.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "data/activation_file.h"
#include "data/config.h"

namespace moesae {

// Half-open row range [begin, end).
struct RowRange {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const RowRange& o) const { return begin == o.begin && end == o.end; }
};

// The contiguous slice of `range` owned by `rank` of `world` (slice sizes differ by at most one row).
RowRange shard_range(RowRange range, int rank, int world);

// The train/eval split of a file with `tokens` rows under `config`. Fails (naming `path`) if the split leaves
// no training rows or the config values are out of range.
struct DataSplit {
  RowRange train, eval;
};
DataSplit split_rows(const DataConfig& config, int64_t tokens, const std::string& path);

// Fails if `rows` (host f32, rows [row0, row0 + rows.rows()) of `file`) holds a NaN or an infinity.
void check_finite(const ActivationFile& file, const Tensor& rows, int64_t row0);

// The resumable position of an ActivationStream.
struct StreamState {
  // Configuration fingerprint (restore() checks it).
  uint64_t seed = 0, rank = 0, world = 1, train_begin = 0, train_end = 0, chunk_rows = 0, capacity = 0;
  // Position.
  uint64_t epoch = 0, chunk_pos = 0, chunk_offset = 0, batches = 0;
  std::array<uint64_t, 6> rng{};
  std::vector<uint64_t> buffer_rows;  // file row id of each buffer slot, in slot order

  std::vector<uint64_t> encode() const;
  // `where` names the source in errors (e.g. "checkpoint 'run/ckpt.h5' dataset 'data_stream'").
  static StreamState decode(const std::vector<uint64_t>& words, const std::string& where);
};

// Sequential batches over a fixed row range (the held-out split), checked for NaN/Inf.
class EvalReader {
 public:
  EvalReader(std::shared_ptr<const ActivationFile> file, RowRange rows);
  // Fills the first n rows of `host_out` ([B, d] host f32) with the next rows and returns n (<= B; 0 at the end).
  // With `positions_out` (host i32 [>= B]), also their context positions (the file must have them).
  int64_t next(Tensor& host_out, Tensor* positions_out = nullptr);
  bool has_positions() const { return file_->has_positions(); }
  void reset() { cursor_ = rows_.begin; }
  RowRange rows() const { return rows_; }

 private:
  std::shared_ptr<const ActivationFile> file_;
  RowRange rows_;
  int64_t cursor_;
};

// Shuffled training batches for one rank (see the top of this file).
class ActivationStream {
 public:
  ActivationStream(const DataConfig& config, uint64_t seed, int rank = 0, int world = 1);

  int64_t d() const { return file_->d(); }
  const ActivationFile& file() const { return *file_; }
  RowRange train_rows() const { return train_; }  // this rank's slice of the training range
  RowRange eval_rows() const { return split_.eval; }  // the whole held-out range (shard it with shard_range)
  DataSplit split() const { return split_; }

  // Fills `host_out` (host f32 [B, d], any row stride) with the next batch.
  void next_batch(Tensor& host_out);
  // Sequential reader over the held-out rows.
  EvalReader eval_reader() const { return EvalReader(file_, split_.eval); }

  StreamState state() const;
  void restore(const StreamState& state);

  uint64_t batches() const { return batches_; }
  uint64_t epoch() const { return epoch_; }
  int64_t buffer_capacity() const { return capacity_; }
  int64_t buffer_rows() const { return count_; }
  int64_t largest_read_rows() const { return largest_read_; }  // the most rows any single read has fetched

 private:
  void top_up();
  std::vector<int64_t> chunk_order(uint64_t epoch) const;  // a pure function of seed, rank and epoch
  void start_epoch(uint64_t epoch);
  void read_into_buffer(int64_t row0, int64_t n);
  void reload_buffer(const std::vector<uint64_t>& row_ids);

  std::shared_ptr<const ActivationFile> file_;
  DataSplit split_;
  RowRange train_;
  uint64_t seed_;
  int rank_, world_;
  int64_t chunk_rows_, capacity_, n_chunks_;
  std::vector<int64_t> order_;  // this epoch's chunk order
  uint64_t epoch_ = 0, chunk_pos_ = 0, chunk_offset_ = 0, batches_ = 0;
  Rng rng_;
  Tensor buffer_;                // [capacity, d]
  std::vector<int64_t> ids_;     // file row of each buffer slot
  int64_t count_ = 0;            // filled slots
  // next_batch's plan of a run of draws: where each slot's row is (-1: in place), the buffer slot of each drawn row,
  // and the slots whose row moved.
  std::vector<int64_t> origin_, source_, moved_;
  int64_t largest_read_ = 0;
};

}  // namespace moesae
