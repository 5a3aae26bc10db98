// moesae backend: every numerical operation the models and the trainer need, behind one interface.
// The CPU backend (cpu/) is the reference; a CUDA backend implements the same interface (backend/cuda/).
// Nothing above this layer touches element pointers of device tensors: models call these operations only.
//
// Conventions: tensors are row-major f32 (ids and counts i32) and may be strided 2-D views (ld >= cols).
// Every operation is deterministic: the same inputs give bit-identical outputs run after run. Beyond that, every
// operation except gemm gives the same bits for any thread count (gemm is BLAS's: its blocking may follow the
// thread count, which changes rounding).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace moesae {

// Tokens grouped by expert (a permutation of the (token, slot) pairs of a top-e routing).
// Entry r of the grouped order has token tokens[r] and candidate row cand_rows[r] = token * e + slot;
// expert i owns entries [offsets[i], offsets[i+1]), in increasing token order.
struct ExpertGroups {
  std::vector<int64_t> offsets;  // host, size E + 1 (the counts are the one host round trip of a step)
  Tensor tokens;                 // i32 [B * e]
  Tensor cand_rows;              // i32 [B * e]
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual std::string name() const = 0;
  virtual void synchronize() {}
  // How many times the host has waited for the device so far (the CUDA backend's stream synchronisations: a
  // training step should need a handful); always 0 on the CPU backend, which never waits.
  virtual int64_t host_waits() const { return 0; }
  // How many grouped_gemm calls ran as one product per group where a grouped product was meant (the CUDA backend
  // with bf16 or unaligned operands); always 0 on the CPU backend, whose grouped_gemm is that loop by design.
  virtual int64_t grouped_gemm_fallbacks() const { return 0; }

  // ---- memory -------------------------------------------------------------------------------------------
  virtual Tensor empty(int64_t rows, int64_t cols, DType dt = DType::F32) = 0;  // rank 2
  virtual Tensor empty_vector(int64_t n, DType dt = DType::F32) = 0;           // rank 1
  Tensor zeros(int64_t rows, int64_t cols, DType dt = DType::F32);
  Tensor zeros_vector(int64_t n, DType dt = DType::F32);
  // Host <-> backend copies; the host side is a host tensor of the same shape (any ld on both sides).
  virtual void upload(const Tensor& host_src, Tensor dst) = 0;
  virtual void download(const Tensor& src, Tensor host_dst) = 0;
  // A host tensor that upload() reads fastest: page-locked memory on CUDA (the copy runs at the link's speed, not
  // through the driver's staging buffers), plain host memory on the CPU. For buffers uploaded again and again.
  virtual Tensor host_buffer(int64_t rows, int64_t cols, DType dt = DType::F32) { return host_tensor(rows, cols, dt); }
  Tensor to_host(const Tensor& src);           // new host tensor
  Tensor from_host(const Tensor& host_src);    // new backend tensor
  virtual void copy(const Tensor& src, Tensor dst) = 0;  // same device, same shape

  // ---- elementwise ----------------------------------------------------------------------------------------
  virtual void fill(Tensor x, float value) = 0;
  virtual void fill_i32(Tensor x, int32_t value) = 0;
  virtual void scale(Tensor x, float a) = 0;                          // x *= a
  virtual void axpy(float a, const Tensor& x, Tensor y) = 0;          // y += a x
  virtual void mul(const Tensor& a, const Tensor& b, Tensor out) = 0;  // out = a * b (may alias a or b)
  virtual void relu(Tensor x) = 0;                                    // x = max(x, 0)
  virtual void relu_backward(const Tensor& y, Tensor dy) = 0;          // dy *= (y > 0)
  virtual void add_row_vector(Tensor a, const Tensor& v, float alpha) = 0;  // a[i,:] += alpha v
  virtual void scale_rows(Tensor a, const Tensor& s) = 0;                   // a[i,:] *= s[i]
  virtual void scale_cols(Tensor a, const Tensor& s) = 0;                   // a[:,j] *= s[j]
  virtual void exp(const Tensor& x, Tensor out) = 0;                        // out = exp(x)
  // out[j] = beta out[j] + alpha sum_i a[i,j]   (column sums; used for bias gradients)
  virtual void sum_rows(const Tensor& a, Tensor out, float alpha, float beta) = 0;
  // Reductions returned to the host (double accumulation, fixed order). reduce_many does several in one host
  // round trip (on CUDA: one wait for the device instead of one per reduction); its result i is, bit for bit,
  // what the single reduction of items[i] returns.
  enum class ReduceOp { Sum, SumSquares, CountPositive };  // CountPositive: the number of entries > 0
  struct Reduction {
    ReduceOp op;
    Tensor x;  // f32
  };
  std::vector<double> reduce_many(const std::vector<Reduction>& items);  // reduce_many_later(items).get()
  double sum(const Tensor& x) { return reduce_many({{ReduceOp::Sum, x}})[0]; }
  double sum_squares(const Tensor& x) { return reduce_many({{ReduceOp::SumSquares, x}})[0]; }
  int64_t count_positive(const Tensor& x) {
    return static_cast<int64_t>(reduce_many({{ReduceOp::CountPositive, x}})[0]);
  }

