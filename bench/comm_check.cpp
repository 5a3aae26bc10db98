// comm_check: NOT a benchmark. This is the MPI test driver used by tests/cli/comm_mpi.sh (bench/*.cpp are the
// programs CMake builds into build/bin, so the driver lives here).
//
//   mpirun -np N comm_check [--comm mpi|local|auto]   every collective of src/comm/ at N ranks against the expected
//                                                     (sequential, 1-rank) result; the verdict is all-reduced so
//                                                     every rank agrees; exit 1 if any rank failed
//   mpirun -np N comm_check --kill-rank R              rank R calls _exit(9) mid-run; the others must exit with
//                                                     "error: rank X: collective ... did not complete within T s"
//                                                     (set MOESAE_COMM_TIMEOUT short, e.g. 5)
//   mpirun -np N comm_check --hang-rank R              the same, but rank R sleeps forever instead of dying
//   mpirun -np N comm_check --inject-failure R         rank R records one failed check: every rank must exit 1
//   mpirun -np N comm_check --bench                    optional all-to-all-v bandwidth micro-benchmark: our
//                                                     all_to_all_v (count exchange included) vs plain MPI_Alltoallv
//                                                     on the same buffers; and with equal counts, all_to_all_v vs
//                                                     all_to_all of the same bytes (--comm nccl: grouped
//                                                     ncclSend/ncclRecv vs ncclAlltoAll on device buffers)
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/mpi_comm.h"
#include "comm/mpi_header.h"
#ifdef MOESAE_HAVE_CUDA
#include <cuda_runtime.h>
#endif

using namespace moesae;
using namespace moesae::comm;

namespace {

int g_rank = 0;
int64_t g_checks = 0, g_failures = 0;

void expect(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    if (g_failures <= 20) std::fprintf(stderr, "rank %d: FAIL %s\n", g_rank, what.c_str());
  }
}

uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
uint64_t h3(uint64_t a, uint64_t b, uint64_t c) { return mix(a * 1000003ull + mix(b * 7919ull + mix(c))); }

// Values of mixed magnitude, so that a different summation order changes the rounded result.
double fval(int r, size_t i, int salt) {
  uint64_t h = h3(uint64_t(r), i, uint64_t(salt));
  double scale = (h >> 60) % 3 == 0 ? 1e3 : ((h >> 60) % 3 == 1 ? 1.0 : 1e-3);
  return (double(int64_t(h % 2000001) - 1000000) * 1e-6) * scale;
}
int64_t ival(int r, size_t i, int salt) { return int64_t(h3(uint64_t(r), i, uint64_t(salt)) % 200001) - 100000; }

template <typename T>
T gen(int r, size_t i, int salt) {
  if constexpr (std::is_floating_point_v<T>)
    return T(fval(r, i, salt));
  else
    return T(ival(r, i, salt));
}

template <typename T>
void check_all_reduce(Communicator& c, size_t n, ReduceOp op, const char* tname, int salt) {
  const int P = c.size();
  std::vector<T> data(n), want(n);
  for (size_t i = 0; i < n; ++i) {
    data[i] = gen<T>(c.rank(), i, salt);
    T acc = gen<T>(0, i, salt);  // the sequential rank-order reduction
    for (int r = 1; r < P; ++r) {
      T v = gen<T>(r, i, salt);
      acc = op == ReduceOp::Sum ? T(acc + v) : op == ReduceOp::Max ? std::max(acc, v) : std::min(acc, v);
    }
    want[i] = acc;
  }
  c.all_reduce(data.data(), n, op);
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad += !(data[i] == want[i]);  // bitwise for floats: rank-order sums
  expect(bad == 0, std::string("all_reduce ") + reduce_op_name(op) + " " + tname + " n=" + std::to_string(n) + ": " +
                       std::to_string(bad) + " elements differ");
}

template <typename T>
void check_all_gather(Communicator& c, size_t n, const char* tname) {
  std::vector<T> send(n), recv(n * size_t(c.size()) + 1, T(-7));
  for (size_t i = 0; i < n; ++i) send[i] = gen<T>(c.rank(), i, 11);
  c.all_gather(send.data(), n, recv.data());
  size_t bad = 0;
  for (int r = 0; r < c.size(); ++r)
    for (size_t i = 0; i < n; ++i) bad += !(recv[size_t(r) * n + i] == gen<T>(r, i, 11));
  bad += !(recv.back() == T(-7));  // nothing written past the end
  expect(bad == 0, std::string("all_gather ") + tname + " n=" + std::to_string(n));
}

