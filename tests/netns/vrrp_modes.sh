#!/usr/bin/env bash
# VRRP modes beyond the default pair: IPv6 (ff02::12, link-local sources, unsolicited NA),
# unicast adverts with interface tracking and notify hooks, and HMAC-authenticated adverts
# (matching keys elect one master; a wrong key is dropped and counted).
#   usage: vrrp_modes.sh HALB VRRP_PROBE      (root; label netns)
source "$(dirname "$0")/vrrp_lib.sh"

BOUND_KILL_MS=461

write_config() {  # write_config FILE VIP EXTRA_VRRP_YAML
  cat > "$1" <<YAML
version: 1
nodes:
  lb1: { address: 10.99.0.11, priority: 150 }
  lb2: { address: 10.99.0.12, priority: 100 }
vips:
  - address: $2
    interface: eth0
vrrp:
  interface: eth0
  virtual_router_id: 52
  advert_interval: 100ms
$3
admin:
  listen: 127.0.0.1:9100
frontends:
  - { name: web, mode: tcp, bind: "10.99.0.100:80", default_backend: b }
backends:
  - name: b
    servers: [ { name: s1, address: "10.99.0.50:8080" } ]
YAML
}
holder_is() { [ "$(vip_holder)" = "$1" ] && [ "$(vip_count)" = 1 ]; }
both_hold() { [ "$(vip_count)" = 2 ]; }
no_tentative() { [ -z "$(ip -n "$1" -6 addr show dev eth0 tentative)" ]; }
measure() {  # measure NAME T0 BOUND WHAT
  local t2 d
  t2=$(first_reply_from "$1" "$2"); d=$(( ${t2:-999999} - $2 ))
  log "client reached $1 ${d} ms after $4 (bound $3 ms)"
  check "$4: client on $1 within $3 ms (${d} ms)" test $d -le "$3"
}

setup_topology
start_responder $NA lb1
start_responder $NB lb2

log "--- 1. IPv6: ff02::12 from link-local sources, VIP announced by unsolicited NA"
ip -n $NA addr add 2001:db8:99::11/64 dev eth0 nodad
ip -n $NB addr add 2001:db8:99::12/64 dev eth0 nodad
ip -n $NC addr add 2001:db8:99::1/64 dev eth0 nodad
for ns in $NA $NB $NC; do wait_for 5000 no_tentative $ns || log "link-local still tentative in $ns"; done
VIP=2001:db8:99::100
write_config "$WORK/v6.yaml" "$VIP/64" "  preempt: true"
start_halb $NA lb1 "$WORK/v6.yaml"; PA=$LAST_PID
start_halb $NB lb2 "$WORK/v6.yaml"; PB=$LAST_PID
check "IPv6: lb1 becomes the single master" wait_for 3000 holder_is lb1
sleep 1
check "IPv6: still one master after 1 s" holder_is lb1
PROBE_VIP=$VIP probe_start 2000; sleep 0.5
t=$(now_ms); kill -KILL $PA; wait $PA 2>/dev/null
probe_wait
measure lb2 $t $BOUND_KILL_MS "IPv6 SIGKILL"
stop_pid $PB
ip -n $NA addr flush dev eth0 scope global to "$VIP" 2>/dev/null
VIP=10.99.0.100

log "--- 2. unicast adverts, interface tracking and notify hooks"
# Both nodes share the file, so both track trk0 (a missing interface counts as down).
for ns in $NA $NB; do
  ip -n $ns link add trk0 type veth peer name trk1
  ip -n $ns link set trk0 up; ip -n $ns link set trk1 up
done
cat > "$WORK/notify.sh" <<'SH'
#!/bin/sh
echo "$1 $2" >> "$(dirname "$0")/notify.$HALB_NODE"
SH
chmod +x "$WORK/notify.sh"
extra="  unicast: true
  preempt: true
  notify: HALB_NODE=\$(hostname) $WORK/notify.sh
  track:
    interfaces: [trk0]
    penalty: 60"
