"""`quantum-apply-layer status` and the user data stream's health, read from the service's metrics."""

from __future__ import annotations

from redis_server import RedisServer, free_port
from test_cli import cli

from quantum_apply_layer.stream_health import render_stream_health, stream_health

EXPOSITION = """\
# TYPE apply_user_stream_up gauge
apply_user_stream_up 1.0
# TYPE apply_user_stream_last_reconcile_timestamp_seconds gauge
apply_user_stream_last_reconcile_timestamp_seconds 1.0e+09
# TYPE apply_position_lookups counter
apply_position_lookups_total{reason="awaiting_fill"} 3.0
# TYPE apply_stream_position_mismatch counter
apply_stream_position_mismatch_total{symbol="BTCUSDT"} 1.0
# TYPE apply_exchange_order_socket_up gauge
apply_exchange_order_socket_up 0.0
"""


def test_the_health_says_connected_how_old_the_check_is_and_what_it_counted() -> None:
    health = stream_health(EXPOSITION)
    assert health["connected"] is True
    assert isinstance(health["last_reconcile_age_s"], float)
    assert health["last_reconcile_age_s"] > 1e8  # 2001: a check that old is not a check
    assert health["position_lookups"] == {"awaiting_fill": 3}
    assert health["position_mismatches"] == {"BTCUSDT": 1}
    assert render_stream_health(health).startswith("user data stream: connected, positions last confirmed")
    assert health["order_socket"] is False
    assert render_stream_health(health).endswith("\ncloses go by: REST: the websocket API is not open")


def test_status_says_when_the_service_is_not_there_to_report_its_stream(redis_server: RedisServer) -> None:
    done = cli("status", REDIS_URL=redis_server.url, APPLY_METRICS_PORT=str(free_port()))
    assert done.returncode == 0, done.stderr
    assert "user data stream: unknown (the service's metrics at http://127.0.0.1:" in done.stdout
