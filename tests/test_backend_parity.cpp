// Parity of a backend against the CPU reference (make_cpu_backend(1)), for every operation of the Backend interface.
//
// The suite is parameterised over the backend under test:
//   cpu4  make_cpu_backend(4): always runs. It validates the test logic, and since every CPU operation except gemm
//         gives the same bits for any thread count (backend.h), it demands bit-identical results for those.
//   cuda  make_cuda_backend (FP32 GEMM): skipped, with the reason, when no CUDA device is usable.
//
// Every input is uploaded to both backends from the same host tensor. Outputs are poisoned first (NaN for f32,
// a sentinel for i32) so an element an operation fails to write shows; where an operation accumulates into its
// output, the output starts from random values instead. Strided inputs and outputs are column views of wider
// buffers whose other columns hold NaN / a sentinel, and the comparison covers the whole buffer, so a backend that
// reads or writes outside a view is caught too.
//
// Comparison: integer outputs, selected ids and pure data movement exactly (bits); arithmetic within
// |got - want| <= tol * (1 + max |want|), tol = 1e-5 for f32 arithmetic (exp and row_squared_error per element),
// 1e-6 relative for the double-accumulated sum / sum_squares; gemm by relative Frobenius error (1e-5 FP32;
// 2e-3 TF32, 1e-2 BF16). Operations whose contract fixes the order of their float additions (scatter_add in m order,
// scatter_add_cols in j order) and single-rounding operations (mul, scale, scale_rows, scale_cols) are exact.
#include <gtest/gtest.h>
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "sae_test_util.h"

using namespace moesae;
using moesae::testing::random_host;

namespace {

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();
constexpr int32_t kPoisonI32 = -123456789;  // i32 output poison: never a valid output value
constexpr int32_t kPadI32 = 987654321;      // i32 padding beside strided views: never a valid index
constexpr double kTol = 1e-5;               // f32 arithmetic
constexpr double kTolReduction = 1e-6;      // sum / sum_squares (double accumulation), relative to sum |x| / sum x^2

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// ---- host inputs ------------------------------------------------------------------------------------------------

Tensor randn(int64_t rows, int64_t cols, uint64_t seed, double scale = 1.0) {
  return random_host(rows, cols, seed, scale);
}

Tensor randn_vector(int64_t n, uint64_t seed, double scale = 1.0, double offset = 0.0) {
  Tensor t = host_vector(n);
  Rng rng(seed);
  for (int64_t i = 0; i < n; ++i) t.host<float>()[i] = static_cast<float>(offset + scale * rng.normal());
  return t;
}

Tensor full(int64_t rows, int64_t cols, float v) {
  Tensor t = host_tensor(rows, cols);
  std::fill(t.host<float>(), t.host<float>() + t.numel(), v);
  return t;
}

Tensor full_i32(int64_t rows, int64_t cols, int32_t v) {
  Tensor t = host_tensor(rows, cols, DType::I32);
  std::fill(t.host<int32_t>(), t.host<int32_t>() + t.numel(), v);
  return t;
}

Tensor vector_f32(const std::vector<float>& v) {
  Tensor t = host_vector(int64_t(v.size()));
  std::copy(v.begin(), v.end(), t.host<float>());
  return t;
}

Tensor vector_i32(const std::vector<int32_t>& v) {
  Tensor t = host_vector(int64_t(v.size()), DType::I32);
  std::copy(v.begin(), v.end(), t.host<int32_t>());
  return t;
}

Tensor matrix_f32(int64_t rows, int64_t cols, const std::vector<float>& v) {
  Tensor t = host_tensor(rows, cols);
  std::copy(v.begin(), v.end(), t.host<float>());
  return t;
}

// Values from a handful of levels (massive ties): integers in [-levels/2, levels/2).
Tensor quantized(int64_t rows, int64_t cols, uint64_t seed, int levels) {
  Tensor t = host_tensor(rows, cols);
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.host<float>()[i] = static_cast<float>(int64_t(rng.below(levels)) - levels / 2);
  return t;
}

// Ids in [0, limit): a fraction p_empty is -1 and a fraction p_hot is `hot` (many rows hitting one id).
Tensor random_ids(int64_t rows, int64_t cols, int32_t limit, uint64_t seed, double p_empty = 0.0,
                  int32_t hot = -1, double p_hot = 0.0) {
  Tensor t = host_tensor(rows, cols, DType::I32);
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double u = rng.uniform();
    t.host<int32_t>()[i] = u < p_empty ? -1 : u < p_empty + p_hot ? hot : int32_t(rng.below(limit));
  }
  return t;
}

// Distinct ids per row (cols <= limit), in random order; a fraction p_empty of the slots is -1.
Tensor distinct_ids(int64_t rows, int64_t cols, int32_t limit, uint64_t seed, double p_empty = 0.0) {
  Tensor t = host_tensor(rows, cols, DType::I32);
  Rng rng(seed);
  std::vector<int32_t> all(limit);
  for (int64_t r = 0; r < rows; ++r) {
    std::iota(all.begin(), all.end(), 0);
    for (int64_t j = 0; j < cols; ++j) {
      std::swap(all[j], all[j + rng.below(limit - j)]);
      t.host<int32_t>()[r * cols + j] = rng.uniform() < p_empty ? -1 : all[j];
    }
  }
  return t;
}

// Expert choices [B, e]: distinct experts per token; a fraction `skew` of the tokens picks from experts {0..e}.
Tensor expert_choices(int64_t B, int e, int E, uint64_t seed, double skew = 0.0) {
  Tensor t = host_tensor(B, e, DType::I32);
  Rng rng(seed);
  std::vector<int32_t> all(E);
  for (int64_t b = 0; b < B; ++b) {
    const int pool = rng.uniform() < skew ? std::min(E, e + 1) : E;
    std::iota(all.begin(), all.end(), 0);
    for (int s = 0; s < e; ++s) std::swap(all[s], all[s + rng.below(pool - s)]);
    for (int s = 0; s < e; ++s) t.host<int32_t>()[b * e + s] = all[s];
  }
  return t;
}

// ---- comparison of host tensors -------------------------------------------------------------------------------

// Element by element. tol < 0: exact (bits; NaN matches NaN). Otherwise |got - want| <= tol * (1 + s), s = max |want|
// over the finite elements (or |want| itself when per_element); NaN and infinities must match exactly.
::testing::AssertionResult compare(const Tensor& want, const Tensor& got, double tol, bool per_element = false) {
  if (want.rows() != got.rows() || want.cols() != got.cols() || want.dtype() != got.dtype())
    return ::testing::AssertionFailure() << "shape " << want.shape_str() << " vs " << got.shape_str();
  const int64_t n = want.numel(), cols = want.cols();
  std::ostringstream os;
  int64_t bad = 0;
  double worst = 0;
  auto note = [&](int64_t i, const std::string& text) {
    if (++bad <= 6) os << "\n  [" << i / cols << "," << i % cols << "] " << text;
  };
  if (want.dtype() == DType::I32) {
    for (int64_t i = 0; i < n; ++i) {
      const int32_t w = want.host<int32_t>()[i], g = got.host<int32_t>()[i];
      if (w != g) note(i, "want " + std::to_string(w) + " got " + std::to_string(g));
    }
  } else {
    double scale = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float w = want.host<float>()[i];
      if (std::isfinite(w)) scale = std::max(scale, double(std::fabs(w)));
    }
    for (int64_t i = 0; i < n; ++i) {
      const float w = want.host<float>()[i], g = got.host<float>()[i];
      bool ok;
      if (std::isnan(w) || std::isnan(g)) {
        ok = std::isnan(w) && std::isnan(g);
      } else if (tol < 0) {
        ok = bits_of(w) == bits_of(g);
      } else if (std::isinf(w) || std::isinf(g)) {
        ok = w == g;
      } else {
        const double err = std::fabs(double(w) - double(g));
        worst = std::max(worst, err / (1.0 + (per_element ? std::fabs(w) : scale)));
        ok = err <= tol * (1.0 + (per_element ? std::fabs(w) : scale));
      }
      if (!ok) {
        char buf[128];
        std::snprintf(buf, sizeof buf, "want %.9g (0x%08x) got %.9g (0x%08x)", w, bits_of(w), g, bits_of(g));
        note(i, buf);
      }
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << n << " elements differ"
                                       << (tol >= 0 ? " (tolerance " + std::to_string(tol) + ", worst scaled error " +
                                                          std::to_string(worst) + ")"
                                                    : " (exact)")
                                       << os.str();
}

// Relative Frobenius error over the finite elements; NaNs (the padding beside views) must match exactly.
::testing::AssertionResult compare_frobenius(const Tensor& want, const Tensor& got, double tol) {
  if (want.numel() != got.numel()) return ::testing::AssertionFailure() << "size mismatch";
  double num = 0, den = 0;
  int64_t nan_mismatch = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    const float w = want.host<float>()[i], g = got.host<float>()[i];
    if (std::isnan(w) || std::isnan(g)) {
      nan_mismatch += std::isnan(w) != std::isnan(g);
      continue;
    }
    num += (double(w) - g) * (double(w) - g);
    den += double(w) * w;
  }
  const double rel = std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
  if (nan_mismatch == 0 && (den == 0 ? num == 0 : rel <= tol)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "relative Frobenius error " << rel << " (tolerance " << tol << "), "
                                       << nan_mismatch << " NaN mismatches (unwritten or padding written)";
}

std::string shape(int64_t r, int64_t c, int64_t pad = 0) {
  return "[" + std::to_string(r) + "x" + std::to_string(c) + (pad ? " strided" : "") + "]";
}
std::string shape_of(const Tensor& t, int64_t pad = 0) { return shape(t.rows(), t.cols(), pad); }

// ---- the fixture ----------------------------------------------------------------------------------------------

struct BackendCase {
  std::string name;
  bool cuda = false;
  int cpu_threads = 0;
};
void PrintTo(const BackendCase& c, std::ostream* os) { *os << c.name; }

// One tensor on both backends. `ref` / `test` are what the operations see; `ref_buf` / `test_buf` the whole
// buffers they are views of (the same tensors when there is no padding).
struct Twin {
  Tensor ref, test, ref_buf, test_buf;
};

class Parity : public ::testing::TestWithParam<BackendCase> {
 protected:
  void SetUp() override {
    const BackendCase& c = GetParam();
    if (c.cuda) {
      std::string why;
      if (!cuda_backend_available(&why)) GTEST_SKIP() << "no CUDA device: " << why;
      CudaOptions o;
      o.precision = GemmPrecision::FP32;
      test_ = make_cuda_backend(o);
    } else {
      test_ = make_cpu_backend(c.cpu_threads);
    }
    ref_ = make_cpu_backend(1);
    seed_ = std::hash<std::string>{}(::testing::UnitTest::GetInstance()->current_test_info()->name()) % 100000 * 1000;
  }

  // make_cpu_backend(n) sets the process-wide OpenMP / OpenBLAS thread counts, so each accessor selects its own.
  static void set_threads(int n) {
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
  }
  Backend& ref() {
    set_threads(1);
    return *ref_;
  }
  Backend& be() {
    if (!GetParam().cuda) set_threads(GetParam().cpu_threads);
    return *test_;
  }
  bool cuda() const { return GetParam().cuda; }
  uint64_t seed() { return ++seed_; }

  // `host` on both backends; with pad > 0 as the columns [pad/2, pad/2 + cols) of a buffer with pad more columns
  // that hold NaN (f32) or kPadI32 (i32).
  Twin twin(const Tensor& host, int64_t pad = 0) {
    Tensor src = host;
    int64_t off = 0;
    if (pad > 0) {
      MOESAE_CHECK(host.rank() == 2, "padding needs a matrix");
      off = pad / 2;
      const int64_t R = host.rows(), C = host.cols(), W = C + pad;
      src = host.dtype() == DType::F32 ? full(R, W, kNaN) : full_i32(R, W, kPadI32);
      for (int64_t r = 0; r < R; ++r)
        std::memcpy(src.host<int32_t>() + r * W + off, host.host<int32_t>() + r * host.ld(), C * 4);
    }
    Twin t;
    t.ref_buf = ref().from_host(src);
    t.test_buf = be().from_host(src);
    t.ref = pad > 0 ? t.ref_buf.col_range(off, off + host.cols()) : t.ref_buf;
    t.test = pad > 0 ? t.test_buf.col_range(off, off + host.cols()) : t.test_buf;
    return t;
  }
  Twin poisoned(int64_t rows, int64_t cols, DType dt = DType::F32, int64_t pad = 0) {
    return twin(dt == DType::F32 ? full(rows, cols, kNaN) : full_i32(rows, cols, kPoisonI32), pad);
  }
  Twin poisoned_vector(int64_t n, DType dt = DType::F32) {
    Tensor h = host_vector(n, dt);
    for (int64_t i = 0; i < n; ++i) {
      if (dt == DType::F32) h.host<float>()[i] = kNaN; else h.host<int32_t>()[i] = kPoisonI32;
    }
    return twin(h);
  }

  Tensor ref_host(const Twin& t) { return ref().to_host(t.ref_buf); }
  Tensor test_host(const Twin& t) { return be().to_host(t.test_buf); }

  // Bit-identical whole buffers (selections, ids, integer outputs, data movement).
  void expect_equal(const Twin& t, const std::string& what) {
    EXPECT_TRUE(compare(ref_host(t), test_host(t), -1)) << what;
  }
  // Arithmetic outputs. The CPU backend must give the same bits for any thread count, so cpu4 is compared exactly.
  void expect_near(const Twin& t, double tol, const std::string& what, bool per_element = false) {
    EXPECT_TRUE(compare(ref_host(t), test_host(t), cuda() ? tol : -1, per_element)) << what;
  }
  void expect_gemm_near(const Twin& t, double tol, const std::string& what) {
    EXPECT_TRUE(compare_frobenius(ref_host(t), test_host(t), tol)) << what;
  }
  // topk_rows on both backends; ids and values compared exactly (selection copies values). Outputs poisoned.
  void check_topk(const Tensor& x, int k, const Tensor* mask, int64_t pad, const std::string& what) {
    Twin tx = twin(x, pad);
    Twin vals = poisoned(x.rows(), k, DType::F32, pad ? 2 : 0), idx = poisoned(x.rows(), k, DType::I32, pad ? 3 : 0);
    Twin tm;
    if (mask) tm = twin(*mask);
    ref().topk_rows(tx.ref, k, vals.ref, idx.ref, mask ? &tm.ref : nullptr);
    be().topk_rows(tx.test, k, vals.test, idx.test, mask ? &tm.test : nullptr);
    const std::string full_what = what + " " + shape_of(x, pad) + " k=" + std::to_string(k) + (mask ? " masked" : "");
    expect_equal(idx, "topk_rows idx: " + full_what);
    expect_equal(vals, "topk_rows vals: " + full_what);
  }
  void expect_scalar_near(double want, double got, double tol_abs, const std::string& what) {
    if (cuda()) {
      EXPECT_NEAR(got, want, tol_abs) << what;
    } else {
      EXPECT_EQ(got, want) << what << " (the CPU backend must not depend on the thread count)";
    }
  }

 private:
  std::unique_ptr<Backend> ref_, test_;
  uint64_t seed_ = 0;
};

}  // namespace

