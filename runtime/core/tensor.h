// fp32 tensors with explicit shapes, in one device's memory (runtime/core/memory.h; host memory
// unless a Memory is given: layers allocate theirs on their backend). Row-major, owning, no
// strides: views are raw pointers plus sizes passed to backend ops (ops never see this struct).
// Element access from host code (at(), row(), data[i]) needs host-accessible memory.
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
#include "runtime/core/dtype.h"
#include "runtime/core/memory.h"

namespace sy {

struct Tensor {
  std::vector<int64_t> shape;
  DeviceArray<float> data;

  Tensor() = default;
  explicit Tensor(std::vector<int64_t> shp, float fill = 0.0f, Memory* mem = host_memory())
      : shape(std::move(shp)), data(mem) {
    data.assign(static_cast<size_t>(numel_of(shape)), fill);
  }
  Tensor(std::vector<int64_t> shp, Memory* mem) : Tensor(std::move(shp), 0.0f, mem) {}
  // A tensor of that shape holding host values (in mem).
  static Tensor from_host(std::vector<int64_t> shp, const std::vector<float>& values,
                          Memory* mem = host_memory()) {
    Tensor t(std::move(shp), mem);
    SY_CHECK_EQ(static_cast<int64_t>(values.size()), t.numel()) << "values for " << t.shape_str();
    t.data = values;
    return t;
  }
  static Tensor zeros(std::initializer_list<int64_t> shp) {
    return Tensor(std::vector<int64_t>(shp));
  }

  DType dtype() const { return DType::kFloat32; }
  Memory* memory() const { return data.memory(); }
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
  // The shape shp in memory mem: reallocated there when the tensor lives elsewhere; values
  // are zero after a change of memory or shape, kept when both are unchanged.
  void resize(std::vector<int64_t> shp, Memory* mem) {
    if (mem != memory()) {
      data = DeviceArray<float>(mem);
      shape.clear();
    }
    if (shp != shape) resize(std::move(shp));
  }
  void move_to(Memory* mem) { data.move_to(mem); }
  void zero() { data.fill(0.0f); }
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

// t itself when the host can read its memory, else a host copy made in *staging (for host code
// that reads results: sampling, files, printing).
inline const Tensor& host_readable(const Tensor& t, Tensor* staging) {
  if (t.data.host_accessible()) return t;
  staging->shape = t.shape;
  staging->data = DeviceArray<float>(host_memory(), t.data.to_host());
  return *staging;
}

// A learned parameter and its gradient (same shape). Gradients accumulate across backward
// calls until zero_grad().
struct Param {
  std::string name;
  Tensor value;
  Tensor grad;

  Param() = default;
  Param(std::string n, std::vector<int64_t> shape, Memory* mem = host_memory())
      : name(std::move(n)), value(shape, mem), grad(shape, mem) {}
  void zero_grad() { grad.zero(); }
  void move_to(Memory* mem) {
    value.move_to(mem);
    grad.move_to(mem);
  }
};

}  // namespace sy
