#!/usr/bin/env bash
# Memory per idle keep-alive connection: corvid beside nginx proxy_cache, in one run.
#
# Each server (2 workers) gets N client connections that send one GET of a cached 1 KiB object,
# read the answer and then stay open and silent. The growth of the server's resident memory
# (all its processes: nginx master + workers) from before the connections to after, divided by
# N, is the cost of one idle keep-alive connection. Kernel socket memory is not in RSS and not
# counted, for either server.
#
# Two arrival patterns (PATTERNS, both by default), each on freshly started servers:
# - sequential: the clients arrive one after another (each reads its answer before the next
#   connects), so few connections are busy at once;
# - burst: all N connect and send their GET before any answer is read (clients arriving at
#   once, as after a load balancer change), so the server has many requests in hand at once;
#   then they read their answers and stay idle. What the burst took must be given back.
#
#   perf/idle_conns.sh                     # N=5000, both patterns
#   PATTERNS=burst N=2000 perf/idle_conns.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh

N=${N:-5000}
PATTERNS=${PATTERNS:-sequential burst}
ulimit -n 65536 2>/dev/null || true
command -v nginx >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }

build_release --bin corvid --example origin
make_workdir
start_origin "$WORK/data" 1k=1024
pids+=("$origin_pid")

# start_servers: a fresh corvid and nginx (nginx with an empty cache), both warmed with the
# object; sets corvid_port, corvid_pid, nginx_port, nginx_pid.
start_servers() {
  corvid_port=$(free_port)
  corvid_toml "$corvid_port" 2 '"64MiB"' >"$WORK/corvid.toml"
  sed -i 's/^workers = 2$/workers = 2\nidle_timeout = "10m"\nmax_connections = 20000/' "$WORK/corvid.toml"
  RUST_LOG=warn ${CORVID_ENV:-} ${CORVID_BIN:-target/release/corvid} serve -c "$WORK/corvid.toml" 2>>"$WORK/corvid.log" &
  corvid_pid=$!
  pids+=("$corvid_pid")

  nginx_port=$(free_port)
  rm -rf "$WORK/nginx-cache" "$WORK/nginx-tmp"
  mkdir -p "$WORK/nginx-cache" "$WORK/nginx-tmp"
  cat >"$WORK/nginx.conf" <<NGINX
user root;
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_timeout 600;
  keepalive_requests 1000000;
  client_body_temp_path $WORK/nginx-tmp;
  proxy_temp_path $WORK/nginx-tmp;
  proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=perf:64m max_size=1g inactive=1h use_temp_path=off;
  server {
    listen 127.0.0.1:$nginx_port reuseport backlog=4096;
    location / {
      proxy_pass http://127.0.0.1:$corvid_port;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache perf;
      proxy_cache_valid 200 1h;
    }
  }
}
NGINX
  nginx -c "$WORK/nginx.conf"
  nginx_pid=$(cat "$WORK/nginx.pid")
  wait_http "http://127.0.0.1:$corvid_port/health"
  wait_http "http://127.0.0.1:$nginx_port/perf/1k"
  for port in $corvid_port $nginx_port; do
    curl -s -o /dev/null "http://127.0.0.1:$port/perf/1k"
  done
}

stop_servers() {
  kill "$nginx_pid" 2>/dev/null || true
  kill "$corvid_pid" 2>/dev/null || true
  wait "$corvid_pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$nginx_pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$WORK/nginx.pid"
}

# rss_kib PID...: summed VmRSS of the processes and their children.
rss_kib() {
  local total=0 p
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# measure PATTERN LABEL PORT PID...: opens N keep-alive connections, one request each (in the
# given arrival pattern), then idle.
measure() {
  local pattern=$1 label=$2 port=$3
  shift 3
  local before after
  before=$(rss_kib "$@")
  rm -f "$WORK/hold-$label"
  python3 - "$port" "$N" "$WORK/hold-$label" "$pattern" <<'PY' &
import socket, sys, time
port, n, flag, pattern = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
req = b"GET /perf/1k HTTP/1.1\r\nHost: x\r\n\r\n"

def answer(s):
    got = b""
    while not (b"\r\n\r\n" in got and len(got.split(b"\r\n\r\n", 1)[1]) >= 1024):
        chunk = s.recv(65536)
        if not chunk:
            sys.exit(f"connection closed before its answer ({len(got)} bytes)")
        got += chunk

socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(req)
    if pattern == "sequential":
        answer(s)
    socks.append(s)
if pattern == "burst":
    # Every request is sent before any answer is read.
    for s in socks:
        answer(s)
open(flag, "w").close()
time.sleep(120)  # held open until the script kills this process
PY
  local client=$!
  for _ in $(seq 1 900); do [ -f "$WORK/hold-$label" ] && break; sleep 0.1; done
  [ -f "$WORK/hold-$label" ] || { echo "$label: the clients did not get their answers" >&2; exit 1; }
  sleep "${SETTLE:-2}"  # let corvid's connections go idle (20 ms linger) and the allocator settle
  after=$(rss_kib "$@")
  kill "$client" 2>/dev/null || true
  wait "$client" 2>/dev/null || true
  python3 -c "print(f'$pattern\t$label\t{$N}\t{$before}\t{$after}\t{($after - $before) / $N:.2f}')"
}

machine_line
echo "# $N idle keep-alive connections after one 1 KiB hit each; RSS in KiB (all processes)"
printf 'pattern\tserver\tconns\trss_before\trss_after\tKiB_per_conn\n'
for pattern in $PATTERNS; do
  start_servers
  measure "$pattern" corvid "$corvid_port" "$corvid_pid"
  measure "$pattern" nginx "$nginx_port" "$nginx_pid"
  stop_servers
done
