#!/usr/bin/env bash
# halb vs HAProxy 2.6 vs nginx 1.22 on loopback, each proxy with ONE worker thread, in front
# of the same two backends (nginx serving a small static body). Runs alternate between the
# proxies; each row prints requests/s, p50/p99 latency (wrk) and the proxy's CPU time per
# request, from /proc/<pid>/stat utime+stime deltas. L4: a sink server and a client pushing
# GiBs through each proxy, and straight to the sink as the limit; CPU per GiB.
#
# TLS (halb vs HAProxy, the same ECDSA P-256 certificate made for the run, TLS 1.3): full
# handshakes/s and resumed handshakes/s (openssl s_time -new / -reuse -www /: a new
# connection, a handshake and one HTTP/1.0 request each; one client process) with the
# proxy's CPU per connection, and keep-alive requests/s over TLS (wrk over https).
#
# usage: bench/run.sh BUILD_DIR [--quick] [--duration SECS] [--rounds N] [--gib N] [--tls-only]
#   BUILD_DIR holds app/halb and bench/tcp_bulk (a Release build).
# Whole run < 6 min by default; --quick (CI) is about 1.5 min; --tls-only runs the TLS rows.
set -euo pipefail

build=${1:?usage: bench/run.sh BUILD_DIR [--quick] [--duration S] [--rounds N] [--gib N]}
shift
dur=5
rounds=2
gib=4
conns_ka=50
conns_close=20
tls_only=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) dur=2; rounds=1; gib=1 ;;
    --tls-only) tls_only=1 ;;
    --duration) dur=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --gib) gib=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

halb_bin=$(realpath "$build/app/halb")
bulk_bin=$(realpath "$build/bench/tcp_bulk")
for b in "$halb_bin" "$bulk_bin" /usr/sbin/haproxy /usr/sbin/nginx /usr/bin/wrk; do
  [[ -x $b ]] || { echo "missing $b (build Release with HALB_BUILD_BENCH=ON; ./scripts/install-deps.sh)" >&2; exit 1; }
done
stream_mod=/usr/lib/nginx/modules/ngx_stream_module.so
[[ -f $stream_mod ]] || { echo "missing $stream_mod (apt-get install libnginx-mod-stream)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/halb-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Ports: a block chosen from the PID so parallel runs do not collide.
base=$((20000 + ($$ % 2000) * 10))
b1=$base b2=$((base + 1)) sink=$((base + 2))
declare -A http_port=([halb]=$((base + 3)) [haproxy]=$((base + 4)) [nginx]=$((base + 5)))
declare -A tcp_port=([halb]=$((base + 6)) [haproxy]=$((base + 7)) [nginx]=$((base + 8)))
declare -A tls_port=([halb]=$((base + 10)) [haproxy]=$((base + 11)))
declare -A pid_of

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 did not open" >&2
  return 1
}

# --- backends: one nginx process (no master, one worker) serving two ports ---------------
mkdir -p "$tmp/backend" "$tmp/nginx"
cat >"$tmp/backend/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1;
pid $tmp/backend/nginx.pid; error_log $tmp/backend/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000; keepalive_timeout 60s;
  server { listen 127.0.0.1:$b1; location / { return 200 "hello from backend one\n"; } }
  server { listen 127.0.0.1:$b2; location / { return 200 "hello from backend two\n"; } }
}
EOF
/usr/sbin/nginx -p "$tmp/backend" -c "$tmp/backend/nginx.conf" -e "$tmp/backend/error.log" &
pids+=($!)
"$bulk_bin" sink "$sink" &
pids+=($!)
wait_port "$b1"; wait_port "$b2"; wait_port "$sink"

# --- the certificate both TLS frontends serve (made here, deleted with $tmp) ----------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench.example -addext subjectAltName=DNS:bench.example \
  -keyout "$tmp/tls.key" -out "$tmp/tls.pem" >/dev/null 2>&1
chmod 600 "$tmp/tls.key"
cat "$tmp/tls.pem" "$tmp/tls.key" >"$tmp/tls-haproxy.pem"

