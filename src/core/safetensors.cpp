#include "core/safetensors.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

namespace moesae::safetensors {

void write(const std::string& path, const std::vector<Entry>& entries,
           const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const Entry& e : entries) {
    MOESAE_CHECK(e.tensor.device() == Device::CPU && e.tensor.contiguous(), "safetensors: ", e.name);
    int64_t count = 1;
    for (int64_t s : e.shape) count *= s;
    if (count != e.tensor.numel()) fail("safetensors: tensor '", e.name, "' shape does not match its element count");
    const uint64_t bytes = uint64_t(e.tensor.numel()) * 4;
    header[e.name] = {{"dtype", e.tensor.dtype() == DType::F32 ? "F32" : "I32"},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  while (text.size() % 8 != 0) text.push_back(' ');
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) fail("cannot write '", tmp, "'");
    const uint64_t n = text.size();
    out.write(reinterpret_cast<const char*>(&n), 8);  // x86-64 and aarch64 are little-endian
    out.write(text.data(), std::streamsize(text.size()));
    for (const Entry& e : entries) out.write(reinterpret_cast<const char*>(e.tensor.data<float>()), e.tensor.numel() * 4);
    if (!out) {
      std::remove(tmp.c_str());
      fail("error writing '", tmp, "'");
    }
  }
  std::filesystem::rename(tmp, path);
}

namespace {

// IEEE binary16 -> binary32 (exact: every half value is a float; subnormals, infinities and NaNs included).
float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu;
  uint32_t man = h & 0x3FFu;
  uint32_t bits;
  if (exp == 0x1F) {  // inf / NaN
    bits = sign | 0x7F800000u | (man << 13);
  } else if (exp != 0) {  // normal: rebias the exponent 15 -> 127
    bits = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {  // +-0
    bits = sign;
  } else {  // subnormal half: normalise the mantissa
    exp = 113;
    while (!(man & 0x400u)) {
      man <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((man & 0x3FFu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// bfloat16 is the upper half of a binary32.
float bf16_to_float(uint16_t h) {
  const uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// The stored dtypes read, their element sizes and the host dtype they become.
struct StoredType {
  const char* name;
  size_t bytes;
  DType to;
};
constexpr StoredType kStoredTypes[] = {
    {"F32", 4, DType::F32}, {"F16", 2, DType::F32}, {"BF16", 2, DType::F32}, {"F64", 8, DType::F32},
    {"I32", 4, DType::I32}, {"I64", 8, DType::I32}, {"U8", 1, DType::I32},   {"BOOL", 1, DType::I32},
};

}  // namespace

// Floating-point tensors (F32, F16, BF16, F64) are read as F32, integer and boolean ones (I32, I64, U8, BOOL) as I32
// (an I64 value outside the int32 range is an error). Every malformed header, offset or size is one error naming the
// file (and the tensor).
std::map<std::string, Entry> read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open safetensors file '", path, "'");
  in.seekg(0, std::ios::end);
  const std::streamoff end = in.tellg();
  if (end < 0) fail("cannot read safetensors file '", path, "'");
  const uint64_t file_bytes = uint64_t(end);
  in.seekg(0);
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  if (!in || n > (uint64_t(1) << 30) || 8 + n > file_bytes)
    fail("'", path, "' is not a safetensors file (", file_bytes, " bytes; no valid header length)");
  std::string text(n, '\0');
  in.read(text.data(), std::streamsize(n));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    fail("'", path, "': bad safetensors header: ", e.what());
  }
  if (!header.is_object()) fail("'", path, "': bad safetensors header (not a JSON object)");
  const uint64_t base = 8 + n;
  const uint64_t data_bytes = file_bytes - base;
  std::map<std::string, Entry> out;
  for (auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    std::string dt;
    std::vector<int64_t> shape;
    std::vector<uint64_t> offs;
    try {
      dt = info.at("dtype").get<std::string>();
      shape = info.at("shape").get<std::vector<int64_t>>();
      offs = info.at("data_offsets").get<std::vector<uint64_t>>();
    } catch (const std::exception& e) {
      fail("'", path, "': bad header entry for tensor '", name, "' (needs dtype, shape, data_offsets): ", e.what());
    }
    const StoredType* st = nullptr;
    for (const StoredType& s : kStoredTypes)
      if (dt == s.name) st = &s;
    if (!st) fail("'", path, "': tensor '", name, "' has unsupported dtype ", dt);
    int64_t count = 1;
    for (int64_t s : shape) {
      if (s < 0 || (s > 0 && count > (int64_t(1) << 40) / s)) fail("'", path, "': tensor '", name, "' has a bad shape");
      count *= s;
    }
    if (offs.size() != 2 || offs[1] < offs[0] || offs[1] - offs[0] != uint64_t(count) * st->bytes)
      fail("'", path, "': bad offsets for ", name);
    if (offs[1] > data_bytes)
      fail("'", path, "': truncated data for tensor '", name, "' (needs bytes up to ", offs[1],
           " of the data, the file has ", data_bytes, ")");
    const int64_t cols = shape.empty() ? 1 : shape.back();
    Tensor t = shape.size() <= 1 ? host_vector(count, st->to)
                                 : host_tensor(count / std::max<int64_t>(cols, 1), cols, st->to);
    in.seekg(std::streamoff(base + offs[0]));
    if (st->bytes == 4) {  // F32 / I32: straight into the tensor
      in.read(reinterpret_cast<char*>(t.data<float>()), std::streamsize(count * 4));
    } else {
      std::vector<unsigned char> raw(size_t(count) * st->bytes);
      in.read(reinterpret_cast<char*>(raw.data()), std::streamsize(raw.size()));
      float* f = t.data<float>();
      int32_t* i = t.data<int32_t>();
      for (int64_t k = 0; k < count; ++k) {
        const unsigned char* p = raw.data() + size_t(k) * st->bytes;
        if (dt == "F16" || dt == "BF16") {
          uint16_t h;
          std::memcpy(&h, p, 2);
          f[k] = dt == "F16" ? half_to_float(h) : bf16_to_float(h);
        } else if (dt == "F64") {
          double v;
          std::memcpy(&v, p, 8);
          f[k] = static_cast<float>(v);
        } else if (dt == "I64") {
          int64_t v;
          std::memcpy(&v, p, 8);
          if (v < INT32_MIN || v > INT32_MAX)
            fail("'", path, "': tensor '", name, "' (I64) holds ", v, ", outside the int32 range");
          i[k] = static_cast<int32_t>(v);
        } else {  // U8, BOOL
          i[k] = *p;
        }
      }
    }
    if (!in) fail("'", path, "': truncated data for tensor '", name, "'");
    out[name] = Entry{name, t, shape};
  }
  return out;
}

}  // namespace moesae::safetensors
