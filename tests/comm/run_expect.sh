#!/usr/bin/env bash
# Runs a multi-rank command and asserts how it ended (fault-injection tests, ulfm-testing
# style): the exit code, the wall time and a pattern in stderr.
#
#   run_expect.sh NP EXPECTED_EXIT MAX_SECONDS GREP_PATTERN -- CMD [ARGS...]
#
# EXPECTED_EXIT: a number, or "nonzero". GREP_PATTERN: an extended regex that stderr must
# match ("" = no check). SY_FAULT and SY_COLLECTIVE_TIMEOUT_S are forwarded to every rank when
# set. The run is bounded by `timeout 60` (exit 124), so a hang fails instead of blocking CI.
# MPIEXEC overrides the launcher (default mpirun).
set -u

if [[ $# -lt 6 || "$5" != "--" ]]; then
  echo "usage: $0 NP EXPECTED_EXIT MAX_SECONDS GREP_PATTERN -- CMD [ARGS...]" >&2
  exit 2
fi
np=$1 expect=$2 max_s=$3 pattern=$4
shift 5

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fwd=()
for v in SY_FAULT SY_COLLECTIVE_TIMEOUT_S; do
  if [[ -n "${!v+x}" ]]; then fwd+=(-x "$v"); fi
done

err=$(mktemp)
trap 'rm -f "$err"' EXIT
start=$(date +%s.%N)
timeout 60 "${MPIEXEC:-mpirun}" --oversubscribe -np "$np" "${fwd[@]}" "$@" 2>"$err"
rc=$?
end=$(date +%s.%N)
elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
cat "$err" >&2

fail=0
if [[ "$expect" == "nonzero" ]]; then
  [[ $rc -ne 0 ]] || { echo "run_expect: FAIL: exit 0, expected non-zero" >&2; fail=1; }
elif [[ $rc -ne $expect ]]; then
  echo "run_expect: FAIL: exit $rc, expected $expect" >&2
  fail=1
fi
if awk -v e="$elapsed" -v m="$max_s" 'BEGIN { exit !(e > m) }'; then
  echo "run_expect: FAIL: took $elapsed s, limit $max_s s" >&2
  fail=1
fi
if [[ -n "$pattern" ]] && ! grep -Eq -- "$pattern" "$err"; then
  echo "run_expect: FAIL: stderr does not match /$pattern/" >&2
  fail=1
fi
echo "run_expect: np=$np exit=$rc (expected $expect) time=${elapsed}s (max ${max_s}s)" \
  "SY_FAULT=${SY_FAULT-} SY_COLLECTIVE_TIMEOUT_S=${SY_COLLECTIVE_TIMEOUT_S-}"
exit $fail
