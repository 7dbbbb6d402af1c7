# Shared helpers of the VRRP namespace scenarios (sourced). Topology:
#
#   ns $BR: bridge br0 ── pa ─ eth0 @ ns $NA (lb1, 10.99.0.11)
#                     ├── pb ─ eth0 @ ns $NB (lb2, 10.99.0.12)
#                     └── pc ─ eth0 @ ns $NC (client, 10.99.0.1)
#
# Names carry the PID so parallel runs never collide; cleanup() runs on every exit.
set -u
if [ "$(id -u)" != 0 ]; then echo "SKIP: network namespaces need root"; exit 77; fi
HALB=${1:?usage: $0 HALB VRRP_PROBE}
PROBE=${2:?usage: $0 HALB VRRP_PROBE}
TAG=hv$$
BR=$TAG-br NA=$TAG-a NB=$TAG-b NC=$TAG-c
WORK=$(mktemp -d /tmp/halb-vrrp-XXXXXX)
VIP=10.99.0.100
PORT=7777
PIDS=()      # every process we started, killed by PID on exit
FAILS=0
PASSES=0

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [ -n "${EXTRA_CLEANUP:-}" ] && eval "$EXTRA_CLEANUP"
  for ns in $NA $NB $NC $BR; do ip netns del "$ns" 2>/dev/null; done
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ms() { date +%s%3N; }
log() { echo "[$(date +%T.%3N)] $*"; }
pass() { PASSES=$((PASSES + 1)); log "PASS: $*"; }
fail() { FAILS=$((FAILS + 1)); log "FAIL: $*"; }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; return 1; fi; }

setup_topology() {
  ip netns add $BR && ip netns add $NA && ip netns add $NB && ip netns add $NC || exit 1
  ip -n $BR link add br0 type bridge
  ip -n $BR link set br0 up
  local side ns addr
  for side in a b c; do
    case $side in a) ns=$NA addr=10.99.0.11 ;; b) ns=$NB addr=10.99.0.12 ;; c) ns=$NC addr=10.99.0.1 ;; esac
    ip -n $BR link add p$side type veth peer name eth0 netns $ns
    ip -n $BR link set p$side master br0
    ip -n $BR link set p$side up
    ip -n $ns link set lo up
    ip -n $ns addr add $addr/24 dev eth0
    ip -n $ns link set eth0 up
  done
  # Let the client learn neighbours from gratuitous ARP the Linux way (update, not create).
  ip netns exec $NC sysctl -qw net.ipv4.conf.eth0.arp_accept=0
  if [ "${CAPTURE:-0}" = 1 ]; then  # debugging aid: ARP and VRRP as the client sees them
    ip netns exec $NC tcpdump -i eth0 -nn -e -tt -l 'arp or ip proto 112' > "$WORK/client.pcap.txt" 2>/dev/null &
    PIDS+=("$!")
  fi
}

# start_halb NS NODE CONFIG -> PID in $LAST_PID, log in $WORK/NODE.log
start_halb() {
  ip netns exec "$1" "$HALB" run -c "$3" --node "$2" >> "$WORK/$2.log" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

start_responder() {
  ip netns exec "$1" "$PROBE" serve $PORT "$2" > /dev/null 2>&1 &
  PIDS+=("$!")
}

has_vip() { ip -n "$1" -o addr show dev eth0 | grep -q " ${2:-$VIP}/"; }
vip_count() { local n=0 ns; for ns in $NA $NB; do has_vip $ns && n=$((n + 1)); done; echo $n; }
vip_holder() { if has_vip $NA; then echo lb1; elif has_vip $NB; then echo lb2; else echo none; fi; }

# wait_for TIMEOUT_MS CMD...: polls every 10 ms; true when CMD succeeded in time.
wait_for() {
  local deadline=$(( $(now_ms) + $1 )); shift
  while [ "$(now_ms)" -lt $deadline ]; do "$@" && return 0; sleep 0.01; done
  "$@"
}

status_of() { ip netns exec "$1" curl -s --max-time 1 http://127.0.0.1:9100/status; }

# probe_start DURATION_MS -> output file in $PROBE_OUT
probe_start() {
  PROBE_OUT=$WORK/probe.$(now_ms)
  ip netns exec $NC "$PROBE" probe "${PROBE_VIP:-$VIP}" $PORT 5 "$1" > "$PROBE_OUT" 2>&1 &
  PROBE_PID=$!
  PIDS+=("$PROBE_PID")
}
probe_wait() { wait "$PROBE_PID"; }
# first_reply_from NAME AFTER_MS: wall time of the first change to NAME after AFTER_MS
first_reply_from() { awk -v n="$1" -v t="$2" '$1=="CHANGE" && $3==n && $2>=t {print $2; exit}' "$PROBE_OUT"; }

stop_pid() {  # SIGTERM and wait (bounded)
  kill -TERM "$1" 2>/dev/null
  local i; for i in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$1" 2>/dev/null; wait "$1" 2>/dev/null
}

finish() {
  log "$PASSES passed, $FAILS failed"
  echo "$PASSES passed, $FAILS failed"
  [ $FAILS -eq 0 ]
}
