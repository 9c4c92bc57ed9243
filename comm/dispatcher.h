// The token exchange of one expert-parallel MoE layer, in DeepEP's shape: dispatch() sends each
// kept (token, slot) row to the rank that owns its expert and returns a handle; return_rows()
// uses the handle to bring the expert outputs back, in the sender's order. Backward reuses the
// same handle: dispatch_rows() carries gradients of expert outputs out along the dispatch
// pattern (no new count exchange), return_rows() brings gradients of expert inputs back.
//
// Names: DeepEP calls the way back "combine" because its kernel also sums each token's rows;
// here that sum is a separate step of the MoE layer (the weighted combine, runtime/moe/
// moe_layer.h), so the exchange back is "return" (return_rows, DispatchStats::return_s, the
// collective "return.rows") and "combine" means only the weighted sum.
//
// Experts are placed by an ExpertPlacement (comm/placement.h), e = E/P on every rank, one copy
// each. The default is contiguous: rank r owns global experts [r*e, (r+1)*e). A placement file
// (`moe.placement`) may permute them: rank r's local expert j is global expert
// placement.experts_of_rank[r][j]. The caller's rows are in PLAN ORDER (routers/capacity.h:
// grouped by global expert ascending, within an expert by ascending (token, slot)); the block
// for (rank d, local expert j) is the plan-order block of d's j-th global expert, wherever it
// lies (kBlocks sends every block from its own place: no send-side permutation). With the
// contiguous placement the blocks for d are one contiguous run of the plan order, which
// kSingle needs (it refuses other placements).
//
// Order on receipt, EXPERT-MAJOR: local expert j's rows are source 0's rows for j, then source
// 1's, ..., then source P-1's. When tokens are split contiguously over ranks in rank order, this
// is GLOBAL token order within every expert: exactly the order a 1-rank plan over all tokens
// gives that expert, as long as the per-rank plans keep what the 1-rank plan keeps (dropless, or
// ranks holding whole capacity groups, CapacityConfig::group_tokens). So the expert GEMMs see
// identical inputs in identical order and the layer's output is bitwise equal to 1 rank (the
// dispatcher only moves bytes). Keep it that way.
//
// Protocol of dispatch (every rank takes part in every step, also with zero rows):
//   1. counts: alltoall of [P, e+1] int64: to rank d, kept rows for each of d's e local experts,
//      plus the total rows this rank will send d, read from the very layout the payload uses.
//   2. check, before any payload: for every source, counts >= 0, sum of its e counts == its
//      declared total, and the running total fits MPI's int and max_recv_rows. A mismatch (a
//      corrupted or wrong count; the fault SY_FAULT=corrupt_count makes one) ends the job with exit
//      22 (kExitBadInput) through Communicator::abort on the receiver, naming both ranks, the
//      collective (op/seq/layer/step) and the two counts, before any payload is sent.
//   3. rows, placed expert-major (ExchangeMode says how).
// return_rows is the transpose (counts known from the handle; no count exchange).
//
// Memory: the receive side is sized by the rows actually received (R = sum over sources of the
// counts from step 1), never by a worst case of all tokens; with a capacity factor R <= P * C.
// The dispatcher keeps its scratch (count buffers, kSingle's staging buffer) and each handle
// keeps its layouts across calls: in steady state (same or smaller sizes) nothing is allocated.
//
// Threads: one thread calls a Dispatcher (the communicator is MPI_THREAD_FUNNELED).
//
// Since a local expert's rows arrive source by source in plan order whatever rank holds it, a
// permuted placement gives each expert the same rows in the same order as the contiguous one:
// the layer's output stays bitwise that of 1 rank.
//
// Legend: P ranks, r this rank, E global experts, e = E/P local experts, D hidden (floats per
// row), A rows this rank sends (its kept assignments, plan order), R rows this rank receives
// (expert-major).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "comm/placement.h"
#include "runtime/core/status.h"

