// Element types, one list for every layer: communicator payloads (comm/) and device buffers
// (runtime/backend/).
#pragma once

#include <cstdint>

namespace sy {

enum class DType { kInt32, kInt64, kFloat32, kFloat64, kInt8, kUInt8 };

const char* dtype_name(DType t);  // "int32", "float32", ...
int64_t dtype_bytes(DType t);

}  // namespace sy
