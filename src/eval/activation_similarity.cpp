#include "eval/activation_similarity.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace moesae {

ActiveSets::ActiveSets(int64_t dict_size) : dict_size_(dict_size) {
  if (dict_size <= 0) fail("activation similarity: dict_size must be positive (got ", dict_size, ")");
}

void ActiveSets::finish_row(size_t begin) {
  std::sort(ids_.begin() + static_cast<std::ptrdiff_t>(begin), ids_.end());
  ids_.erase(std::unique(ids_.begin() + static_cast<std::ptrdiff_t>(begin), ids_.end()), ids_.end());
  max_size_ = std::max<int64_t>(max_size_, static_cast<int64_t>(ids_.size() - begin));
  offsets_.push_back(static_cast<int64_t>(ids_.size()));
}

void ActiveSets::add_row(const int32_t* ids, const float* vals, int64_t k) {
  const size_t begin = ids_.size();
  for (int64_t j = 0; j < k; ++j) {
    if (ids[j] < -1 || ids[j] >= dict_size_) {
      ids_.resize(begin);
      fail("activation similarity: latent id ", ids[j], " of token ", tokens(), " is outside [-1, ", dict_size_, ")");
    }
    if (ids[j] >= 0 && vals[j] > 0.f) ids_.push_back(ids[j]);
  }
  finish_row(begin);
}

void ActiveSets::add_set(const std::vector<int32_t>& latents) {
  const size_t begin = ids_.size();
  for (int32_t id : latents) {
    if (id < 0 || id >= dict_size_) {
      ids_.resize(begin);
      fail("activation similarity: latent id ", id, " of token ", tokens(), " is outside [0, ", dict_size_, ")");
    }
    ids_.push_back(id);
  }
  finish_row(begin);
}

void ActiveSets::add(const Tensor& ids, const Tensor& vals, int64_t rows) {
  if (!ids.defined() || !vals.defined()) fail("activation similarity: ids or vals is undefined");
  if (ids.device() != Device::CPU || vals.device() != Device::CPU || ids.dtype() != DType::I32 ||
      vals.dtype() != DType::F32)
    fail("activation similarity: expected host i32 ids and host f32 vals (got ", device_name(ids.device()), " ",
         dtype_name(ids.dtype()), " and ", device_name(vals.device()), " ", dtype_name(vals.dtype()), ")");
  if (ids.rows() != vals.rows() || ids.cols() != vals.cols())
    fail("activation similarity: ids ", ids.shape_str(), " and vals ", vals.shape_str(), " differ in shape");
  const int64_t n = rows < 0 ? ids.rows() : std::min(rows, ids.rows());
  for (int64_t r = 0; r < n; ++r)
    add_row(ids.data<int32_t>() + r * ids.ld(), vals.data<float>() + r * vals.ld(), ids.cols());
}

double ActiveSets::mean_size() const {
  if (tokens() == 0) fail("activation similarity: no tokens");
  return double(ids_.size()) / double(tokens());
}

std::vector<int64_t> ActiveSets::fire_counts() const {
  std::vector<int64_t> c(static_cast<size_t>(dict_size_), 0);
  for (int32_t id : ids_) ++c[static_cast<size_t>(id)];  // ids are unique within a token
  return c;
}

double activation_similarity_from_counts(const std::vector<int64_t>& fire_counts, int64_t tokens, double k_total) {
  if (tokens < 2) fail("activation similarity (Eq. A.3) needs at least 2 tokens (got ", tokens, ")");
  if (!(k_total > 0) || !std::isfinite(k_total))
    fail("activation similarity (Eq. A.3): K_total must be positive (got ", k_total, ")");
  // sum_{i != j} k_ij = sum_f c_f (c_f - 1): every latent shared by an ordered pair (i, j) is one ordered pair of
  // distinct tokens among the c_f tokens that latent is active on. Exact in int64 up to c_f ~ 3e9.
  int64_t ordered = 0;
  for (size_t f = 0; f < fire_counts.size(); ++f) {
    const int64_t c = fire_counts[f];
    if (c < 0 || c > tokens)
      fail("activation similarity (Eq. A.3): latent ", f, " fires on ", c, " of ", tokens, " tokens");
    ordered += c * (c - 1);
  }
  return double(ordered) / (double(tokens) * double(tokens - 1) * k_total);  // Eq. A.3
}

