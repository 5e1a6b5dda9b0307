#!/usr/bin/env python3
"""Every metric and label the packaging uses must be one corvid renders.

Reads the names and label names src/metrics.rs writes (histograms as their _bucket, _sum and
_count series), then the PromQL in packaging/prometheus/*.yml (rules and their tests) and
packaging/grafana/*.json (panel targets and template queries), and fails when an expression
uses a metric that is neither rendered by corvid, nor a recording rule defined in the rules,
nor one of the few external series below; or a label corvid does not write. corvid_* names in
comments and annotations are checked too (there the bare histogram name is fine).

  scripts/check_metric_names.py                 check (scripts/test.sh runs it)
  scripts/check_metric_names.py --emit-rules F  also write the dashboard's expressions, Grafana
                                                variables filled in, as a rules file F, so
                                                `promtool check rules F` parses them

Standard library only (no YAML parser: the rules files are read line by line).
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS_RS = ROOT / "src" / "metrics.rs"
RULE_FILES = sorted((ROOT / "packaging" / "prometheus").glob("*.yml"))
DASHBOARDS = sorted((ROOT / "packaging" / "grafana").glob("*.json"))

# Series that do not come from corvid, and where they do come from.
EXTERNAL = {
    "up": "Prometheus, for every scrape target",
    "probe_success": "the blackbox exporter probing /ready (CorvidNotReady)",
}
# Labels Prometheus attaches to every scraped series (target labels).
TARGET_LABELS = {"job", "instance"}

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "bool", "offset", "inf", "nan", "Inf", "NaN"}


def rendered(source):
    """(series names, bare histogram names, label names) that `Registry::render` writes."""
    code = source.split("#[cfg(test)]")[0]
    names = set(re.findall(r'"(corvid_[a-z0-9_]+)', code))
    histograms = set(re.findall(r'header\(\s*&mut out,\s*"(corvid_\w+)",\s*"histogram"', code))
    if not names or not histograms:
        sys.exit(f"{METRICS_RS}: found no metric names; has render() changed shape?")
    names -= histograms
    for h in histograms:
        names |= {h + "_bucket", h + "_sum", h + "_count"}
    labels = set(re.findall(r'(?:\{\{|,)([a-z_]+)=\\"', code))
    return names, histograms, labels


def strip_grafana(expr):
    """Fills in Grafana's variables so the expression is plain PromQL."""
    expr = re.sub(r"\$\{?__(rate_)?interval\}?", "5m", expr)
    expr = re.sub(r"\$\{?__range\}?", "1h", expr)
    return re.sub(r"\$\{?(\w+)(:\w+)?\}?", ".*", expr)


def names_and_labels(expr):
    """The metric names and label names one PromQL expression uses."""
    problems = []
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    labels = []
    for block in re.findall(r"\{([^{}]*)\}", expr):
        labels += re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", block)
        if re.search(r'^\s*""\s*$|(?:^|,)\s*""', block):
            problems.append("a bare string selector ({\"name\"}): write the metric name plainly")
    expr = re.sub(r"\{[^{}]*\}", " ", expr)
    expr = re.sub(r"\[[^\[\]]*\]", " ", expr)
    for clause in re.findall(
            r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)", expr):
        labels += [l.strip() for l in clause.split(",") if l.strip()]
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", expr)
    names = []
    for m in re.finditer(r"(?<![\w.:])[A-Za-z_:][\w:]*", expr):
        word = m.group(0)
        if word in KEYWORDS or re.match(r"\s*\(", expr[m.end():]):
            continue  # an operator or a function
        names.append(word)
    if "__name__" in labels:
        problems.append("matches on __name__: write the metric name plainly so it can be checked")
    return names, labels, problems


def rules_text(path):
    """(expressions, recorded names, other text) of a rules or rules-test file, line by line."""
    lines = path.read_text().splitlines()
    exprs, records, prose = [], [], []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(\s*)(?:- )?(expr|series|labels|record|alert):\s*(.*)$", line)
        if not m:
            prose.append(line.split("#", 1)[0] if not line.lstrip().startswith("#") else line)
            i += 1
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
        lineno = i + 1
        if rest in ("|", "|-", ">", ">-"):
            block = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or
                                      len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i])
                i += 1
            value = "\n".join(block)
        else:
            value = rest
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            i += 1
        if key in ("expr", "series", "labels"):
            exprs.append((lineno, value))
        elif key == "record":
            records.append(value)
    return exprs, records, "\n".join(prose)


