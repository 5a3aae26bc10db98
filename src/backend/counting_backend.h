// moesae backend: CountingBackend, a Backend that forwards every call to another one and counts them: the
// operations a model issues (on the CUDA backend each is one or a few kernel launches; a grouped product that falls
// back to one cuBLAS call per group, as bf16 or unaligned operands do, is more) and the calls that bring data back
// to the host (on CUDA each is one wait for the device: download, reduce_many, group_by_expert, threshold_mask,
// synchronize; an upload from a page-locked host_buffer waits too, but counts as an operation). A queued read-back
// (reduce_many_later, download_later, clip_by_global_norm) is an operation whose values, as on CUDA, arrive with the
// next round trip, or with one of its own when it is asked for first.
// The benchmarks print both per training step; tests check them on the CPU, without a GPU. Counting by name (for
// messages) is optional: it costs a map update per call.
#pragma once
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "backend/backend.h"

namespace moesae {

class CountingBackend final : public Backend {
 public:
  explicit CountingBackend(Backend& inner, bool by_name = true) : in_(inner), keep_names_(by_name) {}

  int64_t operations() const { return operations_; }  // every call but allocations and queries
  int64_t round_trips() const { return round_trips_; }
  const std::map<std::string, int64_t>& by_name() const { return by_name_; }  // empty unless counting by name
  // What group_rows_per_call() answers: the wrapped backend's (default), or `rows` (0: a GPU's all-at-once).
  void set_group_rows_per_call(int64_t rows) { group_rows_ = rows; }
  void reset() {
    operations_ = round_trips_ = 0;
    by_name_.clear();
  }

  Device device() const override { return in_.device(); }
  std::string name() const override { return "counting(" + in_.name() + ")"; }
  void synchronize() override {  // a wait, not an operation
    ++round_trips_;
    if (keep_names_) ++by_name_["synchronize"];
    in_.synchronize();
    deliver();
  }
  int64_t host_waits() const override { return in_.host_waits(); }
  int64_t grouped_gemm_fallbacks() const override { return in_.grouped_gemm_fallbacks(); }
  int64_t group_rows_per_call() const override { return group_rows_ >= 0 ? group_rows_ : in_.group_rows_per_call(); }
  Tensor empty(int64_t rows, int64_t cols, DType dt) override { return in_.empty(rows, cols, dt); }
  Tensor empty_vector(int64_t n, DType dt) override { return in_.empty_vector(n, dt); }
  Tensor host_buffer(int64_t rows, int64_t cols, DType dt) override { return in_.host_buffer(rows, cols, dt); }