template <typename T>
void check_broadcast(Communicator& c, size_t n, int root, const char* tname) {
  std::vector<T> data(n);
  for (size_t i = 0; i < n; ++i) data[i] = gen<T>(c.rank(), i, 21);
  c.broadcast(data.data(), n, root);
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i) bad += !(data[i] == gen<T>(root, i, 21));
  expect(bad == 0, std::string("broadcast ") + tname + " n=" + std::to_string(n) + " root=" + std::to_string(root));
}

// Element j of the message from rank s to rank d (exact in f32 and i32 for the sizes used here).
template <typename T>
T a2a_val(int s, int d, int64_t j) {
  return T(s * 1000000 + d * 10000 + int(j));
}

// count(s, d) for a pattern: 0 random 0..6, 1 all to the last rank, 2 only to self, 3 nothing, 4 large uneven.
int64_t a2a_count(int pattern, int s, int d, int P) {
  switch (pattern) {
    case 0: return int64_t(h3(uint64_t(s), uint64_t(d), 5) % 7);
    case 1: return d == P - 1 ? 1000 : 0;
    case 2: return s == d ? 17 : 0;
    case 3: return 0;
    default: return 3000 + int64_t(h3(uint64_t(s), uint64_t(d), 9) % 4000);
  }
}

template <typename T>
void check_all_to_all_v(Communicator& c, int pattern, const char* tname) {
  const int P = c.size(), me = c.rank();
  std::vector<int64_t> sc(static_cast<size_t>(P)), so(static_cast<size_t>(P));
  int64_t off = 0;
  for (int d = 0; d < P; ++d) {  // gaps of 3 elements between the send regions (offsets need not be packed)
    sc[size_t(d)] = a2a_count(pattern, me, d, P);
    so[size_t(d)] = off;
    off += sc[size_t(d)] + 3;
  }
  std::vector<T> send(size_t(off), T(-1));
  for (int d = 0; d < P; ++d)
    for (int64_t j = 0; j < sc[size_t(d)]; ++j) send[size_t(so[size_t(d)] + j)] = a2a_val<T>(me, d, j);
  const std::string tag = std::string("all_to_all_v ") + tname + " pattern " + std::to_string(pattern);

  // 1) host variant, count exchange inside
  std::vector<int64_t> rc;
  std::vector<T> got = c.all_to_all_v(send.data(), sc, so, &rc);
  size_t bad = 0, k = 0;
  for (int s = 0; s < P; ++s) {
    bad += rc[size_t(s)] != a2a_count(pattern, s, me, P);
    for (int64_t j = 0; j < a2a_count(pattern, s, me, P); ++j, ++k)
      bad += k >= got.size() || !(got[k] == a2a_val<T>(s, me, j));
  }
  bad += k != got.size();
  expect(bad == 0, tag + " (host, counts inside)");

  // 2) caller-owned buffer with capacity
  std::vector<T> buf(got.size() + 5, T(-2));
  std::vector<int64_t> rc2 = c.all_to_all_v(send.data(), sc, so, buf.data(), buf.size());
  bad = rc2 != rc;
  for (size_t i = 0; i < got.size(); ++i) bad += !(buf[i] == got[i]);
  for (size_t i = got.size(); i < buf.size(); ++i) bad += !(buf[i] == T(-2));
  expect(bad == 0, tag + " (caller buffer)");

  // 3) explicit receive offsets, reversed rank order with gaps
  std::vector<int64_t> ro(static_cast<size_t>(P));
  int64_t roff = 1;
  for (int s = P - 1; s >= 0; --s) {
    ro[size_t(s)] = roff;
    roff += rc[size_t(s)] + 2;
  }
  std::vector<T> rbuf(size_t(roff), T(-3));
  c.all_to_all_v(send.data(), sc, so, rbuf.data(), rc, ro);
  bad = 0;
  for (int s = 0; s < P; ++s)
    for (int64_t j = 0; j < rc[size_t(s)]; ++j) bad += !(rbuf[size_t(ro[size_t(s)] + j)] == a2a_val<T>(s, me, j));
  bad += !(rbuf[0] == T(-3));
  expect(bad == 0, tag + " (explicit offsets)");
}

