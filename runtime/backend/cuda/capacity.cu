// CudaBackend::capacity_plan: the capacity plan (runtime/kernels/capacity.h) on the device, as
// the data-parallel pipeline of runtime/kernels/capacity_math.h, every per-element step one of
// its SY_HD functions. runtime/kernels/capacity_pipeline.cc runs the same steps on the host
// (std::stable_sort for CUB's stable radix sort) and tests/runtime/capacity_pipeline_test.cc
// checks that it plans bitwise what the CPU's plan_capacity_into plans; here the steps are:
//
//   keys     a thread per assignment: segment key (expert, group), ranking key, final key,
//            index; an unmasked out-of-range id flags its assignment (integer atomicMax of
//            capacity_bad_code: the smallest flat index wins, whatever the order).
//   groups   a block per group: its unmasked tokens (a fixed block reduction of integers), its
//            capacity; the total tokens and the largest capacity by integer atomics.
//   sort A   (not dropless) cub::DeviceRadixSort::SortPairs, stable: by ranking key (kProbs
//            only), a gather of the segment keys into that order, then by segment key.
//   rank     a thread per sorted position: rank in its segment by a lower bound; rank >= C_g
//            drops it (its final key becomes E).
//   sort B   SortPairs by final key (expert, or E): the kept rows grouped by expert in (token,
//            slot) order, written straight into plan->order_A (sized A first, then cut to the
//            kept rows).
//   rows     a thread per row: row_of_TK and kept_TK of the kept ones.
//   counts   a thread per expert: offsets_E1 (a lower bound in sort B's keys) and routed_E
//            (two lower bounds in sort A's), and the flagged id for the error message.
// The header words, offsets, routed counts and kept_TK bytes sit in one packed device buffer
// (capacity_pipeline.h CapacityPacked) that comes down in one copy to pinned host memory; the
// host turns it into the plan's vectors (capacity_pipeline_finish, shared with the reference).
//
// Every case runs on the device: both drop policies, dropless, groups, masks and expert choice
// (which is kProbs with choice_k in the capacity formula). Nothing is launched for T = 0: the
// plan is then made on the host from zero counts. The argument checks (capacity_plan_config)
// run first on the host and refuse what the CPU refuses, before anything is resized.
//
// Memory: the pipeline's buffers and CUB's temporary storage live in one device workspace owned
// by the backend (grown when a call needs more, reused otherwise: no cudaMalloc in steady
// state), the packed results come down to a pinned staging buffer, both guarded by plan_mu_ (the
// call is synchronous: it returns after reading the results back). Everything runs on
// stream_of(c): the inputs were written on it and the index arrays are complete on return.
#include <cub/device/device_radix_sort.cuh>

#include <climits>
#include <cstdint>
#include <mutex>

#include "runtime/backend/cuda/cuda_backend.h"
#include "runtime/backend/cuda/kernel_util.cuh"
#include "runtime/core/check.h"
#include "runtime/kernels/capacity.h"
#include "runtime/kernels/capacity_math.h"
#include "runtime/kernels/capacity_pipeline.h"