# --- the proxies ---------------------------------------------------------------------------
cat >"$tmp/halb.yaml" <<EOF
workers: 1
logging: { level: warn }
admin: { listen: 127.0.0.1:$((base + 9)) }
frontends:
  - { name: web, mode: http, bind: 127.0.0.1:${http_port[halb]}, default_backend: web }
  - { name: bulk, mode: tcp, bind: 127.0.0.1:${tcp_port[halb]}, default_backend: sink }
  - name: webs
    mode: http
    bind: 127.0.0.1:${tls_port[halb]}
    default_backend: web
    tls: { certificates: [{ cert: $tmp/tls.pem, key: $tmp/tls.key }] }
backends:
  - name: web
    servers:
      - { name: b1, address: 127.0.0.1:$b1 }
      - { name: b2, address: 127.0.0.1:$b2 }
  - name: sink
    servers:
      - { name: sink, address: 127.0.0.1:$sink }
EOF
# `halb run`: the real binary (health checks on, every server must pass one first).
"$halb_bin" run -c "$tmp/halb.yaml" --node bench >"$tmp/halb.log" 2>&1 &
pid_of[halb]=$!
pids+=($!)

# HAProxy: one thread, keep-alive both sides (its default http-reuse safe), X-Forwarded-For
# added like halb and nginx do; TCP without splice (its default).
cat >"$tmp/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 3s
  timeout client 30s
  timeout server 30s
  option forwardfor
frontend web
  bind 127.0.0.1:${http_port[haproxy]}
  default_backend web
backend web
  balance roundrobin
  server b1 127.0.0.1:$b1
  server b2 127.0.0.1:$b2
listen bulk
  mode tcp
  bind 127.0.0.1:${tcp_port[haproxy]}
  server sink 127.0.0.1:$sink
frontend webs
  bind 127.0.0.1:${tls_port[haproxy]} ssl crt $tmp/tls-haproxy.pem alpn http/1.1 ssl-min-ver TLSv1.2
  default_backend web
EOF
/usr/sbin/haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
pid_of[haproxy]=$!
pids+=($!)

