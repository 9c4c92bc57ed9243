#include "runtime/core/memory.h"

#include <cstdlib>

namespace sy {
namespace {

class HostMemory final : public Memory {
 public:
  void* alloc(int64_t bytes) override {
    if (bytes <= 0) return nullptr;
    void* p = std::aligned_alloc(64, static_cast<size_t>((bytes + 63) / 64 * 64));
    if (p == nullptr) out_of_memory(bytes, "host tensor");
    return p;
  }
  void free(void* p) override { std::free(p); }
  void copy_from_host(void* dst, const void* src, int64_t bytes) override {
    copy_within(dst, src, bytes);
  }
  void copy_to_host(void* dst, const void* src, int64_t bytes) override {
    copy_within(dst, src, bytes);
  }
  void copy_within(void* dst, const void* src, int64_t bytes) override {
    if (bytes > 0) std::memmove(dst, src, static_cast<size_t>(bytes));
  }
  void zero(void* dst, int64_t bytes) override {
    if (bytes > 0) std::memset(dst, 0, static_cast<size_t>(bytes));
  }
  bool host_accessible() const override { return true; }
  const char* memory_name() const override { return "host"; }
};

}  // namespace

Memory* host_memory() {
  static HostMemory m;
  return &m;
}

void fail_host_access(const Memory* m) {
  SY_CHECK(false) << "host code touched the elements of an array in '" << m->memory_name()
                  << "' memory, which the host cannot read: use a backend op or to_host()";
  std::abort();
}

}  // namespace sy
