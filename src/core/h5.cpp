// moesae core: the HDF5 wrapper (see h5.h). f16 data is stored as a 16-bit IEEE half type (h5py reads it as
// float16); the f32 <-> f16 conversion is done here (round to nearest even) rather than by HDF5's slow generic
// float converter.
#include "core/h5.h"

#include <fcntl.h>
#include <unistd.h>

#include <hdf5.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

namespace moesae::h5 {
namespace {

static_assert(sizeof(hid) == sizeof(hid_t), "h5::hid must match hid_t");

// ---- HDF5 error handling -----------------------------------------------------------------------------------------

void silence_hdf5_errors() {  // per thread: a thread-safe HDF5 keeps the setting per thread
  static thread_local const bool once = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)once;
}

herr_t keep_innermost(unsigned, const H5E_error2_t* err, void* out) {
  if (err->desc && err->desc[0]) *static_cast<std::string*>(out) = err->desc;
  return 0;
}

// The innermost message of HDF5's error stack (the most specific one), or a generic phrase.
std::string hdf5_reason() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, keep_innermost, &msg);
  H5Eclear2(H5E_DEFAULT);
  return msg.empty() ? std::string("HDF5 error") : msg;
}

// ---- RAII handle ---------------------------------------------------------------------------------------------------

class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() {
    if (id_ >= 0) closer_(id_);
  }
  hid_t get() const { return id_; }
  bool ok() const { return id_ >= 0; }

 private:
  hid_t id_;
  Closer closer_;
};

// ---- f16 ------------------------------------------------------------------------------------------------------