# nginx: one process, upstream keep-alive, X-Forwarded-For; stream module for TCP.
cat >"$tmp/nginx/nginx.conf" <<EOF
load_module $stream_mod;
daemon off; master_process off; worker_processes 1;
pid $tmp/nginx/nginx.pid; error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  upstream web { server 127.0.0.1:$b1; server 127.0.0.1:$b2; keepalive 64; }
  server {
    listen 127.0.0.1:${http_port[nginx]};
    location / {
      proxy_pass http://web;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
stream { server { listen 127.0.0.1:${tcp_port[nginx]}; proxy_pass 127.0.0.1:$sink; } }
EOF
/usr/sbin/nginx -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" -e "$tmp/nginx/error.log" &
pid_of[nginx]=$!
pids+=($!)

for p in halb haproxy nginx; do wait_port "${http_port[$p]}"; wait_port "${tcp_port[$p]}"; done
for p in halb haproxy; do wait_port "${tls_port[$p]}"; done
# halb serves once its first health checks have passed.
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:${http_port[halb]}/" >/dev/null 2>&1 && break
  sleep 0.05
done

# --- measurements --------------------------------------------------------------------------
to_ms() {  # wrk latency "123.45us" | "1.23ms" | "1.02s" -> ms
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n *= 1; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}

# http_run NAME PORT CONNS [extra wrk args] -> appends "rps p50 p99 cpu_us" to $tmp/res.NAME.MODE
http_run() {
  local name=$1 port=$2 conns=$3 mode=$4
  shift 4
  local pid=${pid_of[$name]:-}
  local c0=0
  [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
  wrk -t1 -c"$conns" -d"${dur}s" --latency "$@" "http://127.0.0.1:$port/" >"$tmp/wrk.out" 2>&1 || true
  local c1=0
  [[ -n $pid ]] && c1=$(cpu_ticks "$pid")
  local reqs rps p50 p99 errs
  reqs=$(awk '/requests in/ {print $1}' "$tmp/wrk.out")
  rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.out")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$tmp/wrk.out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$tmp/wrk.out")")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' "$tmp/wrk.out" | tr '\n' ' ')
  local cpu="-"
  if [[ -n $pid && ${reqs:-0} -gt 0 ]]; then
    cpu=$(awk -v d=$((c1 - c0)) -v hz="$hz" -v r="$reqs" 'BEGIN { printf "%.1f", d / hz * 1e6 / r }')
  fi
  [[ -n $errs ]] && echo "  note ($name $mode): $errs" >&2
  echo "${rps:-0} ${p50:-0} ${p99:-0} $cpu" >>"$tmp/res.$name.$mode"
}

# tcp_run NAME PORT -> appends "gib_per_s cpu_s_per_gib"
tcp_run() {
  local name=$1 port=$2
  local pid=${pid_of[$name]:-}
  local bytes=$((gib * 1024 * 1024 * 1024))
  local c0=0
  [[ -n $pid ]] && c0=$(cpu_ticks "$pid")
  local out
  out=$("$bulk_bin" push "$port" "$bytes")
  local c1=0
  [[ -n $pid ]] && c1=$(cpu_ticks "$pid")
  local secs=${out%% *}
  local cpu="-"
  [[ -n $pid ]] && cpu=$(awk -v d=$((c1 - c0)) -v hz="$hz" -v g="$gib" 'BEGIN { printf "%.3f", d / hz / g }')
  awk -v s="$secs" -v g="$gib" -v c="$cpu" 'BEGIN { printf "%.3f %s\n", g / s, c }' >>"$tmp/res.$name.tcp"
}

# tls_handshakes NAME PORT MODE(new|reuse) -> appends "handshakes_per_s cpu_us_per_handshake"
tls_handshakes() {
  local name=$1 port=$2 mode=$3
  local pid=${pid_of[$name]}
  local c0 c1 t0 t1 n
  c0=$(cpu_ticks "$pid")
  t0=$(date +%s.%N)
  # -www: one HTTP/1.0 request per connection, which also makes s_time read the TLS 1.3
  # session ticket (without it -reuse silently does full handshakes).
  timeout $((dur + 10)) openssl s_time -connect "127.0.0.1:$port" -"$mode" -time "$dur" -www / \
    >"$tmp/stime.out" 2>&1 || true
  t1=$(date +%s.%N)
  c1=$(cpu_ticks "$pid")
  # "N connections in X real seconds" (s_time counts whole seconds; time it ourselves)
  n=$(awk '/connections in .* real seconds/ {print $1; exit}' "$tmp/stime.out")
  awk -v n="${n:-0}" -v t0="$t0" -v t1="$t1" -v d=$((c1 - c0)) -v hz="$hz" 'BEGIN {
    if (n == 0) { print "0 -"; exit }
    printf "%.0f %.1f\n", n / (t1 - t0), d / hz * 1e6 / n }' >>"$tmp/res.$name.tls_$mode"
}

# tls_keepalive NAME PORT -> appends "rps p50 p99 cpu_us" (wrk over https)
tls_keepalive() {
  local name=$1 port=$2
  local pid=${pid_of[$name]}
  local c0 c1
  c0=$(cpu_ticks "$pid")
  wrk -t1 -c"$conns_ka" -d"${dur}s" --latency "https://127.0.0.1:$port/" >"$tmp/wrk.out" 2>&1 || true
  c1=$(cpu_ticks "$pid")
  local reqs rps p50 p99
  reqs=$(awk '/requests in/ {print $1}' "$tmp/wrk.out")
  rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.out")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$tmp/wrk.out")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$tmp/wrk.out")")
  local cpu=$(awk -v d=$((c1 - c0)) -v hz="$hz" -v r="${reqs:-0}" 'BEGIN { if (r == 0) print "-"; else printf "%.1f", d / hz * 1e6 / r }')
  echo "${rps:-0} ${p50:-0} ${p99:-0} $cpu" >>"$tmp/res.$name.tls_ka"
}

tls_rows() {
  local order=("$@")
  for p in "${order[@]}"; do tls_handshakes "$p" "${tls_port[$p]}" new; done
  for p in "${order[@]}"; do tls_handshakes "$p" "${tls_port[$p]}" reuse; done
  for p in "${order[@]}"; do tls_keepalive "$p" "${tls_port[$p]}"; done
}

proxies=(halb haproxy nginx)
echo "halb bench: ${dur}s per HTTP run, $rounds round(s), ${gib} GiB per L4 run, wrk -t1 (-c$conns_ka keep-alive, -c$conns_close close)" >&2
# Warm-up (fills server pools, caches).
for p in "${proxies[@]}"; do
  wrk -t1 -c"$conns_ka" -d1s "http://127.0.0.1:${http_port[$p]}/" >/dev/null 2>&1 || true
