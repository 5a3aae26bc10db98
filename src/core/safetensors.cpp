#include "core/safetensors.h"

#include <cstdio>
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

std::map<std::string, Entry> read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open safetensors file '", path, "'");
  uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  if (!in || n > (uint64_t(1) << 30)) fail("'", path, "' is not a safetensors file");
  std::string text(n, '\0');
  in.read(text.data(), std::streamsize(n));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    fail("'", path, "': bad safetensors header: ", e.what());
  }
  const std::streamoff base = std::streamoff(8 + n);
  std::map<std::string, Entry> out;
  for (auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string dt = info.at("dtype");
    if (dt != "F32" && dt != "I32") fail("'", path, "': tensor '", name, "' has unsupported dtype ", dt);
    std::vector<int64_t> shape = info.at("shape").get<std::vector<int64_t>>();
    int64_t count = 1;
    for (int64_t s : shape) count *= s;
    const int64_t cols = shape.empty() ? 1 : shape.back();
    Tensor t = shape.size() <= 1 ? host_vector(count, dt == "F32" ? DType::F32 : DType::I32)
                                 : host_tensor(count / std::max<int64_t>(cols, 1), cols, dt == "F32" ? DType::F32 : DType::I32);
    const auto offs = info.at("data_offsets").get<std::vector<uint64_t>>();
    if (offs.size() != 2 || offs[1] - offs[0] != uint64_t(count) * 4) fail("'", path, "': bad offsets for ", name);
    in.seekg(base + std::streamoff(offs[0]));
    in.read(reinterpret_cast<char*>(t.data<float>()), std::streamsize(count * 4));
    if (!in) fail("'", path, "': truncated data for tensor '", name, "'");
    out[name] = Entry{name, t, shape};
  }
  return out;
}

}  // namespace moesae::safetensors
