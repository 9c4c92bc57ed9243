#include "comm/mpi_communicator.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <new>
#include <sstream>
#include <thread>

#include "comm/fault.h"
#include "comm/mpi_check.h"
#include "runtime/core/scratch.h"
#include "runtime/core/timing.h"

// SY_MPI_CHECK that also names the collective.
#define SY_MPI_CHECK_IN(call, tag, seq)  \
  SY_CHECK_LIB(call, rc_ == MPI_SUCCESS, \
               ::sy::mpi_error_text(rc_) + " in " + ::sy::Communicator::describe(tag, seq))

namespace sy {

namespace {

// The collective this process is in (or was last in), for the terminate handler's message.
// One thread calls MPI (MPI_THREAD_FUNNELED), so plain statics are enough.
struct LastCollective {
  bool valid = false;
  CollectiveTag tag;
  int64_t seq = 0;
};
LastCollective g_last;

bool mpi_active() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  return init && !fin;
}

int message_rank(int fallback) {
  return log_rank() >= 0 ? log_rank() : fallback;
}

// How long MPI_Abort may take before the watchdog ends this process itself.
constexpr double kAbortWatchdogS = 3;

// SY_FAULT=abort_hang@rank=r: whether this rank is to block where it would call MPI_Abort, as
// MPI_Abort does towards a cut host, so that only the watchdog can end it
// (tests/launch/multihost_watchdog.sh). SY_FAULT is parsed here rather than through
// active_faults(): a malformed SY_FAULT ends the process through abort_world while
// active_faults() is still being initialised.
bool abort_hangs() {
  const char* env = std::getenv("SY_FAULT");
  if (!env || !*env) return false;
  try {
    auto faults = parse_faults(env);
    if (!faults.ok()) return false;
    for (const FaultSpec& f : faults.value())
      if (f.kind == FaultKind::kAbortHang && f.rank == log_rank()) return true;
  } catch (...) {  // out of memory while aborting: abort as usual
  }
  return false;
}

// MPI_Abort(MPI_COMM_WORLD, exit_code), which cannot hang. Across hosts MPI_Abort itself can
// hang: when the link to a host is cut, the abort's messages to that host's daemon are never
// acknowledged and the job ended only at mpirun's --timeout (measured on namespace hosts: 269 s
// after the cut, with an in-app deadline of 3 s). So a detached thread first arms a watchdog that
// _exit()s with the same code if MPI_Abort has not ended the process within kAbortWatchdogS; mpirun
// sees the exit and tears the rest of the job down (a cut host's daemon is dropped by the oob
// keepalive).
[[noreturn]] void abort_world(int exit_code) {
  try {
    std::thread([exit_code] {
      std::this_thread::sleep_for(std::chrono::duration<double>(kAbortWatchdogS));
      std::fprintf(stderr,
                   "[switchyard] rank %d on %s: MPI_Abort did not end the job within %g s; "
                   "exiting with code %d\n",
                   log_rank(), host_name().c_str(), kAbortWatchdogS, exit_code);
      std::fflush(stderr);
      std::_Exit(exit_code);
    }).detach();
  } catch (...) {  // no thread: MPI_Abort unguarded is still better than no abort
  }
  if (abort_hangs()) {
    std::fprintf(stderr,
                 "[switchyard] rank %d on %s: injected fault abort_hang: blocking instead "
                 "of calling MPI_Abort\n",
                 log_rank(), host_name().c_str());
    std::fflush(stderr);
    for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

void mpi_abort_hook(int exit_code) {
  if (mpi_active()) abort_world(exit_code);
  std::_Exit(exit_code);
}

// The last resort for an exception nothing caught: its class decides the exit code, so an
// allocation failure or a file-system error is not reported as a bug.
void on_terminate() {
  std::string what = "std::terminate called without an active exception";
  int code = kExitBug;
  if (std::exception_ptr e = std::current_exception()) {
    try {
      std::rethrow_exception(e);
    } catch (const std::bad_alloc& ex) {
      what = std::string("out of memory: an allocation failed (") + ex.what() + ")";
      code = kExitOutOfMemory;
    } catch (const std::filesystem::filesystem_error& ex) {
      what = std::string("file system error: ") + ex.what();
      code = kExitBadInput;
    } catch (const std::exception& ex) {
      what = std::string("uncaught exception: ") + ex.what();
    } catch (...) {
      what = "uncaught exception of a non-std type";
    }
  }
  std::string last = g_last.valid ? Communicator::describe(g_last.tag, g_last.seq) : "none";
  std::fprintf(stderr, "[switchyard] rank %d on %s: %s (last collective: %s)\n", log_rank(),
               host_name().c_str(), what.c_str(), last.c_str());
  fatal_abort(code);
}

MPI_Datatype mpi_dtype(DType t) {
  switch (t) {
    case DType::kInt32:
      return MPI_INT32_T;
    case DType::kInt64:
      return MPI_INT64_T;
    case DType::kFloat32:
      return MPI_FLOAT;
    case DType::kFloat64:
      return MPI_DOUBLE;
  }
  SY_CHECK(false) << "unknown dtype";
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return MPI_SUM;
    case ReduceOp::kMin:
      return MPI_MIN;
    case ReduceOp::kMax:
      return MPI_MAX;
  }
  SY_CHECK(false) << "unknown reduce op";
  return MPI_OP_NULL;
}

}  // namespace

void install_mpi_failure_handlers() {
  set_abort_hook(&mpi_abort_hook);
  std::set_terminate(&on_terminate);
}

MpiRuntime::MpiRuntime(int* argc, char*** argv) {
  int init = 0;
  MPI_Initialized(&init);
  if (!init) {
    int provided = 0;
    // Errors before MPI is up cannot use the abort hook; MPI_Init_thread aborts by itself.
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    owns_mpi_ = true;
    install_mpi_failure_handlers();
    SY_CHECK_GE(provided, MPI_THREAD_FUNNELED) << "MPI does not provide MPI_THREAD_FUNNELED";
  } else {
    install_mpi_failure_handlers();
  }
  SY_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  SY_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank_));
  SY_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size_));
  set_log_rank(world_rank_);
  (void)active_faults();  // a malformed SY_FAULT fails here, on every rank
}

