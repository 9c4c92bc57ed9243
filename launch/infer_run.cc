#include "launch/infer_run.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
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
    const StepTimer timer(*comm);
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
    if (!opt.out_dir.empty()) *report.add_step_times() = timer.stop(step);
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

  if (!opt.out_dir.empty()) write_rank_reports(*comm, opt.out_dir, report);
  if (trace) SY_RETURN_IF_ERROR(trace->write(opt.trace_dir));
  if (!opt.dump.empty()) SY_RETURN_IF_ERROR(gather_hidden(comm, hidden, T, D, opt.dump));
  return res;
}

std::vector<Setting> config_settings(const std::string& config_text) {
  std::vector<Setting> out;
  std::vector<std::string> scope;   // the enclosing messages' field names
  std::map<std::string, int> seen;  // repeated fields: how many values so far
  size_t pos = 0;
  while (pos < config_text.size()) {
    size_t eol = config_text.find('\n', pos);
    if (eol == std::string::npos) eol = config_text.size();
    std::string line = config_text.substr(pos, eol - pos);
    pos = eol + 1;
    const size_t b = line.find_first_not_of(' ');
    if (b == std::string::npos) continue;
    line = line.substr(b);
    std::string prefix;
    for (const std::string& s : scope) prefix += s + ".";
    if (line == "}") {
      if (!scope.empty()) scope.pop_back();
    } else if (line.size() > 2 && line.compare(line.size() - 2, 2, " {") == 0) {
      scope.push_back(line.substr(0, line.size() - 2));
    } else {
      const size_t colon = line.find(": ");
      const std::string name = prefix + line.substr(0, colon);
      const int n = seen[name]++;
      out.push_back({n == 0 ? name : name + "[" + std::to_string(n) + "]",
                     colon == std::string::npos ? "" : line.substr(colon + 2)});
    }
  }
  return out;
}

namespace {

constexpr size_t kMaxSettingsBytes = 16 << 10;  // per rank, gathered only on a mismatch
constexpr int kMaxDifferencesShown = 20;
constexpr size_t kMaxValueShown = 60;

std::string serialize_settings(const std::vector<Setting>& settings) {
  std::string s;
  for (const Setting& x : settings) s += x.name + '\t' + x.value + '\n';
  return s;
}

// "0-3, 5" from sorted ranks.
std::string rank_ranges(const std::vector<int>& ranks) {
  std::string out;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    out += (out.empty() ? "" : ", ") + std::to_string(ranks[i]);
    if (j > i) out += "-" + std::to_string(ranks[j]);
    i = j + 1;
  }
  return out;
}

// Rank 0: the settings of every rank (gathered), the differing ones printed.
void print_differences(const std::vector<std::string>& per_rank, const char* what) {
  const int P = static_cast<int>(per_rank.size());
  std::vector<std::string> order;                       // names in first-seen order
  std::map<std::string, std::map<int, std::string>> v;  // name -> rank -> value
  for (int r = 0; r < P; ++r) {
    const std::string& s = per_rank[static_cast<size_t>(r)];
    size_t pos = 0;
    while (pos < s.size()) {
      size_t eol = s.find('\n', pos);
      if (eol == std::string::npos) eol = s.size();
      const std::string line = s.substr(pos, eol - pos);
      pos = eol + 1;
      const size_t tab = line.find('\t');
      if (tab == std::string::npos) continue;
      const std::string name = line.substr(0, tab);
      if (!v.count(name)) order.push_back(name);
      v[name][r] = line.substr(tab + 1);
    }
  }
  std::string out;
  int shown = 0, differing = 0;
  for (const std::string& name : order) {
    std::map<std::string, std::vector<int>> by_value;
    for (int r = 0; r < P; ++r) {
      auto it = v[name].find(r);
      by_value[it == v[name].end() ? "(not set)" : it->second].push_back(r);
    }
    if (by_value.size() == 1) continue;
    ++differing;
    if (shown++ >= kMaxDifferencesShown) continue;
    out += "  " + name + ":";
    for (const auto& [value, ranks] : by_value) {
      const std::string shown_value =
          value.size() > kMaxValueShown ? value.substr(0, kMaxValueShown) + "..." : value;
      out += " " + shown_value + " on rank" + (ranks.size() > 1 ? "s " : " ") + rank_ranges(ranks) +
             ";";
    }
    out.back() = '\n';
  }
  if (differing > kMaxDifferencesShown)
    out += "  ... and " + std::to_string(differing - kMaxDifferencesShown) + " more\n";
  if (differing == 0) out = "  (the differences lie past the first 16 KiB of settings)\n";
  std::fprintf(stderr, "[switchyard] %s differs between ranks (%d setting%s):\n%s", what, differing,
               differing == 1 ? "" : "s", out.c_str());
}

}  // namespace

