#!/usr/bin/env bash
# The GPU check of issue 14, run ON a lent GPU machine (nvcc, CMake, ninja, g++, a CUDA driver;
# none of this project's Debian packages, no network) from the repository root, with gpu_kit/
# (made here by launch/gpu_pack.sh) carried beside the working tree:
#
#   bash launch/gpu_check.sh [OUT]        # OUT default out/gpu_check
#
# Phases, each timed and logged: unpack the kit (prefix.tar.gz -> $SY_GPU_KIT_PREFIX, default
# /tmp/switchyard-gpu-kit), configure (-G Ninja when ninja is there, else make;
# -DCMAKE_CUDA_ARCHITECTURES=90), build only what the check runs (switchyard, the executables
# the gpu-labelled tests run, the bench/*gpu* programs) on all cores, `ctest -L gpu`, then each
# bench program named *gpu* (its lines starting with '{' are kept), then end-to-end runs of the
# default model's shape (router fine-tuning fp32 and bf16 and inference with --comm nccl on the
# GPU, the same on 16 CPU ranks; inputs from gpu_kit/e2e). Writes OUT/gpu_check.md,
# OUT/gpu_check.json and the phase logs (at most 8 files: what a `run` call brings back).
# Budget: the whole script stops its phases at SY_GPU_CHECK_BUDGET_S (default 450 s, i.e.
# 7.5 minutes) and still writes the summary; a phase cut short says so.
#
# Environment (all optional): SY_GPU_CHECK_BUILD (build folder, default build-gpu/),
# SY_CUDA_ARCHS (default 90), SY_GPU_CHECK_EXTRA_TARGETS / SY_GPU_CHECK_EXTRA_TESTS (more targets
# to build / a ctest -R regex to run too; gpu_pack.sh --verify uses them on a CPU machine),
# SY_GPU_CHECK_NO_BENCH=1 (skip the benchmarks).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
OUT=${1:-$ROOT/out/gpu_check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
BUILD=${SY_GPU_CHECK_BUILD:-$ROOT/build-gpu}
KITROOT=${SY_GPU_KIT_PREFIX:-/tmp/switchyard-gpu-kit}
BUDGET=${SY_GPU_CHECK_BUDGET_S:-450}
ARCHS=${SY_CUDA_ARCHS:-90}
JOBS=$(nproc)
T_START=$(date +%s.%N)
# Scratch files stay out of OUT: a `run` call brings back at most 8 files from it.
S=$(mktemp -d /tmp/sy_gpu_check.XXXXXX)
trap 'rm -rf "$S"' EXIT
PHASES=$S/phases.tsv   # name <tab> seconds <tab> status <tab> note
: >"$PHASES"

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
left() { awk -v s="$T_START" -v b="$BUDGET" -v n="$(now)" 'BEGIN { printf "%d", b - (n - s) }'; }
say() { echo "gpu_check [$(elapsed "$T_START") s] $*"; }
phase_done() {  # name start status note
  local s
  s=$(elapsed "$2")
  printf '%s\t%s\t%s\t%s\n' "$1" "$s" "$3" "${4:-}" >>"$PHASES"
  say "phase $1: $3 in $s s${4:+ ($4)}"
}
# Runs "$@" with at most $1 seconds (the rest of the budget when less); 124 = cut off.
bounded() {
  local cap=$1 l
  shift
  l=$(left)
  [ "$cap" -gt "$l" ] && cap=$l
  [ "$cap" -lt 5 ] && return 124
  timeout -k 10 "$cap" "$@"
}

# ---- 1. the kit ----
t=$(now)
K=$KITROOT/prefix
TGZ=$ROOT/gpu_kit/prefix.tar.gz
kit_note=""
if [ -f "$TGZ" ]; then
  stamp=$(cksum <"$TGZ" | cut -d' ' -f1)
  if [ "$(cat "$K/.stamp" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$K" && mkdir -p "$KITROOT" && tar -xzf "$TGZ" -C "$KITROOT" && echo "$stamp" >"$K/.stamp"
    kit_note="unpacked to $K"
  else
    kit_note="already unpacked at $K"
  fi
  kit_status=ok
  # The kit's libraries come from Debian 12: a base system with an older glibc cannot load them
  # (libevent needs GLIBC_2.36): say so now rather than after the build.
  need=$(sed -n 's/^# needs at most GLIBC_\([0-9.]*\).*/\1/p' "$ROOT/gpu_kit/MANIFEST.txt" 2>/dev/null)
  have=$(ldd --version 2>/dev/null | head -n 1 | awk '{print $NF}')
  if [ -n "$need" ] && [ -n "$have" ] && \
     [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n 1)" != "$need" ]; then
    kit_status=failed
    kit_note="$kit_note; glibc $have here, the kit needs $need (MANIFEST.txt)"
  fi
else
  kit_status=missing
  kit_note="no gpu_kit/prefix.tar.gz (run launch/gpu_pack.sh and carry gpu_kit); using the system's packages"
fi
if [ -d "$K/usr" ]; then
  L=$K/usr/lib/x86_64-linux-gnu
  export PATH=$K/usr/bin:$PATH
  export LD_LIBRARY_PATH=$L:$L/openblas-pthread:$L/openmpi/lib:$L/pmix2/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export CMAKE_PREFIX_PATH=$K/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
  export PKG_CONFIG_PATH=$L/pkgconfig:$K/usr/share/pkgconfig:$L/openmpi/lib/pkgconfig:$L/openblas-pthread/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
  # Open MPI moved from /usr: OPAL_PREFIX relocates its libdir, plugins, wrapper data and help
  # files; PMIx likewise. /etc/openmpi does not move: Debian's settings from there follow.
  export OPAL_PREFIX=$K/usr
  # Debian's PMIx has absolute datadir/libdir compiled in and its plugin path in a conf file.
  P2=$L/pmix2
  export PMIX_PREFIX=$P2 PMIX_EXEC_PREFIX=$P2 PMIX_LIBDIR=$P2/lib PMIX_PKGLIBDIR=$P2/lib/pmix \
         PMIX_DATAROOTDIR=$P2/share PMIX_DATADIR=$P2/share PMIX_PKGDATADIR=$P2/share/pmix \
         PMIX_INCLUDEDIR=$P2/include PMIX_MCA_mca_base_component_path=$P2/lib/pmix
  export OMPI_MCA_btl_base_warn_component_unused=0 OMPI_MCA_mtl='^ofi' \
         OMPI_MCA_btl='^uct,openib,ofi' OMPI_MCA_pml='^ucx' OMPI_MCA_osc='^ucx,pt2pt'
fi
# A VM or container may refuse cross-memory attach (process_vm_readv): copy through shared memory.
export OMPI_MCA_btl_vader_single_copy_mechanism=none
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
phase_done kit "$t" "$kit_status" "$kit_note"

# ---- 2. the machine ----
t=$(now)
{
  echo "date: $(date -u +%FT%TZ)"
  echo "host: $(uname -n)"
  echo "cores: $JOBS x$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  echo "os: $( (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") || uname -sr)"
  echo "glibc: $(ldd --version 2>/dev/null | head -n 1)"
  if command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | head -n 4 | tr '\n' ';')"
  else
    echo "gpu: none (no nvidia-smi)"
  fi
  # nvcc: /usr/local/cuda (CMakeLists.txt's default), PATH, else a CUDA folder or PyTorch's wheels.
  NVCC=""
  for c in /usr/local/cuda/bin/nvcc "$(command -v nvcc 2>/dev/null)" /usr/local/cuda-*/bin/nvcc; do
    [ -n "$c" ] && [ -x "$c" ] && { NVCC=$c; break; }
  done
  echo "nvcc: ${NVCC:-none} $([ -n "$NVCC" ] && "$NVCC" --version | tail -n 2 | head -n 1)"
  echo "c++: $(command -v c++ g++ | head -n 1) $(g++ --version 2>/dev/null | head -n 1)"
  echo "cmake: $(command -v cmake) $(cmake --version 2>/dev/null | head -n 1)"
  echo "ninja: $(command -v ninja || echo none) $(ninja --version 2>/dev/null)"
  echo "ccache: $(command -v ccache || echo none)"
  echo "mpiexec: $(command -v mpiexec || echo none) $(mpiexec --version 2>/dev/null | head -n 1)"
  echo "protoc: $(command -v protoc || echo none) $(protoc --version 2>/dev/null)"
} >"$OUT/machine.txt" 2>&1
NVCC=$(sed -n 's/^nvcc: \([^ ]*\).*/\1/p' "$OUT/machine.txt")
[ "$NVCC" = none ] && NVCC=""
# NCCL: the CUDA folder's, else the nvidia-nccl wheel of PyTorch's python3 (include/ and
# lib/libnccl.so.2, no libnccl.so): a folder of links CMake can search like any prefix.
CUDA_DIR=""
[ -n "$NVCC" ] && CUDA_DIR=$(cd "$(dirname "$NVCC")/.." && pwd)
nccl_note=""
if [ -n "$CUDA_DIR" ] && [ -f "$CUDA_DIR/include/nccl.h" ]; then
  nccl_note="$CUDA_DIR/include/nccl.h"
elif [ -f /usr/include/nccl.h ]; then
  nccl_note=/usr/include/nccl.h
else
  wheel=$(python3 -c 'import nvidia.nccl as m, os; print(list(m.__path__)[0])' 2>/dev/null || true)
  if [ -n "$wheel" ] && [ -f "$wheel/include/nccl.h" ]; then
    shim=$KITROOT/nccl
    rm -rf "$shim" && mkdir -p "$shim/lib"
    ln -s "$wheel/include" "$shim/include"
    for so in "$wheel"/lib/libnccl.so*; do ln -s "$so" "$shim/lib/$(basename "$so")"; done
    [ -e "$shim/lib/libnccl.so" ] || ln -s "$(ls "$wheel"/lib/libnccl.so.* | head -n 1)" "$shim/lib/libnccl.so"
    export CMAKE_PREFIX_PATH=$shim:$CMAKE_PREFIX_PATH NCCL_ROOT=$shim NCCL_HOME=$shim
    export LD_LIBRARY_PATH=$shim/lib:$LD_LIBRARY_PATH
    nccl_note="PyTorch's wheel $wheel (linked at $shim)"
  else
    nccl_note="not found"
  fi
fi
echo "nccl: $nccl_note" >>"$OUT/machine.txt"
sed 's/^/  /' "$OUT/machine.txt"
phase_done machine "$t" ok

# ---- 3. configure ----
t=$(now)
GEN=() BUILDER=make
if command -v ninja >/dev/null 2>&1; then GEN=(-G Ninja) BUILDER=ninja; fi
# A build folder of another generator or source tree cannot be reused.
if [ -f "$BUILD/CMakeCache.txt" ] && {
     ! grep -qx "CMAKE_GENERATOR:INTERNAL=$([ $BUILDER = ninja ] && echo Ninja || echo 'Unix Makefiles')" "$BUILD/CMakeCache.txt" ||
     ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$ROOT" "$BUILD/CMakeCache.txt"; }; then
  rm -rf "$BUILD"
fi
cfg=(-S "$ROOT" -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$ARCHS")
[ -n "$NVCC" ] && cfg+=(-DCMAKE_CUDA_COMPILER="$NVCC")
# The kit's headers come from Debian 12 (g++ 12). From g++ 13 on, libstdc++ no longer pulls
# <cstdint> in transitively, and older headers (CLI11 2.1, protobuf 3.21) may lean on that: force
# it in, harmlessly, rather than lose a GPU run to it.
gxx_major=$(g++ -dumpversion 2>/dev/null | cut -d. -f1)
if [ "${gxx_major:-0}" -ge 13 ] 2>/dev/null; then
  cfg+=("-DCMAKE_CXX_FLAGS=-include cstdint")
fi
if command -v ccache >/dev/null 2>&1; then
  cfg+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
if [ -d "$K/usr" ]; then
  # The kit's OpenBLAS and MPI by path: CMakeLists.txt looks for cblas.h under /usr only.
  cfg+=(-DCBLAS_INCLUDE_DIR="$K/usr/include/x86_64-linux-gnu/openblas-pthread"
        -DOPENBLAS_LIB="$L/openblas-pthread/libopenblas.so"
        -DMPI_CXX_COMPILER="$K/usr/bin/mpicxx" -DMPIEXEC_EXECUTABLE="$K/usr/bin/mpiexec"
        -DProtobuf_PROTOC_EXECUTABLE="$K/usr/bin/protoc")
fi
bounded 180 cmake "${cfg[@]}" >"$OUT/configure.log" 2>&1
rc=$?
grep -E 'switchyard: CUDA path|CMake Error' "$OUT/configure.log" | head -n 20 | sed 's/^/  /'
if [ $rc -ne 0 ]; then phase_done configure "$t" failed "exit $rc; see configure.log"; fi
[ $rc -eq 0 ] && phase_done configure "$t" ok "$(grep -o 'CUDA path [A-Z]*' "$OUT/configure.log" | head -n 1)"

# ---- 4. build what the check runs ----
targets=()
tests_json=$S/tests.json
if [ $rc -eq 0 ]; then
  t=$(now)
  if [ $BUILDER = ninja ]; then
    # Targets by name: phony ones, and outputs at the top of the build folder (switchyard).
    all_targets=$(ninja -C "$BUILD" -t targets all 2>/dev/null | sed -n 's/^\([^ /:]*\): .*/\1/p')
  else
    all_targets=$(make -C "$BUILD" help 2>/dev/null | sed -n 's/^\.\.\. \([^ ]*\).*/\1/p')
  fi
  has_target() { grep -qxF -- "$1" <<<"$all_targets"; }
  want() {
    has_target "$1" || return 0
    printf '%s\n' "${targets[@]}" | grep -qxF -- "$1" || targets+=("$1")
  }
  want switchyard
  # Every executable the gpu tests (and the extra tests) run, by the paths in their commands.
  (cd "$BUILD" && ctest -L gpu --show-only=json-v1 >"$tests_json" 2>/dev/null)
  if [ -n "${SY_GPU_CHECK_EXTRA_TESTS:-}" ]; then
    (cd "$BUILD" && ctest -R "$SY_GPU_CHECK_EXTRA_TESTS" --show-only=json-v1 >"$tests_json.extra" 2>/dev/null)
  fi
  for f in "$tests_json" "$tests_json.extra"; do
    [ -s "$f" ] || continue
    for name in $(python3 - "$f" "$BUILD" <<'EOF'
import json, os, sys
d = json.load(open(sys.argv[1]))
b = os.path.realpath(sys.argv[2])
for t in d.get("tests", []):
    for a in t.get("command", []) or []:
        if os.path.realpath(a).startswith(b + os.sep):
            print(os.path.basename(a))
EOF
    ); do want "$name"; done
  done
  # The GPU benchmarks: bench/*gpu*.cc|cu, a target of the same name.
  for src in "$ROOT"/bench/*gpu*.cc "$ROOT"/bench/*gpu*.cu; do
    [ -f "$src" ] || continue
    n=$(basename "$src"); want "${n%.*}"
  done
  for x in ${SY_GPU_CHECK_EXTRA_TARGETS:-}; do want "$x"; done
  say "building ${targets[*]:-nothing} with $JOBS jobs"
  if [ ${#targets[@]} -gt 0 ]; then
    bounded $(( $(left) - 60 )) cmake --build "$BUILD" -j "$JOBS" --target "${targets[@]}" >"$OUT/build.log" 2>&1
    brc=$?
  else
    brc=0
  fi
  warn=$(grep -c -E 'warning:' "$OUT/build.log" 2>/dev/null || true)
  case $brc in
    0) phase_done build "$t" ok "${#targets[@]} targets, ${warn:-0} warnings" ;;
    124|137) phase_done build "$t" timeout "cut off by the budget; see build.log" ;;
    *) phase_done build "$t" failed "exit $brc; see build.log"
       grep -E -m 20 'error|Error' "$OUT/build.log" | sed 's/^/  /' ;;
  esac
  # Keep the log small enough to come back (16 MiB a file): its first and last 3000 lines.
  if [ "$(wc -l <"$OUT/build.log")" -gt 6000 ]; then
    { head -n 3000 "$OUT/build.log"; echo "... (cut) ..."; tail -n 3000 "$OUT/build.log"; } >"$OUT/build.log.cut"
    mv "$OUT/build.log.cut" "$OUT/build.log"
  fi
  # What the loader resolves for each built program (the kit, CUDA, the base system): a library
  # "not found" here fails the phase.
  if [ "$brc" -eq 0 ]; then
    t=$(now)
    : >"$OUT/ldd.txt"
    for x in "${targets[@]}"; do
      f=$(find "$BUILD" -maxdepth 3 -type f -perm -u+x -name "$x" | head -n 1)
      [ -n "$f" ] || continue
      { echo "== ${f#"$BUILD"/}"; ldd "$f"; } >>"$OUT/ldd.txt" 2>&1
    done
    missing_libs=$(grep 'not found' "$OUT/ldd.txt" | awk '{print $1}' | sort -u | tr '\n' ' ')
    if [ -n "$missing_libs" ]; then
      phase_done ldd "$t" failed "not found: $missing_libs"
    else
      phase_done ldd "$t" ok "$(grep -c '=>' "$OUT/ldd.txt") libraries resolved, none missing"
    fi
  fi
else
  brc=1
fi

# ---- 5. ctest -L gpu (+ the extra tests) ----
: >"$OUT/ctest.log"
# JUnit XML with each test's whole output (ctest cuts a passed test's to 1 KiB by default), so the
# summary can count the GoogleTest cases passed / skipped / failed inside each test.
junit=(--test-output-size-passed 4000000 --test-output-size-failed 4000000 --output-junit)
export GTEST_COLOR=no
if [ $rc -eq 0 ] && [ "$brc" -eq 0 ]; then
  t=$(now)
  n_gpu=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1])).get("tests",[])))' "$tests_json" 2>/dev/null || echo 0)
  if [ "$n_gpu" = 0 ]; then
    echo "no test carries the label gpu" >>"$OUT/ctest.log"
    phase_done ctest_gpu "$t" none "no test labelled gpu"
  else
    (cd "$BUILD" && bounded 240 ctest -L gpu --output-on-failure "${junit[@]}" "$S/ctest_gpu.xml") \
      >>"$OUT/ctest.log" 2>&1
    crc=$?
    phase_done ctest_gpu "$t" "$([ $crc -eq 0 ] && echo ok || { [ $crc -eq 124 ] && echo timeout || echo failed; })" \
      "$(grep -E '^[0-9]+% tests passed' "$OUT/ctest.log" | tail -n 1)"
  fi
  if [ -n "${SY_GPU_CHECK_EXTRA_TESTS:-}" ]; then
    t=$(now)
    (cd "$BUILD" && bounded 300 ctest -R "$SY_GPU_CHECK_EXTRA_TESTS" -j "$JOBS" --output-on-failure \
       "${junit[@]}" "$S/ctest_extra.xml") >>"$OUT/ctest.log" 2>&1
    crc=$?
    phase_done ctest_extra "$t" "$([ $crc -eq 0 ] && echo ok || echo failed)" \
      "-R $SY_GPU_CHECK_EXTRA_TESTS: $(grep -E '^[0-9]+% tests passed' "$OUT/ctest.log" | tail -n 1)"
  fi
  grep -E '^ *[0-9]+/[0-9]+ Test +#' "$OUT/ctest.log" | sed 's/^/  /'
fi

# ---- 6. the GPU benchmarks ----
: >"$OUT/bench.log"
BENCH_NOTE=""
if [ "${SY_GPU_CHECK_NO_BENCH:-0}" = 1 ]; then
  BENCH_NOTE="skipped (SY_GPU_CHECK_NO_BENCH=1)"
elif [ $rc -ne 0 ] || [ "$brc" -ne 0 ]; then
  BENCH_NOTE="skipped: the build did not finish"
else
  benches=()
  for b in "$BUILD"/bench/*gpu*; do
    [ -f "$b" ] && [ -x "$b" ] && benches+=("$b")
  done
  if [ ${#benches[@]} -eq 0 ]; then
    BENCH_NOTE="no GPU benchmark yet (no executable bench/*gpu* in the build)"
  fi
  # Line-buffered stdout, so that a benchmark cut off by the budget keeps the lines it printed.
  lb=()
  command -v stdbuf >/dev/null 2>&1 && lb=(stdbuf -oL)
  for b in "${benches[@]}"; do
    t=$(now)
    name=$(basename "$b")
    echo "### $name" >>"$OUT/bench.log"
    # The end-to-end runs (phase 7) keep the budget's last 120 s.
    (cd "$BUILD" && bounded $(( $(left) - 120 )) "${lb[@]}" "$b") >"$S/bench_$name.out" 2>>"$OUT/bench.log"
    brc2=$?
    cat "$S/bench_$name.out" >>"$OUT/bench.log"
    grep '^{' "$S/bench_$name.out" | sed "s/^/$name\t/" >>"$S/bench_lines.tsv"
    grep '^{' "$S/bench_$name.out" | sed 's/^/  /'
    case $brc2 in
      0) st=ok ;; 124|137) st=timeout ;; *) st="failed" ;;
    esac
    phase_done "bench:$name" "$t" "$st" "exit $brc2, $(grep -c '^{' "$S/bench_$name.out") JSON lines"
  done
fi
[ -n "$BENCH_NOTE" ] && say "bench: $BENCH_NOTE"

# ---- 7. end to end: the default model's shape on the GPU and on this machine's CPUs ----
# models/default.json initialised here (seed 7, as launch/train_default.sh; random weights do not
# change the speed), inputs from gpu_kit/e2e (gpu_pack.sh: GPT-2's tokenizer files, the State of
# the Union corpus as tokens). Router fine-tuning (train --what routers, 4,096 tokens a step:
# batch 16 on 1 GPU rank, batch 1 on each of 16 CPU ranks), then inference of the held-out
# sequences: tokens/s of each as JSON lines (program "e2e"), the median of the logged steps after
# the first. One GPU allows one rank: --comm nccl runs at P = 1 here.
E2E=$ROOT/gpu_kit/e2e
SYB=$BUILD/switchyard
if [ "${SY_GPU_CHECK_NO_BENCH:-0}" != 1 ] && [ -x "$SYB" ] && [ -f "$E2E/sotu.tokens" ] &&
   [ "$(left)" -gt 40 ]; then
  t=$(now)
  echo "### e2e" >>"$OUT/bench.log"
  M=$S/model
  bounded 60 "$SYB" init --arch qwen2_moe --config models/default.json --tokenizer "$E2E" \
    --seed 7 --out "$M" >>"$OUT/bench.log" 2>&1
  e2e_rc=0
  # e2e_run NAME RANKS ARGS...: one switchyard run under mpiexec, at most 75 s; its rate as a
  # JSON line. A step line ends "... N tok/s ETA ..."; infer prints "N tok/s" on its summary.
  e2e_run() {
    local name=$1 np=$2 log=$S/e2e_$1.log rc
    shift 2
    OPENBLAS_NUM_THREADS=1 bounded 75 mpiexec --oversubscribe -n "$np" "$SYB" "$@" >"$log" 2>&1
    rc=$?
    { echo "## $name: mpiexec -n $np switchyard $* (exit $rc)"; tail -n 25 "$log"; } >>"$OUT/bench.log"
    [ $rc -eq 0 ] || e2e_rc=$rc
    python3 - "$log" "$name" "$np" "$rc" "$*" >>"$S/e2e_lines.json" <<'PY'
import json, re, statistics, sys
log, name, np, rc, args = sys.argv[1:6]
text = open(log, errors="replace").read()
steps = [float(m) for m in re.findall(r"^step \d+/\d+ .* (\d+(?:\.\d+)?) tok/s", text, re.M)]
rate = statistics.median(steps[1:]) if len(steps) > 1 else None
if rate is None:
    m = re.findall(r"(\d+(?:\.\d+)?) tok(?:ens)?/s", text)
    rate = float(m[-1]) if m else None
print(json.dumps({"bench": "e2e", "run": name, "ranks": int(np), "exit": int(rc),
                  "tokens_per_s": rate, "steps_logged": len(steps), "args": args}))
PY
  }
  if [ -f "$M/config.json" ]; then
    ft=(train --what routers --model "$M" --token-file "$E2E/sotu.tokens" --seq-len 256
        --steps 12 --eval-every 0 --eval-tokens 4096 --log-every 1)
    e2e_run finetune_cuda_fp32 1 "${ft[@]}" --batch 16 --backend cuda
    e2e_run finetune_cuda_bf16 1 "${ft[@]}" --batch 16 --backend cuda --precision bf16
    e2e_run finetune_cpu_16ranks 16 "${ft[@]}" --batch 1 --backend cpu
    inf=(infer --model "$M" --token-file "$E2E/sotu.tokens" --seq-len 256 --max-tokens 65536)
    e2e_run infer_cuda_nccl 1 "${inf[@]}" --backend cuda --comm nccl
    e2e_run infer_cpu_16ranks 16 "${inf[@]}" --backend cpu
  else
    e2e_rc=1
    echo "init failed: no $M/config.json" >>"$OUT/bench.log"
  fi
  grep '^{' "$S/e2e_lines.json" 2>/dev/null | sed 's/^/e2e\t/' >>"$S/bench_lines.tsv"
  grep '^{' "$S/e2e_lines.json" 2>/dev/null | sed 's/^/  /'
  phase_done e2e "$t" "$([ $e2e_rc -eq 0 ] && echo ok || echo failed)" \
    "$(grep -c '^{' "$S/e2e_lines.json" 2>/dev/null || echo 0) runs; exit $e2e_rc"
elif [ "${SY_GPU_CHECK_NO_BENCH:-0}" != 1 ]; then
  say "e2e: skipped (no $SYB, no $E2E/sotu.tokens from gpu_pack.sh, or no budget left)"
fi

# ---- 8. the summary ----
total=$(elapsed "$T_START")
python3 - "$OUT" "$total" "$BENCH_NOTE" "$ARCHS" "$BUDGET" "$S" <<'EOF'
import json, os, re, sys
import xml.etree.ElementTree as ET
out, total, bench_note, archs, budget, scratch = sys.argv[1:7]
total = float(total)
machine = {}
for line in open(os.path.join(out, "machine.txt")):
    k, _, v = line.partition(":")
    machine[k.strip()] = v.strip()
phases = []
for line in open(os.path.join(scratch, "phases.tsv")):
    name, secs, status, note = (line.rstrip("\n").split("\t") + ["", "", "", ""])[:4]
    phases.append({"phase": name, "seconds": float(secs), "status": status, "note": note})

def gtest_counts(text):
    c = {}
    for key, pat in (("passed", r"\[  PASSED  \] (\d+) test"), ("skipped", r"\[  SKIPPED \] (\d+) test"),
                     ("failed", r"\[  FAILED  \] (\d+) test")):
        m = re.findall(pat, text or "")
        if m:
            c[key] = int(m[-1])
    return c

tests = []
for label, f in (("gpu", "ctest_gpu.xml"), ("extra", "ctest_extra.xml")):
    p = os.path.join(scratch, f)
    if not os.path.exists(p):
        continue
    for tc in ET.parse(p).getroot().iter("testcase"):
        status = {"run": "passed", "fail": "failed", "notrun": "skipped",
                  "disabled": "skipped"}.get(tc.get("status"), tc.get("status") or "?")
        if tc.find("failure") is not None:
            status = "failed"
        elif tc.find("skipped") is not None:
            status = "skipped"
        so = tc.find("system-out")
        text = so.text if so is not None and so.text else ""
        lines = [l.strip() for l in text.splitlines() if l.strip()]
        note = ""
        if status == "skipped" and lines:
            note = lines[-1][:200]
        elif status == "failed":
            fl = [l for l in lines if "Failure" in l or "FAILED" in l or "rror" in l]
            note = (fl[0] if fl else (lines[-1] if lines else ""))[:200]
        tests.append({"label": label, "name": tc.get("name"), "status": status,
                      "seconds": float(tc.get("time") or 0), "gtest": gtest_counts(text),
                      "note": note})
bench = []
p = os.path.join(scratch, "bench_lines.tsv")
if os.path.exists(p):
    for line in open(p):
        prog, _, js = line.rstrip("\n").partition("\t")
        try:
            bench.append({"program": prog, **json.loads(js)})
        except ValueError:
            bench.append({"program": prog, "unparsed": js})
ok = all(ph["status"] in ("ok", "none") for ph in phases) and all(t["status"] != "failed" for t in tests)
gpu_visible = not machine.get("gpu", "none").startswith("none")
summary = {"ok": ok, "gpu_visible": gpu_visible, "total_seconds": total, "budget_seconds": int(budget), "cuda_architectures": archs,
           "machine": machine, "phases": phases, "tests": tests, "bench": bench,
           "bench_note": bench_note}
json.dump(summary, open(os.path.join(out, "gpu_check.json"), "w"), indent=1)

md = ["# GPU check (launch/gpu_check.sh)", "",
      f"**{'OK' if ok else 'NOT OK'}** in {total:.0f} s (budget {budget} s), CUDA architectures {archs}."
      + ("" if gpu_visible else " No GPU visible: the gpu tests skipped and nothing was measured."), ""]
for k in ("gpu", "nvcc", "c++", "cmake", "ninja", "os", "glibc", "cores", "nccl"):
    if k in machine:
        md.append(f"- {k}: {machine[k]}")
md += ["", "## Phases", "", "| phase | seconds | status | note |", "|---|---:|---|---|"]
md += [f"| {p['phase']} | {p['seconds']:.1f} | {p['status']} | {p['note']} |" for p in phases]
md += ["", "## Tests", ""]
if tests:
    md += ["| label | test | status | seconds | gtest cases | note |", "|---|---|---|---:|---|---|"]
    for t in tests:
        g = ", ".join(f"{v} {k}" for k, v in t["gtest"].items())
        n = t["note"].replace("|", "/")
        md.append(f"| {t['label']} | {t['name']} | {t['status']} | {t['seconds']:.2f} | {g} | {n} |")
else:
    md.append("No test ran (see the phases).")
md += ["", "## Benchmarks", ""]
if bench_note:
    md.append(bench_note)
for b in bench:
    md.append("- `" + json.dumps(b, separators=(",", ":")) + "`")
open(os.path.join(out, "gpu_check.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF
say "done in $total s; $OUT/gpu_check.md, $OUT/gpu_check.json"
python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["ok"] else 1)' "$OUT/gpu_check.json"
