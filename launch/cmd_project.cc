// `switchyard project TRACE[,TRACE...] [--ep 8,16,...] [--dp N] [--gpus-per-node G]
// [--cluster PRESET|FILE] [--capacity-factor c] [--tokens-per-rank N]
// [--placement contiguous|eplb|FILE] [--redundant-experts R] [--exchange-tokens N]
// [--measured RUNS] --out DIR`: each routing trace (one router) replayed at every P, exact
// counts and a cluster time model (runtime/project/projection.h); a table per router,
// DIR/projection.json and DIR/projection.html (charts against P); real runs' load reports
// beside it (launch/project_measured.h). `mpirun ... switchyard project --calibrate --out DIR`
// fits a cluster file instead (launch/project_calibrate.h).
// Exit codes: 0 ok; 21 an invalid setting (P that does not divide E, an unknown preset, an
// option not built yet); 22 a bad trace, cluster file or placement file, naming the file and the
// field.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "launch/commands.h"
#include "launch/config.h"
#include "launch/config_cli.h"
#include "launch/progress.h"
#include "launch/project_calibrate.h"
#include "launch/project_measured.h"
#include "runtime/io/hf_checkpoint.h"
#include "runtime/io/safetensors.h"
#include "runtime/project/cluster.h"
#include "runtime/project/eplb.h"
#include "runtime/project/projection.h"
#include "runtime/trace/trace_format.h"

namespace sy::launch {
namespace {

int fail(const Status& st) {
  std::fprintf(stderr, "switchyard project: %s\n", st.ToString().c_str());
  return st.exit_code();
}

StatusOr<std::vector<int>> parse_ranks(const std::string& list) {
  std::vector<int> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < 1 || v > (1 << 24))
      return InvalidArgument("--ep (ep): '" + item + "' is not a rank count in [1, 2^24]");
    out.push_back(static_cast<int>(v));
  }
  if (out.empty()) return InvalidArgument("--ep (ep): no rank count");
  return out;
}

// D and F of the trace's model: its checkpoint's config.json, or the default model's (the
// synthetic stack; --hidden / --ffn-hidden when the trace ran with other sizes).
Status model_sizes(const TraceMeta& m, int64_t* D, int64_t* F, std::string* from) {
  if (m.model != "synthetic") {
    const std::string path = m.model + "/config.json";
    StatusOr<nlohmann::json> read = read_json_object_file(path);
    if (!read.ok())
      return Status(read.status().code(),
                    read.status().message() + " (the trace's model; give --hidden, --ffn-hidden)");
    try {
      const nlohmann::json& j = *read;
      if (*D == 0) *D = j.at("hidden_size").get<int64_t>();
      if (*F == 0) *F = j.at("moe_intermediate_size").get<int64_t>();
    } catch (const std::exception& e) {
      return BadInput(path + ": hidden_size / moe_intermediate_size: " + e.what());
    }
    *from = path;
    return Status::Ok();
  }
  SY_ASSIGN_OR_RETURN(switchyard::RunConfig rc, load_run_config(""));
  if (*D == 0) *D = rc.moe().d_model();
  if (*F == 0) *F = rc.moe().ffn_hidden();
  *from = "the default model's (synthetic stack; --hidden / --ffn-hidden if it ran otherwise)";
  return Status::Ok();
}

Status set_placement(const switchyard::ProjectConfig& cfg, int ranks_per_node,
                     ProjectOptions* opt) {
  const std::string& p = cfg.placement();
  if (cfg.redundant_experts() < 0) return InvalidArgument("--redundant-experts must be >= 0");
  if (p == "contiguous") {
    if (cfg.redundant_experts() != 0)
      return InvalidArgument("--redundant-experts needs --placement eplb");
    return Status::Ok();
  }
  if (p == "eplb") {
    const int64_t R = cfg.redundant_experts();
    opt->placement_name = "eplb (" + std::to_string(R) + " redundant)";
    opt->placement = [R, ranks_per_node](const std::vector<int64_t>& load_E, int P) {
      return eplb_placement(load_E, P, ranks_per_node, R);
    };
    return Status::Ok();
  }
  SY_ASSIGN_OR_RETURN(ExpertPlacement file, read_placement_file(p));
  SY_RETURN_IF_ERROR(file.validate(/*allow_replicas=*/true));
  opt->placement_name = p;
  opt->placement = [file, p](const std::vector<int64_t>&, int P) -> StatusOr<ExpertPlacement> {
    if (P != file.ranks)
      return InvalidArgument("--placement " + p + " is for " + std::to_string(file.ranks) +
                             " ranks; --ep " + std::to_string(P) + " needs another");
    return file;
  };
  return Status::Ok();
}

std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  for (std::string d; std::getline(ss, d, ',');)
    if (!d.empty()) out.push_back(d);
  return out;
}