MpiRuntime::~MpiRuntime() {
  if (owns_mpi_ && mpi_active()) MPI_Finalize();
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm) {
  SY_CHECK(mpi_active()) << "create an MpiRuntime before any MpiCommunicator";
  SY_MPI_CHECK(MPI_Comm_dup(comm, &comm_));
  SY_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  SY_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  SY_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  auto t = parse_collective_timeout(std::getenv("SY_COLLECTIVE_TIMEOUT_S"));
  if (!t.ok()) abort(kExitConfig, t.status().message());
  set_timeout(t.value());
  auto m = parse_exchange_merge_bytes(std::getenv("SY_EXCHANGE_MERGE_BYTES"));
  if (!m.ok()) abort(kExitConfig, m.status().message());
  merge_bytes_ = m.value();
  int* ub = nullptr;
  int has_ub = 0;
  SY_MPI_CHECK(MPI_Comm_get_attr(comm_, MPI_TAG_UB, &ub, &has_ub));
  tag_ub_ = has_ub && ub ? *ub : 32767;
  // Hosts as MPI sees them (one per node daemon: namespace hosts count as hosts).
  MPI_Comm node = MPI_COMM_NULL;
  SY_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
  int node_size = 0;
  SY_MPI_CHECK(MPI_Comm_size(node, &node_size));
  SY_MPI_CHECK(MPI_Comm_free(&node));
  int one_host = node_size == size_;
  SY_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &one_host, 1, MPI_INT, MPI_MIN, comm_));
  spans_hosts_ = one_host == 0;
  send_counts_.resize(size_);
  send_displs_.resize(size_);
  recv_counts_.resize(size_);
  recv_displs_.resize(size_);
}