// ---- memory ---------------------------------------------------------------------------------------------------

TEST_P(Parity, AllocationAndHostRoundTrip) {
  EXPECT_EQ(be().device(), cuda() ? Device::CUDA : Device::CPU);
  EXPECT_FALSE(be().name().empty());
  for (DType dt : {DType::F32, DType::I32}) {
    Tensor e = be().empty(7, 5, dt), v = be().empty_vector(11, dt), z0 = be().empty(0, 5, dt);
    EXPECT_EQ(e.rank(), 2);
    EXPECT_EQ(e.rows(), 7);
    EXPECT_EQ(e.cols(), 5);
    EXPECT_EQ(e.dtype(), dt);
    EXPECT_EQ(e.device(), be().device());
    EXPECT_EQ(v.rank(), 1);
    EXPECT_EQ(v.rows(), 11);
    EXPECT_EQ(z0.numel(), 0);
    // zeros: every element is +0 (bits 0) / 0.
    for (Tensor z : {be().zeros(13, 9, dt), be().zeros_vector(1000, dt)}) {
      Tensor h = be().to_host(z);
      EXPECT_TRUE(std::all_of(h.host<uint32_t>(), h.host<uint32_t>() + h.numel(), [](uint32_t u) { return u == 0; }));
    }
  }
  // Round trips keep every bit pattern: NaN payloads, signed zeros, infinities, denormals.
  std::vector<float> special = {0.f, -0.f, kInf, -kInf, 1e-45f, -1e-40f, 3.4e38f, 1.f / 3.f};
  Tensor h = host_tensor(3, 5);
  uint32_t payload_nan = 0x7fc01234u;
  for (int64_t i = 0; i < h.numel(); ++i) h.host<float>()[i] = special[i % special.size()];
  std::memcpy(h.host<float>() + 14, &payload_nan, 4);
  EXPECT_TRUE(compare(h, be().to_host(be().from_host(h)), -1)) << "f32 round trip";
  Tensor ih = random_ids(4, 6, 1 << 30, seed(), 0.3);
  ih.host<int32_t>()[0] = INT32_MIN;
  ih.host<int32_t>()[1] = INT32_MAX;
  EXPECT_TRUE(compare(ih, be().to_host(be().from_host(ih)), -1)) << "i32 round trip";
  Tensor hv = randn_vector(1000, seed());
  EXPECT_TRUE(compare(hv, be().to_host(be().from_host(hv)), -1)) << "vector round trip";
  Tensor h0 = host_tensor(0, 4);
  EXPECT_EQ(be().to_host(be().from_host(h0)).numel(), 0);
}

// host_buffer: a host tensor (page-locked on CUDA) that uploads and reads like any other; a large upload from it is
// one wait on CUDA (the DMA is asynchronous: the caller may write the buffer again as soon as upload returns).
TEST_P(Parity, UploadFromHostBuffer) {
  for (int64_t rows : {int64_t(1), int64_t(3000)}) {  // under and over the small-upload size
    Tensor hb = be().host_buffer(rows, 37);
    ASSERT_EQ(hb.device(), Device::CPU);
    ASSERT_EQ(hb.rows(), rows);
    ASSERT_EQ(hb.cols(), 37);
    const Tensor values = randn(rows, 37, seed());
    std::memcpy(hb.data<float>(), values.data<float>(), size_t(values.numel()) * 4);
    Tensor dev = be().empty(rows, 37);
    const int64_t waits = be().host_waits();
    be().upload(hb, dev);
    if (cuda() && rows > 1) EXPECT_EQ(be().host_waits() - waits, 1) << "a page-locked upload waits once";
    std::memset(hb.data<float>(), 0, size_t(values.numel()) * 4);  // allowed right after upload
    EXPECT_TRUE(compare(values, be().to_host(dev), -1)) << "upload from host_buffer, " << rows << " rows";
  }
}

TEST_P(Parity, UploadDownloadStrided) {
  for (int64_t rows : {0, 1, 37}) {
    const int64_t cols = 9;
    // Contiguous host -> strided device view (the padding of the device buffer must stay NaN).
    Tensor src = randn(rows, cols, seed());
    Twin dst = poisoned(rows, cols, DType::F32, 5);
    ref().upload(src, dst.ref);
    be().upload(src, dst.test);
    expect_equal(dst, "upload into a strided view " + shape(rows, cols));
    // Strided host view -> contiguous device.
    Tensor wide = randn(rows, cols + 4, seed());
    Tensor view = wide.col_range(3, 3 + cols);
    EXPECT_TRUE(compare(ref().to_host(ref().from_host(view)), be().to_host(be().from_host(view)), -1))
        << "upload of a strided host view " << shape(rows, cols);
    // Strided device view -> strided host view: only the view's columns change.
    Twin s = twin(randn(rows, cols, seed()), 3);
    Tensor hr = full(rows, cols + 6, kNaN), ht = full(rows, cols + 6, kNaN);
    ref().download(s.ref, hr.col_range(2, 2 + cols));
    be().download(s.test, ht.col_range(2, 2 + cols));
    EXPECT_TRUE(compare(hr, ht, -1)) << "download of a strided view into a strided host view " << shape(rows, cols);
    // i32 both ways.
    Twin di = poisoned(rows, cols, DType::I32, 4);
    Tensor ids = random_ids(rows, cols, 1000, seed(), 0.2);
    ref().upload(ids, di.ref);
    be().upload(ids, di.test);
    expect_equal(di, "i32 upload into a strided view " + shape(rows, cols));
  }
}

TEST_P(Parity, Copy) {
  for (int64_t rows : {0, 1, 300}) {
    for (int64_t cols : {1, 17, 128}) {
      for (auto pads : {std::pair<int64_t, int64_t>{0, 0}, {3, 0}, {0, 5}, {3, 5}}) {
        Twin src = twin(randn(rows, cols, seed()), pads.first);
        Twin dst = poisoned(rows, cols, DType::F32, pads.second);
        ref().copy(src.ref, dst.ref);
        be().copy(src.test, dst.test);
        expect_equal(dst, "copy f32 " + shape(rows, cols, pads.first) + " -> " + shape(rows, cols, pads.second));
        Twin isrc = twin(random_ids(rows, cols, 1 << 20, seed(), 0.1), pads.first);
        Twin idst = poisoned(rows, cols, DType::I32, pads.second);
        ref().copy(isrc.ref, idst.ref);
        be().copy(isrc.test, idst.test);
        expect_equal(idst, "copy i32 " + shape(rows, cols, pads.first) + " -> " + shape(rows, cols, pads.second));
      }
    }
  }
  Twin v = twin(randn_vector(5000, seed())), vd = poisoned_vector(5000);
  ref().copy(v.ref, vd.ref);
  be().copy(v.test, vd.test);
  expect_equal(vd, "copy of a vector");
}

// ---- elementwise ----------------------------------------------------------------------------------------------

TEST_P(Parity, FillAndScale) {
  for (int64_t rows : {0, 1, 129}) {
    for (int64_t pad : {0, 3}) {
      const int64_t cols = 33;
      for (float value : {2.5f, -0.f, 0.f}) {
        Twin x = twin(randn(rows, cols, seed()), pad);
        ref().fill(x.ref, value);
        be().fill(x.test, value);
        expect_equal(x, "fill " + std::to_string(value) + " " + shape(rows, cols, pad));
      }
      Twin xi = twin(random_ids(rows, cols, 100, seed()), pad);
      ref().fill_i32(xi.ref, -1);
      be().fill_i32(xi.test, -1);
      expect_equal(xi, "fill_i32 " + shape(rows, cols, pad));
      for (float a : {-1.5f, 0.f, 1e-3f}) {
        Twin s = twin(randn(rows, cols, seed()), pad);
        ref().scale(s.ref, a);
        be().scale(s.test, a);
        expect_equal(s, "scale by " + std::to_string(a) + " " + shape(rows, cols, pad));  // one rounding: exact
      }
    }
  }
  Twin v = twin(randn_vector(20000, seed()));
  ref().scale(v.ref, 0.3f);
  be().scale(v.test, 0.3f);
  expect_equal(v, "scale of a vector");
  Twin vf = twin(randn_vector(20000, seed()));
  ref().fill(vf.ref, 7.f);
  be().fill(vf.test, 7.f);
  expect_equal(vf, "fill of a vector");
}

TEST_P(Parity, AxpyAndMul) {
  for (int64_t rows : {0, 3, 257}) {
    for (int64_t pad : {0, 2}) {
      const int64_t cols = 45;
      Twin x = twin(randn(rows, cols, seed()), pad), y = twin(randn(rows, cols, seed()), pad + 1);
      ref().axpy(-0.75f, x.ref, y.ref);
      be().axpy(-0.75f, x.test, y.test);
      expect_near(y, kTol, "axpy " + shape(rows, cols, pad));
      Twin a = twin(randn(rows, cols, seed()), pad), b = twin(randn(rows, cols, seed()), 0);
      Twin out = poisoned(rows, cols, DType::F32, pad ? 4 : 0);
      ref().mul(a.ref, b.ref, out.ref);
      be().mul(a.test, b.test, out.test);
      expect_equal(out, "mul " + shape(rows, cols, pad));  // one rounding: exact
      ref().mul(a.ref, b.ref, a.ref);  // out aliases a
      be().mul(a.test, b.test, a.test);
      expect_equal(a, "mul aliasing a " + shape(rows, cols, pad));
      ref().mul(a.ref, b.ref, b.ref);  // out aliases b
      be().mul(a.test, b.test, b.test);
      expect_equal(b, "mul aliasing b " + shape(rows, cols, pad));
    }
  }
  Twin xv = twin(randn_vector(30000, seed())), yv = twin(randn_vector(30000, seed()));
  ref().axpy(2.f, xv.ref, yv.ref);
  be().axpy(2.f, xv.test, yv.test);
  expect_near(yv, kTol, "axpy of vectors");
}

