// The communicator interface: the collectives the expert-parallel MoE layer needs, behind one
// small class so the MPI backend, the single-process backend (and later NCCL) are
// interchangeable, and tests can check every backend against the single-process reference.
//
// Every call here is COLLECTIVE over the communicator's group: every rank must call it, in the
// same order, with matching arguments (the same count, element size, op and dtype), or the job
// hangs until the deadline. Every call BLOCKS until this rank's part is complete: on return the
// receive buffer holds the result and the send buffer may be reused. The CALLER OWNS ALL
// BUFFERS: the communicator never keeps a pointer past the call, and every buffer must stay
// valid (and, for receive buffers, untouched by other threads) until the call returns. Send
// and receive buffers must not be the same, except for allreduce (send == recv: in place).
//
// Each collective takes a CollectiveTag naming the operation, the MoE layer and the step, and
// the communicator numbers its collectives (seq, starting at 0, the same on every rank), so a
// timeout or a bad argument is reported as "<op> seq N layer L step S" on the rank that saw it.
//
// Errors: argument errors that come from data (alltoallv counts that do not fit MPI's `int`,
// or that run past a buffer) are returned as a Status before anything is sent; the peers are
// not told, so the caller must end the job (abort()) or agree on the decision first (allreduce
// of an error flag). Argument errors that are bugs (negative fixed counts) are SY_CHECK
// failures. A collective that does not finish before the deadline ends the whole job with exit
// code 20 (kExitCollectiveTimeout); see mpi_communicator.h.
//
// Legend: P ranks (size()), r this rank.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "runtime/core/dtype.h"
#include "runtime/core/status.h"

namespace sy {

// Names one collective in messages. `op` must be a string literal (or outlive the call).
struct CollectiveTag {
  const char* op = "collective";
  int layer = -1;     // MoE layer, -1 when not inside a layer
  int64_t step = -1;  // training/inference step, -1 when not known
};

enum class ReduceOp { kSum, kMin, kMax };

const char* reduce_op_name(ReduceOp op);

template <typename T>
struct DTypeOf;  // the reducible element types: int32_t, int64_t, float, double
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::kInt32;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::kInt64;
};
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kFloat32;
};
template <>
struct DTypeOf<double> {
  static constexpr DType value = DType::kFloat64;
};

// One side of an alltoallv: for peer p, counts[p] elements starting at element displs[p] of a
// buffer that holds `capacity` elements. counts and displs have size() entries. Counts and
// displacements are in elements (of elem_bytes each, e.g. one row of D floats), not bytes, so
// rows of a wide hidden size still fit MPI's `int` counts.
struct VLayout {
  const int64_t* counts = nullptr;  // [P]
  const int64_t* displs = nullptr;  // [P]
  int64_t capacity = 0;             // elements in the buffer
};

// One side of a blocked alltoallv: the data for each peer is split into `blocks` blocks; block
// b for peer p is counts[p * blocks + b] elements starting at element displs[p * blocks + b]
// of a buffer of `capacity` elements. Both sides of a call use the same `blocks`.
struct BlockLayout {
  int64_t blocks = 1;
  const int64_t* counts = nullptr;  // [P, blocks]
  const int64_t* displs = nullptr;  // [P, blocks]
  int64_t capacity = 0;             // elements in the buffer
};

class Communicator {
 public:
  Communicator() = default;
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;  // "mpi", "local", "nccl"
  // true: the row buffers of the collectives may be device memory (NCCL); false: host memory
  // only (MPI here is not CUDA-aware), so a layer whose tensors live on a device cannot use it
  // across ranks (MoeLayer::create refuses the pair).
  virtual bool device_buffers() const { return false; }
  // true: the ranks are on more than one host (MPI: not all in one shared-memory node), where
  // the MoE layer overlaps its exchange by default (runtime/moe/moe_layer.h).
  virtual bool spans_hosts() const { return false; }
  // Collectives started so far; the seq of the next one. Equal on every rank.
  int64_t seq() const { return seq_; }
  // Seconds this rank has spent inside collectives so far (steady clock), waiting for its peers
  // included. A step's wall time less this is the rank's own work: what a straggler has more of
  // (its peers wait for it inside their collectives), docs/RELIABILITY.md A5.
  double collective_seconds() const { return collective_s_; }

