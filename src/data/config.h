// moesae data: where activations come from and how they are streamed.
#pragma once
#include <cstdint>
#include <string>

namespace moesae {

// Whether training batches are read on a background thread while the step runs (train/prefetching_source.h):
// auto = with the CUDA backend (whose steps leave the host waiting for the device), true, false. The batches are the
// same either way.
enum class Prefetch { Auto, On, Off };
Prefetch parse_prefetch(const std::string& name);
const char* prefetch_name(Prefetch p);

struct DataConfig {
  std::string path;                    // HDF5 activation file
  std::string dataset = "activations";  // 2-D dataset [tokens, d] (f32 or f16)
  double eval_fraction = 0.05;         // held-out tail of the file (fraction of tokens)
  int64_t eval_tokens = 0;             // if > 0, overrides eval_fraction (tokens held out)
  int64_t shuffle_buffer = 262144;     // rows in the shuffle buffer (memory bound: rows * d * 4 bytes)
  int64_t chunk_rows = 16384;          // rows read per HDF5 read
  Prefetch prefetch = Prefetch::Auto;
};

}  // namespace moesae
