#!/usr/bin/env bash
# N "hosts" on this machine, each a network namespace with its own address, hostname and TCP
# stack, joined by a bridge: switchyard runs across them under mpirun over real TCP, and a
# test can kill, cut or black-hole one host (../shared/MULTIHOST.md is the measured recipe).
#
#   bash launch/netns_cluster.sh up N [--prefix P] [--subnet S]   # hosts h1..hN
#   bash launch/netns_cluster.sh run NP SUBCOMMAND [ARGS...]      # e.g. run 4 infer --out out/x
#   bash launch/netns_cluster.sh cut h2 | blackhole h2 | heal h2   # faults on h2's link
#   bash launch/netns_cluster.sh rate 1gbit | rate off             # every host's link rate
#   bash launch/netns_cluster.sh pids h2                           # processes "on" h2
#   bash launch/netns_cluster.sh down                              # ends them, removes all
#
# --prefix P (default sy) names the namespaces P-h1..P-hN and P-sw (the bridge), and --subnet
# S (three octets, default 10.211.1) their addresses S.1..S.N/24; give every cluster its own
# pair and several can coexist. Every command takes --prefix (`up` remembers the rest in
# /run/switchyard-netns/P). Inside, the hosts are named h1..hN (their hostname and each
# host's /etc/hosts), which is what Open MPI and switchyard's reports print. The subnet has
# no route out: only the hosts can reach each other.
#
# `run` starts launch/mpirun.sh --hostfile inside h1 (the root namespace has no address on the
# subnet, so remote daemons could not call back), NP ranks filling h1, h2, ... in turn
# (ceil(NP/N) per host), with Open MPI's rsh launcher running each host's daemon through
# `ip netns exec` instead of ssh. It passes what namespace hosts need: TCP (and shared memory
# within a host) on the subnet only, no binding (every host believes it owns every core) and
# yielding when idle. `up` makes TCP give up on an unanswered connection after 3.15 s in every
# host (fast_timeout), so MPI_Abort cannot wait on a cut host for minutes; mpirun.sh's oob
# keepalive detects a host that stops answering while the daemons are idle.
#
# Needs root, iproute2 (ip) and util-linux (unshare); `blackhole` needs nftables (nft).
# Where namespaces cannot be made, `up` says why and exits 77 (the ctest skip code).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
state_root=/run/switchyard-netns

die() { echo "netns_cluster: $*" >&2; exit 1; }
skip() { echo "netns_cluster: SKIP: $*" >&2; exit 77; }
usage() {
  sed -n '6,11p' "$0" | sed 's/^#  *//' >&2
  exit 2
}

prefix=sy subnet=10.211.1
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a value}; shift 2 ;;
    --subnet) subnet=${2:?--subnet needs a value}; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
  # after `run NP`, every word belongs to switchyard
  [ "${#args[@]}" -ge 2 ] && [ "${args[0]}" = run ] && { args+=("$@"); break; }
