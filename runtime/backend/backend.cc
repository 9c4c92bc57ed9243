#include "runtime/backend/backend.h"

#include <map>
#include <memory>
#include <mutex>

#include "runtime/core/check.h"
#include "runtime/core/named_registry.h"

namespace sy {

std::string Device::str() const {
  if (kind == DeviceKind::kCuda) return "cuda:" + std::to_string(index);
  return kind == DeviceKind::kCpu ? "cpu" : "devsim";
}

// ---- Buffer ----------------------------------------------------------------------------------

Buffer::Buffer(Backend* backend, DType dtype, int64_t numel)
    : backend_(backend), dtype_(dtype), numel_(numel) {
  SY_CHECK(backend != nullptr) << "Buffer without a backend";
  SY_CHECK_GE(numel, 0) << "Buffer of negative size";
  ptr_ = numel > 0 ? backend->alloc(bytes()) : nullptr;
}

Buffer::~Buffer() {
  release();
}

Buffer::Buffer(Buffer&& o) noexcept
    : backend_(o.backend_), dtype_(o.dtype_), numel_(o.numel_), ptr_(o.ptr_) {
  o.ptr_ = nullptr;
  o.numel_ = 0;
}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    release();
    backend_ = o.backend_;
    dtype_ = o.dtype_;
    numel_ = o.numel_;
    ptr_ = o.ptr_;
    o.ptr_ = nullptr;
    o.numel_ = 0;
  }
  return *this;
}

void Buffer::release() {
  if (ptr_ && backend_) backend_->free(ptr_);
  ptr_ = nullptr;
  numel_ = 0;
}

Device Buffer::device() const {
  return backend_ ? backend_->device() : Device();
}

void Buffer::copy_from_host(const void* src) {
  if (bytes() > 0) backend_->copy_from_host(ptr_, src, bytes());
}

void Buffer::copy_to_host(void* dst) const {
  if (bytes() > 0) backend_->copy_to_host(dst, ptr_, bytes());
}

float* Workspace::floats(int64_t n) {
  if (buf_.numel() < n) {
    buf_ = Buffer();  // free the old block first: never hold both
    buf_ = Buffer(backend_, DType::kFloat32, n + n / 4);
  }
  return buf_.as<float>();
}

// ---- registry --------------------------------------------------------------------------------

namespace {

struct Registry {
  std::mutex mu;
  NamedRegistry<BackendFactory> factories{"backend"};
  std::map<std::string, std::unique_ptr<Backend>> made;
  std::vector<std::unique_ptr<Workspace>> workspaces;
  std::vector<std::unique_ptr<ExecContext>> contexts;
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: backends outlive static destructors
  return *r;
}

}  // namespace

bool register_backend(const char* name, BackendFactory make) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.factories.add(name, make);
}

Backend* find_backend(const std::string& name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto made = r.made.find(name);
  if (made != r.made.end()) return made->second.get();
  BackendFactory make = r.factories.find(name);
  if (!make) return nullptr;
  std::unique_ptr<Backend> b = make();
  Backend* out = b.get();
  r.made[name] = std::move(b);
  return out;
}

std::vector<std::string> backend_names() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  return r.factories.names();
}

std::string backend_unavailable(const std::string& name) {
  Backend* b = find_backend(name);
  return b ? b->unavailable_reason() : std::string();
}

const ExecContext* make_context(const std::string& backend, bool deterministic,
                                GemmPrecision precision) {
  Backend* b = find_backend(backend);
  if (!b || !b->unavailable_reason().empty()) return nullptr;
  if (precision == GemmPrecision::kBf16 && !b->supports_bf16()) return nullptr;
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  for (const auto& c : r.contexts)  // one context per (backend, deterministic, precision)
    if (c->backend == b && c->deterministic == deterministic && c->precision == precision)
      return c.get();
  r.workspaces.push_back(std::make_unique<Workspace>(b));
  auto c = std::make_unique<ExecContext>();
  c->backend = b;
  c->deterministic = deterministic;
  c->precision = precision;
  c->workspace = r.workspaces.back().get();
  r.contexts.push_back(std::move(c));
  return r.contexts.back().get();
}

const char* gemm_precision_name(GemmPrecision p) {
  return p == GemmPrecision::kBf16 ? "bf16" : "fp32";
}

StatusOr<GemmPrecision> parse_gemm_precision(const std::string& name) {
  if (name == "fp32") return GemmPrecision::kFp32;
  if (name == "bf16") return GemmPrecision::kBf16;
  return InvalidArgument("GEMM precision '" + name + "': expected fp32 or bf16");
}

void Backend::grouped_linear_forward(const ExecContext& c, const float* x_RI, const float* W_EOI,
                                     float* y_RO, const int32_t* row_offsets_E1, int64_t E,
                                     int64_t I, int64_t O) {
  const int64_t o0 = row_offsets_E1[0];
  for (int64_t e = 0; e < E; ++e) {
    const int64_t o = row_offsets_E1[e] - o0, n = row_offsets_E1[e + 1] - row_offsets_E1[e];
    if (n > 0) linear_forward(c, x_RI + o * I, W_EOI + e * O * I, y_RO + o * O, n, I, O, 0.0f);
  }
}

void Backend::grouped_linear_backward(const ExecContext& c, const float* x_RI, const float* W_EOI,
                                      const float* dy_RO, float* dW_EOI, float* dx_RI,
                                      const int32_t* row_offsets_E1, int64_t E, int64_t I,
                                      int64_t O, bool accumulate_dx) {
  if (!dW_EOI && !dx_RI) return;
  const int64_t o0 = row_offsets_E1[0];
  for (int64_t e = 0; e < E; ++e) {
    const int64_t o = row_offsets_E1[e] - o0, n = row_offsets_E1[e + 1] - row_offsets_E1[e];
    if (n == 0) continue;
    linear_backward(c, x_RI + o * I, W_EOI + e * O * I, dy_RO + o * O,
                    dW_EOI ? dW_EOI + e * O * I : nullptr, dx_RI ? dx_RI + o * I : nullptr, n, I, O,
                    accumulate_dx);
  }
}

}  // namespace sy
