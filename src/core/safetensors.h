// moesae core: writing and reading the safetensors format (an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets}}, then the raw little-endian tensor bytes), as loaded by SAELens and HF.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace moesae::safetensors {

struct Entry {
  std::string name;
  Tensor tensor;               // host f32 or i32, contiguous
  std::vector<int64_t> shape;  // stored shape (may differ from the tensor's 2-D view, same element count)
};

// Writes atomically (temp file + rename). Metadata values are strings (the format's rule).
void write(const std::string& path, const std::vector<Entry>& entries,
           const std::map<std::string, std::string>& metadata = {});
// Reads every tensor into host tensors: F32, F16, BF16 and F64 as f32; I32, I64, U8 and BOOL as i32. Shapes of rank
// > 2 are flattened into [prod(leading), last].
std::map<std::string, Entry> read(const std::string& path);

}  // namespace moesae::safetensors
