#include "comm/dispatcher.h"

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "comm/fault.h"

namespace sy {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

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
    case ExchangeMode::kPerExpert:
      return "per_expert";
    case ExchangeMode::kSingle:
      return "single";
  }
  return "?";
}

int64_t DispatchStats::remote_bytes() const {
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
  // One row is one MPI element; its byte size must fit an int.
  if (D < 1 || D > INT_MAX / static_cast<int64_t>(sizeof(float))) {
    return InvalidArgument("dispatcher: hidden size " + std::to_string(D) + " outside [1, " +
                           std::to_string(INT_MAX / sizeof(float)) + "]");
  }
  if (options.max_recv_rows < 0) {
    return InvalidArgument("dispatcher: max_recv_rows " + std::to_string(options.max_recv_rows) +
                           " is negative (0 = no bound)");
  }
  return std::unique_ptr<Dispatcher>(new Dispatcher(comm, E, D, options));
}

Dispatcher::Dispatcher(Communicator* comm, int64_t E, int64_t D, const DispatcherOptions& options)
    : comm_(comm),
      E_(E),
      e_(E / comm->size()),
      D_(D),
      P_(comm->size()),
      r_(comm->rank()),
      opt_(options),
      count_send_Pe1_(static_cast<size_t>(P_ * (e_ + 1))),
      count_recv_Pe1_(static_cast<size_t>(P_ * (e_ + 1))) {}

void Dispatcher::check_counts_from(int s, const int64_t* counts_e1, int64_t recv_so_far,
                                   const CollectiveTag& tag, int64_t seq) const {
  const int64_t declared = counts_e1[e_];
  int64_t sum = 0;
  std::ostringstream why;
  for (int64_t j = 0; j < e_ && why.tellp() == 0; ++j) {
    if (counts_e1[j] < 0 || counts_e1[j] > INT_MAX) {
      why << "count for local expert " << j << " (global " << first_local_expert() + j << ") is "
          << counts_e1[j];
    }
    sum += counts_e1[j];
  }
  const int64_t bound = opt_.max_recv_rows > 0 ? opt_.max_recv_rows : INT_MAX;
  if (why.tellp() != 0) {
    // reported below
  } else if (sum != declared) {
    why << "its per-expert counts sum to " << sum << " rows but rank " << s << " declared "
        << declared << " rows";
  } else if (declared < 0 || recv_so_far + declared > bound) {
    why << "declared " << declared << " rows; with the " << recv_so_far
        << " rows from lower ranks that is over the receive bound " << bound;
  } else {
    return;
  }
  std::ostringstream msg;
  msg << "dispatch count check failed: rank " << s << " -> rank " << r_ << ": " << why.str() << " ("
      << Communicator::describe({"dispatch.counts", tag.layer, tag.step}, seq)
      << "); no payload was used";
  comm_->abort(kExitBadInput, msg.str());
}