namespace sy {

// How the rows cross (step 3). Both put the same bytes in the same places; only speed differs.
// bench/exchange_bench.cc, 2 cores, Open MPI 4.1 shared memory (single-copy CMA), E = 8,
// D = 2048, dispatch + return_rows against 2 x MPI_Alltoallv of the same bytes (paired medians):
//   per rank               64 KiB     256 KiB    1 MiB      4 MiB      16 MiB     64 MiB
//   P=2 blocks, merged     0.88-0.93  0.81-0.91  0.79-0.84  0.51-0.60  0.64-0.68  0.84-0.85
//   P=2 blocks, per block  2.56-2.61  1.74-1.76  1.19-1.21  1.06-1.08  1.01-1.06  1.03-1.04
//   P=2 single             1.7        1.35       1.29       1.25       1.21       1.23
//   P=4 blocks, per block  1.8        1.5        1.22       1.04       1.02       1.02
// (two runs each, alternated, for the first two lines; single and P=4 from an older build; P=4
// is 4 ranks on 2 cores, where merging did not help at 1 MiB: 1.29-1.34 against 1.27-1.29.)
// "merged": the MPI backend sends each peer's e blocks as ONE message with an hindexed datatype
// that puts every block in its place on both sides (its default up to SY_EXCHANGE_MERGE_BYTES,
// comm/mpi_communicator.h); "per block": one message per (peer, block), as before. A message
// costs ~4.5 us here (rendezvous + CMA get + fin); merged, kBlocks is below 1.0 of raw
// MPI_Alltoallv from 64 KiB (why Open MPI's own alltoallv, whose algorithm its tuned component
// picks, is slower than our posted-at-once messages was not investigated). kBlocks is the default;
// kSingle (one extra copy of the remote rows) is kept for communicators without a merged path.
enum class ExchangeMode {
  // One Communicator::alltoallv_blocks with e blocks per peer: each (source, local expert)
  // block is received straight into its expert-major place and sent straight from the plan
  // order. No copy; the MPI backend sends a peer's blocks as one message (up to P messages).
  kBlocks,
  // One alltoallv (one message per peer) into a source-major staging buffer, then a
  // permutation to expert-major (memcpy of (P-1)*e contiguous runs; the self block is copied
  // straight into place); return_rows permutes back first. One extra copy of the remote rows.
  kSingle,
};
const char* exchange_mode_name(ExchangeMode m);

struct DispatcherOptions {
  ExchangeMode mode = ExchangeMode::kBlocks;
  // Upper bound on R (rows received in one dispatch), checked in step 2; 0 = only MPI's int
  // limit. A layer sets P * capacity (or P * T_max * K for dropless).
  int64_t max_recv_rows = 0;
};

// What one exchange moves, for load reports (the MoE layer publishes it in its MoeStepStats).
// Rows include this rank's own block (self); bytes count only what crosses between ranks (self
// entry 0): bytes = rows * D * sizeof(float) for every other rank.
struct ExchangeLoad {
  std::vector<int64_t> rows_sent_P, rows_recv_P;    // [P] rows to / from each rank
  std::vector<int64_t> bytes_sent_P, bytes_recv_P;  // [P] rows * D * sizeof(float), self 0
  std::vector<int64_t> rows_recv_e;                 // [e] rows received per local expert
  int64_t remote_bytes() const;                     // sum of bytes_sent_P and bytes_recv_P
};

// Load and timing of the last exchanges through one handle. The times are the only clock of
// the exchange phases: the MoE layer reads them rather than timing the calls again.
struct DispatchStats {
  ExchangeLoad load;            // set by exchange_counts
  double count_exchange_s = 0;  // steps 1 + 2 of the last exchange_counts
  double dispatch_s = 0;        // rows out (+ kSingle's permutation), last dispatch_rows
  double return_s = 0;          // (kSingle's permutation +) rows back, last return_rows
  // load.remote_bytes() / seconds of the last dispatch_rows and return_rows: per-rank
  // algorithm bandwidth, both directions counted; 0 when nothing moved.
  double dispatch_bytes_per_s = 0, return_bytes_per_s = 0;
};

// What dispatch() learned and return_rows() / dispatch_rows() reuse. Owned by the caller (one per
// layer, so a training step can hold every layer's handle until backward); valid until the
// next exchange_counts() / dispatch() into it, and only with the Dispatcher that filled it.
// Reusing a handle reuses its buffers.
class DispatchHandle {
 public:
  bool valid() const { return owner_ != nullptr; }
  int64_t send_rows() const { return A_; }  // A
  int64_t recv_rows() const { return R_; }  // R
  // [e+1]: local expert j owns expert-major rows [offsets[j], offsets[j+1]) of the receive
  // side (what the expert GEMMs take).
  const std::vector<int64_t>& local_offsets_e1() const { return local_offsets_e1_; }
  // Rows from source s for local expert j, at [s * e + j].
  const std::vector<int64_t>& recv_counts_Pe() const { return recv_counts_Pe_; }
  const DispatchStats& stats() const { return stats_; }

