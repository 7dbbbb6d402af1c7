#!/usr/bin/env bash
# Two halb nodes and a client on a bridge (issue 4 "Done when"): exactly one master; SIGKILL
# and link-down of the master move the VIP within 3×advert_interval + skew + 100 ms as the
# client sees it; the killed master's VIP expires within its lifetime; leftover VIPs are
# removed at start; preemption on/off; a healed partition leaves one master; clean stop and
# handover move mastership after Skew_Time.
#   usage: vrrp_failover.sh HALB VRRP_PROBE      (root; label netns)
source "$(dirname "$0")/vrrp_lib.sh"

# advert_interval 100 ms, backup priority 100: Skew_Time = 156 × 100 / 256 = 60.9 ms,
# Master_Down_Interval = 360.9 ms; the issue's bound adds 100 ms for VIP add + GARP + client.
BOUND_KILL_MS=461
BOUND_CLEAN_MS=161   # Skew_Time + 100 ms
LIFETIME_S=2

write_config() {  # write_config FILE PREEMPT
  cat > "$1" <<YAML
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
  preempt: $2
  vip_lifetime: ${LIFETIME_S}s
  handover_hold: 1h
  garp: { count: 3, interval: 20ms }
admin:
  listen: 127.0.0.1:9100
frontends:
  - { name: web, mode: tcp, bind: "$VIP:80", default_backend: b }
backends:
  - name: b
    servers: [ { name: s1, address: "10.99.0.50:8080" } ]
YAML
}

holder_is() { [ "$(vip_holder)" = "$1" ] && [ "$(vip_count)" = 1 ]; }
both_hold() { [ "$(vip_count)" = 2 ]; }
state_of() { status_of "$1" | grep -o '"state":"[A-Z]*"' | head -1 | cut -d'"' -f4; }

setup_topology
write_config "$WORK/preempt.yaml" true
write_config "$WORK/nopreempt.yaml" false
start_responder $NA lb1
start_responder $NB lb2

log "--- 1. start both: exactly one master"
start_halb $NA lb1 "$WORK/preempt.yaml"; PA=$LAST_PID
start_halb $NB lb2 "$WORK/preempt.yaml"; PB=$LAST_PID
check "lb1 (priority 150) becomes master" wait_for 3000 holder_is lb1
sleep 2.5
check "exactly one VIP holder after 2.5 s" holder_is lb1
# The VIP carries a finite lifetime (IFA_CACHEINFO) and outlives it: the master renews it.
lft=$(ip -n $NA addr show dev eth0 | grep -A1 " $VIP/" | grep -o "valid_lft [0-9a-z]*")
log "master's VIP: $lft (vip_lifetime ${LIFETIME_S}s, renewed every third)"
check "VIP has a finite valid lifetime, renewed past it" bash -c "[[ '$lft' =~ ^valid_lft\ [0-9]+sec$ ]]"
check "status: lb1 MASTER" test "$(state_of $NA)" = MASTER
check "status: lb2 BACKUP" test "$(state_of $NB)" = BACKUP

log "--- 2. SIGKILL the master"
probe_start 2500; sleep 0.5
t=$(now_ms); kill -KILL $PA; wait $PA 2>/dev/null
wait_for 3500 bash -c "! ip -n $NA -o addr show dev eth0 | grep -q ' $VIP/'"
gone=$(( $(now_ms) - t ))
probe_wait
t2=$(first_reply_from lb2 $t)
d=$(( ${t2:-999999} - t ))
log "client reached lb2 ${d} ms after SIGKILL (bound ${BOUND_KILL_MS} ms); killed master's VIP gone after ${gone} ms"
check "failover after SIGKILL within ${BOUND_KILL_MS} ms (${d} ms)" test $d -le $BOUND_KILL_MS
check "SIGKILLed master's VIP expired within lifetime + 1 s (${gone} ms)" test $gone -le $(( LIFETIME_S * 1000 + 1000 ))
check "lb2 holds the VIP" holder_is lb2

log "--- 3. lb1 returns: preempts back"
probe_start 2500
t=$(now_ms); start_halb $NA lb1 "$WORK/preempt.yaml"; PA=$LAST_PID
check "lb1 preempts back" wait_for 2000 holder_is lb1
probe_wait
t2=$(first_reply_from lb1 $t); log "client reached lb1 $(( ${t2:-999999} - t )) ms after it started"
check "client follows lb1 after preemption" test -n "$t2"