TEST_P(Parity, ReluReluBackwardExp) {
  const std::vector<float> special = {-0.f, 0.f, -1e-45f, 1e-45f, -3.f, 3.f, -kInf, kInf};
  for (int64_t rows : {0, 1, 200}) {
    for (int64_t pad : {0, 3}) {
      const int64_t cols = 40;
      Tensor h = randn(rows, cols, seed());
      for (int64_t i = 0; i < h.numel(); i += 3) h.host<float>()[i] = special[(i / 3) % special.size()];
      Twin x = twin(h, pad);
      ref().relu(x.ref);
      be().relu(x.test);
      expect_equal(x, "relu " + shape(rows, cols, pad));
      // relu_backward with the pre-relu values as y (zeros and -0 must block the gradient).
      Twin y = twin(h, pad), dy = twin(randn(rows, cols, seed()), pad ? 2 : 0);
      ref().relu_backward(y.ref, dy.ref);
      be().relu_backward(y.test, dy.test);
      expect_equal(dy, "relu_backward " + shape(rows, cols, pad));
      Twin ex = twin(randn(rows, cols, seed(), 3.0), pad), out = poisoned(rows, cols, DType::F32, pad ? 1 : 0);
      ref().exp(ex.ref, out.ref);
      be().exp(ex.test, out.test);
      expect_near(out, 2e-6, "exp " + shape(rows, cols, pad), /*per_element=*/true);
    }
  }
  Twin v = twin(randn_vector(1000, seed(), 2.0)), vo = poisoned_vector(1000);
  ref().exp(v.ref, vo.ref);
  be().exp(v.test, vo.test);
  expect_near(vo, 2e-6, "exp of a vector", true);
}

TEST_P(Parity, RowAndColumnBroadcasts) {
  for (int64_t rows : {0, 1, 150}) {
    for (int64_t pad : {0, 4}) {
      const int64_t cols = 70;
      for (float alpha : {1.f, -0.5f}) {
        Twin a = twin(randn(rows, cols, seed()), pad), v = twin(randn_vector(cols, seed()));
        ref().add_row_vector(a.ref, v.ref, alpha);
        be().add_row_vector(a.test, v.test, alpha);
        expect_near(a, kTol, "add_row_vector alpha " + std::to_string(alpha) + " " + shape(rows, cols, pad));
      }
      Twin a = twin(randn(rows, cols, seed()), pad), s = twin(randn_vector(rows, seed()));
      ref().scale_rows(a.ref, s.ref);
      be().scale_rows(a.test, s.test);
      expect_equal(a, "scale_rows " + shape(rows, cols, pad));  // one rounding: exact
      Twin b = twin(randn(rows, cols, seed()), pad), sc = twin(randn_vector(cols, seed()));
      ref().scale_cols(b.ref, sc.ref);
      be().scale_cols(b.test, sc.test);
      expect_equal(b, "scale_cols " + shape(rows, cols, pad));
    }
  }
}

TEST_P(Parity, SumRows) {
  struct Case {
    int64_t rows, cols, pad;
  };
  for (Case c :
       {Case{0, 5, 0}, Case{1, 1, 0}, Case{300, 70, 3}, Case{20000, 3, 0}, Case{7, 1000, 0}, Case{513, 130, 2}}) {
    for (auto ab : {std::pair<float, float>{1.f, 0.f}, {0.5f, 1.f}, {-2.f, 0.25f}}) {
      const float alpha = ab.first, beta = ab.second;
      Twin a = twin(randn(c.rows, c.cols, seed()), c.pad);
      // beta = 0 overwrites: a NaN-poisoned output must not leak through. Otherwise accumulate into random values.
      Twin out = beta == 0.f ? poisoned_vector(c.cols) : twin(randn_vector(c.cols, seed()));
      ref().sum_rows(a.ref, out.ref, alpha, beta);
      be().sum_rows(a.test, out.test, alpha, beta);
      expect_near(out, kTol,
                  "sum_rows alpha " + std::to_string(alpha) + " beta " + std::to_string(beta) + " " +
                      shape(c.rows, c.cols, c.pad));
    }
  }
  // Into a row of a matrix (a [1, N] view), as bias gradients of stacked parameters may be.
  Twin a = twin(randn(64, 20, seed())), out = poisoned(3, 20);
  ref().sum_rows(a.ref, out.ref.row_range(1, 2), 1.f, 0.f);
  be().sum_rows(a.test, out.test.row_range(1, 2), 1.f, 0.f);
  expect_near(out, kTol, "sum_rows into one row of a matrix (other rows stay poisoned)");
}

TEST_P(Parity, SumAndSumSquares) {
  struct Case {
    int64_t rows, cols, pad;
    bool vector;
  };
  for (Case c : {Case{0, 4, 0, false}, Case{1, 1, 0, false}, Case{3, 100000, 0, false}, Case{1000, 77, 5, false},
                 Case{1000003, 1, 0, true}, Case{40000, 1, 0, true}}) {
    Tensor h = c.vector ? randn_vector(c.rows, seed(), 2.0, 0.3) : random_host(c.rows, c.cols, seed(), 2.0, 0.3);
    Twin x = twin(h, c.vector ? 0 : c.pad);
    double abs_sum = 0, sq = 0;
    for (int64_t i = 0; i < h.numel(); ++i) {
      abs_sum += std::fabs(h.host<float>()[i]);
      sq += double(h.host<float>()[i]) * h.host<float>()[i];
    }
    const std::string what = c.vector ? "vector[" + std::to_string(c.rows) + "]" : shape(c.rows, c.cols, c.pad);
    const double s_ref = ref().sum(x.ref), s_got = be().sum(x.test);
    const double q_ref = ref().sum_squares(x.ref), q_got = be().sum_squares(x.test);
    // Both accumulate in double (differences ~1e-10 here); sum's error is relative to sum |x| (cancellation).
    expect_scalar_near(s_ref, s_got, kTolReduction * (1 + abs_sum), "sum " + what);
    expect_scalar_near(q_ref, q_got, kTolReduction * (1 + sq), "sum_squares " + what);
    EXPECT_NEAR(q_ref, sq, 1e-9 * (1 + sq)) << "reference sum_squares " << what;
  }
}

TEST_P(Parity, ReduceManyIsTheSingleReductionsInOneRoundTrip) {
  using Op = Backend::ReduceOp;
  Twin a = twin(random_host(300, 77, seed(), 2.0, 0.3), 5), b = twin(randn_vector(1000003, seed())),
       empty = twin(randn(0, 4, seed())), one = twin(randn(1, 1, seed()));
  auto items = [](const Tensor& ta, const Tensor& tb, const Tensor& te, const Tensor& t1) {
    return std::vector<Backend::Reduction>{{Op::Sum, ta},           {Op::SumSquares, tb}, {Op::CountPositive, ta},
                                           {Op::Sum, te},           {Op::CountPositive, tb}, {Op::SumSquares, t1},
                                           {Op::SumSquares, ta.row_range(10, 20)}};
  };
  const auto want = ref().reduce_many(items(a.ref, b.ref, empty.ref, one.ref));
  const int64_t waits = be().host_waits();
  const auto got = be().reduce_many(items(a.test, b.test, empty.test, one.test));
  EXPECT_EQ(be().host_waits() - waits, cuda() ? 1 : 0) << "reduce_many: one host round trip for seven reductions";
  ASSERT_EQ(got.size(), 7u);
  // Bit for bit what the single reductions give on the same backend, and near the reference.
  const std::vector<double> single = {be().sum(a.test),
                                      be().sum_squares(b.test),
                                      double(be().count_positive(a.test)),
                                      be().sum(empty.test),
                                      double(be().count_positive(b.test)),
                                      be().sum_squares(one.test),
                                      be().sum_squares(a.test.row_range(10, 20))};
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i], single[i]) << "reduce_many item " << i << " vs its single reduction";
    expect_scalar_near(want[i], got[i], kTolReduction * (1 + std::fabs(want[i])), "reduce_many item " + std::to_string(i));
  }
  EXPECT_EQ(got[3], 0.0) << "the sum of an empty tensor";
  EXPECT_TRUE(be().reduce_many({}).empty());
}

// A queued read-back holds the values of the moment it was queued and arrives with the next wait (none before on
// CUDA, where it is asked for later; at once on the CPU), whatever the queue holds, however much of it there is.
TEST_P(Parity, QueuedReadBacksArriveWithTheNextWait) {
  using Op = Backend::ReduceOp;
  Twin a = twin(random_host(300, 77, seed(), 2.0, 0.3), 5), big = twin(randn_vector(1000003, seed()));
  Twin ids = twin(random_ids(40, 3, 64, seed()), 3);
  const std::vector<double> want = be().reduce_many({{Op::Sum, a.test}, {Op::SumSquares, big.test}});
  const Tensor want_a = be().to_host(a.test), want_ids = be().to_host(ids.test);

  const int64_t waits = be().host_waits();
  Tensor got_a = host_tensor(300, 77), got_ids = host_tensor(40, 3, DType::I32), got_big = host_vector(1000003);
  Backend::Pending pbig = be().download_later(big.test, got_big);
  Backend::Pending sums = be().reduce_many_later({{Op::Sum, a.test}, {Op::SumSquares, big.test}});
  Backend::Pending pa = be().download_later(a.test, got_a);
  Backend::Pending pids = be().download_later(ids.test, got_ids);
  be().fill(a.test, 0.f);  // after the copies were queued: they keep what was there before
  be().fill_i32(ids.test, -7);
  EXPECT_EQ(be().host_waits() - waits, 0) << "queueing read-backs waited";
  if (cuda()) {
    EXPECT_FALSE(pbig.ready() || sums.ready() || pa.ready() || pids.ready()) << "arrived before any wait";
  } else {
    EXPECT_TRUE(pbig.ready() && sums.ready() && pa.ready() && pids.ready()) << "the CPU backend has them at once";
  }
  EXPECT_EQ(be().sum(a.test), 0.0);  // any read-back: one wait, which delivers everything queued before it
  EXPECT_EQ(be().host_waits() - waits, cuda() ? 1 : 0);
  EXPECT_TRUE(pbig.ready() && sums.ready() && pa.ready() && pids.ready());
  ASSERT_EQ(sums.get().size(), 2u);
  EXPECT_EQ(sums.get()[0], want[0]) << "reduce_many_later vs reduce_many";
  EXPECT_EQ(sums.get()[1], want[1]) << "reduce_many_later vs reduce_many";
  EXPECT_TRUE(pa.get().empty());
  EXPECT_TRUE(compare(want_a, got_a, -1)) << "download_later of a strided view";
  EXPECT_TRUE(compare(want_ids, got_ids, -1)) << "download_later of strided i32";
  EXPECT_TRUE(compare(ref().to_host(big.ref), got_big, -1)) << "download_later of a vector";
  EXPECT_EQ(be().host_waits() - waits, cuda() ? 1 : 0) << "get() after the wait waits no more";

  // More than the pinned area holds while a read-back is queued: the area is emptied by one wait (which delivers
  // the queued one) and grows.
  Backend::Pending small = be().reduce_many_later({{Op::SumSquares, big.test}});
  Tensor huge_h = randn_vector(3000001, seed()), got_huge = host_vector(3000001);
  Tensor huge = be().from_host(huge_h);
  const int64_t w1 = be().host_waits();
  Backend::Pending phuge = be().download_later(huge, got_huge);
  EXPECT_EQ(be().host_waits() - w1, cuda() ? 1 : 0) << "growing the area";
  EXPECT_TRUE(small.ready()) << "delivered by the growth's wait";
  EXPECT_EQ(small.get()[0], want[1]);
  EXPECT_TRUE(compare(huge_h, (phuge.get(), got_huge), -1)) << "download_later after growing";

  // Asked for before anything else waited: get() waits once itself.
  Backend::Pending alone = be().reduce_many_later({{Op::CountPositive, big.test}});
  const int64_t w2 = be().host_waits();
  const double got_alone = alone.get()[0];
  EXPECT_EQ(be().host_waits() - w2, cuda() ? 1 : 0) << "get()'s own wait";
  EXPECT_EQ(got_alone, double(be().count_positive(big.test)));
  EXPECT_EQ(be().host_waits() - w2, cuda() ? 2 : 0) << "then count_positive's";
  EXPECT_TRUE(Backend::Pending().get().empty()) << "a default Pending has no values";
}