void Dispatcher::exchange_counts(const int32_t* kept_E, int64_t A, const CollectiveTag& tag,
                                 DispatchHandle* handle) {
  SY_CHECK(handle != nullptr);
  SY_CHECK(kept_E != nullptr || E_ == 0);
  const Clock::time_point t0 = Clock::now();
  DispatchHandle& h = *handle;
  const int P = P_;
  const int64_t e = e_;
  h.owner_ = this;
  h.A_ = A;
  h.counts_Pe_.assign(static_cast<size_t>(P * e), 0);
  h.local_offsets_e1_.assign(static_cast<size_t>(e + 1), 0);
  h.send_counts_P_.assign(P, 0);
  h.send_displs_P_.assign(P, 0);
  h.recv_counts_P_.assign(P, 0);
  h.recv_displs_P_.assign(P, 0);
  h.round_send_counts_eP_.assign(static_cast<size_t>(e * P), 0);
  h.round_send_displs_eP_.assign(static_cast<size_t>(e * P), 0);
  h.round_recv_counts_eP_.assign(static_cast<size_t>(e * P), 0);
  h.round_recv_displs_eP_.assign(static_cast<size_t>(e * P), 0);

  // Send side: d's rows are the plan-order block of global experts [d*e, (d+1)*e).
  int64_t off = 0;
  for (int d = 0; d < P; ++d) {
    h.send_displs_P_[d] = off;
    for (int64_t j = 0; j < e; ++j) {
      const int64_t n = kept_E[d * e + j];
      SY_CHECK_GE(n, 0) << "kept_E[" << d * e + j << "]";
      h.round_send_counts_eP_[j * P + d] = n;
      h.round_send_displs_eP_[j * P + d] = off;
      count_send_Pe1_[d * (e + 1) + j] = n;
      off += n;
    }
    h.send_counts_P_[d] = off - h.send_displs_P_[d];
    count_send_Pe1_[d * (e + 1) + e] = h.send_counts_P_[d];  // the layout the payload uses
  }
  SY_CHECK_EQ(off, A) << "dispatcher: kept_E must sum to the rows given";

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
                 static_cast<long long>(d * e), static_cast<long long>(delta));
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
      h.counts_Pe_[s * e + j] = c[j];
      h.local_offsets_e1_[j + 1] += c[j];
    }
  }
  h.R_ = R;
  // Expert-major: local expert j's block holds source 0's rows, then source 1's, ...
  for (int64_t j = 0; j < e; ++j) {
    int64_t at = h.local_offsets_e1_[j];
    for (int s = 0; s < P; ++s) {
      h.round_recv_counts_eP_[j * P + s] = h.counts_Pe_[s * e + j];
      h.round_recv_displs_eP_[j * P + s] = at;
      at += h.counts_Pe_[s * e + j];
    }
    h.local_offsets_e1_[j + 1] = at;
  }

  DispatchStats& st = h.stats_;
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
  // kSingle moves the self block by memcpy, outside the alltoallv.
  h.send_counts_P_[r_] = 0;
  h.recv_counts_P_[r_] = 0;
  st.count_exchange_s = seconds_since(t0);
}

void Dispatcher::dispatch(const int32_t* kept_E, const float* rows_AD, int64_t A,
                          const CollectiveTag& tag, DispatchHandle* handle,
                          std::vector<float>* recv_RD) {
  SY_CHECK(recv_RD != nullptr);
  exchange_counts(kept_E, A, tag, handle);
  recv_RD->resize(static_cast<size_t>(handle->recv_rows() * D_));
  dispatch_rows(handle, rows_AD, recv_RD->data(), tag);
}

void Dispatcher::source_to_expert_major(const DispatchHandle& h, const float* src,
                                        float* dst) const {
  const int P = P_;
  for (int s = 0; s < P; ++s) {
    if (s == r_) continue;
    int64_t at = h.recv_displs_P_[s];
    for (int64_t j = 0; j < e_; ++j) {
      const int64_t n = h.counts_Pe_[s * e_ + j];
      copy_rows(dst, h.round_recv_displs_eP_[j * P + s], src, at, n, D_);
      at += n;
    }
  }
}

void Dispatcher::expert_to_source_major(const DispatchHandle& h, const float* src,
                                        float* dst) const {
  const int P = P_;
  for (int s = 0; s < P; ++s) {
    if (s == r_) continue;
    int64_t at = h.recv_displs_P_[s];
    for (int64_t j = 0; j < e_; ++j) {
      const int64_t n = h.counts_Pe_[s * e_ + j];
      copy_rows(dst, at, src, h.round_recv_displs_eP_[j * P + s], n, D_);
      at += n;
    }
  }
}