  // ---- read-backs that ride on the next wait ----------------------------------------------------------------
  // A value the host needs only later (a step's statistics, the router's mean probabilities before the routing
  // counts come back) is queued now and arrives with the host's next wait for the device: any read-back above
  // (reduce_many, download, group_by_expert, threshold_mask) or get() itself when none came in between. So a step
  // waits only where the host must decide something. On the CPU backend the values are there at once.
  class Pending {
   public:
    struct State {
      bool ready = false;
      std::vector<double> values;
    };
    Pending() = default;
    static Pending ready_with(std::vector<double> values);  // values the host already has
    bool ready() const { return !state_ || state_->ready; }
    // The values (reduce_many_later: one per reduction; download_later: none), waiting for them if they have not
    // arrived yet.
    const std::vector<double>& get();

   private:
    friend class Backend;
    std::shared_ptr<State> state_;
    Backend* owner_ = nullptr;
  };
  // reduce_many's results, later.
  virtual Pending reduce_many_later(const std::vector<Reduction>& items) = 0;
  // Copies src into host_dst (a host tensor of its shape), which holds the data once the Pending is ready.
  virtual Pending download_later(const Tensor& src, Tensor host_dst);
  // Gradient clipping by the global L2 norm, decided on the device: norm^2 = the sum, in order, of the xs' sums of
  // squares (each as reduce_many adds it); when max_norm > 0 and norm > max_norm, every x is scaled by
  // max_norm / (norm + 1e-6). The sums of squares, one per x, come back later (on CUDA nothing waits).
  virtual Pending clip_by_global_norm(const std::vector<Tensor>& xs, double max_norm);
  // The norm from sums of squares (added in order), and the factor clipping to max_norm scales by (1 when nothing is
  // clipped): what clip_by_global_norm computes, and the host's clipping where it knows the norm itself.
  static double global_norm(const std::vector<double>& squares);
  static float clip_factor(double norm, double max_norm);

  // out[i] = sum_j (a[i,j] - b[i,j])^2 (per-row squared error, into an f32 vector of length rows)
  virtual void row_squared_error(const Tensor& a, const Tensor& b, Tensor out) = 0;

  // ---- dense linear algebra -------------------------------------------------------------------------------
  // C = alpha op(A) op(B) + beta C, op = transpose when the flag is set.
  virtual void gemm(bool trans_a, bool trans_b, float alpha, const Tensor& a, const Tensor& b, float beta,
                    Tensor c) = 0;

  // ---- softmax and selection ------------------------------------------------------------------------------
  virtual void softmax_rows(const Tensor& logits, Tensor probs) = 0;
  // dlogits = p * (dp - sum_j p_j dp_j)
  virtual void softmax_rows_backward(const Tensor& probs, const Tensor& dprobs, Tensor dlogits) = 0;
  // Per row of x [B, N]: the k largest values, sorted descending; ties broken by the smaller column index.
  // If col_mask (i32 [N]) is given, only columns with mask != 0 are candidates; when fewer than k candidates
  // exist, the remaining slots get value 0 and index -1.
  virtual void topk_rows(const Tensor& x, int k, Tensor vals, Tensor idx, const Tensor* col_mask = nullptr) = 0;
  // Sorts each row's (idx, val) pairs [B, k] by ascending idx (-1 last); used to put chosen experts in id order.
  virtual void sort_rows_by_index(Tensor idx, Tensor vals) = 0;

