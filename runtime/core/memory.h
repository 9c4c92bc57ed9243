// Where a tensor's bytes live. A Memory is one device's allocator plus the copies in and out of
// it; every Backend is one (runtime/backend/backend.h), and host_memory() is plain host memory.
// DeviceArray<T> is an owning, typed array in a Memory; Tensor (tensor.h) is a shape over one.
//
// Host code may read or write the elements of an array only when its memory is
// host_accessible() (host memory, the CPU backend): operator[], begin()/end() and at() check
// it, and fail with a message naming the memory otherwise. Everything else goes through a
// backend op (on data(), a device pointer) or an explicit to_host() / copy_from_host().
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "runtime/core/check.h"

namespace sy {

class Memory {
 public:
  virtual ~Memory() = default;
  // alloc of 0 bytes may return null; free(null) is a no-op.
  virtual void* alloc(int64_t bytes) = 0;
  virtual void free(void* p) = 0;
  // Synchronous copies (on the memory's default stream where it has streams).
  virtual void copy_from_host(void* dst, const void* src, int64_t bytes) = 0;
  virtual void copy_to_host(void* dst, const void* src, int64_t bytes) = 0;
  virtual void copy_within(void* dst, const void* src, int64_t bytes) = 0;  // both in this memory
  virtual void zero(void* dst, int64_t bytes) = 0;
  // true: host code may dereference this memory's pointers (host memory; CUDA managed memory).
  virtual bool host_accessible() const = 0;
  virtual const char* memory_name() const = 0;  // "host", a backend's name
};

// Plain host memory, 64-byte aligned (whole cache lines; what AVX-512 loads prefer).
Memory* host_memory();

[[noreturn]] void fail_host_access(const Memory* m);

template <typename T>
class DeviceArray {
  static_assert(std::is_trivially_copyable<T>::value, "DeviceArray holds plain values");

 public:
  using value_type = T;

  DeviceArray() = default;
  explicit DeviceArray(Memory* m) : mem_(m), host_ok_(m->host_accessible()) {}
  DeviceArray(Memory* m, size_t n) : DeviceArray(m) { assign(n, T()); }
  DeviceArray(Memory* m, const std::vector<T>& v) : DeviceArray(m) {
    copy_from_host(v.data(), v.size());
  }
  DeviceArray(const DeviceArray& o) : DeviceArray(o.mem_) {
    reserve_exact(o.size_);
    size_ = o.size_;
    if (size_) mem_->copy_within(ptr_, o.ptr_, bytes());
  }
  DeviceArray(DeviceArray&& o) noexcept { swap(o); }
  // Copy assignment keeps this array's memory (the values cross over when the memories differ).
  DeviceArray& operator=(const DeviceArray& o) {
    if (this == &o) return *this;
    if (o.mem_ == mem_) {
      resize_uninit(o.size_);
      if (size_) mem_->copy_within(ptr_, o.ptr_, bytes());
    } else {
      *this = o.to_host();
    }
    return *this;
  }
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    if (this != &o) {
      release();
      swap(o);
    }
    return *this;
  }
  DeviceArray& operator=(const std::vector<T>& v) {
    copy_from_host(v.data(), v.size());
    return *this;
  }
  ~DeviceArray() { release(); }

  Memory* memory() const { return mem_; }
  bool host_accessible() const { return host_ok_; }
  size_t size() const { return size_; }
  size_t capacity() const { return cap_; }
  bool empty() const { return size_ == 0; }
  int64_t bytes() const { return static_cast<int64_t>(size_ * sizeof(T)); }
  // The device pointer (what backend ops take); null when empty.
  T* data() { return ptr_; }
  const T* data() const { return ptr_; }

  // Host element access (host-accessible memory only).
  T& operator[](size_t i) { return host()[i]; }
  const T& operator[](size_t i) const { return host()[i]; }
  T* begin() { return host(); }
  T* end() { return host() + size_; }
  const T* begin() const { return host(); }
  const T* end() const { return host() + size_; }
  T& back() { return host()[size_ - 1]; }