  // Deadline for every collective, in seconds; <= 0 waits forever. Backends that cannot block
  // (local) ignore it. The MPI backend starts from SY_COLLECTIVE_TIMEOUT_S (default 600).
  void set_timeout(double seconds) { timeout_s_ = seconds; }
  double timeout() const { return timeout_s_; }

  // ---- byte-level calls (the typed wrappers below are what most code uses) ----

  // Collective, blocking. send: [P * count * elem_bytes] bytes, block p goes to rank p.
  // recv: [P * count * elem_bytes] bytes, block p came from rank p. count is per peer.
  void alltoall_bytes(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                      const CollectiveTag& tag);

  // Collective, blocking. Sends send.counts[p] elements at send.displs[p] to rank p, and
  // receives recv.counts[p] elements from rank p at recv.displs[p]. The receive counts must
  // equal what each peer sends: MPI does not check a receiver that expects more than it gets
  // (the rest is left unwritten), so exchange counts first with alltoall. Elements of recv
  // outside every [displs[p], displs[p] + counts[p]) are left untouched. Returns
  // InvalidArgument (before any communication) when a count or displacement is negative, does
  // not fit an `int`, or runs past the capacity.
  Status alltoallv_bytes(const void* send, const VLayout& send_layout, void* recv,
                         const VLayout& recv_layout, int64_t elem_bytes, const CollectiveTag& tag);

  // Collective, blocking. alltoallv with every peer's data in `blocks` separate places on both
  // sides: block b that rank q sends to rank p (send.counts[p * blocks + b] elements at
  // send.displs[p * blocks + b] on q) lands in block b for peer q on p (recv.counts[q * blocks +
  // b] elements at recv.displs[q * blocks + b]). It lets a caller scatter rows straight into
  // their final order (the MoE dispatcher: expert-major) instead of receiving one block per
  // peer and permuting: no staging copy, one round. The receive counts must equal what each
  // peer sends (exchange counts first, as for alltoallv); a mismatch the backend can see ends
  // the job with exit 22 (kExitBadInput), never a silent garbage block. Same argument checks as
  // alltoallv, plus 1 <= blocks <= kMaxBlocks. A rank with nothing to receive may return
  // before its peers have entered the call (the MPI backend uses point-to-point messages).
  Status alltoallv_blocks_bytes(const void* send, const BlockLayout& send_layout, void* recv,
                                const BlockLayout& recv_layout, int64_t elem_bytes,
                                const CollectiveTag& tag);
  static constexpr int64_t kMaxBlocks = 1024;

  // Collective, NON-BLOCKING: alltoallv_blocks_bytes in two halves, so a caller can compute
  // while rows move (the MoE layer's overlap, runtime/moe/moe_layer.h). start_ checks the
  // arguments as alltoallv_blocks_bytes does (same errors, before anything is sent), posts
  // every message and returns; finish_ waits for them under the deadline, with the same checks
  // on arrival (a count mismatch ends the job with exit 22), and ends *x. The exchange takes
  // its seq at start_, so every rank must START its exchanges in the same order; several may be
  // in flight and finish_ may take them in any order. From start_ until finish_ returns, the
  // send buffer must not change and the receive buffer must not be read (the layouts' count
  // arrays are read only inside start_). MPI moves messages only inside MPI calls: call
  // progress() now and then while computing. Backends without a non-blocking path (local,
  // NCCL) do the whole exchange inside start_; their finish_ only ends *x.
  struct Pending {
    CollectiveTag tag;
    int64_t seq = -1;  // -1: not started, or finished
    int slot = -1;     // the backend's handle; -1: nothing left to wait for
    bool started() const { return seq >= 0; }
  };
  Status start_alltoallv_blocks_bytes(const void* send, const BlockLayout& send_layout, void* recv,
                                      const BlockLayout& recv_layout, int64_t elem_bytes,
                                      const CollectiveTag& tag, Pending* x);
  void finish_alltoallv_blocks(Pending* x);
  // NOT collective, never blocks: whether every message of x has arrived (finish_ will not
  // wait). The backends without a non-blocking path: always true.
  bool test_alltoallv_blocks(Pending* x);
  // NOT collective, never blocks: moves this rank's started exchanges along (MPI_Testall).
  virtual void progress() {}

