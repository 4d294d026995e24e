"""Every metric the service exports, in one registry served on APPLY_METRICS_PORT (8000).

The first block keeps the names operators already alert on (see CONTRACT.md): they stay as they are,
`permit_wait_ms` included. Everything after it follows Prometheus naming: base units, `_total` counters.
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

# --- Contract names: keep them exactly. ---
p33_permit_deny_total = Counter(
    "p33_permit_deny",
    "Plans the P3.3 position brain refused or never permitted.",
    ["reason"],
    registry=REGISTRY,
)
p33_permit_allow_total = Counter(
    "p33_permit_allow",
    "Plans the P3.3 position brain allowed.",
    registry=REGISTRY,
)
governor_block_total = Counter(
    "governor_block",
    "Plans the P3.2 risk governor blocked or never permitted.",
    ["reason"],
    registry=REGISTRY,
)
apply_executed_total = Counter(
    "apply_executed",
    "Plans handled, by outcome (the `status` of the result entry).",
    ["status"],
    registry=REGISTRY,
)
permit_wait_ms = Histogram(
    "permit_wait_ms",
    "Time a plan waited for its permits, in milliseconds (contract name).",
    buckets=(0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
    registry=REGISTRY,
)
position_mismatch_seconds = Gauge(
    "position_mismatch_seconds",
    "How long P3.3's view of a position has disagreed with the exchange's (0 when they agree).",
    ["symbol"],
    registry=REGISTRY,
)

# --- Added for operators. ---
apply_build_info = Gauge(
    "apply_build_info",
    "Always 1; the labels say which build runs and in which mode.",
    ["version", "mode"],
    registry=REGISTRY,
)
apply_testnet = Gauge(
    "apply_testnet",
    "1 when this process runs in testnet mode, 0 in production.",
    registry=REGISTRY,
)
apply_kill_switch_state = Gauge(
    "apply_kill_switch_state",
    "The global switch as last read: 1 for the current state, 0 for the others. "
    "`unknown` means Redis could not be read (treated as halted).",
    ["state"],
    registry=REGISTRY,
)
apply_kill_switch_last_change_timestamp_seconds = Gauge(
    "apply_kill_switch_last_change_timestamp_seconds",
    "When this process last saw the global switch change state (epoch seconds).",
    registry=REGISTRY,
)
apply_symbol_switches_engaged = Gauge(
    "apply_symbol_switches_engaged",
    "Per-symbol switches that are not `running` (halted, reduce_only or invalid).",
    registry=REGISTRY,
)
apply_dead_letters_total = Counter(
    "apply_dead_letters",
    "Plans sent to the dead-letter stream, by reason.",
    ["reason"],
    registry=REGISTRY,
)
apply_redis_up = Gauge(
    "apply_redis_up",
    "1 when the last Redis command succeeded, 0 after a failure.",
    registry=REGISTRY,
)
apply_redis_errors_total = Counter(
    "apply_redis_errors",
    "Redis commands that failed (connection or timeout).",
    registry=REGISTRY,
)
apply_exchange_up = Gauge(
    "apply_exchange_up",
    "1 when the last exchange request got an answer, 0 after a network failure.",
    registry=REGISTRY,
)
apply_exchange_order_socket_up = Gauge(
    "apply_exchange_order_socket_up",
    "1 while the websocket API connection for orders is open; 0 while closes go by REST (slower); NaN "
    "when closes always go by REST (an Ed25519 or RSA key).",
    registry=REGISTRY,
)
apply_exchange_errors_total = Counter(
    "apply_exchange_errors",
    "Exchange requests that failed, by kind: network, timeout, rejected, auth, rate_limit, other.",
    ["kind"],
    registry=REGISTRY,
)
apply_exchange_request_duration_seconds = Histogram(
    "apply_exchange_request_duration_seconds",
    "Duration of exchange requests, by endpoint.",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
apply_orders_sent_total = Counter(
    "apply_orders_sent",
    "Orders sent to the exchange, by order type.",
    ["type"],
    registry=REGISTRY,
)
apply_plan_duration_seconds = Histogram(
    "apply_plan_duration_seconds",
    "From reading a plan to recording its result.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
apply_permit_wait_seconds = Histogram(
    "apply_permit_wait_seconds",
    "Time a plan waited for its permits.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
apply_gate_seconds = Histogram(
    "apply_gate_seconds",
    "What the gate adds on this host: from the moment a plan could go (since=permit: the read of the "
    "permit notification that woke it for the claim that passed, or that claim's sending when a permit "
    "changed while it was in flight; since=plan: its permits already there, its handling begun) to its first "
    "order's bytes written to the exchange's connection; order=close or stop (a stop update's order "
    "waits for the cancel of the standing stop).",
    ["since", "order"],
    buckets=(0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
    registry=REGISTRY,
)
apply_last_execution_timestamp_seconds = Gauge(
    "apply_last_execution_timestamp_seconds",
    "When this process last sent an order (epoch seconds).",
    registry=REGISTRY,
)
apply_plan_stream_lag = Gauge(
    "apply_plan_stream_lag",
    "Plan stream entries not yet delivered to the consumer group.",
    registry=REGISTRY,
)
apply_plan_stream_pending = Gauge(
    "apply_plan_stream_pending",
    "Plans delivered to the consumer group but not yet acknowledged.",
    registry=REGISTRY,
)
apply_risk_block_total = Counter(
    "apply_risk_block",
    "Plans blocked by the apply layer's own risk gates: rate_global, rate_symbol, notional, stale.",
    ["gate"],
    registry=REGISTRY,
)
apply_auto_trip_total = Counter(
    "apply_auto_trip",
    "Times this process set the global switch itself, by condition: exchange_errors, position_mismatch, "
    "dead_letters.",
    ["condition"],
    registry=REGISTRY,
)
apply_emergency_close_total = Counter(
    "apply_emergency_close",
    "Emergency closes handled, by result status (executed, blocked, ...).",
    ["status"],
    registry=REGISTRY,
)
apply_poison_plans_total = Counter(
    "apply_poison_plans",
    "Entries dead-lettered after failing unexpectedly again and again (a bug or a library's surprise), "
    "by exception.",
    ["exception"],
    registry=REGISTRY,
)
apply_consumer_group_recreated_total = Counter(
    "apply_consumer_group_recreated",
    "Times the plan stream's consumer group was found gone (deleted, or Redis lost its data) and made again.",
    registry=REGISTRY,
)

# --- The exchange's limits, clock and refusals (issue 13). ---
apply_exchange_used_weight = Gauge(
    "apply_exchange_used_weight",
    "Request weight used in the exchange's current minute, as it last said (X-MBX-USED-WEIGHT-1M).",
    registry=REGISTRY,
)
apply_exchange_order_count = Gauge(
    "apply_exchange_order_count",
    "Orders counted by the exchange in its current window (X-MBX-ORDER-COUNT-10S / -1M), by interval.",
    ["interval"],
    registry=REGISTRY,
)
apply_exchange_throttled_total = Counter(
    "apply_exchange_throttled",
    "Answers refusing a request over the exchange's limits: status 429 (wait) or 418 (IP banned).",
    ["status"],
    registry=REGISTRY,
)
apply_exchange_ban_remaining_seconds = Gauge(
    "apply_exchange_ban_remaining_seconds",
    "Seconds until the exchange's IP ban (HTTP 418) ends; 0 when not banned. Nothing can be sent meanwhile.",
    registry=REGISTRY,
)
apply_exchange_held_back_total = Counter(
    "apply_exchange_held_back",
    "Requests the apply layer did not send to stay under a limit or to honour Retry-After, by limit.",
    ["limit"],
    registry=REGISTRY,
)
apply_exchange_clock_offset_seconds = Gauge(
    "apply_exchange_clock_offset_seconds",
    "The exchange's clock minus this host's, as last measured (GET /fapi/v1/time).",
    registry=REGISTRY,
)
apply_stop_loss_refused_total = Counter(
    "apply_stop_loss_refused",
    "Protective stops the exchange refused, by Binance error code: the position may stand unprotected.",
    ["code"],
    registry=REGISTRY,
)
apply_user_stream_up = Gauge(
    "apply_user_stream_up",
    "1 while the user data stream (positions pushed by the exchange) is connected, 0 otherwise.",
    registry=REGISTRY,
)
apply_user_stream_last_reconcile_timestamp_seconds = Gauge(
    "apply_user_stream_last_reconcile_timestamp_seconds",
    "When positionRisk last confirmed the positions the stream pushed, while it was connected (epoch s).",
    registry=REGISTRY,
)
apply_position_lookups_total = Counter(
    "apply_position_lookups",
    "Positions read by REST before a claim because the stream could not vouch for them, by reason: "
    "stream_down, not_reconciled, reconcile_old, awaiting_fill (our order never came back on the stream), "
    "unconfirmed_growth.",
    ["reason"],
    registry=REGISTRY,
)
apply_stream_position_mismatch_total = Counter(
    "apply_stream_position_mismatch",
    "Times positionRisk found a position other than the one the user data stream reported.",
    ["symbol"],
    registry=REGISTRY,
)
