#include "launch/commands.h"

#include <cstdlib>
#include <utility>

#include "launch/config_cli.h"
#include "runtime/core/check.h"

#if SY_HAVE_NCCL
#include "comm/nccl_communicator.h"
#endif

namespace sy::launch {
namespace {
int g_exit_code = 0;
}

std::string default_data_dir() {
  if (const char* env = std::getenv("SY_DATA_DIR")) return env;
  return SY_DATA_DIR;
}

std::string default_model_dir() {
  if (const char* env = std::getenv("SY_DEFAULT_MODEL")) return env;
  return SY_DEFAULT_MODEL_DIR;
}

std::unique_ptr<Communicator> open_world_communicator(const std::string& name) {
  StatusOr<std::unique_ptr<Communicator>> c = make_communicator(name);
  SY_CHECK(c.ok()) << c.status().ToString();
  return std::move(c).value();
}

int launcher_rank() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"})
    if (const char* v = std::getenv(name)) return std::atoi(v);
  return 0;
}

StatusOr<const ExecContext*> backend_context(const std::string& name, bool deterministic,
                                             const std::string& precision) {
  StatusOr<GemmPrecision> p = parse_gemm_precision(precision);
  if (!p.ok()) return InvalidArgument("--precision: " + p.status().message());
  if (const ExecContext* c = make_context(name, deterministic, *p)) return c;
  const std::string why = backend_unavailable(name);
  if (!why.empty()) return InvalidArgument("--backend '" + name + "' cannot run here: " + why);
  if (make_context(name, deterministic) != nullptr)
    return InvalidArgument("--precision " + precision + ": the '" + name +
                           "' backend computes its GEMMs in fp32 only (bf16 is the cuda "
                           "backend's fast mode)");
  std::string known;
  for (const std::string& n : backend_names()) known += (known.empty() ? "" : ", ") + n;
  return InvalidArgument("--backend '" + name + "': no such backend (registered: " + known + ")");
}

void add_device_options(CommandConfig* c, const std::string& what) {
  c->option("--backend,--device", "backend",
            "where the model " + what +
                ": cpu; cuda (one GPU per rank, chosen by the local rank); devsim (the "
                "emulated device of the tests, one rank)");
  c->option("--comm", "comm",
            "the communicator of the model's tensors: auto (nccl with --backend cuda, else "
            "mpi), mpi, nccl")
      ->check(CLI::IsMember({"auto", "mpi", "nccl"}));
  c->option("--precision", "precision",
            "GEMM arithmetic: fp32, or bf16 (operands rounded to bf16, fp32 accumulation; "
            "--backend cuda; --deterministic GEMMs stay fp32)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
}

StatusOr<Communicator*> open_model_communicator(Communicator& world, const std::string& kind,
                                                const std::string& backend,
                                                std::unique_ptr<Communicator>* owned) {
  owned->reset();
#if SY_HAVE_NCCL
  constexpr bool kHaveNccl = true;
#else
  constexpr bool kHaveNccl = false;
#endif
  const bool gpu = backend == "cuda";
  if (kind == "mpi" || (kind == "auto" && !(gpu && kHaveNccl))) return &world;
  if (kind != "nccl" && kind != "auto")
    return InvalidArgument("--comm '" + kind + "': expected auto, mpi or nccl");
  if (!gpu)
    return InvalidArgument("--comm nccl moves GPU memory: it needs --backend cuda, not '" +
                           backend + "'");
  if (!kHaveNccl)
    return InvalidArgument(
        "--comm nccl: this build has no NCCL (CMake found no nccl.h / libnccl with CUDA)");
#if SY_HAVE_NCCL
  SY_ASSIGN_OR_RETURN(*owned, make_nccl_communicator(&world));
  return owned->get();
#else
  return &world;
#endif
}

int exit_code() {
  return g_exit_code;
}
void set_exit_code(int code) {
  g_exit_code = code;
}

void register_commands(CLI::App& app) {
  add_routers_command(app);
  add_infer_command(app);
  add_compare_command(app);
  add_report_command(app);
  add_tokenize_command(app);
  add_init_command(app);
  add_train_command(app);
  add_trace_command(app);
  add_project_command(app);
  add_study_command(app);
}

}  // namespace sy::launch
