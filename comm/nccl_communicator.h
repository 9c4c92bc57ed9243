// The NCCL backend: the Communicator collectives between GPUs, one rank per device. Built only
// where CMake found CUDA and NCCL (then every target that links sy_comm sees SY_HAVE_NCCL=1).
//
// Setup (make_nccl_communicator, collective over the bootstrap communicator, normally the MPI
// one): every rank checks its device; rank 0 calls ncclGetUniqueId; the id goes to every rank
// through the bootstrap's allgather (with each rank's verdict, so all ranks agree); then
// ncclCommInitRankConfig on the device current at the call (the CUDA backend chooses it by local
// rank), non-blocking, under the bootstrap's deadline; then the ranks agree once more. Any
// failure (no device, NCCL refusing two ranks on one device, a network error) is returned as
// the same error Status on every rank, naming the rank and its reason; nothing crashes.
//
// Buffers: the row data of every call is meant to be DEVICE memory on this communicator's
// device (cudaMalloc; managed memory also works). Every call also accepts HOST memory for any
// of its buffers (the dispatcher exchanges its per-peer counts in host memory): each buffer is
// classified with cudaPointerGetAttributes, and one that is not device memory (pageable or
// pinned host memory) is STAGED through a device scratch buffer the communicator owns (grow-only;
// freed with it): copied in before the operation, and for receive buffers copied back after
// the stream has completed. That holds for alltoall, alltoallv, alltoallv_blocks, allreduce
// (in place too) and allgather; send and receive are classified separately, so mixing host and
// device is fine. alltoallv and alltoallv_blocks stage only the byte range their layouts touch,
// and copy a staged receive range in first, so the gaps between blocks keep the caller's bytes.
// Staging costs a host-device round trip per buffer: fine for counts, slow for rows. A device
// pointer on another device is a bug (SY_CHECK). barrier() uses the scratch buffer.
//
// Stream: each communicator owns one CUDA stream, created with it on its device; every operation
// and staging copy is enqueued on stream(). Work the caller enqueues on stream() before a
// collective is ordered before it, so the MoE layer may run its kernels there. It is a BLOCKING
// stream (cudaStreamCreate): it synchronizes with the legacy default stream, so what the CUDA
// backend enqueues there (kernels of a context without a stream, cudaMemcpy, whose pageable
// host-to-device copies may return before their DMA ends) is ordered before a collective too.
//
// Every call blocks until its part is done (the Communicator contract): the enqueue is
// followed by a loop that polls ncclCommGetAsyncError and cudaStreamQuery (spinning for the first
// 20 ms, then sleeping with a back-off up to 0.5 ms) against the deadline timeout() (taken from
// the bootstrap at construction, i.e. SY_COLLECTIVE_TIMEOUT_S; <= 0 waits forever). Because the
// NCCL communicator is non-blocking, NCCL never blocks the host either (connection setup to a
// dead peer included), so the deadline always fires. On expiry the rank calls ncclCommAbort and
// ends the job with exit 20 (kExitCollectiveTimeout) through the bootstrap's abort (the MPI one:
// MPI_Abort, every rank), printing the MPI backend's message:
//   [switchyard] rank R on HOST: collective timeout: <op> seq N layer L step S exceeded T s (...)
// An asynchronous NCCL error (a peer died, the network broke) ends the job the same way with
// exit 20 and NCCL's own text; a CUDA error while waiting (an illegal address: a bad buffer) or an
// NCCL call refusing its arguments ends it with exit 1 (a bug). ncclCommAbort is guarded by a
// watchdog: if it has not returned within 10 s, the process prints the message and _exit()s
// with the same code.
//
// Counts: NCCL cannot check that a receiver posted what its peer sends (MPI can, per message).
// Zero-count peers and blocks are skipped on both sides, so the counts must agree exactly (the
// dispatcher checks its count exchange first); a receiver expecting more than is sent waits until
// the deadline (exit 20). The self block is a device-to-device copy on stream(), and a self count
// mismatch is a bug (SY_CHECK, as in the other backends).
//
// Lifetime: the bootstrap must outlive this communicator. Destruction is collective (every rank
// destroys its communicator): ncclCommFinalize under the deadline, then ncclCommDestroy
// (ncclCommAbort when the finalize does not finish). One thread uses a communicator at a time; the
// device is made current for each call and the caller's current device restored after.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "runtime/core/status.h"

struct ncclComm;  // nccl.h: typedef struct ncclComm* ncclComm_t

