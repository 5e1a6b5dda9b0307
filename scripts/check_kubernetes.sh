#!/usr/bin/env bash
# Checks of deploy/kubernetes (scripts/test.sh runs this; a few seconds), offline:
#  1. every kustomization under deploy/kubernetes renders (`kubectl kustomize`);
#  2. every rendered object validates (`kubernetes-validate --strict`: unknown fields, wrong
#     types, missing required fields) against the pinned Kubernetes versions below; an object
#     whose kind has no schema there fails, except the Prometheus Operator's CRDs in ALLOWED_CRDS,
#     which are checked by 3 and 4 instead;
#  3. what no schema holds (scripts/check_kubernetes.py): the PrometheusRule is packaging's rules,
#     the ServiceMonitor selects the metrics Service by its labels and port name with
#     job="corvid", Services target named container ports of the corvid pods, cluster.peers_dns
#     is the headless Service of ready pods, the termination grace covers preStop +
#     server.shutdown_grace, the memory limit covers cache.memory.capacity (1.05x + 256Mi);
#  4. `promtool check rules` on the PrometheusRule's groups as rendered;
#  5. `corvid check` on the rendered corvid.toml (with CORVID_BIN, as check_packaging.sh).
#
#   scripts/check_kubernetes.sh
#   CORVID_BIN=target/debug/corvid scripts/check_kubernetes.sh
#
# Needs kubectl (Debian package kubectl), promtool (prometheus) and kubernetes-validate (PyPI,
# with PyYAML) in the venv KUBERNETES_VENV (default target/moto-venv: scripts/test.sh installs
# all three when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

# The oldest Kubernetes the manifests support (preStop `sleep` is on by default from 1.30) and
# a current one; both are schemas shipped by the pinned kubernetes-validate (scripts/test.sh).
KUBERNETES_VERSIONS=(1.30.0 1.34.0)
# Kinds without a schema in kubernetes-validate, checked by steps 3 and 4 instead.
ALLOWED_CRDS=("monitoring.coreos.com/v1 ServiceMonitor" "monitoring.coreos.com/v1 PrometheusRule")

venv=${KUBERNETES_VENV:-target/moto-venv}
py="$venv/bin/python3"
validate="$venv/bin/kubernetes-validate"
for tool in kubectl promtool "$validate"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "check_kubernetes: $tool not found (scripts/test.sh installs it)" >&2
    exit 1
  fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail=0
dirs=$(find deploy/kubernetes -name kustomization.yaml -printf '%h\n' | sort)
[ -n "$dirs" ] || { echo "no kustomization under deploy/kubernetes" >&2; exit 1; }
for dir in $dirs; do
  echo "$dir"
  out="$tmp/$(echo "$dir" | tr / _)"
  mkdir -p "$out/objects"
  echo "  kubectl kustomize"
  if ! kubectl kustomize "$dir" >"$out/render.yaml" 2>"$out/kustomize.err"; then
    sed 's/^/    /' "$out/kustomize.err" >&2
    echo "  FAILED: $dir does not render" >&2
    fail=1
    continue
  fi
  "$py" scripts/check_kubernetes.py split "$out/render.yaml" "$out/objects" >/dev/null

  # Step 2: each object with a schema; the allowed CRDs aside, by apiVersion and kind.
  schema_objects=()
  for f in "$out"/objects/*.yaml; do
    kind=$("$py" -c 'import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); print(d["apiVersion"], d["kind"])' "$f")
    allowed=
    for crd in "${ALLOWED_CRDS[@]}"; do [ "$kind" = "$crd" ] && allowed=1; done
    if [ -n "$allowed" ]; then
      echo "  $(basename "$f"): $kind is a CRD without a schema here: checked below instead"
    else
      schema_objects+=("$f")
    fi
  done
  for version in "${KUBERNETES_VERSIONS[@]}"; do
    echo "  kubernetes-validate --strict -k $version (${#schema_objects[@]} objects)"
    rc=0
    report=$("$validate" --strict -k "$version" "${schema_objects[@]}" 2>&1) || rc=$?
    # A kind it has no schema for is only a warning to it (exit 0): a misspelt kind or
    # apiVersion would pass unchecked, so any line that is not a pass fails here.
    bad=$(printf '%s\n' "$report" | grep -v '^INFO .* passed for resource ' || true)
    if [ "$rc" != 0 ] || [ -n "$bad" ]; then
      printf '%s\n' "${bad:-$report}" | sed "s#$out/objects/##; s/^/    /" >&2
      echo "  FAILED: $dir does not validate against Kubernetes $version" >&2
      fail=1
    fi
  done

  # Step 3.
  echo "  scripts/check_kubernetes.py check"
  if ! res=$("$py" scripts/check_kubernetes.py check "$out/render.yaml" "$out" 2>&1); then
    printf '%s\n' "$res" | sed 's/^/  /' >&2
    echo "  FAILED: $dir" >&2
    fail=1
  fi

  # Step 4.
  if [ -f "$out/rules.yml" ]; then
    echo "  promtool check rules (the PrometheusRule's groups)"
    if ! promtool check rules "$out/rules.yml" >"$out/promtool.out" 2>&1; then
      sed 's/^/    /' "$out/promtool.out" >&2
      echo "  FAILED: $dir: the PrometheusRule's rules" >&2
      fail=1
    fi
  fi

  # Step 5: the config as corvid reads it, its ${...} from dummy values.
  if [ -n "${CORVID_BIN:-}" ] && [ -f "$out/corvid.toml" ]; then
    echo "  corvid check (the rendered corvid.toml)"
    if ! res=$(POD_IP=10.0.0.7 POD_NAMESPACE=corvid CORVID_PEER_SECRET=0123456789abcdef0123 \
      ASSETS_ACCESS_KEY=x ASSETS_SECRET_KEY=x JWT_SECRET=0123456789abcdef0123456789abcdef \
      "$CORVID_BIN" check -c "$out/corvid.toml" 2>&1); then
      printf '%s\n' "$res" | sed 's/^/    /' >&2
      echo "  FAILED: $dir: corvid check" >&2
      fail=1
    fi
  fi
done

if [ "$fail" != 0 ]; then
  echo "kubernetes: checks FAILED" >&2
  exit 1
fi
echo "kubernetes: all checks passed"
