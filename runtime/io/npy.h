// NumPy .npy files (format version 1.0), float32, C order: so hidden states written by a run
// with P ranks can be compared with a run with 1 rank by any tool.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/core/status.h"

namespace sy {

Status npy_write_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape);
// Reads a float32 little-endian C-order .npy written by npy_write_f32 (or numpy.save).
Status npy_read_f32(const std::string& path, std::vector<float>* data, std::vector<int64_t>* shape);

}  // namespace sy