  // n copies of v (zeros without a host pass).
  void assign(size_t n, T v) {
    resize_uninit(n);
    fill(v);
  }
  template <typename It, typename = decltype(*std::declval<It>())>
  void assign(It first, It last) {
    std::vector<T> v(first, last);
    copy_from_host(v.data(), v.size());
  }
  void fill(T v) {
    if (size_ == 0) return;
    if (is_zero(v)) {
      mem_->zero(ptr_, bytes());
    } else if (host_accessible()) {
      std::fill(ptr_, ptr_ + size_, v);
    } else {
      const std::vector<T> h(size_, v);
      mem_->copy_from_host(ptr_, h.data(), bytes());
    }
  }
  // Keeps the first min(n, size()) values; new values are zero.
  void resize(size_t n) {
    if (n <= cap_) {
      if (n > size_) mem_->zero(ptr_ + size_, static_cast<int64_t>((n - size_) * sizeof(T)));
      size_ = n;
      return;
    }
    DeviceArray grown(mem_);
    grown.reserve_exact(n);
    if (size_) mem_->copy_within(grown.ptr_, ptr_, bytes());
    mem_->zero(grown.ptr_ + size_, static_cast<int64_t>((n - size_) * sizeof(T)));
    grown.size_ = n;
    swap(grown);
  }
  // size() becomes n; contents unspecified (no copy, no fill). Grow-only storage.
  void resize_uninit(size_t n) {
    if (n > cap_) {
      release();
      reserve_exact(n);
    }
    size_ = n;
  }
  void clear() { size_ = 0; }
  void release() {
    if (ptr_) mem_->free(ptr_);
    ptr_ = nullptr;
    size_ = cap_ = 0;
  }
  void swap(DeviceArray& o) noexcept {
    std::swap(mem_, o.mem_);
    std::swap(ptr_, o.ptr_);
    std::swap(size_, o.size_);
    std::swap(cap_, o.cap_);
    std::swap(host_ok_, o.host_ok_);
  }

  // The same values in memory m (no-op when already there).
  void move_to(Memory* m) {
    if (m == mem_) return;
    DeviceArray moved(m);
    if (size_) {
      if (host_ok_) {
        moved.copy_from_host(ptr_, size_);
      } else if (m->host_accessible()) {
        moved.resize_uninit(size_);
        copy_to_host(moved.ptr_);
      } else {
        moved = to_host();
      }
    }
    swap(moved);
  }

  void copy_from_host(const T* src, size_t n) {
    resize_uninit(n);
    if (n) mem_->copy_from_host(ptr_, src, bytes());
  }
  void copy_to_host(T* dst) const {
    if (size_) mem_->copy_to_host(dst, ptr_, bytes());
  }
  std::vector<T> to_host() const {
    std::vector<T> v(size_);
    copy_to_host(v.data());
    return v;
  }

  bool operator==(const DeviceArray& o) const { return to_host() == o.to_host(); }
  bool operator!=(const DeviceArray& o) const { return !(*this == o); }
  // A host copy (implicit, so host code and tests read an array as a vector; it is a copy).
  operator std::vector<T>() const { return to_host(); }
  friend bool operator==(const DeviceArray& a, const std::vector<T>& v) { return a.to_host() == v; }
  friend bool operator!=(const DeviceArray& a, const std::vector<T>& v) { return !(a == v); }
  friend bool operator==(const std::vector<T>& v, const DeviceArray& a) { return a.to_host() == v; }

 private:
  static bool is_zero(T v) {
    T z{};
    return std::memcmp(&v, &z, sizeof(T)) == 0;
  }
  T* host() const {  // a cached flag: element access stays a predictable branch
    if (!host_ok_) fail_host_access(mem_);
    return ptr_;
  }
  void reserve_exact(size_t n) {
    cap_ = n;
    ptr_ = n ? static_cast<T*>(mem_->alloc(static_cast<int64_t>(n * sizeof(T)))) : nullptr;
  }

  Memory* mem_ = host_memory();
  T* ptr_ = nullptr;
  size_t size_ = 0, cap_ = 0;
  bool host_ok_ = true;  // mem_->host_accessible(), cached
};

// At least n elements of scratch in a's memory; the contents are NOT kept when it grows (every
// caller overwrites what it uses). A grow frees the old storage first instead of copying it
// and leaves a quarter of headroom: row counts drift a little from step to step, and each
// reallocation is a fresh mapping whose first touch costs page faults — measured at seconds
// for the few hundred MiB of a Qwen-sized layer's row buffers, inside the timed phases and,
// through the exchange, as waiting on peers.
// The scratch lives in memory m (moved there, contents dropped, when it is elsewhere).
template <typename T>
T* scratch_grow(DeviceArray<T>& a, int64_t n, Memory* m) {
  if (a.memory() != m) a = DeviceArray<T>(m);
  if (static_cast<int64_t>(a.capacity()) < n) a.resize_uninit(static_cast<size_t>(n + n / 4));
  a.resize_uninit(std::max<size_t>(a.size(), static_cast<size_t>(n)));
  return a.data();
}

// a holds n elements in memory m: moved there first (contents dropped) when it lives elsewhere,
// then resized (values kept, new ones zero). Returns the device pointer.
template <typename T>
T* resize_in(DeviceArray<T>& a, int64_t n, Memory* m) {
  if (a.memory() != m) a = DeviceArray<T>(m);
  a.resize(static_cast<size_t>(n));
  return a.data();
}

}  // namespace sy