  void upload(const Tensor& s, Tensor d) override { op("upload"); in_.upload(s, d); }
  void download(const Tensor& s, Tensor d) override {
    round_trip("download", [&] { in_.download(s, d); });
  }
  void copy(const Tensor& s, Tensor d) override { op("copy"); in_.copy(s, d); }
  void fill(Tensor x, float v) override { op("fill"); in_.fill(x, v); }
  void fill_i32(Tensor x, int32_t v) override { op("fill_i32"); in_.fill_i32(x, v); }
  void scale(Tensor x, float a) override { op("scale"); in_.scale(x, a); }
  void axpy(float a, const Tensor& x, Tensor y) override { op("axpy"); in_.axpy(a, x, y); }
  void mul(const Tensor& a, const Tensor& b, Tensor o) override { op("mul"); in_.mul(a, b, o); }
  void relu(Tensor x) override { op("relu"); in_.relu(x); }
  void relu_backward(const Tensor& y, Tensor dy) override { op("relu_backward"); in_.relu_backward(y, dy); }
  void add_row_vector(Tensor a, const Tensor& v, float al) override {
    op("add_row_vector"); in_.add_row_vector(a, v, al);
  }
  void scale_rows(Tensor a, const Tensor& s) override { op("scale_rows"); in_.scale_rows(a, s); }
  void scale_cols(Tensor a, const Tensor& s) override { op("scale_cols"); in_.scale_cols(a, s); }
  void exp(const Tensor& x, Tensor o) override { op("exp"); in_.exp(x, o); }
  void sum_rows(const Tensor& a, Tensor o, float al, float be) override { op("sum_rows"); in_.sum_rows(a, o, al, be); }
  // Queued read-backs: an operation each, delivered (as on CUDA) by the next round trip, or by get()'s own.
  Pending reduce_many_later(const std::vector<Reduction>& items) override {
    op("reduce_many_later");
    return queue(in_.reduce_many_later(items));
  }
  Pending download_later(const Tensor& s, Tensor d) override {
    op("download_later");
    return queue(in_.download_later(s, d));
  }
  Pending clip_by_global_norm(const std::vector<Tensor>& xs, double max_norm) override {
    op("clip_by_global_norm");
    return queue(in_.clip_by_global_norm(xs, max_norm));
  }
  void row_squared_error(const Tensor& a, const Tensor& b, Tensor o) override {
    op("row_squared_error"); in_.row_squared_error(a, b, o);
  }
  void gemm(bool ta, bool tb, float al, const Tensor& a, const Tensor& b, float be, Tensor c) override {
    op("gemm"); in_.gemm(ta, tb, al, a, b, be, c);
  }
  void softmax_rows(const Tensor& l, Tensor p) override { op("softmax_rows"); in_.softmax_rows(l, p); }
  void softmax_rows_backward(const Tensor& p, const Tensor& dp, Tensor dl) override {
    op("softmax_rows_backward"); in_.softmax_rows_backward(p, dp, dl);
  }
  void topk_rows(const Tensor& x, int k, Tensor v, Tensor i, const Tensor* m) override {
    op("topk_rows"); in_.topk_rows(x, k, v, i, m);
  }
  void sort_rows_by_index(Tensor i, Tensor v) override { op("sort_rows_by_index"); in_.sort_rows_by_index(i, v); }
  void gather_rows(const Tensor& s, const Tensor& i, Tensor d) override { op("gather_rows"); in_.gather_rows(s, i, d); }
  void scatter_rows(const Tensor& s, const Tensor& i, Tensor d) override {
    op("scatter_rows"); in_.scatter_rows(s, i, d);
  }
  void gather(const Tensor& s, const Tensor& i, Tensor d) override { op("gather"); in_.gather(s, i, d); }
  void scatter_add(const Tensor& s, const Tensor& i, Tensor d) override { op("scatter_add"); in_.scatter_add(s, i, d); }
  void gather_cols(const Tensor& s, const Tensor& c, Tensor d) override { op("gather_cols"); in_.gather_cols(s, c, d); }
  void scatter_add_cols(const Tensor& s, const Tensor& c, Tensor d) override {
    op("scatter_add_cols"); in_.scatter_add_cols(s, c, d);
  }
  void sparse_rows_matmul(const Tensor& c, const Tensor& i, const Tensor& w, float be, Tensor o) override {
    op("sparse_rows_matmul"); in_.sparse_rows_matmul(c, i, w, be, o);
  }
  void sparse_rows_dot(const Tensor& x, const Tensor& i, const Tensor& w, Tensor o) override {
    op("sparse_rows_dot"); in_.sparse_rows_dot(x, i, w, o);
  }
  void sparse_rows_outer_add(const Tensor& c, const Tensor& i, const Tensor& x, float al, Tensor g) override {
    op("sparse_rows_outer_add"); in_.sparse_rows_outer_add(c, i, x, al, g);
  }
  void identity_lowpass_dot(const Tensor& x, const Tensor& i, int n, Tensor o) override {
    op("identity_lowpass_dot"); in_.identity_lowpass_dot(x, i, n, o);
  }
  void identity_lowpass_outer_add(const Tensor& c, const Tensor& i, int n, Tensor g) override {
    op("identity_lowpass_outer_add"); in_.identity_lowpass_outer_add(c, i, n, g);
  }
  ExpertGroups group_by_expert(const Tensor& e, int n) override {
    return round_trip("group_by_expert", [&] { return in_.group_by_expert(e, n); });
  }
  void candidates_to_latents(const Tensor& c, const Tensor& e, int n, Tensor l, Tensor s) override {
    op("candidates_to_latents"); in_.candidates_to_latents(c, e, n, l, s);
  }
  void update_fired(const Tensor& i, const Tensor& v, int64_t t, Tensor c) override {
    op("update_fired"); in_.update_fired(i, v, t, c);
  }
  int64_t threshold_mask(const Tensor& c, int64_t t, Tensor m) override {
    return round_trip("threshold_mask", [&] { return in_.threshold_mask(c, t, m); });
  }
  void adam_step(Tensor p, const Tensor& g, Tensor m, Tensor v, float lr, float b1, float b2, float eps,
                 int64_t step) override {
    op("adam_step"); in_.adam_step(p, g, m, v, lr, b1, b2, eps, step);
  }
  void normalize_rows(Tensor w, float eps) override { op("normalize_rows"); in_.normalize_rows(w, eps); }
  void normalize_cols(Tensor w, float eps) override { op("normalize_cols"); in_.normalize_cols(w, eps); }
  void project_out_rows(Tensor g, const Tensor& w) override { op("project_out_rows"); in_.project_out_rows(g, w); }

