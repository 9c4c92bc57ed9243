#include "comm/communicator.h"

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "runtime/core/named_registry.h"

namespace sy {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kMin:
      return "min";
    case ReduceOp::kMax:
      return "max";
  }
  return "?";
}

std::string Communicator::describe(const CollectiveTag& tag, int64_t seq) {
  std::ostringstream os;
  os << (tag.op ? tag.op : "?") << " seq " << seq << " layer " << tag.layer << " step " << tag.step;
  return os.str();
}

// Fixed counts are program constants (P, a row width), so a bad one is a bug: fatal.
#define SY_CHECK_FIXED_COUNT_(count, elem_bytes, tag, seq)                                     \
  SY_CHECK((count) >= 0 && (count) <= INT_MAX && (elem_bytes) >= 1 && (elem_bytes) <= INT_MAX) \
      << describe(tag, seq) << ": count " << (count) << ", element bytes " << (elem_bytes)

void Communicator::alltoall_bytes(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                                  const CollectiveTag& tag) {
  const int64_t seq = seq_++;
  const Clock clock(&collective_s_);
  SY_CHECK_FIXED_COUNT_(count, elem_bytes, tag, seq);
  SY_CHECK(count == 0 || send != recv) << describe(tag, seq) << ": send and recv must differ";
  do_alltoall(send, recv, count, elem_bytes, tag, seq);
}

namespace {
// Checks one side of an alltoallv (blocks = 1) or a blocked alltoallv; `side` is "send" or
// "recv". The message is built only on failure: this runs on every exchange.
Status check_layout(const int64_t* counts, const int64_t* displs, int64_t capacity, int P,
                    int64_t blocks, const char* side, const CollectiveTag& tag, int64_t seq) {
  const int64_t n = P * blocks;
  if (n > 0 && (counts == nullptr || displs == nullptr)) {
    return InvalidArgument(Communicator::describe(tag, seq) + ": null " + side +
                           " counts or displacements");
  }
  if (capacity < 0) {
    return InvalidArgument(Communicator::describe(tag, seq) + ": negative " + side + " capacity");
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = counts[i], d = displs[i];
    const char* why = nullptr;
    if (c < 0 || d < 0) {
      why = "negative";
    } else if (c > INT_MAX || d > INT_MAX) {
      // MPI takes int counts and displacements; a wrapped one would move the wrong bytes.
      why = "does not fit an MPI int";
    } else if (d + c > capacity) {
      why = "runs past the buffer";
    }
    if (why == nullptr) continue;
    std::ostringstream os;
    os << Communicator::describe(tag, seq) << ": " << side << " peer " << i / blocks;
    if (blocks > 1) os << " block " << i % blocks;
    os << " count " << c << " displacement " << d << " capacity " << capacity << ": " << why;
    return InvalidArgument(os.str());
  }
  return Status::Ok();
}

Status check_elem_bytes(int64_t elem_bytes, const CollectiveTag& tag, int64_t seq) {
  if (elem_bytes >= 1 && elem_bytes <= INT_MAX) return Status::Ok();
  return InvalidArgument(Communicator::describe(tag, seq) + ": element bytes " +
                         std::to_string(elem_bytes) + " outside [1, INT_MAX]");
}
}  // namespace

Status Communicator::alltoallv_bytes(const void* send, const VLayout& send_layout, void* recv,
                                     const VLayout& recv_layout, int64_t elem_bytes,
                                     const CollectiveTag& tag) {
  const int64_t seq = seq_++;
  const Clock clock(&collective_s_);
  SY_RETURN_IF_ERROR(check_elem_bytes(elem_bytes, tag, seq));
  SY_CHECK(send == nullptr || send != recv) << describe(tag, seq) << ": send and recv must differ";
  const VLayout &sl = send_layout, &rl = recv_layout;
  SY_RETURN_IF_ERROR(check_layout(sl.counts, sl.displs, sl.capacity, size(), 1, "send", tag, seq));
  SY_RETURN_IF_ERROR(check_layout(rl.counts, rl.displs, rl.capacity, size(), 1, "recv", tag, seq));
  do_alltoallv(send, sl.counts, sl.displs, recv, rl.counts, rl.displs, elem_bytes, tag, seq);
  return Status::Ok();
}

Status Communicator::check_blocks(const void* send, const BlockLayout& sl, const void* recv,
                                  const BlockLayout& rl, int64_t elem_bytes,
                                  const CollectiveTag& tag, int64_t seq) const {
  SY_RETURN_IF_ERROR(check_elem_bytes(elem_bytes, tag, seq));
  const int64_t B = sl.blocks;
  if (B != rl.blocks || B < 1 || B > kMaxBlocks) {
    return InvalidArgument(describe(tag, seq) + ": blocks per peer " + std::to_string(B) +
                           " (send) and " + std::to_string(rl.blocks) +
                           " (recv) must be equal and in [1, " + std::to_string(kMaxBlocks) + "]");
  }
  SY_CHECK(send == nullptr || send != recv) << describe(tag, seq) << ": send and recv must differ";
  SY_RETURN_IF_ERROR(check_layout(sl.counts, sl.displs, sl.capacity, size(), B, "send", tag, seq));
  return check_layout(rl.counts, rl.displs, rl.capacity, size(), B, "recv", tag, seq);
}

