#!/usr/bin/env bash
# The demo, interim version: what the node does today, on loopback only.
# It validates the example pair for both nodes, shows how a broken file is reported, runs a
# node, reads its status and metrics, and shows that a bad reload changes nothing.
# (It becomes the network-namespace failover drill when the pair lands: issue 6.)
set -euo pipefail
halb=${1:-build/release/app/halb}
work=$(mktemp -d /tmp/halb-demo.XXXXXX)
pid=
cleanup() {
  [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() { printf '\n--- %s\n' "$*"; }

step "halb check -c examples/pair.yaml --node lb1 (one file serves both nodes)"
"$halb" check -c examples/pair.yaml --node lb1
step "the same file as lb2 sees it"
"$halb" check -c examples/pair.yaml --node lb2 | head -n 8

step "a file with mistakes: every error at once, with file:line:column"
cat >"$work/broken.yaml" <<'YAML'
nodes:
  lb1: { address: 10.0.0.1, priority: 300 }
vips: [10.0.0.100/24]
vrrp: { interface: eth0, virtual_router_id: 51 }
frontends:
  - name: web
    bind: 10.0.0.100:80
    mode: htp
    default_backend: nope
backends:
  - name: app
    servers:
      - { name: a, address: 10.0.1.1:80, wieght: 5 }
      - { name: b, address: 10.0.1.2:80, weight: 300 }
YAML
"$halb" check -c "$work/broken.yaml" --node lb1 || true

port=$((20000 + RANDOM % 20000))
cat >"$work/node.yaml" <<YAML
admin: { listen: 127.0.0.1:$port }
frontends: [{ name: web, bind: "127.0.0.1:$((port + 1))", default_backend: app }]
backends: [{ name: app, servers: [{ name: s1, address: "127.0.0.1:$((port + 2))" }] }]
YAML
step "halb run: a standalone node (admin endpoint on 127.0.0.1:$port)"
"$halb" run -c "$work/node.yaml" --node demo >"$work/node.log" 2>&1 &
pid=$!
for _ in $(seq 50); do "$halb" status --admin "127.0.0.1:$port" >/dev/null 2>&1 && break; sleep 0.1; done
"$halb" status --admin "127.0.0.1:$port"
step "its Prometheus metrics"
"$halb" metrics --admin "127.0.0.1:$port" | grep -v '^#'

step "a broken reload is rejected and changes nothing"
cp "$work/node.yaml" "$work/node.good"
echo "  - oops" >>"$work/node.yaml"
kill -HUP "$pid"
sleep 0.3
"$halb" metrics --admin "127.0.0.1:$port" | grep reloads
cp "$work/node.good" "$work/node.yaml"

step "clean stop (SIGTERM)"
kill "$pid"
wait "$pid" || true
pid=
cat "$work/node.log"