int run_project(const CommandConfig& cc) {
  switchyard::ProjectConfig cfg;
  if (Status st = cc.resolve(&cfg); !st.ok()) return fail(st);
  if (cc.print_config()) {
    std::printf("%s", config_text(cfg).c_str());
    return 0;
  }
  if (cfg.calibrate()) return run_calibrate(cfg);
  if (cfg.trace().empty()) return fail(InvalidArgument("TRACE (trace) is required"));
  if (cfg.out().empty()) return fail(InvalidArgument("--out (out) is required"));
  ProjectOptions opt;
  StatusOr<std::vector<int>> ranks = parse_ranks(cfg.ep());
  if (!ranks.ok()) return fail(ranks.status());
  opt.ranks = *ranks;
  opt.dp = cfg.dp();
  opt.capacity_factor = cfg.capacity_factor();
  opt.tokens_per_rank = cfg.tokens_per_rank();
  opt.tokens_per_exchange = cfg.exchange_tokens();
  if (cfg.deal() != "contiguous" && cfg.deal() != "interleaved")
    return fail(
        InvalidArgument("--deal must be contiguous or interleaved, not '" + cfg.deal() + "'"));
  opt.interleaved = cfg.deal() == "interleaved";
  opt.pairs_max_ranks = cfg.pairs_max_ranks();
  StatusOr<ClusterModel> cluster = resolve_cluster(cfg.cluster());
  if (!cluster.ok()) return fail(cluster.status());
  opt.cluster = *cluster;
  if (cfg.gpus_per_node() < 0) return fail(InvalidArgument("--gpus-per-node must be >= 0"));
  if (cfg.gpus_per_node() > 0) opt.cluster.gpus_per_node = cfg.gpus_per_node();
  if (Status st = set_placement(cfg, opt.cluster.gpus_per_node, &opt); !st.ok()) return fail(st);

  const std::vector<std::string> dirs = split_list(cfg.trace());
  const std::vector<std::string> runs = split_list(cfg.measured());
  std::vector<RouterProjection> results;
  std::string sizes_from;
  for (const std::string& dir : dirs) {
    StatusOr<Trace> t = read_trace(dir);
    if (!t.ok()) return fail(t.status());
    opt.hidden = cfg.hidden();
    opt.ffn_hidden = cfg.ffn_hidden();
    if (opt.hidden == 0 || opt.ffn_hidden == 0) {
      if (Status st = model_sizes(t->meta(), &opt.hidden, &opt.ffn_hidden, &sizes_from); !st.ok())
        return fail(st);
    }
    Progress progress("project " + t->meta().router, 1);
    int64_t last_total = 0;
    opt.progress = [&](int64_t done, int64_t total) {
      if (total != last_total) progress = Progress("project " + t->meta().router, total);
      last_total = total;
      progress.update(done);
    };
    StatusOr<RouterProjection> r = project_trace(*t, opt);
    if (!r.ok()) return fail(r.status());
    progress.update(last_total, /*final=*/true);
    results.push_back(std::move(*r));
  }
  for (const std::string& run : runs)
    if (Status st = add_measured_run(run, opt.hidden * 4, &results); !st.ok()) return fail(st);
  for (const RouterProjection& r : results) std::printf("%s", projection_text(r, opt).c_str());
  if (!sizes_from.empty()) std::printf("  D and F from %s\n", sizes_from.c_str());
  std::fflush(stdout);
  std::error_code ec;
  std::filesystem::create_directories(cfg.out(), ec);
  if (ec) return fail(Internal("cannot create " + cfg.out() + ": " + ec.message()));
  const std::string json = projection_json(results, opt);
  const std::string path = cfg.out() + "/projection.json";
  if (Status st = write_file_atomic(path, {{json.data(), json.size()}}); !st.ok()) return fail(st);
  std::printf("wrote %s\n", path.c_str());
  const std::string page = projection_html(results, opt);
  const std::string html_path = cfg.out() + "/projection.html";
  if (Status st = write_file_atomic(html_path, {{page.data(), page.size()}}); !st.ok())
    return fail(st);
  std::printf("wrote %s\n", html_path.c_str());
  return 0;
}

}  // namespace

void add_project_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand(
      "project",
      "Project routing traces to P ranks (up to 1,024 and beyond): exact rows, bytes, loads and "
      "drops per rank from the trace, dispatch/compute/combine time from a cluster model; a "
      "table per router and DIR/projection.json. Exit 21 on a bad setting, 22 on a bad file");
  auto c = std::make_shared<CommandConfig>(cmd, switchyard::ProjectConfig::default_instance());
  c->add_config_options();
  c->option("trace", "trace", "trace folder(s), comma-separated (one router each); required");
  c->option("--ep", "ep",
            "rank counts P, comma-separated (beyond E: E-way EP x P/E data parallel)");
  c->option("--dp", "dp", "data-parallel replicas of every P");
  c->option("--gpus-per-node", "gpus_per_node", "ranks per node (0: the cluster's)");
  c->option("--cluster", "cluster", "cluster preset (dgx-h100, dgx-a100) or cluster JSON file");
  c->option("--capacity-factor", "capacity_factor", "capacity factor (nan: the trace's)");
  c->option("--tokens-per-rank", "tokens_per_rank", "tokens each rank replays (0: trace / max P)");
  c->option("--placement", "placement", "contiguous | eplb | a placement file");
  c->option("--redundant-experts", "redundant_experts", "eplb: replicas beyond one per expert");
  c->option("--hidden", "hidden", "D, floats per row (0: the trace's model)");
  c->option("--ffn-hidden", "ffn_hidden", "F, expert hidden size (0: the trace's model)");
  c->option(
      "--exchange-tokens", "exchange_tokens",
      "tokens per rank in one exchange (a forward's batch; 0: all at once): times per exchange");
  c->option("--deal", "deal",
            "units to ranks: contiguous (the synthetic stack) or interleaved (rank q: q, q+P, ...; "
            "infer --model --seq-len and train)");
  c->option("--measured", "measured",
            "load-report folders of real runs (comma-separated): their counts and times beside the "
            "projection at their P");
  c->flag("--calibrate", "calibrate",
          "under mpirun: time the exchange between the job's ranks and hosts and one expert, fit "
          "the cluster model, write DIR/cluster.json (--out DIR)");
  c->option("--calibrate-iters", "calibrate_iters", "timed exchanges per calibration point");
  c->option("--out", "out", "folder for projection.json (or cluster.json); required");
  cmd->callback([c] { set_exit_code(run_project(*c)); });
}

}  // namespace sy::launch