MpiCommunicator::~MpiCommunicator() {
  if (!mpi_active()) return;  // MPI_Finalize already released everything
  for (auto& kv : types_) {
    if (kv.second != MPI_BYTE) MPI_Type_free(&kv.second);
  }
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

void MpiCommunicator::abort(int exit_code, const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "[switchyard] rank %d on %s: %s\n", message_rank(rank_), host_name().c_str(),
               message.c_str());
  std::fflush(stderr);
  abort_world(exit_code);
}

MPI_Datatype MpiCommunicator::element_type(int64_t elem_bytes) {
  if (elem_bytes == 1) return MPI_BYTE;
  auto it = types_.find(elem_bytes);
  if (it != types_.end()) return it->second;
  MPI_Datatype t;
  SY_MPI_CHECK(MPI_Type_contiguous(static_cast<int>(elem_bytes), MPI_BYTE, &t));
  SY_MPI_CHECK(MPI_Type_commit(&t));
  types_[elem_bytes] = t;
  return t;
}

template <typename Test>
void MpiCommunicator::wait_until(Test&& test, const CollectiveTag& tag, int64_t seq) {
  const double limit_s = timeout();
  const SteadyClock::time_point start = SteadyClock::now();
  // Poll for the first kSpinS seconds, as MPI's own blocking wait does, then sleep with a
  // doubling back-off so a long wait (a straggler, a hung peer) costs little CPU. Why poll by
  // time and not yield: a non-blocking collective advances only inside MPI_Test, and a large
  // alltoallv needs several protocol round trips (rendezvous, single-copy get, fin) on both
  // sides; a peer asleep in the back-off, or one that yielded its core to another process,
  // stalls each of them (bench/exchange_bench.cc measured 1-4 MiB exchanges 5-20x slower than
  // MPI_Alltoallv with a short yield loop). MPI_Test yields by itself when Open MPI sees the
  // node oversubscribed (mpi_yield_when_idle), like MPI_Alltoallv.
  constexpr double kSpinS = 0.02;
  constexpr int64_t kMaxSleepUs = 500;
  int64_t sleep_us = 8;
  for (;;) {
    if (test()) return;
    const double waited_s = seconds_since(start);
    if (waited_s < kSpinS) continue;
    if (limit_s > 0 && waited_s > limit_s) {
      std::fprintf(stderr,
                   "[switchyard] rank %d on %s: collective timeout: %s exceeded %g s (a peer "
                   "is stuck or dead; SY_COLLECTIVE_TIMEOUT_S sets the deadline)\n",
                   message_rank(rank_), host_name().c_str(), describe(tag, seq).c_str(), limit_s);
      std::fflush(stderr);
      abort_world(kExitCollectiveTimeout);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    if (sleep_us < kMaxSleepUs) sleep_us *= 2;
  }
}

void MpiCommunicator::wait(MPI_Request* reqs, const CollectiveTag& tag, int64_t seq, int n) {
  wait_until(
      [&] {
        int done = 0;
        SY_MPI_CHECK_IN(MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE), tag, seq);
        return done != 0;
      },
      tag, seq);
}

void MpiCommunicator::do_alltoall(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                                  const CollectiveTag& tag, int64_t seq) {
  g_last = {true, tag, seq};
  const MPI_Datatype t = element_type(elem_bytes);
  MPI_Request req;
  SY_MPI_CHECK_IN(MPI_Ialltoall(send, static_cast<int>(count), t, recv, static_cast<int>(count), t,
                                comm_, &req),
                  tag, seq);
  wait(&req, tag, seq);
}

