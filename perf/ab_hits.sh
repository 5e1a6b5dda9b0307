#!/usr/bin/env bash
# A/B of two corvid binaries in one run: memory hits of one object (1 KiB unless OBJECT says
# NAME=BYTES), wrk alternating between them.
#
#   perf/ab_hits.sh BINARY_A BINARY_B      # e.g. two copies of target/release/corvid
#   OBJECT=64k=65536 perf/ab_hits.sh A B
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
DURATION=${DURATION:-8s}
build_release --example origin
make_workdir
OBJECT=${OBJECT:-1k=1024}
name=${OBJECT%%=*}
start_origin "$WORK/data" "$OBJECT"
pids+=("$origin_pid")
pa=$(free_port); pb=$(free_port)
corvid_toml "$pa" 2 '"64MiB"' > "$WORK/a.toml"
corvid_toml "$pb" 2 '"64MiB"' > "$WORK/b.toml"
RUST_LOG=warn CORVID_PIN=1 "$1" serve -c "$WORK/a.toml" 2>/dev/null & pids+=($!)
RUST_LOG=warn CORVID_PIN=1 "$2" serve -c "$WORK/b.toml" 2>/dev/null & pids+=($!)
wait_http "http://127.0.0.1:$pa/health"; wait_http "http://127.0.0.1:$pb/health"
curl -s -o /dev/null "http://127.0.0.1:$pa/perf/$name"; curl -s -o /dev/null "http://127.0.0.1:$pb/perf/$name"
machine_line
for r in 1 2; do
  run_wrk "A r$r" "http://127.0.0.1:$pa/perf/$name"
  run_wrk "B r$r" "http://127.0.0.1:$pb/perf/$name"
done
