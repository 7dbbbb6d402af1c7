#!/usr/bin/env bash
# The Ansible role end to end (CTest: netns.ansible_pair, label netns, needs root).
#
#   ansible_pair.sh BUILD_DIR SOURCE_DIR
#
# Two network namespaces play the two VMs, each with its own sshd (a config, host key and
# pid file in this run's temp dir, listening on the namespace's address only); a client
# namespace plays the operator's machine and the drill client, and a server namespace holds
# two HTTP backends. Debian's ansible-core runs the playbooks from the client namespace over
# ssh. The namespaces share the host's file system and PID 1, so each "VM" gets its own
# prefix (halb_root) and halb runs under halb-supervise (halb_service_manager: supervised),
# as `nobody` with the unit's three capabilities.
#
# What runs depends on what main has: the deployment, idempotence, validation, reload,
# restart-on-failure and the rolling upgrade always; the VIP, the handover and the drills
# once halb runs VRRP (its status has "vrrp"), the data plane (it listens on the VIP) and
# `halb drill`. Each skipped part says so. Everything this run creates is removed on any
# exit (trap), including Ctrl-C and its own deadline; processes are ended by PID: every
# process inside the run's namespaces, and nothing else.
set -euo pipefail

build=$(cd "${1:?usage: ansible_pair.sh BUILD_DIR SOURCE_DIR}" && pwd)
src=$(cd "${2:?usage: ansible_pair.sh BUILD_DIR SOURCE_DIR}" && pwd)
deadline=${HALB_ANSIBLE_TEST_DEADLINE:-270}  # seconds; CTest's TIMEOUT is above it
SKIP=77

if [[ $(id -u) -ne 0 ]]; then
  echo "SKIP: needs root (network namespaces)"
  exit $SKIP
fi
for tool in ip ansible-playbook ansible-lint ansible-inventory /usr/sbin/sshd ssh ssh-keygen \
  cpack dpkg-deb setpriv /usr/bin/python3 curl; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool not found"; exit $SKIP; }
done

t_start=$(date +%s.%N)
tag="hba$$"
net=10.79.0
T=$(mktemp -d /tmp/halb-ansible.XXXXXX)
chmod 0755 "$T"  # the service user (nobody) reads its node's files below it
namespaces=()
watchdog=
made_run_sshd=0
failures=0