void MpiCommunicator::do_alltoallv(const void* send, const int64_t* send_counts,
                                   const int64_t* send_displs, void* recv,
                                   const int64_t* recv_counts, const int64_t* recv_displs,
                                   int64_t elem_bytes, const CollectiveTag& tag, int64_t seq) {
  g_last = {true, tag, seq};
  // Narrowing is safe: Communicator::alltoallv_bytes checked every value fits an int.
  for (int p = 0; p < size_; ++p) {
    send_counts_[p] = static_cast<int>(send_counts[p]);
    send_displs_[p] = static_cast<int>(send_displs[p]);
    recv_counts_[p] = static_cast<int>(recv_counts[p]);
    recv_displs_[p] = static_cast<int>(recv_displs[p]);
  }
  const MPI_Datatype t = element_type(elem_bytes);
  MPI_Request req;
  SY_MPI_CHECK_IN(MPI_Ialltoallv(send, send_counts_.data(), send_displs_.data(), t, recv,
                                 recv_counts_.data(), recv_displs_.data(), t, comm_, &req),
                  tag, seq);
  wait(&req, tag, seq);
}

void MpiCommunicator::abort_block_mismatch(const BlockExchange& x, size_t i, const char* what) {
  const PostedRecv& p = x.posted[i];
  std::ostringstream os;
  os << "alltoallv_blocks count mismatch: rank " << p.peer << " -> rank " << rank_;
  if (p.block < 0) {
    os << " (its blocks merged into one message)";
  } else {
    os << " block " << p.block;
  }
  os << ": expected " << p.count << " elements, " << what << " (" << describe(x.tag, x.seq) << ")";
  abort(kExitBadInput, os.str());
}

void MpiCommunicator::do_alltoallv_blocks(const void* send, const BlockLayout& sl, void* recv,
                                          const BlockLayout& rl, int64_t elem_bytes,
                                          const CollectiveTag& tag, int64_t seq) {
  do_finish_alltoallv_blocks(do_start_alltoallv_blocks(send, sl, recv, rl, elem_bytes, tag, seq),
                             tag, seq);
}

