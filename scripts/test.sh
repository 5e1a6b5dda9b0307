#!/usr/bin/env bash
# The whole test suite: formatting, lints, the production dependency rule, unit + integration
# tests, the packaging checks (scripts/check_packaging.sh), the Kubernetes manifests
# (scripts/check_kubernetes.sh), and a short smoke run of every fuzz target. This is what CI
# runs (.ci/run). It first installs what a fresh machine lacks (redis-server, promtool, moto,
# boto3, aria2c, kubectl, kubernetes-validate, cargo-fuzz, the rustfmt/clippy components).
#
#   scripts/test.sh            everything
#   FUZZ_SECONDS=0 scripts/test.sh   skip the fuzz smoke runs
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-15}

step() { printf '\n==> %s\n' "$*"; }

# --- set-up: install what a fresh machine lacks (a Rust toolchain is the only prerequisite) ---
# Root installs directly; anyone else through sudo when it is there. Each tool is checked first,
# so on a prepared machine this costs nothing.
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    echo "need root (or sudo) to run: $*" >&2
    return 1
  fi
}
apt_updated=
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "cannot install $* (no apt-get): install it with your package manager" >&2
    exit 1
  fi
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

# redis-server: the Redis tier's tests start a real one on a free loopback port.
if ! command -v redis-server >/dev/null 2>&1; then
  step "installing redis-server"
  apt_install redis-server
fi
# promtool (Debian package prometheus): the metrics test lints a live scrape with it, and
# scripts/check_packaging.sh checks and unit-tests the Prometheus rules in packaging/.
if ! command -v promtool >/dev/null 2>&1; then
  step "installing promtool (prometheus)"
  apt_install prometheus
fi
# moto_server (PyPI moto[server]): the RFC 9111 tests' second S3 origin, in a venv under target/
# (tests/it/common/moto.rs looks for it there; CORVID_MOTO_SERVER overrides).
moto_venv=target/moto-venv
if [ ! -x "$moto_venv/bin/moto_server" ]; then
  step "installing moto[server] into $moto_venv"
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3 python3-venv
  fi
  python3 -m venv "$moto_venv"
  "$moto_venv/bin/pip" install -q --disable-pip-version-check 'moto[server]'
fi
# boto3 (a dependency of moto) and aria2c (Debian package aria2): real clients of sliced objects
# in tests/it/slices_clients.rs (multipart download_file; 16 parallel range connections).
if ! "$moto_venv/bin/python3" -c 'import boto3' >/dev/null 2>&1; then
  step "installing boto3 into $moto_venv"
  "$moto_venv/bin/pip" install -q --disable-pip-version-check boto3
fi
if ! command -v aria2c >/dev/null 2>&1; then
  step "installing aria2c (aria2)"
  apt_install aria2
fi
# kubectl (Debian package kubectl) renders deploy/kubernetes (`kubectl kustomize`), and
# kubernetes-validate (PyPI, pinned: its version fixes the Kubernetes schemas it ships) checks
# every rendered object offline; scripts/check_kubernetes.sh.
if ! command -v kubectl >/dev/null 2>&1; then
  step "installing kubectl"
  apt_install kubectl
fi
if [ "$("$moto_venv/bin/kubernetes-validate" --version 2>/dev/null)" != "1.37.0" ]; then
  step "installing kubernetes-validate into $moto_venv"
  "$moto_venv/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.37.0'
fi
for tool in fmt:rustfmt clippy:clippy; do
  if ! cargo "${tool%%:*}" --version >/dev/null 2>&1; then
    step "installing the ${tool#*:} component"
    rustup component add "${tool#*:}"
  fi
done
if [ "$FUZZ_SECONDS" != "0" ] && ! cargo fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "no second async runtime in the production dependency tree"
if cargo tree -e normal -i tokio 2>/dev/null | grep -q '^tokio v'; then
  echo "tokio is a production dependency (cargo tree -e normal -i tokio)" >&2
  exit 1
fi

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test"
log=$(mktemp)
# Benches run once each in test mode (a smoke check); `cargo bench` times them.
cargo test --all-targets 2>&1 | tee "$log"
# The accept loop, connection reclaiming and shutdown again on the epoll fallback driver, whose
# accept of a queued connection never waits (io_uring is the default above).
step "connection handling on the epoll driver (CORVID_DRIVER=legacy)"
CORVID_DRIVER=legacy cargo test --test it -- limits:: shutdown:: pool:: 2>&1 | tee -a "$log"
passed=$(awk '/^test result:/ {for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed/) s += $i} END {print s + 0}' "$log")
failed=$(awk '/^test result:/ {for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) s += $i} END {print s + 0}' "$log")
rm -f "$log"

# Prometheus rules (promtool check + test rules), the Grafana dashboard (JSON, expressions),
# metric and label names against src/metrics.rs, the systemd unit (systemd-analyze verify, where
# it works) and the example production config (`corvid check`, with the binary just built).
step "packaging checks (scripts/check_packaging.sh)"
CORVID_BIN="${CARGO_TARGET_DIR:-target}/debug/corvid" scripts/check_packaging.sh

# The Kubernetes manifests: rendered, validated against the pinned Kubernetes schemas, the
# Prometheus Operator objects and the config checked against the rest (see the script).
step "kubernetes checks (scripts/check_kubernetes.sh)"
CORVID_BIN="${CARGO_TARGET_DIR:-target}/debug/corvid" KUBERNETES_VENV="$moto_venv" \
  scripts/check_kubernetes.sh

if [ "$FUZZ_SECONDS" != "0" ]; then
  for target in $(cd fuzz && ls fuzz_targets | sed 's/\.rs$//'); do
    step "fuzz smoke: $target (${FUZZ_SECONDS}s)"
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- \
      -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=4096 -print_final_stats=0 2>&1 | tail -n 3)
  done
fi

step "all tests passed"
echo "tests: $passed passed, $failed failed"
