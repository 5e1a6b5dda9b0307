#!/usr/bin/env bash
# Disk-tier hits: corvid with the memory tier off (every hit comes from the mmap'd segments)
# next to corvid with the memory tier on, in one run. wrk -t2 -c64, 1 KiB / 64 KiB / 1 MiB.
#
#   perf/disk_hits.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh

SIZES=${SIZES:-"1k 64k 1m"}

build_release --bin corvid --example origin
make_workdir

start_origin "$WORK/data" 1k=1024 64k=65536 1m=1048576
pids+=("$origin_pid")

start_corvid() { # NAME MEMORY DISKBLOCK -> sets $port (no subshell: it starts a server)
  port=$(free_port)
  corvid_toml "$port" 2 "$2" "$3" >"$WORK/$1.toml"
  RUST_LOG=warn target/release/corvid serve -c "$WORK/$1.toml" 2>"$WORK/$1.log" &
  pids+=($!)
}
start_corvid disk 0 "[cache.disk]
dir = \"$WORK/disk\"
capacity = \"1GiB\"
segment_size = \"64MiB\""
disk_port=$port
start_corvid memory '"512MiB"' ""
mem_port=$port
wait_http "http://127.0.0.1:$disk_port/health"
wait_http "http://127.0.0.1:$mem_port/health"
for size in $SIZES; do
  for port in $disk_port $mem_port; do
    curl -s -o /dev/null "http://127.0.0.1:$port/perf/$size"
  done
  curl -s -D - -o /dev/null "http://127.0.0.1:$disk_port/perf/$size" | grep -qi '^x-cache-layer: disk' \
    || { echo "disk-only corvid is not hitting disk" >&2; exit 1; }
done

machine_line
echo "# wrk -t$THREADS -c$CONNS -d$DURATION --latency"
printf 'run\treq/s\tp50 ms\tp99 ms\terrors\n'
for size in $SIZES; do
  run_wrk "disk $size" "http://127.0.0.1:$disk_port/perf/$size"
  run_wrk "memory $size" "http://127.0.0.1:$mem_port/perf/$size"
done