int agree_settings(Communicator& comm, const std::vector<Setting>& settings, const char* what,
                   int exit_code) {
  std::string mine = serialize_settings(settings);
  const int64_t h = static_cast<int64_t>(fnv1a64(mine) >> 1);
  int64_t lo_hi[2] = {h, -h};  // kMin of both: the smallest hash and minus the largest
  comm.allreduce(lo_hi, 2, ReduceOp::kMin, {"settings.hash"});
  if (lo_hi[0] == -lo_hi[1]) return 0;
  // They differ: gather every rank's settings (cut at 64 KiB) and let rank 0 name the fields.
  if (mine.size() > kMaxSettingsBytes) mine.resize(kMaxSettingsBytes);
  const int P = comm.size();
  const int64_t my_len = static_cast<int64_t>(mine.size());
  std::vector<int64_t> lens(static_cast<size_t>(P));
  comm.allgather(&my_len, lens.data(), 1, {"settings.sizes"});
  const int64_t width = *std::max_element(lens.begin(), lens.end());
  std::vector<char> all(static_cast<size_t>(width * P)), padded(static_cast<size_t>(width));
  std::copy(mine.begin(), mine.end(), padded.begin());
  comm.allgather_bytes(padded.data(), all.data(), width, 1, {"settings.text"});
  if (comm.rank() == 0) {
    std::vector<std::string> per_rank;
    for (int r = 0; r < P; ++r)
      per_rank.emplace_back(all.data() + r * width,
                            static_cast<size_t>(lens[static_cast<size_t>(r)]));
    print_differences(per_rank, what);
  }
  return exit_code;
}

int agree_config(Communicator& comm, const std::string& config_text) {
  return agree_settings(comm, config_settings(config_text), "the configuration");
}

std::vector<FaultKind> infer_fault_kinds() {
  std::vector<FaultKind> k = process_fault_kinds();
  k.insert(k.end(), {FaultKind::kCorruptCount, FaultKind::kEnospc});
  return k;
}

std::vector<FaultKind> study_fault_kinds() {
  std::vector<FaultKind> k = infer_fault_kinds();
  k.insert(k.end(), {FaultKind::kNanLogits, FaultKind::kInfGrad});
  return k;
}

std::vector<FaultKind> train_fault_kinds() {
  std::vector<FaultKind> k = study_fault_kinds();
  k.insert(k.end(), {FaultKind::kCrashInSave, FaultKind::kBitflipOnWrite});
  return k;
}

int agree_tokens(Communicator& comm, const std::vector<int32_t>& ids, const char* what) {
  char hex[17];  // the ids hashed where they are, not copied
  std::snprintf(hex, sizeof hex, "%016llx",
                static_cast<unsigned long long>(fnv1a64(ids.data(), ids.size() * sizeof(int32_t))));
  return agree_settings(comm, {{"tokens", std::to_string(ids.size()) + " ids, hash " + hex}}, what);
}

int agree_model(Communicator& comm, const HfCheckpoint& ck, const char* what, int64_t resume_step) {
  std::vector<Setting> s = {{"model identity", ck.identity()}};
  if (resume_step >= 0) s.push_back({"checkpoint step", std::to_string(resume_step)});
  const std::string label =
      std::string(what) + (resume_step >= 0 ? ": the checkpoint" : ": the model");
  return agree_settings(comm, s, label.c_str(), resume_step >= 0 ? kExitCheckpoint : kExitConfig);
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
