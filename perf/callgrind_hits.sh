#!/usr/bin/env bash
# Instructions per memory hit, counted by callgrind (repeatable, unlike wall-clock figures on a
# shared VM). corvid runs under valgrind with one worker on the epoll driver (valgrind does not
# know io_uring); a keep-alive client sends N1 and then N2 GETs of one cached 1 KiB object in
# two runs, and the difference of the two totals divided by N2 - N1 is the cost of one hit,
# start-up and warm-up excluded. Prints the figure and the top functions of the larger run.
#
#   perf/callgrind_hits.sh                  # N1=2000 N2=12000
#   QUERY='?response-content-type=text%2Fplain' perf/callgrind_hits.sh   # hits with overrides
#   CORVID_BIN=/tmp/corvid-base perf/callgrind_hits.sh   # another build's binary (A/B runs)
#   TASK_ONLY=1 perf/callgrind_hits.sh      # count only inside the connection's task (below)
#
# The totals include the runtime's own work between polls (monoio's driver, timer wheel and
# park), which under valgrind depends on timing: one binary gives totals ±500 apart on a busy
# machine. TASK_ONLY=1 counts only while the connection's task is polled (valgrind
# --toggle-collect on `Pooled::poll`, the future every connection runs in): the request's own
# work, steady to a few instructions between runs, for A/B comparisons of the hit path.
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh

N1=${N1:-2000}
N2=${N2:-12000}
# Appended to the object's path (the fill and every hit): e.g. response-* overrides.
export QUERY=${QUERY:-}
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
build_release --bin corvid --example origin
CORVID_BIN=${CORVID_BIN:-target/release/corvid}
make_workdir
start_origin "$WORK/data" 1k=1024
pids+=("$origin_pid")

# run_once N: sets $ir to the total instructions (Ir) of corvid serving N hits (after one
# fill). Not called in $(...): the subshell would run the EXIT trap and stop the origin.
run_once() {
  local n=$1 port
  port=$(free_port)
  corvid_toml "$port" 1 '"64MiB"' >"$WORK/corvid-$n.toml"
  RUST_LOG=warn CORVID_DRIVER=legacy valgrind --tool=callgrind --callgrind-out-file="$WORK/cg-$n.out" \
    ${TASK_ONLY:+'--toggle-collect=<corvid::http::pool::Pooled<*>::poll'} \
    "$CORVID_BIN" serve -c "$WORK/corvid-$n.toml" 2>"$WORK/cg-$n.log" &
  local pid=$!
  wait_http "http://127.0.0.1:$port/health"
  python3 - "$port" "$n" <<'PY'
import http.client, os, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port)
def get():
    c.request("GET", "/perf/1k" + os.environ["QUERY"])
    r = c.getresponse()
    body = r.read()
    assert r.status == 200 and len(body) == 1024, r.status
    return r.getheader("X-Cache")
get()  # the fill
for _ in range(n):
    assert get() == "HIT"
PY
  kill -TERM "$pid"
  wait "$pid" || true
  ir=$(callgrind_annotate "$WORK/cg-$n.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
}

run_once "$N1"
a=$ir
run_once "$N2"
b=$ir
machine_line
echo "# callgrind, corvid 1 worker (legacy driver), 1 KiB memory hits over one keep-alive connection${QUERY:+, query $QUERY}${TASK_ONLY:+, counted inside the connection task only}"
echo "Ir($N1 hits) = $a; Ir($N2 hits) = $b"
echo "instructions per hit: $(( (b - a) / (N2 - N1) ))"
echo "# top functions, $N2-hit run (inclusive of start-up):"
callgrind_annotate --threshold=90 "$WORK/cg-$N2.out" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n 1,25p