  // Collective, blocking. Element-wise reduction of `count` elements over all ranks; every
  // rank gets the result in recv. send == recv means in place. Sums of floating point are in
  // the backend's order (not bitwise reproducible across backends beyond P = 1).
  void allreduce(const void* send, void* recv, int64_t count, DType dtype, ReduceOp op,
                 const CollectiveTag& tag);

  // Collective, blocking. send: [count * elem_bytes]; recv: [P * count * elem_bytes], block p
  // from rank p (this rank's block included).
  void allgather_bytes(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                       const CollectiveTag& tag);

  // Collective, blocking: returns once every rank has entered it.
  void barrier(const CollectiveTag& tag);

  // NOT collective, never returns: prints "[switchyard] rank r on HOST: <message>" to stderr
  // and ends the whole job (every rank) with exit_code. Use it when one rank finds an error
  // its peers cannot know about.
  [[noreturn]] virtual void abort(int exit_code, const std::string& message) = 0;

  // ---- typed wrappers; T is any trivially copyable type ----

  template <typename T>
  void alltoall(const T* send, T* recv, int64_t count, const CollectiveTag& tag) {
    static_assert(std::is_trivially_copyable<T>::value, "alltoall copies bytes");
    alltoall_bytes(send, recv, count, sizeof(T), tag);
  }
  // Counts and displacements are in rows of row_width T's (row_width 1 = single elements).
  template <typename T>
  Status alltoallv(const T* send, const VLayout& send_layout, T* recv, const VLayout& recv_layout,
                   int64_t row_width, const CollectiveTag& tag) {
    static_assert(std::is_trivially_copyable<T>::value, "alltoallv copies bytes");
    return alltoallv_bytes(send, send_layout, recv, recv_layout,
                           row_width * static_cast<int64_t>(sizeof(T)), tag);
  }
  template <typename T>
  Status alltoallv_blocks(const T* send, const BlockLayout& send_layout, T* recv,
                          const BlockLayout& recv_layout, int64_t row_width,
                          const CollectiveTag& tag) {
    static_assert(std::is_trivially_copyable<T>::value, "alltoallv_blocks copies bytes");
    return alltoallv_blocks_bytes(send, send_layout, recv, recv_layout,
                                  row_width * static_cast<int64_t>(sizeof(T)), tag);
  }
  template <typename T>
  void allreduce(const T* send, T* recv, int64_t count, ReduceOp op, const CollectiveTag& tag) {
    allreduce(send, recv, count, DTypeOf<T>::value, op, tag);
  }
  template <typename T>
  void allreduce(T* buf, int64_t count, ReduceOp op, const CollectiveTag& tag) {
    allreduce(buf, buf, count, DTypeOf<T>::value, op, tag);
  }
  template <typename T>
  void allgather(const T* send, T* recv, int64_t count, const CollectiveTag& tag) {
    static_assert(std::is_trivially_copyable<T>::value, "allgather copies bytes");
    allgather_bytes(send, recv, count, sizeof(T), tag);
  }

  // "<op> seq N layer L step S", for messages.
  static std::string describe(const CollectiveTag& tag, int64_t seq);

