"""Helpers shared by the deployment tests: reading the dashboard's and the rule
files' PromQL, Grafana variable substitution, and splitting an alert
expression into the operands of its top-level comparisons / set operations."""

import json
import re

import yaml

# What Grafana substitutes for its built-in variables, for running dashboard
# queries directly against Prometheus. The windows are wide enough to cover a
# whole test run (a few minutes at most).
GRAFANA_BUILTINS = {
    "__rate_interval": "2m",
    "__interval": "15s",
    "__range": "5m",
}
# Template variables: "All" (allValue ".*").
TEMPLATE_ALL = ".*"


def dashboard_panels(dashboard):
    """Every panel, rows' nested panels included."""
    for panel in dashboard.get("panels", []):
        yield panel
        for nested in panel.get("panels", []) or []:
            yield nested


def dashboard_queries(dashboard):
    """(panel title, refId, expr, instant) for every Prometheus target."""
    out = []
    for panel in dashboard_panels(dashboard):
        for t in panel.get("targets", []) or []:
            if "expr" in t:
                out.append((panel.get("title", "?"), t.get("refId", "?"), t["expr"], bool(t.get("instant"))))
    return out


def template_variables(dashboard):
    return dashboard.get("templating", {}).get("list", [])


def substitute(expr, variables):
    """Replaces $name, ${name} and [[name]] by Grafana builtins or `variables`."""
    def value(name):
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        if name in variables:
            return variables[name]
        raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")

    expr = re.sub(r"\$\{(\w+)(?::\w+)?\}", lambda m: value(m.group(1)), expr)
    expr = re.sub(r"\[\[(\w+)\]\]", lambda m: value(m.group(1)), expr)
    expr = re.sub(r"\$(\w+)", lambda m: value(m.group(1)), expr)
    return expr


def load_rules(path):
    """(group, rule dict) for every rule of a Prometheus rule file."""
    with open(path) as f:
        doc = yaml.safe_load(f)
    return [(g["name"], r) for g in doc["groups"] for r in g["rules"]]


_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")
_SET_OPS = ("and", "or", "unless")
_MODIFIER = re.compile(r"^\s*(bool\b|(on|ignoring|group_left|group_right)\s*(\([^)]*\))?)\s*")


def split_top_level(expr):
    """Splits `expr` at comparison and set operators outside any (), {} or []
    and outside strings, and strips the vector-matching modifiers (on(...),
    ignoring(...), group_left(...), group_right(...), bool) that follow an
    operator. Returns the operands; a single element when there is no such
    operator."""
    parts, depth, quote, start, i = [], 0, None, 0, 0
    while i < len(expr):
        c = expr[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
            i += 1
            continue
        if c in "\"'`":
            quote = c
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            op = next((o for o in _COMPARISONS if expr.startswith(o, i)), None)
            if op is None:
                for word in _SET_OPS:
                    if (re.match(rf"{word}\b", expr[i:]) and (i == 0 or not (expr[i - 1].isalnum() or expr[i - 1] in "_:"))):
                        op = word
                        break
            if op is not None:
                parts.append(expr[start:i])
                i += len(op)
                while True:  # modifiers after the operator
                    m = _MODIFIER.match(expr[i:])
                    if not m or not m.group(0).strip():
                        break
                    i += m.end()
                start = i
                continue
        i += 1
    parts.append(expr[start:])
    return [p.strip() for p in parts if p.strip()]


def is_number(s):
    try:
        float(s)
        return True
    except ValueError:
        return False


def load_json(path):
    with open(path) as f:
        return json.load(f)
