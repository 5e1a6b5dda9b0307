#!/usr/bin/env bash
# Pass-through load test: wrk against corvid in front of the local s3s-fs origin, and against
# the origin directly, in one run, for 1 KiB and 1 MiB objects. Prints a table with the ratio.
#
#   perf/passthrough.sh                          # both layouts, wrk -t2 -c64 -d10s
#   LAYOUTS=isolated DURATION=30s perf/passthrough.sh
#
# Layouts (this machine has 2 cores, and wrk, the origin and corvid all need CPU):
#   isolated  the origin alone on core 1; wrk and corvid (workers = 1) share core 0. This models
#             production, where S3 runs on other machines and does not lose CPU to the proxy.
#   shared    no pinning; corvid runs `WORKERS` workers (default 2) and competes with the origin
#             for the same two cores — the worst case for the proxy.
#
# The origin checks signatures in both runs: the direct run sends headers signed once up front
# (examples/sign_headers.rs; valid for the origin's 15-minute clock-skew window), corvid signs
# every request itself as in production. So both runs cost the origin the same work.
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh

WORKERS=${WORKERS:-2}
LAYOUTS=${LAYOUTS:-"isolated shared"}
SIZES=${SIZES:-"1k 1m"}

build_release --bin corvid --example origin --example sign_headers
make_workdir

machine_line
echo "# wrk -t$THREADS -c$CONNS -d$DURATION --latency"
printf 'layout\trun\treq/s\tp50 ms\tp99 ms\terrors\n'
for layout in $LAYOUTS; do
  if [ "$layout" = isolated ]; then
    pin_origin="taskset -c 1"; pin_front="taskset -c 0"; workers=1
  else
    pin_origin=""; pin_front=""; workers=$WORKERS
  fi
  PIN_ORIGIN=$pin_origin start_origin "$WORK/data-$layout" 1k=1024 1m=1048576
  pids+=("$origin_pid")

  corvid_port=$(free_port)
  # Pass-through is what this script measures: no cache tier (memory capacity 0).
  corvid_toml "$corvid_port" "$workers" 0 >"$WORK/corvid-$layout.toml"
  RUST_LOG=warn $pin_front target/release/corvid serve -c "$WORK/corvid-$layout.toml" 2>"$WORK/corvid-$layout.log" &
  corvid_pid=$!
  pids+=($corvid_pid)
  wait_http "http://127.0.0.1:$corvid_port/health"

  for size in $SIZES; do
    # Warm corvid's upstream pool and the origin's page cache before measuring.
    curl -s -o /dev/null "http://127.0.0.1:$corvid_port/perf/$size"
    sig=$(target/release/examples/sign_headers "127.0.0.1:$origin_port" "/perf/$size" "$access_key" "$secret_key")
    o=$(eval WRK_PREFIX="'$pin_front'" run_wrk "'origin $size'" "http://127.0.0.1:$origin_port/perf/$size" "$sig")
    c=$(WRK_PREFIX="$pin_front" run_wrk "corvid $size" "http://127.0.0.1:$corvid_port/perf/$size")
    printf '%s\t%s\n%s\t%s\n' "$layout" "$o" "$layout" "$c"
    python3 - "$o" "$c" "$layout" <<'PY'
import sys
o = float(sys.argv[1].split('\t')[1]); c = float(sys.argv[2].split('\t')[1])
print(f"{sys.argv[3]}\tratio corvid/origin {sys.argv[1].split()[1]}: {c / o:.2f}x")
PY
  done
  kill "$corvid_pid" "$origin_pid" 2>/dev/null || true
  wait "$corvid_pid" "$origin_pid" 2>/dev/null || true
done
