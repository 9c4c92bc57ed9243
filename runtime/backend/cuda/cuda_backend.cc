// The host side of the "cuda" backend (cuda_backend.h): registration, the choice of device,
// device memory and copies, the cuBLAS handle, scalar read-backs, device copies of quantized
// weights. The capacity plan runs on the device: capacity.cu.
#include "runtime/backend/cuda/cuda_backend.h"

#include <cstdlib>
#include <memory>

#include "runtime/core/status.h"
#include "runtime/kernels/quant.h"

namespace sy {
namespace cuda {
namespace {

// The rank of this process among those on its node, from the launcher's environment (Open MPI,
// MPICH/Hydra, Slurm); 0 when launched without one. One GPU per rank: rank i takes device
// i mod (devices visible), so CUDA_VISIBLE_DEVICES narrows the choice as usual.
int local_rank() {
  for (const char* name :
       {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"})
    if (const char* v = std::getenv(name)) return std::atoi(v);
  return 0;
}

}  // namespace

CudaBackend::CudaBackend() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    unavailable_ = std::string("no CUDA device is visible (cudaGetDeviceCount: ") +
                   (e != cudaSuccess ? cudaGetErrorString(e) : "0 devices") + ")";
    (void)cudaGetLastError();  // clear the sticky error for later callers
    return;
  }
  device_ = local_rank() % count;
  SY_CUDA_CHECK(cudaSetDevice(device_));
  SY_CUBLAS_CHECK(cublasCreate(&blas_));
  // fp32 GEMMs stay fp32: no TF32 tensor cores (the conformance bounds reject them).
  SY_CUBLAS_CHECK(cublasSetMathMode(blas_, CUBLAS_PEDANTIC_MATH));
  SY_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&small_), kSmallDoubles * sizeof(double)));
}

CudaBackend::~CudaBackend() {
  // The backend lives for the process (the registry never destroys it); this runs only for a
  // backend made outside the registry (tests). Errors at teardown are ignored.
  if (device_ < 0) return;
  for (auto& [uid, p] : quant_) {
    cudaFree(p.first);
    cudaFree(p.second);
  }
  if (small_) cudaFree(small_);
  if (plan_ws_) cudaFree(plan_ws_);
  if (plan_host_) cudaFreeHost(plan_host_);
  if (blas_) cublasDestroy(blas_);
}

// ---- Memory ------------------------------------------------------------------------------------

void* CudaBackend::alloc(int64_t bytes) {
  if (bytes <= 0) return nullptr;
  void* p = nullptr;
  const cudaError_t e = cudaMalloc(&p, static_cast<size_t>(bytes));
  SY_CHECK(e == cudaSuccess) << "cuda: cannot allocate " << bytes << " bytes on device " << device_
                             << ": " << cudaGetErrorString(e);
  return p;
}
void CudaBackend::free(void* p) {
  if (p) SY_CUDA_CHECK(cudaFree(p));
}
// The Memory copies are synchronous (the contract of runtime/core/memory.h): cudaMemcpy waits
// for the device to finish the work queued before it on the legacy default stream.
void CudaBackend::copy_from_host(void* dst, const void* src, int64_t bytes) {
  if (bytes > 0)
    SY_CUDA_CHECK(cudaMemcpy(dst, src, static_cast<size_t>(bytes), cudaMemcpyHostToDevice));
}
void CudaBackend::copy_to_host(void* dst, const void* src, int64_t bytes) {
  if (bytes > 0)
    SY_CUDA_CHECK(cudaMemcpy(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToHost));
}
void CudaBackend::copy_within(void* dst, const void* src, int64_t bytes) {
  if (bytes > 0)
    SY_CUDA_CHECK(cudaMemcpy(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice));
}
void CudaBackend::zero(void* dst, int64_t bytes) {
  if (bytes > 0) SY_CUDA_CHECK(cudaMemset(dst, 0, static_cast<size_t>(bytes)));
}

