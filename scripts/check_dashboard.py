#!/usr/bin/env python3
"""Validate the Tollgate Grafana dashboard (config/grafana/tollgate.json).

Usage: check_dashboard.py DASHBOARD.json [--metrics FILE]

Catches the mistakes that only show up once the dashboard is imported and someone
stares at an empty panel:

1. Structure: the dashboard has a uid and a title and a `datasource` template
   variable of type datasource (prometheus); every panel, including panels nested in
   collapsed rows, has a unique id and a title; every non-row panel has a datasource
   that points at a template variable (no hard-coded uid) and targets, each with a
   refId (unique within the panel), a non-empty `expr` and a `legendFormat`.
2. PromQL syntax: Grafana variables in each expression are replaced the way Grafana
   would expand them (template variables become the regex `.*`, interval variables
   such as `$__rate_interval` become `5m`), every expression becomes one recording
   rule `dashboard:panel_<id>_<refId>` in a temporary rules file, and
   `promtool check rules` parses it. A failure names the panel and the expression.
3. Metric names: with `--metrics FILE` (Prometheus text exposition scraped from the
   gateway's admin listener), every metric name the expressions select must occur in
   it. A histogram counts as present when its `# TYPE` line or any of its
   `_bucket`/`_sum`/`_count` series is there.

Standard library only; needs `promtool` on PATH (Debian package `prometheus`), or
its path in the PROMTOOL environment variable. Exits 0 with a one-line summary when
everything passes, 1 when a check fails, 2 when it cannot run.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import namedtuple

# One PromQL expression found in the dashboard: where it came from and what it says.
Expr = namedtuple("Expr", "where record expr")

# Grafana's built-in variables that stand for a time span, with the value we test with.
BUILTIN_VALUES = {
    "__rate_interval": "5m",
    "__interval": "5m",
    "__range": "5m",
    "__auto": "5m",
    "__rate_interval_ms": "300000",
    "__interval_ms": "300000",
    "__range_ms": "300000",
    "__range_s": "300",
}
INTERVAL_VALUE = "5m"  # for template variables of type "interval"
REGEX_VALUE = ".*"  # for every other template variable (label matcher values)

# $name, ${name}, ${name:format}, ${name.field}, [[name]], [[name:format]]
VARIABLE_RE = re.compile(
    r"\$\{(?P<braced>\w+)(?:[.:][^}]*)?\}"
    r"|\$(?P<plain>\w+)"
    r"|\[\[(?P<legacy>\w+)(?::[^\]]*)?\]\]"
)

# PromQL words that look like identifiers but never name a metric.
PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "atan2", "inf", "nan", "start", "end",
    # aggregation operators (may be followed by `by (...)` instead of `(`)
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
NAME_MATCHER_RE = re.compile(r'__name__\s*=\s*"((?:[^"\\]|\\.)*)"')
LABEL_LIST_RE = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
TOKEN_RE = re.compile(
    r"(?P<number>(?:0[xX][0-9a-fA-F]+|\d*\.?\d+(?:[eE][+-]?\d+)?)[a-zA-Z]*)"
    r"|(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"|(?P<other>\S)"
)
METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# ---------------------------------------------------------------- dashboard structure


def iter_panels(panels):
    """Every panel, depth first, including those nested inside (collapsed) rows."""
    for panel in panels or []:
        yield panel
        yield from iter_panels(panel.get("panels"))


def template_variables(dashboard):
    return dashboard.get("templating", {}).get("list", []) or []


def datasource_errors(where, datasource, variables):
    """A panel's or target's datasource must be a defined template variable."""
    if not datasource:
        return [f"{where}: no datasource"]
    uid = datasource.get("uid") if isinstance(datasource, dict) else datasource
    match = re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", uid if isinstance(uid, str) else "")
    if not match:
        return [f"{where}: datasource {uid!r} is hard-coded; use ${{datasource}}"]
    if (match.group(1) or match.group(2)) not in variables:
        return [f"{where}: datasource {uid!r} is not a template variable"]
    return []


def check_dashboard_fields(dashboard):
    errors = []
    for key in ("uid", "title"):
        if not isinstance(dashboard.get(key), str) or not dashboard[key].strip():
            errors.append(f"dashboard: missing {key}")
    if not any(
        v.get("type") == "datasource" and v.get("name") == "datasource"
        and v.get("query") == "prometheus"
        for v in template_variables(dashboard)
    ):
        errors.append("dashboard: no template variable 'datasource' of type datasource "
                      "(query prometheus)")
    return errors


def check_target(where, target, seen_refs, variables):
    errors = []
    ref = target.get("refId")
    if not isinstance(ref, str) or not ref:
        errors.append(f"{where}: target without refId")
    elif ref in seen_refs:
        errors.append(f"{where}: duplicate refId {ref!r}")
    seen_refs.add(ref)
    if not isinstance(target.get("expr"), str) or not target["expr"].strip():
        errors.append(f"{where} refId {ref}: empty expr")
    if not isinstance(target.get("legendFormat"), str):
        errors.append(f"{where} refId {ref}: no legendFormat")
    if "datasource" in target:
        errors += datasource_errors(f"{where} refId {ref}", target["datasource"], variables)
    return errors


def check_panel(panel, variables):
    where = panel_label(panel)
    errors = []
    if not isinstance(panel.get("title"), str) or not panel["title"].strip():
        errors.append(f"{where}: no title")
    if panel.get("type") == "row":
        return errors
    errors += datasource_errors(where, panel.get("datasource"), variables)
    targets = panel.get("targets") or []
    if not targets:
        errors.append(f"{where}: no targets")
    seen_refs = set()
    for target in targets:
        errors += check_target(where, target, seen_refs, variables)
    return errors


def check_structure(dashboard):
    errors = check_dashboard_fields(dashboard)
    variables = {v.get("name") for v in template_variables(dashboard)}
    seen_ids = set()
    for panel in iter_panels(dashboard.get("panels")):
        pid = panel.get("id")
        if not isinstance(pid, int) or isinstance(pid, bool):
            errors.append(f"{panel_label(panel)}: id must be an integer")
        elif pid in seen_ids:
            errors.append(f"{panel_label(panel)}: duplicate panel id {pid}")
        seen_ids.add(pid)
        errors += check_panel(panel, variables)
    return errors


def panel_label(panel):
    return f"panel {panel.get('title', '<untitled>')!r} (id {panel.get('id')})"


# ------------------------------------------------------------------ expressions


def record_name(*parts):
    """A valid metric name such as dashboard:panel_12_A."""
    return "dashboard:" + "_".join(re.sub(r"[^a-zA-Z0-9_]", "_", str(p)) for p in parts)


def collect_expressions(dashboard):
    """Panel target expressions, plus those of Prometheus annotation queries."""
    exprs = []
    for panel in iter_panels(dashboard.get("panels")):
        if panel.get("type") == "row":
            continue
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if isinstance(expr, str) and expr.strip():
                where = f"{panel_label(panel)} refId {target.get('refId')}"
                exprs.append(Expr(where, record_name("panel", panel.get("id"),
                                                     target.get("refId")), expr))
    annotations = dashboard.get("annotations", {}).get("list", []) or []
    for i, annotation in enumerate(annotations):
        expr = annotation.get("expr") or (annotation.get("target") or {}).get("expr")
        if isinstance(expr, str) and expr.strip():
            where = f"annotation {annotation.get('name', i)!r}"
            exprs.append(Expr(where, record_name("annotation", i), expr))
    return exprs


def substitute_variables(expr, variables):
    """Expands Grafana variables for testing; returns (expr, unknown variable names)."""
    unknown = []

    def replace(match):
        name = match.group("braced") or match.group("plain") or match.group("legacy")
        if name in BUILTIN_VALUES:
            return BUILTIN_VALUES[name]
        if name in variables:
            return INTERVAL_VALUE if variables[name] == "interval" else REGEX_VALUE
        if not name.isdigit():  # "$1" is a label_replace group, not a variable
            unknown.append(name)
        return match.group(0)

    return VARIABLE_RE.sub(replace, expr), unknown


def expand_all(exprs, dashboard):
    """Expressions ready for promtool, and errors for undefined variables."""
    variables = {v.get("name"): v.get("type") for v in template_variables(dashboard)}
    expanded, errors = [], []
    for e in exprs:
        text, unknown = substitute_variables(e.expr, variables)
        for name in unknown:
            errors.append(f"{e.where}: undefined variable ${name} in: {e.expr}")
        expanded.append(e._replace(expr=text))
    return expanded, errors


# ------------------------------------------------------------------ promtool


def find_promtool():
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not promtool:
        print("check_dashboard: promtool not found; install it (apt-get install -y "
              "prometheus) or set PROMTOOL", file=sys.stderr)
        sys.exit(2)
    return promtool


def rules_yaml(exprs):
    """A rules file with one recording rule per expression (JSON strings are YAML)."""
    lines = ["groups:", "  - name: grafana_dashboard", "    rules:"]
    for e in exprs:
        lines.append(f"      - record: {json.dumps(e.record)}")
        lines.append(f"        expr: {json.dumps(e.expr)}")
    return "\n".join(lines) + "\n"


def check_syntax(exprs, originals):
    """Runs `promtool check rules`; returns errors naming the offending expressions."""
    if not exprs:
        return []
    promtool = find_promtool()
    with tempfile.TemporaryDirectory(prefix="check_dashboard.") as tmp:
        path = os.path.join(tmp, "dashboard.rules.yml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(rules_yaml(exprs))
        run = subprocess.run([promtool, "check", "rules", path],
                             capture_output=True, text=True, check=False)
    if run.returncode == 0:
        return []
    output = (run.stdout + run.stderr).strip()
    by_record = {e.record: e for e in originals}
    errors = []
    for line in output.splitlines():
        for record in re.findall(r'"(dashboard:[a-zA-Z0-9_:]+)"', line):
            if record in by_record:
                e = by_record[record]
                message = line.split(f'"{record}":', 1)[-1].strip()
                errors.append(f"{e.where}: {message}\n    expr: {e.expr}")
    return errors or [f"promtool check rules failed:\n{output}"]


# ------------------------------------------------------------------ metric names


def metric_names(expr):
    """Metric names an expression selects (grafana variables already expanded)."""
    names = set(NAME_MATCHER_RE.findall(expr))
    text = STRING_RE.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", "{}", text)  # label matchers
    text = re.sub(r"\[[^\[\]]*\]", "[]", text)  # range and subquery durations
    text = LABEL_LIST_RE.sub(lambda m: m.group(1), text)  # by (...), on (...), ...
    tokens = [(m.lastgroup, m.group()) for m in TOKEN_RE.finditer(text)]
    for i, (kind, token) in enumerate(tokens):
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if kind != "ident" or following == "(" or token.lower() in PROMQL_KEYWORDS:
            continue
        names.add(token)
    return names


def load_exposition(path):
    """Sample names and `# TYPE` declarations of a Prometheus text exposition."""
    samples, types = set(), {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("#"):
                parts = line.split()
                if len(parts) >= 3 and parts[1] == "TYPE":
                    types[parts[2]] = parts[3] if len(parts) > 3 else "untyped"
            elif line:
                match = METRIC_NAME_RE.match(line)
                if match:
                    samples.add(match.group())
    return samples, types


def metric_present(name, samples, types):
    if name in samples or name in types:
        return True
    if name.endswith("_total") and types.get(name[: -len("_total")]) == "counter":
        return True  # OpenMetrics style: `# TYPE foo counter`, series foo_total
    base = name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
    if types.get(base) in ("histogram", "summary"):
        return True
    return any(base + suffix in samples for suffix in HISTOGRAM_SUFFIXES)


def used_metrics(exprs):
    """Map of metric name to the places that select it."""
    used = {}
    for e in exprs:
        for name in metric_names(e.expr):
            used.setdefault(name, []).append(e.where)
    return used


def check_metrics(used, metrics_path):
    samples, types = load_exposition(metrics_path)
    errors = []
    for name in sorted(used):
        if not metric_present(name, samples, types):
            places = "; ".join(used[name])
            errors.append(f"metric {name} not in {metrics_path} (used by {places})")
    return errors


# ------------------------------------------------------------------ main


def load_dashboard(path):
    try:
        with open(path, encoding="utf-8") as f:
            dashboard = json.load(f)
    except (OSError, ValueError) as err:
        print(f"check_dashboard: cannot read {path}: {err}", file=sys.stderr)
        sys.exit(1)
    if not isinstance(dashboard, dict):
        print(f"check_dashboard: {path} is not a dashboard object", file=sys.stderr)
        sys.exit(1)
    return dashboard


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dashboard", help="Grafana dashboard JSON model")
    parser.add_argument("--metrics", help="Prometheus text exposition scraped from the gateway")
    args = parser.parse_args(argv)
    if args.metrics and not os.path.isfile(args.metrics):
        parser.error(f"--metrics {args.metrics}: no such file")

    dashboard = load_dashboard(args.dashboard)
    errors = check_structure(dashboard)
    originals = collect_expressions(dashboard)
    expanded, variable_errors = expand_all(originals, dashboard)
    errors += variable_errors
    errors += check_syntax(expanded, originals)
    used = used_metrics(expanded)
    if args.metrics:
        errors += check_metrics(used, args.metrics)

    if errors:
        for error in errors:
            print(f"ERROR {error}", file=sys.stderr)
        print(f"check_dashboard: {len(errors)} problem(s) in {args.dashboard}", file=sys.stderr)
        return 1
    panels = [p for p in iter_panels(dashboard.get("panels")) if p.get("type") != "row"]
    found = f", all present in {args.metrics}" if args.metrics else ""
    print(f"check_dashboard: OK: {args.dashboard}: {len(panels)} panels, "
          f"{len(expanded)} expressions checked by promtool, "
          f"{len(used)} metric names{found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
