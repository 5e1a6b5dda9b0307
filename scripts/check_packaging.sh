#!/usr/bin/env bash
# Checks of packaging/ (scripts/test.sh runs this; a few seconds): the Prometheus rules parse and
# pass their unit tests, the Grafana dashboard is valid JSON whose expressions parse, every metric
# and label they use is one src/metrics.rs renders, the systemd unit verifies, and the example
# production config is valid for corvid itself.
#
#   scripts/check_packaging.sh                       everything but the config check
#   CORVID_BIN=target/debug/corvid scripts/check_packaging.sh   with it
#
# Needs promtool (Debian package prometheus) and python3; systemd-analyze is used when it works.
set -euo pipefail
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "promtool check rules"
promtool check rules packaging/prometheus/corvid.rules.yml
echo "promtool test rules"
promtool test rules packaging/prometheus/corvid.rules.test.yml

echo "dashboard: valid JSON"
python3 -m json.tool packaging/grafana/corvid.json >/dev/null

echo "metric and label names against src/metrics.rs"
python3 scripts/check_metric_names.py --emit-rules "$tmp/dashboard.rules.yml"
echo "dashboard expressions parse (promtool)"
promtool check rules "$tmp/dashboard.rules.yml" >/dev/null

# systemd-analyze verify only warns about bad settings ("..., ignoring") and still exits 0, so
# any line about the unit counts as a failure. It also checks that ExecStart= and friends are
# executable: the unit is verified as a copy whose /usr/bin/corvid is a stub in $tmp (the only
# change). Where systemd-analyze cannot verify even a trivial unit (no systemd, some
# containers), the check is skipped with a note.
echo "systemd-analyze verify packaging/systemd/corvid.service"
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "  skipped: systemd-analyze is not installed"
else
  mkdir "$tmp/units"
  printf '[Service]\nExecStart=/bin/true\n' >"$tmp/units/probe.service"
  if ! probe=$(systemd-analyze verify "$tmp/units/probe.service" 2>&1) || [ -n "$probe" ]; then
    echo "  skipped: systemd-analyze does not work here (a trivial unit fails: ${probe:-no output})"
  else
    printf '#!/bin/sh\nexit 0\n' >"$tmp/corvid"
    chmod +x "$tmp/corvid"
    sed "s#/usr/bin/corvid#$tmp/corvid#g" packaging/systemd/corvid.service >"$tmp/units/corvid.service"
    rc=0
    out=$(systemd-analyze verify "$tmp/units/corvid.service" 2>&1) || rc=$?
    ours=$(printf '%s\n' "$out" | grep -F 'corvid.service' || true)
    if [ "$rc" != 0 ] || [ -n "$ours" ]; then
      printf '%s\n' "$out" | sed "s#$tmp/units/##g" >&2
      echo "systemd-analyze verify: packaging/systemd/corvid.service has problems (exit $rc)" >&2
      exit 1
    fi
    [ -z "$out" ] || printf '  (about other units, not ours)\n%s\n' "$out"
    echo "  ok"
  fi
fi

# The example production config, as corvid itself parses it (its ${...} from dummy values).
if [ -n "${CORVID_BIN:-}" ]; then
  echo "corvid check -c packaging/systemd/corvid.toml"
  if ! out=$(ASSETS_ACCESS_KEY=x ASSETS_SECRET_KEY=x JWT_SECRET=0123456789abcdef0123456789abcdef \
    "$CORVID_BIN" check -c packaging/systemd/corvid.toml 2>&1); then
    printf '%s\n' "$out" >&2
    exit 1
  fi
  echo "  ok"
fi
echo "packaging: all checks passed"
