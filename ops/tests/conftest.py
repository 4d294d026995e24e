"""Session fixtures: the metric names that really exist, read once."""

import pytest
from exporters import redis_and_node_exporter_names
from prometheus_client.core import Metric
from quantum_apply_layer.metrics import REGISTRY

# Sample names each metric type exposes beside (or instead of) its family name.
_SAMPLE_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}

# Series Prometheus itself makes, and its own and Alertmanager's metric prefixes.
PROMETHEUS_BUILTIN_NAMES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
PROMETHEUS_BUILTIN_PREFIXES = ("prometheus_", "alertmanager_")


def _sample_names(family: Metric) -> set[str]:
    return {family.name + suffix for suffix in _SAMPLE_SUFFIXES[family.type]}


@pytest.fixture(scope="session")
def apply_layer_names() -> set[str]:
    """Every sample name the service's registry can expose, labelled metrics not yet touched included."""
    return {name for family in REGISTRY.collect() for name in _sample_names(family)}


@pytest.fixture(scope="session")
def exporter_names() -> set[str]:
    return redis_and_node_exporter_names()
