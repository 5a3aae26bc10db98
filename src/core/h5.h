// moesae core: thin RAII layer over the HDF5 C API, used by data/ (activations), train/ (checkpoints) and run/
// (run records). Every failure throws moesae::Error naming the file and the object; HDF5's own error stack
// printing is silenced. Host-only header.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace moesae::h5 {

using hid = int64_t;  // hid_t

// Whether the HDF5 library was built thread-safe (one global lock), so that two threads may read files at once
// (Debian's is). Reading a file from a thread other than the one that opened it is then fine.
bool library_is_threadsafe();

// An open HDF5 file (closed on destruction).
class File {
 public:
  enum class Mode { Read, ReadWrite, Create /* truncates */ };
  File() = default;
  File(const std::string& path, Mode mode);
  File(File&&) noexcept;
  File& operator=(File&&) noexcept;
  File(const File&) = delete;
  ~File();
  void close();
  const std::string& path() const { return path_; }
  hid id() const { return id_; }

  bool exists(const std::string& object_path) const;  // a group or dataset ("/a/b")
  void create_group(const std::string& group_path);   // creates intermediate groups as needed

  // Datasets. Shapes are {rows} or {rows, cols}. Reading checks the stored type converts to the requested one
  // (f16 and f64 datasets read as f32).
  std::vector<int64_t> shape(const std::string& dset) const;
  std::string dtype_name(const std::string& dset) const;  // "f16", "f32", "f64", "i32", "i64", ...
  void write(const std::string& dset, const Tensor& host_tensor);  // f32 or i32; rank 1 or 2
  void write_f64(const std::string& dset, const std::vector<double>& values);
  void write_i64(const std::string& dset, const std::vector<int64_t>& values);
  void write_u64(const std::string& dset, const std::vector<uint64_t>& values);
  Tensor read(const std::string& dset) const;  // whole dataset into a new host tensor (f32 or i32)
  std::vector<double> read_f64(const std::string& dset) const;
  std::vector<int64_t> read_i64(const std::string& dset) const;
  std::vector<uint64_t> read_u64(const std::string& dset) const;
  // Rows [row0, row0 + out.rows()) of a 2-D dataset into a host f32 tensor (converting f16/f64).
  void read_rows(const std::string& dset, int64_t row0, Tensor out) const;
  // A chunked, extensible 2-D f32 dataset [0, cols] (append with append_rows) or fixed [rows, cols].
  void create_2d(const std::string& dset, int64_t rows, int64_t cols, bool f16, int64_t chunk_rows);
  void create_extensible_2d(const std::string& dset, int64_t cols, bool f16, int64_t chunk_rows);
  // A chunked, extensible 1-D dataset [0] of f32 or i32 (e.g. token ids beside activations).
  void create_extensible_1d(const std::string& dset, DType dtype, int64_t chunk_rows);
  void write_rows(const std::string& dset, int64_t row0, const Tensor& host_rows);  // converts to stored type
  void append_rows(const std::string& dset, const Tensor& host_rows);
  // read_rows / write_rows / append_rows also take rank-1 tensors (f32 or i32) for 1-D datasets.

  // Attributes on a group or dataset ("/" for the root).
  bool has_attr(const std::string& object_path, const std::string& name) const;
  void set_attr(const std::string& object_path, const std::string& name, const std::string& value);
  void set_attr(const std::string& object_path, const std::string& name, double value);
  void set_attr(const std::string& object_path, const std::string& name, int64_t value);
  std::string attr_string(const std::string& object_path, const std::string& name) const;
  double attr_double(const std::string& object_path, const std::string& name) const;
  int64_t attr_int(const std::string& object_path, const std::string& name) const;
  std::vector<std::string> attr_names(const std::string& object_path) const;
  std::vector<std::string> list(const std::string& group_path) const;  // member names

 private:
  std::string path_;
  hid id_ = -1;
};

// Writes a file atomically: the caller writes into tmp_path(); commit() flushes, closes and renames it onto the
// final path. If the writer is destroyed without commit() (an exception, a bad input), the temporary file is
// removed and whatever was at the final path is left untouched.
class AtomicWriter {
 public:
  explicit AtomicWriter(const std::string& final_path);
  ~AtomicWriter();
  File& file() { return file_; }
  const std::string& tmp_path() const { return tmp_; }
  void commit();

 private:
  std::string final_, tmp_;
  File file_;
  bool committed_ = false;
};

}  // namespace moesae::h5
