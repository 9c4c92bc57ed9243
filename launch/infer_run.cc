#include "launch/infer_run.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>

#include "comm/fault.h"
#include "comm/placement.h"
#include "launch/config.h"
#include "launch/progress.h"
#include "proto/report.pb.h"
#include "runtime/core/rng.h"
#include "runtime/io/npy.h"
#include "runtime/model/moe_stack.h"
#include "runtime/report/cluster_report.h"
#include "runtime/report/report_io.h"
#include "runtime/trace/trace_recorder.h"

namespace sy::launch {

namespace {

Status gather_hidden(Communicator* comm, const std::vector<float>& mine, int64_t T, int64_t D,
                     const std::string& path) {
  const int P = comm->size(), me = comm->rank();
  std::vector<int64_t> rows_P(static_cast<size_t>(P));
  const int64_t my_rows = static_cast<int64_t>(mine.size()) / D;
  comm->allgather(&my_rows, rows_P.data(), 1, {"dump.rows"});
  // Everyone sends its rows to rank 0 only; rank 0 lays them out in rank order, which is
  // global token order (ranks hold contiguous token ranges).
  std::vector<int64_t> sc(static_cast<size_t>(P), 0), sd(static_cast<size_t>(P), 0);
  std::vector<int64_t> rc(static_cast<size_t>(P), 0), rd(static_cast<size_t>(P), 0);
  sc[0] = my_rows;
  std::vector<float> all;
  if (me == 0) {
    int64_t off = 0;
    for (int p = 0; p < P; ++p) {
      rc[p] = rows_P[p];
      rd[p] = off;
      off += rows_P[p];
    }
    SY_CHECK_EQ(off, T);
    all.resize(static_cast<size_t>(T * D));
  }
  const VLayout send{sc.data(), sd.data(), my_rows};
  const VLayout recv{rc.data(), rd.data(), me == 0 ? T : 0};
  SY_RETURN_IF_ERROR(comm->alltoallv(mine.data(), send, all.data(), recv, D, {"dump.rows"}));
  if (me != 0) return Status::Ok();
  return npy_write_f32(path, all.data(), {T, D});
}

}  // namespace

StatusOr<InferResult> run_inference(const switchyard::RunConfig& cfg,
                                    const std::vector<int32_t>& ids, int64_t vocab_size,
                                    Communicator* comm, const InferOptions& opt) {
  const int P = comm->size(), me = comm->rank();
  MoeStackConfig sc = to_stack_config(cfg, vocab_size);
  sc.layer.group_tokens = cfg.data().group_tokens();
  sc.layer.exec = make_context("cpu", cfg.deterministic());
  if (!cfg.moe().placement().empty()) {  // checked against E and P by MoeLayer::create
    SY_ASSIGN_OR_RETURN(ExpertPlacement p, read_placement_file(cfg.moe().placement()));
    sc.layer.placement = std::make_shared<const ExpertPlacement>(std::move(p));
  }
  SY_ASSIGN_OR_RETURN(auto stack, MoeStack::create(sc, comm));
  const int64_t T = static_cast<int64_t>(ids.size()), D = sc.layer.d_model;
  if (me == 0 && sc.layer.expert_kind == ExpertKind::kSwiGLU) {
    // Per rank (rank 0's share; every rank holds E/P experts of the same shape).
    int64_t bytes = 0, fp32 = 0;
    for (int64_t l = 0; l < stack->num_layers(); ++l) {
      bytes += stack->layer(l).experts().weight_bytes();
      fp32 += 4 * stack->layer(l).experts().num_params();
    }
    const int bits = sc.layer.expert_bits;
    const std::string kind = bits == 32 ? "fp32" : "int" + std::to_string(bits);
    std::printf("expert weights per rank: %.1f MiB (%s, %.3fx fp32)\n",
                static_cast<double>(bytes) / (1 << 20), kind.c_str(),
                fp32 > 0 ? static_cast<double>(bytes) / static_cast<double>(fp32) : 1.0);
    std::fflush(stdout);
  }
  if (cfg.moe().router().hash_balanced()) {
    // Every rank counts the same global ids, so the replicated tables are identical.
    std::vector<int64_t> freq(static_cast<size_t>(vocab_size), 0);
    for (int32_t id : ids) ++freq[static_cast<size_t>(id)];
    for (int64_t l = 0; l < stack->num_layers(); ++l)  // validate_run_config: they fit one
      SY_RETURN_IF_ERROR(stack->layer(l).router().fit_token_table(freq));
  }
  const int64_t G = cfg.data().group_tokens(), B = cfg.data().batch_groups();
  const TokenShard shard = shard_tokens(T, G, B, me, P);
  const int L = static_cast<int>(stack->num_layers());

  switchyard::RankReport report;
  fill_rank_header(stack->layer(0), L, config_text(cfg), *comm, &report);
  std::vector<MoeLayer*> layers;
  for (int l = 0; l < L; ++l) layers.push_back(&stack->layer(l));
  std::unique_ptr<TraceRecorder> trace;
  if (!opt.trace_dir.empty()) {
    TraceMeta tm = trace_meta_from_layers(layers, me, P);
    tm.source = "infer";
    tm.model = "synthetic";
    tm.synthetic_routing = true;  // the stack's routers are always freshly initialised
    tm.probs = opt.trace_probs;
    trace = std::make_unique<TraceRecorder>(std::move(tm));
  }

  InferResult res;
  res.router = sc.layer.router.name;
  res.tokens = T;
  std::vector<RoutingMetrics> mine(static_cast<size_t>(L));
  std::vector<float> h, hidden;
  if (!opt.dump.empty())
    hidden.reserve(static_cast<size_t>((shard.token_end - shard.token_begin) * D));
  Progress progress(res.router + " x" + std::to_string(P) + " ranks", T);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < shard.steps; ++step) {
    const int64_t b = std::min(shard.token_end, shard.token_begin + step * B * G);
    const int64_t e = std::min(shard.token_end, b + B * G);
    const int64_t n = e - b;
    h.resize(static_cast<size_t>(n * D));
    stack->set_step(step);
    inject_process_faults(me, step);  // SY_FAULT=hang|kill|throw|exit|slow@rank=r,step=s
    SY_RETURN_IF_ERROR(stack->forward(ids.data() + b, n, h.data()));
    for (int l = 0; l < L; ++l) {
      MoeLayer& layer = stack->layer(l);
      int32_t bad = layer.last_finite() ? 0 : 1;
      comm->allreduce(&bad, 1, ReduceOp::kMax, {"finite.flag", l, step});
      if (bad)
        return Status(StatusCode::kNonFinite, "non-finite router scores at layer " +
                                                  std::to_string(l) + " step " +
                                                  std::to_string(step) + " (on some rank)");
      const RoutingMetrics part = layer_step_metrics(layer);
      routing_metrics_merge(part, &mine[static_cast<size_t>(l)]);
      if (!opt.out_dir.empty()) fill_layer_step(layer, l, step, part, report.add_entries());
    }
    if (trace) trace->add_range(step, layers, b, ids.data() + b, n);
    if (!opt.dump.empty()) hidden.insert(hidden.end(), h.begin(), h.end());
    // Progress in global tokens: every rank advances by about the same share.
    if (opt.progress && me == 0)
      progress.update(std::min(T, (step + 1) * B * G * P), step + 1 == shard.steps);
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report.set_wall_s(res.seconds);

  // Merge the metrics' sums over ranks (every rank gets the total).
  res.per_layer.resize(static_cast<size_t>(L));
  for (int l = 0; l < L; ++l)
    res.per_layer[static_cast<size_t>(l)] =
        merge_routing_metrics(comm, mine[static_cast<size_t>(l)], l, sc.layer.num_experts,
                              stack->layer(l).router().slots_per_token());

  if (!opt.out_dir.empty()) write_report_or_warn(opt.out_dir, report, me);
  if (trace) SY_RETURN_IF_ERROR(trace->write(opt.trace_dir));
  if (!opt.dump.empty()) SY_RETURN_IF_ERROR(gather_hidden(comm, hidden, T, D, opt.dump));
  return res;
}

int agree_config(Communicator& comm, const std::string& config_text) {
  const int64_t h = static_cast<int64_t>(fnv1a64(config_text.c_str()) >> 1);
  int64_t lo = h, hi = h;
  comm.allreduce(&lo, 1, ReduceOp::kMin, {"config.hash"});
  comm.allreduce(&hi, 1, ReduceOp::kMax, {"config.hash"});
  if (lo == hi) return 0;
  std::fprintf(stderr, "[switchyard] rank %d: config differs between ranks (hash %lld)\n",
               comm.rank(), static_cast<long long>(h));
  return kExitConfig;
}

int agree_status(Communicator& comm, const Status& s, const char* what) {
  int32_t code = s.ok() ? 0 : s.exit_code();
  comm.allreduce(&code, 1, ReduceOp::kMax, {"agree"});
  if (code == 0) return 0;
  // Only on failure: did every rank fail with the same message? Then rank 0 says it once.
  const std::string text = s.ToString();
  const int64_t h = s.ok() ? -1 : static_cast<int64_t>(fnv1a64(text.c_str()) >> 1);
  int64_t lo_hi[2] = {h, -h};  // kMin of both: the smallest hash and minus the largest
  comm.allreduce(lo_hi, 2, ReduceOp::kMin, {"agree.same"});
  const bool same_everywhere = lo_hi[0] >= 0 && lo_hi[0] == -lo_hi[1];
  if (same_everywhere) {
    if (comm.rank() == 0) std::fprintf(stderr, "[switchyard] %s: %s\n", what, text.c_str());
  } else if (!s.ok()) {
    std::fprintf(stderr, "[switchyard] rank %d: %s: %s\n", comm.rank(), what, text.c_str());
  }
  return code;
}

}  // namespace sy::launch
