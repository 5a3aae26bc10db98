// Communicators (src/comm/) in one process: LocalComm, MpiComm at size 1 (MPI singleton), the timeout policy, the
// factory and argument errors. The multi-rank checks (1-4 ranks under mpirun, and a rank that dies) are in
// tests/cli/comm_mpi.sh, which runs bench/comm_check.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/local_comm.h"
#include "comm/mpi_comm.h"
#include "comm/nccl_comm.h"
#include "error_of.h"

using namespace moesae;
using namespace moesae::comm;

namespace {

using moesae::testing::error_of;

// The same single-rank semantics for every host communicator.
void check_single_rank(Communicator& c) {
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.size(), 1);
  EXPECT_FALSE(c.device_buffers());

  for (size_t n : {size_t(1), size_t(10), MpiComm::kGatherSumMax + 3}) {
    std::vector<float> f(n);
    for (size_t i = 0; i < n; ++i) f[i] = 0.1f * float(i) - 3.f;
    std::vector<float> f0 = f;
    c.all_reduce(f.data(), n, ReduceOp::Sum);
    EXPECT_EQ(f, f0);
    c.all_reduce(f.data(), n, ReduceOp::Max);
    EXPECT_EQ(f, f0);
  }
  std::vector<double> d = {1.5, -2.25};
  c.all_reduce(d.data(), d.size(), ReduceOp::Min);
  EXPECT_EQ(d, (std::vector<double>{1.5, -2.25}));
  std::vector<int64_t> l = {7, -8, 1ll << 40};
  c.all_reduce(l.data(), l.size(), ReduceOp::Sum);
  EXPECT_EQ(l, (std::vector<int64_t>{7, -8, 1ll << 40}));
  std::vector<int32_t> i32 = {3, 4};
  c.all_reduce(i32.data(), i32.size(), ReduceOp::Max);
  EXPECT_EQ(i32, (std::vector<int32_t>{3, 4}));

  std::vector<int32_t> g(3, -1);
  const int32_t src[2] = {5, 6};
  c.all_gather(src, 2, g.data());
  EXPECT_EQ(g, (std::vector<int32_t>{5, 6, -1}));

  std::vector<float> b = {1.f, 2.f};
  c.broadcast(b.data(), b.size(), 0);
  EXPECT_EQ(b, (std::vector<float>{1.f, 2.f}));
  EXPECT_NE(error_of([&] { c.broadcast(b.data(), b.size(), 1); }).find("root 1 is not a rank"), std::string::npos);
  c.barrier();

  // all-to-all-v to self: count exchange, offsets on both sides, packed host result.
  const std::vector<float> send = {9.f, 9.f, 1.f, 2.f, 3.f};
  std::vector<int64_t> rc;
  std::vector<float> got = c.all_to_all_v(send.data(), {3}, {2}, &rc);
  EXPECT_EQ(rc, (std::vector<int64_t>{3}));
  EXPECT_EQ(got, (std::vector<float>{1.f, 2.f, 3.f}));
  std::vector<int32_t> isend = {4, 5}, irecv(4, 0);
  c.all_to_all_v(isend.data(), {2}, {0}, irecv.data(), {2}, {1});
  EXPECT_EQ(irecv, (std::vector<int32_t>{0, 4, 5, 0}));
  std::vector<int32_t> small(1);
  EXPECT_NE(error_of([&] { c.all_to_all_v(isend.data(), {2}, {0}, small.data(), small.size()); })
                .find("receive buffer holds 1 elements but 2 arrive"),
            std::string::npos);
  EXPECT_NE(error_of([&] { c.exchange_counts({1, 2}); }).find("2 send counts for 1 ranks"), std::string::npos);
  EXPECT_NE(error_of([&] { c.exchange_counts({-1}); }).find("negative send count"), std::string::npos);
  EXPECT_NE(error_of([&] { c.all_to_all_v(isend.data(), {2}, {0}, irecv.data(), {2}, {}); })
                .find("counts/offsets need 1 entries each"),
            std::string::npos);
}

