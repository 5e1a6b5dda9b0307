#!/usr/bin/env python3
"""The checks of deploy/kubernetes that no schema holds (scripts/check_kubernetes.sh runs it).

  check_kubernetes.py split RENDER.yaml DIR         one file per object: DIR/NNN-Kind-name.yaml
  check_kubernetes.py check RENDER.yaml OUT_DIR     the checks below; writes OUT_DIR/rules.yml
                                                    (the PrometheusRule's groups, for promtool)
                                                    and OUT_DIR/corvid.toml (the config)
  check_kubernetes.py rules > deploy/kubernetes/base/prometheusrule.yaml
                                                    regenerate the PrometheusRule from packaging/

Checks of one rendered kustomization (`kubectl kustomize DIR`):
- the PrometheusRule's groups are packaging/prometheus/corvid.rules.yml's (so the unit tests
  of those rules, promtool test rules, hold for it);
- the ServiceMonitor selects exactly one Service (its labels) of its namespace, each endpoint
  port is a named port of that Service, and its jobLabel gives job="corvid" (what the rules
  match on);
- every Service selects the corvid pods and targets named container ports that exist;
- cluster.peers_dns names a headless Service of the render that publishes ready pods only,
  in the pod's namespace, on the port of cluster.peer;
- terminationGracePeriodSeconds covers the preStop pause plus server.shutdown_grace;
- the memory limit is at least 1.05 x cache.memory.capacity + 256 MiB (statefulset.yaml).
Needs PyYAML (in the venv with kubernetes-validate) and Python >= 3.11 (tomllib).
"""

import os
import re
import sys
import tomllib

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PACKAGED_RULES = os.path.join(ROOT, "packaging", "prometheus", "corvid.rules.yml")
MIB = 1 << 20
# statefulset.yaml's arithmetic: RSS <= 1.05 x capacity + this base.
BASE_BYTES = 256 * MIB

SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
QUANTITY_UNITS = {
    "": 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
}

problems = []


def problem(msg):
    problems.append(msg)


def corvid_size(v):
    """A corvid size: integer bytes or "<n><unit>" (README: Configuration)."""
    if isinstance(v, int):
        return v
    m = re.fullmatch(r"\s*(\d+)\s*(B|KiB|MiB|GiB|TiB)\s*", str(v))
    if not m:
        raise ValueError(f"not a corvid size: {v!r}")
    return int(m.group(1)) * SIZE_UNITS[m.group(2)]


def corvid_seconds(v):
    if isinstance(v, int):
        return v
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s|m|h|d)\s*", str(v))
    if not m:
        raise ValueError(f"not a corvid duration: {v!r}")
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return int(m.group(1)) * factor


def quantity(v):
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(v))
    if not m:
        raise ValueError(f"unsupported quantity: {v!r}")
    return int(m.group(1)) * QUANTITY_UNITS[m.group(2) or ""]


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def split(render, out_dir):
    for i, doc in enumerate(load_all(render)):
        name = f"{i:03d}-{doc['kind']}-{doc['metadata']['name']}.yaml"
        with open(os.path.join(out_dir, name), "w") as f:
            yaml.safe_dump(doc, f, sort_keys=False)
        print(name)


def rules_text():
    """prometheusrule.yaml: packaging's groups, verbatim (comments kept), under spec."""
    with open(PACKAGED_RULES) as f:
        text = f.read()
    start = text.index("\ngroups:") + 1
    body = "".join("  " + line if line.strip() else line for line in text[start:].splitlines(True))
    return (
        "# GENERATED from packaging/prometheus/corvid.rules.yml: do not edit here. Regenerate with\n"
        "#   target/moto-venv/bin/python3 scripts/check_kubernetes.py rules \\\n"
        "#     > deploy/kubernetes/base/prometheusrule.yaml\n"
        "# (scripts/check_kubernetes.sh fails while the two differ). The rules match job=\"corvid\":\n"
        "# servicemonitor.yaml's jobLabel gives the scraped series that job.\n"
        "apiVersion: monitoring.coreos.com/v1\n"
        "kind: PrometheusRule\n"
        "metadata:\n"
        "  name: corvid\n"
        "  labels:\n"
        "    app.kubernetes.io/name: corvid\n"
        "spec:\n" + body
    )