int MpiCommunicator::do_start_alltoallv_blocks(const void* send, const BlockLayout& sl, void* recv,
                                               const BlockLayout& rl, int64_t elem_bytes,
                                               const CollectiveTag& tag, int64_t seq) {
  g_last = {true, tag, seq};
  // A free slot (its vectors keep their capacity from earlier exchanges).
  int slot = 0;
  while (slot < static_cast<int>(exchanges_.size()) && exchanges_[slot].in_use) ++slot;
  if (slot == static_cast<int>(exchanges_.size())) exchanges_.emplace_back();
  BlockExchange& x = exchanges_[slot];
  x.in_use = true;
  x.done = false;
  x.tag = tag;
  x.seq = seq;
  x.elem_bytes = elem_bytes;
  x.reqs.clear();
  x.posted.clear();
  const MPI_Datatype t = element_type(elem_bytes);
  const int64_t B = sl.blocks;
  // MPI tag = block + B * (seq mod a window): a message from another call (a count mismatch, or
  // another exchange in flight) then matches no receive of this one and the deadline reports
  // it, instead of landing as garbage. MPI guarantees tags up to 32767.
  const int64_t window = std::max<int64_t>(1, 32767 / B);
  const int64_t tag0 = (seq % window) * B;
  // Posts what goes to (is_send) or comes from peer p: one message per non-empty block, or, when
  // the peer's blocks together are at most merge_bytes_ and there are several, ONE message whose
  // datatype (hindexed, in the buffer's own byte offsets) lays them out in place: below a few
  // MiB the fixed cost of a message (rendezvous, single-copy get, fin) dominates, not the bytes.
  // Sender and receiver decide from the same total (the counts must match), so they agree; a
  // merged message carries block 0's tag, so a side that disagrees (a count mismatch) sees a
  // wrong size on block 0 (exit 22) or nothing at all (the deadline).
  auto post = [&](bool is_send, int p, const BlockLayout& L, const void* base) {
    int64_t total = 0, nonempty = 0;
    for (int64_t b = 0; b < B; ++b) {
      total += L.counts[p * B + b];
      nonempty += L.counts[p * B + b] > 0;
    }
    if (nonempty == 0) return;
    if (nonempty > 1 && total * elem_bytes <= merge_bytes_) {
      merge_lens_.clear();
      merge_displs_.clear();
      for (int64_t b = 0; b < B; ++b) {
        if (L.counts[p * B + b] == 0) continue;
        merge_lens_.push_back(static_cast<int>(L.counts[p * B + b]));
        merge_displs_.push_back(static_cast<MPI_Aint>(L.displs[p * B + b] * elem_bytes));
      }
      MPI_Datatype dt;
      SY_MPI_CHECK_IN(MPI_Type_create_hindexed(static_cast<int>(merge_lens_.size()),
                                               merge_lens_.data(), merge_displs_.data(), t, &dt),
                      tag, seq);
      SY_MPI_CHECK_IN(MPI_Type_commit(&dt), tag, seq);
      x.merged_types.push_back(dt);
      x.reqs.emplace_back();
      if (is_send) {
        SY_MPI_CHECK_IN(MPI_Isend(base, 1, dt, p, static_cast<int>(tag0), comm_, &x.reqs.back()),
                        tag, seq);
      } else {
        x.posted.push_back({p, -1, total, dt});
        SY_MPI_CHECK_IN(MPI_Irecv(const_cast<void*>(base), 1, dt, p, static_cast<int>(tag0), comm_,
                                  &x.reqs.back()),
                        tag, seq);
      }
      return;
    }
    for (int64_t b = 0; b < B; ++b) {
      const int64_t n = L.counts[p * B + b];
      if (n == 0) continue;
      x.reqs.emplace_back();
      const int64_t at = L.displs[p * B + b] * elem_bytes;
      if (is_send) {
        SY_MPI_CHECK_IN(MPI_Isend(static_cast<const char*>(base) + at, static_cast<int>(n), t, p,
                                  static_cast<int>(tag0 + b), comm_, &x.reqs.back()),
                        tag, seq);
      } else {
        x.posted.push_back({p, b, n, t});
        SY_MPI_CHECK_IN(
            MPI_Irecv(static_cast<char*>(const_cast<void*>(base)) + at, static_cast<int>(n), t, p,
                      static_cast<int>(tag0 + b), comm_, &x.reqs.back()),
            tag, seq);
      }
    }
  };
  for (int p = 0; p < size_; ++p) {
    if (p != rank_) post(false, p, rl, recv);
  }
  for (int p = 0; p < size_; ++p) {
    if (p != rank_) post(true, p, sl, send);
  }
  // The self blocks, while the peers' messages are in flight.
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = sl.counts[rank_ * B + b];
    SY_CHECK_EQ(n, rl.counts[rank_ * B + b]) << describe(tag, seq) << ": self block " << b;
    if (n > 0) {
      std::memcpy(static_cast<char*>(recv) + rl.displs[rank_ * B + b] * elem_bytes,
                  static_cast<const char*>(send) + sl.displs[rank_ * B + b] * elem_bytes,
                  static_cast<size_t>(n * elem_bytes));
    }
  }
  x.statuses.resize(x.reqs.size());
  return slot;
}

bool MpiCommunicator::test_exchange(BlockExchange& x) {
  if (x.done) return true;
  int done = 0;
  const int rc =
      MPI_Testall(static_cast<int>(x.reqs.size()), x.reqs.data(), &done, x.statuses.data());
  if (rc == MPI_ERR_IN_STATUS) {
    for (size_t i = 0; i < x.posted.size(); ++i) {
      const int err = x.statuses[i].MPI_ERROR;
      if (err != MPI_SUCCESS && err != MPI_ERR_PENDING) {
        abort_block_mismatch(x, i, ("MPI: " + mpi_error_text(err)).c_str());
      }
    }
  }
  SY_MPI_CHECK_IN(rc, x.tag, x.seq);
  // Completed requests are MPI_REQUEST_NULL now and their statuses are what finish checks:
  // never test them again.
  x.done = done != 0;
  return x.done;
}