  // ---- gather / scatter -----------------------------------------------------------------------------------
  virtual void gather_rows(const Tensor& src, const Tensor& idx, Tensor dst) = 0;   // dst[m] = src[idx[m]]
  virtual void scatter_rows(const Tensor& src, const Tensor& idx, Tensor dst) = 0;  // dst[idx[m]] = src[m]
  // Elementwise gather on flattened tensors: dst[m] = src[idx[m]] (f32 or i32); idx -1 gives 0 (f32) / -1 (i32).
  virtual void gather(const Tensor& src, const Tensor& idx, Tensor dst) = 0;
  // dst[idx[m]] += src[m] (f32; idx -1 skipped; contributions to one element are added in order of m).
  virtual void scatter_add(const Tensor& src, const Tensor& idx, Tensor dst) = 0;
  // Per-row column gather: dst[b,j] = src[b, col[b,j]] (f32 or i32; col -1 gives 0 / -1).
  virtual void gather_cols(const Tensor& src, const Tensor& col, Tensor dst) = 0;
  // Per-row column scatter-add: dst[b, col[b,j]] += src[b,j] (f32; col -1 skipped; in j order).
  virtual void scatter_add_cols(const Tensor& src, const Tensor& col, Tensor dst) = 0;

  // ---- sparse codes (ids i32 [B, k], -1 = empty slot; coef f32 [B, k]) ------------------------------------
  // out[b] = beta out[b] + sum_j coef[b,j] W[ids[b,j]]
  virtual void sparse_rows_matmul(const Tensor& coef, const Tensor& ids, const Tensor& w, float beta,
                                  Tensor out) = 0;
  // out[b,j] = x[b] . W[ids[b,j]]  (0 for empty slots)
  virtual void sparse_rows_dot(const Tensor& x, const Tensor& ids, const Tensor& w, Tensor out) = 0;
  // G[ids[b,j]] += alpha coef[b,j] x[b]   (deterministic: each row of G sums its contributions in b order)
  virtual void sparse_rows_outer_add(const Tensor& coef, const Tensor& ids, const Tensor& x, float alpha,
                                     Tensor g) = 0;

  // Rectangular-identity low-pass of Feature Scaling (Appendix C, Eq. C.2), for latent ids with n latents per
  // expert: out[b,j] = x[b, ids[b,j] % n] if ids[b,j] % n < d, else 0; and the transpose, which accumulates
  // g[b, ids[b,j] % n] += coef[b,j].
  virtual void identity_lowpass_dot(const Tensor& x, const Tensor& ids, int n, Tensor out) = 0;
  virtual void identity_lowpass_outer_add(const Tensor& coef, const Tensor& ids, int n, Tensor g) = 0;

  // ---- grouped rows (the experts' blocks) ----------------------------------------------------------------
  // Group i owns rows [offsets[i], offsets[i+1]) of the row-indexed operands (offsets: host, G + 1 entries, non-
  // decreasing, within the rows); rows outside every group are left alone. Each is the loop over the groups of
  // the plain operation named beside it: the CPU backend runs that loop (the same bits), the CUDA backend a few
  // launches in all instead of a few per group (the same to rounding). Shapes are checked here; backends implement
  // the *_impl.
  // How many rows a model should hand a grouped operation at a time (0: all it has). The CUDA backend wants all
  // the groups in one call (fewer launches); the CPU backend a cache's worth (the experts a few at a time), where a
  // whole batch's temporaries would stream through memory.
  virtual int64_t group_rows_per_call() const { return 0; }
  // c_i = alpha[i] a_i op(b_i) + beta c_i, with b_i = rows [i * b_rows, (i + 1) * b_rows) of b, or all of b when
  // b_rows == 0; op = transpose when trans_b.                                                          (gemm)
  void grouped_gemm(bool trans_b, const Tensor& a, const Tensor& b, int64_t b_rows,
                    const std::vector<int64_t>& offsets, const std::vector<float>& alpha, float beta, Tensor c);
  // out[i, :] = alpha * (column sums of group i's rows of a); out is [G, cols].                    (sum_rows)
  void sum_group_rows(const Tensor& a, const std::vector<int64_t>& offsets, float alpha, Tensor out);
  // Group i's rows of a += alpha v[i, :]; v is [G, cols].                                    (add_row_vector)
  void add_group_rows(Tensor a, const std::vector<int64_t>& offsets, const Tensor& v, float alpha);
  // Group i's rows of y += alpha[i] times group i's rows of x.                                          (axpy)
  void axpy_groups(const std::vector<float>& alpha, const std::vector<int64_t>& offsets, const Tensor& x, Tensor y);