done
for p in halb haproxy; do
  wrk -t1 -c"$conns_ka" -d1s "https://127.0.0.1:${tls_port[$p]}/" >/dev/null 2>&1 || true
done
for r in $(seq 1 "$rounds"); do
  if [[ $tls_only == 1 ]]; then
    tls_order=(halb haproxy)
    ((r % 2 == 0)) && tls_order=(haproxy halb)
    echo "round $r (TLS): ${tls_order[*]}" >&2
    tls_rows "${tls_order[@]}"
    continue
  fi
  # Rotate the order each round so no proxy always runs first (thermal, cache, neighbours).
  order=("${proxies[@]:$(((r - 1) % 3))}" "${proxies[@]:0:$(((r - 1) % 3))}")
  echo "round $r: ${order[*]}" >&2
  http_run direct "$b1" "$conns_ka" ka
  for p in "${order[@]}"; do http_run "$p" "${http_port[$p]}" "$conns_ka" ka; done
  for p in "${order[@]}"; do http_run "$p" "${http_port[$p]}" "$conns_close" close -H 'Connection: close'; done
  tcp_run direct "$sink"
  for p in "${order[@]}"; do tcp_run "$p" "${tcp_port[$p]}"; done
  tls_order=(halb haproxy)
  ((r % 2 == 0)) && tls_order=(haproxy halb)
  tls_rows "${tls_order[@]}"
done

# --- report: median over rounds of each column --------------------------------------------
median_cols() {  # file -> median of each column
  awk '{ for (i = 1; i <= NF; i++) v[i, NR] = $i; nf = NF } END {
    for (i = 1; i <= nf; i++) {
      n = 0; for (r = 1; r <= NR; r++) a[++n] = v[i, r]
      if (a[1] == "-") { printf "%s ", "-"; continue }
      for (x = 1; x <= n; x++) for (y = x + 1; y <= n; y++) if (a[y] + 0 < a[x] + 0) { t = a[x]; a[x] = a[y]; a[y] = t }
      m = (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      printf "%s ", m
    }
    printf "\n" }' "$1"
}

if [[ $tls_only == 0 ]]; then
printf '\n%-28s %12s %10s %10s %14s\n' "HTTP (wrk -t1)" "requests/s" "p50 ms" "p99 ms" "CPU us/req"
for mode in ka close; do
  label=$([[ $mode == ka ]] && echo "keep-alive" || echo "new conn per request")
  names=(halb haproxy nginx)
  [[ $mode == ka ]] && names=(direct "${names[@]}")
  for n in "${names[@]}"; do
    [[ -f $tmp/res.$n.$mode ]] || continue
    read -r rps p50 p99 cpu < <(median_cols "$tmp/res.$n.$mode")
    printf '%-28s %12.0f %10s %10s %14s\n' "$n, $label" "$rps" "$p50" "$p99" "$cpu"
  done
done
printf '\n%-28s %12s %14s\n' "L4 bulk (${gib} GiB)" "GiB/s" "CPU s/GiB"
for n in direct halb haproxy nginx; do
  read -r gbs cpu < <(median_cols "$tmp/res.$n.tcp")
  printf '%-28s %12s %14s\n' "$n" "$gbs" "$cpu"
done
fi
printf '\n%-36s %12s %16s\n' "TLS 1.3, ECDSA P-256 (s_time -www)" "handshakes/s" "CPU us/handshake"
for mode in new reuse; do
  label=$([[ $mode == new ]] && echo "full handshake" || echo "resumed (ticket)")
  for n in halb haproxy; do
    read -r hs cpu < <(median_cols "$tmp/res.$n.tls_$mode")
    printf '%-36s %12s %16s\n' "$n, $label" "$hs" "$cpu"
  done
done
printf '\n%-36s %12s %10s %10s %14s\n' "TLS keep-alive (wrk -t1 https)" "requests/s" "p50 ms" "p99 ms" "CPU us/req"
for n in halb haproxy; do
  read -r rps p50 p99 cpu < <(median_cols "$tmp/res.$n.tls_ka")
  printf '%-36s %12.0f %10s %10s %14s\n' "$n" "$rps" "$p50" "$p99" "$cpu"
done
echo
echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
