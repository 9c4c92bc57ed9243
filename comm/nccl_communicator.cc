#include "comm/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>
#include <type_traits>
#include <vector>

#include "runtime/core/check.h"
#include "runtime/core/timing.h"

static_assert(std::is_same<ncclComm*, ncclComm_t>::value,
              "nccl_communicator.h forward-declares struct ncclComm as nccl.h's ncclComm_t");

namespace sy {

namespace {

// The wait loop's shape, as in the MPI backend: poll for kSpinS, then sleep with a doubling
// back-off up to kMaxSleepUs (the GPU and NCCL's proxy thread make the progress; polling only
// notices it).
constexpr double kSpinS = 0.02;
constexpr int64_t kMaxSleepUs = 500;
// How long ncclCommAbort may take before its watchdog ends the process.
constexpr double kAbortWatchdogS = 10;
// Scratch regions start on this boundary.
constexpr int64_t kAlign = 256;

int64_t align_up(int64_t n) {
  return (n + kAlign - 1) / kAlign * kAlign;
}

int message_rank(int fallback) {
  return log_rank() >= 0 ? log_rank() : fallback;
}

ncclDataType_t nccl_dtype(DType t) {
  switch (t) {
    case DType::kInt32:
      return ncclInt32;
    case DType::kInt64:
      return ncclInt64;
    case DType::kFloat32:
      return ncclFloat32;
    case DType::kFloat64:
      return ncclFloat64;
    case DType::kInt8:
      return ncclInt8;
    case DType::kUInt8:
      return ncclUint8;
  }
  SY_CHECK(false) << "unknown dtype";
  return ncclInt8;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kMin:
      return ncclMin;
    case ReduceOp::kMax:
      return ncclMax;
  }
  SY_CHECK(false) << "unknown reduce op";
  return ncclSum;
}

// NCCL's text for a result, with its last error message when it has one.
std::string nccl_text(ncclResult_t r, ncclComm_t comm) {
  std::string s = ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm);
  if (last != nullptr && *last != '\0') s += std::string(" (") + last + ")";
  return s;
}

// Makes `device` current for its lifetime and restores the caller's device after.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (device < 0) return;
    if (cudaGetDevice(&prev_) == cudaSuccess && prev_ != device &&
        cudaSetDevice(device) == cudaSuccess) {
      restore_ = true;
    }
  }
  ~DeviceGuard() {
    if (restore_) cudaSetDevice(prev_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = -1;
  bool restore_ = false;
};

// What each rank reports at the two agreement points of the setup (bootstrap allgather), so
// every rank returns the same verdict. Rank 0's `id` carries the NCCL unique id.
struct InitVerdict {
  int32_t code = 0;  // StatusCode; 0 = ok
  char id[NCCL_UNIQUE_ID_BYTES] = {};
  char reason[244] = {};
};
static_assert(std::is_trivially_copyable<InitVerdict>::value, "sent through allgather");

void set_reason(InitVerdict* v, StatusCode code, const std::string& reason) {
  v->code = static_cast<int32_t>(code);
  std::snprintf(v->reason, sizeof(v->reason), "%s", reason.c_str());
}

// Allgathers this rank's verdict; the first failing rank's (lowest rank) becomes everyone's
// Status. `all` receives every rank's verdict.
Status agree(Communicator* bootstrap, const InitVerdict& mine, std::vector<InitVerdict>* all,
             const char* stage) {
  all->assign(static_cast<size_t>(bootstrap->size()), InitVerdict{});
  bootstrap->allgather(&mine, all->data(), 1, {stage});
  for (int q = 0; q < bootstrap->size(); ++q) {
    const InitVerdict& v = (*all)[static_cast<size_t>(q)];
    if (v.code == 0) continue;
    return Status(static_cast<StatusCode>(v.code),
                  "communicator 'nccl': rank " + std::to_string(q) + ": " + v.reason);
  }
  return Status::Ok();
}

}  // namespace

// ---- setup and teardown ----

NcclCommunicator::NcclCommunicator(Communicator* bootstrap)
    : bootstrap_(bootstrap), rank_(bootstrap->rank()), size_(bootstrap->size()) {
  set_timeout(bootstrap->timeout());
}

StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::create(Communicator* bootstrap) {
  if (bootstrap == nullptr) {
    return InvalidArgument("communicator 'nccl': no bootstrap communicator to share the NCCL id");
  }
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator(bootstrap));
  SY_RETURN_IF_ERROR(c->init());
  return StatusOr<std::unique_ptr<NcclCommunicator>>(std::move(c));
}

