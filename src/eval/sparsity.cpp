#include "eval/sparsity.h"

#include <omp.h>

#include <algorithm>
#include <limits>

namespace moesae {

SparsityAccumulator::SparsityAccumulator(int64_t dict_size) {
  if (dict_size <= 0) fail("sparsity metrics: dict_size must be positive (got ", dict_size, ")");
  fire_counts_.assign(static_cast<size_t>(dict_size), 0);
}

void SparsityAccumulator::add(const Tensor& ids, const Tensor& vals) {
  if (!ids.defined() || !vals.defined()) fail("sparsity metrics: ids or vals is undefined");
  if (ids.device() != Device::CPU || vals.device() != Device::CPU || ids.dtype() != DType::I32 ||
      vals.dtype() != DType::F32)
    fail("sparsity metrics: expected host i32 ids and host f32 vals (got ", device_name(ids.device()), " ",
         dtype_name(ids.dtype()), " and ", device_name(vals.device()), " ", dtype_name(vals.dtype()), ")");
  if (ids.rows() != vals.rows() || ids.cols() != vals.cols())
    fail("sparsity metrics: ids ", ids.shape_str(), " and vals ", vals.shape_str(), " differ in shape");
  const int64_t b = ids.rows(), k = ids.cols(), f = dict_size();
  const int32_t* ip = ids.data<int32_t>();
  const float* vp = vals.data<float>();
  const int64_t ldi = ids.ld(), ldv = vals.ld();
  // Rows in parallel; each thread counts into its own array (integer sums: independent of the thread count).
  const int threads = omp_get_max_threads();
  std::vector<int64_t> counts(static_cast<size_t>(threads) * static_cast<size_t>(f), 0);
  const int64_t kNone = std::numeric_limits<int64_t>::max();
  int64_t active = 0, bad_entry = kNone;  // the first invalid entry, in row-major order
#pragma omp parallel num_threads(threads) reduction(+ : active) reduction(min : bad_entry)
  {
    int64_t* mine = counts.data() + static_cast<size_t>(omp_get_thread_num()) * static_cast<size_t>(f);
    std::vector<int32_t> fired;  // latents that fired on the current token, deduplicated
    fired.reserve(static_cast<size_t>(k));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < b; ++r) {
      fired.clear();
      for (int64_t j = 0; j < k; ++j) {
        const int32_t id = ip[r * ldi + j];
        if (id < -1 || id >= f) bad_entry = std::min(bad_entry, r * k + j);
        else if (id >= 0 && vp[r * ldv + j] > 0.f) fired.push_back(id);
      }
      std::sort(fired.begin(), fired.end());
      fired.erase(std::unique(fired.begin(), fired.end()), fired.end());
      active += static_cast<int64_t>(fired.size());
      for (int32_t id : fired) ++mine[id];
    }
  }
  if (bad_entry != kNone) {
    const int64_t r = bad_entry / k, j = bad_entry % k;
    fail("sparsity metrics: latent id ", ip[r * ldi + j], " at [", r, ", ", j, "] is outside [-1, ", f, ")");
  }
  active_ += active;
  for (int t = 0; t < threads; ++t) {
    const int64_t* c = counts.data() + static_cast<size_t>(t) * static_cast<size_t>(f);
    for (int64_t i = 0; i < f; ++i) fire_counts_[static_cast<size_t>(i)] += c[i];
  }
  tokens_ += b;
}

void SparsityAccumulator::merge(const SparsityAccumulator& other) {
  if (other.dict_size() != dict_size())
    fail("sparsity metrics: cannot merge dict_size=", other.dict_size(), " into dict_size=", dict_size());
  tokens_ += other.tokens_;
  active_ += other.active_;
  for (size_t i = 0; i < fire_counts_.size(); ++i) fire_counts_[i] += other.fire_counts_[i];
}

double SparsityAccumulator::l0() const {
  if (tokens_ == 0) fail("sparsity metrics: l0 requested before any token was accumulated");
  return double(active_) / double(tokens_);
}

int64_t SparsityAccumulator::fired_latents() const {
  return static_cast<int64_t>(
      std::count_if(fire_counts_.begin(), fire_counts_.end(), [](int64_t c) { return c > 0; }));
}

double SparsityAccumulator::dead_fraction() const {
  return 1.0 - double(fired_latents()) / double(dict_size());
}

}  // namespace moesae