struct EnvGuard {
  std::string name;
  std::string old;
  bool had;
  EnvGuard(const char* n, const char* v) : name(n) {
    const char* o = std::getenv(n);
    had = o != nullptr;
    if (o) old = o;
    if (v)
      setenv(n, v, 1);
    else
      unsetenv(n);
  }
  ~EnvGuard() {
    if (had)
      setenv(name.c_str(), old.c_str(), 1);
    else
      unsetenv(name.c_str());
  }
};

}  // namespace

TEST(Comm, LocalSingleRank) {
  LocalComm c;
  EXPECT_EQ(c.name(), "local");
  check_single_rank(c);
}

TEST(Comm, MpiSingleRank) {
  mpi_init();  // MPI singleton: no mpirun needed for one rank
  MpiComm c;
  EXPECT_EQ(c.name(), "mpi");
  check_single_rank(c);
  auto f = make_communicator("mpi");
  EXPECT_EQ(f->name(), "mpi");
  EXPECT_EQ(f->size(), 1);
}

TEST(Comm, FactoryKinds) {
  EXPECT_EQ(make_communicator("local")->name(), "local");
  {
    EnvGuard a("OMPI_COMM_WORLD_SIZE", nullptr), b("PMI_SIZE", nullptr), c("PMIX_SIZE", nullptr),
        d("MPI_LOCALNRANKS", nullptr);
    EXPECT_EQ(make_communicator("auto")->name(), "local");
  }
  EXPECT_NE(error_of([] { make_communicator("gloo"); }).find("unknown communicator 'gloo' (choices: local, mpi"),
            std::string::npos);
}

TEST(Comm, NcclWithoutGpuFailsClearly) {
  if (!nccl_available()) {
    EXPECT_NE(error_of([] { make_communicator("nccl"); }).find("'nccl' is not available"), std::string::npos);
    return;
  }
  // CUDA build: on a machine without a GPU the bootstrap fails on every rank with a one-line error. (With a GPU, a
  // 1-rank NCCL communicator comes up; its collectives are untested here.)
  std::unique_ptr<Communicator> c;
  std::string err;
  try {
    c = make_communicator("nccl");
  } catch (const Error& e) {
    err = e.what();
  }
  if (c) {
    EXPECT_EQ(c->name(), "nccl");
    EXPECT_EQ(c->size(), 1);
    EXPECT_TRUE(c->device_buffers());
  } else {
    EXPECT_NE(err.find("nccl communicator: rank 0: "), std::string::npos) << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
  }
}

TEST(Comm, TimeoutFromEnv) {
  {
    EnvGuard g("MOESAE_COMM_TIMEOUT", nullptr);
    EXPECT_EQ(timeout_from_env(), 300.0);
    EXPECT_EQ(LocalComm().timeout(), 300.0);
  }
  {
    EnvGuard g("MOESAE_COMM_TIMEOUT", "2.5");
    EXPECT_EQ(timeout_from_env(), 2.5);
    EXPECT_EQ(LocalComm().timeout(), 2.5);
  }
  for (const char* bad : {"abc", "0", "-3", "5s", "inf"}) {
    EnvGuard g("MOESAE_COMM_TIMEOUT", bad);
    EXPECT_NE(error_of([] { timeout_from_env(); }).find("MOESAE_COMM_TIMEOUT must be a positive number"),
              std::string::npos)
        << bad;
  }
  LocalComm c;
  c.set_timeout(7);
  EXPECT_EQ(c.timeout(), 7.0);
  EXPECT_NE(error_of([&] { c.set_timeout(0); }).find("must be positive"), std::string::npos);
}

TEST(CommDeathTest, TimeoutMessageAndExit) {
  ::testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_EXIT(abort_on_timeout(2, "all_reduce(sum, f32, n=4)", 1.5), ::testing::ExitedWithCode(3),
              "error: rank 2: collective all_reduce\\(sum, f32, n=4\\) did not complete within 1.5 s \\(a rank died "
              "or hangs\\)");
}

TEST(Comm, PackedOffsets) {
  EXPECT_EQ(Communicator::packed_offsets({3, 0, 2, 5}), (std::vector<int64_t>{0, 3, 3, 5}));
  EXPECT_TRUE(Communicator::packed_offsets({}).empty());
}