// Equal counts (all_to_all): n elements from every rank to every rank.
template <typename T>
void check_all_to_all(Communicator& c, int64_t n, const char* tname) {
  const int P = c.size(), me = c.rank();
  std::vector<T> send(size_t(n * P)), recv(size_t(n * P) + 1, T(-5));
  for (int d = 0; d < P; ++d)
    for (int64_t j = 0; j < n; ++j) send[size_t(d * n + j)] = a2a_val<T>(me, d, j);
  c.all_to_all(send.data(), size_t(n), recv.data());
  size_t bad = !(recv.back() == T(-5));  // nothing written past the end
  for (int s = 0; s < P; ++s)
    for (int64_t j = 0; j < n; ++j) bad += !(recv[size_t(s * n + j)] == a2a_val<T>(s, me, j));
  expect(bad == 0, std::string("all_to_all ") + tname + " n=" + std::to_string(n));
}

void run_checks(Communicator& c, int kill_rank, bool hang, int inject_rank) {
  const int P = c.size();
  expect(c.rank() >= 0 && c.rank() < P, "rank in range");
  int64_t sz = P;
  c.all_reduce(&sz, 1, ReduceOp::Max);
  expect(sz == P, "all ranks agree on the size");

  for (size_t n : {size_t(1), size_t(3), size_t(1000), MpiComm::kGatherSumMax, MpiComm::kGatherSumMax + 1,
                   size_t(100003)})
    check_all_reduce<float>(c, n, ReduceOp::Sum, "f32", 1);
  for (size_t n : {size_t(5), size_t(50001)}) check_all_reduce<double>(c, n, ReduceOp::Sum, "f64", 2);
  for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min}) {
    check_all_reduce<int64_t>(c, 777, op, "i64", 3);
    check_all_reduce<int32_t>(c, 777, op, "i32", 4);
    if (op != ReduceOp::Sum) {
      check_all_reduce<float>(c, 777, op, "f32", 5);
      check_all_reduce<double>(c, 777, op, "f64", 6);
    }
  }
  check_all_reduce<float>(c, 0, ReduceOp::Sum, "f32", 7);

  expect(c.rank() != inject_rank, "injected failure (--inject-failure)");
  c.barrier();
  if (kill_rank >= 0) {
    if (c.rank() == kill_rank && hang) {
      std::fprintf(stderr, "rank %d: simulating a hang mid-run\n", c.rank());
      std::fflush(stderr);
      for (;;) sleep(1000);
    }
    if (c.rank() == kill_rank) {
      std::fprintf(stderr, "rank %d: simulating a crash (_exit(9)) mid-run\n", c.rank());
      std::fflush(stderr);
      _exit(9);
    }
    float x[1000];
    for (float& v : x) v = 1.f;
    c.all_reduce(x, 1000, ReduceOp::Sum);  // must time out: a peer is gone
    std::fprintf(stderr, "rank %d: BUG: all_reduce completed although rank %d died\n", c.rank(), kill_rank);
    std::exit(2);
  }

  check_all_gather<float>(c, 513, "f32");
  check_all_gather<int32_t>(c, 1, "i32");
  check_all_gather<int64_t>(c, 0, "i64");
  check_all_gather<double>(c, 64, "f64");
  for (int root = 0; root < P; ++root) {
    check_broadcast<float>(c, 1000, root, "f32");
    check_broadcast<int64_t>(c, 3, root, "i64");
  }
  for (int i = 0; i < 3; ++i) c.barrier();
  expect(true, "barrier x3");

  for (int pattern = 0; pattern <= 4; ++pattern) {
    check_all_to_all_v<float>(c, pattern, "f32");
    check_all_to_all_v<int32_t>(c, pattern, "i32");
  }
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(37), int64_t(5000)}) {
    check_all_to_all<float>(c, n, "f32");
    check_all_to_all<int64_t>(c, n, "i64");
  }

  // Argument errors are thrown locally, before any communication (so every rank throws alike).
  bool threw = false;
  try {
    std::vector<int64_t> bad_counts(size_t(P) + 1, 0), off(size_t(P) + 1, 0);
    std::vector<int64_t> rcount;
    c.all_to_all_v<float>(nullptr, bad_counts, off, &rcount);
  } catch (const Error& e) {
    threw = std::string(e.what()).find("send counts") != std::string::npos;
  }
  expect(threw, "all_to_all_v rejects a counts vector of the wrong size");
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void run_bench(MpiComm& c) {
  const int P = c.size(), me = c.rank();
  if (me == 0)
    std::printf("all_to_all_v bandwidth, %d ranks (variable counts: base..1.5x base floats per peer; times = slowest "
                "rank, best of reps)\n%14s %12s %12s %8s %10s\n",
                P, "base floats", "ours us", "MPI us", "ratio", "ours GB/s");
  for (int64_t base : {int64_t(64), int64_t(4096), int64_t(65536), int64_t(1) << 20}) {
    std::vector<int64_t> sc(static_cast<size_t>(P)), so(static_cast<size_t>(P));
    std::vector<int> isc(static_cast<size_t>(P)), iso(static_cast<size_t>(P)), irc(static_cast<size_t>(P)), iro(static_cast<size_t>(P));
    int64_t off = 0, bytes_out = 0;
    for (int d = 0; d < P; ++d) {
      sc[size_t(d)] = base + base * ((me + d) % 3) / 4;
      so[size_t(d)] = off;
      off += sc[size_t(d)];
      if (d != me) bytes_out += sc[size_t(d)] * 4;
    }
    std::vector<float> send(size_t(off), 1.f);
    std::vector<int64_t> rc = c.exchange_counts(sc);
    std::vector<int64_t> ro = Communicator::packed_offsets(rc);
    std::vector<float> recv(size_t(ro.back() + rc.back()));
    for (int d = 0; d < P; ++d) {
      isc[size_t(d)] = int(sc[size_t(d)]);
      iso[size_t(d)] = int(so[size_t(d)]);
      irc[size_t(d)] = int(rc[size_t(d)]);
      iro[size_t(d)] = int(ro[size_t(d)]);
    }
    const int reps = base >= (int64_t(1) << 20) ? 5 : 30;
    double best_ours = 1e30, best_mpi = 1e30;
    for (int r = 0; r <= reps; ++r) {
      for (int which = 0; which < 2; ++which) {
        MPI_Barrier(c.mpi_comm());
        double t0 = now_s();
        if (which == 0)
          c.all_to_all_v(send.data(), sc, so, recv.data(), recv.size());
        else
          MPI_Alltoallv(send.data(), isc.data(), iso.data(), MPI_FLOAT, recv.data(), irc.data(), iro.data(),
                        MPI_FLOAT, c.mpi_comm());
        double t = now_s() - t0;
        MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, c.mpi_comm());
        if (r > 0) (which == 0 ? best_ours : best_mpi) = std::min(which == 0 ? best_ours : best_mpi, t);
      }
    }
    if (me == 0)
      std::printf("%14lld %12.1f %12.1f %8.2f %10.3f\n", static_cast<long long>(base), best_ours * 1e6, best_mpi * 1e6,
                  best_ours / best_mpi, double(bytes_out) / best_ours / 1e9);
  }
}