 protected:
  void grouped_gemm_impl(bool tb, const Tensor& a, const Tensor& b, int64_t b_rows,
                         const std::vector<int64_t>& offsets, const std::vector<float>& alpha, float beta,
                         Tensor c) override {
    op("grouped_gemm"); in_.grouped_gemm(tb, a, b, b_rows, offsets, alpha, beta, c);
  }
  void sum_group_rows_impl(const Tensor& a, const std::vector<int64_t>& offsets, float alpha, Tensor out) override {
    op("sum_group_rows"); in_.sum_group_rows(a, offsets, alpha, out);
  }
  void add_group_rows_impl(Tensor a, const std::vector<int64_t>& offsets, const Tensor& v, float alpha) override {
    op("add_group_rows"); in_.add_group_rows(a, offsets, v, alpha);
  }
  void axpy_groups_impl(const std::vector<float>& alpha, const std::vector<int64_t>& offsets, const Tensor& x,
                        Tensor y) override {
    op("axpy_groups"); in_.axpy_groups(alpha, offsets, x, y);
  }

 private:
  void op(const char* name) {
    ++operations_;
    if (keep_names_) ++by_name_[name];
  }
  // A call of the wrapped backend that brings data back: counted, then what was queued before it is delivered.
  template <typename Call>
  auto round_trip(const char* name, Call&& call) -> decltype(call()) {
    ++round_trips_;
    op(name);
    if constexpr (std::is_void_v<decltype(call())>) {
      call();
      deliver();
    } else {
      auto result = call();
      deliver();
      return result;
    }
  }
  Pending queue(Pending inner) {
    auto state = std::make_shared<Pending::State>();
    queued_.push_back({state, std::move(inner)});
    return pending(state);
  }
  void deliver() {  // after a round trip of the wrapped backend, which has its queued values by then
    for (Queued& q : queued_) {
      q.state->values = q.inner.get();
      q.state->ready = true;
    }
    queued_.clear();
  }

  Backend& in_;
  bool keep_names_;
  int64_t group_rows_ = -1;
  int64_t operations_ = 0, round_trips_ = 0;
  std::map<std::string, int64_t> by_name_;
  struct Queued {
    std::shared_ptr<Pending::State> state;
    Pending inner;  // the wrapped backend's (ready at once on the CPU)
  };
  std::vector<Queued> queued_;
};

}  // namespace moesae
