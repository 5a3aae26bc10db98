// moesae comm: shared parts of the Communicator interface, the timeout policy and the factory.
#include "comm/communicator.h"

#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "comm/local_comm.h"
#include "comm/mpi_header.h"
#include "comm/mpi_comm.h"
#include "comm/nccl_comm.h"

namespace moesae::comm {

const char* elem_name(ElemType t) {
  switch (t) {
    case ElemType::F32: return "f32";
    case ElemType::F64: return "f64";
    case ElemType::I32: return "i32";
    case ElemType::I64: return "i64";
  }
  return "?";
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Max: return "max";
    case ReduceOp::Min: return "min";
  }
  return "?";
}

double timeout_from_env() {
  const char* s = std::getenv("MOESAE_COMM_TIMEOUT");
  if (!s || !*s) return 300.0;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !std::isfinite(v) || v <= 0)
    fail("MOESAE_COMM_TIMEOUT must be a positive number of seconds, got '", s, "'");
  return v;
}

void abort_on_timeout(int rank, const std::string& collective, double seconds) {
  std::fprintf(stderr, "error: rank %d: collective %s did not complete within %g s (a rank died or hangs)\n", rank,
               collective.c_str(), seconds);
  std::fflush(stderr);
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (init && !fin) MPI_Abort(MPI_COMM_WORLD, 3);
  _exit(3);
}

void abort_job_after_error(int exit_code) {
  int init = 0, fin = 0, size = 1;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (!init || fin) return;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) {
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, exit_code);
  }
}

Communicator::Communicator() : timeout_s_(timeout_from_env()) {}

void Communicator::all_to_all_raw(const void* send, size_t n, void* recv, ElemType t) {
  const std::vector<int64_t> counts(static_cast<size_t>(size()), static_cast<int64_t>(n));
  const std::vector<int64_t> offsets = packed_offsets(counts);
  all_to_all_v_raw(send, counts, offsets, recv, counts, offsets, t);
}

std::unique_ptr<Communicator> Communicator::split(int, int) {
  fail("the ", name(), " communicator cannot be split into groups");
}

void Communicator::set_timeout(double seconds) {
  if (!(seconds > 0) || !std::isfinite(seconds)) fail("communicator timeout must be positive, got ", seconds);
  timeout_s_ = seconds;
}

std::vector<int64_t> Communicator::packed_offsets(const std::vector<int64_t>& counts) {
  std::vector<int64_t> off(counts.size());
  int64_t acc = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    off[i] = acc;
    acc += counts[i];
  }
  return off;
}

std::vector<int64_t> Communicator::exchange_counts(const std::vector<int64_t>& send_counts) {
  if (int(send_counts.size()) != size())
    fail("all_to_all_v: ", send_counts.size(), " send counts for ", size(), " ranks (rank ", rank(), ")");
  for (int64_t c : send_counts)
    if (c < 0) fail("all_to_all_v: negative send count ", c, " (rank ", rank(), ")");
  std::vector<int64_t> recv(static_cast<size_t>(size()));
  exchange_counts_raw(send_counts.data(), recv.data());
  return recv;
}

void Communicator::check_a2a_args(const std::vector<int64_t>& sc, const std::vector<int64_t>& so,
                                  const std::vector<int64_t>& rc, const std::vector<int64_t>& ro) const {
  const size_t p = size_t(size());
  if (sc.size() != p || so.size() != p || rc.size() != p || ro.size() != p)
    fail("all_to_all_v: counts/offsets need ", p, " entries each, got ", sc.size(), "/", so.size(), "/", rc.size(),
         "/", ro.size(), " (rank ", rank(), ")");
  for (size_t i = 0; i < p; ++i)
    if (sc[i] < 0 || so[i] < 0 || rc[i] < 0 || ro[i] < 0)
      fail("all_to_all_v: negative count or offset for peer ", i, " (rank ", rank(), ")");
}

void Communicator::check_root(int root, const char* op) const {
  if (root < 0 || root >= size()) fail(op, ": root ", root, " is not a rank of a ", size(), "-rank communicator");
}

std::unique_ptr<Communicator> make_communicator(const std::string& kind) {
  if (kind == "local") return std::make_unique<LocalComm>();
  if (kind == "mpi") {
    mpi_init();
    return std::make_unique<MpiComm>(MPI_COMM_WORLD);
  }
  if (kind == "nccl") {
    if (!nccl_available())
      fail("communicator 'nccl' is not available: this build has no CUDA/NCCL (choices: local, mpi, auto)");
    mpi_init();
    return make_nccl_communicator(MPI_COMM_WORLD);
  }
  if (kind == "auto") {
    const char* vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"};
    for (const char* v : vars) {
      const char* s = std::getenv(v);
      if (s && std::atoi(s) > 1) return make_communicator("mpi");
    }
    // srun --mpi=pmix sets only the rank (PMIX_RANK); the size is the step's task count.
    const char* tasks = std::getenv("SLURM_STEP_NUM_TASKS");
    if ((std::getenv("PMIX_RANK") || std::getenv("PMI_RANK")) && tasks && std::atoi(tasks) > 1)
      return make_communicator("mpi");
    return std::make_unique<LocalComm>();
  }
  fail("unknown communicator '", kind, "' (choices: local, mpi, nccl, auto)");
}

}  // namespace moesae::comm