 private:
  friend class Dispatcher;
  const void* owner_ = nullptr;
  int64_t A_ = 0, R_ = 0;
  std::vector<int64_t> local_offsets_e1_;  // [e+1]
  // Blocks at [p * e + j]. Send: the plan-order block of rank p's local expert j. Receive: the
  // expert-major block of (source p, local expert j).
  std::vector<int64_t> send_counts_Pe_, send_displs_Pe_, recv_counts_Pe_, recv_displs_Pe_;
  // kSingle, whole blocks per peer (self count 0: the self block is copied straight into
  // place). Send: plan order. Receive: the source-major staging buffer.
  std::vector<int64_t> send_counts_P_, send_displs_P_, recv_counts_P_, recv_displs_P_;
  DispatchStats stats_;
};

class Dispatcher {
 public:
  // InvalidArgument unless E >= 1, P >= 1 and E % P == 0 (experts are split contiguously and
  // evenly), with both numbers in the message.
  static Status check_sizes(int64_t E, int P);
  // Not collective. comm must outlive the Dispatcher. D: floats per row (>= 1). Contiguous
  // placement.
  static StatusOr<std::unique_ptr<Dispatcher>> create(Communicator* comm, int64_t E, int64_t D,
                                                      const DispatcherOptions& options = {});
  // Not collective. Any placement with placement.validate(false) ok and placement.ranks ==
  // comm->size() (InvalidArgument otherwise); kSingle only with the contiguous one.
  static StatusOr<std::unique_ptr<Dispatcher>> create(Communicator* comm,
                                                      const ExpertPlacement& placement, int64_t D,
                                                      const DispatcherOptions& options = {});

  int64_t num_experts() const { return E_; }
  int64_t local_experts() const { return e_; }
  // This rank's global expert ids in local order ([e]); with the contiguous placement
  // [r*e, (r+1)*e), and first_local_expert() = r*e.
  const std::vector<int32_t>& local_expert_ids() const { return placement_.experts_of_rank[r_]; }
  int64_t first_local_expert() const { return local_expert_ids()[0]; }
  const ExpertPlacement& placement() const { return placement_; }
  int64_t hidden() const { return D_; }
  const DispatcherOptions& options() const { return opt_; }
  Communicator& comm() { return *comm_; }

  // Collective, blocking: steps 1-2 above. kept_E [E]: rows this rank keeps per GLOBAL expert
  // (CapacityPlan::kept_E), summing to A = plan.rows(). Fills *handle (layouts, stats). A
  // negative count or a sum != A is a bug of the caller (SY_CHECK). A bad count from a peer
  // ends the job with exit 22. Only tag.layer and tag.step are used (messages, SY_FAULT); the
  // collectives are named "dispatch.counts" and "dispatch.rows".
  void exchange_counts(const int32_t* kept_E, int64_t A, const CollectiveTag& tag,
                       DispatchHandle* handle);