write_config "$WORK/unicast.yaml" "$VIP/24" "$extra"
sed -i "s|notify: HALB_NODE=\\\$(hostname) |notify: HALB_NODE=x |" "$WORK/unicast.yaml"
start_halb $NA lb1 "$WORK/unicast.yaml"; PA=$LAST_PID
start_halb $NB lb2 "$WORK/unicast.yaml"; PB=$LAST_PID
check "unicast: lb1 becomes the single master" wait_for 3000 holder_is lb1
sleep 1
check "unicast: still one master after 1 s" holder_is lb1
check "notify hook ran with MASTER BACKUP" wait_for 2000 grep -q "^MASTER BACKUP" "$WORK/notify.x"
t=$(now_ms); ip -n $NA link set trk0 down
check "tracked interface down (150-60 < 100): lb2 preempts" wait_for 2000 holder_is lb2
log "mastership moved $(( $(now_ms) - t )) ms after the tracked link went down"
ip -n $NA link set trk0 up
check "tracked interface up: lb1 preempts back" wait_for 2000 holder_is lb1
probe_start 2000; sleep 0.5
t=$(now_ms); kill -KILL $PA; wait $PA 2>/dev/null
probe_wait
measure lb2 $t $BOUND_KILL_MS "unicast SIGKILL"
stop_pid $PB
sleep 2.5   # let lb1's leftover VIP expire

log "--- 3. HMAC-authenticated adverts"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/k1"; chmod 600 "$WORK/k1"
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/k2"; chmod 600 "$WORK/k2"
write_config "$WORK/auth1.yaml" "$VIP/24" "  auth: hmac
  auth_key_file: $WORK/k1"
write_config "$WORK/auth2.yaml" "$VIP/24" "  auth: hmac
  auth_key_file: $WORK/k2"
start_halb $NA lb1 "$WORK/auth1.yaml"; PA=$LAST_PID
start_halb $NB lb2 "$WORK/auth1.yaml"; PB=$LAST_PID
check "same key: lb1 becomes the single master" wait_for 3000 holder_is lb1
sleep 1
check "same key: still one master" holder_is lb1
stop_pid $PB
start_halb $NB lb2 "$WORK/auth2.yaml"; PB=$LAST_PID
check "other key: lb2 ignores lb1 and elects itself" wait_for 2000 both_hold
st=$(status_of $NB)
check "other key: lb2 counts the dropped adverts" grep -q '"auth_key_id":[1-9]' <<< "$st"
log "lb2 adverts: $(grep -o '"adverts":{[^}]*}[^}]*}' <<< "$st")"
stop_pid $PA; stop_pid $PB
sleep 2.5   # let lb1's VIP expire... it was removed on stop; keep the pause for the peer's ARP

log "--- 4. 10 ms adverts: no flapping under CPU load, failover within 3×10 ms + skew + 100 ms"
write_config "$WORK/fast.yaml" "$VIP/24" "  advert_interval: 10ms
  preempt: true"
sed -i 's/^  advert_interval: 100ms$//' "$WORK/fast.yaml"
start_halb $NA lb1 "$WORK/fast.yaml"; PA=$LAST_PID
start_halb $NB lb2 "$WORK/fast.yaml"; PB=$LAST_PID
check "10 ms: lb1 becomes the single master" wait_for 3000 holder_is lb1
sleep 0.5
before=$(cat "$WORK"/lb*.log | grep -c -- "->")
# Two busy loops (one per core on the CI machine) for 5 s, bounded by timeout(1).
hogs=()
for i in 1 2; do timeout 5 sh -c 'while :; do :; done' & hogs+=("$!"); PIDS+=("$!"); done
for h in "${hogs[@]}"; do wait "$h" 2>/dev/null; done
after=$(cat "$WORK"/lb*.log | grep -c -- "->")
check "10 ms: no state change during 5 s of CPU load" test "$before" = "$after"
check "10 ms: still one master after the load" holder_is lb1
late=$(status_of $NA | grep -o '"state":"[A-Z]*"' | head -1)
log "lb1 after load: $late; $(ip netns exec $NA curl -s http://127.0.0.1:9100/metrics | grep -E '^halb_vrrp_timer_(late_total|max_lateness)' | tr '\n' ' ')"
probe_start 1500; sleep 0.5
t=$(now_ms); kill -KILL $PA; wait $PA 2>/dev/null
probe_wait
measure lb2 $t 137 "10 ms SIGKILL"
stop_pid $PB

finish