// Clipping decided on the device: the factor from the per-tensor sums of squares exactly as the host computes it,
// applied to every tensor; the sums come back later. Nothing waits on CUDA.
TEST_P(Parity, ClipByGlobalNorm) {
  for (double max_norm : {0.0, 1.0, 1e6}) {
    std::vector<Twin> xs;
    xs.push_back(twin(random_host(300, 77, seed(), 1.0), 5));
    xs.push_back(twin(randn_vector(100003, seed())));
    xs.push_back(twin(randn(0, 4, seed())));
    xs.push_back(twin(randn(1, 1, seed())));
    std::vector<Tensor> ref_xs, test_xs;
    std::vector<Backend::Reduction> squares;
    for (const Twin& t : xs) {
      ref_xs.push_back(t.ref);
      test_xs.push_back(t.test);
      squares.push_back({Backend::ReduceOp::SumSquares, t.test});
    }
    const std::vector<double> want_sq = be().reduce_many(squares);
    const float factor = Backend::clip_factor(Backend::global_norm(want_sq), max_norm);
    std::vector<Tensor> want;  // the host's way: scale when the factor is not 1
    for (const Twin& t : xs) {
      Tensor c = t.test.rank() == 1 ? be().empty_vector(t.test.rows()) : be().empty(t.test.rows(), t.test.cols());
      be().copy(t.test, c);
      if (factor != 1.f) be().scale(c, factor);
      want.push_back(be().to_host(c));
    }
    const int64_t waits = be().host_waits();
    Backend::Pending got_sq = be().clip_by_global_norm(test_xs, max_norm);
    ref().clip_by_global_norm(ref_xs, max_norm);
    EXPECT_EQ(be().host_waits() - waits, 0) << "clip_by_global_norm waited";
    ASSERT_EQ(got_sq.get().size(), xs.size());
    const std::string what = "max_norm " + std::to_string(max_norm);
    for (size_t i = 0; i < xs.size(); ++i) {
      EXPECT_EQ(got_sq.get()[i], want_sq[i]) << "sum of squares " << i << ", " << what;
      EXPECT_TRUE(compare(want[i], be().to_host(xs[i].test), -1)) << "clipped tensor " << i << ", " << what;
      expect_near(xs[i], 1e-6, "vs the reference: tensor " + std::to_string(i) + ", " + what);
      if (xs[i].test.rank() == 2 && xs[i].test.ld() != xs[i].test.cols())
        EXPECT_TRUE(std::isnan(be().to_host(xs[i].test_buf).host<float>()[0])) << "padding written, " << what;
    }
    if (max_norm == 1.0) EXPECT_LT(factor, 1.f) << "the case meant to clip did not";
    if (max_norm != 1.0) EXPECT_EQ(factor, 1.f);
  }
}

TEST_P(Parity, CountPositive) {
  // -0, +0, NaN and negatives do not count; the smallest denormal does.
  const std::vector<float> special = {-0.f, 0.f, kNaN, 1e-45f, -1e-45f, kInf, -kInf, 0.5f, -0.5f};
  for (auto c : {std::tuple<int64_t, int64_t, int64_t>{0, 3, 0}, {1, 9, 0}, {300, 500, 0}, {301, 129, 3}}) {
    const auto [rows, cols, pad] = c;
    Tensor h = randn(rows, cols, seed());
    for (int64_t i = 0; i < h.numel(); i += 2) h.host<float>()[i] = special[(i / 2) % special.size()];
    Twin x = twin(h, pad);
    EXPECT_EQ(be().count_positive(x.test), ref().count_positive(x.ref)) << "count_positive " << shape(rows, cols, pad);
  }
  Tensor v = randn_vector(2000001, seed());
  Twin x = twin(v);
  EXPECT_EQ(be().count_positive(x.test), ref().count_positive(x.ref)) << "count_positive of a long vector";
}

TEST_P(Parity, RowSquaredError) {
  for (auto c :
       {std::tuple<int64_t, int64_t, int64_t>{0, 8, 0}, {1, 1, 0}, {257, 64, 3}, {5, 5000, 0}, {4096, 32, 0}}) {
    const auto [rows, cols, pad] = c;
    Twin a = twin(randn(rows, cols, seed()), pad), b = twin(randn(rows, cols, seed()), pad ? pad + 2 : 0);
    Twin out = poisoned_vector(rows);
    ref().row_squared_error(a.ref, b.ref, out.ref);
    be().row_squared_error(a.test, b.test, out.test);
    expect_near(out, kTol, "row_squared_error " + shape(rows, cols, pad), /*per_element=*/true);
  }
}

// ---- dense linear algebra -------------------------------------------------------------------------------------

namespace {

struct GemmShape {
  int64_t m, n, k;
};
const std::vector<GemmShape> kGemmShapes = {{1, 1, 1},   {5, 7, 37},   {64, 48, 96}, {130, 257, 300},
                                            {5, 7, 9000}, {8, 64, 4100}, {0, 4, 5},    {4, 0, 5},
                                            {3, 4, 0}};

}  // namespace

TEST_P(Parity, GemmAllTransposesStridedAndBeta) {
  for (const GemmShape& s : kGemmShapes) {
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (bool strided : {false, true})
          for (auto ab : {std::pair<float, float>{1.f, 0.f}, {0.5f, 0.75f}}) {
            if (strided && (s.m == 0 || s.n == 0 || s.k == 0)) continue;
            const float alpha = ab.first, beta = ab.second;
            Twin a = twin(ta ? randn(s.k, s.m, seed()) : randn(s.m, s.k, seed()), strided ? 3 : 0);
            Twin b = twin(tb ? randn(s.n, s.k, seed()) : randn(s.k, s.n, seed()), strided ? 5 : 0);
            // beta = 0 must not read C (BLAS convention): NaN poison. Otherwise C starts random.
            Twin c = beta == 0.f ? poisoned(s.m, s.n, DType::F32, strided ? 2 : 0)
                                 : twin(randn(s.m, s.n, seed()), strided ? 2 : 0);
            ref().gemm(ta, tb, alpha, a.ref, b.ref, beta, c.ref);
            be().gemm(ta, tb, alpha, a.test, b.test, beta, c.test);
            std::ostringstream what;
            what << "gemm m=" << s.m << " n=" << s.n << " k=" << s.k << " ta=" << ta << " tb=" << tb
                 << " alpha=" << alpha << " beta=" << beta << (strided ? " strided" : "");
            expect_gemm_near(c, 1e-5, what.str());
          }
  }
}

namespace {

// Groups with empty members, a one-row group, and rows outside every group (before the first and after the last).
const std::vector<int64_t> kGroupOffsets = {3, 3, 20, 57, 57, 58, 101};
constexpr int64_t kGroupRows = 110, kGroups = 6;
const std::vector<float> kGroupAlpha = {1.5f, -0.25f, 1.f, 0.75f, 2.f, -1.f};

}  // namespace

// TF32 and BF16 tensor-core GEMMs land near the FP32 reference (CUDA only: the CPU backend has no such modes).
TEST_P(Parity, GemmReducedPrecisionCuda) {
  if (!cuda()) GTEST_SKIP() << "GEMM precision modes exist only on the CUDA backend";
  for (auto [precision, tol] : {std::pair<GemmPrecision, double>{GemmPrecision::TF32, 2e-3},
                                {GemmPrecision::BF16, 1e-2}}) {
    CudaOptions o;
    o.precision = precision;
    auto low = make_cuda_backend(o);
    for (const GemmShape& s : {GemmShape{64, 48, 96}, GemmShape{130, 257, 300}, GemmShape{5, 7, 9000},
                               GemmShape{512, 384, 768}})
      for (bool ta : {false, true})
        for (bool tb : {false, true}) {
          Tensor ha = ta ? randn(s.k, s.m, seed()) : randn(s.m, s.k, seed());
          Tensor hb = tb ? randn(s.n, s.k, seed()) : randn(s.k, s.n, seed());
          Tensor hc = randn(s.m, s.n, seed());
          Tensor want = ref().from_host(hc);  // a copy: the CPU backend works on host tensors
          ref().gemm(ta, tb, 0.5f, ha, hb, 0.25f, want);
          Tensor a = low->from_host(ha), b = low->from_host(hb), c = low->from_host(hc);
          low->gemm(ta, tb, 0.5f, a, b, 0.25f, c);
          EXPECT_TRUE(compare_frobenius(want, low->to_host(c), tol))
              << gemm_precision_name(precision) << " gemm m=" << s.m << " n=" << s.n << " k=" << s.k << " ta=" << ta
              << " tb=" << tb;
        }
    // The grouped product (the experts' encoders: d = 768, n = 384) in the same precision.
    Tensor ha = randn(kGroupRows, 768, seed()), hw = randn(kGroups * 384, 768, seed());
    Tensor want = ref().zeros(kGroupRows, 384), c = low->zeros(kGroupRows, 384);
    ref().grouped_gemm(true, ha, hw, 384, kGroupOffsets, kGroupAlpha, 0.f, want);
    low->grouped_gemm(true, low->from_host(ha), low->from_host(hw), 384, kGroupOffsets, kGroupAlpha, 0.f, c);
    EXPECT_TRUE(compare_frobenius(want, low->to_host(c), tol)) << gemm_precision_name(precision) << " grouped_gemm";
    // One row of b per group into a one-column c (ld 1: unaligned blocks, the per-group path).
    Tensor hl = randn(kGroups, 768, seed());
    Tensor want1 = ref().zeros(kGroupRows, 1), c1 = low->zeros(kGroupRows, 1);
    ref().grouped_gemm(true, ha, hl, 1, kGroupOffsets, kGroupAlpha, 0.f, want1);
    low->grouped_gemm(true, low->from_host(ha), low->from_host(hl), 1, kGroupOffsets, kGroupAlpha, 0.f, c1);
    EXPECT_TRUE(compare_frobenius(want1, low->to_host(c1), tol))
        << gemm_precision_name(precision) << " grouped_gemm into one column";
  }
}

// ---- grouped rows ---------------------------------------------------------------------------------------------


// The four grouped operations in the shapes the experts' encoder uses them: per-group transposed blocks of b (the
// encoder W_i), one row per group (the low-pass vectors), a shared b (the rank-1 correction), per-group column
// sums (the experts' mean rows), per-group row vectors (biases) and per-group axpy (the identity low-pass).
TEST_P(Parity, GroupedRowOperations) {
  const int64_t d = 37, n = 19;
  Twin a = twin(randn(kGroupRows, d, seed()), 2);
  // c = x op(b) by groups on `test` (be()'s tensors: the other CUDA backend waits for be()'s stream first).
  auto gemm_case = [&](Backend& test, const Twin& x, bool tb, const Twin& b, int64_t b_rows, int64_t cols,
                       int64_t c_pad, float beta, const std::string& what) {
    // Rows outside the groups must keep these values. c_pad < 0: the first column of a [rows, -c_pad] buffer.
    Twin c = twin(randn(kGroupRows, c_pad < 0 ? -c_pad : cols, seed()), std::max<int64_t>(c_pad, 0));
    if (c_pad < 0) {
      c.ref = c.ref.col_range(0, cols);
      c.test = c.test.col_range(0, cols);
    }
    ref().grouped_gemm(tb, x.ref, b.ref, b_rows, kGroupOffsets, kGroupAlpha, beta, c.ref);
    be().synchronize();
    test.grouped_gemm(tb, x.test, b.test, b_rows, kGroupOffsets, kGroupAlpha, beta, c.test);
    test.synchronize();
    expect_gemm_near(c, 1e-5, "grouped_gemm " + what + " beta " + std::to_string(beta));
  };
  // The CUDA backend's grouped cuBLAS product (16-byte aligned operands: d, n multiples of 4, no padding), its
  // fallback (odd widths and padding), and its one-product-per-group mode.
  std::vector<std::pair<std::string, Backend*>> backends = {{"", &be()}};
  std::unique_ptr<Backend> per_group;
  if (cuda()) {
    CudaOptions o;
    o.per_group_gemm = true;
    per_group = make_cuda_backend(o);
    backends.push_back({" (per group)", per_group.get()});
  }
  for (auto& [label, test] : backends)
    for (bool aligned : {true, false})
      for (float beta : {0.f, 1.f, 0.5f}) {
        const int64_t dd = aligned ? 40 : d, nn = aligned ? 20 : n, pad = aligned ? 0 : 3;
        const std::string how = label + (aligned ? " aligned" : " odd widths, strided");
        Twin x = aligned ? twin(randn(kGroupRows, dd, seed())) : a;
        Twin w = twin(randn(kGroups * nn, dd, seed()), pad), lp = twin(randn(kGroups, dd, seed()), pad);
        Twin shared = twin(randn(dd, nn, seed()), pad);
        const int64_t fallbacks = test->grouped_gemm_fallbacks();
        gemm_case(*test, x, true, w, nn, nn, aligned ? 0 : 1, beta, "x W_i^T" + how);
        gemm_case(*test, x, true, lp, 1, 1, aligned ? -4 : 0, beta, "x l_i^T (c's rows 16 bytes apart)" + how);
        gemm_case(*test, x, false, shared, 0, nn, aligned ? 0 : 1, beta, "x B, one B for all" + how);
        if (cuda() && aligned && label.empty())  // aligned operands stay one grouped cuBLAS product
          EXPECT_EQ(test->grouped_gemm_fallbacks(), fallbacks) << "grouped products that fell back" << how;
        if (!cuda()) EXPECT_EQ(test->grouped_gemm_fallbacks(), 0);
      }

  Twin sums = poisoned(kGroups, d);
  ref().sum_group_rows(a.ref, kGroupOffsets, 0.5f, sums.ref);
  be().sum_group_rows(a.test, kGroupOffsets, 0.5f, sums.test);
  expect_near(sums, kTol, "sum_group_rows (an empty group gives 0)");
  // Groups longer than one chunk of rows (the CUDA kernel adds 256-row chunks), as the experts' mean rows are.
  const std::vector<int64_t> long_groups = {0, 600, 600, 613, 1400};
  Twin tall = twin(randn(1400, d, seed()), 2), long_sums = poisoned(4, d);
  ref().sum_group_rows(tall.ref, long_groups, 1.f / 384, long_sums.ref);
  be().sum_group_rows(tall.test, long_groups, 1.f / 384, long_sums.test);
  expect_near(long_sums, kTol, "sum_group_rows over groups of 600, 0, 13 and 787 rows");

  Twin v = twin(randn(kGroups, d, seed())), y = twin(randn(kGroupRows, d, seed()), 4);
  ref().add_group_rows(y.ref, kGroupOffsets, v.ref, -0.5f);
  be().add_group_rows(y.test, kGroupOffsets, v.test, -0.5f);
  expect_near(y, kTol, "add_group_rows (rows outside the groups unchanged)");

  Twin y2 = twin(randn(kGroupRows, d, seed()));
  ref().axpy_groups(kGroupAlpha, kGroupOffsets, a.ref, y2.ref);
  be().axpy_groups(kGroupAlpha, kGroupOffsets, a.test, y2.test);
  expect_near(y2, kTol, "axpy_groups (rows outside the groups unchanged)");

  // Shapes are checked before any backend runs.
  EXPECT_THROW(be().sum_group_rows(a.test, {0, 5, 3}, 1.f, sums.test), Error) << "decreasing offsets";
  EXPECT_THROW(be().axpy_groups({1.f}, {0, 200}, a.test, y2.test), Error) << "a group beyond the rows";
  EXPECT_THROW(be().grouped_gemm(true, a.test, v.test, 1, kGroupOffsets, {1.f}, 0.f, y2.test), Error)
      << "one alpha for six groups";
}