namespace sy {
namespace cuda {
namespace {

constexpr unsigned kGroupThreads = 256;
constexpr unsigned kMaxGroupBlocks = 4096;

struct KeysOp {
  CapacityPipelineShape s;
  const int32_t* ids;
  const float* probs;
  const uint8_t* mask;
  uint64_t* segment;  // null when dropless
  uint32_t* rank;     // null unless s.by_probs
  uint32_t* fin;
  int32_t* index;
  int32_t* words;
  __device__ void operator()(int64_t a) const {
    if (capacity_keys_step(s, a, ids, probs, mask, segment, rank, fin, index))
      atomicMax(words + CapacityPacked::kBad, capacity_bad_code(a));
  }
};

// Block per group (grid-stride over groups; the loop bound is uniform within a block, so every
// thread reaches block_reduce).
__global__ void groups_kernel(CapacityPipelineShape s, const uint8_t* mask, int32_t* capacity_G,
                              int32_t* words) {
  __shared__ int sh[33];
  for (int64_t g = blockIdx.x; g < s.num_groups; g += gridDim.x) {
    const int64_t last = capacity_group_last(s, g);
    int n = 0;
    for (int64_t t = capacity_group_first(s, g) + threadIdx.x; t < last; t += blockDim.x)
      n += capacity_token_real(mask, t) ? 1 : 0;
    n = block_reduce(n, SumOp{}, 0, sh);
    if (threadIdx.x == 0) {
      const int32_t cap = static_cast<int32_t>(capacity_of_group(s, n));
      capacity_G[g] = cap;
      atomicAdd(words + CapacityPacked::kTokens, n);
      atomicMax(words + CapacityPacked::kCapacity, cap);
    }
  }
}

struct GatherOp {  // segment_R[i] = segment[index_R[i]]
  const uint64_t* segment;
  const int32_t* index_R;
  uint64_t* segment_R;
  __device__ void operator()(int64_t i) const { segment_R[i] = segment[index_R[i]]; }
};

struct RankOp {
  CapacityPipelineShape s;
  const uint64_t* segment_S;
  const int32_t* index_S;
  const int32_t* capacity_G;
  uint32_t* fin;
  __device__ void operator()(int64_t i) const {
    capacity_rank_step(s, i, segment_S, index_S, capacity_G, fin);
  }
};

struct RowOp {
  CapacityPipelineShape s;
  const uint32_t* fin_S;
  const int32_t* order_S;
  int32_t* row_of;
  uint8_t* kept;
  __device__ void operator()(int64_t r) const {
    capacity_row_step(s, r, fin_S, order_S, row_of, kept);
  }
};

struct CountOp {
  CapacityPipelineShape s;
  const uint32_t* fin_S;
  const uint64_t* segment_S;  // null when dropless
  const int32_t* ids;
  int32_t* words;
  __device__ void operator()(int64_t e) const {
    const CapacityPacked pk{s.E, s.A};
    capacity_count_step(s, e, fin_S, segment_S, words + pk.offsets(), words + pk.routed());
    // The keys kernel finished before this one: the flag is final.
    if (e == 0 && words[CapacityPacked::kBad] != 0)
      words[CapacityPacked::kBadId] =
          ids[INT32_MAX - static_cast<int64_t>(words[CapacityPacked::kBad])];
  }
};

// Bump allocation of the workspace in 256-byte aligned pieces.
struct Carve {
  char* base = nullptr;  // null: only measure
  size_t used = 0;
  template <typename T>
  T* take(int64_t n) {
    const size_t at = used;
    used += (static_cast<size_t>(n) * sizeof(T) + 255) / 256 * 256;
    return base ? reinterpret_cast<T*>(base + at) : nullptr;
  }
};

template <typename Key>
size_t sort_temp_bytes(int n, int end_bit, cudaStream_t st) {
  size_t bytes = 0;
  SY_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, bytes, static_cast<const Key*>(nullptr), static_cast<Key*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), n, 0, end_bit, st));
  return bytes;
}

template <typename Key>
void sort_pairs(void* temp, size_t temp_bytes, const Key* keys_in, Key* keys_out,
                const int32_t* values_in, int32_t* values_out, int n, int end_bit,
                cudaStream_t st) {
  SY_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp, temp_bytes, keys_in, keys_out, values_in,
                                                values_out, n, 0, end_bit, st));
}

}  // namespace

void* CudaBackend::plan_workspace(size_t bytes) {
  if (bytes > plan_ws_bytes_) {
    if (plan_ws_) SY_CUDA_CHECK(cudaFree(plan_ws_));  // waits for the device
    plan_ws_ = nullptr;
    const size_t grown = bytes + bytes / 4;
    SY_CUDA_CHECK(cudaMalloc(&plan_ws_, grown));
    plan_ws_bytes_ = grown;
  }
  return plan_ws_;
}

