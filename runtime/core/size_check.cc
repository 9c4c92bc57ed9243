#include "runtime/core/size_check.h"

namespace sy {

Status check_size(const std::string& field, int64_t v, int64_t lo, int64_t hi) {
  if (v >= lo && v <= hi) return Status::Ok();
  return InvalidArgument(field + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                         "] (got " + std::to_string(v) + ")");
}

StatusOr<int64_t> checked_product(std::initializer_list<std::pair<const char*, int64_t>> factors,
                                  int64_t limit, const std::string& what) {
  int64_t p = 1;
  bool overflow = false;
  std::string named;
  for (const auto& [name, v] : factors) {
    named += (named.empty() ? "" : " x ") + std::string(name) + " " + std::to_string(v);
    if (v < 0 || overflow || __builtin_mul_overflow(p, v, &p)) overflow = true;
  }
  if (!overflow && p <= limit) return p;
  return InvalidArgument(what + ": " + named + " = " +
                         (overflow ? std::string("more than 2^63") : std::to_string(p)) +
                         ", over the limit of " + std::to_string(limit));
}

}  // namespace sy
