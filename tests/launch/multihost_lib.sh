# Helpers of the multihost_*.sh tests (sourced after they set $bin, $work, $data, $src): two
# network-namespace hosts h1, h2 from launch/netns_cluster.sh. Sources e2e_lib.sh.
# shellcheck source=tests/launch/e2e_lib.sh
source "$src/tests/launch/e2e_lib.sh"
# mh_begin PREFIX SUBNET [tokenizer]: e2e_begin [tokenizer], then the cluster up (mh_up).
mh_begin() {
  e2e_begin "${3:-}"
  mh_up "$1" "$2"
}
# mh_up PREFIX SUBNET: a fresh 2-host cluster (removed when the script exits); exits 77 (skip)
# where namespaces cannot be made, saying why.
mh_up() {
  cluster=(bash "$src/launch/netns_cluster.sh" --prefix "$1" --subnet "$2")
  "${cluster[@]}" down
  "${cluster[@]}" up 2 >"$work/cluster-up.log" 2>&1
  local rc=$?
  cat "$work/cluster-up.log"
  [ $rc = 77 ] && exit 77
  [ $rc = 0 ] || { echo "FAIL cluster up: exit $rc"; exit 1; }
  trap '"${cluster[@]}" down' EXIT
}
# crun NP ARGS...: switchyard on NP ranks over h1, h2 (the first half on h1).
crun() {
  SY_BIN=$bin timeout 300 "${cluster[@]}" run "$@"
}
# local1 ARGS...: the same binary on 1 rank in the root namespace, the reference.
local1() {
  SY_BIN=$bin timeout 300 bash "$src/launch/mpirun.sh" 1 "$@"
}
same() {  # same NAME A B: byte-identical files
  if cmp -s "$2" "$3"; then echo "ok   $1 (bitwise)"; else echo "FAIL $1: $2 and $3 differ"; fail=1; fi
}
has() {  # has NAME PATTERN: the log of NAME matches PATTERN (grep -E)
  if grep -qE -- "$2" "$work/$1.log"; then echo "ok   $1 says '$2'"; else
    echo "FAIL $1: no '$2' in its log"; tail -n 15 "$work/$1.log"; fail=1; fi
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
procs_on() {  # procs_on HOST NAME: pids of NAME processes in host HOST's namespace
  local p
  for p in $("${cluster[@]}" pids "$1"); do
    [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && echo "$p"
  done
}
none_left() {  # none_left NAME: no switchyard process on h1 or h2 within 10 s
  local left=""
  for _ in $(seq 100); do
    left="$(procs_on h1 switchyard) $(procs_on h2 switchyard)"
    [ -z "${left// /}" ] && break
    sleep 0.1
  done
  if [ -n "${left// /}" ]; then echo "FAIL $1: switchyard processes left: $left"; fail=1
  else echo "ok   $1: no switchyard process left"; fi
}
