#!/usr/bin/env bash
# Large objects as slices (issue 17): one object of SIZE bytes (2 GiB by default), one run.
#
#   perf/slices.sh                                # 2 GiB, slice sizes 1 4 8 16 MiB
#   SIZE=536870912 SLICES="4" EXTRA_READAHEADS= REPEAT=1 perf/slices.sh
#
# 1. Cold: straight from the origin (signed headers, examples/sign_headers.rs), then through a
#    fresh corvid, per slice_size x slice_readahead, REPEAT times in pairs (origin, corvid):
#    time to first byte and throughput of one `curl -o /dev/null`; the ratio is the median of
#    the pairs' ratios (this machine is shared and noisy: pairs cancel its slow moments).
# 2. Warm: corvid from memory (slice_size 4MiB, memory tier 3 GiB), corvid from disk (memory
#    tier off, disk tier 3 GiB in the work dir, its pages in the page cache), and nginx
#    proxy_cache with its slice module (`slice 4m`, cache in the work dir), each filled and
#    checked (SHA-256) first, then read REPEAT times in turn; medians and ratios to nginx.
# 3. A parallel range client on the warm object: aria2c -x16 -s16 -k1M (into /dev/shm), and 16
#    curl processes each reading one 16th with a Range, for corvid (memory, disk) and nginx.
#
# Layouts: by default nothing is pinned and corvid runs 2 workers, so curl, corvid and the origin
# (s3s-fs sends 4 KiB pieces: CPU-bound near 100-500 MiB/s here) compete for the two cores. With
# PIN=1 the origin has core 1 to itself and curl plus corvid (1 worker) share core 0, the
# production shape where S3 never loses CPU to the proxy (as in perf/passthrough.sh). WARM=0
# stops after the cold runs.
#
# The origin is the s3s-fs example (SigV4 on); nginx cannot sign, so its upstream is a corvid
# with its cache off (a signer), as in perf/hits.sh. Nothing is pinned: curl, the proxy and the
# origin share this machine's cores. Needs curl, nginx (with ngx_http_slice_module) and aria2c
# (Debian packages; installed when missing, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
. perf/lib.sh

SIZE=${SIZE:-2147483648}
SLICES=${SLICES:-"1 4 8 16"}
READAHEADS=${READAHEADS:-4}
# Extra readahead values tried with 4 MiB slices only.
EXTRA_READAHEADS=${EXTRA_READAHEADS-"1 8"}
REPEAT=${REPEAT:-3}
WARM=${WARM:-1}
if [ "${PIN:-0}" = 1 ]; then
  PIN_ORIGIN="taskset -c 1" pin_front="taskset -c 0" workers=1
else
  PIN_ORIGIN="" pin_front="" workers=2
fi

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || ! need aria2c || ! need curl; then
  apt-get update -qq && apt-get install -y -qq nginx aria2 curl >/dev/null
fi
nginx -V 2>&1 | grep -q -- --with-http_slice_module || {
  echo "this nginx lacks ngx_http_slice_module (nginx -V)" >&2
  exit 1
}

build_release --bin corvid --example origin --example sign_headers
make_workdir

PIN_ORIGIN=$PIN_ORIGIN start_origin "$WORK/data" "big=$SIZE"
pids+=("$origin_pid")
# A 2 GiB object takes a while to make and PUT: wait for the origin's `ready` line.
for _ in $(seq 1 1200); do grep -q '^ready' "$WORK/data.log" 2>/dev/null && break; sleep 0.25; done
grep -q '^ready' "$WORK/data.log" || { echo "origin not ready" >&2; cat "$WORK/data.log" >&2; exit 1; }
access_key=$(awk -F' = ' '/^access_key/ {print $2}' "$WORK/data.log")
secret_key=$(awk -F' = ' '/^secret_key/ {print $2}' "$WORK/data.log")
want_sha=$(python3 - "$WORK/data/perf/big" <<'PY'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    while chunk := f.read(1 << 24):
        h.update(chunk)
print(h.hexdigest())
PY
)

