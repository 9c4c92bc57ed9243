#include "launch/commands.h"

#include <cstdlib>
#include <utility>

#include "runtime/core/check.h"

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

StatusOr<const ExecContext*> backend_context(const std::string& name, bool deterministic) {
  if (const ExecContext* c = make_context(name, deterministic)) return c;
  const std::string why = backend_unavailable(name);
  if (!why.empty()) return InvalidArgument("--backend '" + name + "' cannot run here: " + why);
  std::string known;
  for (const std::string& n : backend_names()) known += (known.empty() ? "" : ", ") + n;
  return InvalidArgument("--backend '" + name + "': no such backend (registered: " + known + ")");
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