void Dispatcher::dispatch_rows(DispatchHandle* handle, const float* rows_AD, float* out_RD,
                               const CollectiveTag& tag) {
  SY_CHECK(handle != nullptr && handle->owner_ == this)
      << "dispatch_rows needs a handle filled by this dispatcher's exchange_counts";
  const Clock::time_point t0 = Clock::now();
  DispatchHandle& h = *handle;
  const int P = P_;
  const CollectiveTag rows_tag{"dispatch.rows", tag.layer, tag.step};
  if (opt_.mode == ExchangeMode::kPerExpert) {
    for (int64_t j = 0; j < e_; ++j) {
      SY_CHECK_OK(comm_->alltoallv(
          rows_AD, {&h.round_send_counts_eP_[j * P], &h.round_send_displs_eP_[j * P], h.A_}, out_RD,
          {&h.round_recv_counts_eP_[j * P], &h.round_recv_displs_eP_[j * P], h.R_}, D_, rows_tag));
    }
  } else {
    if (static_cast<int64_t>(staging_RD_.size()) < h.R_ * D_)
      staging_RD_.resize(static_cast<size_t>(h.R_ * D_));
    SY_CHECK_OK(comm_->alltoallv(
        rows_AD, {h.send_counts_P_.data(), h.send_displs_P_.data(), h.A_}, staging_RD_.data(),
        {h.recv_counts_P_.data(), h.recv_displs_P_.data(), h.R_}, D_, rows_tag));
    for (int64_t j = 0; j < e_; ++j) {  // the self block, straight from the plan order
      copy_rows(out_RD, h.round_recv_displs_eP_[j * P + r_], rows_AD,
                h.round_send_displs_eP_[j * P + r_], h.round_send_counts_eP_[j * P + r_], D_);
    }
    source_to_expert_major(h, staging_RD_.data(), out_RD);
  }
  h.stats_.dispatch_s = seconds_since(t0);
  const int64_t bytes = h.stats_.remote_bytes();
  h.stats_.dispatch_bytes_per_s =
      h.stats_.dispatch_s > 0 && bytes > 0 ? static_cast<double>(bytes) / h.stats_.dispatch_s : 0;
}

void Dispatcher::combine(DispatchHandle* handle, const float* rows_RD, float* out_AD,
                         const CollectiveTag& tag) {
  SY_CHECK(handle != nullptr && handle->owner_ == this)
      << "combine needs a handle filled by this dispatcher's exchange_counts";
  const Clock::time_point t0 = Clock::now();
  DispatchHandle& h = *handle;
  const int P = P_;
  const CollectiveTag rows_tag{"combine.rows", tag.layer, tag.step};
  if (opt_.mode == ExchangeMode::kPerExpert) {
    for (int64_t j = 0; j < e_; ++j) {
      SY_CHECK_OK(comm_->alltoallv(
          rows_RD, {&h.round_recv_counts_eP_[j * P], &h.round_recv_displs_eP_[j * P], h.R_}, out_AD,
          {&h.round_send_counts_eP_[j * P], &h.round_send_displs_eP_[j * P], h.A_}, D_, rows_tag));
    }
  } else {
    if (static_cast<int64_t>(staging_RD_.size()) < h.R_ * D_)
      staging_RD_.resize(static_cast<size_t>(h.R_ * D_));
    expert_to_source_major(h, rows_RD, staging_RD_.data());
    SY_CHECK_OK(comm_->alltoallv(
        staging_RD_.data(), {h.recv_counts_P_.data(), h.recv_displs_P_.data(), h.R_}, out_AD,
        {h.send_counts_P_.data(), h.send_displs_P_.data(), h.A_}, D_, rows_tag));
    for (int64_t j = 0; j < e_; ++j) {
      copy_rows(out_AD, h.round_send_displs_eP_[j * P + r_], rows_RD,
                h.round_recv_displs_eP_[j * P + r_], h.round_recv_counts_eP_[j * P + r_], D_);
    }
  }
  h.stats_.combine_s = seconds_since(t0);
  const int64_t bytes = h.stats_.remote_bytes();
  h.stats_.combine_bytes_per_s =
      h.stats_.combine_s > 0 && bytes > 0 ? static_cast<double>(bytes) / h.stats_.combine_s : 0;
}

}  // namespace sy