def strings(v):
    """Every string value in a parsed TOML document (comments are not values)."""
    if isinstance(v, str):
        yield v
    elif isinstance(v, dict):
        for x in v.values():
            yield from strings(x)
    elif isinstance(v, list):
        for x in v:
            yield from strings(x)


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def check(render, out_dir):
    docs = load_all(render)
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    def one(kind):
        found = by_kind.get(kind, [])
        if len(found) != 1:
            problem(f"expected one {kind}, found {len(found)}")
            return None
        return found[0]

    sts = one("StatefulSet")
    services = by_kind.get("Service", [])
    pod = sts["spec"]["template"] if sts else {"metadata": {"labels": {}}, "spec": {"containers": []}}
    pod_labels = pod["metadata"].get("labels", {})
    namespace = sts["metadata"].get("namespace") if sts else None
    containers = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for c in containers for p in c.get("ports", []) if "name" in p}

    # Services: select the pods, target named ports that exist.
    for s in services:
        name = s["metadata"]["name"]
        if not matches(s["spec"].get("selector"), pod_labels) or not s["spec"].get("selector"):
            problem(f"Service {name}: its selector {s['spec'].get('selector')} does not select the corvid pods {pod_labels}")
        for p in s["spec"].get("ports", []):
            t = p.get("targetPort", p.get("port"))
            if isinstance(t, str) and t not in ports:
                problem(f"Service {name}: targetPort {t!r} is no named container port ({sorted(ports)})")
            if isinstance(t, int) and t not in ports.values():
                problem(f"Service {name}: targetPort {t} is no container port ({sorted(ports.values())})")

    # ServiceMonitor -> Service labels and port name; job="corvid".
    for sm in by_kind.get("ServiceMonitor", []):
        name = sm["metadata"]["name"]
        sel = sm["spec"].get("selector", {}).get("matchLabels", {})
        if not sel:
            problem(f"ServiceMonitor {name}: no selector.matchLabels")
        chosen = [
            s for s in services
            if matches(sel, s["metadata"].get("labels", {}))
            and s["metadata"].get("namespace") == sm["metadata"].get("namespace")
        ]
        if len(chosen) != 1:
            problem(f"ServiceMonitor {name}: selects {len(chosen)} Services ({[s['metadata']['name'] for s in chosen]}), expected one")
            continue
        svc = chosen[0]
        port_names = {p.get("name") for p in svc["spec"].get("ports", [])}
        for ep in sm["spec"].get("endpoints", []):
            if ep.get("port") not in port_names:
                problem(f"ServiceMonitor {name}: endpoint port {ep.get('port')!r} is not a port name of Service {svc['metadata']['name']} ({sorted(port_names)})")
            if ep.get("path", "/metrics") != "/metrics":
                problem(f"ServiceMonitor {name}: path {ep.get('path')!r} is not /metrics")
        job_label = sm["spec"].get("jobLabel")
        job = svc["metadata"].get("labels", {}).get(job_label) if job_label else svc["metadata"]["name"]
        if job != "corvid":
            problem(f"ServiceMonitor {name}: the scraped job would be {job!r}; the rules match job=\"corvid\"")

    # PrometheusRule: packaging's groups; written out for promtool.
    for pr in by_kind.get("PrometheusRule", []):
        groups = pr.get("spec", {}).get("groups")
        with open(PACKAGED_RULES) as f:
            packaged = yaml.safe_load(f)["groups"]
        if groups != packaged:
            problem(
                f"PrometheusRule {pr['metadata']['name']}: its groups differ from packaging/prometheus/corvid.rules.yml "
                "(regenerate: target/moto-venv/bin/python3 scripts/check_kubernetes.py rules > deploy/kubernetes/base/prometheusrule.yaml)"
            )
        with open(os.path.join(out_dir, "rules.yml"), "w") as f:
            yaml.safe_dump({"groups": groups}, f, sort_keys=False)

    # The config, as mounted.
    cm_name = next((v["configMap"]["name"] for v in pod["spec"].get("volumes", []) if "configMap" in v), None)
    cms = [c for c in by_kind.get("ConfigMap", []) if c["metadata"]["name"] == cm_name]
    if len(cms) != 1 or "corvid.toml" not in cms[0].get("data", {}):
        problem(f"the pods mount ConfigMap {cm_name!r}, which is not in the render with a corvid.toml")
        return
    toml_text = cms[0]["data"]["corvid.toml"]
    with open(os.path.join(out_dir, "corvid.toml"), "w") as f:
        f.write(toml_text)
    try:
        cfg = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as e:
        problem(f"corvid.toml does not parse: {e}")
        return
    corvid = next((c for c in containers if c["name"] == "corvid"), None)
    if corvid is None:
        problem("no container named corvid")
        return
    args = corvid.get("args", [])
    mount = next((m["mountPath"] for m in corvid.get("volumeMounts", []) if m["name"] == next(
        (v["name"] for v in pod["spec"].get("volumes", []) if v.get("configMap", {}).get("name") == cm_name), None)), None)
    if mount is None or f"{mount.rstrip('/')}/corvid.toml" not in args:
        problem(f"corvid's args {args} do not name the mounted config ({mount}/corvid.toml)")

    # Grace: preStop pause + shutdown_grace must fit.
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    pause = corvid.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    shutdown = corvid_seconds(cfg.get("server", {}).get("shutdown_grace", "30s"))
    if grace <= pause + shutdown:
        problem(f"terminationGracePeriodSeconds {grace} does not cover preStop {pause} s + server.shutdown_grace {shutdown} s")

    # Probes on the listener's port, the right paths.
    listen_port = int(str(cfg.get("server", {}).get("listen", ":0")).rsplit(":", 1)[1])
    for probe, path in (("readinessProbe", "/ready?origins=ignore"), ("livenessProbe", "/health")):
        get = corvid.get(probe, {}).get("httpGet", {})
        port = ports.get(get.get("port"), get.get("port"))
        if get.get("path") != path or port != listen_port:
            problem(f"{probe}: expected GET {path} on port {listen_port}, found {get.get('path')} on {port}")

    # Memory limit from cache.memory.capacity.
    capacity = corvid_size(cfg.get("cache", {}).get("memory", {}).get("capacity", "256MiB"))
    limit = corvid.get("resources", {}).get("limits", {}).get("memory")
    need = int(capacity * 1.05) + BASE_BYTES
    if limit is None:
        problem("the corvid container has no memory limit")
    elif quantity(limit) < need:
        problem(
            f"memory limit {limit} is below 1.05 x cache.memory.capacity ({capacity / MIB:.0f}Mi) + 256Mi"
            f" = {need / MIB:.1f}Mi (statefulset.yaml)"
        )

    # The fleet: peers_dns names a headless Service of this render, ready pods only.
    cluster = cfg.get("cluster")
    if cluster is not None:
        env = {e["name"]: e for e in corvid.get("env", [])}
        peer = str(cluster.get("peer", ""))
        if "${POD_IP}" in peer and env.get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "status.podIP":
            problem("cluster.peer uses ${POD_IP}, which the container does not get from status.podIP")
        for var in sorted(set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", "\n".join(strings(cfg))))):
            if var not in env:
                problem(f"corvid.toml uses ${{{var}}}, which the container's env does not set")
        dns = cluster.get("peers_dns")
        if dns is not None:
            host, _, port = dns.rpartition(":")
            svc_name, _, rest = host.partition(".")
            svc = next((s for s in services if s["metadata"]["name"] == svc_name), None)
            if svc is None:
                problem(f"cluster.peers_dns {dns}: no Service {svc_name} in the render")
            else:
                if svc["spec"].get("clusterIP") != "None":
                    problem(f"cluster.peers_dns: Service {svc_name} is not headless (clusterIP: None)")
                if svc["spec"].get("publishNotReadyAddresses", False):
                    problem(f"cluster.peers_dns: Service {svc_name} publishes pods that are not ready")
                if not rest.startswith("${POD_NAMESPACE}.") and not rest.startswith(f"{namespace}."):
                    problem(f"cluster.peers_dns {dns}: not in the pods' namespace ({namespace})")
                if int(port) not in [p.get("port") for p in svc["spec"].get("ports", [])]:
                    problem(f"cluster.peers_dns: port {port} is not a port of Service {svc_name}")
            if not peer.endswith(f":{port}") or int(port) != listen_port:
                problem(f"cluster.peer {peer} and peers_dns {dns} must use server.listen's port {listen_port}")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "split":
        split(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3])
        for p in problems:
            print(f"  problem: {p}", file=sys.stderr)
        sys.exit(1 if problems else 0)
    elif len(sys.argv) == 2 and sys.argv[1] == "rules":
        sys.stdout.write(rules_text())
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