// ---- softmax and selection ------------------------------------------------------------------------------------

TEST_P(Parity, SoftmaxForwardBackward) {
  struct Case {
    int64_t rows, cols, pad;
    double scale;
  };
  for (Case c : {Case{0, 8, 0, 1}, Case{1, 1, 0, 1}, Case{33, 8, 0, 1}, Case{1000, 64, 3, 1}, Case{200, 8, 2, 40},
                 Case{50, 700, 0, 5}}) {
    Tensor h = randn(c.rows, c.cols, seed(), c.scale);
    if (c.rows > 2)
      for (int64_t j = 0; j < c.cols; ++j) {
        h.host<float>()[j] = 0.7f;                    // a row of equal logits
        h.host<float>()[c.cols + j] = j == 0 ? 80.f : -80.f;  // one dominating logit
      }
    Twin logits = twin(h, c.pad), probs = poisoned(c.rows, c.cols, DType::F32, c.pad ? 1 : 0);
    ref().softmax_rows(logits.ref, probs.ref);
    be().softmax_rows(logits.test, probs.test);
    expect_near(probs, kTol, "softmax_rows " + shape(c.rows, c.cols, c.pad));
    // Backward from the reference probabilities (so both backends see the same p).
    Tensor p = ref().to_host(probs.ref);
    Twin pt = twin(p, c.pad), dp = twin(randn(c.rows, c.cols, seed()), c.pad ? 4 : 0);
    Twin dl = poisoned(c.rows, c.cols, DType::F32, c.pad);
    ref().softmax_rows_backward(pt.ref, dp.ref, dl.ref);
    be().softmax_rows_backward(pt.test, dp.test, dl.test);
    expect_near(dl, kTol, "softmax_rows_backward " + shape(c.rows, c.cols, c.pad));
  }
}

TEST_P(Parity, TopKRandomAndMasked) {
  struct Case {
    int64_t rows, cols;
    int k;
    int64_t pad;
  };
  for (Case c : {Case{37, 300, 11, 0}, Case{1, 1, 1, 0}, Case{5, 40, 40, 0}, Case{0, 16, 4, 0}, Case{64, 1000, 1, 3},
                 Case{129, 768, 32, 5}, Case{7, 5, 8, 0}}) {
    Tensor x = randn(c.rows, c.cols, seed());
    check_topk(x, c.k, nullptr, c.pad, c.k > c.cols ? "random, k > N (trailing -1 slots)" : "random");
    Tensor mask = host_vector(c.cols, DType::I32);
    for (int64_t j = 0; j < c.cols; ++j) mask.host<int32_t>()[j] = j % 3 != 0 ? 1 + int32_t(j % 5) : 0;  // any != 0
    check_topk(x, c.k, &mask, c.pad, "random");
  }
  // Fewer unmasked columns than k: 5 candidates, k = 16; and none at all.
  Tensor x = randn(50, 200, seed());
  Tensor few = host_vector(200, DType::I32);
  for (int j : {3, 17, 18, 150, 199}) few.host<int32_t>()[j] = 1;
  check_topk(x, 16, &few, 0, "5 unmasked columns, k=16");
  check_topk(x, 16, &few, 3, "5 unmasked columns, k=16, strided");
  Tensor none = host_vector(200, DType::I32);
  check_topk(x, 4, &none, 0, "every column masked");
  Tensor all = host_vector(200, DType::I32);
  for (int64_t j = 0; j < 200; ++j) all.host<int32_t>()[j] = 1;
  check_topk(x, 200, &all, 0, "every column unmasked, k=N");
}

TEST_P(Parity, TopKTies) {
  // Few distinct levels: the boundary of the top k cuts through a long run of equal values.
  check_topk(quantized(64, 513, seed(), 3), 64, nullptr, 0, "3 levels, k=64");
  check_topk(quantized(64, 513, seed(), 3), 64, nullptr, 4, "3 levels, k=64, strided");
  check_topk(quantized(300, 64, seed(), 2), 32, nullptr, 0, "2 levels, k=32");
  check_topk(full(8, 300, 0.f), 32, nullptr, 0, "all-zero rows");
  check_topk(full(8, 300, -1.f), 300, nullptr, 0, "constant negative rows, k=N");
  // -0 and +0 are equal: ties resolved by index whatever the sign, and the value copied keeps its sign.
  {
    Tensor x = host_tensor(16, 100);
    Rng rng(seed());
    for (int64_t i = 0; i < x.numel(); ++i) {
      const double u = rng.uniform();
      x.host<float>()[i] = u < 0.45 ? -0.f : u < 0.9 ? 0.f : u < 0.95 ? -float(rng.uniform()) : float(rng.uniform());
    }
    check_topk(x, 20, nullptr, 0, "signed zeros");
    Tensor mask = host_vector(100, DType::I32);
    for (int64_t j = 0; j < 100; ++j) mask.host<int32_t>()[j] = j % 2;
    check_topk(x, 20, &mask, 0, "signed zeros, masked");
  }
  // Infinities and huge values.
  {
    Tensor x = randn(10, 50, seed(), 1e30);
    for (int64_t r = 0; r < 10; ++r) {
      x.host<float>()[r * 50 + r] = kInf;
      x.host<float>()[r * 50 + 49 - r] = -kInf;
      x.host<float>()[r * 50 + 25] = kInf;
    }
    check_topk(x, 5, nullptr, 0, "infinities");
    check_topk(x, 50, nullptr, 0, "infinities, k=N");
  }
}

TEST_P(Parity, TopKLargeShapes) {
  // The MoE candidate shape at paper scale: B = 24576 tokens, e * n = 512 candidates, k = 32 (ties from rounding).
  {
    Tensor x = randn(24576, 512, seed());
    for (int64_t i = 0; i < x.numel(); ++i) x.host<float>()[i] = std::round(x.host<float>()[i] * 16.f) / 16.f;
    check_topk(x, 32, nullptr, 0, "24576 x 512, k=32, ties");
  }
  // Dense TopK over a wide dictionary: 65536 columns, k up to 256.
  {
    Tensor x = randn(16, 65536, seed());
    for (int64_t i = 0; i < x.numel(); ++i) x.host<float>()[i] = std::round(x.host<float>()[i] * 64.f) / 64.f;
    check_topk(x, 256, nullptr, 0, "16 x 65536, k=256, ties");
    Tensor mask = host_vector(65536, DType::I32);
    for (int64_t j = 0; j < 65536; ++j) mask.host<int32_t>()[j] = (j / 7) % 2;
    check_topk(x, 256, &mask, 0, "16 x 65536, k=256, masked");
  }
  check_topk(full(3, 65536, 0.f), 256, nullptr, 0, "3 x 65536 zeros, k=256");
  check_topk(quantized(256, 4096, seed(), 5), 128, nullptr, 2, "256 x 4096, 5 levels, k=128, strided");
}

TEST_P(Parity, SortRowsByIndex) {
  struct Case {
    int64_t rows;
    int e, limit;
    double p_empty;
    int64_t pad;
  };
  for (Case c : {Case{0, 2, 8, 0, 0}, Case{1, 1, 4, 0, 0}, Case{1000, 2, 8, 0.2, 0}, Case{500, 8, 64, 0.3, 3},
                 Case{200, 64, 64, 0.25, 0}, Case{300, 4, 4, 0.5, 2}}) {
    Tensor ids = distinct_ids(c.rows, c.e, c.limit, seed(), c.p_empty);
    // Distinct values everywhere, so an unstable order among -1 slots shows too (the CUDA backend's sorts are
    // documented as stable).
    Twin idx = twin(ids, c.pad), vals = twin(randn(c.rows, c.e, seed()), c.pad ? c.pad + 1 : 0);
    ref().sort_rows_by_index(idx.ref, vals.ref);
    be().sort_rows_by_index(idx.test, vals.test);
    const std::string what = shape(c.rows, c.e, c.pad) + " p(-1)=" + std::to_string(c.p_empty);
    expect_equal(idx, "sort_rows_by_index idx " + what);
    expect_equal(vals, "sort_rows_by_index vals " + what);
  }
  // Rows of only -1 with zero values (topk's empty slots), sorted and reverse-sorted rows.
  Tensor ids = host_tensor(3, 6, DType::I32);
  const std::vector<int32_t> rows = {-1, -1, -1, -1, -1, -1, 0, 1, 2, 3, 4, 5, 5, 4, 3, -1, 1, 0};
  std::copy(rows.begin(), rows.end(), ids.host<int32_t>());
  Twin idx = twin(ids), vals = twin(randn(3, 6, seed()));
  ref().sort_rows_by_index(idx.ref, vals.ref);
  be().sort_rows_by_index(idx.test, vals.test);
  expect_equal(idx, "sort_rows_by_index hand-made rows idx");
  expect_equal(vals, "sort_rows_by_index hand-made rows vals");
}

// ---- gather / scatter -----------------------------------------------------------------------------------------

TEST_P(Parity, GatherRowsScatterRows) {
  for (int64_t M : {0, 1, 500}) {
    for (int64_t pad : {0, 3}) {
      const int64_t F = 200, d = 33;
      Twin src = twin(randn(F, d, seed()), pad);
      Tensor idx = random_ids(M, 1, int32_t(F), seed()).reshape(M, 1).flatten();  // repeats allowed
      Twin ti = twin(idx), dst = poisoned(M, d, DType::F32, pad ? 2 : 0);
      ref().gather_rows(src.ref, ti.ref, dst.ref);
      be().gather_rows(src.test, ti.test, dst.test);
      expect_equal(dst, "gather_rows M=" + std::to_string(M) + (pad ? " strided" : ""));
      // scatter_rows: distinct destination rows; the rows not written keep their (random) values.
      const int64_t Ms = std::min<int64_t>(M, 150);
      Tensor perm = distinct_ids(1, Ms, int32_t(F), seed()).reshape(Ms, 1).flatten();
      Twin sp = twin(perm), ssrc = twin(randn(Ms, d, seed()), pad), sdst = twin(randn(F, d, seed()), pad ? 4 : 0);
      ref().scatter_rows(ssrc.ref, sp.ref, sdst.ref);
      be().scatter_rows(ssrc.test, sp.test, sdst.test);
      expect_equal(sdst, "scatter_rows M=" + std::to_string(Ms) + (pad ? " strided" : ""));
    }
  }
}

