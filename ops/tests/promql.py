"""Metric names used by a PromQL expression, without a PromQL parser: strip what cannot be a metric name
(strings, label matchers, ranges, label lists, Grafana variables), then keep every identifier that is
not a function call or a keyword."""

import re

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_GRAFANA_VARIABLES = re.compile(r"\$\{?\w+\}?")
# An identifier not glued to a word, a colon or a decimal point (so not the `e3` of `1e3` or the `m` of `5m`),
# taken whole, and not followed by `(` (a function).
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    }
)
_GRAFANA_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<expr>.*),\s*\w+\s*\)\s*$", re.DOTALL)


def metric_names(expr: str) -> set[str]:
    """Every metric name the expression selects."""
    text = _STRINGS.sub('""', expr)
    for pattern in (_MATCHERS, _RANGES, _LABEL_LISTS, _GRAFANA_VARIABLES):
        text = pattern.sub(" ", text)
    return {name for name in _IDENTIFIER.findall(text) if name.lower() not in _KEYWORDS}


def grafana_variable_query_names(query: str) -> set[str]:
    """Metric names in a Grafana variable query: `label_values(EXPR, label)` selects EXPR only."""
    match = _GRAFANA_LABEL_VALUES.match(query)
    return metric_names(match.group("expr")) if match else metric_names(query)