 protected:
  // Backends implement these; arguments are already validated, and seq is this call's number.
  // Counts, displacements and element sizes here fit an `int`.
  virtual void do_alltoall(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                           const CollectiveTag& tag, int64_t seq) = 0;
  virtual void do_alltoallv(const void* send, const int64_t* send_counts,
                            const int64_t* send_displs, void* recv, const int64_t* recv_counts,
                            const int64_t* recv_displs, int64_t elem_bytes,
                            const CollectiveTag& tag, int64_t seq) = 0;
  // Layouts as in alltoallv_blocks_bytes, already checked.
  virtual void do_alltoallv_blocks(const void* send, const BlockLayout& send_layout, void* recv,
                                   const BlockLayout& recv_layout, int64_t elem_bytes,
                                   const CollectiveTag& tag, int64_t seq) = 0;
  // The two halves of start_/finish_alltoallv_blocks (layouts already checked). start returns
  // the slot finish gets, or -1 when the exchange is complete already. The default does the
  // blocking exchange at start.
  virtual int do_start_alltoallv_blocks(const void* send, const BlockLayout& send_layout,
                                        void* recv, const BlockLayout& recv_layout,
                                        int64_t elem_bytes, const CollectiveTag& tag, int64_t seq) {
    do_alltoallv_blocks(send, send_layout, recv, recv_layout, elem_bytes, tag, seq);
    return -1;
  }
  virtual void do_finish_alltoallv_blocks(int slot, const CollectiveTag& tag, int64_t seq) {}
  virtual bool do_test_alltoallv_blocks(int slot) { return true; }
  virtual void do_allreduce(const void* send, void* recv, int64_t count, DType dtype, ReduceOp op,
                            const CollectiveTag& tag, int64_t seq) = 0;
  virtual void do_allgather(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                            const CollectiveTag& tag, int64_t seq) = 0;
  virtual void do_barrier(const CollectiveTag& tag, int64_t seq) = 0;

 private:
  // Adds the time from its construction to its destruction to collective_s_.
  class Clock {
   public:
    explicit Clock(double* total) : total_(total), t0_(std::chrono::steady_clock::now()) {}
    ~Clock() {
      *total_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    }

   private:
    double* total_;
    std::chrono::steady_clock::time_point t0_;
  };

  // The checks of alltoallv_blocks_bytes, for call seq.
  Status check_blocks(const void* send, const BlockLayout& sl, const void* recv,
                      const BlockLayout& rl, int64_t elem_bytes, const CollectiveTag& tag,
                      int64_t seq) const;

  int64_t seq_ = 0;
  double timeout_s_ = 600.0;
  double collective_s_ = 0;
};

// Parses a SY_COLLECTIVE_TIMEOUT_S value: seconds, a non-negative number (0 = no deadline).
// nullptr or "" gives the default, 600.
StatusOr<double> parse_collective_timeout(const char* value);

// Parses a SY_EXCHANGE_MERGE_BYTES value: a non-negative whole number of bytes; a peer's blocks
// of one alltoallv_blocks that together are at most this many go as one message (MPI backend),
// 0 = one message per block. nullptr or "" gives the default, kDefaultExchangeMergeBytes.
constexpr int64_t kDefaultExchangeMergeBytes = int64_t{256} << 20;
StatusOr<int64_t> parse_exchange_merge_bytes(const char* value);

// Communicators by name ("mpi", "local"; a NCCL one is a file in comm/ plus one line). Each
// implementation registers a factory from its own file:
//   SY_REGISTER_COMMUNICATOR(mpi, "mpi", MakeMpiCommunicator);
// A factory may require process-wide setup first (MpiRuntime for "mpi"); it returns an error
// when that is missing. make_communicator() of an unknown name: kInvalidArgument naming the
// known ones.
using CommunicatorFactory = StatusOr<std::unique_ptr<Communicator>> (*)();
bool register_communicator(const char* name, CommunicatorFactory make);  // fatal on a duplicate
std::vector<std::string> communicator_names();                           // sorted
StatusOr<std::unique_ptr<Communicator>> make_communicator(const std::string& name);

#define SY_REGISTER_COMMUNICATOR(ident, name, factory) \
  static const bool sy_communicator_registered_##ident = ::sy::register_communicator(name, factory)

}  // namespace sy
