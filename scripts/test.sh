#!/usr/bin/env bash
# The whole test suite: formatting, lints, the production dependency rule, unit + integration
# tests, and a short smoke run of every fuzz target. This is what CI runs (.ci/run).
#
#   scripts/test.sh            everything
#   FUZZ_SECONDS=0 scripts/test.sh   skip the fuzz smoke runs
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-15}

step() { printf '\n==> %s\n' "$*"; }

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
passed=$(awk '/^test result:/ {for (i = 1; i <= NF; i++) if ($(i+1) ~ /^passed/) s += $i} END {print s + 0}' "$log")
failed=$(awk '/^test result:/ {for (i = 1; i <= NF; i++) if ($(i+1) ~ /^failed/) s += $i} END {print s + 0}' "$log")
rm -f "$log"

if [ "$FUZZ_SECONDS" != "0" ]; then
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2
    exit 1
  fi
  for target in $(cd fuzz && ls fuzz_targets | sed 's/\.rs$//'); do
    step "fuzz smoke: $target (${FUZZ_SECONDS}s)"
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- \
      -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=4096 -print_final_stats=0 2>&1 | tail -n 3)
  done
fi

step "all tests passed"
echo "tests: $passed passed, $failed failed"
