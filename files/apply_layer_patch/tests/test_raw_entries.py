"""Whatever bytes an upstream bug writes into the plan stream, the running service gives each entry
exactly one result, stays alive, and sends no order for an entry that is not a valid plan.

Hypothesis generates raw entries (arbitrary bytes in arbitrary fields, huge and deeply nested values,
missing fields, valid plans with one field broken) and they go through `quantum-apply-layer run` in
its own process, as upstream's entries do in production: not only through the validator.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plans import permits, plan_fields
from redis import Redis as SyncRedis
from redis_server import RedisServer
from service_process import ServiceProcess

from quantum_apply_layer import keys
from quantum_apply_layer.emulator import ExchangeEmulator
from quantum_apply_layer.entry import decode_entry
from quantum_apply_layer.exchange import client_order_id
from quantum_apply_layer.plan import PlanError, parse_plan

ENTRIES_PER_BATCH = 50
BATCHES = 40  # 2,000 entries a run
PLAN_FIELDS = [b"plan_id", b"symbol", b"action", b"decision", b"steps", b"reason_codes", b"kill_score"]
PLAN_FIELDS += [b"close_qty", b"price", b"timestamp", b"emergency", b"emergency_side"]

nested = st.integers(1, 20_000).flatmap(
    lambda depth: st.sampled_from([b"[" * depth + b"]" * depth, b'[{"a":' * depth, b"{" * depth])
)
raw_values = st.one_of(
    st.binary(max_size=48),
    st.text(max_size=48).map(str.encode),
    st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"1e308", b"NaN", b"-0", b"4102444800"]),
    st.integers(16_000, 300_000).map(lambda size: b"x" * size),
    nested,
)
field_names = st.one_of(st.sampled_from(PLAN_FIELDS), st.binary(min_size=1, max_size=40))
arbitrary_entries = st.dictionaries(field_names, raw_values, min_size=1, max_size=14)


@st.composite
def broken_plans(draw: st.DrawFn) -> dict[bytes, bytes]:
    """A valid plan with one field replaced, removed, or added."""
    plan_id = f"fz-{draw(st.integers(0, 10**12))}"
    fields = {key.encode(): value.encode() for key, value in plan_fields(plan_id).items()}
    name = draw(st.sampled_from([*PLAN_FIELDS, b"extra"]))
    if draw(st.booleans()):
        fields.pop(name, None)
    else:
        fields[name] = draw(raw_values)
    return fields


@st.composite
def valid_plans(draw: st.DrawFn) -> dict[bytes, bytes]:
    plan_id = f"ok-{draw(st.integers(0, 10**12))}"
    return {key.encode(): value.encode() for key, value in plan_fields(plan_id).items()}


entries = st.one_of(arbitrary_entries, broken_plans(), valid_plans())


def understood(fields: dict[bytes, bytes]) -> bool:
    try:
        parse_plan(decode_entry(fields))
    except PlanError:
        return False
    return True


@pytest.fixture
def service(
    redis_server: RedisServer, emulator: ExchangeEmulator, tmp_path: Path
) -> Iterator[ServiceProcess]:
    SyncRedis.from_url(redis_server.url).flushall()
    emulator.set_positions({"BTCUSDT": 1000})
    process = ServiceProcess(redis_server.url, emulator.base_url, tmp_path / "service.log")
    process.start()
    yield process
    if process.alive:
        process.kill()


def test_every_raw_entry_gets_exactly_one_result_and_the_service_lives(
    redis_server: RedisServer, emulator: ExchangeEmulator, service: ServiceProcess
) -> None:
    client = SyncRedis.from_url(redis_server.url)
    written: dict[str, dict[bytes, bytes]] = {}

    # One service for every batch, on purpose: the invariant is about a service that keeps running.
    @settings(
        max_examples=BATCHES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.lists(entries, min_size=ENTRIES_PER_BATCH, max_size=ENTRIES_PER_BATCH))
    def feed(batch: list[dict[bytes, bytes]]) -> None:
        with client.pipeline(transaction=False) as pipe:
            for fields in batch:
                plan_id = fields.get(b"plan_id", b"").decode(errors="replace")
                for key, value in permits(plan_id, position=1000).items():
                    pipe.set(key, value, ex=300)
            for fields in batch:
                pipe.xadd(keys.PLAN_STREAM, fields)
            ids = pipe.execute()[-len(batch) :]
        written.update({entry_id.decode(): fields for entry_id, fields in zip(ids, batch, strict=True)})
        deadline = time.monotonic() + 60
        while client.xlen(keys.RESULT_STREAM) < len(written):
            assert time.monotonic() < deadline, f"{client.xlen(keys.RESULT_STREAM)} of {len(written)} results"
            assert service.alive, service.log_path.read_text()[-3000:]
            time.sleep(0.02)

    feed()
    time.sleep(1.0)  # a second result, were there one, would have come by now
    assert service.alive
    results = [fields for _id, fields in client.xrange(keys.RESULT_STREAM)]
    per_entry = collections.Counter(fields[b"entry_id"].decode() for fields in results)
    assert len(written) >= BATCHES * ENTRIES_PER_BATCH
    assert set(per_entry) == set(written)
    assert set(per_entry.values()) == {1}, [entry for entry, count in per_entry.items() if count > 1]

    by_entry = {fields[b"entry_id"].decode(): fields for fields in results}
    for entry_id, fields in written.items():
        status = by_entry[entry_id][b"status"].decode()
        assert (status == "dead_letter") == (not understood(fields)), (fields, by_entry[entry_id])
    dead_letters = client.xrange(keys.DLQ_STREAM)
    assert len(dead_letters) == sum(not understood(fields) for fields in written.values())
    for _id, letter in dead_letters:  # the raw bytes are kept, with the reason beside them
        assert letter[b"dlq_reason"]

    valid_order_ids = {
        client_order_id(parse_plan(decode_entry(fields)).plan_id, 0)
        for fields in written.values()
        if understood(fields)
    }
    ordered = {str(order.client_order_id) for order in emulator.orders()}
    assert ordered <= valid_order_ids, (
        f"orders for entries that are not valid plans: {ordered - valid_order_ids}"
    )
    assert ordered, "no valid plan was executed: the test would not see a wrong order either"
    assert "Traceback" not in service.log_path.read_text()  # no entry failed unexpectedly