  // ---- mixture-of-experts routing -------------------------------------------------------------------------
  // Groups the (token, slot) pairs of experts [B, e] (i32 expert ids) by expert; see ExpertGroups. Entries -1
  // (under expert parallelism: a slot whose expert another rank holds) are skipped: offsets[E] counts the others.
  virtual ExpertGroups group_by_expert(const Tensor& experts, int num_experts) = 0;
  // Maps per-token candidate indices c in [0, e*n) to global latent ids experts[b, c / n] * n + c % n, and
  // writes slot[b,j] = c / n. Empty slots (-1), and candidates of a slot whose expert is -1, give -1 in both.
  virtual void candidates_to_latents(const Tensor& cand_idx, const Tensor& experts, int n, Tensor latent_ids,
                                     Tensor slots) = 0;
  // Dead-latent bookkeeping: counter[f] += tokens for every latent, then 0 for each latent ids[b,j] whose
  // value vals[b,j] > 0 (the latent fired). Counters saturate at 2^30.
  virtual void update_fired(const Tensor& ids, const Tensor& vals, int64_t tokens, Tensor counter) = 0;
  // mask[f] = counter[f] > threshold (i32); returns the number of set entries.
  virtual int64_t threshold_mask(const Tensor& counter, int64_t threshold, Tensor mask) = 0;

  // ---- optimizer and constraints --------------------------------------------------------------------------
  // Adam with bias correction: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr mhat / (sqrt(vhat) + eps)
  virtual void adam_step(Tensor param, const Tensor& grad, Tensor m, Tensor v, float lr, float beta1,
                         float beta2, float eps, int64_t step) = 0;
  // w[i] /= (||w[i]|| + eps) for each row
  virtual void normalize_rows(Tensor w, float eps) = 0;
  // column j of w /= (||w[:,j]|| + eps)
  virtual void normalize_cols(Tensor w, float eps) = 0;
  // g[i] -= (g[i] . w[i]) w[i]   (removes the gradient component parallel to each decoder row)
  virtual void project_out_rows(Tensor g, const Tensor& w) = 0;

 protected:
  // The grouped operations after their shapes were checked (defaults: the loop over the groups).
  virtual void grouped_gemm_impl(bool trans_b, const Tensor& a, const Tensor& b, int64_t b_rows,
                                 const std::vector<int64_t>& offsets, const std::vector<float>& alpha, float beta,
                                 Tensor c);
  virtual void sum_group_rows_impl(const Tensor& a, const std::vector<int64_t>& offsets, float alpha, Tensor out);
  virtual void add_group_rows_impl(Tensor a, const std::vector<int64_t>& offsets, const Tensor& v, float alpha);
  virtual void axpy_groups_impl(const std::vector<float>& alpha, const std::vector<int64_t>& offsets,
                                const Tensor& x, Tensor y);
  // A Pending whose values this backend delivers into `state` (and whose get() waits through synchronize()).
  Pending pending(std::shared_ptr<Pending::State> state) {
    Pending p;
    p.state_ = std::move(state);
    p.owner_ = this;
    return p;
  }
};

// Adam's bias-corrected step, as every backend applies it: p -= step_size m / (sqrt(v) inv_sqrt_bc2 + eps), with
// step_size = lr / (1 - b1^t) and inv_sqrt_bc2 = 1 / sqrt(1 - b2^t) (computed in double, then rounded).
struct AdamScalars {
  float step_size;
  float inv_sqrt_bc2;
};
AdamScalars adam_scalars(float lr, float beta1, float beta2, int64_t step);

// The CPU reference backend (BLAS + threads). `threads` <= 0 means all cores.
std::unique_ptr<Backend> make_cpu_backend(int threads = 0);

// A backend chosen by the run config (train.backend, train.threads, train.device, train.gemm_precision).
enum class BackendKind { Cpu, Cuda };
BackendKind parse_backend_kind(const std::string& name);  // "cpu" | "cuda"; fails otherwise
const char* backend_kind_name(BackendKind kind);
// Precision of the CUDA backend's dense products: fp32 (CUDA cores), tf32 (tensor cores, fp32 in and out, 10-bit
// mantissa products), bf16 (inputs rounded to bf16, fp32 accumulation and output). The CPU backend is always fp32.
enum class GemmPrecision { FP32, TF32, BF16 };
GemmPrecision parse_gemm_precision(const std::string& name);  // "fp32" | "tf32" | "bf16"; fails otherwise
const char* gemm_precision_name(GemmPrecision p);

struct BackendOptions {
  BackendKind kind = BackendKind::Cpu;
  int threads = 0;   // cpu: threads (<= 0: all cores)
  int device = -1;   // cuda: device index (-1: the local rank modulo the visible devices)
  GemmPrecision gemm_precision = GemmPrecision::FP32;  // cuda
};
std::unique_ptr<Backend> make_backend(const BackendOptions& options);

}  // namespace moesae