void* CudaBackend::plan_staging(size_t bytes) {
  if (bytes > plan_host_bytes_) {
    if (plan_host_) SY_CUDA_CHECK(cudaFreeHost(plan_host_));
    plan_host_ = nullptr;
    const size_t grown = bytes + bytes / 4;
    SY_CUDA_CHECK(cudaMallocHost(&plan_host_, grown));
    plan_host_bytes_ = grown;
  }
  return plan_host_;
}

Status CudaBackend::capacity_plan(const ExecContext& c, const int32_t* ids_TK,
                                  const float* rank_p_TK, int64_t T, int64_t E, int64_t K,
                                  int64_t D, const CapacityConfig& given, const uint8_t* mask_T,
                                  CapacityPlan* plan) {
  SY_CHECK(plan != nullptr);
  SY_CHECK(plan->order_A.memory() == this && plan->row_of_TK.memory() == this)
      << "cuda capacity_plan: the plan's index arrays are in '"
      << plan->order_A.memory()->memory_name()
      << "' memory, not cuda memory (make the plan as CapacityPlan(backend))";
  CapacityConfig cfg;
  SY_RETURN_IF_ERROR(capacity_plan_config(ids_TK, rank_p_TK, T, E, K, D, given, &cfg));
  const bool choice = cfg.choice_k > 0;
  const CapacityPipelineShape s = capacity_pipeline_shape(T, E, K, cfg);
  const CapacityPacked pk{E, s.A};

  if (s.A == 0) {  // no tokens: nothing to launch, every count is zero
    std::vector<int32_t> words(static_cast<size_t>(pk.words()), 0);
    SY_RETURN_IF_ERROR(capacity_pipeline_finish(s, choice, words.data(), nullptr, plan));
    plan->row_of_TK.clear();
    plan->order_A.clear();
    return Status::Ok();
  }

  std::lock_guard<std::mutex> lock(plan_mu_);
  const cudaStream_t st = stream_of(c);
  const int n = static_cast<int>(s.A);  // A <= INT_MAX (check_capacity_sizes)
  const int segment_bits = capacity_key_bits(s.segment_end);
  const int final_bits = capacity_key_bits(static_cast<uint64_t>(E));

  // The workspace: measured with a null base, then carved from the real one.
  size_t temp_bytes = sort_temp_bytes<uint32_t>(n, final_bits, st);
  if (!s.dropless) {
    const size_t b = sort_temp_bytes<uint64_t>(n, segment_bits, st);
    temp_bytes = b > temp_bytes ? b : temp_bytes;
  }
  if (s.by_probs) {
    const size_t b = sort_temp_bytes<uint32_t>(n, 32, st);
    temp_bytes = b > temp_bytes ? b : temp_bytes;
  }
  struct Buffers {
    int32_t* words;
    uint64_t *segment, *segment_R, *segment_S;
    uint32_t *rank, *fin, *fin_S;
    int32_t *index, *index_R, *index_S, *capacity_G;
    void* temp;
  };
  auto layout = [&](char* base, size_t* used) {
    Carve cv{base, 0};
    Buffers b{};
    b.words = reinterpret_cast<int32_t*>(cv.take<char>(pk.bytes()));
    b.segment = s.dropless ? nullptr : cv.take<uint64_t>(s.A);
    b.segment_R = s.by_probs ? cv.take<uint64_t>(s.A) : nullptr;
    b.segment_S = s.dropless ? nullptr : cv.take<uint64_t>(s.A);
    b.rank = s.by_probs ? cv.take<uint32_t>(s.A) : nullptr;
    b.fin = cv.take<uint32_t>(s.A);
    b.fin_S = cv.take<uint32_t>(s.A);  // also sort A's ranking keys out (dead before sort B)
    b.index = cv.take<int32_t>(s.A);
    b.index_R = s.by_probs ? cv.take<int32_t>(s.A) : nullptr;
    b.index_S = s.dropless ? nullptr : cv.take<int32_t>(s.A);
    b.capacity_G = cv.take<int32_t>(s.num_groups);
    b.temp = cv.take<char>(static_cast<int64_t>(temp_bytes));
    *used = cv.used;
    return b;
  };
  size_t need = 0;
  layout(nullptr, &need);
  const Buffers b = layout(static_cast<char*>(plan_workspace(need)), &need);
  uint8_t* kept_d = reinterpret_cast<uint8_t*>(b.words) + pk.words() * 4;
  // The staging buffer too, before any launch (growing it may wait for the device).
  void* host = plan_staging(static_cast<size_t>(pk.bytes()));

  // The index arrays, written in place: row_of_TK all -1 (0xff bytes) until the rows step;
  // order_A sized A (sort B writes A values), cut to the kept rows below (no reallocation).
  plan->row_of_TK.resize_uninit(static_cast<size_t>(s.A));
  plan->order_A.resize_uninit(static_cast<size_t>(s.A));
  SY_CUDA_CHECK(cudaMemsetAsync(plan->row_of_TK.data(), 0xff, static_cast<size_t>(s.A) * 4, st));
  // Header words 0 (no bad id, no tokens, capacity 0), kept_TK bytes 0; offsets and routed
  // counts are all written by the counts step.
  SY_CUDA_CHECK(cudaMemsetAsync(b.words, 0, static_cast<size_t>(pk.bytes()), st));

  // 1. keys, 2. groups
  launch_map(c, KeysOp{s, ids_TK, rank_p_TK, mask_T, b.segment, b.rank, b.fin, b.index, b.words},
             s.A);
  const unsigned group_blocks = static_cast<unsigned>(
      s.num_groups < kMaxGroupBlocks ? s.num_groups : static_cast<int64_t>(kMaxGroupBlocks));
  groups_kernel<<<group_blocks, kGroupThreads, 0, st>>>(s, mask_T, b.capacity_G, b.words);
  SY_CUDA_LAUNCHED();

  // 3. sort A, 4. rank (dropless keeps everything routed: neither)
  if (!s.dropless) {
    if (s.by_probs) {
      sort_pairs<uint32_t>(b.temp, temp_bytes, b.rank, b.fin_S, b.index, b.index_R, n, 32, st);
      launch_map(c, GatherOp{b.segment, b.index_R, b.segment_R}, s.A);
      sort_pairs<uint64_t>(b.temp, temp_bytes, b.segment_R, b.segment_S, b.index_R, b.index_S, n,
                           segment_bits, st);
    } else {
      sort_pairs<uint64_t>(b.temp, temp_bytes, b.segment, b.segment_S, b.index, b.index_S, n,
                           segment_bits, st);
    }
    launch_map(c, RankOp{s, b.segment_S, b.index_S, b.capacity_G, b.fin}, s.A);
  }

  // 5. sort B (into order_A), 6. rows, 7. counts
  int32_t* order = plan->order_A.data();
  sort_pairs<uint32_t>(b.temp, temp_bytes, b.fin, b.fin_S, b.index, order, n, final_bits, st);
  launch_map(c, RowOp{s, b.fin_S, order, plan->row_of_TK.data(), kept_d}, s.A);
  launch_map(c, CountOp{s, b.fin_S, b.segment_S, ids_TK, b.words}, E + 1);

  // One copy down, then the plan's host fields.
  SY_CUDA_CHECK(
      cudaMemcpyAsync(host, b.words, static_cast<size_t>(pk.bytes()), cudaMemcpyDeviceToHost, st));
  SY_CUDA_CHECK(cudaStreamSynchronize(st));
  const int32_t* words = static_cast<const int32_t*>(host);
  SY_RETURN_IF_ERROR(capacity_pipeline_finish(
      s, choice, words, static_cast<const uint8_t*>(host) + pk.words() * 4, plan));
  plan->order_A.resize_uninit(static_cast<size_t>(plan->total_kept));  // <= A: keeps the rows
  return Status::Ok();
}

}  // namespace cuda
}  // namespace sy
