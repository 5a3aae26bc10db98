// GoogleTest under MPI: a main() for test binaries that run at any rank count under mpirun (or alone). Every rank
// runs the tests; ranks > 0 print only their failures, prefixed with the rank; the verdict is all-reduced, so every
// rank exits non-zero when any rank failed, and rank 0 prints one line "<name>: P ranks: all tests passed on every
// rank" or "<name>: P ranks: FAILED on rank(s) ...".
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "core/log.h"

namespace moesae::testing {

// On ranks > 0 (whose default printer is removed): each failure, prefixed with the rank.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (!r.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                 r.line_number(), r.message());
    std::fflush(stderr);
  }
  void OnTestEnd(const ::testing::TestInfo& t) override {
    if (t.result()->Failed()) {
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, t.test_suite_name(), t.name());
      std::fflush(stderr);
    }
  }

 private:
  int rank_;
};

// The whole main(): *comm_out points at the job's communicator while the tests run.
inline int run_mpi_gtest(int argc, char** argv, const char* name, comm::Communicator** comm_out) {
  ::testing::InitGoogleTest(&argc, argv);
  if (::testing::GTEST_FLAG(list_tests)) return RUN_ALL_TESTS();  // test discovery (ctest): no communicator
  std::unique_ptr<comm::Communicator> comm;
  try {
    comm = comm::make_communicator("auto");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  *comm_out = comm.get();
  // A rank that leaves a test early (a failed ASSERT, an exception) would leave the others waiting in a collective:
  // bound that wait (the tests keep their collectives ahead of their ASSERTs, so this is a safety net).
  if (!std::getenv("MOESAE_COMM_TIMEOUT")) comm->set_timeout(60);
  const int r = comm->rank(), P = comm->size();
  spdlog::set_level(r == 0 ? spdlog::level::warn : spdlog::level::err);  // no progress lines; warnings once
  if (r > 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(r));
  }
  int failed = 0;
  try {
    failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  } catch (const std::exception& e) {  // gtest catches exceptions in tests; this is for the rest
    std::fprintf(stderr, "[rank %d] error: %s\n", r, e.what());
    failed = 1;
  }
  std::vector<int32_t> flags(size_t(P), 0);
  const int32_t mine = failed;
  comm->all_gather(&mine, 1, flags.data());
  const int32_t any = *std::max_element(flags.begin(), flags.end());
  if (r == 0) {
    if (any == 0) {
      std::printf("%s: %d ranks: all tests passed on every rank\n", name, P);
    } else {
      std::string who;
      for (int i = 0; i < P; ++i)
        if (flags[size_t(i)]) who += (who.empty() ? "" : ", ") + std::to_string(i);
      std::printf("%s: %d ranks: FAILED on rank(s) %s\n", name, P, who.c_str());
    }
    std::fflush(stdout);
  }
  *comm_out = nullptr;
  comm.reset();  // before MPI_Finalize (registered at exit)
  return any != 0 ? 1 : 0;
}

}  // namespace moesae::testing