# The test's own output, saved: a trap may run while a command's output is redirected.
exec 3>&1 4>&2
log() { printf '[ansible_pair %s] %s\n' "$(date +%T)" "$*" >&3; }
fail() {
  log "FAIL: $*"
  failures=$((failures + 1))
}
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(date +%s.%N)"; }

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  exec 1>&3 2>&4
  [[ -n $watchdog ]] && kill "$watchdog" 2>/dev/null
  if [[ $rc -ne 0 || $failures -ne 0 ]]; then
    for f in "$T"/lb*/root/var/log/halb/halb.log "$T"/lb*/sshd.log; do
      [[ -f $f ]] && { echo "----- $f"; tail -n 25 "$f"; }
    done
  fi
  # Every process in these namespaces was started by this run (sshd, halb-supervise, halb,
  # ssh masters, backends): end them by PID, then delete the namespaces.
  local pids=()
  for ns in "${namespaces[@]}"; do
    pids+=($(ip netns pids "$ns" 2>/dev/null))
  done
  if [[ ${#pids[@]} -gt 0 ]]; then
    kill -TERM "${pids[@]}" 2>/dev/null
    for _ in $(seq 50); do
      local alive=0
      for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      [[ $alive -eq 0 ]] && break
      sleep 0.05
    done
    kill -KILL "${pids[@]}" 2>/dev/null
  fi
  for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null; done
  local left
  left=$(ip netns list | awk '{print $1}' | grep -c "^$tag-" || true)
  [[ $left -ne 0 ]] && { echo "WARNING: $left namespaces of $tag left"; rc=1; }
  [[ $made_run_sshd -eq 1 ]] && rmdir /run/sshd 2>/dev/null
  if [[ ${HALB_KEEP_TMP:-0} == 1 ]]; then echo "kept $T"; else rm -rf "$T"; fi
  log "cleaned up; total $(elapsed "$t_start") s"
  if [[ $rc -eq 0 && $failures -ne 0 ]]; then rc=1; fi
  exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated (deadline or signal)"; exit 143' TERM
# Our own deadline, below CTest's timeout, so that the trap always gets to clean up.
(
  s=
  trap '[[ -n $s ]] && kill $s; exit 0' TERM
  sleep "$deadline" & s=$!
  wait $s
  kill -TERM $$
) &
watchdog=$!

nsx() { local ns=$1; shift; ip netns exec "$tag-$ns" "$@"; }
# Runs a long command in the client namespace and waits for it: bash runs a trap only after a
# foreground command ends, but interrupts `wait` at once (and cleanup ends the namespace's
# processes).
in_client() { nsx client "$@" & wait $!; }

# ---------------------------------------------------------------------------------- packages
phase=$(date +%s.%N)
mkdir -p "$T/pkg1" "$T/pkg2"
# The same build twice; the second with a higher Debian revision, for the rolling upgrade.
for pkg in 1:1 2:99; do  # directory number : Debian revision
  d=$T/pkg${pkg%:*}
  (cd "$T" && cpack --config "$build/CPackConfig.cmake" -G DEB -B "$d" \
    -D CPACK_DEBIAN_PACKAGE_RELEASE=${pkg#*:} >"$d.out" 2>&1) || { cat "$d.out"; exit 1; }
done
pkg1=$(ls "$T"/pkg1/halb_*.deb)
pkg2=$(ls "$T"/pkg2/halb_*.deb)
log "packages: $(basename "$pkg1"), $(basename "$pkg2") in $(elapsed "$phase") s"

# ---------------------------------------------------------------------------------- topology
phase=$(date +%s.%N)
declare -A addr=([lb1]=$net.11 [lb2]=$net.12 [client]=$net.50 [srv]=$net.21)
for r in lan lb1 lb2 client srv; do
  namespaces+=("$tag-$r")
  ip netns add "$tag-$r"
  ip -n "$tag-$r" link set lo up
done
ip -n "$tag-lan" link add br0 type bridge stp_state 0 forward_delay 0 mcast_snooping 0
ip -n "$tag-lan" link set br0 up
for r in lb1 lb2 client srv; do
  # Both ends are created inside namespaces: nothing appears in the root namespace.
  ip -n "$tag-lan" link add "p-$r" type veth peer name eth0 netns "$tag-$r"
  ip -n "$tag-lan" link set "p-$r" master br0 up
  nsx "$r" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1
  ip -n "$tag-$r" addr add "${addr[$r]}/24" dev eth0
  ip -n "$tag-$r" link set eth0 up
done
ip -n "$tag-srv" addr add "$net.22/24" dev eth0
for a in 51 52 53; do ip -n "$tag-client" addr add "$net.$a/24" dev eth0; done

# Two HTTP backends that name themselves (X-Backend), as the drill expects: tests/netns/backend.py.
backend() { local ns=$1 name=$2 listen=$3; nsx "$ns" /usr/bin/python3 "$src/tests/netns/backend.py" --name "$name" --http "$listen" >/dev/null 2>&1 & }
backend srv web1 "$net.21:8080"
backend srv web2 "$net.22:8080"

# ---------------------------------------------------------------------------------- sshd
mkdir -p "$T/ssh" "$T/home"
ssh-keygen -q -t ed25519 -N '' -C "halb-ansible-test" -f "$T/ssh/id_ed25519"
cp "$T/ssh/id_ed25519.pub" "$T/ssh/authorized_keys"
: >"$T/ssh/known_hosts"
if [[ ! -d /run/sshd ]]; then  # sshd's privilege-separation directory (Debian: /run/sshd)
  mkdir -m 0755 /run/sshd
  made_run_sshd=1
fi
for n in lb1 lb2; do
  mkdir -p "$T/$n/ssh" "$T/$n/tmp" "$T/$n/root"
  ssh-keygen -q -t ed25519 -N '' -f "$T/$n/ssh/host_ed25519"
  cat >"$T/$n/ssh/sshd_config" <<EOF
# sshd of the test VM $n: its own port, address, host key, pid file and authorized keys.
Port 2222
ListenAddress ${addr[$n]}
HostKey $T/$n/ssh/host_ed25519
PidFile $T/$n/ssh/sshd.pid
AuthorizedKeysFile $T/ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxStartups 50
MaxSessions 50
Subsystem sftp internal-sftp
LogLevel ERROR
EOF
  echo "[${addr[$n]}]:2222 $(cat "$T/$n/ssh/host_ed25519.pub")" >>"$T/ssh/known_hosts"
  nsx "$n" /usr/sbin/sshd -D -e -f "$T/$n/ssh/sshd_config" >"$T/$n/sshd.log" 2>&1 &
done
for n in lb1 lb2; do
  for i in $(seq 100); do
    nsx client timeout 0.5 bash -c "</dev/tcp/${addr[$n]}/2222" 2>/dev/null && break
    [[ $i -eq 100 ]] && { log "sshd of $n does not answer"; cat "$T/$n/sshd.log"; exit 1; }
    sleep 0.05
  done
done
log "topology and sshd up in $(elapsed "$phase") s"

# ---------------------------------------------------------------------------------- ansible
# The controller runs in the client namespace, on a copy of ansible/ (ansible-lint writes
# caches next to what it checks), with HOME and every temp dir inside $T.
cp -r "$src/ansible" "$T/ansible"
export HOME=$T/home
export ANSIBLE_CONFIG=$T/ansible/ansible.cfg
export ANSIBLE_INVENTORY=$T/inventory.yml
export ANSIBLE_LOCAL_TEMP=$T/home/tmp
export ANSIBLE_ASYNC_DIR=$T/home/async
export ANSIBLE_SSH_CONTROL_PATH_DIR=$T/cp
export ANSIBLE_PRIVATE_KEY_FILE=$T/ssh/id_ed25519
export ANSIBLE_SSH_ARGS="-o ControlMaster=auto -o ControlPersist=120s -o UserKnownHostsFile=$T/ssh/known_hosts -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
export ANSIBLE_LOG_PATH=$T/ansible.log
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_DISPLAY_SKIPPED_HOSTS=false

cat >"$T/inventory.yml" <<EOF
all:
  vars:
    ansible_user: root
    ansible_port: 2222
    ansible_python_interpreter: /usr/bin/python3
    halb_package: $pkg1
    halb_install_method: extract
    halb_service_manager: supervised
    halb_user: nobody
    halb_group: nogroup
    halb_key_store: $T/keys/halb
    halb_health_retries: 30
  children:
    halb:
      vars:
        halb_interface: eth0
        halb_virtual_router_id: 79
        halb_vips:
          - address: $net.100/24
            interface: eth0
        halb_vrrp_auth: hmac
        halb_vrrp:
          advert_interval: 100ms
          preempt_delay: 1s
        halb_statesync_port: 7400
        halb_statesync:
          sync_wait: 1s
        halb_frontends:
          - name: www
            mode: http
            bind: $net.100:80
            default_backend: web
        halb_backends:
          - name: web
            servers:
              - {name: web1, address: "$net.21:8080"}
              - {name: web2, address: "$net.22:8080"}
            health: {type: http, path: /, interval: 500ms, timeout: 250ms}
            sticky: {mode: cookie}
      hosts:
        lb1:
          ansible_host: ${addr[lb1]}
          ansible_remote_tmp: $T/lb1/tmp
          halb_root: $T/lb1/root
          halb_address: ${addr[lb1]}
          halb_priority: 150
        lb2:
          ansible_host: ${addr[lb2]}
          ansible_remote_tmp: $T/lb2/tmp
          halb_root: $T/lb2/root
          halb_address: ${addr[lb2]}
          halb_priority: 100
    halb_clients:
      hosts:
        client:
          ansible_connection: local
          halb_drill_bin: $build/app/halb
          halb_drill_http: $net.100:80
          halb_drill_sources: [$net.50, $net.51, $net.52, $net.53]
          halb_drill_rate: 100
          halb_drill_retry_once: true
          halb_drill_dir: $T/drill
EOF

play() {  # play NAME PLAYBOOK [ansible-playbook args...]: runs it, keeps its output
  local name=$1 book=$2
  shift 2
  local t0 rc=0
  t0=$(date +%s.%N)
  in_client ansible-playbook "$T/ansible/$book" "$@" >"$T/$name.out" 2>&1 || rc=$?
  log "$name: $book exit $rc in $(elapsed "$t0") s ($(grep -E '^(lb1|lb2) ' "$T/$name.out" | tr -s ' ' | tr '\n' ';'))"
  return $rc
}
show() { sed -n '/^PLAY RECAP/,$p' "$T/$1.out"; grep -E 'fatal:|FAILED|ERROR' "$T/$1.out" | head -20 || true; }
recap_changed() { grep -E "^$2 " "$T/$1.out" | sed -E 's/.*changed=([0-9]+).*/\1/'; }
supervise() { "$T/$1/root/var/lib/halb-ansible/halb-supervise" "$2" --service "$T/$1/root/var/lib/halb-ansible/halb.service.json"; }
state() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$T/$1/root/run/halb/state.json" "$2"; }
status() { nsx "$1" "$T/$1/root/usr/sbin/halb" status -c "$T/$1/root/etc/halb/halb.yaml" --node "$1"; }

# ---------------------------------------------------------------------------------- lint
phase=$(date +%s.%N)
if in_client env --chdir="$T/ansible" ansible-lint --nocolor site.yml rolling-upgrade.yml drill.yml \
  roles/halb >"$T/lint.out" 2>&1; then
  log "ansible-lint (production profile, offline): passed in $(elapsed "$phase") s"
else
  cat "$T/lint.out"
  fail "ansible-lint"
fi
for book in site.yml rolling-upgrade.yml drill.yml; do
  nsx client ansible-playbook --syntax-check "$T/ansible/$book" >"$T/syntax.out" 2>&1 ||
    { cat "$T/syntax.out"; fail "syntax of $book"; }
done
ansible-inventory -i "$T/ansible/inventory.example.yml" --list >/dev/null || fail "inventory.example.yml does not parse"

# ---------------------------------------------------------------------------------- deploy
if ! play site site.yml; then
  show site
  exit 1
fi
for n in lb1 lb2; do
  [[ $(supervise "$n" status >/dev/null; echo $?) -eq 0 ]] || fail "$n: halb-supervise says not running"
  pid=$(state "$n" main_pid)
  st=$(grep -E '^(Uid|CapEff|CapAmb|NoNewPrivs):' "/proc/$pid/status" | awk '{print $1 $2}' | tr '\n' ' ')
  [[ $st == "Uid:65534 CapEff:0000000000003400 CapAmb:0000000000003400 NoNewPrivs:1 " ]] ||
    fail "$n: halb runs with the wrong credentials: $st"
  [[ $(ip netns identify "$pid") == "$tag-$n" ]] || fail "$n: halb is not in its namespace"
  for key in "$T/$n/root/etc/halb/sync.key" "$T/$n/root/etc/halb/vrrp.key"; do
    [[ $(stat -c '%a %U' "$key") == "600 nobody" ]] || fail "$n: $key is $(stat -c '%a %U' "$key")"
  done
  for k in net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 net.ipv4.conf.all.promote_secondaries=1; do
    [[ $(nsx "$n" sysctl -n "${k%=*}") == "${k#*=}" ]] || fail "$n: ${k%=*} not applied"
  done
  status "$n" >"$T/$n.status" || fail "$n: halb status failed"
done
for k in sync vrrp; do
  cmp -s "$T/lb1/root/etc/halb/$k.key" "$T/lb2/root/etc/halb/$k.key" || fail "the nodes have different $k keys"
  [[ $(stat -c %a "$T/keys/halb/$k.key") == 600 ]] || fail "the controller's $k key is not 0600"
done
[[ $(nsx client sysctl -n net.ipv4.conf.all.arp_ignore) == 0 ]] || fail "sysctls leaked into the client namespace"
# One template for both nodes: the files differ only in the per-node prefix.
diff <(sed "s#$T/lb1/root##g" "$T/lb1/root/etc/halb/halb.yaml") \
  <(sed "s#$T/lb2/root##g" "$T/lb2/root/etc/halb/halb.yaml") >/dev/null ||
  fail "the two nodes' configuration files differ beyond their prefix"
# halb-supervise runs the unit's command lines (the binary's path aside).
python3 - "$T/lb1/root/lib/systemd/system/halb.service" "$T/lb1/root/var/lib/halb-ansible/halb.service.json" \
  "$T/lb1/root/usr/sbin/halb" <<'EOF' || fail "halb-supervise's command lines differ from halb.service"
import json, sys
unit = {}
for line in open(sys.argv[1]):
    k, _, v = line.strip().partition("=")
    if k.startswith("Exec"):
        unit.setdefault(k, []).append(v.replace("/usr/sbin/halb", sys.argv[3]))
svc = json.load(open(sys.argv[2]))
ok = (unit["ExecStartPre"] == svc["exec_start_pre"] and unit["ExecStart"] == [svc["exec_start"]]
      and unit["ExecReload"] == svc["exec_reload"])
sys.exit(0 if ok else 1)
EOF
log "deployed: halb as nobody with CAP_NET_ADMIN/NET_RAW/NET_BIND_SERVICE on both nodes, keys 0600, sysctls set"

# A valid change is reloaded in place: the same process, one more reload (RELOADING=1,
# READY=1). Only the configuration part of the role runs (--tags halb_config).
debug_logging='{"halb_config_extra": {"logging": {"level": "debug"}}}'
reloads=$(state lb1 reloads)
pid_before=$(state lb1 main_pid)
play site-reload site.yml -e "$debug_logging" --tags halb_config ||
  { show site-reload; fail "a valid change failed"; }
[[ $(state lb1 reloads) -eq $((reloads + 1)) && $(state lb1 main_pid) == "$pid_before" ]] ||
  fail "the change was not reloaded in place (reloads $(state lb1 reloads), pid $(state lb1 main_pid))"
grep -q 'level: debug' "$T/lb1/root/etc/halb/halb.yaml" || fail "the change did not reach the file"

# Idempotence: a second full run with the same variables changes nothing.
play site-again site.yml -e "$debug_logging" || { show site-again; fail "second site.yml run failed"; }
for n in lb1 lb2; do
  [[ $(recap_changed site-again "$n") == 0 ]] ||
    { grep -B3 '^changed:' "$T/site-again.out" | head -30; fail "$n: the second run changed something"; }
done

# A file that does not validate never replaces the running one (halb check in `validate`).
before=$(md5sum <"$T/lb1/root/etc/halb/halb.yaml")
reloads=$(state lb1 reloads)
if play site-bad site.yml --tags halb_config \
  -e '{"halb_backends": [{"name": "web", "servers": [{"name": "w1", "address": "10.79.0.21:8080", "weight": 999}]}]}'; then
  fail "a configuration with weight 999 was accepted"
fi
grep -q 'weight: must be 0..256' "$T/site-bad.out" || fail "the validation error is not shown"
[[ $(md5sum <"$T/lb1/root/etc/halb/halb.yaml") == "$before" ]] || fail "the invalid file replaced the valid one"
[[ $(state lb1 main_pid) == "$pid_before" && $(state lb1 state) == running && $(state lb1 reloads) == "$reloads" ]] ||
  fail "lb1 was disturbed by the invalid file"

# Restart on failure: a SIGKILLed halb comes back (Restart=on-failure, RestartSec=1s).
pid=$(state lb2 main_pid)
restarts=$(state lb2 restarts)
t0=$(date +%s.%N)
kill -KILL "$pid"
back=0
for _ in $(seq 100); do
  if [[ $(state lb2 restarts) -gt $restarts && $(state lb2 state) == running ]]; then
    back=1
    break
  fi
  sleep 0.1
done
if [[ $back -eq 1 && $(state lb2 main_pid) != "$pid" ]]; then
  log "restart on failure: lb2 back in $(elapsed "$t0") s (pid $pid -> $(state lb2 main_pid))"
else
  fail "lb2 did not come back after SIGKILL: $(cat "$T/lb2/root/run/halb/state.json")"
fi

# ---------------------------------------------------------------------------------- features
has_vrrp=0 has_dataplane=0 has_drill=0
grep -q '"vrrp"' "$T/lb1.status" && has_vrrp=1
nsx lb1 ss -Htln "sport = :80" | grep -q . && has_dataplane=1
"$build/app/halb" drill --help >/dev/null 2>&1 && has_drill=1
log "features on this build: vrrp=$has_vrrp dataplane=$has_dataplane drill=$has_drill"

vip_holders() {
  for n in lb1 lb2; do
    if ip -n "$tag-$n" -4 addr show dev eth0 | grep -q " $net.100/"; then echo "$n"; fi
  done | paste -sd' '
}
vip_answers() { nsx client curl -s -m 2 -o /dev/null -w '%{http_code}' "http://$net.100/" | grep -q 200; }
serve_vip=0
if [[ $has_vrrp -eq 1 && $has_dataplane -eq 0 ]]; then
  # Until the data plane lands: a stand-in web server on :80 in each LB namespace (naming the
  # node), so the VIP answers through whichever node holds it and the drills can run.
  for n in lb1 lb2; do backend "$n" "$n" 0.0.0.0:80; done
  serve_vip=1
  log "stand-in web servers on :80 in the LB namespaces (no data plane on this build)"
fi
if [[ $has_vrrp -eq 1 ]]; then
  for _ in $(seq 100); do
    [[ $(vip_holders) == lb1 ]] && break
    sleep 0.05
  done
  [[ $(vip_holders) == lb1 ]] || fail "after site.yml the VIP is on '$(vip_holders)', not on lb1 (priority 150) alone"
  if [[ $has_dataplane -eq 1 ]]; then
    vip_answers || fail "the VIP does not answer HTTP"
    log "the VIP answers HTTP"
  else
    for _ in $(seq 50); do vip_answers && break; sleep 0.1; done
    vip_answers || fail "the VIP does not answer (stand-in servers)"
    log "SKIPPED: halb answering on the VIP (no data plane on this build); the VIP answers through the stand-in"
  fi
else
  log "SKIPPED: the VIP check, handover and drills (halb runs no VRRP on this build)"
fi

# ---------------------------------------------------------------------------------- upgrade
declare -A pid_pre
for n in lb1 lb2; do pid_pre[$n]=$(state "$n" main_pid); done
upgrade_args=(-e "halb_package=$pkg2")
drills=0
[[ $has_vrrp -eq 1 && ($has_dataplane -eq 1 || $serve_vip -eq 1) && $has_drill -eq 1 ]] && drills=1
if [[ $drills -eq 1 ]]; then
  if [[ $serve_vip -eq 1 ]]; then
    # The stand-in servers keep no connection across a failover: report, do not judge.
    upgrade_args+=(-e halb_upgrade_drill=true -e halb_upgrade_drill_max_failed=-1)
    log "rolling upgrade with a halb drill client (stand-in servers: reported, not judged)"
  else
    upgrade_args+=(-e halb_upgrade_drill=true -e halb_upgrade_drill_max_failed=0)
    log "rolling upgrade with a halb drill client (retry once; must see zero failed requests)"
  fi
else
  log "SKIPPED: the drill client during the rolling upgrade (needs vrrp and halb drill)"
fi
if play upgrade rolling-upgrade.yml "${upgrade_args[@]}"; then
  for n in lb1 lb2; do
    [[ $(state "$n" main_pid) != "${pid_pre[$n]}" ]] || fail "$n was not restarted by the upgrade"
    [[ $(cat "$T/$n/root/var/lib/halb-ansible/unpacked") == $(sha1sum <"$pkg2" | cut -d' ' -f1) ]] ||
      fail "$n does not have the new package"
  done
  order=$(awk '/RUNNING HANDLER \[halb : Restart halb under/ {getline; print $2}' "$T/upgrade.out" | tr -d '[]' | paste -sd' ')
  log "upgrade restarted, in this order: $order"
  for n in lb1 lb2; do
    [[ $(grep -ow "$n" <<<"$order" | wc -l) -eq 1 ]] || fail "$n was restarted $(grep -ow "$n" <<<"$order" | wc -l) times"
  done
  if [[ $has_vrrp -eq 1 ]]; then
    [[ $order == "lb2 lb1" ]] || fail "the upgrade did not restart the backup (lb2) first"
    grep -q 'TASK \[halb : Hand mastership over to the peer\]' "$T/upgrade.out" || fail "no handover"
    holder=$(vip_holders)
    [[ $holder == lb1 ]] || fail "after the upgrade the VIP is on '$holder', not on the preferred master lb1"
  fi
  if [[ $drills -eq 1 ]]; then
    python3 - "$T/drill/report.json" <<'EOF' || fail "no drill report from the upgrade"
import json, sys
r = json.load(open(sys.argv[1]))
h = r["http"]
print(f"upgrade drill: {h['requests']} requests, failed {h['failed_raw']} (after one retry: "
      f"{h['failed_after_retry']}), outage {json.dumps(h.get('outage'))}, users moved {r.get('users_moved', h.get('users_moved'))}")
EOF
  fi
else
  show upgrade
  fail "rolling-upgrade.yml"
fi

# ---------------------------------------------------------------------------------- drill
if [[ $drills -eq 1 ]]; then
  if play drill drill.yml -e halb_drill_before=2 -e halb_drill_after=3; then
    sed -n '/Print the drill/,/^$/p' "$T/drill.out" | head -40
    grep -q 'TASK \[halb : Wait until the node is MASTER\]' "$T/drill.out" || fail "drill.yml did not see the takeover"
  else
    show drill
    fail "drill.yml"
  fi
else
  log "SKIPPED: drill.yml (needs vrrp and halb drill)"
fi

log "done: $failures failure(s) in $(elapsed "$t_start") s"
[[ $failures -eq 0 ]]
