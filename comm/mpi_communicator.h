// The MPI backend, and the process-wide MPI setup (MpiRuntime).
//
// Deadlines: every collective is started non-blocking (MPI_Ialltoall, MPI_Ialltoallv,
// MPI_Iallreduce, MPI_Iallgather, MPI_Ibarrier; alltoallv_blocks as MPI_Irecv/MPI_Isend) and
// completed by an MPI_Test loop that polls for the first 20 ms (as a blocking MPI call does;
// sleeping earlier stalls large transfers), then sleeps with a growing back-off (at most
// 0.5 ms, so a hung peer does not steal a core on a small machine). When timeout() seconds
// pass (SY_COLLECTIVE_TIMEOUT_S, default 600; 0 = no deadline), the rank prints
//   [switchyard] rank R on HOST: collective timeout: <op> seq N layer L step S exceeded T s
// and calls MPI_Abort(MPI_COMM_WORLD, 20): a stuck or dead peer turns into a fast, named
// teardown of the whole job (Open MPI 4.1 has no fault-tolerant MPI to survive a lost rank).
// Every MPI_Abort here is guarded by a watchdog: if it has not ended the process within 3 s
// (it can hang across hosts when a link is cut), the process _exit()s with the same code.
//
// Failures: MpiRuntime installs (1) an abort hook so every failed SY_CHECK / SY_MPI_CHECK
// ends every rank through MPI_Abort with the check's exit code, (2) a std::terminate handler
// that prints the rank, the exception's what() and the last collective, then aborts the job
// with exit code 1 (never a silent hang), and (3) MPI_ERRORS_RETURN on MPI_COMM_WORLD, so MPI
// errors reach SY_MPI_CHECK with MPI's error text.
#pragma once

#include <mpi.h>

#include <map>
#include <vector>

#include "comm/communicator.h"

namespace sy {

// Owns MPI for the process: MPI_Init_thread (MPI_THREAD_FUNNELED: only the main thread calls
// MPI; BLAS threads never do) in the constructor, MPI_Finalize in the destructor. Create one,
// first thing in main(), before any MpiCommunicator; destroy it after all of them. It also
// sets sy::set_log_rank, installs the failure handlers above, and reads SY_FAULT (so a
// malformed value fails every rank at start-up).
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }

 private:
  bool owns_mpi_ = false;  // false when MPI was already initialized by someone else
  int world_rank_ = 0;
  int world_size_ = 1;
};

// Installs the abort hook and the terminate handler (MpiRuntime does this; exposed for
// programs that initialize MPI themselves).
void install_mpi_failure_handlers();