// Ordered on the context's stream. copy() is a memmove on the CPU; cudaMemcpyAsync does not
// promise overlapping ranges, so an overlapping copy goes through the workspace.
void CudaBackend::copy(const ExecContext& c, void* dst, const void* src, int64_t bytes) {
  if (bytes <= 0 || dst == src) return;
  const char* d = static_cast<const char*>(dst);
  const char* s = static_cast<const char*>(src);
  if (d < s + bytes && s < d + bytes) {
    float* tmp = scratch(c, (bytes + 3) / 4);
    SY_CUDA_CHECK(cudaMemcpyAsync(tmp, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice,
                                  stream_of(c)));
    src = tmp;
  }
  SY_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice,
                                stream_of(c)));
}
void CudaBackend::fill_zero(const ExecContext& c, void* dst, int64_t bytes) {
  if (bytes > 0) SY_CUDA_CHECK(cudaMemsetAsync(dst, 0, static_cast<size_t>(bytes), stream_of(c)));
}
void CudaBackend::synchronize(const ExecContext& c) {
  SY_CUDA_CHECK(cudaStreamSynchronize(stream_of(c)));
}

// ---- shared by the op files --------------------------------------------------------------------

float* CudaBackend::scratch(const ExecContext& c, int64_t n) {
  SY_CHECK(c.workspace != nullptr) << "cuda backend: the context has no workspace";
  // The workspace reallocates when it grows: cudaFree waits for the device, so work queued on
  // the old block finishes before it is released.
  return c.workspace->floats(n < 1 ? 1 : n);
}

double* CudaBackend::small_results(const ExecContext&) {
  return small_;
}

void CudaBackend::read_small_results(const ExecContext& c, double* host, int n) {
  SY_CHECK(n >= 0 && n <= kSmallDoubles) << "cuda backend: " << n << " small results";
  SY_CUDA_CHECK(cudaMemcpyAsync(host, small_, static_cast<size_t>(n) * sizeof(double),
                                cudaMemcpyDeviceToHost, stream_of(c)));
  SY_CUDA_CHECK(cudaStreamSynchronize(stream_of(c)));
}

cublasHandle_t CudaBackend::blas(const ExecContext& c) {
  SY_CUBLAS_CHECK(cublasSetStream(blas_, stream_of(c)));
  return blas_;
}

CudaBackend::DeviceQuant CudaBackend::device_quant(const QuantizedMatrix& q) {
  std::lock_guard<std::mutex> lock(mu_);
  const size_t db = q.data.size(), sb = q.scales.size() * sizeof(float);
  auto upload = [&](std::pair<void*, void*>* slot) {
    SY_CUDA_CHECK(cudaMemcpy(slot->first, q.data.data(), db, cudaMemcpyHostToDevice));
    SY_CUDA_CHECK(cudaMemcpy(slot->second, q.scales.data(), sb, cudaMemcpyHostToDevice));
  };
  auto fresh = [&]() {
    std::pair<void*, void*> p{nullptr, nullptr};
    SY_CUDA_CHECK(cudaMalloc(&p.first, db < 1 ? 1 : db));
    SY_CUDA_CHECK(cudaMalloc(&p.second, sb < 1 ? 1 : sb));
    return p;
  };
  if (q.uid == 0) {
    // Not from quantize(): uploaded on every use into one reused slot (key 0), after the device
    // has finished with what it held.
    SY_CUDA_CHECK(cudaDeviceSynchronize());
    auto it = quant_.find(0);
    if (it != quant_.end()) {
      cudaFree(it->second.first);
      cudaFree(it->second.second);
      quant_.erase(it);
    }
    auto& slot = quant_[0] = fresh();
    upload(&slot);
    return {static_cast<const uint8_t*>(slot.first), static_cast<const float*>(slot.second)};
  }
  auto it = quant_.find(q.uid);
  if (it == quant_.end()) {
    it = quant_.emplace(q.uid, fresh()).first;
    upload(&it->second);
  }
  return {static_cast<const uint8_t*>(it->second.first),
          static_cast<const float*>(it->second.second)};
}

namespace {
std::unique_ptr<Backend> make_cuda_backend() {
  return std::make_unique<CudaBackend>();
}
}  // namespace

}  // namespace cuda

SY_REGISTER_BACKEND(cuda, "cuda", cuda::make_cuda_backend);

}  // namespace sy
