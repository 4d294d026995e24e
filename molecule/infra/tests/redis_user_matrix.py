"""What each Redis user of the redis role may do (True) and must not (False), one command at a time.

Read by test_redis_users.py, which asks Redis itself (ACL DRYRUN, as the admin) about each line.
Users are named by the role's variable prefix (redis_<name>_user), so a renamed user is still found.
"""

SWITCH = "quantum:global:kill_switch"
AUDIT = "quantum:stream:kill_switch.audit"
PLANS = "quantum:stream:apply.plan"
PERMIT = "quantum:permit:plan-1"
P33 = "quantum:permit:p33:plan-1"
# A governor permit whose plan id merely starts like "p33": still the governor's.
PERMIT_LIKE_P33 = "quantum:permit:p33x"

MATRIX: list[tuple[str, tuple[str, ...], bool]] = [
    # The apply layer: consumes plans and permits, records results, never forges or erases.
    ("apply_layer", ("XREADGROUP", "GROUP", "apply-layer", "c", "STREAMS", PLANS, ">"), True),
    ("apply_layer", ("XACK", PLANS, "apply-layer", "1-1"), True),
    ("apply_layer", ("XAUTOCLAIM", PLANS, "apply-layer", "c", "1000", "0"), True),
    ("apply_layer", ("XGROUP", "CREATE", PLANS, "apply-layer", "0", "MKSTREAM"), True),
    ("apply_layer", ("GET", PERMIT), True),
    ("apply_layer", ("DEL", PERMIT, P33), True),
    ("apply_layer", ("SET", "quantum:apply:dedupe:plan-1", "{}", "EX", "60"), True),
    ("apply_layer", ("INCRBY", "quantum:apply:rate:global", "1"), True),
    ("apply_layer", ("HSET", "quantum:apply:instance:apply-1", "mode", "production"), True),
    ("apply_layer", ("HINCRBY", "quantum:apply:failures", "1-1", "1"), True),
    ("apply_layer", ("EXPIRE", "quantum:apply:instance:apply-1", "10"), True),
    ("apply_layer", ("XADD", "quantum:stream:apply.result", "*", "status", "executed"), True),
    ("apply_layer", ("XADD", AUDIT, "*", "new", "true"), True),
    ("apply_layer", ("SET", SWITCH, "true"), True),
    ("apply_layer", ("EVALSHA", "0" * 40, "2", SWITCH, PERMIT), True),
    ("apply_layer", ("PSUBSCRIBE", "__keyspace@0__:quantum:permit:*"), True),
    ("apply_layer", ("SET", PERMIT, '{"granted": true}'), False),
    ("apply_layer", ("SET", P33, '{"allow": true}'), False),
    ("apply_layer", ("XADD", PLANS, "*", "plan_id", "forged"), False),
    ("apply_layer", ("XTRIM", AUDIT, "MAXLEN", "0"), False),
    ("apply_layer", ("XDEL", AUDIT, "1-1"), False),
    ("apply_layer", ("DEL", AUDIT), False),
    ("apply_layer", ("FUNCTION", "LOAD", "#!lua name=x\nreturn 1"), False),
    ("apply_layer", ("FUNCTION", "DELETE", "x"), False),
    ("apply_layer", ("CONFIG", "GET", "*"), False),
    ("apply_layer", ("CONFIG", "SET", "appendonly", "no"), False),
    ("apply_layer", ("FLUSHALL",), False),
    ("apply_layer", ("KEYS", "*"), False),
    ("apply_layer", ("CLIENT", "KILL", "TYPE", "normal"), False),
    ("apply_layer", ("SET", "elsewhere:probe", "1"), False),
    # The planner: appends plans, nothing else.
    ("planner", ("XADD", PLANS, "*", "plan_id", "plan-1"), True),
    ("planner", ("XREVRANGE", PLANS, "+", "-", "COUNT", "1"), True),
    ("planner", ("XTRIM", PLANS, "MAXLEN", "0"), False),
    ("planner", ("SET", PERMIT, "{}"), False),
    ("planner", ("SET", SWITCH, "false"), False),
    ("planner", ("XADD", "quantum:stream:apply.result", "*", "status", "executed"), False),
    # The risk governor (P3.2): its permits only.
    ("risk_governor", ("SET", PERMIT, '{"granted": true}', "EX", "60"), True),
    ("risk_governor", ("SET", PERMIT_LIKE_P33, '{"granted": true}', "EX", "60"), True),
    ("risk_governor", ("DEL", PERMIT), True),
    ("risk_governor", ("SET", P33, '{"allow": true}'), False),
    ("risk_governor", ("XADD", PLANS, "*", "plan_id", "plan-1"), False),
    ("risk_governor", ("SET", SWITCH, "false"), False),
    # The position brain (P3.3): its permits only.
    ("position_brain", ("SET", P33, '{"allow": true}', "EX", "60"), True),
    ("position_brain", ("SET", PERMIT, '{"granted": true}'), False),
    ("position_brain", ("XADD", PLANS, "*", "plan_id", "plan-1"), False),
    ("position_brain", ("SET", SWITCH, "false"), False),
    # Operators: the switches, the audit trail and an emergency close; never erase the audit trail.
    ("operator", ("SET", SWITCH, "true"), True),
    ("operator", ("SET", "quantum:kill_switch:symbol:ETHUSDT", "true"), True),
    ("operator", ("XADD", AUDIT, "*", "new", "true"), True),
    ("operator", ("EVALSHA", "0" * 40, "3", SWITCH, f"{SWITCH}:reason", AUDIT), True),
    ("operator", ("SET", "quantum:apply:emergency:plan-1", "{}", "EX", "60"), True),
    ("operator", ("XRANGE", "quantum:stream:apply.result", "-", "+", "COUNT", "1"), True),
    ("operator", ("XTRIM", AUDIT, "MAXLEN", "0"), False),
    ("operator", ("DEL", AUDIT), False),
    ("operator", ("SET", PERMIT, "{}"), False),
    ("operator", ("SET", "quantum:apply:dedupe:plan-1", "{}"), False),
    ("operator", ("CONFIG", "GET", "*"), False),
    # The exporter: server state, no keys, no settings.
    ("exporter", ("INFO", "server"), True),
    ("exporter", ("GET", PERMIT), False),
    ("exporter", ("CONFIG", "GET", "*"), False),
    ("exporter", ("CLIENT", "LIST"), False),
    ("exporter", ("CLIENT", "PAUSE", "1000"), False),
]