void MpiCommunicator::progress() {
  for (BlockExchange& x : exchanges_) {
    if (x.in_use) test_exchange(x);
  }
}

void MpiCommunicator::do_finish_alltoallv_blocks(int slot, const CollectiveTag& tag, int64_t seq) {
  SY_CHECK(slot >= 0 && slot < static_cast<int>(exchanges_.size()) && exchanges_[slot].in_use &&
           exchanges_[slot].seq == seq)
      << describe(tag, seq) << ": no such exchange in flight";
  BlockExchange& x = exchanges_[slot];
  g_last = {true, tag, seq};
  wait_until([&] { return test_exchange(x); }, tag, seq);
  for (size_t i = 0; i < x.posted.size(); ++i) {
    // Received bytes (MPI's basic elements: t is made of MPI_BYTE), for one block or a merged
    // message alike.
    MPI_Count got = 0;
    SY_MPI_CHECK_IN(MPI_Get_elements_x(&x.statuses[i], x.posted[i].type, &got), tag, seq);
    if (got != x.posted[i].count * x.elem_bytes) {
      abort_block_mismatch(x, i, ("received " + std::to_string(got / x.elem_bytes)).c_str());
    }
  }
  for (MPI_Datatype& dt : x.merged_types) MPI_Type_free(&dt);
  x.merged_types.clear();
  x.in_use = false;
}

namespace {
// out[i] = srcs[0][i] + srcs[1][i] + ... in that order (rank order), for every i. out may be one
// of the sources (in place): each block of values is summed into a local buffer first.
template <typename T>
void sum_in_order(const std::vector<const void*>& srcs, void* out, int64_t n) {
  constexpr int64_t kBlock = 1024;
  T acc[kBlock];
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t m = std::min(kBlock, n - b);
    const T* s0 = static_cast<const T*>(srcs[0]) + b;
    for (int64_t i = 0; i < m; ++i) acc[i] = s0[i];
    for (size_t p = 1; p < srcs.size(); ++p) {
      const T* sp = static_cast<const T*>(srcs[p]) + b;
      for (int64_t i = 0; i < m; ++i) acc[i] += sp[i];
    }
    std::memcpy(static_cast<T*>(out) + b, acc, static_cast<size_t>(m) * sizeof(T));
  }
}
}  // namespace