def dashboard_exprs(path):
    """(where, expression) for every panel target and template query of a dashboard."""
    out = []

    def walk(node, where):
        if isinstance(node, dict):
            title = node.get("title") or node.get("name") or where
            if isinstance(node.get("expr"), str):
                out.append((f"{title} / {node.get('refId', '?')}", node["expr"]))
            q = node.get("query")
            if node.get("type") == "query" and q is not None:
                q = q.get("query", "") if isinstance(q, dict) else q
                m = re.match(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$", q, re.S)
                if m:
                    out.append((f"variable {title}", m.group(1)))
                    out.append((f"variable {title} (label)", "{%s=\"x\"}" % m.group(2)))
                elif q.strip():
                    out.append((f"variable {title}", q))
            for k, v in node.items():
                walk(v, title if k in ("targets", "templating") else where)
        elif isinstance(node, list):
            for v in node:
                walk(v, where)

    walk(json.loads(path.read_text()), path.name)
    return out


def check(exprs, known, histograms, labels, records):
    """Problems with a list of (where, expression)."""
    problems = []
    for where, expr in exprs:
        names, used_labels, found = names_and_labels(strip_grafana(expr))
        problems += [f"{where}: {p}" for p in found]
        for name in names:
            if ":" in name:
                if name not in records:
                    problems.append(f"{where}: recording rule {name} is not defined")
            elif name in histograms:
                problems.append(f"{where}: {name} is a histogram: use {name}_bucket/_sum/_count")
            elif name not in known and name not in EXTERNAL:
                problems.append(f"{where}: metric {name} is not rendered by src/metrics.rs")
        for label in used_labels:
            if label not in labels and label not in TARGET_LABELS:
                problems.append(f"{where}: label {label!r} is not written by src/metrics.rs")
    return problems


def self_test(known, histograms, labels):
    """The check must reject wrong names, or it proves nothing."""
    bad = ['rate(corvid_request_total[5m])',
           'sum by (bucket) (rate(corvid_cache_hits_total{tier="memory"}[5m]))',
           'histogram_quantile(0.99, rate(corvid_request_duration_seconds[5m]))',
           'job:corvid_nope:rate5m',
           'sum by (buckets) (corvid_cache_bytes)',
           'corvd_cache_bytes > 0']
    good = ['histogram_quantile(0.99, sum by (le) (rate(corvid_request_duration_seconds_bucket'
            '{bucket=~"$bucket"}[$__rate_interval])))',
            'up{job="corvid"} == 0 and on (instance) corvid_build_info',
            'sum(rate(corvid_upstream_requests_total{outcome=~"5xx|timeout"}[5m])) > 1e-3']
    for e in bad:
        if not check([("self-test", e)], known, histograms, labels, set()):
            sys.exit(f"self-test: the check accepted a wrong expression: {e}")
    for e in good:
        if p := check([("self-test", e)], known, histograms, labels, set()):
            sys.exit(f"self-test: the check refused a right expression: {p}")


def main():
    known, histograms, labels = rendered(METRICS_RS.read_text())
    self_test(known, histograms, labels)
    problems, records, all_exprs, prose = [], set(), [], []
    for path in RULE_FILES:
        exprs, recs, text = rules_text(path)
        records |= set(recs)
        all_exprs += [(f"{path.relative_to(ROOT)}:{n}", e) for n, e in exprs]
        prose.append((path, text))
    dash_exprs = []
    for path in DASHBOARDS:
        dash_exprs += [(f"{path.relative_to(ROOT)}: {w}", e) for w, e in dashboard_exprs(path)]
        prose.append((path, path.read_text()))
    problems += check(all_exprs + dash_exprs, known, histograms, labels, records)
    # corvid_* words anywhere else (comments, annotations, descriptions, legends).
    for path, text in prose:
        for word in sorted(set(re.findall(r"(?<![\w:])corvid_\w+(?![\w:])", text))):
            if word not in known and word not in histograms:
                problems.append(f"{path.relative_to(ROOT)}: mentions {word}, "
                                "which src/metrics.rs does not render")
    if not records or not dash_exprs:
        problems.append(f"found {len(records)} recording rules and {len(dash_exprs)} dashboard "
                        "expressions: is the layout of packaging/ what this script expects?")
    if len(sys.argv) == 3 and sys.argv[1] == "--emit-rules":
        with open(sys.argv[2], "w") as f:
            f.write("groups:\n  - name: dashboard-expressions\n    rules:\n")
            for i, (_, e) in enumerate(dash_exprs):
                f.write(f"      - record: dashboard_expr_{i}\n        expr: {json.dumps(strip_grafana(e))}\n")
    elif len(sys.argv) > 1:
        sys.exit(__doc__)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    n = len(all_exprs) + len(dash_exprs)
    print(f"metric names: {n} expressions use only what src/metrics.rs renders "
          f"({len(known)} series), {len(records)} recording rules, and {', '.join(sorted(EXTERNAL))}")


if __name__ == "__main__":
    main()