TEST_P(Parity, GatherAndScatterAdd) {
  for (auto c : {std::tuple<int64_t, int64_t, int64_t>{0, 4, 10}, {1, 1, 1}, {300, 8, 1000}, {20000, 8, 300}}) {
    const auto [B, k, n] = c;
    Tensor idx = random_ids(B, k, int32_t(n), seed(), 0.2, 7 % int32_t(n), 0.3);
    Twin ti = twin(idx);
    Twin src = twin(randn_vector(n, seed())), dst = poisoned(B, k);
    ref().gather(src.ref, ti.ref, dst.ref);
    be().gather(src.test, ti.test, dst.test);
    expect_equal(dst, "gather f32 " + shape(B, k) + " from " + std::to_string(n) + " (-1 gives 0)");
    Twin isrc = twin(random_ids(n, 1, 1 << 20, seed()).flatten()), idst = poisoned(B, k, DType::I32);
    ref().gather(isrc.ref, ti.ref, idst.ref);
    be().gather(isrc.test, ti.test, idst.test);
    expect_equal(idst, "gather i32 " + shape(B, k) + " (-1 gives -1)");
    // scatter_add: contributions to one element are added in order of m, so the sums are defined to the bit.
    Twin sa_src = twin(randn(B, k, seed())), sa_dst = twin(randn_vector(n, seed()));
    ref().scatter_add(sa_src.ref, ti.ref, sa_dst.ref);
    be().scatter_add(sa_src.test, ti.test, sa_dst.test);
    expect_equal(sa_dst, "scatter_add " + shape(B, k) + " into " + std::to_string(n) + " (hot index, -1 skipped)");
  }
  // A 2-D source for the elementwise gather (flattened).
  Twin src2 = twin(randn(40, 25, seed())), ti2 = twin(random_ids(33, 9, 1000, seed(), 0.1)), dst2 = poisoned(33, 9);
  ref().gather(src2.ref, ti2.ref, dst2.ref);
  be().gather(src2.test, ti2.test, dst2.test);
  expect_equal(dst2, "gather from a 2-D source");
}

TEST_P(Parity, GatherColsScatterAddCols) {
  for (auto c : {std::tuple<int64_t, int64_t, int64_t, int64_t>{0, 8, 4, 0}, {1, 1, 1, 0}, {400, 96, 16, 0},
                 {257, 512, 32, 3}}) {
    const auto [B, N, k, pad] = c;
    Tensor col = random_ids(B, k, int32_t(N), seed(), 0.15, 0, 0.2);  // repeats within rows, column 0 hot
    Twin tc = twin(col, pad);
    Twin src = twin(randn(B, N, seed()), pad ? pad + 1 : 0), dst = poisoned(B, k, DType::F32, pad);
    ref().gather_cols(src.ref, tc.ref, dst.ref);
    be().gather_cols(src.test, tc.test, dst.test);
    expect_equal(dst, "gather_cols f32 " + shape(B, N, pad) + " k=" + std::to_string(k));
    Twin isrc = twin(random_ids(B, N, 1 << 20, seed()), pad), idst = poisoned(B, k, DType::I32, pad ? 2 : 0);
    ref().gather_cols(isrc.ref, tc.ref, idst.ref);
    be().gather_cols(isrc.test, tc.test, idst.test);
    expect_equal(idst, "gather_cols i32 " + shape(B, N, pad) + " k=" + std::to_string(k));
    // scatter_add_cols: in j order per row, so exact.
    Twin ssrc = twin(randn(B, k, seed()), pad), sdst = twin(randn(B, N, seed()), pad ? pad + 2 : 0);
    ref().scatter_add_cols(ssrc.ref, tc.ref, sdst.ref);
    be().scatter_add_cols(ssrc.test, tc.test, sdst.test);
    expect_equal(sdst, "scatter_add_cols " + shape(B, N, pad) + " k=" + std::to_string(k));
  }
}

// ---- sparse codes ---------------------------------------------------------------------------------------------

namespace {

struct SparseCase {
  int64_t B, k, F, d, pad;
};
// The last case is wider than one pass of the CUDA kernels' columns (4 per thread, 256 threads).
const std::vector<SparseCase> kSparseCases = {{0, 4, 50, 16, 0},   {1, 1, 1, 1, 0},      {77, 8, 300, 40, 3},
                                              {2048, 32, 300, 96, 0}, {512, 16, 1000, 64, 2}, {64, 8, 50, 1100, 1}};

}  // namespace

TEST_P(Parity, SparseRowsMatmul) {
  for (const SparseCase& c : kSparseCases) {
    for (float beta : {0.f, 1.f, 0.5f}) {
      // -1 slots, repeats across and within rows, and a hot latent.
      Tensor ids = random_ids(c.B, c.k, int32_t(c.F), seed(), 0.15, int32_t(c.F / 2), 0.2);
      Twin ti = twin(ids, c.pad), coef = twin(randn(c.B, c.k, seed()), c.pad ? c.pad + 1 : 0);
      Twin w = twin(randn(c.F, c.d, seed()), c.pad);
      Twin out = beta == 0.f ? poisoned(c.B, c.d, DType::F32, c.pad) : twin(randn(c.B, c.d, seed()), c.pad);
      ref().sparse_rows_matmul(coef.ref, ti.ref, w.ref, beta, out.ref);
      be().sparse_rows_matmul(coef.test, ti.test, w.test, beta, out.test);
      expect_near(out, kTol, "sparse_rows_matmul beta " + std::to_string(beta) + " B=" + std::to_string(c.B) +
                                 " k=" + std::to_string(c.k) + (c.pad ? " strided" : ""));
    }
  }
}

TEST_P(Parity, SparseRowsDot) {
  for (const SparseCase& c : kSparseCases) {
    Tensor ids = random_ids(c.B, c.k, int32_t(c.F), seed(), 0.2, 0, 0.2);
    Twin ti = twin(ids, c.pad), x = twin(randn(c.B, c.d, seed()), c.pad ? c.pad + 2 : 0);
    Twin w = twin(randn(c.F, c.d, seed()), c.pad), out = poisoned(c.B, c.k, DType::F32, c.pad);
    ref().sparse_rows_dot(x.ref, ti.ref, w.ref, out.ref);
    be().sparse_rows_dot(x.test, ti.test, w.test, out.test);
    expect_near(out, kTol, "sparse_rows_dot B=" + std::to_string(c.B) + " k=" + std::to_string(c.k) +
                               (c.pad ? " strided" : "") + " (empty slots give 0)");
  }
}

TEST_P(Parity, SparseRowsOuterAdd) {
  for (const SparseCase& c : kSparseCases) {
    for (float alpha : {1.f, -0.5f}) {
      // Hot latent: 60% of all entries hit latent 5 (many rows, and several slots of one row).
      Tensor ids = random_ids(c.B, c.k, int32_t(c.F), seed(), 0.1, int32_t(5 % c.F), 0.6);
      Twin ti = twin(ids, c.pad), coef = twin(randn(c.B, c.k, seed()), c.pad);
      Twin x = twin(randn(c.B, c.d, seed()), c.pad ? c.pad + 1 : 0);
      Twin g = twin(randn(c.F, c.d, seed()), c.pad ? c.pad + 2 : 0);  // accumulates
      ref().sparse_rows_outer_add(coef.ref, ti.ref, x.ref, alpha, g.ref);
      be().sparse_rows_outer_add(coef.test, ti.test, x.test, alpha, g.test);
      expect_near(g, kTol, "sparse_rows_outer_add alpha " + std::to_string(alpha) + " B=" + std::to_string(c.B) +
                               " k=" + std::to_string(c.k) + (c.pad ? " strided" : "") + " (hot latent)");
    }
  }
  // Every entry on one latent (the extreme of a hot latent), long batch.
  Twin ti = twin(full_i32(4096, 8, 3)), coef = twin(randn(4096, 8, seed())), x = twin(randn(4096, 24, seed()));
  Twin g = twin(randn(10, 24, seed()));
  ref().sparse_rows_outer_add(coef.ref, ti.ref, x.ref, 1.f, g.ref);
  be().sparse_rows_outer_add(coef.test, ti.test, x.test, 1.f, g.test);
  expect_near(g, kTol, "sparse_rows_outer_add with every entry on one latent");
}

TEST_P(Parity, IdentityLowpass) {
  const int n = 32, E = 8;  // 256 latents
  for (auto c : {std::tuple<int64_t, int64_t, int64_t, int64_t>{0, 4, 16, 0}, {1, 1, 1, 0}, {300, 16, 16, 3},
                 {300, 16, 48, 0}, {1024, 32, 32, 2}}) {
    const auto [B, k, d, pad] = c;  // d < n: locals >= d give 0 / are skipped; d > n: columns >= n never touched
    Tensor ids = random_ids(B, k, n * E, seed(), 0.15);
    for (int64_t b = 0; b + 1 < B; b += 5)  // ids differing by a multiple of n: same local column twice in a row
      if (k >= 2) ids.host<int32_t>()[b * k + 1] = (ids.host<int32_t>()[b * k] + n) % (n * E);
    Twin ti = twin(ids, pad), x = twin(randn(B, d, seed()), pad ? pad + 1 : 0);
    Twin out = poisoned(B, k, DType::F32, pad);
    ref().identity_lowpass_dot(x.ref, ti.ref, n, out.ref);
    be().identity_lowpass_dot(x.test, ti.test, n, out.test);
    expect_equal(out, "identity_lowpass_dot " + shape(B, d, pad) + " k=" + std::to_string(k));  // pure gather
    Twin coef = twin(randn(B, k, seed()), pad), g = twin(randn(B, d, seed()), pad ? pad + 2 : 0);
    ref().identity_lowpass_outer_add(coef.ref, ti.ref, n, g.ref);
    be().identity_lowpass_outer_add(coef.test, ti.test, n, g.test);
    expect_near(g, kTol, "identity_lowpass_outer_add " + shape(B, d, pad) + " k=" + std::to_string(k));
  }
}

// ---- mixture-of-experts routing -------------------------------------------------------------------------------

TEST_P(Parity, GroupByExpert) {
  struct Case {
    int64_t B;
    int e, E;
    double skew;
    int64_t pad;
  };
  for (Case c : {Case{0, 2, 8, 0, 0}, Case{1, 1, 1, 0, 0}, Case{300, 2, 8, 0, 0}, Case{24576, 2, 64, 0, 0},
                 Case{5000, 2, 64, 0.9, 0}, Case{1000, 4, 4, 0, 0}, Case{777, 3, 16, 0.5, 3}}) {
    Tensor experts = expert_choices(c.B, c.e, c.E, seed(), c.skew);
    Twin ex = twin(experts, c.pad);
    ExpertGroups want = ref().group_by_expert(ex.ref, c.E);
    ExpertGroups got = be().group_by_expert(ex.test, c.E);
    std::ostringstream what;
    what << "group_by_expert B=" << c.B << " e=" << c.e << " E=" << c.E << " skew=" << c.skew
         << (c.pad ? " strided" : "");
    EXPECT_EQ(got.offsets, want.offsets) << what.str();
    ASSERT_EQ(got.tokens.numel(), c.B * c.e) << what.str();
    ASSERT_EQ(got.cand_rows.numel(), c.B * c.e) << what.str();
    EXPECT_EQ(got.tokens.device(), be().device());
    EXPECT_TRUE(compare(want.tokens, be().to_host(got.tokens), -1)) << what.str() << " tokens";
    EXPECT_TRUE(compare(want.cand_rows, be().to_host(got.cand_rows), -1)) << what.str() << " cand_rows";
  }
  // Every token on the same pair of experts: all other experts empty.
  Tensor same = host_tensor(2000, 2, DType::I32);
  for (int64_t b = 0; b < 2000; ++b) {
    same.host<int32_t>()[2 * b] = 5;
    same.host<int32_t>()[2 * b + 1] = 2;  // unsorted within the row
  }
  Twin ex = twin(same);
  ExpertGroups want = ref().group_by_expert(ex.ref, 8), got = be().group_by_expert(ex.test, 8);
  EXPECT_EQ(got.offsets, want.offsets) << "one hot pair";
  EXPECT_TRUE(compare(want.tokens, be().to_host(got.tokens), -1)) << "one hot pair tokens";
  EXPECT_TRUE(compare(want.cand_rows, be().to_host(got.cand_rows), -1)) << "one hot pair cand_rows";
}

TEST_P(Parity, CandidatesToLatents) {
  for (auto c : {std::tuple<int64_t, int, int, int, int64_t>{0, 2, 8, 4, 0}, {1, 1, 1, 1, 0}, {500, 2, 8, 32, 0},
                 {300, 4, 16, 8, 3}, {2000, 2, 64, 64, 0}}) {
    const auto [B, e, E, k, pad] = c;
    const int n = 48;
    Twin experts = twin(expert_choices(B, e, E, seed()), pad);
    Twin cand = twin(random_ids(B, k, e * n, seed(), 0.2), pad ? pad + 1 : 0);
    Twin lat = poisoned(B, k, DType::I32, pad), slots = poisoned(B, k, DType::I32, pad ? 2 : 0);
    ref().candidates_to_latents(cand.ref, experts.ref, n, lat.ref, slots.ref);
    be().candidates_to_latents(cand.test, experts.test, n, lat.test, slots.test);
    const std::string what = "B=" + std::to_string(B) + " e=" + std::to_string(e) + " k=" + std::to_string(k) +
                             (pad ? " strided" : "");
    expect_equal(lat, "candidates_to_latents latent ids " + what);
    expect_equal(slots, "candidates_to_latents slots " + what);
  }
}

// ---- expert parallelism: expert id -1 (a slot whose expert another rank holds) -----------------------------------