namespace sy {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `bootstrap` (not owned; must outlive the result). Errors as above.
  static StatusOr<std::unique_ptr<NcclCommunicator>> create(Communicator* bootstrap);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "nccl"; }
  // Row buffers may be device memory (host memory is staged, see above).
  bool device_buffers() const override { return true; }
  // Prints "[switchyard] rank r on HOST: <message>" (through the bootstrap), after
  // ncclCommAbort (watchdog-guarded), and ends the job as the bootstrap's abort does (the MPI
  // backend: MPI_Abort on every rank, exit_code).
  [[noreturn]] void abort(int exit_code, const std::string& message) override;

  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }
  // Bytes of the staging scratch buffer now (grows on demand, never shrinks).
  int64_t scratch_bytes() const { return scratch_bytes_; }

 protected:
  void do_alltoall(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                   const CollectiveTag& tag, int64_t seq) override;
  void do_alltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                    void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                    int64_t elem_bytes, const CollectiveTag& tag, int64_t seq) override;
  void do_alltoallv_blocks(const void* send, const BlockLayout& send_layout, void* recv,
                           const BlockLayout& recv_layout, int64_t elem_bytes,
                           const CollectiveTag& tag, int64_t seq) override;
  void do_allreduce(const void* send, void* recv, int64_t count, DType dtype, ReduceOp op,
                    const CollectiveTag& tag, int64_t seq) override;
  void do_allgather(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                    const CollectiveTag& tag, int64_t seq) override;
  void do_barrier(const CollectiveTag& tag, int64_t seq) override;

 private:
  // One buffer argument as the device sees it: the caller's pointer, or (staged) a region of
  // the scratch buffer standing for bytes [lo, hi) of the caller's host buffer.
  struct Buf {
    char* user = nullptr;  // the caller's pointer
    char* dev = nullptr;   // staged: scratch region holding user[lo, hi); else == user
    int64_t lo = 0, hi = 0;
    bool staged = false;
    char* at(int64_t byte_offset) const {
      return staged ? dev + (byte_offset - lo) : user + byte_offset;
    }
  };

  explicit NcclCommunicator(Communicator* bootstrap);
  Status init();  // the collective setup, see the file comment

  bool is_device_memory(const void* p, const CollectiveTag& tag, int64_t seq) const;
  // Classifies send/recv (byte ranges [lo, hi) they are used over; an empty range is never
  // staged), sizes the scratch, and enqueues the copies in: a staged send always, a staged recv
  // when copy_recv_in (to keep the gaps). send == recv (in place) shares one region.
  void stage_in(Buf* send, const void* send_ptr, int64_t send_lo, int64_t send_hi, Buf* recv,
                void* recv_ptr, int64_t recv_lo, int64_t recv_hi, bool copy_recv_in,
                const CollectiveTag& tag, int64_t seq);
  // After wait(): copies a staged recv back to the caller and waits for the copy.
  void stage_out(const Buf& recv, const CollectiveTag& tag, int64_t seq);
  void ensure_scratch(int64_t bytes);

  // Waits for everything enqueued (NCCL enqueue state, then the stream) under the deadline.
  void wait(const CollectiveTag& tag, int64_t seq);
  // An NCCL call's return: ncclSuccess and ncclInProgress (non-blocking) pass, anything else
  // ends the job naming the call.
  void check_nccl(int result, const char* call, const CollectiveTag& tag, int64_t seq);
  void check_cuda(cudaError_t err, const char* call, const CollectiveTag& tag, int64_t seq);
  // Blocked exchange shared by alltoallv (blocks = 1) and alltoallv_blocks.
  void exchange_blocks(const void* send, const BlockLayout& sl, void* recv, const BlockLayout& rl,
                       int64_t elem_bytes, const CollectiveTag& tag, int64_t seq);
  // ncclCommAbort under the watchdog (prints `message` and _exit(exit_code) if it hangs).
  void abort_nccl(int exit_code, const std::string& message);

  Communicator* bootstrap_;
  int rank_ = 0;
  int size_ = 1;
  int device_ = -1;
  ncclComm* comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  char* scratch_ = nullptr;
  int64_t scratch_bytes_ = 0;
  bool broken_ = false;  // an NCCL call failed or was aborted: destroy by ncclCommAbort
  std::atomic<bool> aborting_{false};
};

// The factory of the brief: NcclCommunicator::create as a Communicator. Collective over
// bootstrap; an error Status (not a crash) when no CUDA device is visible or NCCL init fails.
StatusOr<std::unique_ptr<Communicator>> make_nccl_communicator(Communicator* bootstrap);

}  // namespace sy
