#include "comm/mpi_communicator.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <thread>

#include "comm/fault.h"
#include "comm/mpi_check.h"

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

void mpi_abort_hook(int exit_code) {
  if (mpi_active()) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

void on_terminate() {
  std::string what = "std::terminate called without an active exception";
  if (std::exception_ptr e = std::current_exception()) {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      what = std::string("uncaught exception: ") + ex.what();
    } catch (...) {
      what = "uncaught exception of a non-std type";
    }
  }
  std::string last = g_last.valid ? Communicator::describe(g_last.tag, g_last.seq) : "none";
  std::fprintf(stderr, "[switchyard] rank %d on %s: %s (last collective: %s)\n", log_rank(),
               host_name().c_str(), what.c_str(), last.c_str());
  fatal_abort(kExitBug);
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
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
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

void MpiCommunicator::wait(MPI_Request* req, const CollectiveTag& tag, int64_t seq) {
  using Clock = std::chrono::steady_clock;
  const double limit_s = timeout();
  const Clock::time_point start = Clock::now();
  // Poll with yields for the first kSpinS seconds, then sleep with a doubling back-off so a
  // long wait (a straggler, a hung peer) costs little CPU. The spin is by time, not by a count
  // of polls: a non-blocking collective only advances inside MPI_Test, and a large alltoallv
  // needs several protocol round trips (rendezvous, single-copy get, fin) on both sides; a
  // peer asleep in the back-off stalls each of them (measured: 4 MiB alltoallv 20x slower
  // than MPI_Alltoallv with a 200-poll spin; see bench/exchange_bench.cc).
  constexpr double kSpinS = 0.02;
  constexpr int64_t kMaxSleepUs = 500;
  int64_t sleep_us = 8;
  for (;;) {
    int done = 0;
    SY_MPI_CHECK_IN(MPI_Test(req, &done, MPI_STATUS_IGNORE), tag, seq);
    if (done) return;
    const double waited_s = std::chrono::duration<double>(Clock::now() - start).count();
    if (waited_s < kSpinS) {
      std::this_thread::yield();
      continue;
    }
    if (limit_s > 0 && waited_s > limit_s) {
      std::fprintf(stderr,
                   "[switchyard] rank %d on %s: collective timeout: %s exceeded %g s (a peer "
                   "is stuck or dead; SY_COLLECTIVE_TIMEOUT_S sets the deadline)\n",
                   message_rank(rank_), host_name().c_str(), describe(tag, seq).c_str(), limit_s);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, kExitCollectiveTimeout);
      std::_Exit(kExitCollectiveTimeout);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    if (sleep_us < kMaxSleepUs) sleep_us *= 2;
  }
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

void MpiCommunicator::do_allreduce(const void* send, void* recv, int64_t count, DType dtype,
                                   ReduceOp op, const CollectiveTag& tag, int64_t seq) {
  g_last = {true, tag, seq};
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

}  // namespace sy