namespace {

// expert_choices(B, e, E, seed, skew) with holes: each slot is -1 with probability p_hole, and every
// `all_holes_every`-th row (when > 0, starting with row 0) is -1 throughout.
Tensor expert_choices_with_holes(int64_t B, int e, int E, uint64_t seed, double p_hole, int64_t all_holes_every,
                                 double skew = 0.0) {
  Tensor t = expert_choices(B, e, E, seed, skew);
  Rng rng(seed ^ 0x5bd1e995u);
  for (int64_t b = 0; b < B; ++b) {
    const bool all = all_holes_every > 0 && b % all_holes_every == 0;
    for (int s = 0; s < e; ++s)
      if (rng.uniform() < p_hole || all) t.host<int32_t>()[b * e + s] = -1;
  }
  return t;
}

// The contract of group_by_expert, checked directly on one result (tokens / cand_rows as host copies) against the
// contiguous host input experts [B, e]: offsets[0] = 0, offsets[x+1] - offsets[x] = the number of entries x (so
// offsets[E] = the number of non-negative entries), and expert x's range lists exactly its (token, slot) pairs, as
// cand_rows b * e + s in increasing order with tokens b = cand_rows / e. Only [0, offsets[E]) is specified.
::testing::AssertionResult check_expert_groups(const Tensor& experts, int E, const std::vector<int64_t>& offsets,
                                               const Tensor& tokens, const Tensor& cand_rows) {
  const int64_t B = experts.rows(), e = experts.cols();
  const int32_t* ep = experts.host<int32_t>();
  std::vector<int64_t> count(E, 0);
  int64_t valid = 0;
  for (int64_t i = 0; i < B * e; ++i)
    if (ep[i] >= 0) ++count[ep[i]], ++valid;
  if (int64_t(offsets.size()) != E + 1)
    return ::testing::AssertionFailure() << "offsets has " << offsets.size() << " entries, want " << E + 1;
  if (offsets[0] != 0) return ::testing::AssertionFailure() << "offsets[0] = " << offsets[0];
  if (offsets[E] != valid)
    return ::testing::AssertionFailure() << "offsets[E] = " << offsets[E] << ", but " << valid << " of " << B * e
                                         << " entries are not -1";
  for (int x = 0; x < E; ++x)
    if (offsets[x + 1] - offsets[x] != count[x])
      return ::testing::AssertionFailure() << "expert " << x << " has " << offsets[x + 1] - offsets[x]
                                           << " entries, want " << count[x];
  if (tokens.numel() != B * e || cand_rows.numel() != B * e)
    return ::testing::AssertionFailure() << "tokens / cand_rows have " << tokens.numel() << " / " << cand_rows.numel()
                                         << " entries, want " << B * e;
  const int32_t* tp = tokens.host<int32_t>();
  const int32_t* cp = cand_rows.host<int32_t>();
  for (int x = 0; x < E; ++x)
    for (int64_t r = offsets[x]; r < offsets[x + 1]; ++r) {
      const int32_t c = cp[r];
      if (c < 0 || c >= B * e || ep[c] != x)
        return ::testing::AssertionFailure() << "expert " << x << ": cand_rows[" << r << "] = " << c
                                             << (c >= 0 && c < B * e ? " holds expert " + std::to_string(ep[c]) : "");
      if (tp[r] != c / e)
        return ::testing::AssertionFailure() << "expert " << x << ": tokens[" << r << "] = " << tp[r] << ", want "
                                             << c / e << " (cand_rows " << c << ")";
      if (r > offsets[x] && !(cp[r - 1] < c && tp[r - 1] <= tp[r]))
        return ::testing::AssertionFailure() << "expert " << x << ": not in increasing token order at " << r
                                             << " (cand_rows " << cp[r - 1] << " then " << c << ", tokens "
                                             << tp[r - 1] << " then " << tp[r] << ")";
    }
  return ::testing::AssertionSuccess();
}

}  // namespace

TEST_P(Parity, GroupByExpertSkipsMinusOne) {
  struct Case {
    int64_t B;
    int e, E;
    double p_hole;
    int64_t all_holes_every;
    double skew;
    int64_t pad;
  };
  int64_t partial_rows = 0, empty_rows = 0;
  for (Case c : {Case{1, 1, 1, 1.0, 1, 0, 0},          // the only entry is -1
                 Case{1, 3, 8, 0, 1, 0, 0},            // one row, all -1
                 Case{2, 2, 2, 0, 2, 0, 0},            // first row all -1, second full
                 Case{300, 2, 8, 0.3, 7, 0, 0},        // partial and all -1 rows mixed
                 Case{1000, 4, 4, 0.5, 3, 0, 0},       // e == E
                 Case{777, 3, 16, 0.25, 5, 0.5, 3},    // skewed, strided
                 Case{5000, 2, 64, 0.1, 0, 0.9, 0},    // hot experts
                 Case{24576, 2, 64, 0.5, 11, 0, 0},    // large
                 Case{4096, 8, 7, 0.9, 2, 0, 2},       // mostly -1, E not a power of two, strided
                 Case{3000, 1, 1, 0.5, 0, 0, 0},       // one expert
                 Case{2000, 2, 8, 1.0, 0, 0, 0}}) {    // every entry -1
    Tensor experts = expert_choices_with_holes(c.B, c.e, c.E, seed(), c.p_hole, c.all_holes_every, c.skew);
    for (int64_t b = 0; b < c.B; ++b) {
      const int holes = int(std::count(experts.host<int32_t>() + b * c.e, experts.host<int32_t>() + (b + 1) * c.e, -1));
      partial_rows += holes > 0 && holes < c.e;
      empty_rows += holes == c.e;
    }
    Twin ex = twin(experts, c.pad);
    ExpertGroups want = ref().group_by_expert(ex.ref, c.E);
    ExpertGroups got = be().group_by_expert(ex.test, c.E);
    std::ostringstream what;
    what << "group_by_expert with -1 entries: B=" << c.B << " e=" << c.e << " E=" << c.E << " p_hole=" << c.p_hole
         << " all_holes_every=" << c.all_holes_every << " skew=" << c.skew << (c.pad ? " strided" : "");
    // The CPU reference against the contract itself, then the backend under test against the contract and the CPU.
    EXPECT_TRUE(check_expert_groups(experts, c.E, want.offsets, want.tokens, want.cand_rows))
        << what.str() << " (CPU reference)";
    ASSERT_EQ(got.tokens.numel(), c.B * c.e) << what.str();
    ASSERT_EQ(got.cand_rows.numel(), c.B * c.e) << what.str();
    EXPECT_EQ(got.tokens.device(), be().device());
    Tensor got_tokens = be().to_host(got.tokens), got_rows = be().to_host(got.cand_rows);
    EXPECT_TRUE(check_expert_groups(experts, c.E, got.offsets, got_tokens, got_rows)) << what.str();
    EXPECT_EQ(got.offsets, want.offsets) << what.str();
    if (got.offsets != want.offsets || want.offsets.back() > c.B * c.e) continue;
    const int64_t m = want.offsets.back();  // beyond the valid entries, tokens / cand_rows are unspecified
    EXPECT_TRUE(compare(want.tokens.row_range(0, m), got_tokens.row_range(0, m), -1)) << what.str() << " tokens";
    EXPECT_TRUE(compare(want.cand_rows.row_range(0, m), got_rows.row_range(0, m), -1)) << what.str() << " cand_rows";
  }
  EXPECT_GT(partial_rows, 0) << "no row with some (not all) slots -1";
  EXPECT_GT(empty_rows, 0) << "no row with every slot -1";

  // Hand-made: experts {5, 2} with row b % 3 == 0 -> {-1, 2}, 1 -> {5, -1}, 2 -> {-1, -1}.
  const int64_t B = 2000;
  Tensor holes = host_tensor(B, 2, DType::I32);
  for (int64_t b = 0; b < B; ++b) {
    holes.host<int32_t>()[2 * b] = b % 3 == 1 ? 5 : -1;
    holes.host<int32_t>()[2 * b + 1] = b % 3 == 0 ? 2 : -1;
  }
  Twin ex = twin(holes);
  ExpertGroups want = ref().group_by_expert(ex.ref, 8), got = be().group_by_expert(ex.test, 8);
  const int64_t n2 = (B + 2) / 3, n5 = (B + 1) / 3;
  const std::vector<int64_t> offsets = {0, 0, 0, n2, n2, n2, n2 + n5, n2 + n5, n2 + n5};
  EXPECT_EQ(want.offsets, offsets) << "hand-made holes (CPU reference)";
  for (int64_t r = 0; r < n2 + n5; ++r) {  // expert 2: tokens 0, 3, 6, ... (slot 1); expert 5: 1, 4, 7, ... (slot 0)
    const int32_t token = int32_t(r < n2 ? 3 * r : 3 * (r - n2) + 1), row = r < n2 ? 2 * token + 1 : 2 * token;
    ASSERT_EQ(want.tokens.host<int32_t>()[r], token) << "hand-made holes (CPU reference) tokens[" << r << "]";
    ASSERT_EQ(want.cand_rows.host<int32_t>()[r], row) << "hand-made holes (CPU reference) cand_rows[" << r << "]";
  }
  EXPECT_EQ(got.offsets, want.offsets) << "hand-made holes";
  EXPECT_TRUE(compare(want.tokens.row_range(0, n2 + n5), be().to_host(got.tokens).row_range(0, n2 + n5), -1))
      << "hand-made holes tokens";
  EXPECT_TRUE(compare(want.cand_rows.row_range(0, n2 + n5), be().to_host(got.cand_rows).row_range(0, n2 + n5), -1))
      << "hand-made holes cand_rows";
}

TEST_P(Parity, CandidatesToLatentsMinusOneSlots) {
  struct Case {
    int64_t B;
    int e, E, k, n;
    double p_hole;
    int64_t all_holes_every;
    int64_t pad;
  };
  int64_t n_empty = 0, n_in_hole = 0, n_valid = 0;
  for (Case c : {Case{1, 1, 1, 1, 48, 1.0, 1, 0},       // one candidate, in a -1 slot
                 Case{1, 3, 8, 4, 48, 0.5, 0, 0},       // one row
                 Case{500, 2, 8, 32, 48, 0.3, 7, 0},    // partial and all -1 rows mixed
                 Case{300, 4, 16, 8, 48, 0.5, 3, 3},    // strided
                 Case{2000, 2, 64, 64, 48, 0.1, 0, 0},
                 Case{1000, 8, 7, 16, 1, 0.9, 2, 2},    // n = 1: candidate = slot; mostly -1, strided
                 Case{700, 2, 8, 16, 48, 1.0, 0, 0}}) { // every expert -1
    Tensor experts = expert_choices_with_holes(c.B, c.e, c.E, seed(), c.p_hole, c.all_holes_every);
    Tensor cand = random_ids(c.B, c.k, c.e * c.n, seed(), 0.2);
    // On even rows, force the mix: a candidate in a -1 slot, an empty candidate, a candidate in a valid slot.
    Rng rng(seed());
    const int32_t* ep = experts.host<int32_t>();
    int32_t* cp = cand.host<int32_t>();
    for (int64_t b = 0; b < c.B; b += 2) {
      std::vector<int> hole, ok;
      for (int s = 0; s < c.e; ++s) (ep[b * c.e + s] < 0 ? hole : ok).push_back(s);
      if (!hole.empty()) cp[b * c.k + b % c.k] = hole[rng.below(hole.size())] * c.n + int32_t(rng.below(c.n));
      if (c.k >= 2) cp[b * c.k + (b + 1) % c.k] = -1;
      if (c.k >= 3 && !ok.empty())
        cp[b * c.k + (b + 2) % c.k] = ok[rng.below(ok.size())] * c.n + int32_t(rng.below(c.n));
    }
    // What the contract gives.
    Tensor want_lat = host_tensor(c.B, c.k, DType::I32), want_slot = host_tensor(c.B, c.k, DType::I32);
    for (int64_t b = 0; b < c.B; ++b)
      for (int j = 0; j < c.k; ++j) {
        const int32_t cc = cp[b * c.k + j], s = cc < 0 ? -1 : cc / c.n, x = s < 0 ? -1 : ep[b * c.e + s];
        n_empty += cc < 0;
        n_in_hole += cc >= 0 && x < 0;
        n_valid += x >= 0;
        want_lat.host<int32_t>()[b * c.k + j] = x < 0 ? -1 : x * c.n + cc % c.n;
        want_slot.host<int32_t>()[b * c.k + j] = x < 0 ? -1 : s;
      }
    Twin tex = twin(experts, c.pad), tcand = twin(cand, c.pad ? c.pad + 1 : 0);
    Twin lat = poisoned(c.B, c.k, DType::I32, c.pad), slots = poisoned(c.B, c.k, DType::I32, c.pad ? 2 : 0);
    ref().candidates_to_latents(tcand.ref, tex.ref, c.n, lat.ref, slots.ref);
    be().candidates_to_latents(tcand.test, tex.test, c.n, lat.test, slots.test);
    std::ostringstream what;
    what << "candidates_to_latents with -1 experts: B=" << c.B << " e=" << c.e << " k=" << c.k << " n=" << c.n
         << " p_hole=" << c.p_hole << " all_holes_every=" << c.all_holes_every << (c.pad ? " strided" : "");
    EXPECT_TRUE(compare(want_lat, ref().to_host(lat.ref), -1)) << what.str() << " latent ids (CPU reference)";
    EXPECT_TRUE(compare(want_slot, ref().to_host(slots.ref), -1)) << what.str() << " slots (CPU reference)";
    EXPECT_TRUE(compare(want_lat, be().to_host(lat.test), -1)) << what.str() << " latent ids";
    EXPECT_TRUE(compare(want_slot, be().to_host(slots.test), -1)) << what.str() << " slots";
    expect_equal(lat, what.str() + " latent ids (whole buffer)");
    expect_equal(slots, what.str() + " slots (whole buffer)");
  }
  EXPECT_GT(n_empty, 0) << "no empty candidate";
  EXPECT_GT(n_in_hole, 0) << "no candidate in a -1 slot";
  EXPECT_GT(n_valid, 0) << "no valid candidate";
}

