#include "comm/local_communicator.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace sy {

namespace {
// memmove: in-place calls (send == recv) are allowed.
void copy_bytes(void* dst, const void* src, int64_t bytes) {
  if (bytes > 0 && dst != src) std::memmove(dst, src, static_cast<size_t>(bytes));
}
}  // namespace

void LocalCommunicator::abort(int exit_code, const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "[switchyard] rank 0 on %s: %s\n", host_name().c_str(), message.c_str());
  std::fflush(stderr);
  std::_Exit(exit_code);
}

void LocalCommunicator::do_alltoall(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                                    const CollectiveTag&, int64_t) {
  copy_bytes(recv, send, count * elem_bytes);
}

void LocalCommunicator::do_alltoallv(const void* send, const int64_t* send_counts,
                                     const int64_t* send_displs, void* recv,
                                     const int64_t* recv_counts, const int64_t* recv_displs,
                                     int64_t elem_bytes, const CollectiveTag& tag, int64_t seq) {
  // With one rank both sides are known here, so the mismatch MPI lets through is a bug.
  SY_CHECK_EQ(send_counts[0], recv_counts[0]) << describe(tag, seq) << ": send/recv counts";
  copy_bytes(static_cast<char*>(recv) + recv_displs[0] * elem_bytes,
             static_cast<const char*>(send) + send_displs[0] * elem_bytes,
             send_counts[0] * elem_bytes);
}

void LocalCommunicator::do_alltoallv_blocks(const void* send, const BlockLayout& send_layout,
                                            void* recv, const BlockLayout& recv_layout,
                                            int64_t elem_bytes, const CollectiveTag& tag,
                                            int64_t seq) {
  for (int64_t b = 0; b < send_layout.blocks; ++b) {
    const int64_t n = send_layout.counts[b];
    SY_CHECK_EQ(n, recv_layout.counts[b])
        << describe(tag, seq) << ": send/recv counts, block " << b;
    copy_bytes(static_cast<char*>(recv) + recv_layout.displs[b] * elem_bytes,
               static_cast<const char*>(send) + send_layout.displs[b] * elem_bytes, n * elem_bytes);
  }
}

void LocalCommunicator::do_allreduce(const void* send, void* recv, int64_t count, DType dtype,
                                     ReduceOp, const CollectiveTag&, int64_t) {
  copy_bytes(recv, send, count * dtype_bytes(dtype));
}

void LocalCommunicator::do_allgather(const void* send, void* recv, int64_t count,
                                     int64_t elem_bytes, const CollectiveTag&, int64_t) {
  copy_bytes(recv, send, count * elem_bytes);
}

namespace {
StatusOr<std::unique_ptr<Communicator>> MakeLocalCommunicator() {
  return std::unique_ptr<Communicator>(new LocalCommunicator());
}
}  // namespace

SY_REGISTER_COMMUNICATOR(local, "local", MakeLocalCommunicator);

}  // namespace sy