Status NcclCommunicator::init() {
  // 1. This rank's device, stream and (rank 0) the unique id; then every rank learns every
  // rank's verdict, so a rank without a device fails the setup everywhere instead of leaving
  // its peers in ncclCommInitRank.
  InitVerdict mine;
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    set_reason(&mine, StatusCode::kInvalidArgument,
               std::string("no CUDA device visible: ") + cudaGetErrorString(e));
  } else if (count <= 0) {
    set_reason(&mine, StatusCode::kInvalidArgument,
               "no CUDA device visible: cudaGetDeviceCount found none");
  } else if ((e = cudaGetDevice(&device_)) != cudaSuccess) {
    set_reason(&mine, StatusCode::kInternal,
               std::string("cudaGetDevice: ") + cudaGetErrorString(e));
  } else if ((e = cudaStreamCreate(&stream_)) != cudaSuccess) {
    // Blocking (default flags): ordered with the legacy default stream, see the header.
    stream_ = nullptr;
    set_reason(
        &mine, StatusCode::kInternal,
        "device " + std::to_string(device_) + ": cudaStreamCreate: " + cudaGetErrorString(e));
  } else if (rank_ == 0) {
    ncclUniqueId id;
    const ncclResult_t r = ncclGetUniqueId(&id);
    if (r != ncclSuccess) {
      set_reason(&mine, StatusCode::kInternal,
                 std::string("ncclGetUniqueId: ") + nccl_text(r, nullptr));
    } else {
      std::memcpy(mine.id, id.internal, sizeof(mine.id));
    }
  }
  std::vector<InitVerdict> all;
  SY_RETURN_IF_ERROR(agree(bootstrap_, mine, &all, "nccl.init.id"));

  // 2. The NCCL communicator, non-blocking (so no later call blocks the host past the
  // deadline), initialised under the bootstrap's deadline.
  const DeviceGuard guard(device_);
  mine = InitVerdict{};
  ncclUniqueId id;
  std::memcpy(id.internal, all[0].id, sizeof(id.internal));
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  const ncclResult_t r = ncclCommInitRankConfig(&comm, size_, id, rank_, &config);
  if (r != ncclSuccess && r != ncclInProgress) {
    // Refused at once: NCCL has released what it made, so no handle is kept to abort.
    set_reason(
        &mine, StatusCode::kInternal,
        "device " + std::to_string(device_) + ": ncclCommInitRankConfig: " + nccl_text(r, nullptr));
  } else {
    comm_ = comm;
    const SteadyClock::time_point start = SteadyClock::now();
    ncclResult_t state = ncclInProgress;
    for (;;) {
      const ncclResult_t q = ncclCommGetAsyncError(comm_, &state);
      if (q != ncclSuccess) state = q;
      if (state != ncclInProgress) break;
      if (timeout() > 0 && seconds_since(start) > timeout()) break;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (state == ncclInProgress) {
      broken_ = true;
      std::ostringstream os;
      os << "device " << device_ << ": ncclCommInitRankConfig did not finish within " << timeout()
         << " s (a peer is stuck or dead; SY_COLLECTIVE_TIMEOUT_S sets the deadline)";
      set_reason(&mine, StatusCode::kTimeout, os.str());
    } else if (state != ncclSuccess) {
      broken_ = true;
      set_reason(&mine, StatusCode::kInternal,
                 "device " + std::to_string(device_) +
                     ": ncclCommInitRankConfig: " + nccl_text(state, comm_));
    }
  }
  // 3. Every rank has a communicator, or every rank returns the first failure.
  const Status st = agree(bootstrap_, mine, &all, "nccl.init.done");
  if (!st.ok()) broken_ = true;  // the destructor aborts rather than finalizes
  return st;
}

