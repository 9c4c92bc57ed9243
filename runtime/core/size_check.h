// Range checks for the sizes in configs (protobuf settings, config.json): every size is bounded
// and every product of sizes that the code later allocates or indexes by is computed without
// overflow, so a huge value is refused naming its field instead of wrapping to a small number,
// hanging in a loop or ending in std::bad_alloc.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

#include "runtime/core/status.h"

namespace sy {

// InvalidArgument "<field> must be in [lo, hi] (got v)" when v is outside.
Status check_size(const std::string& field, int64_t v, int64_t lo, int64_t hi);

// The product of the named factors (each >= 0), or InvalidArgument naming every factor and its
// value when the product overflows int64 or exceeds `limit`; `what` says what the product is
// ("values in one layer's expert weights").
StatusOr<int64_t> checked_product(std::initializer_list<std::pair<const char*, int64_t>> factors,
                                  int64_t limit, const std::string& what);

}  // namespace sy
