// moesae data: activation file writer and reader (see activation_file.h).
#include "data/activation_file.h"

#include <algorithm>

namespace moesae {
namespace {

// `token_ids` and `positions` live beside the activation dataset (same group).
std::string sibling_path(const std::string& dataset, const char* name) {
  const size_t slash = dataset.rfind('/');
  return slash == std::string::npos ? std::string(name) : dataset.substr(0, slash + 1) + name;
}
std::string token_ids_path(const std::string& dataset) { return sibling_path(dataset, "token_ids"); }
std::string positions_path(const std::string& dataset) { return sibling_path(dataset, "positions"); }

// About 1 MiB per storage chunk, at least 1 row.
int64_t default_chunk_rows(int64_t d, bool f16) {
  const int64_t row_bytes = std::max<int64_t>(d, 1) * (f16 ? 2 : 4);
  return std::clamp<int64_t>((int64_t{1} << 20) / row_bytes, 1, 65536);
}

}  // namespace

// ---- writer ------------------------------------------------------------------------------------------------------

ActivationWriter::ActivationWriter(const std::string& path, const Options& options)
    : path_(path), options_(options), writer_(path) {
  if (options_.d < 1) fail("'", path, "': activation dimension d must be >= 1 (got ", options_.d, ")");
  const int64_t chunk = options_.chunk_rows > 0 ? options_.chunk_rows : default_chunk_rows(options_.d, options_.f16);
  h5::File& f = writer_.file();
  f.create_extensible_2d(options_.dataset, options_.d, options_.f16, chunk);
  if (options_.token_ids) f.create_extensible_1d(token_ids_path(options_.dataset), DType::I32, chunk);
  if (options_.positions) f.create_extensible_1d(positions_path(options_.dataset), DType::I32, chunk);
  const ActivationMeta& m = options_.meta;
  f.set_attr(options_.dataset, "model", m.model);
  f.set_attr(options_.dataset, "layer", m.layer);
  f.set_attr(options_.dataset, "hook", m.hook);
  f.set_attr(options_.dataset, "tokenizer", m.tokenizer);
}

void ActivationWriter::append(const Tensor& rows) {
  if (options_.token_ids)
    fail("'", path_, "': this activation file records token ids; append(rows, token_ids) must be used");
  append(rows, Tensor());
}

void ActivationWriter::append(const Tensor& rows, const Tensor& token_ids, const Tensor& positions) {
  if (rows.rank() != 2 || rows.cols() != options_.d || rows.dtype() != DType::F32)
    fail("'", path_, "': cannot append ", rows.shape_str(), " ", dtype_name(rows.dtype()), " rows to dataset '",
         options_.dataset, "' of f32 rows with d=", options_.d);
  // A per-row i32 side dataset: one entry per appended row.
  auto append_side = [&](const Tensor& values, const char* what, const std::string& dataset) {
    if (!values.defined() || values.rank() != 1 || values.rows() != rows.rows() || values.dtype() != DType::I32)
      fail("'", path_, "': appending ", rows.rows(), " rows needs ", rows.rows(), " i32 ", what, " (got ",
           values.defined() ? values.shape_str() : std::string("none"), ")");
    writer_.file().append_rows(dataset, values);
  };
  if (options_.token_ids) append_side(token_ids, "token ids", token_ids_path(options_.dataset));
  if (options_.positions) append_side(positions, "positions", positions_path(options_.dataset));
  writer_.file().append_rows(options_.dataset, rows);
  rows_ += rows.rows();
}

void ActivationWriter::commit() { writer_.commit(); }

// ---- reader ------------------------------------------------------------------------------------------------------

ActivationFile::ActivationFile(const std::string& path, const std::string& dataset)
    : path_(path), dataset_(dataset), file_(path, h5::File::Mode::Read) {
  const auto shape = file_.shape(dataset);  // fails with "'<path>': no dataset '<name>'" if missing
  if (shape.size() != 2) {
    std::string s;
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    fail("'", path, "': dataset '", dataset, "' is ", shape.size(), "-D (shape [", s,
         "]); activations must be 2-D [tokens, d]");
  }
  const std::string type = file_.dtype_name(dataset);
  if (type != "f32" && type != "f16" && type != "f64")
    fail("'", path, "': dataset '", dataset, "' holds ", type, "; activations must be f32 or f16");
  tokens_ = shape[0];
  d_ = shape[1];
  f16_ = type == "f16";
  if (d_ < 1) fail("'", path, "': dataset '", dataset, "' has d=0 columns");
  // Attributes live on the dataset; files written by other tools may keep them on the root group instead.
  const auto attr = [&](const char* name) -> std::string {
    if (file_.has_attr(dataset, name)) return file_.attr_string(dataset, name);
    if (file_.has_attr("/", name)) return file_.attr_string("/", name);
    return "";
  };
  meta_ = {attr("model"), attr("layer"), attr("hook"), attr("tokenizer")};
  // Optional per-row side datasets: present and one entry per activation row, or absent.
  const auto side = [&](const std::string& name) {
    if (!file_.exists(name)) return false;
    const auto shape = file_.shape(name);
    if (shape.size() != 1 || shape[0] != tokens_)
      fail("'", path, "': dataset '", name, "' must be 1-D with ", tokens_, " entries (one per activation row)");
    return true;
  };
  has_token_ids_ = side(token_ids_path(dataset));
  has_positions_ = side(positions_path(dataset));
}

void ActivationFile::expect_d(int64_t expected_d, const std::string& who) const {
  if (d_ != expected_d)
    fail("'", path_, "': dataset '", dataset_, "' has d=", d_, " but ", who, " expects d=", expected_d);
}

void ActivationFile::read_rows(int64_t row0, Tensor out) const {
  if (out.rank() != 2 || out.cols() != d_ || out.dtype() != DType::F32)
    fail("'", path_, "': dataset '", dataset_, "' has d=", d_, "; cannot read rows into a ", out.shape_str(), " ",
         dtype_name(out.dtype()), " tensor");
  file_.read_rows(dataset_, row0, out);
}

void ActivationFile::read_token_ids(int64_t row0, Tensor out) const {
  if (!has_token_ids_) fail("'", path_, "': no dataset '", token_ids_path(dataset_), "'");
  file_.read_rows(token_ids_path(dataset_), row0, out);
}

std::string ActivationFile::attribute(const std::string& name) const {
  if (!file_.has_attr(dataset_, name)) return "";
  try {
    return file_.attr_string(dataset_, name);
  } catch (const Error&) {
    return std::to_string(file_.attr_int(dataset_, name));
  }
}

void ActivationFile::read_positions(int64_t row0, Tensor out) const {
  if (!has_positions_) fail("'", path_, "': no dataset '", positions_path(dataset_), "'");
  file_.read_rows(positions_path(dataset_), row0, out);
}

}  // namespace moesae
