#!/usr/bin/env bash
# A fleet of three corvid instances (issue 18, `[cluster]`) against the same three without it,
# and against one instance with their summed memory. One run, release builds, loopback:
#
#   perf/fleet.sh
#   PARTS="spread zipf" ZIPF_REQUESTS=100000 perf/fleet.sh     # parts: spread zipf latency
#   PARTS=latency LOCAL_TTL=60s perf/fleet.sh    # the fleet with cluster.local_ttl: peer hits are local copies
#
# 1. spread: SPREAD_KEYS objects (1-4 KiB) requested SPREAD_ROUNDS times through every
#    instance by SPREAD_PROCS concurrent clients (each in its own order), fleet vs 3 instances
#    alone; origin GETs per object = the sum over the instances of
#    `corvid_upstream_requests_total` (origin requests only: peer requests count in
#    `corvid_peer_requests_total`) / SPREAD_KEYS.
# 2. zipf: a Zipf(ZIPF_S) trace of ZIPF_REQUESTS over ZIPF_KEYS keys (1-4 KiB, seeded), request i
#    to instance i % 3 (ZIPF_PROCS client processes): one instance with memory ZIPF_MEM (MiB),
#    the fleet with ZIPF_MEM/3 each, 3 instances alone with ZIPF_MEM/3 each. Hit ratio =
#    1 - origin GETs / requests, fleet-wide.
# 3. latency: a 1 KiB object cached at its owner, wrk on the owner (local hit) and on a
#    non-owner (peer hit: the non-owner does not store relayed answers, so every request hops),
#    -c1 (1 thread) and -c16 (2 threads), LAT_REPEAT rounds alternating local and peer.
#
# Every instance runs 1 worker (three instances, the origin and the clients share this
# machine's cores); the origin is the s3s-fs example (SigV4 on), as in perf/hits.sh. Every
# client answer is checked (status 200, body length); failures and counts that do not add up
# are printed as "CHECK:" lines.
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh

PARTS=${PARTS:-"spread zipf latency"}
SPREAD_KEYS=${SPREAD_KEYS:-200}
SPREAD_ROUNDS=${SPREAD_ROUNDS:-3}
SPREAD_PROCS=${SPREAD_PROCS:-6}
ZIPF_KEYS=${ZIPF_KEYS:-20000}
ZIPF_REQUESTS=${ZIPF_REQUESTS:-300000}
ZIPF_S=${ZIPF_S:-0.9}
ZIPF_SEED=${ZIPF_SEED:-1}
ZIPF_PROCS=${ZIPF_PROCS:-4}
ZIPF_MEM=${ZIPF_MEM:-9}
LAT_REPEAT=${LAT_REPEAT:-2}
DURATION=${DURATION:-10s}
SECRET=fleet-perf-secret-0123456789abcdef

build_release --bin corvid --example origin
make_workdir
# The origin's objects (60k files with s3s-fs's sidecars) live in /dev/shm: on this shared
# machine's busy disk, removing them from /tmp after a run took up to 3 minutes.
SHM=$(mktemp -d /dev/shm/corvid-fleet.XXXXXX)
trap 'cleanup_workdir; rm -rf "$SHM"' EXIT

# The catalog: the zipf keys z00000… (the spread part uses the first SPREAD_KEYS of them, the
# latency part its own object), PUT by the origin example before it says `ready`.
n_keys=$ZIPF_KEYS
[ "$SPREAD_KEYS" -gt "$n_keys" ] && n_keys=$SPREAD_KEYS
mapfile -t catalog < <(python3 perf/fleet_client.py sizes "$n_keys")
start_origin "$SHM/data" "${catalog[@]}" lat=1024
pids+=("$origin_pid")
for _ in $(seq 1 1200); do grep -q '^ready' "$SHM/data.log" 2>/dev/null && break; sleep 0.25; done
grep -q '^ready' "$SHM/data.log" || { echo "origin not ready" >&2; cat "$SHM/data.log" >&2; exit 1; }
access_key=$(awk -F' = ' '/^access_key/ {print $2}' "$SHM/data.log")
secret_key=$(awk -F' = ' '/^secret_key/ {print $2}' "$SHM/data.log")
t_origin=$SECONDS