# fetch LABEL URL [curl args...]: one GET to /dev/null; prints "LABEL ttfb_ms MiB/s seconds".
fetch() {
  local label=$1 url=$2 out
  shift 2
  out=$($pin_front curl -s -o /dev/null -w '%{http_code} %{time_starttransfer} %{time_total} %{size_download}' "$@" "$url")
  python3 - "$label" "$out" "$SIZE" <<'PY'
import sys
label, out, size = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
code, ttfb, total, got = out[0], float(out[1]), float(out[2]), int(out[3])
if code not in ("200", "206") or got != size:
    sys.exit(f"{label}: status {code}, {got} of {size} bytes")
print(f"{label}\t{ttfb * 1000:.1f}\t{got / total / 2**20:.0f}\t{total:.2f}")
PY
}
# row LABEL...: like fetch, and the line is also kept in $WORK/rows.tsv for the summary.
row() { fetch "$@" | tee -a "$WORK/rows.tsv"; }

# check_sha LABEL URL: the body's SHA-256 against the origin's file.
check_sha() {
  local got
  got=$(curl -s "$2" | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want_sha" ] || { echo "$1: body differs from the origin's" >&2; exit 1; }
}

# layer URL: X-Cache and X-Cache-Layer of a GET of the first byte.
layer() {
  curl -s -D - -o /dev/null -H 'Range: bytes=0-0' "$1" |
    awk -F': ' 'tolower($1)=="x-cache" || tolower($1)=="x-cache-layer" {gsub("\r",""); printf "%s=%s ", $1, $2}'
}

# start_corvid NAME MEMORY CACHE_EXTRA [TIERS_EXTRA]: a corvid serving /perf; sets corvid_port.
start_corvid() {
  corvid_port=$(free_port)
  {
    corvid_toml "$corvid_port" "$workers" "$2"
    printf '%b\n' "${4:-}"
    printf '[cache]\n%b\n' "$3"
  } >"$WORK/$1.toml"
  RUST_LOG=warn $pin_front target/release/corvid serve -c "$WORK/$1.toml" 2>"$WORK/$1.log" &
  corvid_pid=$!
  pids+=("$corvid_pid")
  wait_http "http://127.0.0.1:$corvid_port/health"
}
stop_corvid() {
  kill "$corvid_pid" 2>/dev/null || true
  wait "$corvid_pid" 2>/dev/null || true
}

origin_url="http://127.0.0.1:$origin_port/perf/big"
# origin_get LABEL: signed just before (a signature is valid for 15 minutes).
origin_get() {
  local sig
  sig=$(target/release/examples/sign_headers "127.0.0.1:$origin_port" /perf/big "$access_key" "$secret_key")
  eval "row \"\$1\" \"$origin_url\" $sig"
}

machine_line
echo "# object $SIZE bytes; $(nginx -v 2>&1 | sed 's/.*\///') nginx, $(aria2c --version | head -1), $(curl --version | head -1 | cut -d' ' -f1-2); REPEAT=$REPEAT PIN=${PIN:-0} (corvid workers $workers)"
printf 'run\tttfb ms\tMiB/s\tseconds\n'
origin_get "warm-up" >/dev/null # the origin's file into the page cache, not reported

configs=()
for s in $SLICES; do for r in $READAHEADS; do configs+=("$s:$r"); done; done
for r in $EXTRA_READAHEADS; do configs+=("4:$r"); done
for rep in $(seq 1 "$REPEAT"); do
  for c in "${configs[@]}"; do
    s=${c%%:*} r=${c#*:}
    origin_get "origin/$s/$r"
    start_corvid "cold-$s-$r" 0 "slice_size = \"${s}MiB\"\nslice_readahead = $r"
    row "cold/$s/$r" "http://127.0.0.1:$corvid_port/perf/big"
    stop_corvid
  done
done

# summary: medians per run; cold ratios are medians of (corvid / the origin run just before).
summary() {
  echo
  echo "# summary (median of $REPEAT)"
  python3 - "$WORK/rows.tsv" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def med(xs):
    return statistics.median(xs) if xs else float("nan")
by = {}
for label, ttfb, mibs, secs in rows:
    by.setdefault(label, []).append((None if ttfb == "-" else float(ttfb), float(mibs)))
print("run\tttfb ms\tMiB/s\tratio")
cold = [l for l in by if l.startswith("cold/")]
for label in cold:
    _, s, r = label.split("/")
    pairs = list(zip(by[f"origin/{s}/{r}"], by[label]))
    ratio = med([c[1] / o[1] for o, c in pairs])
    o = by[f"origin/{s}/{r}"]
    print(f"origin (paired with {s} MiB / {r})\t{med([x[0] for x in o]):.1f}\t{med([x[1] for x in o]):.0f}\t")
    print(f"corvid cold, slice {s} MiB, readahead {r}\t{med([x[0] for x in by[label]]):.1f}\t{med([x[1] for x in by[label]]):.0f}\t{ratio:.2f}x origin")
def line(label, base):
    xs = by[label]
    t = med([x[0] for x in xs if x[0] is not None]) if xs[0][0] is not None else None
    m = med([x[1] for x in xs])
    ratio = "" if base is None or label == base else f"{m / med([x[1] for x in by[base]]):.2f}x nginx"
    print(f"{label}\t{'-' if t is None else f'{t:.1f}'}\t{m:.0f}\t{ratio}")
if "warm/nginx slice" in by:
    for label in ("warm/corvid memory", "warm/corvid disk", "warm/nginx slice"):
        line(label, "warm/nginx slice")
    for kind in ("16 curl ranges", "aria2c -x16"):
        for who in ("corvid memory", "corvid disk", "nginx"):
            line(f"par/{kind} {who}", f"par/{kind} nginx")
PY
}

[ "$WARM" = 1 ] || { summary; exit 0; }

# Warm from memory: default slice settings, a memory tier that holds the object.
start_corvid mem '"3GiB"' 'slice_size = "4MiB"\nslice_readahead = 4'
mem_port=$corvid_port mem_pid=$corvid_pid
fetch "fill memory" "http://127.0.0.1:$mem_port/perf/big"
check_sha "corvid memory" "http://127.0.0.1:$mem_port/perf/big"
echo "# memory: $(layer "http://127.0.0.1:$mem_port/perf/big")"

# Warm from disk: memory tier off, disk tier in the work dir (its pages in the page cache).
mkdir -p "$WORK/disk"
start_corvid disk 0 'slice_size = "4MiB"\nslice_readahead = 4' \
  "[cache.disk]\ndir = \"$WORK/disk\"\ncapacity = \"3GiB\"\nsegment_size = \"64MiB\""
disk_port=$corvid_port disk_pid=$corvid_pid
fetch "fill disk" "http://127.0.0.1:$disk_port/perf/big"
check_sha "corvid disk" "http://127.0.0.1:$disk_port/perf/big"
echo "# disk: $(layer "http://127.0.0.1:$disk_port/perf/big")"

# nginx proxy_cache + slice module in front of a signing corvid (cache off).
start_corvid signer 0 'max_sliced_object_size = 0'
signer_port=$corvid_port
nginx_port=$(free_port)
mkdir -p "$WORK/nginx-cache" "$WORK/nginx-tmp"
cat >"$WORK/nginx.conf" <<NGINX
user root;
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nodelay on;
  client_body_temp_path $WORK/nginx-tmp;
  proxy_temp_path $WORK/nginx-tmp;
  fastcgi_temp_path $WORK/nginx-tmp;
  uwsgi_temp_path $WORK/nginx-tmp;
  scgi_temp_path $WORK/nginx-tmp;
  proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=big:16m max_size=4g inactive=1h use_temp_path=off;
  upstream signer { server 127.0.0.1:$signer_port; keepalive 16; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      slice 4m;
      proxy_cache big;
      proxy_cache_key \$uri\$is_args\$args\$slice_range;
      proxy_set_header Range \$slice_range;
      proxy_cache_valid 200 206 1h;
      proxy_cache_lock on;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_pass http://signer;
    }
  }
}
NGINX
nginx -c "$WORK/nginx.conf"
nginx_url="http://127.0.0.1:$nginx_port/perf/big"
wait_http "http://127.0.0.1:$nginx_port/health" # not the object: that would fill the cache
fetch "fill nginx" "$nginx_url"
check_sha "nginx" "$nginx_url"
for rep in $(seq 1 "$REPEAT"); do
  row "warm/corvid memory" "http://127.0.0.1:$mem_port/perf/big"
  row "warm/corvid disk" "http://127.0.0.1:$disk_port/perf/big"
  row "warm/nginx slice" "$nginx_url"
