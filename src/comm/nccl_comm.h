// moesae comm: NcclComm, the NCCL communicator on device buffers (built only when MOESAE_HAVE_CUDA and nccl.h is
// found). UNTESTED: this machine has no GPU, so the code compiles and links but has never run a collective. Without
// a GPU, constructing it fails with a clear error on every rank.
//
// - Bootstrap over MPI: local rank from MPI_Comm_split_type(SHARED), cudaSetDevice(local rank % visible devices),
//   as the CUDA backend picks its device (two ranks of a node on one GPU, by PCI bus id, are refused: NCCL needs one
//   GPU per rank), rank 0's ncclGetUniqueId broadcast over MPI, then a non-blocking ncclCommInitRankConfig polled to
//   completion.
// - Buffers: the collectives run on the communicator's own non-blocking stream, which does not wait for other
//   streams: the caller's device buffers must be complete (e.g. Backend::synchronize) before a call.
// - all-to-all-v: counts exchanged over MPI on the host (they are host vectors anyway), then the payload as grouped
//   ncclSend/ncclRecv inside ncclGroupStart/ncclGroupEnd (NCCL has no all-to-all-v); zero counts are skipped on
//   both sides. all-to-all with equal counts: ncclAlltoAll where the loaded library has it (NCCL >= 2.28.3), else the
//   same grouped send/recv.
// - Failures: every operation runs on the communicator's own stream and is waited for by polling cudaStreamQuery
//   and ncclCommGetAsyncError (the nccl-tests watchdog); an async error calls ncclCommAbort and throws, a timeout
//   (MOESAE_COMM_TIMEOUT) calls ncclCommAbort and aborts the job with the timeout message. Never blocks in
//   cudaStreamSynchronize.
// - Sums follow NCCL's reduction order (the same on all ranks, not rank order).
#pragma once
#include <memory>

#include "comm/communicator.h"
#include "comm/mpi_header.h"

namespace moesae::comm {

// true when this build contains the NCCL communicator.
bool nccl_available();

// An NCCL communicator over the ranks of `world` (MPI must be initialised). Error when !nccl_available() or when a
// rank has no usable GPU (all ranks fail together).
std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm world);

}  // namespace moesae::comm
