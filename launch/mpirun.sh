#!/usr/bin/env bash
# Runs build/switchyard under Open MPI's mpirun:
#   bash launch/mpirun.sh NP SUBCOMMAND [ARGS...]     e.g.  bash launch/mpirun.sh 4 infer --out out/run
#   bash launch/mpirun.sh --hostfile HOSTS NP SUBCOMMAND [ARGS...]   # across nodes
# Adds --oversubscribe (more ranks than cores is fine for trying things out), allows running as
# root (containers), and passes SY_* and OPENBLAS_* variables to every rank. With --hostfile
# (Open MPI's format: one "NAME slots=K" a line) the ranks fill the hosts in turn, and the
# daemons' connections are kept alive by probes (2 s idle, then every 1 s, 3 lost = dead), so
# a host that stops answering (a cut link, a crashed machine) ends the job in seconds instead
# of leaving the other ranks waiting forever, and a failing job's ranks are killed at once
# (not SIGTERM, then SIGKILL a second later). launch/netns_cluster.sh runs this across network
# namespace "hosts" on one machine; launch/slurm.sbatch is the Slurm way. SY_BIN overrides
# the binary (default build/switchyard).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
hostfile=()
if [ "${1:-}" = --hostfile ]; then
  [ -r "${2:-}" ] || { echo "mpirun.sh: --hostfile: cannot read '${2:-}'" >&2; exit 2; }
  hostfile=(--hostfile "$2" --mca oob_tcp_keepalive_time 2 --mca oob_tcp_keepalive_intvl 1
    --mca oob_tcp_keepalive_probes 3 --mca odls_base_sigkill_timeout 0)
  shift 2
fi
np=${1:?usage: launch/mpirun.sh [--hostfile HOSTS] NP SUBCOMMAND [ARGS...]}
shift
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# One BLAS thread per rank unless the user chose otherwise: ranks already fill the cores.
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
xs=(-x OPENBLAS_NUM_THREADS)
for v in $(env | grep -oE '^(SY_[A-Z0-9_]+|OPENBLAS_[A-Z0-9_]+)' | sort -u); do xs+=(-x "$v"); done
exec mpirun --oversubscribe "${hostfile[@]+"${hostfile[@]}"}" -np "$np" "${xs[@]}" \
  "${SY_BIN:-$here/build/switchyard}" "$@"
