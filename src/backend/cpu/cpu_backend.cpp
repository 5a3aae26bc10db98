// The CPU reference backend: OpenBLAS sgemm for dense products, OpenMP loops for everything else.
// Determinism: reductions use fixed-size blocks summed in block order; scatters are done per destination row
// in source order; so our own loops never depend on the thread count (sgemm's blocking may: see backend.h).
#include <omp.h>

#include <algorithm>
#include <cblas.h>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include "backend/backend.h"

namespace moesae {
namespace {

constexpr int64_t kBlock = 8192;  // reduction block (elements)

void check_same_shape(const Tensor& a, const Tensor& b, const char* op) {
  MOESAE_CHECK(a.rows() == b.rows() && a.cols() == b.cols(), op, ": shape ", a.shape_str(), " vs ",
               b.shape_str());
}

// Calls f(row_pointer, row_index) for every row of a (possibly strided) tensor, in parallel.
template <typename T, typename F>
void for_rows(const Tensor& t, F&& f) {
  const int64_t rows = t.rows(), ld = t.rank() == 1 ? 1 : t.ld();
  T* base = t.data<T>();
  if (t.contiguous()) {
    // Treat as one long row split into blocks for better balance.
    const int64_t n = t.numel();
    const int64_t nb = (n + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; ++b) {
      int64_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
      f(base + lo, hi - lo);
    }
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) f(base + r * ld, t.cols());
}

// Block-ordered double reduction of g(pointer, count) over the tensor's elements.
template <typename F>
double reduce(const Tensor& t, F&& g) {
  if (t.numel() == 0) return 0.0;
  std::vector<double> parts;
  if (t.contiguous()) {
    const int64_t n = t.numel(), nb = (n + kBlock - 1) / kBlock;
    parts.assign(nb, 0.0);
    const float* p = t.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nb; ++b) {
      int64_t lo = b * kBlock, hi = std::min(n, lo + kBlock);
      parts[b] = g(p + lo, hi - lo);
    }
  } else {
    parts.assign(t.rows(), 0.0);
    const float* p = t.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < t.rows(); ++r) parts[r] = g(p + r * t.ld(), t.cols());
  }
  double s = 0;
  for (double v : parts) s += v;
  return s;
}

// The block-ordered double sum of term(v) over the tensor's elements.
template <typename Term>
double reduce_terms(const Tensor& t, Term term) {
  return reduce(t, [&](const float* p, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += term(p[i]);
    return s;
  });
}

// Validates an index tensor before a parallel loop uses it (exceptions must not escape OpenMP regions).
void check_indices(const Tensor& idx, int64_t limit, bool allow_empty, const char* op) {
  const int64_t ld = idx.rank() == 1 ? 1 : idx.ld();
  for (int64_t r = 0; r < idx.rows(); ++r) {
    const int32_t* p = idx.data<int32_t>() + r * ld;
    for (int64_t j = 0; j < idx.cols(); ++j) {
      const int32_t v = p[j];
      if ((v < 0 && !(allow_empty && v == -1)) || v >= limit)
        fail("internal check failed: ", op, ": index ", v, " out of range [0, ", limit, ")");
    }
  }
}

