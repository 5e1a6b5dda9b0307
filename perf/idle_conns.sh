#!/usr/bin/env bash
# Memory per idle keep-alive connection: corvid beside nginx proxy_cache, in one run.
#
# Each server (2 workers) gets N client connections that send one GET of a cached 1 KiB object,
# read the answer and then stay open and silent. The growth of the server's resident memory
# (all its processes: nginx master + workers) from before the connections to after, divided by
# N, is the cost of one idle keep-alive connection. Kernel socket memory is not in RSS and not
# counted, for either server.
#
#   perf/idle_conns.sh            # N=5000
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh

N=${N:-5000}
ulimit -n 65536 2>/dev/null || true
command -v nginx >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }

build_release --bin corvid --example origin
make_workdir
start_origin "$WORK/data" 1k=1024
pids+=("$origin_pid")

corvid_port=$(free_port)
corvid_toml "$corvid_port" 2 '"64MiB"' >"$WORK/corvid.toml"
sed -i 's/^workers = 2$/workers = 2\nidle_timeout = "10m"\nmax_connections = 20000/' "$WORK/corvid.toml"
RUST_LOG=warn target/release/corvid serve -c "$WORK/corvid.toml" 2>"$WORK/corvid.log" &
corvid_pid=$!
pids+=("$corvid_pid")

nginx_port=$(free_port)
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
wait_http "http://127.0.0.1:$corvid_port/health"
wait_http "http://127.0.0.1:$nginx_port/perf/1k"
for port in $corvid_port $nginx_port; do
  curl -s -o /dev/null "http://127.0.0.1:$port/perf/1k"
done

# rss_kib PID...: summed VmRSS of the processes and their children.
rss_kib() {
  local total=0 p
  for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
    total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# measure LABEL PORT PID...: opens N keep-alive connections, one request each, then idle.
measure() {
  local label=$1 port=$2
  shift 2
  local before after
  before=$(rss_kib "$@")
  python3 - "$port" "$N" "$WORK/hold-$label" <<'PY' &
import os, socket, sys, time
port, n, flag = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
req = b"GET /perf/1k HTTP/1.1\r\nHost: x\r\n\r\n"
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(req)
    got = b""
    while not (b"\r\n\r\n" in got and len(got.split(b"\r\n\r\n", 1)[1]) >= 1024):
        got += s.recv(65536)
    socks.append(s)
open(flag, "w").close()
time.sleep(60)  # held open until the script kills this process
PY
  local client=$!
  for _ in $(seq 1 600); do [ -f "$WORK/hold-$label" ] && break; sleep 0.1; done
  sleep 2  # let corvid's connections go idle (20 ms linger) and the allocator settle
  after=$(rss_kib "$@")
  kill "$client" 2>/dev/null || true
  wait "$client" 2>/dev/null || true
  python3 -c "print(f'$label\t{$N}\t{$before}\t{$after}\t{($after - $before) / $N:.2f}')"
}

machine_line
echo "# $N idle keep-alive connections after one 1 KiB hit each; RSS in KiB (all processes)"
printf 'server\tconns\trss_before\trss_after\tKiB_per_conn\n'
measure corvid "$corvid_port" "$corvid_pid"
measure nginx "$nginx_port" "$(cat "$WORK/nginx.pid")"
