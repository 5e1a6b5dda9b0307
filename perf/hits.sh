#!/usr/bin/env bash
# Cache-hit load test: corvid's memory hits against nginx proxy_cache and Varnish, in one run on
# one machine, with the cheapest answer this machine can give (nginx `return 200` with a 1 KiB
# body) as the ceiling.
#
#   perf/hits.sh                                  # wrk -t2 -c64 -d10s, sizes 1k 64k 1m, sweep 16..1024
#   DURATION=5s SWEEP="64 256" perf/hits.sh
#   SIZES=1k SWEEP= PACES="8 4 2" perf/hits.sh    # also: latency at fixed offered load
#
# PACES lists per-connection pauses in ms (perf/paced.lua): each run offers
# CONNS * 1000 / pace req/s of 1 KiB to every server, so p99s compare at equal load.
#
# Needs wrk, nginx and varnish (Debian packages; installed when missing, as root).
# The peers' backend is a corvid instance with its cache off, which signs requests for the
# SigV4-checking origin (nginx and Varnish cannot sign); it is only asked once per object, when
# a cache fills, so it does not enter the hit figures. Every cache is warmed before measuring.
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh

SIZES=${SIZES:-"1k 64k 1m"}
SWEEP=${SWEEP-"16 64 256 1024"}
PACES=${PACES:-}
ulimit -n 65536 2>/dev/null || true

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx || ! need varnishd; then
  apt-get update -qq && apt-get install -y -qq wrk nginx varnish >/dev/null
fi

build_release --bin corvid --example origin
make_workdir

start_origin "$WORK/data" 1k=1024 64k=65536 1m=1048576
pids+=("$origin_pid")

signer_port=$(free_port)
corvid_toml "$signer_port" 2 0 >"$WORK/signer.toml"
RUST_LOG=warn target/release/corvid serve -c "$WORK/signer.toml" 2>"$WORK/signer.log" &
pids+=($!)
corvid_port=$(free_port)
corvid_toml "$corvid_port" 2 '"512MiB"' >"$WORK/corvid.toml"
RUST_LOG=warn CORVID_PIN=${CORVID_PIN:-1} target/release/corvid serve -c "$WORK/corvid.toml" 2>"$WORK/corvid.log" &
pids+=($!)

nginx_port=$(free_port)
ceiling_port=$(free_port)
head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/1k.txt"
mkdir -p "$WORK/nginx-cache" "$WORK/nginx-tmp"
cat >"$WORK/nginx.conf" <<NGINX
# nginx proxy_cache with its usual best settings for small hot objects.
user root;
worker_processes 2;
worker_cpu_affinity auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
worker_rlimit_nofile 65536;
events { worker_connections 8192; multi_accept on; }
http {
  access_log off;
  sendfile on;
  tcp_nopush off;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  open_file_cache max=10000 inactive=60s;
  client_body_temp_path $WORK/nginx-tmp;
  proxy_temp_path $WORK/nginx-tmp;
  fastcgi_temp_path $WORK/nginx-tmp;
  uwsgi_temp_path $WORK/nginx-tmp;
  scgi_temp_path $WORK/nginx-tmp;
  proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=perf:64m max_size=1g inactive=1h use_temp_path=off;
  upstream signer { server 127.0.0.1:$signer_port; keepalive 64; }
  server {
    listen 127.0.0.1:$nginx_port reuseport backlog=4096;
    location / {
      proxy_pass http://signer;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache perf;
      proxy_cache_valid 200 1h;
      proxy_cache_lock on;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
    }
  }
  server {
    listen 127.0.0.1:$ceiling_port reuseport backlog=4096;
    location / { root $WORK; try_files /1k.txt =404; }
    location = /ceiling { return 200 "$(cat "$WORK/1k.txt")"; }
  }
}
NGINX
nginx -c "$WORK/nginx.conf"

varnish_port=$(free_port)
mkdir -p "$WORK/varnish"
varnishd -F -n "$WORK/varnish" -a "127.0.0.1:$varnish_port" -b "127.0.0.1:$signer_port" \
  -s malloc,512m -t 3600 -p thread_pools=2 -p thread_pool_min=100 -p thread_pool_max=2000 \
  -p workspace_backend=256k >"$WORK/varnish.log" 2>&1 &
pids+=($!)

for url in "http://127.0.0.1:$corvid_port/health" "http://127.0.0.1:$ceiling_port/ceiling" \
  "http://127.0.0.1:$nginx_port/perf/1k" "http://127.0.0.1:$varnish_port/perf/1k"; do
  wait_http "$url"
done
# Warm every cache (twice: the first request fills, the second must hit).
for size in $SIZES; do
  for port in $corvid_port $nginx_port $varnish_port; do
    curl -s -o /dev/null "http://127.0.0.1:$port/perf/$size"
    curl -s -o /dev/null "http://127.0.0.1:$port/perf/$size"
  done
done
first=$(echo "$SIZES" | awk '{print $1}')
curl -s -D - -o /dev/null "http://127.0.0.1:$corvid_port/perf/$first" | grep -qi '^x-cache: HIT' || { echo "corvid is not hitting" >&2; exit 1; }

machine_line
echo "# nginx $(nginx -v 2>&1 | sed 's/.*\///'), varnish $(varnishd -V 2>&1 | head -1 | sed 's/.*varnish-\([0-9.]*\).*/\1/'); wrk -t$THREADS -d$DURATION --latency"
printf 'run\treq/s\tp50 ms\tp99 ms\terrors\n'
for size in $SIZES; do
  run_wrk "corvid $size c$CONNS" "http://127.0.0.1:$corvid_port/perf/$size"
  run_wrk "nginx $size c$CONNS" "http://127.0.0.1:$nginx_port/perf/$size"
  run_wrk "varnish $size c$CONNS" "http://127.0.0.1:$varnish_port/perf/$size"
done
run_wrk "ceiling 1k c$CONNS" "http://127.0.0.1:$ceiling_port/ceiling"
for c in $SWEEP; do
  CONNS=$c run_wrk "corvid 1k c$c" "http://127.0.0.1:$corvid_port/perf/1k"
  CONNS=$c run_wrk "nginx 1k c$c" "http://127.0.0.1:$nginx_port/perf/1k"
  CONNS=$c run_wrk "varnish 1k c$c" "http://127.0.0.1:$varnish_port/perf/1k"
  CONNS=$c run_wrk "ceiling 1k c$c" "http://127.0.0.1:$ceiling_port/ceiling"
done
for pace in $PACES; do
  rate=$((CONNS * 1000 / pace))
  for target in "corvid:$corvid_port/perf/1k" "nginx:$nginx_port/perf/1k" \
    "varnish:$varnish_port/perf/1k" "ceiling:$ceiling_port/ceiling"; do
    PACE_MS=$pace run_wrk "${target%%:*} 1k c$CONNS @${rate}/s" "http://127.0.0.1:${target#*:}" \
      -s perf/paced.lua
  done
done