struct Cand {
  float v;
  int32_t i;
};
// a ranks before b: larger value first, then smaller index.
inline bool better(const Cand& a, const Cand& b) { return a.v > b.v || (a.v == b.v && a.i < b.i); }

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(int threads) {
    if (threads > 0) {
      omp_set_num_threads(threads);
      openblas_set_num_threads(threads);
    }
  }
  Device device() const override { return Device::CPU; }
  std::string name() const override { return "cpu"; }
  // The experts' encoders a run of ~256 rows at a time: the gathered tokens and their pre-activations (under
  // 1 MB at d = 768, n = 384) stay in cache between the products and the ReLU/scatter.
  int64_t group_rows_per_call() const override { return 256; }

  Tensor empty(int64_t rows, int64_t cols, DType dt) override { return host_tensor(rows, cols, dt); }
  Tensor empty_vector(int64_t n, DType dt) override { return host_vector(n, dt); }

  void upload(const Tensor& src, Tensor dst) override { copy(src, dst); }
  void download(const Tensor& src, Tensor dst) override { copy(src, dst); }
  void copy(const Tensor& src, Tensor dst) override {
    check_same_shape(src, dst, "copy");
    if (src.contiguous() && dst.contiguous()) {
      std::memcpy(dst.data<float>(), src.data<float>(), src.numel() * 4);
      return;
    }
    const int64_t sl = src.rank() == 1 ? 1 : src.ld(), dl = dst.rank() == 1 ? 1 : dst.ld();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < src.rows(); ++r)
      std::memcpy(dst.data<float>() + r * dl, src.data<float>() + r * sl, src.cols() * 4);
  }

  void fill(Tensor x, float value) override {
    for_rows<float>(x, [&](float* p, int64_t n) { std::fill(p, p + n, value); });
  }
  void fill_i32(Tensor x, int32_t value) override {
    for_rows<int32_t>(x, [&](int32_t* p, int64_t n) { std::fill(p, p + n, value); });
  }
  void scale(Tensor x, float a) override {
    for_rows<float>(x, [&](float* p, int64_t n) {
      for (int64_t i = 0; i < n; ++i) p[i] *= a;
    });
  }
  void axpy(float a, const Tensor& x, Tensor y) override {
    check_same_shape(x, y, "axpy");
    binary_rows(x, y, y, [a](float xv, float yv) { return yv + a * xv; });
  }
  void mul(const Tensor& a, const Tensor& b, Tensor out) override {
    check_same_shape(a, b, "mul");
    check_same_shape(a, out, "mul");
    binary_rows(a, b, out, [](float u, float v) { return u * v; });
  }
  void relu(Tensor x) override {
    for_rows<float>(x, [](float* p, int64_t n) {
      for (int64_t i = 0; i < n; ++i) p[i] = p[i] > 0.f ? p[i] : 0.f;
    });
  }
  void relu_backward(const Tensor& y, Tensor dy) override {
    check_same_shape(y, dy, "relu_backward");
    binary_rows(y, dy, dy, [](float yv, float g) { return yv > 0.f ? g : 0.f; });
  }
  void add_row_vector(Tensor a, const Tensor& v, float alpha) override {
    MOESAE_CHECK(v.numel() == a.cols(), "add_row_vector: ", a.shape_str(), " + ", v.shape_str());
    const float* pv = v.data<float>();
    each_row(a, [&](float* row, int64_t, int64_t c) {
      for (int64_t j = 0; j < c; ++j) row[j] += alpha * pv[j];
    });
  }
  void scale_rows(Tensor a, const Tensor& s) override {
    MOESAE_CHECK(s.numel() == a.rows(), "scale_rows: ", a.shape_str(), " by ", s.shape_str());
    const float* ps = s.data<float>();
    each_row(a, [&](float* row, int64_t r, int64_t c) {
      for (int64_t j = 0; j < c; ++j) row[j] *= ps[r];
    });
  }
  void scale_cols(Tensor a, const Tensor& s) override {
    MOESAE_CHECK(s.numel() == a.cols(), "scale_cols: ", a.shape_str(), " by ", s.shape_str());
    const float* ps = s.data<float>();
    each_row(a, [&](float* row, int64_t, int64_t c) {
      for (int64_t j = 0; j < c; ++j) row[j] *= ps[j];
    });
  }
  void exp(const Tensor& x, Tensor out) override {
    check_same_shape(x, out, "exp");
    binary_rows(x, x, out, [](float u, float) { return std::exp(u); });
  }
  void sum_rows(const Tensor& a, Tensor out, float alpha, float beta) override {
    MOESAE_CHECK(out.numel() == a.cols(), "sum_rows: ", a.shape_str(), " into ", out.shape_str());
    const int64_t c = a.cols(), rows = a.rows(), ld = a.rank() == 1 ? 1 : a.ld();
    const float* pa = a.data<float>();
    float* po = out.data<float>();
    // Parallel over columns; each column summed in row order (deterministic), in column tiles for locality.
    const int64_t tile = 64;
#pragma omp parallel for schedule(static)
    for (int64_t c0 = 0; c0 < c; c0 += tile) {
      const int64_t c1 = std::min(c, c0 + tile);
      double acc[64] = {0};
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = pa + r * ld;
        for (int64_t j = c0; j < c1; ++j) acc[j - c0] += row[j];
      }
      for (int64_t j = c0; j < c1; ++j)
        po[j] = static_cast<float>((beta == 0.f ? 0.0 : double(beta) * po[j]) + double(alpha) * acc[j - c0]);
    }
  }
  Pending reduce_many_later(const std::vector<Reduction>& items) override {  // computed at once
    std::vector<double> out;
    out.reserve(items.size());
    for (const Reduction& r : items) {
      switch (r.op) {
        case ReduceOp::Sum: out.push_back(reduce_terms(r.x, [](float v) { return double(v); })); break;
        case ReduceOp::SumSquares: out.push_back(reduce_terms(r.x, [](float v) { return double(v) * v; })); break;
        case ReduceOp::CountPositive:
          out.push_back(reduce_terms(r.x, [](float v) { return v > 0.f ? 1.0 : 0.0; }));
          break;
      }
    }
    return Pending::ready_with(std::move(out));
  }
  void row_squared_error(const Tensor& a, const Tensor& b, Tensor out) override {
    check_same_shape(a, b, "row_squared_error");
    MOESAE_CHECK(out.numel() == a.rows());
    const int64_t c = a.cols(), la = a.ld(), lb = b.ld();
    const float *pa = a.data<float>(), *pb = b.data<float>();
    float* po = out.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < a.rows(); ++r) {
      double s = 0;
      for (int64_t j = 0; j < c; ++j) {
        double d = double(pa[r * la + j]) - pb[r * lb + j];
        s += d * d;
      }
      po[r] = static_cast<float>(s);
    }
  }
  void gemm(bool ta, bool tb, float alpha, const Tensor& a, const Tensor& b, float beta, Tensor c) override {
    const int64_t m = ta ? a.cols() : a.rows(), ka = ta ? a.rows() : a.cols();
    const int64_t kb = tb ? b.cols() : b.rows(), n = tb ? b.rows() : b.cols();
    MOESAE_CHECK(ka == kb && c.rows() == m && c.cols() == n, "gemm shapes ", a.shape_str(), ta ? "^T" : "", " x ",
                 b.shape_str(), tb ? "^T" : "", " -> ", c.shape_str());
    if (m == 0 || n == 0) return;
    if (ka == 0) {
      if (beta == 0.f) fill(c, 0.f); else scale(c, beta);
      return;
    }
    if (ka >= 4 * kSplitK && m * n <= kSplitKMaxOutput) {
      gemm_split_k(ta, tb, alpha, a, b, beta, c, m, n, ka);
      return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
                int(ka), alpha, a.data<float>(), int(a.ld()), b.data<float>(), int(b.ld()), beta, c.data<float>(),
                int(c.ld()));
  }

  void softmax_rows(const Tensor& logits, Tensor probs) override {
    check_same_shape(logits, probs, "softmax_rows");
    const int64_t c = logits.cols();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < logits.rows(); ++r) {
      const float* l = logits.data<float>() + r * logits.ld();
      float* p = probs.data<float>() + r * probs.ld();
      float mx = l[0];
      for (int64_t j = 1; j < c; ++j) mx = std::max(mx, l[j]);
      double s = 0;
      for (int64_t j = 0; j < c; ++j) {
        p[j] = std::exp(l[j] - mx);
        s += p[j];
      }
      const float inv = static_cast<float>(1.0 / s);
      for (int64_t j = 0; j < c; ++j) p[j] *= inv;
    }
  }
  void softmax_rows_backward(const Tensor& probs, const Tensor& dprobs, Tensor dlogits) override {
    check_same_shape(probs, dprobs, "softmax_rows_backward");
    check_same_shape(probs, dlogits, "softmax_rows_backward");
    const int64_t c = probs.cols();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < probs.rows(); ++r) {
      const float* p = probs.data<float>() + r * probs.ld();
      const float* dp = dprobs.data<float>() + r * dprobs.ld();
      float* dl = dlogits.data<float>() + r * dlogits.ld();
      double s = 0;
      for (int64_t j = 0; j < c; ++j) s += double(p[j]) * dp[j];
      for (int64_t j = 0; j < c; ++j) dl[j] = static_cast<float>(p[j] * (dp[j] - s));
    }
  }

  void topk_rows(const Tensor& x, int k, Tensor vals, Tensor idx, const Tensor* col_mask) override {
    MOESAE_CHECK(vals.rows() == x.rows() && idx.rows() == x.rows() && vals.cols() == k && idx.cols() == k,
                 "topk_rows: ", x.shape_str(), " k=", k, " into ", vals.shape_str(), "/", idx.shape_str());
    const int64_t n = x.cols();
    const int32_t* mask = col_mask ? col_mask->data<int32_t>() : nullptr;
    if (mask) MOESAE_CHECK(col_mask->numel() == n);
#pragma omp parallel
    {
      std::vector<Cand> heap;
      heap.reserve(k + 1);
      // min-heap on `better`: the root is the worst kept candidate.
      auto worse_first = [](const Cand& a, const Cand& b) { return better(a, b); };
#pragma omp for schedule(static)
      for (int64_t r = 0; r < x.rows(); ++r) {
        const float* row = x.data<float>() + r * x.ld();
        heap.clear();
        for (int64_t j = 0; j < n; ++j) {
          if (mask && !mask[j]) continue;
          Cand c{row[j], static_cast<int32_t>(j)};
          if (static_cast<int>(heap.size()) < k) {
            heap.push_back(c);
            std::push_heap(heap.begin(), heap.end(), worse_first);
          } else if (k > 0 && better(c, heap.front())) {
            std::pop_heap(heap.begin(), heap.end(), worse_first);
            heap.back() = c;
            std::push_heap(heap.begin(), heap.end(), worse_first);
          }
        }
        std::sort(heap.begin(), heap.end(), better);
        float* vo = vals.data<float>() + r * vals.ld();
        int32_t* io = idx.data<int32_t>() + r * idx.ld();
        for (int j = 0; j < k; ++j) {
          if (j < static_cast<int>(heap.size())) {
            vo[j] = heap[j].v;
            io[j] = heap[j].i;
          } else {
            vo[j] = 0.f;
            io[j] = -1;
          }
        }
      }
    }
  }
  void sort_rows_by_index(Tensor idx, Tensor vals) override {
    MOESAE_CHECK(idx.rows() == vals.rows() && idx.cols() == vals.cols());
    const int64_t c = idx.cols();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < idx.rows(); ++r) {
      int32_t* ip = idx.data<int32_t>() + r * idx.ld();
      float* vp = vals.data<float>() + r * vals.ld();
      for (int64_t a = 1; a < c; ++a) {  // insertion sort: rows are short (e <= 64)
        int32_t ki = ip[a];
        float kv = vp[a];
        int64_t b = a - 1;
        auto after = [](int32_t p, int32_t q) { return (p < 0 ? INT32_MAX : p) > (q < 0 ? INT32_MAX : q); };
        while (b >= 0 && after(ip[b], ki)) {
          ip[b + 1] = ip[b];
          vp[b + 1] = vp[b];
          --b;
        }
        ip[b + 1] = ki;
        vp[b + 1] = kv;
      }
    }
  }

  void gather_rows(const Tensor& src, const Tensor& idx, Tensor dst) override {
    MOESAE_CHECK(idx.numel() == dst.rows() && src.cols() == dst.cols(), "gather_rows: ", src.shape_str(), " by ",
                 idx.shape_str(), " into ", dst.shape_str());
    check_indices(idx, src.rows(), false, "gather_rows");
    const int32_t* ip = idx.data<int32_t>();
    const int64_t c = src.cols();
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < dst.rows(); ++m) {
      std::memcpy(dst.data<float>() + m * dst.ld(), src.data<float>() + ip[m] * src.ld(), c * 4);
    }
  }
  void scatter_rows(const Tensor& src, const Tensor& idx, Tensor dst) override {
    MOESAE_CHECK(idx.numel() == src.rows() && src.cols() == dst.cols(), "scatter_rows: ", src.shape_str(), " by ",
                 idx.shape_str(), " into ", dst.shape_str());
    check_indices(idx, dst.rows(), false, "scatter_rows");
    const int32_t* ip = idx.data<int32_t>();
    const int64_t c = src.cols();
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < src.rows(); ++m) {
      std::memcpy(dst.data<float>() + ip[m] * dst.ld(), src.data<float>() + m * src.ld(), c * 4);
    }
  }
  void gather(const Tensor& src, const Tensor& idx, Tensor dst) override {
    MOESAE_CHECK(src.contiguous() && dst.contiguous() && idx.numel() == dst.numel() && src.dtype() == dst.dtype());
    check_indices(idx, src.numel(), true, "gather");
    const int32_t* ip = idx.data<int32_t>();
    const int32_t* sp = src.data<int32_t>();  // 4-byte elements: copy bits
    int32_t* dp = dst.data<int32_t>();
    const int32_t empty = src.dtype() == DType::I32 ? -1 : 0;  // the bits of 0.0f are 0
#pragma omp parallel for schedule(static)
    for (int64_t m = 0; m < dst.numel(); ++m) dp[m] = ip[m] < 0 ? empty : sp[ip[m]];
  }
  void scatter_add(const Tensor& src, const Tensor& idx, Tensor dst) override {
    MOESAE_CHECK(src.contiguous() && dst.contiguous() && idx.numel() == src.numel());
    check_indices(idx, dst.numel(), true, "scatter_add");
    const int32_t* ip = idx.data<int32_t>();
    const float* sp = src.data<float>();
    float* dp = dst.data<float>();
    for (int64_t m = 0; m < src.numel(); ++m)  // serial: order of contributions is fixed
      if (ip[m] >= 0) dp[ip[m]] += sp[m];
  }
  void gather_cols(const Tensor& src, const Tensor& col, Tensor dst) override {
    MOESAE_CHECK(src.rows() == col.rows() && col.rows() == dst.rows() && col.cols() == dst.cols() &&
                     src.dtype() == dst.dtype(),
                 "gather_cols: ", src.shape_str(), " by ", col.shape_str(), " into ", dst.shape_str());
    check_indices(col, src.cols(), true, "gather_cols");
    const int32_t empty = src.dtype() == DType::I32 ? -1 : 0;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < col.rows(); ++b) {
      const int32_t* sp = src.data<int32_t>() + b * src.ld();
      const int32_t* cp = col.data<int32_t>() + b * col.ld();
      int32_t* dp = dst.data<int32_t>() + b * dst.ld();
      for (int64_t j = 0; j < col.cols(); ++j) dp[j] = cp[j] < 0 ? empty : sp[cp[j]];
    }
  }
  void scatter_add_cols(const Tensor& src, const Tensor& col, Tensor dst) override {
    MOESAE_CHECK(src.rows() == col.rows() && col.rows() == dst.rows() && col.cols() == src.cols(),
                 "scatter_add_cols: ", src.shape_str(), " by ", col.shape_str(), " into ", dst.shape_str());
    check_indices(col, dst.cols(), true, "scatter_add_cols");
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < col.rows(); ++b) {
      const float* sp = src.data<float>() + b * src.ld();
      const int32_t* cp = col.data<int32_t>() + b * col.ld();
      float* dp = dst.data<float>() + b * dst.ld();
      for (int64_t j = 0; j < col.cols(); ++j)
        if (cp[j] >= 0) dp[cp[j]] += sp[j];
    }
  }
  void identity_lowpass_dot(const Tensor& x, const Tensor& ids, int n, Tensor out) override {
    MOESAE_CHECK(x.rows() == ids.rows() && out.rows() == ids.rows() && out.cols() == ids.cols());
    const int64_t d = x.cols();
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < ids.rows(); ++b)
      for (int64_t j = 0; j < ids.cols(); ++j) {
        const int32_t f = ids.data<int32_t>()[b * ids.ld() + j];
        const int64_t local = f < 0 ? d : f % n;
        out.data<float>()[b * out.ld() + j] = local < d ? x.data<float>()[b * x.ld() + local] : 0.f;
      }
  }
  void identity_lowpass_outer_add(const Tensor& coef, const Tensor& ids, int n, Tensor g) override {
    MOESAE_CHECK(g.rows() == ids.rows() && coef.rows() == ids.rows() && coef.cols() == ids.cols());
    const int64_t d = g.cols();
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < ids.rows(); ++b)
      for (int64_t j = 0; j < ids.cols(); ++j) {
        const int32_t f = ids.data<int32_t>()[b * ids.ld() + j];
        const int64_t local = f < 0 ? d : f % n;
        if (local < d) g.data<float>()[b * g.ld() + local] += coef.data<float>()[b * coef.ld() + j];
      }
  }

  void sparse_rows_matmul(const Tensor& coef, const Tensor& ids, const Tensor& w, float beta,
                          Tensor out) override {
    MOESAE_CHECK(coef.rows() == ids.rows() && coef.cols() == ids.cols() && out.rows() == ids.rows() &&
                     out.cols() == w.cols(),
                 "sparse_rows_matmul: coef ", coef.shape_str(), " ids ", ids.shape_str(), " W ", w.shape_str(),
                 " out ", out.shape_str());
    const int64_t k = ids.cols(), d = w.cols();
    check_indices(ids, w.rows(), true, "sparse_rows_matmul");
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < ids.rows(); ++b) {
      float* o = out.data<float>() + b * out.ld();
      if (beta == 0.f) std::fill(o, o + d, 0.f); else if (beta != 1.f) for (int64_t t = 0; t < d; ++t) o[t] *= beta;
      const int32_t* ib = ids.data<int32_t>() + b * ids.ld();
      const float* cb = coef.data<float>() + b * coef.ld();
      for (int64_t j = 0; j < k; ++j) {
        const int32_t f = ib[j];
        if (f < 0) continue;
        const float a = cb[j];
        const float* wr = w.data<float>() + f * w.ld();
        for (int64_t t = 0; t < d; ++t) o[t] += a * wr[t];
      }
    }
  }
  void sparse_rows_dot(const Tensor& x, const Tensor& ids, const Tensor& w, Tensor out) override {
    MOESAE_CHECK(x.rows() == ids.rows() && out.rows() == ids.rows() && out.cols() == ids.cols() &&
                     x.cols() == w.cols(),
                 "sparse_rows_dot: x ", x.shape_str(), " ids ", ids.shape_str(), " W ", w.shape_str());
    const int64_t k = ids.cols(), d = w.cols();
    check_indices(ids, w.rows(), true, "sparse_rows_dot");
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < ids.rows(); ++b) {
      const float* xb = x.data<float>() + b * x.ld();
      const int32_t* ib = ids.data<int32_t>() + b * ids.ld();
      float* ob = out.data<float>() + b * out.ld();
      for (int64_t j = 0; j < k; ++j) {
        const int32_t f = ib[j];
        if (f < 0) {
          ob[j] = 0.f;
          continue;
        }
        const float* wr = w.data<float>() + f * w.ld();
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t t = 0; t < d; ++t) s += xb[t] * wr[t];
        ob[j] = s;
      }
    }
  }
  void sparse_rows_outer_add(const Tensor& coef, const Tensor& ids, const Tensor& x, float alpha,
                             Tensor g) override {
    MOESAE_CHECK(coef.rows() == ids.rows() && coef.cols() == ids.cols() && x.rows() == ids.rows() &&
                     x.cols() == g.cols(),
                 "sparse_rows_outer_add: coef ", coef.shape_str(), " ids ", ids.shape_str(), " x ", x.shape_str(),
                 " G ", g.shape_str());
    const int64_t B = ids.rows(), k = ids.cols(), d = g.cols(), F = g.rows();
    check_indices(ids, F, true, "sparse_rows_outer_add");
    // Counting sort of the (b, j) entries by latent: CSR with entries in (b, j) order per latent.
    std::vector<int64_t> start(F + 1, 0);
    for (int64_t b = 0; b < B; ++b) {
      const int32_t* ib = ids.data<int32_t>() + b * ids.ld();
      for (int64_t j = 0; j < k; ++j)
        if (ib[j] >= 0) ++start[ib[j] + 1];
    }
    for (int64_t f = 0; f < F; ++f) start[f + 1] += start[f];
    std::vector<int64_t> fillp(start.begin(), start.end() - 1);
    std::vector<int64_t> entry(start[F]);
    for (int64_t b = 0; b < B; ++b) {
      const int32_t* ib = ids.data<int32_t>() + b * ids.ld();
      for (int64_t j = 0; j < k; ++j)
        if (ib[j] >= 0) entry[fillp[ib[j]]++] = b * k + j;
    }
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t f = 0; f < F; ++f) {
      if (start[f] == start[f + 1]) continue;
      float* gr = g.data<float>() + f * g.ld();
      for (int64_t e = start[f]; e < start[f + 1]; ++e) {
        const int64_t b = entry[e] / k, j = entry[e] % k;
        const float a = alpha * coef.data<float>()[b * coef.ld() + j];
        const float* xb = x.data<float>() + b * x.ld();
        for (int64_t t = 0; t < d; ++t) gr[t] += a * xb[t];
      }
    }
  }

  ExpertGroups group_by_expert(const Tensor& experts, int num_experts) override {
    const int64_t B = experts.rows(), e = experts.cols();
    ExpertGroups g;
    g.offsets.assign(num_experts + 1, 0);
    const int32_t* ep = experts.data<int32_t>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < e; ++s) {
        int32_t x = ep[b * experts.ld() + s];
        MOESAE_CHECK(x >= -1 && x < num_experts, "group_by_expert: expert id ", x);
        if (x >= 0) ++g.offsets[x + 1];
      }
    for (int i = 0; i < num_experts; ++i) g.offsets[i + 1] += g.offsets[i];
    g.tokens = host_vector(B * e, DType::I32);
    g.cand_rows = host_vector(B * e, DType::I32);
    std::vector<int64_t> pos(g.offsets.begin(), g.offsets.end() - 1);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t s = 0; s < e; ++s) {
        int32_t x = ep[b * experts.ld() + s];
        if (x < 0) continue;
        int64_t r = pos[x]++;
        g.tokens.data<int32_t>()[r] = static_cast<int32_t>(b);
        g.cand_rows.data<int32_t>()[r] = static_cast<int32_t>(b * e + s);
      }
    return g;
  }
  void candidates_to_latents(const Tensor& cand, const Tensor& experts, int n, Tensor latent, Tensor slots) override {
    MOESAE_CHECK(cand.rows() == experts.rows() && latent.rows() == cand.rows() && slots.rows() == cand.rows());
    const int64_t k = cand.cols();
    check_indices(cand, experts.cols() * int64_t(n), true, "candidates_to_latents");
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < cand.rows(); ++b)
      for (int64_t j = 0; j < k; ++j) {
        const int32_t c = cand.data<int32_t>()[b * cand.ld() + j];
        int32_t* lo = latent.data<int32_t>() + b * latent.ld() + j;
        int32_t* so = slots.data<int32_t>() + b * slots.ld() + j;
        if (c < 0) {
          *lo = -1;
          *so = -1;
          continue;
        }
        const int32_t s = c / n, x = experts.data<int32_t>()[b * experts.ld() + s];
        *so = x < 0 ? -1 : s;
        *lo = x < 0 ? -1 : x * n + c % n;
      }
  }
  void update_fired(const Tensor& ids, const Tensor& vals, int64_t tokens, Tensor counter) override {
    int32_t* cp = counter.data<int32_t>();
    const int64_t F = counter.numel();
    const int64_t cap = int64_t(1) << 30;
#pragma omp parallel for schedule(static)
    for (int64_t f = 0; f < F; ++f) cp[f] = static_cast<int32_t>(std::min<int64_t>(cap, int64_t(cp[f]) + tokens));
    for (int64_t b = 0; b < ids.rows(); ++b)
      for (int64_t j = 0; j < ids.cols(); ++j) {
        int32_t f = ids.data<int32_t>()[b * ids.ld() + j];
        if (f >= 0 && vals.data<float>()[b * vals.ld() + j] > 0.f) cp[f] = 0;
      }
  }
  int64_t threshold_mask(const Tensor& counter, int64_t threshold, Tensor mask) override {
    MOESAE_CHECK(counter.numel() == mask.numel());
    const int32_t* cp = counter.data<int32_t>();
    int32_t* mp = mask.data<int32_t>();
    int64_t count = 0;
    for (int64_t f = 0; f < counter.numel(); ++f) {
      mp[f] = cp[f] > threshold ? 1 : 0;
      count += mp[f];
    }
    return count;
  }

  void adam_step(Tensor p, const Tensor& g, Tensor m, Tensor v, float lr, float b1, float b2, float eps,
                 int64_t step) override {
    MOESAE_CHECK(p.contiguous() && g.contiguous() && m.contiguous() && v.contiguous() && p.numel() == g.numel() &&
                 p.numel() == m.numel() && p.numel() == v.numel());
    const AdamScalars a = adam_scalars(lr, b1, b2, step);
    const float step_size = a.step_size, inv_sqrt_bc2 = a.inv_sqrt_bc2;
    float *pp = p.data<float>(), *mp = m.data<float>(), *vp = v.data<float>();
    const float* gp = g.data<float>();
    const int64_t n = p.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      const float gi = gp[i];
      mp[i] = b1 * mp[i] + (1.f - b1) * gi;
      vp[i] = b2 * vp[i] + (1.f - b2) * gi * gi;
      pp[i] -= step_size * mp[i] / (std::sqrt(vp[i]) * inv_sqrt_bc2 + eps);
    }
  }
  void normalize_rows(Tensor w, float eps) override {
    const int64_t d = w.cols();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < w.rows(); ++r) {
      float* row = w.data<float>() + r * w.ld();
      double s = 0;
      for (int64_t t = 0; t < d; ++t) s += double(row[t]) * row[t];
      const float inv = static_cast<float>(1.0 / (std::sqrt(s) + eps));
      for (int64_t t = 0; t < d; ++t) row[t] *= inv;
    }
  }
  void normalize_cols(Tensor w, float eps) override {
    const int64_t d = w.cols();
    std::vector<double> s(d, 0.0);
    for (int64_t r = 0; r < w.rows(); ++r) {
      const float* row = w.data<float>() + r * w.ld();
      for (int64_t t = 0; t < d; ++t) s[t] += double(row[t]) * row[t];
    }
    std::vector<float> inv(d);
    for (int64_t t = 0; t < d; ++t) inv[t] = static_cast<float>(1.0 / (std::sqrt(s[t]) + eps));
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < w.rows(); ++r) {
      float* row = w.data<float>() + r * w.ld();
      for (int64_t t = 0; t < d; ++t) row[t] *= inv[t];
    }
  }
  void project_out_rows(Tensor g, const Tensor& w) override {
    check_same_shape(g, w, "project_out_rows");
    const int64_t d = w.cols();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < w.rows(); ++r) {
      float* gr = g.data<float>() + r * g.ld();
      const float* wr = w.data<float>() + r * w.ld();
      double s = 0;
      for (int64_t t = 0; t < d; ++t) s += double(gr[t]) * wr[t];
      const float a = static_cast<float>(s);
      for (int64_t t = 0; t < d; ++t) gr[t] -= a * wr[t];
    }
  }

 private:
  // Small output, long inner dimension (e.g. a router's or Feature Scaling's weight gradient, [E, B] x [B, d]):
  // BLAS only parallelises over the output, so split K into fixed chunks computed in parallel (each by a
  // single-threaded sgemm inside the OpenMP region) and add the partial products in chunk order.
  static constexpr int64_t kSplitK = 2048, kSplitKMaxOutput = 512 * 1024;
  void gemm_split_k(bool ta, bool tb, float alpha, const Tensor& a, const Tensor& b, float beta, Tensor c, int64_t m,
                    int64_t n, int64_t k) {
    const int64_t chunks = (k + kSplitK - 1) / kSplitK;
    std::vector<float> part(size_t(chunks) * m * n);
#pragma omp parallel for schedule(static)
    for (int64_t q = 0; q < chunks; ++q) {
      const int64_t k0 = q * kSplitK, kn = std::min(k, k0 + kSplitK) - k0;
      // Rows k0.. of op(A)'s inner dimension: columns of A when transposed, rows otherwise (same for B).
      const float* pa = a.data<float>() + (ta ? k0 * a.ld() : k0);
      const float* pb = b.data<float>() + (tb ? k0 : k0 * b.ld());
      cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m), int(n),
                  int(kn), 1.f, pa, int(a.ld()), pb, int(b.ld()), 0.f, part.data() + size_t(q) * m * n, int(n));
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m; ++i) {
      float* ci = c.data<float>() + i * c.ld();
      for (int64_t j = 0; j < n; ++j) {
        float s = 0.f;
        for (int64_t q = 0; q < chunks; ++q) s += part[(size_t(q) * m + i) * n + j];
        ci[j] = alpha * s + (beta == 0.f ? 0.f : beta * ci[j]);
      }
    }
  }

  // f(row pointer, row index, columns) for every row of a (possibly strided) f32 tensor, rows in parallel.
  template <typename F>
  static void each_row(Tensor a, F&& f) {
    const int64_t c = a.cols(), ld = a.rank() == 1 ? 1 : a.ld();
    float* pa = a.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < a.rows(); ++r) f(pa + r * ld, r, c);
  }
  template <typename Op>
  void binary_rows(const Tensor& a, const Tensor& b, Tensor out, Op op) {
    const int64_t c = a.cols();
    if (a.contiguous() && b.contiguous() && out.contiguous()) {
      const int64_t n = a.numel();
      const float *pa = a.data<float>(), *pb = b.data<float>();
      float* po = out.data<float>();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) po[i] = op(pa[i], pb[i]);
      return;
    }
    const int64_t la = a.rank() == 1 ? 1 : a.ld(), lb = b.rank() == 1 ? 1 : b.ld(),
                  lo = out.rank() == 1 ? 1 : out.ld();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < a.rows(); ++r)
      for (int64_t j = 0; j < c; ++j)
        out.data<float>()[r * lo + j] = op(a.data<float>()[r * la + j], b.data<float>()[r * lb + j]);
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int threads) { return std::make_unique<CpuBackend>(threads); }

}  // namespace moesae