class MpiCommunicator final : public Communicator {
 public:
  // Collective over `comm`: duplicates it, so switchyard's messages never match anyone
  // else's. The deadline starts from SY_COLLECTIVE_TIMEOUT_S; a malformed value ends the job
  // with exit code 21.
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }
  // Prints the message, then MPI_Abort(MPI_COMM_WORLD, exit_code): every rank ends.
  [[noreturn]] void abort(int exit_code, const std::string& message) override;

  MPI_Comm comm() const { return comm_; }
  bool spans_hosts() const override { return spans_hosts_; }
  // alltoallv_blocks sends a peer's blocks as one message when together they are at most this
  // many bytes (0: one message per block). Starts from SY_EXCHANGE_MERGE_BYTES. Every rank must
  // use the same value (sender and receiver decide alike).
  void set_merge_bytes(int64_t bytes) { merge_bytes_ = bytes; }
  int64_t merge_bytes() const { return merge_bytes_; }
  // Sums of float / double from this many bytes on run as a reduce-scatter + allgather of
  // point-to-point messages, each rank summing its 1/P of the values in rank order (the same
  // bits on every rank; for P = 2 the bits MPI gives too: a + b = b + a). Open MPI 4.1's own
  // (I)allreduce ran at ~0.35 GB/s on 32-128 MiB here (4 MiB: ~2.5 GB/s), which made the
  // gradient all-reduce of the default model (~120 MB a step) ~20% of a training step. Every
  // rank must use the same value; 0 = always MPI's.
  void set_p2p_allreduce_bytes(int64_t bytes) { p2p_allreduce_bytes_ = bytes; }
  int64_t p2p_allreduce_bytes() const { return p2p_allreduce_bytes_; }

 protected:
  void do_alltoall(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                   const CollectiveTag& tag, int64_t seq) override;
  void do_alltoallv(const void* send, const int64_t* send_counts, const int64_t* send_displs,
                    void* recv, const int64_t* recv_counts, const int64_t* recv_displs,
                    int64_t elem_bytes, const CollectiveTag& tag, int64_t seq) override;
  // Point-to-point: per peer ONE message when its non-empty blocks together are at most
  // SY_EXCHANGE_MERGE_BYTES (default 256 MiB; an MPI hindexed datatype places each block where
  // it belongs on both sides: no copy), else one message per non-empty block; all posted at
  // once (receives first), the self blocks copied meanwhile, then one wait under the deadline.
  // Each message is checked on arrival: fewer elements than posted, or more (MPI_ERR_TRUNCATE),
  // ends the job with exit 22 naming the pair and the block (or "its blocks merged"). A merged
  // message is checked on the peer's total only: a sender that splits the same total
  // differently between blocks is not seen (the dispatcher checks every count before the rows).
  // Why merge: a message costs ~4.5 us here (rendezvous, single-copy get, fin), ~20% of a
  // 1 MiB exchange with 4 blocks per peer (bench/exchange_bench.cc).
  void do_alltoallv_blocks(const void* send, const BlockLayout& send_layout, void* recv,
                           const BlockLayout& recv_layout, int64_t elem_bytes,
                           const CollectiveTag& tag, int64_t seq) override;
  // The same, in two halves: start posts every message (and copies the self blocks), finish
  // waits under the deadline and checks what arrived. Any number may be in flight (one slot
  // each); progress() tests every one that is.
  int do_start_alltoallv_blocks(const void* send, const BlockLayout& send_layout, void* recv,
                                const BlockLayout& recv_layout, int64_t elem_bytes,
                                const CollectiveTag& tag, int64_t seq) override;
  void do_finish_alltoallv_blocks(int slot, const CollectiveTag& tag, int64_t seq) override;
  bool do_test_alltoallv_blocks(int slot) override { return test_exchange(exchanges_[slot]); }

 public:
  void progress() override;

 protected:
  // MPI_Iallreduce, except sums of float or double of at least p2p_allreduce_bytes() (with a
  // tag range above the blocked exchange's): see allreduce_by_chunks.
  void do_allreduce(const void* send, void* recv, int64_t count, DType dtype, ReduceOp op,
                    const CollectiveTag& tag, int64_t seq) override;
  void do_allgather(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                    const CollectiveTag& tag, int64_t seq) override;
  void do_barrier(const CollectiveTag& tag, int64_t seq) override;

 private:
  // Waits for the n requests at reqs under the deadline.
  void wait(MPI_Request* reqs, const CollectiveTag& tag, int64_t seq, int n = 1);
  // Calls test() (true = done) until it is done or the deadline passes (then exit 20).
  template <typename Test>
  void wait_until(Test&& test, const CollectiveTag& tag, int64_t seq);
  // alltoallv_blocks: receives first (with what each expects), then sends.
  struct PostedRecv {
    int peer;
    int64_t block, count;  // block -1: the peer's blocks merged into one message
    MPI_Datatype type;     // what it was received as
  };
  // One started alltoallv_blocks.
  struct BlockExchange {
    bool in_use = false, done = false;
    CollectiveTag tag;
    int64_t seq = 0, elem_bytes = 1;
    std::vector<MPI_Request> reqs;  // receives (posted[i] describes reqs[i]), then sends
    std::vector<MPI_Status> statuses;
    std::vector<PostedRecv> posted;
    std::vector<MPI_Datatype> merged_types;  // freed by finish
  };
  // MPI_Testall of x's requests (true: all done; then never again); a receive whose message did
  // not fit ends the job (exit 22).
  bool test_exchange(BlockExchange& x);
  // For alltoallv_blocks: a message that did not carry the posted count (exit 22).
  [[noreturn]] void abort_block_mismatch(const BlockExchange& x, size_t i, const char* what);
  // MPI_BYTE, or a committed contiguous type of elem_bytes bytes (cached; freed with *this).
  MPI_Datatype element_type(int64_t elem_bytes);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::map<int64_t, MPI_Datatype> types_;
  // alltoallv's int counts/displacements; MPI reads them until the request completes.
  std::vector<int> send_counts_, send_displs_, recv_counts_, recv_displs_;
  std::vector<BlockExchange> exchanges_;              // slots, reused
  int64_t merge_bytes_ = kDefaultExchangeMergeBytes;  // SY_EXCHANGE_MERGE_BYTES
  // The chunked allreduce: tags kAllreduceTag (reduce-scatter) and + 1 (allgather), above the
  // blocked exchange's 0..32767, used only where MPI_TAG_UB allows them.
  bool allreduce_by_chunks(const void* send, void* recv, int64_t count, DType dtype, ReduceOp op,
                           const CollectiveTag& tag, int64_t seq);
  static constexpr int kAllreduceTag = 40000;
  int tag_ub_ = 32767;
  bool spans_hosts_ = false;
  int64_t p2p_allreduce_bytes_ = int64_t{1} << 18;
  std::vector<float> allreduce_scratch_;  // float or double values, by bytes
  std::vector<const void*> allreduce_srcs_;
  std::vector<int> merge_lens_;
  std::vector<MPI_Aint> merge_displs_;
  std::vector<MPI_Request> reqs_;  // the chunked allreduce's
};

}  // namespace sy