log "--- 4. a VIP left by a killed master is removed at restart"
kill -KILL $PA; wait $PA 2>/dev/null
check "leftover VIP still present right after SIGKILL" has_vip $NA
start_halb $NA lb1 "$WORK/preempt.yaml"; PA=$LAST_PID
check "restart logs the leftover removal" wait_for 2000 grep -q "removed leftover VIP $VIP" "$WORK/lb1.log"
check "lb1 master again, one holder" wait_for 3000 holder_is lb1

log "--- 5. master's link goes down"
sleep 0.5
probe_start 2000; sleep 0.5
t=$(now_ms); ip -n $NA link set eth0 down
probe_wait
t2=$(first_reply_from lb2 $t); d=$(( ${t2:-999999} - t ))
log "client reached lb2 ${d} ms after link down (bound ${BOUND_KILL_MS} ms)"
check "failover after link down within ${BOUND_KILL_MS} ms (${d} ms)" test $d -le $BOUND_KILL_MS
check "lb1 in FAULT released the VIP" bash -c "! ip -n $NA -o addr show dev eth0 | grep -q ' $VIP/'"
ip -n $NA link set eth0 up
check "link back: lb1 master again, one holder" wait_for 3000 holder_is lb1

log "--- 6. partition and heal"
sleep 0.5
ip -n $BR link set pb nomaster
check "partitioned: both sides elect themselves" wait_for 2000 both_hold
ip -n $BR link set pb master br0
t=$(now_ms)
check "healed: exactly one master (lb1)" wait_for 1000 holder_is lb1
log "one master $(( $(now_ms) - t )) ms after the heal"
probe_start 1000; probe_wait
if ! check "client reaches lb1 after the heal" grep -q "CHANGE .* lb1" "$PROBE_OUT"; then
  cat "$PROBE_OUT"; ip -n $NC neigh show; ip -n $NA link show eth0 | head -2; ip -n $NB link show eth0 | head -2
fi

log "--- 7. clean stop (SIGTERM): priority 0, backup takes over after Skew_Time"
sleep 0.5
probe_start 1500; sleep 0.5
t=$(now_ms); kill -TERM $PA
probe_wait; wait $PA 2>/dev/null
t2=$(first_reply_from lb2 $t); d=$(( ${t2:-999999} - t ))
log "client reached lb2 ${d} ms after SIGTERM (bound ${BOUND_CLEAN_MS} ms)"
check "clean stop hands over within ${BOUND_CLEAN_MS} ms (${d} ms)" test $d -le $BOUND_CLEAN_MS
check "stopped master removed its VIP" bash -c "! ip -n $NA -o addr show dev eth0 | grep -q ' $VIP/'"

log "--- 8. halb handover"
start_halb $NA lb1 "$WORK/preempt.yaml"; PA=$LAST_PID
check "lb1 preempts back" wait_for 3000 holder_is lb1
sleep 0.3
t=$(now_ms)
out=$(ip netns exec $NA "$HALB" handover --admin 127.0.0.1:9100 2>&1) || out="$out (exit $?)"
log "handover: $out"
check "handover moves the VIP to lb2" wait_for 1000 holder_is lb2
log "lb2 holds the VIP $(( $(now_ms) - t )) ms after the handover call"
sleep 1.5
check "lb1 does not preempt back during the hold" holder_is lb2
check "handover on a backup is refused" bash -c "! ip netns exec $NA '$HALB' handover --admin 127.0.0.1:9100 >/dev/null 2>&1"

log "--- 9. preempt off: the returning node stays backup"
stop_pid $PA; stop_pid $PB
start_halb $NB lb2 "$WORK/nopreempt.yaml"; PB=$LAST_PID
check "lb2 alone becomes master" wait_for 3000 holder_is lb2
start_halb $NA lb1 "$WORK/nopreempt.yaml"; PA=$LAST_PID
sleep 2
check "lb1 (higher priority, preempt off) stays backup" holder_is lb2
check "status: lb1 BACKUP" test "$(state_of $NA)" = BACKUP
stop_pid $PA; stop_pid $PB

grep -h "ERROR\|error" "$WORK"/lb*.log | head -5
finish
