"""The Redis names of CONTRACT.md, in one place. Other systems use them: never rename."""

PLAN_STREAM = "quantum:stream:apply.plan"
RESULT_STREAM = "quantum:stream:apply.result"
DLQ_STREAM = "quantum:stream:apply.dlq"
AUDIT_STREAM = "quantum:stream:kill_switch.audit"
GLOBAL_SWITCH = "quantum:global:kill_switch"
GLOBAL_SWITCH_REASON = "quantum:global:kill_switch:reason"
SYMBOL_SWITCH_PREFIX = "quantum:kill_switch:symbol:"
PERMIT_PREFIX = "quantum:permit:"
P33_PERMIT_PREFIX = "quantum:permit:p33:"
INSTANCE_PREFIX = "quantum:apply:instance:"
FAILURES = "quantum:apply:failures"  # unexpected failures per entry id, to find poison pills
# Not in the contract, so named to stay out of the contract's key patterns (`...:symbol:*`).
SYMBOL_SWITCH_REASON_PREFIX = "quantum:kill_switch:symbol_reason:"


def governor_permit(plan_id: str) -> str:
    return f"{PERMIT_PREFIX}{plan_id}"


def p33_permit(plan_id: str) -> str:
    return f"{P33_PERMIT_PREFIX}{plan_id}"


def dedupe_mark(plan_id: str) -> str:
    return f"quantum:apply:dedupe:{plan_id}"


def entry_mark(entry_id: str) -> str:
    """An entry handled without a plan id of its own (a dead letter, a duplicate): remembered by entry."""
    return f"quantum:apply:entry:{entry_id}"


def instance(consumer_name: str) -> str:
    """A running service's heartbeat: its mode, version and health, for `status`; expires when it dies."""
    return f"{INSTANCE_PREFIX}{consumer_name}"


def rate_counter(scope: str) -> str:
    """Orders in the current one-second window: `global`, or a symbol."""
    return f"quantum:apply:rate:{scope}"


def emergency_token(plan_id: str) -> str:
    """Written by `quantum-apply-layer emergency-close`, consumed by the claim: one close, once."""
    return f"quantum:apply:emergency:{plan_id}"


def notification_probe(token: str) -> str:
    """Written once at start to see Redis publish its keyspace event (`permits.check_notifications`)."""
    return f"quantum:apply:notify-probe:{token}"


def symbol_switch(symbol: str) -> str:
    return f"{SYMBOL_SWITCH_PREFIX}{symbol}"


def symbol_switch_reason(symbol: str) -> str:
    return f"{SYMBOL_SWITCH_REASON_PREFIX}{symbol}"