NcclCommunicator::~NcclCommunicator() {
  const DeviceGuard guard(device_);
  if (comm_ != nullptr) {
    bool finalized = false;
    if (!broken_) {
      // Every call waited for its work, so this only flushes; it still synchronizes with the
      // peers' finalize, hence the deadline.
      ncclResult_t state = ncclCommFinalize(comm_);
      if (state == ncclSuccess || state == ncclInProgress) {
        const SteadyClock::time_point start = SteadyClock::now();
        for (;;) {
          const ncclResult_t q = ncclCommGetAsyncError(comm_, &state);
          if (q != ncclSuccess) state = q;
          if (state != ncclInProgress) break;
          if (timeout() > 0 && seconds_since(start) > timeout()) break;
          std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
      }
      finalized = state == ncclSuccess;
      if (!finalized) {
        std::fprintf(stderr,
                     "[switchyard] rank %d on %s: ncclCommFinalize failed or did not finish "
                     "within %g s (%s); aborting the NCCL communicator\n",
                     message_rank(rank_), host_name().c_str(), timeout(),
                     ncclGetErrorString(state));
        std::fflush(stderr);
      }
    }
    if (finalized) {
      ncclCommDestroy(comm_);
    } else {
      ncclCommAbort(comm_);
    }
    comm_ = nullptr;
  }
  if (scratch_ != nullptr) cudaFree(scratch_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

StatusOr<std::unique_ptr<Communicator>> make_nccl_communicator(Communicator* bootstrap) {
  auto c = NcclCommunicator::create(bootstrap);
  if (!c.ok()) return c.status();
  return std::unique_ptr<Communicator>(std::move(c).value());
}

// ---- failure paths ----

void NcclCommunicator::abort_nccl(int exit_code, const std::string& message) {
  if (comm_ == nullptr) return;
  broken_ = true;
  // Whether ncclCommAbort returned, for the watchdog's message (it outlives this call).
  static std::atomic<bool> returned{false};
  try {
    const int r = message_rank(rank_);
    std::thread([exit_code, message, r] {
      std::this_thread::sleep_for(std::chrono::duration<double>(kAbortWatchdogS));
      std::fprintf(stderr,
                   "[switchyard] rank %d on %s: %s\n[switchyard] rank %d on %s: %s within "
                   "%g s; exiting with code %d\n",
                   r, host_name().c_str(), message.c_str(), r, host_name().c_str(),
                   returned.load() ? "the job did not end" : "ncclCommAbort did not return",
                   kAbortWatchdogS, exit_code);
      std::fflush(stderr);
      std::_Exit(exit_code);
    }).detach();
  } catch (...) {  // no thread: an unguarded abort is still better than none
  }
  if (device_ >= 0) cudaSetDevice(device_);
  ncclCommAbort(comm_);
  returned.store(true);
  comm_ = nullptr;
}

void NcclCommunicator::abort(int exit_code, const std::string& message) {
  if (aborting_.exchange(true)) {
    // Reached again from inside the first abort (a check failing on the way down): end now.
    std::fprintf(stderr, "[switchyard] rank %d on %s: %s\n", message_rank(rank_),
                 host_name().c_str(), message.c_str());
    std::fflush(stderr);
    std::_Exit(exit_code);
  }
  std::fflush(stdout);
  abort_nccl(exit_code, message);
  bootstrap_->abort(exit_code, message);  // prints the message, ends every rank
  std::_Exit(exit_code);  // not reached (a virtual call is not known to be noreturn)
}

void NcclCommunicator::check_nccl(int result, const char* call, const CollectiveTag& tag,
                                  int64_t seq) {
  const ncclResult_t r = static_cast<ncclResult_t>(result);
  if (r == ncclSuccess || r == ncclInProgress) return;
  std::ostringstream os;
  os << "NCCL error in " << describe(tag, seq) << ": " << call << ": " << nccl_text(r, comm_);
  // Arguments NCCL refuses are a bug here; anything else is the communication failing.
  const bool bug = r == ncclInvalidArgument || r == ncclInvalidUsage;
  abort(bug ? kExitBug : kExitCollectiveTimeout, os.str());
}

void NcclCommunicator::check_cuda(cudaError_t err, const char* call, const CollectiveTag& tag,
                                  int64_t seq) {
  if (err == cudaSuccess) return;
  std::ostringstream os;
  os << "CUDA error in " << describe(tag, seq) << " on device " << device_ << ": " << call << ": "
     << cudaGetErrorString(err);
  abort(kExitBug, os.str());
}

void NcclCommunicator::wait(const CollectiveTag& tag, int64_t seq) {
  const double limit_s = timeout();
  const SteadyClock::time_point start = SteadyClock::now();
  int64_t sleep_us = 8;
  for (;;) {
    ncclResult_t state = ncclSuccess;
    check_nccl(ncclCommGetAsyncError(comm_, &state), "ncclCommGetAsyncError", tag, seq);
    if (state == ncclSuccess) {
      // NCCL has enqueued everything; the stream tells when it has run.
      const cudaError_t q = cudaStreamQuery(stream_);
      if (q == cudaSuccess) return;
      if (q != cudaErrorNotReady) check_cuda(q, "cudaStreamQuery", tag, seq);
      cudaGetLastError();  // "not ready" is not an error; leave none behind for the backend
    } else if (state != ncclInProgress) {
      std::ostringstream os;
      os << "NCCL error in " << describe(tag, seq) << ": " << nccl_text(state, comm_)
         << " (a peer failed or the network broke)";
      abort(kExitCollectiveTimeout, os.str());
    }
    const double waited_s = seconds_since(start);
    if (waited_s < kSpinS) continue;
    if (limit_s > 0 && waited_s > limit_s) {
      std::ostringstream os;
      os << "collective timeout: " << describe(tag, seq) << " exceeded " << limit_s
         << " s (a peer is stuck or dead; SY_COLLECTIVE_TIMEOUT_S sets the deadline)";
      abort(kExitCollectiveTimeout, os.str());
    }
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    if (sleep_us < kMaxSleepUs) sleep_us *= 2;
  }
}

// ---- staging ----

bool NcclCommunicator::is_device_memory(const void* p, const CollectiveTag& tag,
                                        int64_t seq) const {
  cudaPointerAttributes a;
  std::memset(&a, 0, sizeof(a));
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();  // an unknown host pointer on older drivers: not an error to keep
    return false;
  }
  if (a.type == cudaMemoryTypeDevice) {
    SY_CHECK_EQ(a.device, device_) << describe(tag, seq) << ": a buffer on device " << a.device
                                   << " passed to the NCCL communicator of device " << device_;
    return true;
  }
  return a.type == cudaMemoryTypeManaged;  // unregistered or pinned host memory: staged
}

void NcclCommunicator::ensure_scratch(int64_t bytes) {
  if (bytes <= scratch_bytes_) return;
  // Every call waited for its work, so nothing of ours still uses the old buffer (cudaFree
  // synchronizes with the device anyway).
  const int64_t want = std::max(align_up(bytes), std::min<int64_t>(2 * scratch_bytes_, bytes * 4));
  if (scratch_ != nullptr) cudaFree(scratch_);
  scratch_ = nullptr;
  scratch_bytes_ = 0;
  void* p = nullptr;
  if (cudaMalloc(&p, static_cast<size_t>(want)) != cudaSuccess) {
    cudaGetLastError();
    out_of_memory(want, "the NCCL communicator's staging buffer");
  }
  scratch_ = static_cast<char*>(p);
  scratch_bytes_ = want;
}

void NcclCommunicator::stage_in(Buf* s, const void* send_ptr, int64_t send_lo, int64_t send_hi,
                                Buf* r, void* recv_ptr, int64_t recv_lo, int64_t recv_hi,
                                bool copy_recv_in, const CollectiveTag& tag, int64_t seq) {
  const bool in_place = send_ptr != nullptr && send_ptr == recv_ptr;
  *s = Buf{};
  *r = Buf{};
  s->user = s->dev = const_cast<char*>(static_cast<const char*>(send_ptr));
  s->lo = send_lo;
  s->hi = send_hi;
  r->user = r->dev = static_cast<char*>(recv_ptr);
  r->lo = recv_lo;
  r->hi = recv_hi;
  s->staged = send_hi > send_lo && !is_device_memory(send_ptr, tag, seq);
  if (in_place) {
    SY_CHECK(send_lo == recv_lo && send_hi == recv_hi)
        << describe(tag, seq) << ": in place over different ranges";
    r->staged = s->staged;
  } else {
    r->staged = recv_hi > recv_lo && !is_device_memory(recv_ptr, tag, seq);
  }
  const int64_t recv_region = r->staged ? align_up(recv_hi - recv_lo) : 0;
  const int64_t send_region = s->staged && !in_place ? align_up(send_hi - send_lo) : 0;
  if (recv_region + send_region == 0) return;
  ensure_scratch(recv_region + send_region);
  if (r->staged) r->dev = scratch_;
  if (s->staged) s->dev = in_place ? scratch_ : scratch_ + recv_region;
  if (s->staged) {
    check_cuda(cudaMemcpyAsync(s->dev, s->user + s->lo, static_cast<size_t>(s->hi - s->lo),
                               cudaMemcpyHostToDevice, stream_),
               "cudaMemcpyAsync (stage send)", tag, seq);
  }
  if (r->staged && copy_recv_in && !in_place) {
    check_cuda(cudaMemcpyAsync(r->dev, r->user + r->lo, static_cast<size_t>(r->hi - r->lo),
                               cudaMemcpyHostToDevice, stream_),
               "cudaMemcpyAsync (stage recv)", tag, seq);
  }
}

void NcclCommunicator::stage_out(const Buf& r, const CollectiveTag& tag, int64_t seq) {
  if (!r.staged) return;
  check_cuda(cudaMemcpyAsync(r.user + r.lo, r.dev, static_cast<size_t>(r.hi - r.lo),
                             cudaMemcpyDeviceToHost, stream_),
             "cudaMemcpyAsync (unstage recv)", tag, seq);
  wait(tag, seq);
}

// ---- the collectives ----

void NcclCommunicator::do_alltoall(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                                   const CollectiveTag& tag, int64_t seq) {
  if (count == 0) return;  // every rank passes the same count: nothing moves anywhere
  const DeviceGuard guard(device_);
  const int64_t block = count * elem_bytes, total = block * size_;
  Buf s, r;
  stage_in(&s, send, 0, total, &r, recv, 0, total, false, tag, seq);
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 28, 0)
  check_nccl(ncclAlltoAll(s.at(0), r.at(0), static_cast<size_t>(block), ncclInt8, comm_, stream_),
             "ncclAlltoAll", tag, seq);
#else
  check_nccl(ncclGroupStart(), "ncclGroupStart", tag, seq);
  for (int p = 0; p < size_; ++p) {
    check_nccl(ncclRecv(r.at(p * block), static_cast<size_t>(block), ncclInt8, p, comm_, stream_),
               "ncclRecv", tag, seq);
    check_nccl(ncclSend(s.at(p * block), static_cast<size_t>(block), ncclInt8, p, comm_, stream_),
               "ncclSend", tag, seq);
  }
  check_nccl(ncclGroupEnd(), "ncclGroupEnd", tag, seq);
#endif
  wait(tag, seq);
  stage_out(r, tag, seq);
}

void NcclCommunicator::do_alltoallv(const void* send, const int64_t* send_counts,
                                    const int64_t* send_displs, void* recv,
                                    const int64_t* recv_counts, const int64_t* recv_displs,
                                    int64_t elem_bytes, const CollectiveTag& tag, int64_t seq) {
  // Capacities were checked by the caller; exchange_blocks reads only counts and displs.
  const BlockLayout sl{1, send_counts, send_displs, 0};
  const BlockLayout rl{1, recv_counts, recv_displs, 0};
  exchange_blocks(send, sl, recv, rl, elem_bytes, tag, seq);
}

void NcclCommunicator::do_alltoallv_blocks(const void* send, const BlockLayout& send_layout,
                                           void* recv, const BlockLayout& recv_layout,
                                           int64_t elem_bytes, const CollectiveTag& tag,
                                           int64_t seq) {
  exchange_blocks(send, send_layout, recv, recv_layout, elem_bytes, tag, seq);
}

namespace {
// The byte range [lo, hi) that a layout's non-empty blocks cover ([0, 0) when all are empty).
void layout_range(const BlockLayout& l, int P, int64_t elem_bytes, int64_t* lo, int64_t* hi) {
  *lo = INT64_MAX;
  *hi = 0;
  for (int64_t i = 0; i < P * l.blocks; ++i) {
    if (l.counts[i] <= 0) continue;
    *lo = std::min(*lo, l.displs[i] * elem_bytes);
    *hi = std::max(*hi, (l.displs[i] + l.counts[i]) * elem_bytes);
  }
  if (*hi == 0) *lo = 0;
}
}  // namespace

void NcclCommunicator::exchange_blocks(const void* send, const BlockLayout& sl, void* recv,
                                       const BlockLayout& rl, int64_t elem_bytes,
                                       const CollectiveTag& tag, int64_t seq) {
  const DeviceGuard guard(device_);
  const int64_t B = sl.blocks;
  const int P = size_, me = rank_;
  for (int64_t b = 0; b < B; ++b) {
    SY_CHECK_EQ(sl.counts[me * B + b], rl.counts[me * B + b])
        << describe(tag, seq) << ": self block " << b;
  }
  int64_t send_lo, send_hi, recv_lo, recv_hi;
  layout_range(sl, P, elem_bytes, &send_lo, &send_hi);
  layout_range(rl, P, elem_bytes, &recv_lo, &recv_hi);
  Buf s, r;
  // A staged receive range is copied in first, so the gaps between blocks come back unchanged.
  stage_in(&s, send, send_lo, send_hi, &r, recv, recv_lo, recv_hi, true, tag, seq);
  // The self blocks: device copies on the stream, ahead of the NCCL group.
  for (int64_t b = 0; b < B; ++b) {
    const int64_t i = me * B + b, n = sl.counts[i];
    if (n == 0) continue;
    check_cuda(
        cudaMemcpyAsync(r.at(rl.displs[i] * elem_bytes), s.at(sl.displs[i] * elem_bytes),
                        static_cast<size_t>(n * elem_bytes), cudaMemcpyDeviceToDevice, stream_),
        "cudaMemcpyAsync (self block)", tag, seq);
  }
  // The peers: one ncclRecv / ncclSend per non-empty (peer, block), in block order on both
  // sides (NCCL matches the operations between a pair of ranks in the order they are posted).
  bool any = false;
  for (int64_t i = 0; i < P * B && !any; ++i) {
    any = i / B != me && (sl.counts[i] > 0 || rl.counts[i] > 0);
  }
  if (any) {
    check_nccl(ncclGroupStart(), "ncclGroupStart", tag, seq);
    for (int p = 0; p < P; ++p) {
      for (int64_t b = 0; b < B && p != me; ++b) {
        const int64_t i = p * B + b, n = rl.counts[i];
        if (n == 0) continue;
        check_nccl(ncclRecv(r.at(rl.displs[i] * elem_bytes), static_cast<size_t>(n * elem_bytes),
                            ncclInt8, p, comm_, stream_),
                   "ncclRecv", tag, seq);
      }
    }
    for (int p = 0; p < P; ++p) {
      for (int64_t b = 0; b < B && p != me; ++b) {
        const int64_t i = p * B + b, n = sl.counts[i];
        if (n == 0) continue;
        check_nccl(ncclSend(s.at(sl.displs[i] * elem_bytes), static_cast<size_t>(n * elem_bytes),
                            ncclInt8, p, comm_, stream_),
                   "ncclSend", tag, seq);
      }
    }
    check_nccl(ncclGroupEnd(), "ncclGroupEnd", tag, seq);
  }
  wait(tag, seq);
  stage_out(r, tag, seq);
}

void NcclCommunicator::do_allreduce(const void* send, void* recv, int64_t count, DType dtype,
                                    ReduceOp op, const CollectiveTag& tag, int64_t seq) {
  if (count == 0) return;
  const DeviceGuard guard(device_);
  const int64_t bytes = count * dtype_bytes(dtype);
  Buf s, r;
  stage_in(&s, send, 0, bytes, &r, recv, 0, bytes, false, tag, seq);
  check_nccl(ncclAllReduce(s.at(0), r.at(0), static_cast<size_t>(count), nccl_dtype(dtype),
                           nccl_op(op), comm_, stream_),
             "ncclAllReduce", tag, seq);
  wait(tag, seq);
  stage_out(r, tag, seq);
}

void NcclCommunicator::do_allgather(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                                    const CollectiveTag& tag, int64_t seq) {
  if (count == 0) return;
  const DeviceGuard guard(device_);
  const int64_t block = count * elem_bytes;
  Buf s, r;
  stage_in(&s, send, 0, block, &r, recv, 0, block * size_, false, tag, seq);
  check_nccl(ncclAllGather(s.at(0), r.at(0), static_cast<size_t>(block), ncclInt8, comm_, stream_),
             "ncclAllGather", tag, seq);
  wait(tag, seq);
  stage_out(r, tag, seq);
}

void NcclCommunicator::do_barrier(const CollectiveTag& tag, int64_t seq) {
  // A one-element allreduce completes only once every rank has entered it.
  const DeviceGuard guard(device_);
  ensure_scratch(kAlign);
  check_cuda(cudaMemsetAsync(scratch_, 0, sizeof(int32_t), stream_), "cudaMemsetAsync", tag, seq);
  check_nccl(ncclAllReduce(scratch_, scratch_, 1, ncclInt32, ncclSum, comm_, stream_),
             "ncclAllReduce (barrier)", tag, seq);
  wait(tag, seq);
}

}  // namespace sy
