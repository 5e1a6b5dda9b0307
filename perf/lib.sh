# Helpers shared by the perf scripts (sourced from the repository root).

# wrk settings every script honours from the environment.
DURATION=${DURATION:-10s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}

# build_release ARGS...: `cargo build --release ARGS`, quiet unless it fails.
build_release() {
  cargo build --release "$@" >/dev/null 2>&1 || cargo build --release "$@"
}

# make_workdir: a fresh $WORK (world-readable, for peers' workers) and an EXIT trap that stops
# every pid in $pids (and nginx, when $WORK/nginx.pid exists) and removes $WORK.
make_workdir() {
  WORK=$(mktemp -d)
  chmod 755 "$WORK"
  pids=()
  trap cleanup_workdir EXIT
}
cleanup_workdir() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}

# machine_line: "# <date> <arch>, <cores> cores, <cpu model>" for result headers.
machine_line() {
  echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(uname -m), $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ //')"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL: polls until the URL answers (any status), at most ~20 s.
wait_http() {
  # WAIT_TRIES x 0.1 s (20 s by default; valgrind on a busy machine needs more).
  for _ in $(seq 1 "${WAIT_TRIES:-200}"); do
    if curl -s -o /dev/null "$1"; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for $1" >&2
  return 1
}

# run_wrk LABEL URL [wrk args...]: runs wrk and prints "LABEL req/s p50 p99" (latencies in ms).
run_wrk() {
  local label=$1 url=$2 out
  shift 2
  out=$(${WRK_PREFIX:-} wrk -t"${THREADS}" -c"${CONNS}" -d"${DURATION}" --latency "$@" "$url")
  echo "$out" > "$WORK/wrk-$(echo "$label" | tr ' /' '__').txt"
  local rps p50 p99 errors
  rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$rps" "$(to_ms "$p50")" "$(to_ms "$p99")" "$errors"
}

# to_ms 1.23ms|456.00us|1.2s -> milliseconds
to_ms() {
  python3 - "$1" <<'PY'
import sys, re
v = sys.argv[1]
m = re.match(r'([0-9.]+)(us|ms|s)$', v)
if not m:
    print(v); sys.exit()
n, u = float(m.group(1)), m.group(2)
print(f"{n / 1000 if u == 'us' else n * 1000 if u == 's' else n:.3f}")
PY
}

# start_origin DIR OBJECTS...: starts the s3s-fs origin example on a free port with bucket
# `perf` holding OBJECTS (KEY=SIZE); sets origin_port, origin_pid, access_key, secret_key.
# PIN_ORIGIN may hold a command prefix such as "taskset -c 1".
start_origin() {
  local dir=$1
  shift
  local args=()
  for o in "$@"; do args+=(--object "$o"); done
  origin_port=$(free_port)
  ${PIN_ORIGIN:-} target/release/examples/origin --dir "$dir" --listen "127.0.0.1:$origin_port" \
    --bucket perf "${args[@]}" >"$dir.log" 2>&1 &
  origin_pid=$!
  for _ in $(seq 1 300); do grep -q '^ready' "$dir.log" 2>/dev/null && break; sleep 0.1; done
  access_key=$(awk -F' = ' '/^access_key/ {print $2}' "$dir.log")
  secret_key=$(awk -F' = ' '/^secret_key/ {print $2}' "$dir.log")
}

# corvid_toml PORT WORKERS MEMORY [EXTRA]: a corvid config serving the origin's `perf` bucket
# under /perf (uses origin_port, access_key, secret_key from start_origin); EXTRA is appended.
corvid_toml() {
  cat <<TOML
[server]
listen = "127.0.0.1:$1"
workers = $2

[[buckets]]
name = "perf"
prefix = "/perf"
endpoint = "http://127.0.0.1:$origin_port"
region = "us-east-1"
bucket = "perf"
access_key = "$access_key"
secret_key = "$secret_key"

[cache.memory]
capacity = $3
${4:-}
TOML
}