Status Communicator::alltoallv_blocks_bytes(const void* send, const BlockLayout& send_layout,
                                            void* recv, const BlockLayout& recv_layout,
                                            int64_t elem_bytes, const CollectiveTag& tag) {
  const int64_t seq = seq_++;
  const Clock clock(&collective_s_);
  SY_RETURN_IF_ERROR(check_blocks(send, send_layout, recv, recv_layout, elem_bytes, tag, seq));
  do_alltoallv_blocks(send, send_layout, recv, recv_layout, elem_bytes, tag, seq);
  return Status::Ok();
}

Status Communicator::start_alltoallv_blocks_bytes(const void* send, const BlockLayout& send_layout,
                                                  void* recv, const BlockLayout& recv_layout,
                                                  int64_t elem_bytes, const CollectiveTag& tag,
                                                  Pending* x) {
  SY_CHECK(x != nullptr && !x->started()) << "start_alltoallv_blocks: a Pending still in use";
  const int64_t seq = seq_++;
  const Clock clock(&collective_s_);
  SY_RETURN_IF_ERROR(check_blocks(send, send_layout, recv, recv_layout, elem_bytes, tag, seq));
  x->tag = tag;
  x->seq = seq;
  x->slot = do_start_alltoallv_blocks(send, send_layout, recv, recv_layout, elem_bytes, tag, seq);
  return Status::Ok();
}

bool Communicator::test_alltoallv_blocks(Pending* x) {
  SY_CHECK(x != nullptr && x->started()) << "test_alltoallv_blocks: nothing started";
  return x->slot < 0 || do_test_alltoallv_blocks(x->slot);
}

void Communicator::finish_alltoallv_blocks(Pending* x) {
  SY_CHECK(x != nullptr && x->started()) << "finish_alltoallv_blocks: nothing started";
  const Clock clock(&collective_s_);
  if (x->slot >= 0) do_finish_alltoallv_blocks(x->slot, x->tag, x->seq);
  *x = Pending();
}

void Communicator::allreduce(const void* send, void* recv, int64_t count, DType dtype, ReduceOp op,
                             const CollectiveTag& tag) {
  const int64_t seq = seq_++;
  const Clock clock(&collective_s_);
  SY_CHECK_FIXED_COUNT_(count, dtype_bytes(dtype), tag, seq);
  do_allreduce(send, recv, count, dtype, op, tag, seq);
}

void Communicator::allgather_bytes(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                                   const CollectiveTag& tag) {
  const int64_t seq = seq_++;
  const Clock clock(&collective_s_);
  SY_CHECK_FIXED_COUNT_(count, elem_bytes, tag, seq);
  SY_CHECK(count == 0 || send != recv) << describe(tag, seq) << ": send and recv must differ";
  do_allgather(send, recv, count, elem_bytes, tag, seq);
}

void Communicator::barrier(const CollectiveTag& tag) {
  const int64_t seq = seq_++;
  const Clock clock(&collective_s_);
  do_barrier(tag, seq);
}

StatusOr<double> parse_collective_timeout(const char* value) {
  if (value == nullptr || *value == '\0') return 600.0;
  errno = 0;
  char* end = nullptr;
  const double s = std::strtod(value, &end);
  if (errno != 0 || end == value || *end != '\0' || !std::isfinite(s) || s < 0) {
    return InvalidArgument(std::string("SY_COLLECTIVE_TIMEOUT_S='") + value +
                           "': expected a non-negative number of seconds (0 = no deadline)");
  }
  return s;
}

StatusOr<int64_t> parse_exchange_merge_bytes(const char* value) {
  if (value == nullptr || *value == '\0') return kDefaultExchangeMergeBytes;
  bool digits = true;
  for (const char* c = value; *c; ++c) digits &= *c >= '0' && *c <= '9';
  errno = 0;
  const long long b = digits ? std::strtoll(value, nullptr, 10) : -1;
  if (!digits || errno != 0) {
    return InvalidArgument(std::string("SY_EXCHANGE_MERGE_BYTES='") + value +
                           "': expected a whole number of bytes >= 0 (0 = one message per block)");
  }
  return static_cast<int64_t>(b);
}

// ---- registry ----

namespace {
NamedRegistry<CommunicatorFactory>& communicator_registry() {
  static auto* r = new NamedRegistry<CommunicatorFactory>("communicator");
  return *r;
}
}  // namespace

bool register_communicator(const char* name, CommunicatorFactory make) {
  return communicator_registry().add(name, make);
}

std::vector<std::string> communicator_names() {
  return communicator_registry().names();
}

StatusOr<std::unique_ptr<Communicator>> make_communicator(const std::string& name) {
  CommunicatorFactory make = communicator_registry().find(name);
  if (!make)
    return InvalidArgument("unknown communicator '" + name +
                           "' (known: " + communicator_registry().known() + ")");
  return make();
}

}  // namespace sy