bool MpiCommunicator::allreduce_by_chunks(const void* send, void* recv, int64_t count, DType dtype,
                                          ReduceOp op, const CollectiveTag& tag, int64_t seq) {
  const int64_t esize = dtype_bytes(dtype);
  if (op != ReduceOp::kSum || size_ < 2 || count * esize < p2p_allreduce_bytes_ ||
      (dtype != DType::kFloat32 && dtype != DType::kFloat64) || tag_ub_ < kAllreduceTag + 1 ||
      count / size_ + 1 > INT_MAX) {
    return false;
  }
  const int P = size_;
  auto first = [&](int p) { return count * p / P; };  // chunk p: [first(p), first(p + 1))
  const int64_t mine = first(rank_ + 1) - first(rank_);
  const char* in = static_cast<const char*>(send);
  char* out = static_cast<char*>(recv);
  const MPI_Datatype t = mpi_dtype(dtype);
  // 1. Reduce-scatter: every peer's copy of my chunk into the scratch, slot by peer.
  char* scratch = reinterpret_cast<char*>(
      scratch_grow(allreduce_scratch_, static_cast<int64_t>(P) * mine * esize / 4));
  reqs_.clear();
  for (int p = 0; p < P; ++p) {
    if (p == rank_ || mine == 0) continue;
    reqs_.emplace_back();
    SY_MPI_CHECK_IN(MPI_Irecv(scratch + p * mine * esize, static_cast<int>(mine), t, p,
                              kAllreduceTag, comm_, &reqs_.back()),
                    tag, seq);
  }
  for (int p = 0; p < P; ++p) {
    const int64_t n = first(p + 1) - first(p);
    if (p == rank_ || n == 0) continue;
    reqs_.emplace_back();
    SY_MPI_CHECK_IN(MPI_Isend(in + first(p) * esize, static_cast<int>(n), t, p, kAllreduceTag,
                              comm_, &reqs_.back()),
                    tag, seq);
  }
  wait(reqs_.data(), tag, seq, static_cast<int>(reqs_.size()));
  // Sum in rank order (the same order, so the same bits, on every rank), into my chunk of recv.
  std::vector<const void*>& srcs = allreduce_srcs_;
  srcs.assign(static_cast<size_t>(P), nullptr);
  for (int p = 0; p < P; ++p) {
    srcs[p] = p == rank_ ? static_cast<const void*>(in + first(rank_) * esize)
                         : scratch + p * mine * esize;
  }
  if (dtype == DType::kFloat32) {
    sum_in_order<float>(srcs, out + first(rank_) * esize, mine);
  } else {
    sum_in_order<double>(srcs, out + first(rank_) * esize, mine);
  }
  // 2. Allgather: my summed chunk to every peer, theirs into place (in place is safe: every
  // send of step 1 has completed).
  reqs_.clear();
  for (int p = 0; p < P; ++p) {
    const int64_t n = first(p + 1) - first(p);
    if (p == rank_ || n == 0) continue;
    reqs_.emplace_back();
    SY_MPI_CHECK_IN(MPI_Irecv(out + first(p) * esize, static_cast<int>(n), t, p, kAllreduceTag + 1,
                              comm_, &reqs_.back()),
                    tag, seq);
  }
  for (int p = 0; p < P; ++p) {
    if (p == rank_ || mine == 0) continue;
    reqs_.emplace_back();
    SY_MPI_CHECK_IN(MPI_Isend(out + first(rank_) * esize, static_cast<int>(mine), t, p,
                              kAllreduceTag + 1, comm_, &reqs_.back()),
                    tag, seq);
  }
  wait(reqs_.data(), tag, seq, static_cast<int>(reqs_.size()));
  return true;
}

void MpiCommunicator::do_allreduce(const void* send, void* recv, int64_t count, DType dtype,
                                   ReduceOp op, const CollectiveTag& tag, int64_t seq) {
  g_last = {true, tag, seq};
  if (allreduce_by_chunks(send, recv, count, dtype, op, tag, seq)) return;
  MPI_Request req;
  SY_MPI_CHECK_IN(MPI_Iallreduce(send == recv ? MPI_IN_PLACE : send, recv, static_cast<int>(count),
                                 mpi_dtype(dtype), mpi_op(op), comm_, &req),
                  tag, seq);
  wait(&req, tag, seq);
}

void MpiCommunicator::do_allgather(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                                   const CollectiveTag& tag, int64_t seq) {
  g_last = {true, tag, seq};
  const MPI_Datatype t = element_type(elem_bytes);
  MPI_Request req;
  SY_MPI_CHECK_IN(MPI_Iallgather(send, static_cast<int>(count), t, recv, static_cast<int>(count), t,
                                 comm_, &req),
                  tag, seq);
  wait(&req, tag, seq);
}

void MpiCommunicator::do_barrier(const CollectiveTag& tag, int64_t seq) {
  g_last = {true, tag, seq};
  MPI_Request req;
  SY_MPI_CHECK_IN(MPI_Ibarrier(comm_, &req), tag, seq);
  wait(&req, tag, seq);
}

namespace {
// MPI_COMM_WORLD of a process whose MpiRuntime is up (launch/ creates it first).
StatusOr<std::unique_ptr<Communicator>> MakeMpiCommunicator() {
  int init = 0;
  MPI_Initialized(&init);
  if (!init) return Internal("communicator 'mpi': MPI is not initialized (MpiRuntime)");
  return std::unique_ptr<Communicator>(new MpiCommunicator());
}
}  // namespace

SY_REGISTER_COMMUNICATOR(mpi, "mpi", MakeMpiCommunicator);

}  // namespace sy
