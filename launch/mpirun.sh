#!/usr/bin/env bash
# Runs build/switchyard under Open MPI's mpirun on this machine:
#   bash launch/mpirun.sh NP SUBCOMMAND [ARGS...]     e.g.  bash launch/mpirun.sh 4 infer --out out/run
# Adds --oversubscribe (more ranks than cores is fine for trying things out), allows running as
# root (containers), and passes SY_* and OPENBLAS_* variables to every rank. Across nodes, call
# mpirun yourself with --hostfile (see README) or use launch/slurm.sbatch.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
np=${1:?usage: launch/mpirun.sh NP SUBCOMMAND [ARGS...]}
shift
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# One BLAS thread per rank unless the user chose otherwise: ranks already fill the cores.
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}
xs=(-x OPENBLAS_NUM_THREADS)
for v in $(env | grep -oE '^(SY_[A-Z0-9_]+|OPENBLAS_[A-Z0-9_]+)' | sort -u); do xs+=(-x "$v"); done
exec mpirun --oversubscribe -np "$np" "${xs[@]}" "$here/build/switchyard" "$@"