  // Collective, blocking: exchange_counts, then dispatch_rows into *recv_RD, resized to
  // [R, D]. rows_AD [A, D] in plan order (may be null when A = 0); the caller owns both and
  // keeps *recv_RD's capacity across calls (no allocation in steady state).
  void dispatch(const int32_t* kept_E, const float* rows_AD, int64_t A, const CollectiveTag& tag,
                DispatchHandle* handle, std::vector<float>* recv_RD);

  // Collective, blocking: sends rows_AD [A, D] (plan order) along handle's pattern; out_RD
  // [R, D] (caller's, written; null when R = 0) gets them expert-major. Forward payload after
  // exchange_counts(), or gradients of expert outputs in backward.
  void dispatch_rows(DispatchHandle* handle, const float* rows_AD, float* out_RD,
                     const CollectiveTag& tag);

  // Collective, blocking: the reverse of dispatch_rows. rows_RD [R, D] expert-major (the
  // experts' outputs, or gradients of their inputs) go back to their senders; out_AD [A, D]
  // (caller's, written) gets this rank's rows in plan order. No count exchange. The collectives
  // are named "return.rows".
  void return_rows(DispatchHandle* handle, const float* rows_RD, float* out_AD,
                   const CollectiveTag& tag);

  // The non-blocking, chunked form of dispatch_rows (to_experts) and return_rows (!to_experts):
  // only the blocks of local experts [j0, j1) (0 <= j0 < j1 <= e; their rows to and from every
  // rank), posted by start_rows (Communicator::start_alltoallv_blocks_bytes: every rank starts
  // the same chunks in the same order) and completed by finish_rows. Buffers as for
  // dispatch_rows / return_rows, whole (a chunk touches only its own rows); they must stay as
  // they are until finish_rows. The stats' dispatch_s / return_s add up the time spent inside
  // these calls since the last start with j0 = 0 (the exposed part of the exchange). kBlocks
  // only (SY_CHECK).
  void start_rows(DispatchHandle* handle, bool to_experts, const float* src, float* dst, int64_t j0,
                  int64_t j1, const CollectiveTag& tag, Communicator::Pending* x);
  void finish_rows(DispatchHandle* handle, bool to_experts, Communicator::Pending* x);
  // Never blocks: whether finish_rows would return at once.
  bool rows_arrived(Communicator::Pending* x) { return comm_->test_alltoallv_blocks(x); }

 private:
  Dispatcher(Communicator* comm, const ExpertPlacement& placement, int64_t D,
             const DispatcherOptions& options);
  // Step 2 for source s; aborts the job (exit 22) on a bad count.
  void check_counts_from(int s, const int64_t* counts_e1, int64_t recv_so_far,
                         const CollectiveTag& tag, int64_t seq) const;
  // kSingle: copies the remote rows from the staging buffer (source-major) to expert-major, or
  // back when !to_expert_major.
  void permute_remote(const DispatchHandle& h, const float* src, float* dst,
                      bool to_expert_major) const;
  // kSingle: copies the self block from plan order to expert-major, or back.
  void copy_self(const DispatchHandle& h, const float* src, float* dst, bool to_expert_major) const;

  Communicator* comm_;
  int64_t E_, e_, D_;
  int P_, r_;
  DispatcherOptions opt_;
  ExpertPlacement placement_;
  std::vector<int64_t> plan_displs_E_;                    // [E] plan-order start of each expert
  std::vector<int64_t> count_send_Pe1_, count_recv_Pe1_;  // step 1 buffers, [P, e+1]
  std::vector<float> staging_RD_;                         // kSingle only; grows, never shrinks
  std::vector<int64_t> chunk_layout_;                     // start_rows: [4, P, j1 - j0]
};

}  // namespace sy