done

# Parallel range clients on the warm object.
# ranges16 LABEL URL: 16 curl processes, each one 16th of the object with a Range.
ranges16() {
  local start end t0 t1 part=$((SIZE / 16)) curls=()
  t0=$(date +%s.%N)
  for i in $(seq 0 15); do
    start=$((i * part))
    end=$((i == 15 ? SIZE - 1 : start + part - 1))
    curl -s -f -o /dev/null -H "Range: bytes=$start-$end" "$2" &
    curls+=($!)
  done
  for p in "${curls[@]}"; do wait "$p" || { echo "$1: a range GET failed" >&2; exit 1; }; done
  t1=$(date +%s.%N)
  python3 -c "import sys; t=float(sys.argv[2])-float(sys.argv[1]); print(f'{sys.argv[3]}\t-\t{int(sys.argv[4])/t/2**20:.0f}\t{t:.2f}')" "$t0" "$t1" "$1" "$SIZE"
}
# aria16 LABEL URL: aria2c -x16 -s16 -k1M into /dev/shm, checked, removed.
aria16() {
  local t0 t1 dir
  dir=$(mktemp -d /dev/shm/corvid-slices.XXXXXX)
  t0=$(date +%s.%N)
  aria2c -x16 -s16 -k1M --no-conf --file-allocation=none --console-log-level=warn \
    --summary-interval=0 --download-result=hide -d "$dir" -o big "$2" >/dev/null
  t1=$(date +%s.%N)
  local got
  got=$(sha256sum "$dir/big" | cut -d' ' -f1)
  rm -rf "$dir"
  [ "$got" = "$want_sha" ] || { echo "$1: aria2c's file differs" >&2; exit 1; }
  python3 -c "import sys; t=float(sys.argv[2])-float(sys.argv[1]); print(f'{sys.argv[3]}\t-\t{int(sys.argv[4])/t/2**20:.0f}\t{t:.2f}')" "$t0" "$t1" "$1" "$SIZE"
}
for rep in $(seq 1 "$REPEAT"); do
  ranges16 "par/16 curl ranges corvid memory" "http://127.0.0.1:$mem_port/perf/big" | tee -a "$WORK/rows.tsv"
  ranges16 "par/16 curl ranges corvid disk" "http://127.0.0.1:$disk_port/perf/big" | tee -a "$WORK/rows.tsv"
  ranges16 "par/16 curl ranges nginx" "$nginx_url" | tee -a "$WORK/rows.tsv"
  aria16 "par/aria2c -x16 corvid memory" "http://127.0.0.1:$mem_port/perf/big" | tee -a "$WORK/rows.tsv"
  aria16 "par/aria2c -x16 corvid disk" "http://127.0.0.1:$disk_port/perf/big" | tee -a "$WORK/rows.tsv"
  aria16 "par/aria2c -x16 nginx" "$nginx_url" | tee -a "$WORK/rows.tsv"
done
echo "# memory: $(layer "http://127.0.0.1:$mem_port/perf/big") disk: $(layer "http://127.0.0.1:$disk_port/perf/big")"
echo "# RSS: corvid memory instance $(awk '/VmRSS/ {print $2, $3}' /proc/"$mem_pid"/status), disk instance $(awk '/VmRSS/ {print $2, $3}' /proc/"$disk_pid"/status)"
summary
