#!/usr/bin/env bash
# One halb node (lb1, priority 150) paired with keepalived (lb2, priority 100, vrrp_version 3,
# the Debian package) on one bridge with a client: the wire formats interoperate, and
# mastership moves both ways — halb killed → keepalived; halb returns → preempts keepalived;
# halb handover → keepalived; keepalived stops (priority 0) → halb; keepalived master loses its
# link → halb.
#   usage: vrrp_keepalived.sh HALB VRRP_PROBE      (root; label netns)
source "$(dirname "$0")/vrrp_lib.sh"

KEEPALIVED=$(command -v keepalived || echo /usr/sbin/keepalived)
[ -x "$KEEPALIVED" ] || { echo "keepalived not installed (apt-get install keepalived)"; exit 1; }
BOUND_KILL_MS=461    # 3 × 100 ms + Skew_Time(100) 60.9 ms + 100 ms
BOUND_CLEAN_MS=161   # Skew_Time + 100 ms
EXTRA_CLEANUP='[ -f "$WORK/ka-vrrp.pid" ] && kill -KILL "$(cat "$WORK/ka-vrrp.pid")" 2>/dev/null'

cat > "$WORK/halb.yaml" <<YAML
version: 1
nodes:
  lb1: { address: 10.99.0.11, priority: 150 }
  lb2: { address: 10.99.0.12, priority: 100 }
vips:
  - address: $VIP/24
    interface: eth0
vrrp:
  interface: eth0
  virtual_router_id: 51
  advert_interval: 100ms
  preempt: true
  handover_hold: 1h
admin:
  listen: 127.0.0.1:9100
frontends:
  - { name: web, mode: tcp, bind: "$VIP:80", default_backend: b }
backends:
  - name: b
    servers: [ { name: s1, address: "10.99.0.50:8080" } ]
YAML

cat > "$WORK/keepalived.conf" <<CONF
global_defs {
  vrrp_version 3
  router_id lb2
}
vrrp_instance VI_51 {
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority 100
  advert_int 0.1
  virtual_ipaddress {
    $VIP/24 dev eth0
  }
}
CONF

start_keepalived() {
  rm -f "$WORK/ka.pid" "$WORK/ka-vrrp.pid"
  ip netns exec $NB "$KEEPALIVED" -n -l -P -f "$WORK/keepalived.conf" -p "$WORK/ka.pid" \
    -r "$WORK/ka-vrrp.pid" >> "$WORK/keepalived.log" 2>&1 &
  KA=$!
  PIDS+=("$KA")
}

holder_is() { [ "$(vip_holder)" = "$1" ] && [ "$(vip_count)" = 1 ]; }
measure() {  # measure NAME T0 BOUND WHAT
  local t2 d
  t2=$(first_reply_from "$1" "$2"); d=$(( ${t2:-999999} - $2 ))
  log "client reached $1 ${d} ms after $4 (bound $3 ms)"
  check "$4: client on $1 within $3 ms (${d} ms)" test $d -le "$3"
}

setup_topology
start_responder $NA lb1
start_responder $NB lb2

log "--- 1. halb (150) and keepalived (100): halb is master, keepalived follows"
start_halb $NA lb1 "$WORK/halb.yaml"; PA=$LAST_PID
start_keepalived
check "halb becomes the single master" wait_for 3000 holder_is lb1
sleep 1
check "keepalived accepted halb's adverts (still one holder)" holder_is lb1
check "keepalived reports BACKUP" grep -q "Entering BACKUP STATE" "$WORK/keepalived.log"

log "--- 2. SIGKILL halb: keepalived takes over"
probe_start 2000; sleep 0.5
t=$(now_ms); kill -KILL $PA; wait $PA 2>/dev/null
probe_wait
measure lb2 $t $BOUND_KILL_MS "SIGKILL of halb"
check "keepalived holds the VIP (halb's expired or not, keepalived has it)" has_vip $NB

log "--- 3. halb returns and preempts keepalived"
start_halb $NA lb1 "$WORK/halb.yaml"; PA=$LAST_PID
check "halb master again, keepalived released the VIP" wait_for 3000 holder_is lb1
sleep 0.5
st=$(status_of $NA)
check "halb accepted keepalived's adverts without checksum drops" bash -c "! grep -q '\"checksum\"' <<< '$st'"
log "halb status: $(grep -o '"adverts":{[^}]*}[^}]*}' <<< "$st")"

log "--- 4. halb handover: keepalived takes over after Skew_Time"
probe_start 1500; sleep 0.5
t=$(now_ms); ip netns exec $NA "$HALB" handover --admin 127.0.0.1:9100 > /dev/null
probe_wait
measure lb2 $t $BOUND_CLEAN_MS "halb handover"
sleep 1
check "halb holds back during the handover hold" holder_is lb2

log "--- 5. keepalived stops cleanly (priority 0): halb takes over"
probe_start 1500; sleep 0.5
t=$(now_ms); kill -TERM $KA
probe_wait; wait $KA 2>/dev/null
measure lb1 $t $BOUND_CLEAN_MS "keepalived SIGTERM"
check "one holder: halb" wait_for 1000 holder_is lb1

log "--- 6. keepalived master loses its link: halb takes over"
start_keepalived
sleep 1
check "keepalived back as backup" holder_is lb1
ip netns exec $NA "$HALB" handover --admin 127.0.0.1:9100 > /dev/null
check "keepalived master after a second handover" wait_for 1000 holder_is lb2
probe_start 2000; sleep 0.5
t=$(now_ms); ip -n $NB link set eth0 down
probe_wait
measure lb1 $t $BOUND_KILL_MS "keepalived link down"
ip -n $NB link set eth0 up

stop_pid $PA
stop_pid $KA
finish
