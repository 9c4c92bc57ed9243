#include "comm/communicator.h"

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <sstream>

namespace sy {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kInt32:
      return "int32";
    case DType::kInt64:
      return "int64";
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
  }
  return "?";
}

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

int64_t dtype_bytes(DType t) {
  switch (t) {
    case DType::kInt32:
    case DType::kFloat32:
      return 4;
    case DType::kInt64:
    case DType::kFloat64:
      return 8;
  }
  return 0;
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
  SY_CHECK_FIXED_COUNT_(count, elem_bytes, tag, seq);
  SY_CHECK(count == 0 || send != recv) << describe(tag, seq) << ": send and recv must differ";
  do_alltoall(send, recv, count, elem_bytes, tag, seq);
}

namespace {
// Checks one side of an alltoallv; `side` is "send" or "recv".
Status check_layout(const VLayout& l, int P, const char* side, const std::string& where) {
  if (P > 0 && (l.counts == nullptr || l.displs == nullptr)) {
    return InvalidArgument(where + ": null " + side + " counts or displacements");
  }
  if (l.capacity < 0) return InvalidArgument(where + ": negative " + side + " capacity");
  for (int p = 0; p < P; ++p) {
    const int64_t c = l.counts[p], d = l.displs[p];
    std::ostringstream os;
    os << where << ": " << side << " peer " << p << " count " << c << " displacement " << d
       << " capacity " << l.capacity << ": ";
    if (c < 0 || d < 0) return InvalidArgument(os.str() + "negative");
    // MPI takes int counts and displacements; a wrapped one would move the wrong bytes.
    if (c > INT_MAX || d > INT_MAX) return InvalidArgument(os.str() + "does not fit an MPI int");
    if (d + c > l.capacity) return InvalidArgument(os.str() + "runs past the buffer");
  }
  return Status::Ok();
}
}  // namespace

Status Communicator::alltoallv_bytes(const void* send, const VLayout& send_layout, void* recv,
                                     const VLayout& recv_layout, int64_t elem_bytes,
                                     const CollectiveTag& tag) {
  const int64_t seq = seq_++;
  const std::string where = describe(tag, seq);
  if (elem_bytes < 1 || elem_bytes > INT_MAX) {
    return InvalidArgument(where + ": element bytes " + std::to_string(elem_bytes) +
                           " outside [1, INT_MAX]");
  }
  SY_CHECK(send == nullptr || send != recv) << where << ": send and recv must differ";
  SY_RETURN_IF_ERROR(check_layout(send_layout, size(), "send", where));
  SY_RETURN_IF_ERROR(check_layout(recv_layout, size(), "recv", where));
  do_alltoallv(send, send_layout.counts, send_layout.displs, recv, recv_layout.counts,
               recv_layout.displs, elem_bytes, tag, seq);
  return Status::Ok();
}

void Communicator::allreduce(const void* send, void* recv, int64_t count, DType dtype, ReduceOp op,
                             const CollectiveTag& tag) {
  const int64_t seq = seq_++;
  SY_CHECK_FIXED_COUNT_(count, dtype_bytes(dtype), tag, seq);
  do_allreduce(send, recv, count, dtype, op, tag, seq);
}

void Communicator::allgather_bytes(const void* send, void* recv, int64_t count, int64_t elem_bytes,
                                   const CollectiveTag& tag) {
  const int64_t seq = seq_++;
  SY_CHECK_FIXED_COUNT_(count, elem_bytes, tag, seq);
  SY_CHECK(count == 0 || send != recv) << describe(tag, seq) << ": send and recv must differ";
  do_allgather(send, recv, count, elem_bytes, tag, seq);
}

void Communicator::barrier(const CollectiveTag& tag) {
  const int64_t seq = seq_++;
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

}  // namespace sy