// Buffers for the equal-count benchmark: host vectors, or device memory for a device communicator (NCCL).
class BenchBuffer {
 public:
  BenchBuffer(size_t floats, bool device) : n_(floats), device_(device) {
#ifdef MOESAE_HAVE_CUDA
    if (device_) {
      if (cudaMalloc(&dev_, std::max<size_t>(n_, 1) * sizeof(float)) != cudaSuccess) fail("cudaMalloc failed");
      cudaMemset(dev_, 0, std::max<size_t>(n_, 1) * sizeof(float));
      cudaDeviceSynchronize();  // the communicator's own stream does not wait for the legacy stream's memset
      return;
    }
#endif
    if (device_) fail("device buffers need a CUDA build");
    host_.assign(n_, 1.f);
  }
  ~BenchBuffer() {
#ifdef MOESAE_HAVE_CUDA
    if (dev_) cudaFree(dev_);
#endif
  }
  float* data() { return device_ ? static_cast<float*>(dev_) : host_.data(); }

 private:
  size_t n_;
  bool device_;
  std::vector<float> host_;
  void* dev_ = nullptr;
};

// The same bytes moved by all_to_all_v (count exchange included; on NCCL grouped ncclSend/ncclRecv) and by
// all_to_all with equal counts (ncclAlltoAll on NCCL >= 2.28.3, MPI_Ialltoall on MPI): what the count exchange and
// the variable-size path cost. On a device communicator the buffers are device memory.
void run_bench_equal(Communicator& c) {
  const int P = c.size(), me = c.rank();
  if (me == 0)
    std::printf("equal counts on %s, %d ranks: all_to_all_v vs all_to_all of the same bytes (times = slowest rank, "
                "best of reps)\n%14s %14s %14s %8s %12s\n",
                c.name().c_str(), P, "floats/peer", "a2a_v us", "a2a us", "ratio", "a2a_v GB/s");
  for (int64_t n : {int64_t(1024), int64_t(65536), int64_t(1) << 20, int64_t(1) << 22}) {
    const std::vector<int64_t> counts(size_t(P), n), offsets = Communicator::packed_offsets(counts);
    BenchBuffer send(size_t(n * P), c.device_buffers()), recv(size_t(n * P), c.device_buffers());
    const int reps = n >= (int64_t(1) << 20) ? 5 : 30;
    double best[2] = {1e30, 1e30};
    for (int r = 0; r <= reps; ++r)
      for (int which = 0; which < 2; ++which) {
        c.barrier();
        const double t0 = now_s();
        if (which == 0)
          c.all_to_all_v(send.data(), counts, offsets, recv.data(), size_t(n * P));
        else
          c.all_to_all(send.data(), size_t(n), recv.data());
        double t = now_s() - t0;
        // The slowest rank's time, over MPI: a device communicator's all_reduce takes device buffers only.
        MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
        if (r > 0) best[which] = std::min(best[which], t);
      }
    if (me == 0)
      std::printf("%14lld %14.1f %14.1f %8.2f %12.3f\n", static_cast<long long>(n), best[0] * 1e6, best[1] * 1e6,
                  best[0] / best[1], double(n) * 4 * (P - 1) / best[0] / 1e9);
  }
}

}  // namespace