TEST_P(Parity, UpdateFired) {
  const int64_t F = 500, cap = int64_t(1) << 30;
  Tensor counter = host_vector(F, DType::I32);
  Rng rng(seed());
  for (int64_t f = 0; f < F; ++f) {
    const int kind = int(f % 5);
    counter.host<int32_t>()[f] = kind == 0   ? 0
                                 : kind == 1 ? int32_t(rng.below(1000))
                                 : kind == 2 ? int32_t(cap - 1 - int64_t(rng.below(300)))  // near saturation
                                 : kind == 3 ? int32_t(cap)                                // saturated
                                             : int32_t(rng.below(cap));
  }
  Twin c = twin(counter);
  // Several steps; values include 0, -0, negatives (not fired) and positives; ids include -1 (ignored even with a
  // positive value) and repeats (one latent fired in one row and not in another).
  int step = 0;
  for (int64_t tokens : {int64_t(256), int64_t(0), int64_t(100), int64_t(3) << 31, int64_t(1)}) {
    for (int64_t pad : {int64_t(0), int64_t(3)}) {
      const int64_t B = 64, k = 8;
      Tensor ids = random_ids(B, k, int32_t(F), seed(), 0.1, 42, 0.2);
      Tensor vals = randn(B, k, seed());
      for (int64_t i = 0; i < vals.numel(); i += 4) vals.host<float>()[i] = (i / 4) % 2 ? -0.f : 0.f;
      for (int64_t i = 0; i < ids.numel(); i += 9)
        if (ids.host<int32_t>()[i] < 0) vals.host<float>()[i] = 1.f;
      Twin ti = twin(ids, pad), tv = twin(vals, pad ? pad + 1 : 0);
      ref().update_fired(ti.ref, tv.ref, tokens, c.ref);
      be().update_fired(ti.test, tv.test, tokens, c.test);
      expect_equal(c, "update_fired step " + std::to_string(step++) + " tokens " + std::to_string(tokens) +
                          (pad ? " strided" : ""));
    }
  }
  // Empty batch: only the increment.
  Twin ti = twin(host_tensor(0, 8, DType::I32)), tv = twin(host_tensor(0, 8));
  ref().update_fired(ti.ref, tv.ref, 1000, c.ref);
  be().update_fired(ti.test, tv.test, 1000, c.test);
  expect_equal(c, "update_fired with an empty batch");
}

TEST_P(Parity, ThresholdMask) {
  for (int64_t F : {0, 1, 1000, 100003}) {
    Tensor counter = host_vector(F, DType::I32);
    Rng rng(seed());
    for (int64_t f = 0; f < F; ++f)
      counter.host<int32_t>()[f] = f % 7 == 0 ? 500 : f % 11 == 0 ? int32_t(1) << 30 : int32_t(rng.below(1000));
    Twin c = twin(counter);
    for (int64_t threshold : {int64_t(-1), int64_t(0), int64_t(500), int64_t(1) << 30, int64_t(1) << 40}) {
      Twin mask = poisoned_vector(F, DType::I32);
      const int64_t want = ref().threshold_mask(c.ref, threshold, mask.ref);
      const int64_t got = be().threshold_mask(c.test, threshold, mask.test);
      EXPECT_EQ(got, want) << "threshold_mask count F=" << F << " threshold=" << threshold;
      expect_equal(mask, "threshold_mask F=" + std::to_string(F) + " threshold=" + std::to_string(threshold));
    }
  }
}

// ---- optimizer and constraints --------------------------------------------------------------------------------

TEST_P(Parity, AdamStepOverSeveralSteps) {
  for (auto shape_rc : {std::pair<int64_t, int64_t>{1000, 0}, {50, 33}, {0, 0}}) {
    const bool vec = shape_rc.second == 0;
    const int64_t R = shape_rc.first, C = vec ? 1 : shape_rc.second;
    auto make = [&](double scale) { return vec ? randn_vector(R, seed(), scale) : randn(R, C, seed(), scale); };
    auto zeros = [&]() { return vec ? host_vector(R) : host_tensor(R, C); };
    Twin p = twin(make(0.5)), m = twin(zeros()), v = twin(zeros());
    for (int64_t step = 1; step <= 6; ++step) {
      Tensor gh = make(step == 3 ? 1e-4 : 1.0);  // one step of tiny gradients: eps matters
      for (int64_t i = 0; i < gh.numel(); i += 10) gh.host<float>()[i] = 0.f;
      Twin g = twin(gh);
      ref().adam_step(p.ref, g.ref, m.ref, v.ref, 1e-3f, 0.9f, 0.999f, 1e-8f, step);
      be().adam_step(p.test, g.test, m.test, v.test, 1e-3f, 0.9f, 0.999f, 1e-8f, step);
      const std::string what = " step " + std::to_string(step) + (vec ? " vector" : " matrix");
      expect_near(p, kTol, "adam_step param" + what);
      expect_near(m, kTol, "adam_step m" + what);
      expect_near(v, kTol, "adam_step v" + what);
    }
    // A late step (bias correction near 1) from random moments.
    Twin g = twin(make(1.0)), m2 = twin(make(0.1));
    Tensor vh = make(0.1);
    for (int64_t i = 0; i < vh.numel(); ++i) vh.host<float>()[i] = vh.host<float>()[i] * vh.host<float>()[i];
    Twin v3 = twin(vh);
    ref().adam_step(p.ref, g.ref, m2.ref, v3.ref, 5e-4f, 0.8f, 0.99f, 1e-6f, 100000);
    be().adam_step(p.test, g.test, m2.test, v3.test, 5e-4f, 0.8f, 0.99f, 1e-6f, 100000);
    expect_near(p, kTol, "adam_step param at step 100000");
    expect_near(v3, kTol, "adam_step v at step 100000");
  }
}

TEST_P(Parity, NormalizeRowsAndCols) {
  for (auto c :
       {std::tuple<int64_t, int64_t, int64_t>{0, 8, 0}, {1, 1, 0}, {256, 32, 3}, {1000, 96, 0}, {8, 2000, 2}}) {
    const auto [rows, cols, pad] = c;
    for (float eps : {0.f, 1e-3f}) {
      Tensor h = randn(rows, cols, seed());
      if (eps > 0 && rows > 1)  // an all-zero row / column stays zero
        for (int64_t j = 0; j < cols; ++j) h.host<float>()[cols + j] = 0.f;
      Twin w = twin(h, pad);
      ref().normalize_rows(w.ref, eps);
      be().normalize_rows(w.test, eps);
      expect_near(w, kTol, "normalize_rows eps " + std::to_string(eps) + " " + shape(rows, cols, pad));
      Tensor hc = randn(rows, cols, seed());
      if (eps > 0 && cols > 1)
        for (int64_t r = 0; r < rows; ++r) hc.host<float>()[r * cols + 1] = 0.f;
      Twin wc = twin(hc, pad);
      ref().normalize_cols(wc.ref, eps);
      be().normalize_cols(wc.test, eps);
      expect_near(wc, kTol, "normalize_cols eps " + std::to_string(eps) + " " + shape(rows, cols, pad));
    }
  }
  // Per-expert column normalisation on row blocks of a decoder (DecoderNorm::Column).
  Twin w = twin(randn(8 * 40, 24, seed()), 3);
  for (int i = 0; i < 8; ++i) {
    ref().normalize_cols(w.ref.row_range(i * 40, (i + 1) * 40), 1e-8f);
    be().normalize_cols(w.test.row_range(i * 40, (i + 1) * 40), 1e-8f);
  }
  expect_near(w, kTol, "normalize_cols on row blocks of a strided matrix");
}

TEST_P(Parity, ProjectOutRows) {
  for (auto c : {std::tuple<int64_t, int64_t, int64_t>{0, 8, 0}, {1, 1, 0}, {256, 32, 3}, {2048, 96, 0}}) {
    const auto [rows, cols, pad] = c;
    Tensor wh = randn(rows, cols, seed());
    Twin w = twin(wh, pad ? pad + 1 : 0);
    ref().normalize_rows(w.ref, 0.f);  // as the trainer does: unit rows (use the reference's for both)
    Tensor unit = ref().to_host(w.ref);
    Twin wu = twin(unit, pad ? pad + 1 : 0), g = twin(randn(rows, cols, seed()), pad);
    ref().project_out_rows(g.ref, wu.ref);
    be().project_out_rows(g.test, wu.test);
    expect_near(g, kTol, "project_out_rows " + shape(rows, cols, pad));
  }
}

// ---- determinism ----------------------------------------------------------------------------------------------

// The backend under test gives bit-identical outputs when an operation runs twice on the same inputs (the
// operations whose natural GPU implementations use atomics or split reductions).
TEST_P(Parity, RepeatedRunsAreBitIdentical) {
  Backend& b = be();
  auto twice = [&](const std::string& what, const std::function<Tensor()>& run) {
    Tensor first = b.to_host(run()), second = b.to_host(run());
    EXPECT_TRUE(compare(first, second, -1)) << what << " is not deterministic";
  };
  const int64_t B = 4096, k = 32, F = 512, d = 64;
  Tensor coef = b.from_host(randn(B, k, seed())), x = b.from_host(randn(B, d, seed()));
  Tensor ids = b.from_host(random_ids(B, k, int32_t(F), seed(), 0.1, 7, 0.5));
  Tensor g0 = randn(F, d, seed());
  twice("sparse_rows_outer_add", [&] {
    Tensor g = b.from_host(g0);
    b.sparse_rows_outer_add(coef, ids, x, 0.5f, g);
    return g;
  });
  Tensor sidx = b.from_host(random_ids(B, k, 300, seed(), 0.1, 3, 0.5));
  Tensor dst0 = randn_vector(300, seed());
  twice("scatter_add", [&] {
    Tensor dst = b.from_host(dst0);
    b.scatter_add(coef, sidx, dst);
    return dst;
  });
  Tensor tall = b.from_host(randn(100000, 40, seed()));
  twice("sum_rows", [&] {
    Tensor out = b.empty_vector(40);
    b.sum_rows(tall, out, 1.f, 0.f);
    return out;
  });
  Tensor scores = b.from_host(quantized(2048, 2048, seed(), 4));
  twice("topk_rows idx", [&] {
    Tensor vals = b.empty(2048, 64), idx = b.empty(2048, 64, DType::I32);
    b.topk_rows(scores, 64, vals, idx);
    return idx;
  });
  Tensor ga = b.from_host(randn(8, 20000, seed())), gb = b.from_host(randn(20000, 16, seed()));
  Tensor gl = b.from_host(randn(300, 500, seed())), gr = b.from_host(randn(500, 200, seed()));
  twice("gemm (long inner dimension)", [&] {
    Tensor c = b.empty(8, 16);
    b.gemm(false, false, 1.f, ga, gb, 0.f, c);
    return c;
  });
  twice("gemm", [&] {
    Tensor c = b.empty(300, 200);
    b.gemm(false, false, 1.f, gl, gr, 0.f, c);
    return c;
  });
  Tensor big = b.from_host(randn_vector(3000000, seed()));
  EXPECT_EQ(b.sum(big), b.sum(big)) << "sum is not deterministic";
  EXPECT_EQ(b.sum_squares(big), b.sum_squares(big)) << "sum_squares is not deterministic";
  EXPECT_EQ(b.count_positive(big), b.count_positive(big)) << "count_positive is not deterministic";
}

INSTANTIATE_TEST_SUITE_P(Backends, Parity,
                         ::testing::Values(BackendCase{"cpu4", false, 4}, BackendCase{"cuda", true, 0}),
                         [](const ::testing::TestParamInfo<BackendCase>& info) { return info.param.name; });
