// moesae data: an activation dataset on disk. One HDF5 file holds a 2-D dataset [tokens, d] (f32 or f16,
// chunked along tokens), string attributes on that dataset naming where the activations came from (model, layer,
// hook, tokenizer; all optional on read), and optionally i32 datasets beside it: `token_ids` [tokens] (the input
// token of each row) and `positions` [tokens] (each row's position in its model context; 0 marks the first position,
// whose residual norm is much larger, so metrics can be reported without it).
// ActivationWriter creates such a file atomically (nothing appears at the path until commit()); ActivationFile
// opens one for reading and validates its shape and type.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/h5.h"
#include "core/tensor.h"

namespace moesae {

// Where the activations came from. Stored as string attributes of the activation dataset.
struct ActivationMeta {
  std::string model;
  std::string layer;
  std::string hook;
  std::string tokenizer;
};

// Creates an activation file: append rows (and token ids) in pieces of any size, then commit().
class ActivationWriter {
 public:
  struct Options {
    int64_t d = 0;                         // columns of the activation dataset
    bool f16 = false;                      // store as IEEE half (rows are given as f32 and converted)
    bool token_ids = false;                // also write `token_ids` [tokens] i32 (append() must then pass them)
    bool positions = false;                // also write `positions` [tokens] i32 (append() must then pass them)
    int64_t chunk_rows = 0;                // HDF5 storage chunk rows; 0 = about 1 MiB per chunk
    std::string dataset = "activations";
    ActivationMeta meta;
  };
  ActivationWriter(const std::string& path, const Options& options);

  // Appends rows [n, d] (host f32). With token_ids / positions enabled, `token_ids` / `positions` (host i32 [n])
  // must be given.
  void append(const Tensor& rows);
  void append(const Tensor& rows, const Tensor& token_ids, const Tensor& positions = Tensor());
  int64_t rows() const { return rows_; }
  // The file being written, for extra datasets and attributes (e.g. synthetic ground truth).
  h5::File& file() { return writer_.file(); }
  const std::string& dataset() const { return options_.dataset; }
  // Flushes, closes and renames the file onto its final path. Without commit() nothing is left behind.
  void commit();

 private:
  std::string path_;
  Options options_;
  h5::AtomicWriter writer_;
  int64_t rows_ = 0;
};

// Reads an activation file. The constructor checks the dataset exists, is 2-D and holds floats.
class ActivationFile {
 public:
  explicit ActivationFile(const std::string& path, const std::string& dataset = "activations");

  const std::string& path() const { return path_; }
  const std::string& dataset() const { return dataset_; }
  int64_t tokens() const { return tokens_; }
  int64_t d() const { return d_; }
  bool f16() const { return f16_; }
  const ActivationMeta& meta() const { return meta_; }
  bool has_token_ids() const { return has_token_ids_; }
  bool has_positions() const { return has_positions_; }

  // Fails with a message naming the file if d() != expected_d (`who` says what expects it, e.g. "the SAE").
  void expect_d(int64_t expected_d, const std::string& who = "the model") const;
  // Rows [row0, row0 + out.rows()) into a host f32 tensor [n, d] (any row stride).
  void read_rows(int64_t row0, Tensor out) const;
  // Token ids of rows [row0, row0 + out.rows()) into a host i32 vector.
  void read_token_ids(int64_t row0, Tensor out) const;
  // Context positions of rows [row0, row0 + out.rows()) into a host i32 vector.
  void read_positions(int64_t row0, Tensor out) const;
  h5::File& file() { return file_; }
  const h5::File& file() const { return file_; }
  // A string or integer attribute of the activation dataset as text ("" when absent).
  std::string attribute(const std::string& name) const;

 private:
  std::string path_, dataset_;
  h5::File file_;
  int64_t tokens_ = 0, d_ = 0;
  bool f16_ = false, has_token_ids_ = false, has_positions_ = false;
  ActivationMeta meta_;
};

}  // namespace moesae
