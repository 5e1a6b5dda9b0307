#!/usr/bin/env bash
# The access log's cost on the hit path: memory hits of one cached 1 KiB object through a
# corvid with `[log] access` off and one logging every request to a file, same origin, same
# build, 2 workers each, wrk alternating between them (ROUNDS rounds).
#
#   perf/access_log_hits.sh          # DURATION=10s CONNS=64 THREADS=2 ROUNDS="1 2"
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
ulimit -n 65536 2>/dev/null || true
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

build_release --bin corvid --example origin
make_workdir
start_origin "$WORK/data" 1k=1024
pids+=("$origin_pid")
off=$(free_port); on=$(free_port)
corvid_toml "$off" 2 '"64MiB"' > "$WORK/off.toml"
corvid_toml "$on" 2 '"64MiB"' "
[log]
access = \"$WORK/access.log\"
" > "$WORK/on.toml"
RUST_LOG=warn target/release/corvid serve -c "$WORK/off.toml" 2>/dev/null & pids+=($!)
RUST_LOG=warn target/release/corvid serve -c "$WORK/on.toml" 2>/dev/null & pids+=($!)
for p in "$off" "$on"; do
  wait_http "http://127.0.0.1:$p/health"
  curl -s -o /dev/null "http://127.0.0.1:$p/perf/1k"
done
machine_line
echo "# 1 KiB memory hits, access log off vs on (file), wrk -t$THREADS -c$CONNS -d$DURATION"
for r in ${ROUNDS:-1 2}; do
  run_wrk "off r$r" "http://127.0.0.1:$off/perf/1k"
  run_wrk "on r$r" "http://127.0.0.1:$on/perf/1k"
done
echo "# access log: $(wc -l < "$WORK/access.log") lines, $(du -h "$WORK/access.log" | cut -f1)"
curl -s "http://127.0.0.1:$on/metrics" | grep '^corvid_access_log_dropped_total'