# start_instances MODE MEMORY [N]: N (3) instances, 1 worker each, memory tier MEMORY (a TOML
# value); MODE `fleet` gives them one [cluster] of the N, `alone` none. Sets ports (array)
# and port_list ("p1,p2,p3").
ports=() inst_pids=()
start_instances() {
  local mode=$1 mem=$2 n=${3:-3} i peers=""
  ports=() inst_pids=()
  for i in $(seq 1 "$n"); do ports+=("$(free_port)"); done
  for i in "${!ports[@]}"; do peers+="${peers:+, }\"127.0.0.1:${ports[$i]}\""; done
  for i in "${!ports[@]}"; do
    local extra=""
    [ "$mode" = fleet ] && extra=$(printf '\n[cluster]\npeer = "127.0.0.1:%s"\npeers = [%s]\nsecret = "%s"\n%s' \
      "${ports[$i]}" "$peers" "$SECRET" "${LOCAL_TTL:+local_ttl = \"$LOCAL_TTL\"}")
    corvid_toml "${ports[$i]}" 1 "$mem" "$extra" >"$WORK/$mode-$i.toml"
    RUST_LOG=warn target/release/corvid serve -c "$WORK/$mode-$i.toml" 2>>"$WORK/$mode-$i.log" &
    inst_pids+=($!)
    pids+=($!)
  done
  for p in "${ports[@]}"; do wait_http "http://127.0.0.1:$p/ready"; done
  port_list=$(IFS=,; echo "${ports[*]}")
}
stop_instances() {
  for p in "${inst_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${inst_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  inst_pids=()
}

# metric NAME_PREFIX: the sum over the running instances of every sample whose name (with
# labels) starts with NAME_PREFIX.
metric() {
  local p total=0 v
  for p in "${ports[@]}"; do
    v=$(curl -s "http://127.0.0.1:$p/metrics" | awk -v m="$1" 'index($0, m) == 1 {s += $NF} END {print s + 0}')
    total=$((total + v))
  done
  echo "$total"
}
# metric_at PORT NAME_PREFIX: the same for one instance.
metric_at() {
  curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" 'index($0, m) == 1 {s += $NF} END {print s + 0}'
}

# counts: "origin=N origin_non2xx=N peer=N peer_non2xx=N served=N fallbacks=N" over the instances.
counts() {
  echo "origin=$(metric corvid_upstream_requests_total)" \
    "origin_non2xx=$(($(metric corvid_upstream_requests_total) - $(metric 'corvid_upstream_requests_total{bucket="perf",outcome="2xx"}')))" \
    "peer=$(metric corvid_peer_requests_total)" \
    "peer_non2xx=$(($(metric corvid_peer_requests_total) - $(metric 'corvid_peer_requests_total{outcome="2xx"}')))" \
    "served=$(metric corvid_peer_requests_served_total)" \
    "fallbacks=$(metric corvid_peer_fallbacks_total)"
}
field() { echo "$2" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
# check_client JSON: prints a CHECK line when the client saw failures.
check_client() {
  python3 - "$1" "$2" <<'PY'
import json, sys
r = json.loads(sys.argv[2])
if r["failures"]:
    print(f"CHECK: {sys.argv[1]}: {r['failures']} of {r['requests']} requests failed: {r['notes']}")
PY
}
# check_peer_counts LABEL COUNTS: in a fleet every peer request sent is one served.
check_peer_counts() {
  local c=$2
  [ "$(field peer "$c")" = "$(field served "$c")" ] ||
    echo "CHECK: $1: peer requests sent $(field peer "$c") != served $(field served "$c")"
  [ "$(field peer_non2xx "$c")" = 0 ] && [ "$(field fallbacks "$c")" = 0 ] &&
    [ "$(field origin_non2xx "$c")" = 0 ] ||
    echo "CHECK: $1: non-2xx or fallbacks: $c"
}

machine_line
echo "# set-up (build check, origin with $((n_keys + 1)) objects PUT) took ${t_origin} s"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg); corvid $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo +dirty)"

if [[ " $PARTS " == *" spread "* ]]; then
  t0=$SECONDS
  echo
  echo "# 1. origin GETs per object: $SPREAD_KEYS objects x $SPREAD_ROUNDS rounds x 3 instances, $SPREAD_PROCS concurrent clients"
  printf 'mode\trequests\torigin GETs\tper object\tpeer requests\tseconds\n'
  for mode in fleet alone; do
    start_instances "$mode" '"64MiB"'
    out=$(python3 perf/fleet_client.py spread "$port_list" "$SPREAD_KEYS" "$SPREAD_ROUNDS" "$SPREAD_PROCS")
    c=$(counts)
    stop_instances
    check_client "spread $mode" "$out"
    [ "$mode" = fleet ] && check_peer_counts "spread fleet" "$c"
    python3 - "$mode" "$out" "$c" "$SPREAD_KEYS" <<'PY'
import json, sys
mode, r, keys = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[4])
c = dict(kv.split("=") for kv in sys.argv[3].split())
print(f"{mode}\t{r['requests']}\t{c['origin']}\t{int(c['origin']) / keys:.2f}\t{c['peer']}\t{r['seconds']}")
PY
  done
  echo "# part 1 took $((SECONDS - t0)) s"
fi

