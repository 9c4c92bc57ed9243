#include "comm/dispatcher.h"

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "comm/fault.h"
#include "runtime/core/scratch.h"
#include "runtime/core/timing.h"

namespace sy {

namespace {

using Clock = SteadyClock;

// The rows [first, first + n) of a [*, D] float buffer; D >= 1.
void copy_rows(float* dst, int64_t dst_row, const float* src, int64_t src_row, int64_t n,
               int64_t D) {
  if (n > 0) {
    std::memcpy(dst + dst_row * D, src + src_row * D, static_cast<size_t>(n * D) * sizeof(float));
  }
}

}  // namespace

const char* exchange_mode_name(ExchangeMode m) {
  switch (m) {
    case ExchangeMode::kSingle:
      return "single";
    case ExchangeMode::kBlocks:
      return "blocks";
  }
  return "?";
}

int64_t ExchangeLoad::remote_bytes() const {
  int64_t b = 0;
  for (size_t p = 0; p < bytes_sent_P.size(); ++p) b += bytes_sent_P[p] + bytes_recv_P[p];
  return b;
}

Status Dispatcher::check_sizes(int64_t E, int P) {
  if (E < 1 || P < 1) {
    return InvalidArgument("dispatcher: need at least one expert and one rank, got E = " +
                           std::to_string(E) + ", P = " + std::to_string(P));
  }
  if (E % P != 0) {
    return InvalidArgument("dispatcher: num_experts " + std::to_string(E) +
                           " is not a multiple of the number of ranks " + std::to_string(P) +
                           " (experts are split evenly and contiguously over ranks)");
  }
  return Status::Ok();
}

StatusOr<std::unique_ptr<Dispatcher>> Dispatcher::create(Communicator* comm, int64_t E, int64_t D,
                                                         const DispatcherOptions& options) {
  SY_CHECK(comm != nullptr);
  SY_RETURN_IF_ERROR(check_sizes(E, comm->size()));
  return create(comm, ExpertPlacement::contiguous(E, comm->size()), D, options);
}

StatusOr<std::unique_ptr<Dispatcher>> Dispatcher::create(Communicator* comm,
                                                         const ExpertPlacement& placement,
                                                         int64_t D,
                                                         const DispatcherOptions& options) {
  SY_CHECK(comm != nullptr);
  SY_RETURN_IF_ERROR(check_sizes(placement.num_experts, comm->size()));
  if (placement.ranks != comm->size()) {
    return InvalidArgument("dispatcher: the expert placement is for " +
                           std::to_string(placement.ranks) + " ranks, the job has " +
                           std::to_string(comm->size()));
  }
  SY_RETURN_IF_ERROR(placement.validate(/*allow_replicas=*/false));
  if (options.mode == ExchangeMode::kSingle &&
      !(placement == ExpertPlacement::contiguous(placement.num_experts, comm->size()))) {
    return InvalidArgument(
        "dispatcher: exchange mode 'single' needs the contiguous expert placement (each peer's "
        "rows one run of the plan order); use 'blocks'");
  }
  // One row is one MPI element; its byte size must fit an int.
  if (D < 1 || D > INT_MAX / static_cast<int64_t>(sizeof(float))) {
    return InvalidArgument("dispatcher: hidden size " + std::to_string(D) + " outside [1, " +
                           std::to_string(INT_MAX / sizeof(float)) + "]");
  }
  if (options.max_recv_rows < 0) {
    return InvalidArgument("dispatcher: max_recv_rows " + std::to_string(options.max_recv_rows) +
                           " is negative (0 = no bound)");
  }
  return std::unique_ptr<Dispatcher>(new Dispatcher(comm, placement, D, options));
}

Dispatcher::Dispatcher(Communicator* comm, const ExpertPlacement& placement, int64_t D,
                       const DispatcherOptions& options)
    : comm_(comm),
      E_(placement.num_experts),
      e_(placement.num_experts / comm->size()),
      D_(D),
      P_(comm->size()),
      r_(comm->rank()),
      opt_(options),
      placement_(placement),
      plan_displs_E_(static_cast<size_t>(E_)),
      count_send_Pe1_(static_cast<size_t>(P_ * (e_ + 1))),
      count_recv_Pe1_(static_cast<size_t>(P_ * (e_ + 1))) {}

void Dispatcher::check_counts_from(int s, const int64_t* counts_e1, int64_t recv_so_far,
                                   const CollectiveTag& tag, int64_t seq) const {
  const int64_t declared = counts_e1[e_];
  const int64_t bound = opt_.max_recv_rows > 0 ? opt_.max_recv_rows : INT_MAX;
  int64_t sum = 0, bad_j = -1;
  for (int64_t j = 0; j < e_; ++j) {
    if (counts_e1[j] < 0 || counts_e1[j] > INT_MAX) {
      if (bad_j < 0) bad_j = j;
    } else {
      sum += counts_e1[j];  // at most e * INT_MAX: no overflow
    }
  }
  if (bad_j < 0 && sum == declared && recv_so_far + declared <= bound) return;
  std::ostringstream msg;
  msg << "dispatch count check failed: rank " << s << " -> rank " << r_ << ": ";
  if (bad_j >= 0) {
    msg << "count for local expert " << bad_j << " (global " << local_expert_ids()[bad_j] << ") is "
        << counts_e1[bad_j] << "; ";
  } else if (sum == declared) {
    msg << "with the " << recv_so_far << " rows from lower ranks this is over the receive bound "
        << bound << "; ";
  }
  msg << "per-expert counts sum to " << sum << " rows, declared total " << declared << " rows ("
      << Communicator::describe({"dispatch.counts", tag.layer, tag.step}, seq)
      << "); no payload was used";
  comm_->abort(kExitBadInput, msg.str());
}

void Dispatcher::exchange_counts(const int32_t* kept_E, int64_t A, const CollectiveTag& tag,
                                 DispatchHandle* handle) {
  SY_CHECK(handle != nullptr && kept_E != nullptr);
  const Clock::time_point t0 = Clock::now();
  DispatchHandle& h = *handle;
  const int P = P_;
  const int64_t e = e_, Pe = P * e_;
  h.owner_ = this;
  h.A_ = A;
  for (auto* v : {&h.send_counts_Pe_, &h.send_displs_Pe_, &h.recv_counts_Pe_, &h.recv_displs_Pe_}) {
    v->assign(static_cast<size_t>(Pe), 0);
  }
  for (auto* v : {&h.send_counts_P_, &h.send_displs_P_, &h.recv_counts_P_, &h.recv_displs_P_}) {
    v->assign(static_cast<size_t>(P), 0);
  }
  h.local_offsets_e1_.assign(static_cast<size_t>(e + 1), 0);

  // Send side: block (d, j) is the plan-order block of d's j-th global expert. Plan order is
  // grouped by global expert ascending, so expert g starts at the sum of kept_E below g.
  int64_t off = 0;
  for (int64_t g = 0; g < E_; ++g) {
    SY_CHECK_GE(kept_E[g], 0) << "kept_E[" << g << "]";
    plan_displs_E_[g] = off;
    off += kept_E[g];
  }
  SY_CHECK_EQ(off, A) << "dispatcher: kept_E must sum to the rows given";
  for (int d = 0; d < P; ++d) {
    const std::vector<int32_t>& experts = placement_.experts_of_rank[d];
    // kSingle (contiguous placement only): d's blocks are one run starting at its first.
    h.send_displs_P_[d] = plan_displs_E_[experts[0]];
    for (int64_t j = 0; j < e; ++j) {
      const int64_t n = kept_E[experts[j]];
      h.send_counts_Pe_[d * e + j] = n;
      h.send_displs_Pe_[d * e + j] = plan_displs_E_[experts[j]];
      count_send_Pe1_[d * (e + 1) + j] = n;
      h.send_counts_P_[d] += n;
    }
    count_send_Pe1_[d * (e + 1) + e] = h.send_counts_P_[d];  // the layout the payload uses
  }

  // SY_FAULT=corrupt_count: report a wrong count for the next rank's first local expert (what
  // is sent stays right), as a bit flip or a bug in the counting code would.
  if (const FaultSpec* f = find_fault(FaultKind::kCorruptCount, r_, tag.step, tag.layer)) {
    const int64_t delta = f->arg.empty() ? 1 : std::strtoll(f->arg.c_str(), nullptr, 10);
    const int d = (r_ + 1) % P;
    count_send_Pe1_[d * (e + 1)] += delta;
    std::fprintf(stderr,
                 "[switchyard] rank %d on %s: injected fault corrupt_count at step %lld layer %d: "
                 "count for rank %d expert %lld changed by %lld\n",
                 r_, host_name().c_str(), static_cast<long long>(tag.step), tag.layer, d,
                 static_cast<long long>(placement_.experts_of_rank[d][0]),
                 static_cast<long long>(delta));
    std::fflush(stderr);
  }

  const int64_t seq = comm_->seq();
  comm_->alltoall(count_send_Pe1_.data(), count_recv_Pe1_.data(), e + 1,
                  {"dispatch.counts", tag.layer, tag.step});

  // Check every source before anything is laid out from its counts.
  int64_t R = 0;
  for (int s = 0; s < P; ++s) {
    const int64_t* c = &count_recv_Pe1_[s * (e + 1)];
    check_counts_from(s, c, R, tag, seq);
    h.recv_displs_P_[s] = R;
    h.recv_counts_P_[s] = c[e];
    R += c[e];
    for (int64_t j = 0; j < e; ++j) {
      h.recv_counts_Pe_[s * e + j] = c[j];
      h.local_offsets_e1_[j + 1] += c[j];
    }
  }
  h.R_ = R;
  // Expert-major: local expert j's block holds source 0's rows, then source 1's, ...
  for (int64_t j = 0; j < e; ++j) {
    int64_t at = h.local_offsets_e1_[j];
    for (int s = 0; s < P; ++s) {
      h.recv_displs_Pe_[s * e + j] = at;
      at += h.recv_counts_Pe_[s * e + j];
    }
    h.local_offsets_e1_[j + 1] = at;
  }

  ExchangeLoad& st = h.stats_.load;
  const int64_t row_bytes = D_ * static_cast<int64_t>(sizeof(float));
  st.rows_sent_P = h.send_counts_P_;
  st.rows_recv_P = h.recv_counts_P_;
  st.bytes_sent_P.assign(P, 0);
  st.bytes_recv_P.assign(P, 0);
  for (int p = 0; p < P; ++p) {
    if (p == r_) continue;  // bytes count what crosses between ranks
    st.bytes_sent_P[p] = h.send_counts_P_[p] * row_bytes;
    st.bytes_recv_P[p] = h.recv_counts_P_[p] * row_bytes;
  }
  st.rows_recv_e.assign(static_cast<size_t>(e), 0);
  for (int64_t j = 0; j < e; ++j) {
    st.rows_recv_e[j] = h.local_offsets_e1_[j + 1] - h.local_offsets_e1_[j];
  }
  h.send_counts_P_[r_] = 0;  // kSingle copies the self block outside the alltoallv
  h.recv_counts_P_[r_] = 0;
  h.stats_.count_exchange_s = seconds_since(t0);
}

void Dispatcher::dispatch(const int32_t* kept_E, const float* rows_AD, int64_t A,
                          const CollectiveTag& tag, DispatchHandle* handle,
                          std::vector<float>* recv_RD) {
  SY_CHECK(recv_RD != nullptr);
  exchange_counts(kept_E, A, tag, handle);
  recv_RD->resize(static_cast<size_t>(handle->recv_rows() * D_));
  dispatch_rows(handle, rows_AD, recv_RD->data(), tag);
}

void Dispatcher::permute_remote(const DispatchHandle& h, const float* src, float* dst,
                                bool to_expert_major) const {
  for (int s = 0; s < P_; ++s) {
    if (s == r_) continue;
    int64_t staged = h.recv_displs_P_[s];
    for (int64_t j = 0; j < e_; ++j) {
      const int64_t n = h.recv_counts_Pe_[s * e_ + j], placed = h.recv_displs_Pe_[s * e_ + j];
      copy_rows(dst, to_expert_major ? placed : staged, src, to_expert_major ? staged : placed, n,
                D_);
      staged += n;
    }
  }
}

void Dispatcher::copy_self(const DispatchHandle& h, const float* src, float* dst,
                           bool to_expert_major) const {
  for (int64_t j = 0; j < e_; ++j) {
    const int64_t i = r_ * e_ + j, plan = h.send_displs_Pe_[i], placed = h.recv_displs_Pe_[i];
    copy_rows(dst, to_expert_major ? placed : plan, src, to_expert_major ? plan : placed,
              h.send_counts_Pe_[i], D_);
  }
}

namespace {
double bytes_per_s(int64_t bytes, double s) {
  return s > 0 && bytes > 0 ? static_cast<double>(bytes) / s : 0;
}
}  // namespace

void Dispatcher::dispatch_rows(DispatchHandle* handle, const float* rows_AD, float* out_RD,
                               const CollectiveTag& tag) {
  SY_CHECK(handle != nullptr && handle->owner_ == this)
      << "dispatch_rows needs a handle filled by this dispatcher's exchange_counts";
  const Clock::time_point t0 = Clock::now();
  DispatchHandle& h = *handle;
  const CollectiveTag rows_tag{"dispatch.rows", tag.layer, tag.step};
  if (opt_.mode == ExchangeMode::kBlocks) {
    SY_CHECK_OK(comm_->alltoallv_blocks(
        rows_AD, {e_, h.send_counts_Pe_.data(), h.send_displs_Pe_.data(), h.A_}, out_RD,
        {e_, h.recv_counts_Pe_.data(), h.recv_displs_Pe_.data(), h.R_}, D_, rows_tag));
  } else {
    scratch_grow(staging_RD_, h.R_ * D_);
    SY_CHECK_OK(comm_->alltoallv(
        rows_AD, {h.send_counts_P_.data(), h.send_displs_P_.data(), h.A_}, staging_RD_.data(),
        {h.recv_counts_P_.data(), h.recv_displs_P_.data(), h.R_}, D_, rows_tag));
    copy_self(h, rows_AD, out_RD, /*to_expert_major=*/true);
    permute_remote(h, staging_RD_.data(), out_RD, /*to_expert_major=*/true);
  }
  h.stats_.dispatch_s = seconds_since(t0);
  h.stats_.dispatch_bytes_per_s = bytes_per_s(h.stats_.load.remote_bytes(), h.stats_.dispatch_s);
}

void Dispatcher::return_rows(DispatchHandle* handle, const float* rows_RD, float* out_AD,
                             const CollectiveTag& tag) {
  SY_CHECK(handle != nullptr && handle->owner_ == this)
      << "return_rows needs a handle filled by this dispatcher's exchange_counts";
  const Clock::time_point t0 = Clock::now();
  DispatchHandle& h = *handle;
  const CollectiveTag rows_tag{"return.rows", tag.layer, tag.step};
  if (opt_.mode == ExchangeMode::kBlocks) {
    SY_CHECK_OK(comm_->alltoallv_blocks(
        rows_RD, {e_, h.recv_counts_Pe_.data(), h.recv_displs_Pe_.data(), h.R_}, out_AD,
        {e_, h.send_counts_Pe_.data(), h.send_displs_Pe_.data(), h.A_}, D_, rows_tag));
  } else {
    scratch_grow(staging_RD_, h.R_ * D_);
    permute_remote(h, rows_RD, staging_RD_.data(), /*to_expert_major=*/false);
    SY_CHECK_OK(comm_->alltoallv(
        staging_RD_.data(), {h.recv_counts_P_.data(), h.recv_displs_P_.data(), h.R_}, out_AD,
        {h.send_counts_P_.data(), h.send_displs_P_.data(), h.A_}, D_, rows_tag));
    copy_self(h, rows_RD, out_AD, /*to_expert_major=*/false);
  }
  h.stats_.return_s = seconds_since(t0);
  h.stats_.return_bytes_per_s = bytes_per_s(h.stats_.load.remote_bytes(), h.stats_.return_s);
}

void Dispatcher::start_rows(DispatchHandle* handle, bool to_experts, const float* src, float* dst,
                            int64_t j0, int64_t j1, const CollectiveTag& tag,
                            Communicator::Pending* x) {
  SY_CHECK(handle != nullptr && handle->owner_ == this)
      << "start_rows needs a handle filled by this dispatcher's exchange_counts";
  SY_CHECK(opt_.mode == ExchangeMode::kBlocks) << "chunked exchanges need ExchangeMode::kBlocks";
  SY_CHECK(0 <= j0 && j0 < j1 && j1 <= e_)
      << "start_rows: local experts [" << j0 << ", " << j1 << ") outside [0, " << e_ << ")";
  const Clock::time_point t0 = Clock::now();
  DispatchHandle& h = *handle;
  double& secs = to_experts ? h.stats_.dispatch_s : h.stats_.return_s;
  if (j0 == 0) secs = 0;
  // The chunk's columns of the [P, e] layouts: send counts, send displs, recv counts, recv displs.
  const int64_t n = j1 - j0, Pn = P_ * n;
  chunk_layout_.resize(static_cast<size_t>(4 * Pn));
  const std::vector<int64_t>* full[4] = {&h.send_counts_Pe_, &h.send_displs_Pe_, &h.recv_counts_Pe_,
                                         &h.recv_displs_Pe_};
  for (int k = 0; k < 4; ++k)
    for (int p = 0; p < P_; ++p)
      for (int64_t j = 0; j < n; ++j)
        chunk_layout_[k * Pn + p * n + j] = (*full[k])[p * e_ + j0 + j];
  const int64_t* c = chunk_layout_.data();
  const BlockLayout plan_side{n, c, c + Pn, h.A_}, expert_side{n, c + 2 * Pn, c + 3 * Pn, h.R_};
  const char* op = to_experts ? "dispatch.rows" : "return.rows";
  SY_CHECK_OK(comm_->start_alltoallv_blocks_bytes(
      src, to_experts ? plan_side : expert_side, dst, to_experts ? expert_side : plan_side,
      D_ * static_cast<int64_t>(sizeof(float)), {op, tag.layer, tag.step}, x));
  secs += seconds_since(t0);
}

void Dispatcher::finish_rows(DispatchHandle* handle, bool to_experts, Communicator::Pending* x) {
  SY_CHECK(handle != nullptr && handle->owner_ == this) << "finish_rows: not this dispatcher's";
  const Clock::time_point t0 = Clock::now();
  comm_->finish_alltoallv_blocks(x);
  DispatchStats& st = handle->stats_;
  const int64_t bytes = st.load.remote_bytes();
  if (to_experts) {
    st.dispatch_s += seconds_since(t0);
    st.dispatch_bytes_per_s = bytes_per_s(bytes, st.dispatch_s);
  } else {
    st.return_s += seconds_since(t0);
    st.return_bytes_per_s = bytes_per_s(bytes, st.return_s);
  }
}

}  // namespace sy
