#!/usr/bin/env bash
# Pass-through load test: wrk against corvid in front of the local s3s-fs origin, and against
# the origin directly, in one run, for 1 KiB and 1 MiB objects. Prints a table with the ratio.
#
#   perf/passthrough.sh                 # defaults: wrk -t2 -c64 -d10s
#   DURATION=30s CONNS=128 perf/passthrough.sh
#
# The origin checks signatures in both runs: the direct run sends headers signed once up front
# (examples/sign_headers.rs; valid for the origin's 15-minute clock-skew window), corvid signs
# every request itself as in production. So both runs cost the origin the same work.
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh

DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-2}

build="cargo build --release --bin corvid --example origin --example sign_headers"
$build >/dev/null 2>&1 || $build

WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

origin_port=$(free_port)
target/release/examples/origin --dir "$WORK/data" --listen "127.0.0.1:$origin_port" \
  --bucket perf --object 1k=1024 --object 1m=1048576 >"$WORK/origin.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do grep -q '^ready' "$WORK/origin.log" && break; sleep 0.1; done
access_key=$(awk -F' = ' '/^access_key/ {print $2}' "$WORK/origin.log")
secret_key=$(awk -F' = ' '/^secret_key/ {print $2}' "$WORK/origin.log")

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
access_key = "$access_key"
secret_key = "$secret_key"
TOML
RUST_LOG=warn target/release/corvid serve -c "$WORK/corvid.toml" 2>"$WORK/corvid.log" &
pids+=($!)
wait_http "http://127.0.0.1:$corvid_port/health"

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -m) $(nproc) cores; wrk -t$THREADS -c$CONNS -d$DURATION --latency; corvid workers=$WORKERS"
printf 'run\treq/s\tp50 ms\tp99 ms\terrors\n'
for size in 1k 1m; do
  # Warm both paths (connection pools, page cache) before measuring.
  curl -s -o /dev/null "http://127.0.0.1:$corvid_port/perf/$size"
  sig=$(target/release/examples/sign_headers "127.0.0.1:$origin_port" "/perf/$size" "$access_key" "$secret_key")
  o=$(eval run_wrk "'origin $size'" "http://127.0.0.1:$origin_port/perf/$size" "$sig")
  c=$(run_wrk "corvid $size" "http://127.0.0.1:$corvid_port/perf/$size")
  echo "$o"
  echo "$c"
  python3 - "$o" "$c" <<'PY'
import sys
o = float(sys.argv[1].split('\t')[1]); c = float(sys.argv[2].split('\t')[1])
print(f"ratio corvid/origin {sys.argv[1].split()[1]}: {c / o:.2f}x")
PY
done
