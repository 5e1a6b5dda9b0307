#!/usr/bin/env bash
# The cost of JWT verification on the hit path: memory hits of one cached 1 KiB object through
# a public bucket and through an RS256-protected bucket (same origin, same object), in one run.
# The token is signed here with openssl (tests/data/jwt/rsa1, an independent implementation);
# every request carries it, so after the first one each worker answers from its verified-token
# cache.
#
#   perf/auth_hits.sh            # DURATION=10s CONNS=64 THREADS=2
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh
ulimit -n 65536 2>/dev/null || true
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }

build_release --bin corvid --example origin
make_workdir
start_origin "$WORK/data" 1k=1024
pids+=("$origin_pid")

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
header=$(printf '{"alg":"RS256","typ":"JWT"}' | b64url)
payload=$(printf '{"exp":%d,"sub":"perf"}' $(($(date +%s) + 3600)) | b64url)
sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign tests/data/jwt/rsa1.pk8.pem | b64url)
TOKEN="$header.$payload.$sig"

port=$(free_port)
corvid_toml "$port" 2 '"64MiB"' "
[[buckets]]
name = \"priv\"
prefix = \"/priv\"
endpoint = \"http://127.0.0.1:$origin_port\"
region = \"us-east-1\"
bucket = \"perf\"
access_key = \"$access_key\"
secret_key = \"$secret_key\"
auth = true

[jwt]
algorithm = \"RS256\"
public_key = \"$PWD/tests/data/jwt/rsa1.pub.pem\"
" >"$WORK/corvid.toml"
RUST_LOG=warn CORVID_PIN=${CORVID_PIN:-1} target/release/corvid serve -c "$WORK/corvid.toml" 2>"$WORK/corvid.log" &
pids+=($!)
wait_http "http://127.0.0.1:$port/health"
for path in /perf/1k /priv/1k; do
  curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port$path"
done
test "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/priv/1k")" = 401

machine_line
echo "# corvid 2 workers, 1 KiB memory hits; wrk -t$THREADS -c$CONNS -d$DURATION, Authorization: Bearer <RS256> on both"
printf 'label\treq/s\tp50_ms\tp99_ms\terrors\n'
for round in 1 2; do
  run_wrk "public r$round" "http://127.0.0.1:$port/perf/1k" -H "Authorization: Bearer $TOKEN"
  run_wrk "rs256 r$round" "http://127.0.0.1:$port/priv/1k" -H "Authorization: Bearer $TOKEN"
done
