#include "parallel/data_parallel.h"

#include <algorithm>
#include <cstring>

#include "core/log.h"

namespace moesae {
namespace {

// First word of a cursor written by more than one rank ("moeSDP" + version 1), then the rank count, then per
// rank: its word count and its words.
constexpr uint64_t kMultiRankCursor = 0x6d6f65534450'0001ull;

}  // namespace

void DataParallel::sum(double* values, size_t n) {
  Timer t;
  comm_.all_reduce(values, n, comm::ReduceOp::Sum);
  comm_seconds_ += t.seconds();
}

void DataParallel::min(int32_t* values, size_t n) {
  Timer t;
  comm_.all_reduce(values, n, comm::ReduceOp::Min);
  comm_seconds_ += t.seconds();
}

bool DataParallel::any(bool flag) {
  int32_t v = flag ? 1 : 0;
  comm_.all_reduce(&v, 1, comm::ReduceOp::Max);
  return v != 0;
}

void DataParallel::all_reduce_gradients(ParamSet& params, Backend& be, Which which) {
  if (size() == 1) return;
  std::vector<Param*> trainable;
  for (Param* p : params.trainable())
    if (which == Which::All || (which == Which::Sharded) == p->sharded()) trainable.push_back(p);
  if (be.device() == Device::CPU) {  // host gradients: reduced in place, one all-reduce per parameter
    Timer t;
    for (Param* p : trainable) {
      MOESAE_CHECK(p->grad.contiguous(), "all_reduce_gradients: gradient of ", p->name, " is not contiguous");
      comm_.all_reduce(p->grad.host<float>(), size_t(p->grad.numel()), comm::ReduceOp::Sum);
    }
    comm_seconds_ += t.seconds();
    return;
  }
  // Device gradients: packed on the host, one all-reduce, unpacked (a device communicator would avoid the copies).
  size_t total = 0;
  for (Param* p : trainable) total += size_t(p->grad.numel());
  packed_.resize(total);
  size_t at = 0;
  for (Param* p : trainable) {
    Tensor h = be.to_host(p->grad);
    std::memcpy(packed_.data() + at, h.host<float>(), size_t(h.numel()) * 4);
    at += size_t(h.numel());
  }
  Timer t;
  comm_.all_reduce(packed_.data(), total, comm::ReduceOp::Sum);  // rank order: identical bits on every rank
  comm_seconds_ += t.seconds();
  at = 0;
  for (Param* p : trainable) {
    Tensor h = p->grad.rank() == 1 ? host_vector(p->grad.rows()) : host_tensor(p->grad.rows(), p->grad.cols());
    std::memcpy(h.host<float>(), packed_.data() + at, size_t(h.numel()) * 4);
    be.upload(h, p->grad);
    at += size_t(h.numel());
  }
}

Tensor DataParallel::gather_batch(const Tensor& host_local) {
  MOESAE_CHECK(host_local.contiguous(), "gather_batch: the local batch must be contiguous");
  Tensor all = host_tensor(host_local.rows() * size(), host_local.cols());
  Timer t;
  comm_.all_gather(host_local.host<float>(), size_t(host_local.numel()), all.host<float>());
  comm_seconds_ += t.seconds();
  return all;
}

SaeStats DataParallel::reduce_stats(const SaeStats& s, int64_t d) {
  if (size() == 1) return s;
  // Terms normalised by the group's batch (recon, aux, sparsity) add up; the load-balancing term is already the
  // group's (computed from group statistics, the same bits on every rank), so it is taken as it is.
  double v[6] = {s.recon, s.aux, s.sparsity, s.sq_error, s.l0 * double(s.tokens), double(s.tokens)};
  sum(v, 6);
  SaeStats g = s;
  g.recon = v[0];
  g.aux = v[1];
  g.sparsity = v[2];
  g.sq_error = v[3];
  g.tokens = static_cast<int64_t>(v[5]);
  g.l0 = v[4] / v[5];
  g.mse = v[3] / (v[5] * double(d));
  g.mse_sum = v[3] / v[5];
  g.loss = v[0] + s.lb_term + v[1] + v[2];
  return g;
}

void DataParallel::wait_for_rank0() {
  const double timeout = comm_.timeout();
  comm_.set_timeout(kRank0WorkTimeout);
  comm_.barrier();
  comm_.set_timeout(timeout);
}

std::vector<uint64_t> DataParallelSource::state() const {
  std::vector<uint64_t> mine = local_.state();
  const int P = comm_.size();
  if (P == 1) return mine;
  std::vector<int64_t> lens(P);
  const int64_t my_len = int64_t(mine.size());
  comm_.all_gather(&my_len, 1, lens.data());
  int64_t longest = 0;
  for (int64_t l : lens) longest = std::max(longest, l);
  std::vector<int64_t> padded(size_t(longest), 0), all(size_t(longest) * P);
  std::memcpy(padded.data(), mine.data(), mine.size() * 8);
  comm_.all_gather(padded.data(), size_t(longest), all.data());
  std::vector<uint64_t> out{kMultiRankCursor, uint64_t(P)};
  for (int r = 0; r < P; ++r) {
    out.push_back(uint64_t(lens[r]));
    for (int64_t i = 0; i < lens[r]; ++i) out.push_back(uint64_t(all[size_t(r) * longest + i]));
  }
  return out;
}

void DataParallelSource::restore(const std::vector<uint64_t>& s) {
  const int P = comm_.size();
  const bool multi = s.size() >= 2 && s[0] == kMultiRankCursor;
  const uint64_t written_by = multi ? s[1] : 1;
  if (written_by != uint64_t(P)) {
    if (comm_.rank() == 0)
      spdlog::warn("the checkpoint's data cursor was written by {} rank(s) and this run has {}: parameters and "
                   "optimizer state resume exactly, the data streams start afresh on the new shards",
                   written_by, P);
    return;
  }
  if (!multi) {
    local_.restore(s);
    return;
  }
  size_t at = 2;
  for (int r = 0; r < P; ++r) {
    if (at >= s.size()) fail("checkpoint data cursor: truncated (rank ", r, " of ", P, ")");
    const size_t len = size_t(s[at++]);
    if (at + len > s.size()) fail("checkpoint data cursor: truncated (rank ", r, " of ", P, ")");
    if (r == comm_.rank()) local_.restore(std::vector<uint64_t>(s.begin() + long(at), s.begin() + long(at + len)));
    at += len;
  }
}

}  // namespace moesae
