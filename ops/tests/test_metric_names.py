"""Every metric the dashboard and the rules name must exist: in the service's registry, in the real Redis
and node exporters, as a recording rule, or as one of Prometheus's own series."""

from typing import Any

import pytest
from conftest import PROMETHEUS_BUILTIN_NAMES, PROMETHEUS_BUILTIN_PREFIXES
from ops_files import RULE_FILES, dashboard, dashboard_panels, recorded_names, rules
from promql import grafana_variable_query_names, metric_names


def _rule_expressions() -> list[tuple[str, str]]:
    return [
        (f"{path.name}: {rule.get('alert') or rule.get('record')}", rule["expr"])
        for path in RULE_FILES
        for rule in rules(path)
    ]


def _dashboard_expressions(board: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (f"panel {panel['title']!r}", target["expr"])
        for panel in dashboard_panels(board["panels"])
        for target in panel.get("targets", [])
    ]


def _dashboard_variable_names(board: dict[str, Any]) -> list[tuple[str, set[str]]]:
    return [
        (f"variable {variable['name']!r}", grafana_variable_query_names(variable["query"]["query"]))
        for variable in board["templating"]["list"]
        if variable["type"] == "query"
    ]


def _names_by_place(board: dict[str, Any]) -> list[tuple[str, set[str]]]:
    expressions = _rule_expressions() + _dashboard_expressions(board)
    return [(place, metric_names(expr)) for place, expr in expressions] + _dashboard_variable_names(board)


def _unknown_names(board: dict[str, Any], apply_layer_names: set[str], exporter_names: set[str]) -> list[str]:
    known = apply_layer_names | exporter_names | recorded_names() | PROMETHEUS_BUILTIN_NAMES
    return sorted(
        f"{place}: {name}"
        for place, names in _names_by_place(board)
        for name in names
        if name not in known and not name.startswith(PROMETHEUS_BUILTIN_PREFIXES)
    )


def test_every_metric_named_by_the_dashboard_and_the_rules_exists(
    apply_layer_names: set[str], exporter_names: set[str]
) -> None:
    assert _unknown_names(dashboard(), apply_layer_names, exporter_names) == []


def test_a_panel_naming_a_missing_metric_is_caught(
    apply_layer_names: set[str], exporter_names: set[str]
) -> None:
    board = dashboard()
    board["panels"].append(
        {
            "type": "timeseries",
            "title": "Bogus",
            "targets": [{"expr": 'sum by (status) (rate(apply_executd_total{instance=~"$instance"}[5m]))'}],
        }
    )
    assert _unknown_names(board, apply_layer_names, exporter_names) == ["panel 'Bogus': apply_executd_total"]


def test_the_checked_names_cover_each_source(apply_layer_names: set[str], exporter_names: set[str]) -> None:
    """Guards the check itself: an empty source would let every name through."""
    assert {"apply_executed_total", "permit_wait_ms_bucket", "position_mismatch_seconds"} <= apply_layer_names
    assert {"redis_up", "redis_memory_max_bytes", "node_filesystem_avail_bytes"} <= exporter_names
    assert {"redis_connected_slave_offset_bytes", "redis_sentinel_master_status"} <= exporter_names


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("sum without (reason) (rate(p33_permit_deny_total[5m]))", {"p33_permit_deny_total"}),
        ('histogram_quantile(0.99, sum by (le) (rate(x_bucket{le!="1e3"}[$__rate_interval])))', {"x_bucket"}),
        ("a:b:c > 1e3 and on (job, instance) up offset 10m", {"a:b:c", "up"}),
        ('label_replace(y, "dst", "$1", "src", "(.*)") * on () group_left () z', {"y", "z"}),
        ("time() - max_over_time(t_seconds[1h:5m])", {"t_seconds"}),
        ("count(v) == bool 0 or vector(0) unless Inf > NaN", {"v"}),
    ],
)
def test_the_extractor_finds_metric_names(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def test_label_values_variables_select_their_expression_only() -> None:
    assert grafana_variable_query_names('label_values(up{job="apply_layer"}, instance)') == {"up"}
