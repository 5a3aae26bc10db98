#include "parallel/expert_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/log.h"
#include "parallel/distributed_topk.h"

namespace moesae {
namespace {

// Entry order of the total order (larger score first, then the smaller id).
struct Entry {
  float score, val;
  int32_t id;
};

// A host copy whose rows are `ld() == cols()` apart (to_host copies are; views of them may not be).
Tensor host_copy(Backend& be, const Tensor& t) {
  Tensor h = be.to_host(t);
  MOESAE_CHECK(h.contiguous(), "expert parallelism: a non-contiguous host copy");
  return h;
}

}  // namespace

int ExpertParallel::first_expert_of(int rank, int ranks, int experts) {
  return int(int64_t(experts) * rank / ranks);
}

ExpertParallel::ExpertParallel(comm::Communicator& comm, Backend& be, const ModelConfig& model)
    : comm_(comm), be_(be), experts_(model.experts), slots_(model.active_experts), d_(model.d) {
  if (model.arch == Arch::TopK) {  // the dictionary in one block per rank, every token visiting every block
    experts_ = slots_ = comm_.size();
    if (model.dict_size < comm_.size())
      fail("a dictionary of ", model.dict_size, " latents cannot be sharded over ", comm_.size(), " ranks");
  } else if (model.arch != Arch::Switch && model.arch != Arch::Scale) {
    fail("expert parallelism shards the experts of a switch or scale SAE, or a topk SAE's dictionary; not ",
         to_string(model.arch));
  }
  if (comm_.device_buffers())
    fail("expert parallelism stages its exchanges through the host: use the MPI communicator, not ", comm_.name());
  if (experts_ < comm_.size())
    fail("expert parallelism over ", comm_.size(), " ranks needs at least as many experts (model.experts is ",
         experts_, ")");
}

int ExpertParallel::owner(int expert) const {
  const int P = comm_.size();
  int r = int(int64_t(expert) * P / experts_);  // a guess, then the exact block
  while (r > 0 && first_expert_of(r, P, experts_) > expert) --r;
  while (r + 1 < P && first_expert_of(r + 1, P, experts_) <= expert) ++r;
  return r;
}

template <typename T>
std::vector<T> ExpertParallel::exchange(const std::vector<T>& packed, int64_t width, bool reverse) {
  const std::vector<int64_t>& rows_out = reverse ? recv_counts_ : send_counts_;
  const std::vector<int64_t>& rows_in = reverse ? send_counts_ : recv_counts_;
  std::vector<int64_t> sc(rows_out.size()), rc(rows_in.size());
  for (size_t r = 0; r < sc.size(); ++r) {
    sc[r] = rows_out[r] * width;
    rc[r] = rows_in[r] * width;
  }
  const std::vector<int64_t> so = comm::Communicator::packed_offsets(sc), ro = comm::Communicator::packed_offsets(rc);
  std::vector<T> recv(size_t(ro.empty() ? 0 : ro.back() + rc.back()));
  comm_.all_to_all_v(packed.data(), sc, so, recv.data(), rc, ro);
  for (size_t r = 0; r < sc.size(); ++r)
    if (int(r) != comm_.rank()) bytes_sent_ += double(sc[r]) * sizeof(T);
  return recv;
}

std::vector<float> ExpertParallel::pack_origin(const Tensor& t) {
  MOESAE_CHECK(t.rows() == origin_rows_, "expert parallelism: ", t.rows(), " rows, the dispatch had ", origin_rows_);
  const Tensor h = host_copy(be_, t);
  const int64_t w = h.cols();
  std::vector<float> out;
  int64_t total = 0;
  for (const auto& rows : to_rank_) total += int64_t(rows.size());
  out.reserve(size_t(total * w));
  for (const auto& rows : to_rank_)
    for (int32_t b : rows) out.insert(out.end(), h.host<float>() + b * w, h.host<float>() + (b + 1) * w);
  return out;
}

DispatchedTokens ExpertParallel::dispatch(const Tensor& u, const Tensor& experts, const Tensor& weights) {
  Timer t;
  const int P = comm_.size(), e = slots_, d = d_;
  const int64_t B = u.rows();
  MOESAE_CHECK(u.cols() == d && experts.rows() == B && experts.cols() == e && weights.rows() == B &&
                   weights.cols() == e,
               "dispatch: u ", u.shape_str(), ", experts ", experts.shape_str(), ", weights ", weights.shape_str());
  const Tensor hu = host_copy(be_, u), he = host_copy(be_, experts), hw = host_copy(be_, weights);
  origin_rows_ = B;
  to_rank_.assign(P, {});
  std::vector<int32_t> participants(B);
  std::vector<int> dest(e);
  for (int64_t b = 0; b < B; ++b) {
    for (int s = 0; s < e; ++s) {
      const int32_t x = he.host<int32_t>()[b * e + s];
      MOESAE_CHECK(x >= 0 && x < experts_, "dispatch: token ", b, " routed to expert ", x, " of ", experts_);
      dest[s] = owner(x);
    }
    std::sort(dest.begin(), dest.end());  // the token's ranks, each once
    const auto end = std::unique(dest.begin(), dest.end());
    participants[b] = int32_t(end - dest.begin());
    for (auto q = dest.begin(); q != end; ++q) to_rank_[*q].push_back(int32_t(b));
  }
  send_counts_.assign(P, 0);
  for (int q = 0; q < P; ++q) send_counts_[q] = int64_t(to_rank_[q].size());
  // Rows: floats u | w (1 for slots another rank holds), ints origin row | participants | local slot experts.
  const int64_t fw = d + e, iw = 2 + e;
  std::vector<float> fsend;
  std::vector<int32_t> isend;
  for (int q = 0; q < P; ++q) {
    const int e0 = first_expert_of(q, P, experts_), e1 = first_expert_of(q + 1, P, experts_);
    for (int32_t b : to_rank_[q]) {
      fsend.insert(fsend.end(), hu.host<float>() + b * d, hu.host<float>() + (b + 1) * d);
      isend.push_back(b);
      isend.push_back(participants[b]);
      for (int s = 0; s < e; ++s) {
        const int32_t x = he.host<int32_t>()[b * e + s];
        const bool here = x >= e0 && x < e1;
        fsend.push_back(here ? hw.host<float>()[b * e + s] : 1.f);
        isend.push_back(here ? x - e0 : -1);
      }
    }
  }
  recv_counts_ = comm_.exchange_counts(send_counts_);
  recv_total_ = 0;
  for (int64_t c : recv_counts_) recv_total_ += c;
  const std::vector<float> frecv = exchange(fsend, fw, false);
  const std::vector<int32_t> irecv = exchange(isend, iw, false);
  const int64_t M = recv_total_;
  recv_source_.resize(M);
  recv_row_.resize(M);
  recv_participants_.resize(M);
  Tensor hu_in = host_tensor(M, d), he_in = host_tensor(M, e, DType::I32), hw_in = host_tensor(M, e);
  int64_t m = 0;
  for (int s = 0; s < P; ++s)
    for (int64_t i = 0; i < recv_counts_[s]; ++i, ++m) {
      recv_source_[m] = s;
      recv_row_[m] = irecv[m * iw];
      recv_participants_[m] = irecv[m * iw + 1];
      std::memcpy(hu_in.host<float>() + m * d, &frecv[m * fw], size_t(d) * 4);
      std::memcpy(hw_in.host<float>() + m * e, &frecv[m * fw + d], size_t(e) * 4);
      std::memcpy(he_in.host<int32_t>() + m * e, &irecv[m * iw + 2], size_t(e) * 4);
    }
  DispatchedTokens out;
  out.u = be_.from_host(hu_in);
  out.experts = be_.from_host(he_in);
  out.weights = be_.from_host(hw_in);
  comm_seconds_ += t.seconds();
  return out;
}

std::vector<int32_t> ExpertParallel::keep(const Tensor& scores, const Tensor& ids) {
  Timer t;
  const int64_t M = recv_total_, K = ids.cols();
  MOESAE_CHECK(scores.rows() == M && ids.rows() == M && scores.cols() == K, "keep: scores ", scores.shape_str(),
               ", ids ", ids.shape_str(), " for ", M, " received tokens");
  const Tensor hs = host_copy(be_, scores), hi = host_copy(be_, ids);
  TopKLists lists;
  lists.k = int(K);
  lists.token.resize(M);
  lists.home.resize(M);
  lists.participants.resize(M);
  lists.vals.assign(hs.host<float>(), hs.host<float>() + M * K);
  lists.ids.assign(hi.host<int32_t>(), hi.host<int32_t>() + M * K);
  for (const float v : lists.vals)
    if (!std::isfinite(v))
      fail("training diverged: a latent's selection score is ", v, " (try a lower train.lr)");
  for (int64_t m = 0; m < M; ++m) {
    lists.token[m] = (int64_t(recv_source_[m]) << 32) | int64_t(uint32_t(recv_row_[m]));
    lists.home[m] = recv_source_[m];
    lists.participants[m] = recv_participants_[m];
  }
  std::vector<int32_t> kept = distributed_topk_keep(comm_, lists);
  comm_seconds_ += t.seconds();
  return kept;
}

void ExpertParallel::sum_returned(const std::vector<float>& rows, int64_t width, int64_t col0, int64_t cols,
                                  Tensor out) {
  Tensor h = host_tensor(origin_rows_, cols);
  std::fill(h.host<float>(), h.host<float>() + h.numel(), 0.f);
  int64_t at = 0;
  for (const auto& list : to_rank_)  // ascending rank: every origin row adds its ranks' rows in rank order
    for (int32_t b : list) {
      float* o = h.host<float>() + b * cols;
      const float* r = &rows[at * width + col0];
      for (int64_t c = 0; c < cols; ++c) o[c] += r[c];
      ++at;
    }
  be_.upload(h, out);
}

void ExpertParallel::combine(const Tensor& partial, const Tensor& ids, const Tensor& vals, const Tensor& scores,
                             Tensor out, Tensor code_ids, Tensor code_vals) {
  Timer t;
  const int64_t M = recv_total_, K = ids.cols(), d = d_, B = origin_rows_;
  MOESAE_CHECK(partial.rows() == M && partial.cols() == d && ids.rows() == M && vals.rows() == M &&
                   vals.cols() == K && scores.rows() == M && scores.cols() == K && out.rows() == B &&
                   out.cols() == d && code_ids.rows() == B && code_ids.cols() == K && code_vals.rows() == B &&
                   code_vals.cols() == K,
               "combine: shapes do not match the dispatch");
  const Tensor hp = host_copy(be_, partial), hi = host_copy(be_, ids), hv = host_copy(be_, vals),
               hs = host_copy(be_, scores);
  // Back to the origin, in received order: floats partial | z | score, ints the global ids.
  const int64_t fw = d + 2 * K;
  std::vector<float> fsend(size_t(M * fw));
  for (int64_t m = 0; m < M; ++m) {
    std::memcpy(&fsend[m * fw], hp.host<float>() + m * d, size_t(d) * 4);
    std::memcpy(&fsend[m * fw + d], hv.host<float>() + m * K, size_t(K) * 4);
    std::memcpy(&fsend[m * fw + d + K], hs.host<float>() + m * K, size_t(K) * 4);
  }
  const std::vector<int32_t> isend(hi.host<int32_t>(), hi.host<int32_t>() + M * K);
  const std::vector<float> frecv = exchange(fsend, fw, true);
  const std::vector<int32_t> irecv = exchange(isend, K, true);
  sum_returned(frecv, fw, 0, d, out);
  // The code: every rank's kept entries of the token, merged under the total order.
  std::vector<std::vector<Entry>> entries(B);
  int64_t at = 0;
  for (const auto& list : to_rank_)
    for (int32_t b : list) {
      for (int64_t j = 0; j < K; ++j) {
        const int32_t id = irecv[at * K + j];
        if (id >= 0) entries[b].push_back({frecv[at * fw + d + K + j], frecv[at * fw + d + j], id});
      }
      ++at;
    }
  Tensor ci = host_tensor(B, K, DType::I32), cv = host_tensor(B, K);
  for (int64_t b = 0; b < B; ++b) {
    auto& v = entries[b];
    std::sort(v.begin(), v.end(),
              [](const Entry& a, const Entry& c) { return a.score > c.score || (a.score == c.score && a.id < c.id); });
    MOESAE_CHECK(int64_t(v.size()) <= K, "combine: token ", b, " got ", v.size(), " kept latents for k = ", K);
    for (int64_t j = 0; j < K; ++j) {
      const bool has = j < int64_t(v.size());
      ci.host<int32_t>()[b * K + j] = has ? v[j].id : -1;
      cv.host<float>()[b * K + j] = has ? v[j].val : 0.f;
    }
  }
  be_.upload(ci, code_ids);
  be_.upload(cv, code_vals);
  comm_seconds_ += t.seconds();
}

Tensor ExpertParallel::dispatch_rows(const Tensor& rows) {
  Timer t;
  const int64_t w = rows.cols();
  const std::vector<float> recv = exchange(pack_origin(rows), w, false);
  Tensor h = host_tensor(recv_total_, w);
  if (!recv.empty()) std::memcpy(h.host<float>(), recv.data(), recv.size() * 4);
  Tensor out = be_.from_host(h);
  comm_seconds_ += t.seconds();
  return out;
}

void ExpertParallel::combine_backward(const Tensor& du, const Tensor& dweights, Tensor out_du, Tensor out_dweights) {
  Timer t;
  const int64_t M = recv_total_, d = d_, e = slots_;
  MOESAE_CHECK(du.rows() == M && du.cols() == d && dweights.rows() == M && dweights.cols() == e,
               "combine_backward: du ", du.shape_str(), ", dweights ", dweights.shape_str(), " for ", M, " tokens");
  const Tensor hu = host_copy(be_, du), hw = host_copy(be_, dweights);
  const int64_t fw = d + e;
  std::vector<float> fsend(size_t(M * fw));
  for (int64_t m = 0; m < M; ++m) {
    std::memcpy(&fsend[m * fw], hu.host<float>() + m * d, size_t(d) * 4);
    std::memcpy(&fsend[m * fw + d], hw.host<float>() + m * e, size_t(e) * 4);
  }
  const std::vector<float> back = exchange(fsend, fw, true);
  sum_returned(back, fw, 0, d, out_du);
  sum_returned(back, fw, d, e, out_dweights);
  comm_seconds_ += t.seconds();
}

Tensor gather_whole(comm::Communicator& comm, Backend& be, const Param& p, const Tensor& local) {
  const bool root = comm.rank() == 0;
  if (!p.sharded()) return root ? host_copy(be, local) : Tensor();
  const int P = comm.size();
  const Tensor h = host_copy(be, local);
  const int64_t w = p.row_elems(), n = h.numel();
  // Every rank's rows go to rank 0 (one all-to-all-v with counts to rank 0 only), with their first row.
  std::vector<int64_t> sc(P, 0), so(P, 0);
  sc[0] = n;
  std::vector<int64_t> firsts(P);
  const int64_t first = p.shard_first;
  comm.all_gather(&first, 1, firsts.data());
  std::vector<int64_t> counts(P);
  comm.all_gather(&n, 1, counts.data());
  std::vector<int64_t> rc(P, 0);
  if (root) rc = counts;
  const std::vector<int64_t> ro = comm::Communicator::packed_offsets(rc);
  std::vector<float> recv(root ? size_t(ro.back() + rc.back()) : 0);
  comm.all_to_all_v(h.host<float>(), sc, so, recv.data(), rc, ro);
  if (!root) return Tensor();
  Tensor whole = local.rank() == 1 ? host_vector(p.full_rows) : host_tensor(p.full_rows, w);
  int64_t covered = 0;
  for (int r = 0; r < P; ++r) {
    MOESAE_CHECK(firsts[r] >= 0 && (firsts[r] * w + counts[r]) <= whole.numel(), "gather_whole: ", p.name,
                 " rank ", r, " holds rows from ", firsts[r]);
    std::memcpy(whole.host<float>() + firsts[r] * w, recv.data() + ro[r], size_t(counts[r]) * 4);
    covered += counts[r];
  }
  MOESAE_CHECK(covered == whole.numel(), "gather_whole: the ranks hold ", covered, " of ", whole.numel(),
               " elements of ", p.name);
  return whole;
}

void gather_model(comm::Communicator& comm, ParamSet& sharded, Backend& be, ParamSet* whole, Backend* whole_be) {
  for (Param* p : sharded.all()) {
    const Tensor full = gather_whole(comm, be, *p, p->value);
    if (!whole) continue;
    Param& dst = whole->get(p->name);
    MOESAE_CHECK(dst.value.numel() == full.numel(), "gather_model: ", p->name, " has ", full.numel(),
                 " elements, the whole model's ", dst.value.numel());
    whole_be->upload(full.rank() == dst.value.rank() ? full : full.reshape(dst.value.rows(), dst.value.cols()),
                     dst.value);
  }
}

}  // namespace moesae