done
set -- "${args[@]+"${args[@]}"}"
[ $# -ge 1 ] || usage
cmd=$1
shift
[[ "$prefix" =~ ^[a-zA-Z0-9]{1,8}$ ]] || die "--prefix: 1-8 letters or digits, not '$prefix'"
state=$state_root/$prefix

ns() { echo "$prefix-$1"; }  # the namespace of host hN
hosts_of() {                 # the host names of this cluster, h1..hN
  local n
  n=$(cat "$state/n" 2>/dev/null) || die "no cluster '$prefix' (run: netns_cluster.sh up N --prefix $prefix)"
  for i in $(seq 1 "$n"); do echo "h$i"; done
}
check_host() {
  [[ "$1" =~ ^h[0-9]+$ ]] && ip netns list | grep -q "^$(ns "$1")\b" ||
    die "no host '$1' in cluster '$prefix' (hosts: $(hosts_of | tr '\n' ' '))"
}

# A connection whose data goes unacknowledged fails after 3 s (tcp_retries2=3: 15 x 200 ms) on
# every host hI. The 50 ms retransmission floor on the subnet's route makes that 3.15 s every
# time: with the default 200 ms floor, the check falls on the 3.0 s or the 6.2 s retransmission
# (measured: a cut link ended the job 5.5 s or 9.1 s after the cut, at random). The route
# comes back without it when the link is cut and restored, so `heal` sets it again.
fast_timeout() {
  local i=${1#h}
  ip netns exec "$(ns "$1")" sysctl -qw net.ipv4.tcp_retries2=3
  ip -n "$(ns "$1")" route replace "$(cat "$state/subnet").0/24" dev eth0 proto kernel scope link \
    src "$(cat "$state/subnet").$i" rto_min 50ms
}

# Ends every process in the cluster's namespaces by pid, then deletes them and their files.
down() {
  local left
  left=$(ip netns list 2>/dev/null | awk -v p="$prefix-" 'index($1, p) == 1 { print $1 }')
  for n in $left; do
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  done
  for n in $left; do
    for _ in $(seq 50); do [ -z "$(ip netns pids "$n" 2>/dev/null)" ] && break; sleep 0.1; done
    ip netns del "$n" 2>/dev/null || echo "netns_cluster: could not delete namespace $n" >&2
    rm -rf "/etc/netns/$n"
  done
  rm -rf "$state"
}

up() {
  local n=${1:-}
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 250 ] || die "up N: N from 1 to 250, not '$n'"
  [[ "$subnet" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "--subnet: three octets (10.211.1), not '$subnet'"
  [ "$(id -u)" -eq 0 ] || skip "network namespaces need root"
  command -v ip >/dev/null || skip "ip not found (apt-get install iproute2)"
  command -v unshare >/dev/null || skip "unshare not found (apt-get install util-linux)"
  ip netns list | grep -q "^$prefix-" && die "cluster '$prefix' is up already (netns_cluster.sh down --prefix $prefix)"
  ip netns add "$prefix-probe" 2>/dev/null || skip "ip netns add failed (no CAP_SYS_ADMIN or no netns support)"
  if ! ip netns exec "$prefix-probe" unshare --uts -- true 2>/dev/null; then
    ip netns del "$prefix-probe"
    skip "unshare --uts failed inside a namespace"
  fi
  if ! ip -n "$prefix-probe" link add eth0 type veth peer name p0 2>/dev/null; then
    ip netns del "$prefix-probe"
    skip "veth pairs cannot be made (no veth support)"
  fi
  ip netns del "$prefix-probe"
  trap 'down' ERR
  mkdir -p "$state"
  echo "$subnet" >"$state/subnet"
  local sw
  sw=$(ns sw)
  ip netns add "$sw"
  ip -n "$sw" link set lo up
  ip -n "$sw" link add br0 type bridge
  ip -n "$sw" link set br0 up
  for i in $(seq 1 "$n"); do
    local h
    h=$(ns "h$i")
    ip netns add "$h"
    ip -n "$h" link set lo up
    ip link add eth0 netns "$h" type veth peer name "p$i" netns "$sw"
    ip -n "$sw" link set "p$i" master br0
    ip -n "$sw" link set "p$i" up
    ip -n "$h" addr add "$subnet.$i/24" dev eth0
    ip -n "$h" link set eth0 up
    fast_timeout "h$i"
    # `ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts
    mkdir -p "/etc/netns/$h"
    { echo "127.0.0.1 localhost"; for j in $(seq 1 "$n"); do echo "$subnet.$j h$j"; done; } \
      >"/etc/netns/$h/hosts"
  done
  echo "$n" >"$state/n"
  # Open MPI's rsh launcher calls this instead of ssh: AGENT HOST COMMAND...
  cat >"$state/agent" <<EOF
#!/bin/bash
host=\$1; shift
exec ip netns exec "$prefix-\$host" unshare --uts -- /bin/bash -c "hostname \$host && \$*"
EOF
  chmod +x "$state/agent"
  trap - ERR
  echo "netns_cluster: $n hosts h1..h$n ($subnet.1-$n) up as namespaces $prefix-h1..$prefix-h$n"
}

run() {
  local np=${1:?usage: netns_cluster.sh run NP SUBCOMMAND [ARGS...]}
  shift
  [[ "$np" =~ ^[0-9]+$ ]] && [ "$np" -ge 1 ] || die "run NP: a rank count, not '$np'"
  local n per
  n=$(hosts_of | wc -l)
  per=$(((np + n - 1) / n))
  hosts_of | sed "s/\$/ slots=$per/" >"$state/hostfile"
  local sub
  sub=$(cat "$state/subnet")
  export OMPI_MCA_plm_rsh_agent=$state/agent OMPI_MCA_btl=tcp,self,vader OMPI_MCA_pml=ob1 \
    OMPI_MCA_btl_tcp_if_include=$sub.0/24 OMPI_MCA_oob_tcp_if_include=$sub.0/24 \
    OMPI_MCA_hwloc_base_binding_policy=none OMPI_MCA_mpi_yield_when_idle=1
  exec ip netns exec "$(ns h1)" unshare --uts -- /bin/bash -c 'hostname h1 && exec "$@"' bash \
    bash "$here/launch/mpirun.sh" --hostfile "$state/hostfile" "$np" "$@"
}

case "$cmd" in
  up) up "$@" ;;
  down) down ;;
  run) run "$@" ;;
  cut) check_host "${1:-}"; ip -n "$(ns "$1")" link set eth0 down ;;
  blackhole)
    check_host "${1:-}"
    command -v nft >/dev/null || skip "nft not found (apt-get install nftables)"
    # Drops every packet in and out of the host's eth0; the link stays up.
    ip netns exec "$(ns "$1")" nft -f - <<'EOF'
table netdev fault {
  chain in { type filter hook ingress device "eth0" priority 0; policy drop; }
  chain out { type filter hook egress device "eth0" priority 0; policy drop; }
}
EOF
    ;;
  heal)
    check_host "${1:-}"
    ip -n "$(ns "$1")" link set eth0 up
    fast_timeout "$1"
    if command -v nft >/dev/null; then
      ip netns exec "$(ns "$1")" nft delete table netdev fault 2>/dev/null || true
    fi
    ;;
  pids) check_host "${1:-}"; ip netns pids "$(ns "$1")" ;;
  rate)
    # A token bucket on every host's eth0 (egress): each host sends at most RATE (tc's units:
    # 1gbit, 500mbit); `off` removes it. ../shared/MULTIHOST.md measured 1gbit this way.
    r=${1:?rate RATE (e.g. 1gbit) or rate off}
    for h in $(hosts_of); do
      if [ "$r" = off ]; then
        ip netns exec "$(ns "$h")" tc qdisc del dev eth0 root 2>/dev/null || true
      else
        command -v tc >/dev/null || die "tc not found (apt-get install iproute2)"
        ip netns exec "$(ns "$h")" tc qdisc replace dev eth0 root tbf rate "$r" burst 256kb \
          latency 5ms || die "tc could not set rate '$r' on $h"
      fi
    done
    ;;
  *) usage ;;
esac
