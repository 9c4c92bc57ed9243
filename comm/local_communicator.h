// The single-process backend (P = 1): what a 1-rank run uses without MPI, and the reference
// the MPI backend is tested against. A real implementation, not a mock: alltoall and allgather
// copy the one block, alltoallv copies counts[0] elements from send.displs[0] to
// recv.displs[0] (honouring both, and checking that the counts agree, which MPI cannot),
// alltoallv_blocks does the same block by block, allreduce copies (the reduction of one value
// is itself), barrier returns.
//
// Nothing here can wait on a peer, so the deadline does not apply.
#pragma once

#include "comm/communicator.h"

namespace sy {

class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator() = default;

  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char* backend() const override { return "local"; }
  // Prints the message and exits with exit_code (no destructors run: the state is suspect).
  [[noreturn]] void abort(int exit_code, const std::string& message) override;

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
  void do_barrier(const CollectiveTag& tag, int64_t seq) override {}
};

}  // namespace sy
