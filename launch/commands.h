// Subcommands of the switchyard binary. Each cmd_<name>.cc adds one CLI11 subcommand whose
// callback runs the command and records its exit code.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "runtime/backend/backend.h"
#include "runtime/core/status.h"

namespace sy::launch {

void register_commands(CLI::App& app);
// Exit code of the subcommand that ran (set by its callback).
int exit_code();
// The data folder: $SY_DATA_DIR, else the repository's data/ (fixed at build time).
std::string default_data_dir();
// The embedded default model: $SY_DEFAULT_MODEL, else the repository's models/default (built by
// launch/train_default.sh).
std::string default_model_dir();
void set_exit_code(int code);
// The job's communicator over every rank, by name from the communicator registry
// (comm/communicator.h): "mpi" (MpiRuntime must be up). A failure here is a bug or a broken MPI
// installation: fatal, with the registry's message.
std::unique_ptr<Communicator> open_world_communicator(const std::string& name = "mpi");
// This process's rank as the MPI launcher set it in the environment (Open MPI, MPICH / PMI,
// Slurm), before MPI is initialized; 0 when started without a launcher.
int launcher_rank();
// The context of --backend NAME (runtime/backend/backend.h's registry) with that deterministic
// flag and --precision (fp32 | bf16); InvalidArgument listing the registered backends when NAME
// is unknown, saying why when it cannot run here or has no bf16 GEMMs.
StatusOr<const ExecContext*> backend_context(const std::string& name, bool deterministic,
                                             const std::string& precision = "fp32");
class CommandConfig;
// The options that say where a model runs, on fields backend, comm and precision of the
// command's config: --backend (alias --device) NAME, --comm auto|mpi|nccl, --precision fp32|bf16.
// `what`: "runs", "trains", ...
void add_device_options(CommandConfig* c, const std::string& what);

// --comm KIND for a model on --backend NAME: the communicator its tensors move through (the
// MoE exchange, the gradient all-reduce). "mpi": `world` itself. "nccl": an NCCL communicator
// bootstrapped over `world` (comm/nccl_communicator.h), for a backend whose tensors are on GPUs
// (cuda); collective, every rank gets the same status. "auto": nccl for the cuda backend where
// this build has NCCL, else mpi. *owned keeps an opened communicator (null for `world`); it must
// be destroyed before `world`, by every rank. Call it after every rank has its backend context.
StatusOr<Communicator*> open_model_communicator(Communicator& world, const std::string& kind,
                                                const std::string& backend,
                                                std::unique_ptr<Communicator>* owned);

void add_routers_command(CLI::App& app);
void add_infer_command(CLI::App& app);
void add_compare_command(CLI::App& app);
void add_report_command(CLI::App& app);
void add_tokenize_command(CLI::App& app);
void add_init_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_trace_command(CLI::App& app);
void add_project_command(CLI::App& app);
void add_study_command(CLI::App& app);

}  // namespace sy::launch