#ifdef MOESAE_HAVE_CUDA
// The checks keep their data on the host; a communicator on device buffers (NCCL) gets each call's buffers staged
// through device memory by this decorator (copied in, the collective run on the device copies, copied back).
class DeviceStaged final : public Communicator {
 public:
  explicit DeviceStaged(std::unique_ptr<Communicator> inner) : inner_(std::move(inner)) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  std::string name() const override { return inner_->name() + " (host data staged through device buffers)"; }
  void barrier() override { inner_->barrier(); }

 protected:
  struct DeviceCopy {
    void* p = nullptr;
    size_t bytes;
    DeviceCopy(const void* host, size_t b) : bytes(b) {
      cuda_ok(cudaMalloc(&p, std::max<size_t>(bytes, 8)), "cudaMalloc");
      if (host && bytes) cuda_ok(cudaMemcpy(p, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to device");
      // A pageable copy may return before its DMA lands; the communicator's stream does not wait for it.
      cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    }
    void back(void* host) const {
      if (bytes) cuda_ok(cudaMemcpy(host, p, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy to host");
    }
    ~DeviceCopy() { cudaFree(p); }
  };
  static void cuda_ok(cudaError_t e, const char* what) {
    if (e != cudaSuccess) fail(what, ": ", cudaGetErrorString(e));
  }
  template <typename F>
  static void typed(ElemType t, void* p, F&& f) {
    switch (t) {
      case ElemType::F32: f(static_cast<float*>(p)); break;
      case ElemType::F64: f(static_cast<double*>(p)); break;
      case ElemType::I32: f(static_cast<int32_t*>(p)); break;
      case ElemType::I64: f(static_cast<int64_t*>(p)); break;
    }
  }
  void all_reduce_raw(void* data, size_t n, ElemType t, ReduceOp op) override {
    DeviceCopy d(data, n * elem_size(t));
    typed(t, d.p, [&](auto* p) { inner_->all_reduce(p, n, op); });
    d.back(data);
  }
  void all_gather_raw(const void* send, size_t n, void* recv, ElemType t) override {
    DeviceCopy s(send, n * elem_size(t)), r(nullptr, n * size_t(size()) * elem_size(t));
    typed(t, s.p, [&](auto* p) { inner_->all_gather(p, n, static_cast<decltype(p)>(r.p)); });
    r.back(recv);
  }
  void broadcast_raw(void* data, size_t n, ElemType t, int root) override {
    DeviceCopy d(data, n * elem_size(t));
    typed(t, d.p, [&](auto* p) { inner_->broadcast(p, n, root); });
    d.back(data);
  }
  void exchange_counts_raw(const int64_t* send_counts, int64_t* recv_counts) override {
    const auto r = inner_->exchange_counts(std::vector<int64_t>(send_counts, send_counts + size()));
    std::copy(r.begin(), r.end(), recv_counts);
  }
  void all_to_all_v_raw(const void* send, const std::vector<int64_t>& send_counts,
                        const std::vector<int64_t>& send_offsets, void* recv, const std::vector<int64_t>& recv_counts,
                        const std::vector<int64_t>& recv_offsets, ElemType t) override {
    auto extent = [](const std::vector<int64_t>& c, const std::vector<int64_t>& o) {
      int64_t e = 0;
      for (size_t i = 0; i < c.size(); ++i) e = std::max(e, o[i] + c[i]);
      return size_t(e);
    };
    DeviceCopy s(send, extent(send_counts, send_offsets) * elem_size(t));
    DeviceCopy r(recv, extent(recv_counts, recv_offsets) * elem_size(t));  // untouched regions keep their values
    typed(t, s.p, [&](auto* p) {
      inner_->all_to_all_v(p, send_counts, send_offsets, static_cast<decltype(p)>(r.p), recv_counts, recv_offsets);
    });
    r.back(recv);
  }
  void all_to_all_raw(const void* send, size_t n, void* recv, ElemType t) override {
    const size_t bytes = n * size_t(size()) * elem_size(t);
    DeviceCopy s(send, bytes), r(nullptr, bytes);
    typed(t, s.p, [&](auto* p) { inner_->all_to_all(p, n, static_cast<decltype(p)>(r.p)); });
    r.back(recv);
  }

 private:
  std::unique_ptr<Communicator> inner_;
};
#endif

int main(int argc, char** argv) {
  std::string kind = "mpi";
  int kill_rank = -1, inject_rank = -1;
  bool bench = false, hang = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--comm" && i + 1 < argc)
      kind = argv[++i];
    else if (a == "--kill-rank" && i + 1 < argc)
      kill_rank = std::atoi(argv[++i]);
    else if (a == "--hang-rank" && i + 1 < argc) {
      kill_rank = std::atoi(argv[++i]);
      hang = true;
    } else if (a == "--inject-failure" && i + 1 < argc)
      inject_rank = std::atoi(argv[++i]);
    else if (a == "--bench")
      bench = true;
    else {
      std::fprintf(stderr,
                   "usage: comm_check [--comm mpi|local|auto] [--kill-rank R | --hang-rank R] [--inject-failure R] "
                   "[--bench]\n");
      return 2;
    }
  }
  try {
    MpiRuntime mpi(&argc, &argv);
    std::unique_ptr<Communicator> c = make_communicator(kind);
    if (bench) {  // device buffers as they are (NCCL: ncclAlltoAll vs grouped send/recv on the GPU)
      g_rank = c->rank();
      if (auto* m = dynamic_cast<MpiComm*>(c.get())) run_bench(*m);
      run_bench_equal(*c);
      c.reset();
      return 0;
    }
#ifdef MOESAE_HAVE_CUDA
    if (c->device_buffers()) c = std::make_unique<DeviceStaged>(std::move(c));
#endif
    g_rank = c->rank();
    if (kill_rank >= c->size()) fail("--kill-rank ", kill_rank, " is not a rank of ", c->size());
    run_checks(*c, kill_rank, hang, inject_rank);
    int64_t verdict[2] = {g_failures, g_checks};
    c->all_reduce(verdict, 2, ReduceOp::Sum);
    if (c->rank() == 0) {
      if (verdict[0] == 0)
        std::printf("comm_check: %s, %d ranks: %lld checks passed\n", c->name().c_str(), c->size(),
                    static_cast<long long>(verdict[1]));
      else
        std::printf("comm_check: %s, %d ranks: FAILED %lld of %lld checks (all ranks)\n", c->name().c_str(),
                    c->size(), static_cast<long long>(verdict[0]), static_cast<long long>(verdict[1]));
    }
    const bool ok = verdict[0] == 0;
    c.reset();
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
