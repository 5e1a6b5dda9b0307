#!/usr/bin/env bash
# Pass-through load test: wrk against corvid in front of the local s3s-fs origin, and against
# the origin directly, in one run, for 1 KiB and 1 MiB objects. Prints a table with the ratio.
#
#   perf/passthrough.sh                 # defaults: wrk -t2 -c64 -d10s
#   DURATION=30s CONNS=128 perf/passthrough.sh
#
# The origin runs without signature checking here (--no-auth) so that the direct run and the
# proxied run cost the origin the same work; corvid still signs every request as in production.
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}

cargo build --release --bin corvid --example origin >/dev/null 2>&1 || cargo build --release --bin corvid --example origin

WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

origin_port=$(free_port)
target/release/examples/origin --dir "$WORK/data" --listen "127.0.0.1:$origin_port" --no-auth \
  --bucket perf --object 1k=1024 --object 1m=1048576 >"$WORK/origin.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$origin_port/"

corvid_port=$(free_port)
cat >"$WORK/corvid.toml" <<TOML
[server]
listen = "127.0.0.1:$corvid_port"
workers = $WORKERS

[[buckets]]
name = "perf"
prefix = "/perf"
endpoint = "http://127.0.0.1:$origin_port"
region = "us-east-1"
bucket = "perf"
access_key = "AKIDPERF"
secret_key = "perf-secret"
TOML
RUST_LOG=warn target/release/corvid serve -c "$WORK/corvid.toml" 2>"$WORK/corvid.log" &
pids+=($!)
wait_http "http://127.0.0.1:$corvid_port/health"

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -m) $(nproc) cores; wrk -t$THREADS -c$CONNS -d$DURATION --latency; corvid workers=$WORKERS"
printf 'run\treq/s\tp50 ms\tp99 ms\terrors\n'
for size in 1k 1m; do
  # Warm both paths (connection pools, page cache) before measuring.
  curl -s -o /dev/null "http://127.0.0.1:$origin_port/perf/$size"
  curl -s -o /dev/null "http://127.0.0.1:$corvid_port/perf/$size"
  o=$(run_wrk "origin $size" "http://127.0.0.1:$origin_port/perf/$size")
  c=$(run_wrk "corvid $size" "http://127.0.0.1:$corvid_port/perf/$size")
  echo "$o"
  echo "$c"
  python3 - "$o" "$c" <<'PY'
import sys
o = float(sys.argv[1].split('\t')[1]); c = float(sys.argv[2].split('\t')[1])
print(f"ratio corvid/origin {sys.argv[1].split()[1]}: {c / o:.2f}x")
PY
done