// A 16-bit IEEE half float type: sign bit 15, exponent bits 10..14 (bias 15), mantissa bits 0..9.
hid_t half_type() {
  static const hid_t t = [] {
    hid_t h = H5Tcopy(H5T_IEEE_F32LE);
    H5Tset_fields(h, 15, 10, 5, 0, 10);
    H5Tset_size(h, 2);
    H5Tset_ebias(h, 15);
    H5Tset_precision(h, 16);
    return h;
  }();
  return t;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t mant = x & 0x7fffffu;
  const int32_t exp = static_cast<int32_t>((x >> 23) & 0xffu);
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u | (mant >> 13) : 0u));
  const int32_t e = exp - 127 + 15;
  if (e >= 0x1f) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (e <= 0) {                                                  // half subnormal or zero
    if (e < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    const int shift = 14 - e;
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = sign | (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is still correct
  return static_cast<uint16_t>(h);
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  if (exp == 0) {
    float v = static_cast<float>(mant) * 5.9604644775390625e-8f;  // mant * 2^-24, exact
    return sign ? -v : v;
  }
  uint32_t x = exp == 0x1f ? (sign | 0x7f800000u | (mant << 13)) : (sign | ((exp + 112) << 23) | (mant << 13));
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

// ---- small helpers -------------------------------------------------------------------------------------------------

std::string join_shape(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

hid_t link_create_plist() {
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  return lcpl;
}

// Describes a stored type: "f16", "f32", "f64", "i8".."i64", "u8".."u64", "string", or "other".
std::string type_name(hid_t t) {
  const H5T_class_t cls = H5Tget_class(t);
  const size_t size = H5Tget_size(t);
  if (cls == H5T_FLOAT) {
    if (size == 2) return "f16";
    if (size == 4) return "f32";
    if (size == 8) return "f64";
    return "f" + std::to_string(size * 8);
  }
  if (cls == H5T_INTEGER) return (H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "i") + std::to_string(size * 8);
  if (cls == H5T_STRING) return "string";
  return "other";
}

bool is_half(hid_t t) { return H5Tget_class(t) == H5T_FLOAT && H5Tget_size(t) == 2; }

}  // namespace

bool library_is_threadsafe() {
  hbool_t yes = 0;
  return H5is_library_threadsafe(&yes) >= 0 && yes;
}

// ---- File --------------------------------------------------------------------------------------------------------

File::File(const std::string& path, Mode mode) : path_(path) {
  silence_hdf5_errors();
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
#if H5_VERSION_GE(1, 10, 7)
  H5Pset_file_locking(fapl.get(), 1, 1);  // lock where the file system supports it (not all cluster FSs do)
#endif
  if (mode == Mode::Create) {
    id_ = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
    if (id_ < 0) fail("cannot create HDF5 file '", path, "': ", hdf5_reason());
    return;
  }
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail("cannot open HDF5 file '", path, "': no such file");
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    fail("cannot open HDF5 file '", path, "': not an HDF5 file");
  }
  id_ = H5Fopen(path.c_str(), mode == Mode::Read ? H5F_ACC_RDONLY : H5F_ACC_RDWR, fapl.get());
  if (id_ < 0) fail("cannot open HDF5 file '", path, "': ", hdf5_reason());
}

File::File(File&& o) noexcept : path_(std::move(o.path_)), id_(o.id_) { o.id_ = -1; }

File& File::operator=(File&& o) noexcept {
  if (this != &o) {
    if (id_ >= 0) H5Fclose(id_);
    path_ = std::move(o.path_);
    id_ = o.id_;
    o.id_ = -1;
  }
  return *this;
}

File::~File() {
  if (id_ >= 0) H5Fclose(id_);
}

void File::close() {
  if (id_ < 0) return;
  H5Fflush(id_, H5F_SCOPE_LOCAL);
  const herr_t rc = H5Fclose(id_);
  id_ = -1;
  if (rc < 0) fail("cannot close HDF5 file '", path_, "': ", hdf5_reason());
}

static void require_open(const std::string& path, hid id) {
  if (id < 0) fail("HDF5 file '", path, "' is not open");
}

bool File::exists(const std::string& object_path) const {
  require_open(path_, id_);
  size_t pos = 0;
  std::string prefix;
  while (pos <= object_path.size()) {
    size_t next = object_path.find('/', pos);
    if (next == std::string::npos) next = object_path.size();
    const std::string part = object_path.substr(pos, next - pos);
    pos = next + 1;
    if (part.empty()) continue;
    prefix += "/" + part;
    const htri_t e = H5Lexists(id_, prefix.c_str(), H5P_DEFAULT);
    if (e <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
  }
  if (prefix.empty()) return true;  // the root group
  const htri_t o = H5Oexists_by_name(id_, prefix.c_str(), H5P_DEFAULT);
  H5Eclear2(H5E_DEFAULT);
  return o > 0;
}

void File::create_group(const std::string& group_path) {
  require_open(path_, id_);
  if (exists(group_path)) return;
  Handle lcpl(link_create_plist(), H5Pclose);
  Handle g(H5Gcreate2(id_, group_path.c_str(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  if (!g.ok()) fail("'", path_, "': cannot create group '", group_path, "': ", hdf5_reason());
}

// ---- dataset helpers -------------------------------------------------------------------------------------------

namespace {

hid_t open_dataset(const File& f, const std::string& dset) {
  if (!f.exists(dset)) fail("'", f.path(), "': no dataset '", dset, "'");
  hid_t d = H5Dopen2(f.id(), dset.c_str(), H5P_DEFAULT);
  if (d < 0) fail("'", f.path(), "': cannot open dataset '", dset, "': ", hdf5_reason());
  return d;
}

std::vector<int64_t> dataspace_dims(hid_t space) {
  const int rank = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> dims(rank > 0 ? rank : 0);
  if (rank > 0) H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

// Replaces an existing dataset of another shape or type; returns an open dataset of `file_type` and `dims`.
hid_t create_or_reuse(const File& f, const std::string& dset, hid_t file_type, const std::vector<hsize_t>& dims) {
  if (f.exists(dset)) {
    Handle d(H5Dopen2(f.id(), dset.c_str(), H5P_DEFAULT), H5Dclose);
    if (d.ok()) {
      Handle space(H5Dget_space(d.get()), H5Sclose);
      Handle type(H5Dget_type(d.get()), H5Tclose);
      const auto old = dataspace_dims(space.get());
      const bool same_shape = old == std::vector<int64_t>(dims.begin(), dims.end());
      if (same_shape && H5Tequal(type.get(), file_type) > 0) return H5Dopen2(f.id(), dset.c_str(), H5P_DEFAULT);
    }
    if (H5Ldelete(f.id(), dset.c_str(), H5P_DEFAULT) < 0)
      fail("'", f.path(), "': cannot replace dataset '", dset, "': ", hdf5_reason());
  }
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  Handle lcpl(link_create_plist(), H5Pclose);
  hid_t d = H5Dcreate2(f.id(), dset.c_str(), file_type, space.get(), lcpl.get(), H5P_DEFAULT, H5P_DEFAULT);
  if (d < 0) fail("'", f.path(), "': cannot create dataset '", dset, "': ", hdf5_reason());
  return d;
}

void write_whole(const File& f, const std::string& dset, hid_t file_type, hid_t mem_type,
                 const std::vector<hsize_t>& dims, const void* data) {
  Handle d(create_or_reuse(f, dset, file_type, dims), H5Dclose);
  hsize_t n = 1;
  for (hsize_t x : dims) n *= x;
  if (n == 0) return;
  if (H5Dwrite(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    fail("'", f.path(), "': cannot write dataset '", dset, "': ", hdf5_reason());
}

template <typename T>
std::vector<T> read_whole(const File& f, const std::string& dset, hid_t mem_type, H5T_class_t want,
                          const char* want_name) {
  Handle d(open_dataset(f, dset), H5Dclose);
  Handle type(H5Dget_type(d.get()), H5Tclose);
  if (H5Tget_class(type.get()) != want)
    fail("'", f.path(), "': dataset '", dset, "' has type ", type_name(type.get()), "; expected ", want_name);
  Handle space(H5Dget_space(d.get()), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space.get());
  std::vector<T> out(static_cast<size_t>(n > 0 ? n : 0));
  if (!out.empty() && H5Dread(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
    fail("'", f.path(), "': cannot read dataset '", dset, "': ", hdf5_reason());
  return out;
}

// A contiguous copy of a (possibly strided) host tensor's elements, or nullptr if already contiguous.
const void* contiguous_data(const Tensor& t, std::vector<uint32_t>& scratch) {
  if (t.contiguous()) return t.data<void>();
  scratch.resize(static_cast<size_t>(t.numel()));
  for (int64_t r = 0; r < t.rows(); ++r)
    std::memcpy(scratch.data() + r * t.cols(), t.data<uint32_t>() + r * t.ld(), t.cols() * 4);
  return scratch.data();
}

void require_host(const File& f, const std::string& dset, const Tensor& t) {
  if (!t.defined()) fail("'", f.path(), "': dataset '", dset, "': tensor is undefined");
  if (t.device() != Device::CPU)
    fail("'", f.path(), "': dataset '", dset, "': tensor is on ", device_name(t.device()), "; copy it to the host");
}

}  // namespace

std::vector<int64_t> File::shape(const std::string& dset) const {
  require_open(path_, id_);
  Handle d(open_dataset(*this, dset), H5Dclose);
  Handle space(H5Dget_space(d.get()), H5Sclose);
  return dataspace_dims(space.get());
}

std::string File::dtype_name(const std::string& dset) const {
  require_open(path_, id_);
  Handle d(open_dataset(*this, dset), H5Dclose);
  Handle type(H5Dget_type(d.get()), H5Tclose);
  return type_name(type.get());
}

void File::write(const std::string& dset, const Tensor& t) {
  require_open(path_, id_);
  require_host(*this, dset, t);
  std::vector<hsize_t> dims = t.rank() == 1 ? std::vector<hsize_t>{static_cast<hsize_t>(t.rows())}
                                            : std::vector<hsize_t>{static_cast<hsize_t>(t.rows()),
                                                                   static_cast<hsize_t>(t.cols())};
  const bool f32 = t.dtype() == DType::F32;
  std::vector<uint32_t> scratch;
  write_whole(*this, dset, f32 ? H5T_IEEE_F32LE : H5T_STD_I32LE, f32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT32, dims,
              contiguous_data(t, scratch));
}

void File::write_f64(const std::string& dset, const std::vector<double>& v) {
  require_open(path_, id_);
  write_whole(*this, dset, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, {v.size()}, v.data());
}

void File::write_i64(const std::string& dset, const std::vector<int64_t>& v) {
  require_open(path_, id_);
  write_whole(*this, dset, H5T_STD_I64LE, H5T_NATIVE_INT64, {v.size()}, v.data());
}

void File::write_u64(const std::string& dset, const std::vector<uint64_t>& v) {
  require_open(path_, id_);
  write_whole(*this, dset, H5T_STD_U64LE, H5T_NATIVE_UINT64, {v.size()}, v.data());
}

Tensor File::read(const std::string& dset) const {
  require_open(path_, id_);
  Handle d(open_dataset(*this, dset), H5Dclose);
  Handle type(H5Dget_type(d.get()), H5Tclose);
  Handle space(H5Dget_space(d.get()), H5Sclose);
  const auto dims = dataspace_dims(space.get());
  if (dims.size() != 1 && dims.size() != 2)
    fail("'", path_, "': dataset '", dset, "' has shape ", join_shape(dims), "; expected 1-D or 2-D");
  const H5T_class_t cls = H5Tget_class(type.get());
  const size_t size = H5Tget_size(type.get());
  const bool is_signed = cls == H5T_INTEGER && H5Tget_sign(type.get()) != H5T_SGN_NONE;
  const bool as_i32 = cls == H5T_INTEGER && (is_signed ? size <= 4 : size <= 2);
  if (cls != H5T_FLOAT && !as_i32)
    fail("'", path_, "': dataset '", dset, "' has type ", type_name(type.get()), "; expected a float type or i32");
  const DType dt = cls == H5T_FLOAT ? DType::F32 : DType::I32;
  Tensor out = dims.size() == 1 ? host_vector(dims[0], dt) : host_tensor(dims[0], dims[1], dt);
  if (out.numel() == 0) return out;
  herr_t rc;
  if (is_half(type.get())) {
    std::vector<uint16_t> raw(static_cast<size_t>(out.numel()));
    rc = H5Dread(d.get(), half_type(), H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data());
    for (size_t i = 0; i < raw.size(); ++i) out.data<float>()[i] = half_to_float(raw[i]);
  } else {
    rc = H5Dread(d.get(), dt == DType::F32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                 out.data<void>());
  }
  if (rc < 0) fail("'", path_, "': cannot read dataset '", dset, "': ", hdf5_reason());
  return out;
}

std::vector<double> File::read_f64(const std::string& dset) const {
  require_open(path_, id_);
  return read_whole<double>(*this, dset, H5T_NATIVE_DOUBLE, H5T_FLOAT, "a float type");
}

std::vector<int64_t> File::read_i64(const std::string& dset) const {
  require_open(path_, id_);
  return read_whole<int64_t>(*this, dset, H5T_NATIVE_INT64, H5T_INTEGER, "an integer type");
}

std::vector<uint64_t> File::read_u64(const std::string& dset) const {
  require_open(path_, id_);
  return read_whole<uint64_t>(*this, dset, H5T_NATIVE_UINT64, H5T_INTEGER, "an integer type");
}

// ---- row ranges ---------------------------------------------------------------------------------------------------

namespace {

struct RowIo {
  hid_t mem_type;
  bool half;
};

// Checks that `t` (rank 1 for 1-D datasets, rank 2 with matching cols for 2-D) fits rows [row0, row0+rows)
// of the dataset and that its dtype matches the stored type class. Returns the file dataspace with the rows
// selected.
hid_t select_rows(const File& f, const std::string& dset, hid_t d, const Tensor& t, int64_t row0, bool for_write,
                  RowIo& io) {
  Handle type(H5Dget_type(d), H5Tclose);
  hid_t space = H5Dget_space(d);
  const auto dims = dataspace_dims(space);
  const auto bad = [&](const std::string& why) {
    H5Sclose(space);
    fail("'", f.path(), "': dataset '", dset, "' ", why);
  };
  if (dims.size() == 2) {
    if (t.rank() != 2 || t.cols() != dims[1])
      bad("has shape " + join_shape(dims) + " but the " + (for_write ? "source" : "destination") + " is " +
          t.shape_str());
  } else if (dims.size() == 1) {
    if (t.rank() != 1) bad("is 1-D but the tensor is " + t.shape_str());
  } else {
    bad("has shape " + join_shape(dims) + "; expected 1-D or 2-D");
  }
  if (row0 < 0 || row0 + t.rows() > dims[0])
    bad("has " + std::to_string(dims[0]) + " rows; rows " + std::to_string(row0) + ".." +
        std::to_string(row0 + t.rows()) + " are out of range");
  const H5T_class_t cls = H5Tget_class(type.get());
  if (t.dtype() == DType::F32 && cls != H5T_FLOAT)
    bad("has type " + type_name(type.get()) + "; expected a float type");
  if (t.dtype() == DType::I32 && cls != H5T_INTEGER)
    bad("has type " + type_name(type.get()) + "; expected an integer type");
  io.half = is_half(type.get());
  io.mem_type = t.dtype() == DType::F32 ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT32;
  hsize_t start[2] = {static_cast<hsize_t>(row0), 0};
  hsize_t count[2] = {static_cast<hsize_t>(t.rows()), dims.size() == 2 ? static_cast<hsize_t>(dims[1]) : 1};
  H5Sselect_hyperslab(space, H5S_SELECT_SET, start, nullptr, count, nullptr);
  return space;
}

// A memory dataspace shaped like the tensor's elements ([rows] or [rows, cols], packed). Matching the file
// selection's rank lets HDF5 take its fast contiguous path.
hid_t packed_memory_space(const Tensor& t) {
  const hsize_t dims[2] = {static_cast<hsize_t>(t.rows()), static_cast<hsize_t>(t.cols())};
  return H5Screate_simple(t.rank(), dims, nullptr);
}

}  // namespace

void File::read_rows(const std::string& dset, int64_t row0, Tensor out) const {
  silence_hdf5_errors();  // (the reading thread may not be the one that opened the file)
  require_open(path_, id_);
  require_host(*this, dset, out);
  Handle d(open_dataset(*this, dset), H5Dclose);
  RowIo io{};
  Handle fspace(select_rows(*this, dset, d.get(), out, row0, false, io), H5Sclose);
  if (out.numel() == 0) return;
  herr_t rc;
  if (io.half) {
    std::vector<uint16_t> raw(static_cast<size_t>(out.numel()));
    Handle mspace(packed_memory_space(out), H5Sclose);
    rc = H5Dread(d.get(), half_type(), mspace.get(), fspace.get(), H5P_DEFAULT, raw.data());
    if (rc >= 0) {
      const int64_t cols = out.rank() == 2 ? out.cols() : 1, ld = out.rank() == 2 ? out.ld() : 1;
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < out.rows(); ++r) {
        float* dst = out.data<float>() + r * ld;
        const uint16_t* src = raw.data() + r * cols;
        for (int64_t c = 0; c < cols; ++c) dst[c] = half_to_float(src[c]);
      }
    }
  } else if (out.contiguous()) {
    Handle mspace(packed_memory_space(out), H5Sclose);
    rc = H5Dread(d.get(), io.mem_type, mspace.get(), fspace.get(), H5P_DEFAULT, out.data<void>());
  } else {  // a strided 2-D view: select the leading cols of each row of a [rows, ld] memory block
    hsize_t mdims[2] = {static_cast<hsize_t>(out.rows()), static_cast<hsize_t>(out.ld())};
    Handle mspace(H5Screate_simple(2, mdims, nullptr), H5Sclose);
    hsize_t start[2] = {0, 0}, count[2] = {static_cast<hsize_t>(out.rows()), static_cast<hsize_t>(out.cols())};
    H5Sselect_hyperslab(mspace.get(), H5S_SELECT_SET, start, nullptr, count, nullptr);
    rc = H5Dread(d.get(), io.mem_type, mspace.get(), fspace.get(), H5P_DEFAULT, out.data<void>());
  }
  if (rc < 0)
    fail("'", path_, "': cannot read rows ", row0, "..", row0 + out.rows(), " of dataset '", dset,
         "': ", hdf5_reason());
}

static void create_chunked(const File& f, const std::string& dset, hid_t file_type, std::vector<hsize_t> dims,
                           std::vector<hsize_t> maxdims, int64_t chunk_rows) {
  if (f.exists(dset)) fail("'", f.path(), "': dataset '", dset, "' already exists");
  const hsize_t row_bytes = H5Tget_size(file_type) * (dims.size() == 2 ? std::max<hsize_t>(dims[1], 1) : 1);
  hsize_t rows = static_cast<hsize_t>(std::max<int64_t>(chunk_rows, 1));
  rows = std::min<hsize_t>(rows, std::max<hsize_t>(1, (hsize_t{1} << 31) / row_bytes));  // HDF5: chunks < 4 GiB
  if (maxdims[0] != H5S_UNLIMITED) rows = std::min<hsize_t>(rows, std::max<hsize_t>(dims[0], 1));
  std::vector<hsize_t> chunk = dims;
  chunk[0] = rows;
  if (chunk.size() == 2) chunk[1] = std::max<hsize_t>(chunk[1], 1);
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), maxdims.data()), H5Sclose);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  H5Pset_chunk(dcpl.get(), static_cast<int>(chunk.size()), chunk.data());
  Handle lcpl(link_create_plist(), H5Pclose);
  Handle d(H5Dcreate2(f.id(), dset.c_str(), file_type, space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT),
           H5Dclose);
  if (!d.ok()) fail("'", f.path(), "': cannot create dataset '", dset, "': ", hdf5_reason());
}

void File::create_2d(const std::string& dset, int64_t rows, int64_t cols, bool f16, int64_t chunk_rows) {
  require_open(path_, id_);
  const hsize_t r = static_cast<hsize_t>(rows), c = static_cast<hsize_t>(cols);
  create_chunked(*this, dset, f16 ? half_type() : H5T_IEEE_F32LE, {r, c}, {r, c}, chunk_rows);
}

void File::create_extensible_2d(const std::string& dset, int64_t cols, bool f16, int64_t chunk_rows) {
  require_open(path_, id_);
  const hsize_t c = static_cast<hsize_t>(cols);
  create_chunked(*this, dset, f16 ? half_type() : H5T_IEEE_F32LE, {0, c}, {H5S_UNLIMITED, c}, chunk_rows);
}

void File::create_extensible_1d(const std::string& dset, DType dtype, int64_t chunk_rows) {
  require_open(path_, id_);
  create_chunked(*this, dset, dtype == DType::F32 ? H5T_IEEE_F32LE : H5T_STD_I32LE, {0}, {H5S_UNLIMITED},
                 chunk_rows);
}

void File::write_rows(const std::string& dset, int64_t row0, const Tensor& rows) {
  require_open(path_, id_);
  require_host(*this, dset, rows);
  Handle d(open_dataset(*this, dset), H5Dclose);
  RowIo io{};
  Handle fspace(select_rows(*this, dset, d.get(), rows, row0, true, io), H5Sclose);
  if (rows.numel() == 0) return;
  const size_t n = static_cast<size_t>(rows.numel());
  Handle mspace(packed_memory_space(rows), H5Sclose);
  herr_t rc;
  if (io.half) {
    std::vector<uint16_t> raw(static_cast<size_t>(n));
    const int64_t cols = rows.rank() == 2 ? rows.cols() : 1, ld = rows.rank() == 2 ? rows.ld() : 1;
    for (int64_t r = 0; r < rows.rows(); ++r) {
      const float* src = rows.data<float>() + r * ld;
      for (int64_t c = 0; c < cols; ++c) raw[r * cols + c] = float_to_half(src[c]);
    }
    rc = H5Dwrite(d.get(), half_type(), mspace.get(), fspace.get(), H5P_DEFAULT, raw.data());
  } else {
    std::vector<uint32_t> scratch;
    rc = H5Dwrite(d.get(), io.mem_type, mspace.get(), fspace.get(), H5P_DEFAULT, contiguous_data(rows, scratch));
  }
  if (rc < 0)
    fail("'", path_, "': cannot write rows ", row0, "..", row0 + rows.rows(), " of dataset '", dset,
         "': ", hdf5_reason());
}

void File::append_rows(const std::string& dset, const Tensor& rows) {
  require_open(path_, id_);
  int64_t old_rows;
  {
    Handle d(open_dataset(*this, dset), H5Dclose);
    Handle space(H5Dget_space(d.get()), H5Sclose);
    auto dims = dataspace_dims(space.get());
    if (dims.empty()) fail("'", path_, "': dataset '", dset, "' is a scalar; cannot append rows");
    old_rows = dims[0];
    std::vector<hsize_t> grown(dims.begin(), dims.end());
    grown[0] += static_cast<hsize_t>(rows.rows());
    if (H5Dset_extent(d.get(), grown.data()) < 0)
      fail("'", path_, "': cannot extend dataset '", dset, "' (is it extensible?): ", hdf5_reason());
  }
  write_rows(dset, old_rows, rows);
}

// ---- attributes ---------------------------------------------------------------------------------------------------

namespace {

hid_t open_object(const File& f, const std::string& obj) {
  if (!f.exists(obj)) fail("'", f.path(), "': no object '", obj, "'");
  hid_t o = H5Oopen(f.id(), obj.c_str(), H5P_DEFAULT);
  if (o < 0) fail("'", f.path(), "': cannot open object '", obj, "': ", hdf5_reason());
  return o;
}

// Opens attribute `name` of `obj` (which must exist), or fails naming file, object and attribute.
hid_t open_attr(const File& f, const std::string& obj, const std::string& name) {
  Handle o(open_object(f, obj), H5Oclose);
  if (H5Aexists(o.get(), name.c_str()) <= 0)
    fail("'", f.path(), "': object '", obj, "' has no attribute '", name, "'");
  hid_t a = H5Aopen(o.get(), name.c_str(), H5P_DEFAULT);
  if (a < 0) fail("'", f.path(), "': cannot open attribute '", name, "' of '", obj, "': ", hdf5_reason());
  return a;
}

void write_scalar_attr(const File& f, const std::string& obj, const std::string& name, hid_t file_type,
                       hid_t mem_type, const void* value) {
  Handle o(open_object(f, obj), H5Oclose);
  if (H5Aexists(o.get(), name.c_str()) > 0) H5Adelete(o.get(), name.c_str());
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle a(H5Acreate2(o.get(), name.c_str(), file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!a.ok() || H5Awrite(a.get(), mem_type, value) < 0)
    fail("'", f.path(), "': cannot write attribute '", name, "' of '", obj, "': ", hdf5_reason());
}

template <typename T>
T read_scalar_attr(const File& f, const std::string& obj, const std::string& name, hid_t mem_type, bool want_int) {
  Handle a(open_attr(f, obj, name), H5Aclose);
  Handle type(H5Aget_type(a.get()), H5Tclose);
  Handle space(H5Aget_space(a.get()), H5Sclose);
  const H5T_class_t cls = H5Tget_class(type.get());
  const bool ok = want_int ? cls == H5T_INTEGER : (cls == H5T_FLOAT || cls == H5T_INTEGER);
  if (!ok || H5Sget_simple_extent_npoints(space.get()) != 1)
    fail("'", f.path(), "': attribute '", name, "' of '", obj, "' is not a scalar ",
         want_int ? "integer" : "number", " (type ", type_name(type.get()), ")");
  T v{};
  if (H5Aread(a.get(), mem_type, &v) < 0)
    fail("'", f.path(), "': cannot read attribute '", name, "' of '", obj, "': ", hdf5_reason());
  return v;
}

herr_t collect_attr_name(hid_t, const char* name, const H5A_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

herr_t collect_link_name(hid_t, const char* name, const H5L_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}

}  // namespace

bool File::has_attr(const std::string& obj, const std::string& name) const {
  require_open(path_, id_);
  if (!exists(obj)) return false;
  Handle o(open_object(*this, obj), H5Oclose);
  const htri_t e = H5Aexists(o.get(), name.c_str());
  H5Eclear2(H5E_DEFAULT);
  return e > 0;
}

void File::set_attr(const std::string& obj, const std::string& name, const std::string& value) {
  require_open(path_, id_);
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), H5T_VARIABLE);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  const char* p = value.c_str();
  write_scalar_attr(*this, obj, name, type.get(), type.get(), &p);
}

void File::set_attr(const std::string& obj, const std::string& name, double value) {
  require_open(path_, id_);
  write_scalar_attr(*this, obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

void File::set_attr(const std::string& obj, const std::string& name, int64_t value) {
  require_open(path_, id_);
  write_scalar_attr(*this, obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

std::string File::attr_string(const std::string& obj, const std::string& name) const {
  require_open(path_, id_);
  Handle a(open_attr(*this, obj, name), H5Aclose);
  Handle type(H5Aget_type(a.get()), H5Tclose);
  Handle space(H5Aget_space(a.get()), H5Sclose);
  if (H5Tget_class(type.get()) != H5T_STRING || H5Sget_simple_extent_npoints(space.get()) != 1)
    fail("'", path_, "': attribute '", name, "' of '", obj, "' is not a scalar string (type ",
         type_name(type.get()), ")");
  if (H5Tis_variable_str(type.get()) > 0) {
    Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));
    char* p = nullptr;
    if (H5Aread(a.get(), mem.get(), &p) < 0)
      fail("'", path_, "': cannot read attribute '", name, "' of '", obj, "': ", hdf5_reason());
    std::string s = p ? p : "";
    H5free_memory(p);
    return s;
  }
  const size_t size = H5Tget_size(type.get());
  std::string s(size, '\0');
  Handle mem(H5Tcopy(type.get()), H5Tclose);
  if (H5Aread(a.get(), mem.get(), s.data()) < 0)
    fail("'", path_, "': cannot read attribute '", name, "' of '", obj, "': ", hdf5_reason());
  const size_t end = s.find('\0');
  if (end != std::string::npos) s.resize(end);
  return s;
}

double File::attr_double(const std::string& obj, const std::string& name) const {
  require_open(path_, id_);
  return read_scalar_attr<double>(*this, obj, name, H5T_NATIVE_DOUBLE, false);
}

int64_t File::attr_int(const std::string& obj, const std::string& name) const {
  require_open(path_, id_);
  return read_scalar_attr<int64_t>(*this, obj, name, H5T_NATIVE_INT64, true);
}

std::vector<std::string> File::attr_names(const std::string& obj) const {
  require_open(path_, id_);
  Handle o(open_object(*this, obj), H5Oclose);
  std::vector<std::string> names;
  hsize_t idx = 0;
  if (H5Aiterate2(o.get(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect_attr_name, &names) < 0)
    fail("'", path_, "': cannot list attributes of '", obj, "': ", hdf5_reason());
  return names;
}

std::vector<std::string> File::list(const std::string& group_path) const {
  require_open(path_, id_);
  if (!exists(group_path)) fail("'", path_, "': no group '", group_path, "'");
  Handle g(H5Gopen2(id_, group_path.c_str(), H5P_DEFAULT), H5Gclose);
  if (!g.ok()) fail("'", path_, "': '", group_path, "' is not a group");
  std::vector<std::string> names;
  hsize_t idx = 0;
  if (H5Literate(g.get(), H5_INDEX_NAME, H5_ITER_INC, &idx, collect_link_name, &names) < 0)
    fail("'", path_, "': cannot list group '", group_path, "': ", hdf5_reason());
  return names;
}

// ---- AtomicWriter -----------------------------------------------------------------------------------------------

AtomicWriter::AtomicWriter(const std::string& final_path)
    : final_(final_path), tmp_(final_path + ".tmp." + std::to_string(::getpid())) {
  file_ = File(tmp_, File::Mode::Create);
}

AtomicWriter::~AtomicWriter() {
  if (committed_) return;
  try {
    file_.close();
  } catch (...) {
  }
  std::remove(tmp_.c_str());
}

// Flushes a closed file's data (and its directory entry) to stable storage; best effort on odd file systems.
static void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

void AtomicWriter::commit() {
  if (committed_) fail("'", final_, "': AtomicWriter::commit called twice");
  file_.close();
  fsync_path(tmp_);
  if (std::rename(tmp_.c_str(), final_.c_str()) != 0)
    fail("cannot rename '", tmp_, "' to '", final_, "': ", std::strerror(errno));
  committed_ = true;
  std::filesystem::path dir = std::filesystem::path(final_).parent_path();
  fsync_path(dir.empty() ? std::string(".") : dir.string());
}

}  // namespace moesae::h5
