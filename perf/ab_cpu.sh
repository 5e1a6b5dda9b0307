#!/usr/bin/env bash
# A/B of corvid binaries, pinned: corvid (1 worker) on core 0, wrk (-t1) and the origin on
# core 1, one binary after the other per round. Prints req/s and corvid CPU µs per request
# (utime+stime from /proc over the requests wrk completed), which is far steadier on a shared
# VM than req/s alone.
#
#   DURATION=5s ROUNDS="1 2 3 4 5 6 7 8" perf/ab_cpu.sh BINARY_A BINARY_B
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
DURATION=${DURATION:-6s}
build_release --example origin
make_workdir
PIN_ORIGIN="taskset -c 1" start_origin "$WORK/data" 1k=1024
pids+=("$origin_pid")
ports=()
cpids=()
for bin in "$@"; do
  p=$(free_port)
  corvid_toml "$p" 1 '"64MiB"' > "$WORK/$p.toml"
  RUST_LOG=warn CORVID_PIN=1 "$bin" serve -c "$WORK/$p.toml" 2>/dev/null & pids+=($!); cpids+=($!)
  ports+=("$p")
done
for p in "${ports[@]}"; do wait_http "http://127.0.0.1:$p/health"; curl -s -o /dev/null "http://127.0.0.1:$p/perf/1k"; done
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
hz=$(getconf CLK_TCK)
for r in ${ROUNDS:-1 2 3}; do
  for i in "${!ports[@]}"; do
    t0=$(ticks "${cpids[$i]}")
    out=$(taskset -c 1 wrk -t1 -c"${CONNS:-32}" -d"$DURATION" "http://127.0.0.1:${ports[$i]}/perf/1k")
    t1=$(ticks "${cpids[$i]}")
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
    us=$(python3 -c "print(round(($t1-$t0)/$hz*1e6/$reqs,2))")
    echo "bin$i r$r rps=$rps cpu_us_per_req=$us"
  done
done
