// Plain fp32 tensors with explicit shapes. Row-major, owning, no strides: views are raw
// pointers plus sizes passed to kernels (kernels never see this struct).
//
// Dimension legend used across switchyard (names like x_TD, topk_ids_TK):
//   T tokens, D hidden (d_model), F expert hidden, E experts, e local experts, K top-k,
//   H router hidden, V vocabulary, R rows received, P ranks.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "runtime/core/check.h"

namespace sy {

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> shp, float fill = 0.0f) : shape(std::move(shp)) {
    data.assign(static_cast<size_t>(numel_of(shape)), fill);
  }
  static Tensor zeros(std::initializer_list<int64_t> shp) {
    return Tensor(std::vector<int64_t>(shp));
  }

  int64_t ndim() const { return static_cast<int64_t>(shape.size()); }
  int64_t dim(int i) const {
    SY_CHECK(i >= 0 && i < ndim()) << "dim " << i << " of a " << ndim() << "-d tensor";
    return shape[static_cast<size_t>(i)];
  }
  int64_t numel() const { return static_cast<int64_t>(data.size()); }
  bool empty() const { return data.empty(); }
  float* ptr() { return data.data(); }
  const float* ptr() const { return data.data(); }
  // Row r of a 2-d tensor.
  float* row(int64_t r) { return data.data() + r * shape.back(); }
  const float* row(int64_t r) const { return data.data() + r * shape.back(); }
  float& at(int64_t r, int64_t c) { return data[static_cast<size_t>(r * shape.back() + c)]; }
  float at(int64_t r, int64_t c) const { return data[static_cast<size_t>(r * shape.back() + c)]; }

  void resize(std::vector<int64_t> shp) {
    shape = std::move(shp);
    data.assign(static_cast<size_t>(numel_of(shape)), 0.0f);
  }
  void zero() { std::fill(data.begin(), data.end(), 0.0f); }
  std::string shape_str() const;

  static int64_t numel_of(const std::vector<int64_t>& shp) {
    int64_t n = 1;
    for (int64_t s : shp) {
      SY_CHECK_GE(s, 0) << "negative dimension";
      n *= s;
    }
    return n;
  }
};

// A learned parameter and its gradient (same shape). Gradients accumulate across backward
// calls until zero_grad().
struct Param {
  std::string name;
  Tensor value;
  Tensor grad;

  Param() = default;
  Param(std::string n, std::vector<int64_t> shape)
      : name(std::move(n)), value(shape), grad(shape) {}
  void zero_grad() { grad.zero(); }
};

}  // namespace sy