std::vector<double> OverlapDistribution::fractions() const {
  std::vector<double> f(pairs_with_overlap.size(), 0.0);
  for (size_t m = 0; m < f.size(); ++m) f[m] = pairs > 0 ? double(pairs_with_overlap[m]) / double(pairs) : 0.0;
  return f;
}

OverlapDistribution overlap_distribution(const ActiveSets& sets, double k_total) {
  const int64_t n = sets.tokens(), f = sets.dict_size();
  if (n < 2) fail("overlap distribution (Appendix D) needs at least 2 tokens (got ", n, ")");
  if (!(k_total > 0) || !std::isfinite(k_total))
    fail("overlap distribution (Appendix D): K_total must be positive (got ", k_total, ")");
  if (n > std::numeric_limits<int32_t>::max())
    fail("overlap distribution (Appendix D): ", n, " tokens is more than the 2^31 - 1 the index holds");
  // Inverted index: postings of latent l = its tokens in increasing order (a counting sort over the CSR sets), and for
  // every (token, slot) the position of the token in its latent's list, so each token walks only the later tokens.
  const std::vector<int64_t> counts = sets.fire_counts();
  std::vector<int64_t> start(static_cast<size_t>(f) + 1, 0);
  for (int64_t l = 0; l < f; ++l) start[static_cast<size_t>(l) + 1] = start[static_cast<size_t>(l)] + counts[static_cast<size_t>(l)];
  const int64_t entries = start.back();
  std::vector<int32_t> postings(static_cast<size_t>(entries));
  std::vector<int64_t> slot_next(static_cast<size_t>(entries));  // for token i's s-th latent: index after i's entry
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    int64_t e = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t* s = sets.latents(i);
      for (int64_t j = 0; j < sets.size(i); ++j, ++e) {
        int64_t& at = fill[static_cast<size_t>(s[j])];
        postings[static_cast<size_t>(at)] = static_cast<int32_t>(i);
        slot_next[static_cast<size_t>(e)] = ++at;
      }
    }
  }
  std::vector<int64_t> slot_begin(static_cast<size_t>(n) + 1, 0);  // token i's slots in slot_next
  for (int64_t i = 0; i < n; ++i) slot_begin[static_cast<size_t>(i) + 1] = slot_begin[static_cast<size_t>(i)] + sets.size(i);

  const size_t bins = static_cast<size_t>(sets.max_size()) + 1;
  const int threads = omp_get_max_threads();
  std::vector<std::vector<int64_t>> hist(static_cast<size_t>(threads), std::vector<int64_t>(bins, 0));
#pragma omp parallel num_threads(threads)
  {
    std::vector<uint32_t> cnt(static_cast<size_t>(n), 0);  // cnt[j] = k_ij for the current i (0 between tokens)
    std::vector<int32_t> touched;
    std::vector<int64_t>& h = hist[static_cast<size_t>(omp_get_thread_num())];
    // Early tokens have the longest tails: small dynamic chunks balance the threads.
#pragma omp for schedule(dynamic, 16)
    for (int64_t i = 0; i < n - 1; ++i) {
      touched.clear();
      const int32_t* s = sets.latents(i);
      for (int64_t j = 0; j < sets.size(i); ++j) {
        const int64_t from = slot_next[static_cast<size_t>(slot_begin[static_cast<size_t>(i)] + j)];
        const int64_t to = start[static_cast<size_t>(s[j]) + 1];
        for (int64_t p = from; p < to; ++p) {
          const int32_t t = postings[static_cast<size_t>(p)];
          if (cnt[static_cast<size_t>(t)]++ == 0) touched.push_back(t);
        }
      }
      for (int32_t t : touched) {
        ++h[cnt[static_cast<size_t>(t)]];
        cnt[static_cast<size_t>(t)] = 0;
      }
      h[0] += (n - 1 - i) - static_cast<int64_t>(touched.size());  // later tokens sharing nothing with i
    }
  }
  OverlapDistribution d;
  d.pairs_with_overlap.assign(bins, 0);
  for (const auto& h : hist)
    for (size_t m = 0; m < bins; ++m) d.pairs_with_overlap[m] += h[m];
  d.pairs = n * (n - 1) / 2;
  for (size_t m = 0; m < bins; ++m) d.shared += static_cast<int64_t>(m) * d.pairs_with_overlap[m];
  d.mean_overlap = double(d.shared) / double(d.pairs);
  d.similarity = d.mean_overlap / k_total;  // Eq. A.3: (1 / (N (N-1))) sum_{i != j} k_ij / K = mean_{i<j} k_ij / K
  return d;
}

}  // namespace moesae