if [[ " $PARTS " == *" zipf "* ]]; then
  t0=$SECONDS
  third=$((ZIPF_MEM * 1024 / 3))
  echo
  echo "# 2. hit ratio: Zipf($ZIPF_S) over $ZIPF_KEYS keys of 1-4 KiB, $ZIPF_REQUESTS requests round-robin, seed $ZIPF_SEED; memory C = $ZIPF_MEM MiB"
  printf 'setup\trequests\torigin GETs\thit ratio\tpeer requests\treq/s\n'
  for setup in one fleet alone; do
    case $setup in
      one) start_instances alone "\"${ZIPF_MEM}MiB\"" 1 ;;
      fleet) start_instances fleet "\"${third}KiB\"" ;;
      alone) start_instances alone "\"${third}KiB\"" ;;
    esac
    out=$(python3 perf/fleet_client.py zipf "$port_list" "$ZIPF_KEYS" "$ZIPF_REQUESTS" "$ZIPF_S" "$ZIPF_SEED" "$ZIPF_PROCS")
    c=$(counts)
    stop_instances
    check_client "zipf $setup" "$out"
    [ "$setup" = fleet ] && check_peer_counts "zipf fleet" "$c"
    label=$(case $setup in one) echo "1 instance, C" ;; fleet) echo "fleet of 3, C/3 each" ;; alone) echo "3 alone, C/3 each" ;; esac)
    python3 - "$label" "$out" "$c" <<'PY'
import json, sys
label, r = sys.argv[1], json.loads(sys.argv[2])
c = dict(kv.split("=") for kv in sys.argv[3].split())
hit = 1 - int(c["origin"]) / r["requests"]
print(f"{label}\t{r['requests']}\t{c['origin']}\t{hit * 100:.1f} %\t{c['peer']}\t{r['requests'] / r['seconds']:.0f}")
PY
  done
  echo "# part 2 took $((SECONDS - t0)) s"
fi

if [[ " $PARTS " == *" latency "* ]]; then
  t0=$SECONDS
  echo
  echo "# 3. local hit vs peer hit: 1 KiB object, wrk -d$DURATION --latency, fleet of 3 (1 worker each)"
  start_instances fleet '"64MiB"'
  # One GET through each instance: the owner answers its own request and the other two ask it,
  # so the owner is the instance whose served count is then 2.
  for p in "${ports[@]}"; do curl -s -o /dev/null "http://127.0.0.1:$p/perf/lat"; done
  owner="" asker=""
  for p in "${ports[@]}"; do
    if [ "$(metric_at "$p" corvid_peer_requests_served_total)" = 2 ]; then owner=$p; else asker=${asker:-$p}; fi
  done
  [ -n "$owner" ] || { echo "CHECK: no instance served both peers' requests: $(counts)"; exit 1; }
  xc() { curl -s -D - -o /dev/null "http://127.0.0.1:$1/perf/lat" | awk -F': ' 'tolower($1)=="x-cache" {gsub("\r",""); print $2}'; }
  echo "# owner 127.0.0.1:$owner (X-Cache $(xc "$owner")), asker 127.0.0.1:$asker (X-Cache $(xc "$asker"))"
  printf 'run\treq/s\tp50 ms\tp99 ms\terrors\n'
  for r in $(seq 1 "$LAT_REPEAT"); do
    for conns in 1 16; do
      threads=2
      [ "$conns" = 1 ] && threads=1
      for kind in local peer; do
        port=$owner
        [ "$kind" = peer ] && port=$asker
        served0=$(metric_at "$owner" corvid_peer_requests_served_total)
        origin0=$(metric corvid_upstream_requests_total)
        THREADS=$threads CONNS=$conns run_wrk "$kind c$conns r$r" "http://127.0.0.1:$port/perf/lat"
        served=$(($(metric_at "$owner" corvid_peer_requests_served_total) - served0))
        origin=$(($(metric corvid_upstream_requests_total) - origin0))
        n=$(awk '/requests in/ {print $1}' "$WORK/wrk-$(echo "$kind c$conns r$r" | tr ' /' '__').txt")
        [ "$origin" = 0 ] || echo "CHECK: $kind c$conns r$r: $origin origin requests during a hit run"
        want=0
        # With local_ttl the asker answers from its copy (made by the GETs above): no hop.
        [ "$kind" = peer ] && [ -z "${LOCAL_TTL:-}" ] && want=$n
        # wrk counts only completed responses; up to $conns requests may be cut at the end.
        [ "$served" -ge "$want" ] && [ "$served" -le $((want + conns)) ] ||
          echo "CHECK: $kind c$conns r$r: owner served $served peer requests for $n client requests"
      done
    done
  done
  echo "# after: $(counts)"
  stop_instances
  echo "# part 3 took $((SECONDS - t0)) s"
fi
