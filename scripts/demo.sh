#!/usr/bin/env bash
# corvid demo: a local S3 origin (s3s-fs, SigV4-verifying) seeded with a
# bucket "demo", and corvid in front of it on 127.0.0.1:8080 (or the next
# free port). Prints curl commands to try; Ctrl-C stops both.
#
#   scripts/demo.sh            # CORVID_PORT=9090 scripts/demo.sh to pick a port
set -euo pipefail

cd "$(dirname "$0")/.."

echo "==> building corvid and the origin example (release)"
cargo build --release --bin corvid --example origin

WORK="$(mktemp -d -t corvid-demo.XXXXXX)"
ORIGIN_PID=""
CORVID_PID=""

cleanup() {
    trap - EXIT INT TERM
    # Stop only the two processes this script started.
    for pid in "$CORVID_PID" "$ORIGIN_PID"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for pid in "$CORVID_PID" "$ORIGIN_PID"; do
        [[ -n "$pid" ]] && wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
    echo "==> stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# True if something accepts connections on 127.0.0.1:$1.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Polls until $1 (a command) succeeds, at most $2 tenths of a second, while
# process $3 stays alive.
wait_for() {
    local check="$1" tries="$2" pid="$3"
    for ((i = 0; i < tries; i++)); do
        if eval "$check"; then return 0; fi
        if ! kill -0 "$pid" 2>/dev/null; then return 1; fi
        sleep 0.1
    done
    return 1
}

echo "==> starting the origin"
# Port 0: the origin picks a free port and prints it.
target/release/examples/origin --dir "$WORK/origin-data" --listen 127.0.0.1:0 \
    --bucket demo --seed >"$WORK/origin.log" 2>&1 &
ORIGIN_PID=$!
if ! wait_for 'grep -q "^ready" "$WORK/origin.log"' 100 "$ORIGIN_PID"; then
    echo "origin failed to start:" >&2
    cat "$WORK/origin.log" >&2
    exit 1
fi
field() { sed -n "s/^$1 *= *//p" "$WORK/origin.log"; }
ENDPOINT="$(field endpoint)"
ACCESS_KEY="$(field access_key)"
SECRET_KEY="$(field secret_key)"
echo "    origin at $ENDPOINT (data in $WORK/origin-data)"

PORT="${CORVID_PORT:-8080}"
if [[ -z "${CORVID_PORT:-}" ]]; then
    while port_in_use "$PORT"; do
        PORT=$((PORT + 1))
        if ((PORT > 8180)); then
            echo "no free port in 8080-8180; set CORVID_PORT" >&2
            exit 1
        fi
    done
elif port_in_use "$PORT"; then
    echo "port $PORT is in use" >&2
    exit 1
fi

CONFIG="$WORK/corvid.toml"
cat >"$CONFIG" <<EOF
[server]
listen = "127.0.0.1:$PORT"
workers = 2

[[buckets]]
name = "demo"
prefix = "/demo"
endpoint = "$ENDPOINT"
region = "us-east-1"
bucket = "demo"
access_key = "$ACCESS_KEY"
secret_key = "$SECRET_KEY"
EOF

echo "==> starting corvid (config: $CONFIG)"
RUST_LOG="${RUST_LOG:-info}" target/release/corvid serve -c "$CONFIG" &
CORVID_PID=$!
BASE="http://127.0.0.1:$PORT"
if ! wait_for 'curl -fsS -o /dev/null --max-time 1 "$BASE/health" 2>/dev/null' 100 "$CORVID_PID"; then
    echo "corvid exited or did not become healthy on $BASE/health within 10 s" >&2
    exit 1
fi

cat <<EOF

corvid is serving bucket "demo" at $BASE/demo/  (origin: $ENDPOINT)

Try:
  curl -i $BASE/demo/hello.txt                                   # GET (miss, then hit)
  curl -I $BASE/demo/data.json                                   # HEAD
  curl -s -D - -o /dev/null -H 'Range: bytes=0-1023' $BASE/demo/random.bin   # Range -> 206
  curl -i '$BASE/demo/with%20space.txt'                          # key with a space
  curl -i $BASE/demo/does-not-exist                              # 404
  curl -i $BASE/health

Ctrl-C to stop.
EOF

# Runs until Ctrl-C (the trap cleans up) or until corvid exits by itself.
wait "$CORVID_PID" || true
CORVID_PID=""
echo "corvid exited" >&2
