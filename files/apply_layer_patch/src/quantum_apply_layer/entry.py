"""A plan stream entry as Redis hands it over: raw bytes, checked and decoded before anything parses it.

Upstream bugs send anything: bytes that are not UTF-8, megabytes in one field, thousands of fields.
Each is a `PlanError` with its dead-letter reason, raised inside the per-plan guard, so one bad entry
is dead-lettered (with its raw bytes kept) and never stops the consumer.
"""

from __future__ import annotations

from collections.abc import Mapping

from .plan import PlanError

RawFields = Mapping[bytes, bytes]
MAX_FIELDS = 64
MAX_FIELD_NAME_BYTES = 128
MAX_FIELD_VALUE_BYTES = 16_384


def decode_entry(raw: RawFields) -> dict[str, str]:
    """The entry's fields as text, or the PlanError that dead-letters it."""
    if len(raw) > MAX_FIELDS:
        raise PlanError("too_many_fields", f"{len(raw)} fields, at most {MAX_FIELDS}")
    fields: dict[str, str] = {}
    for raw_name, raw_value in raw.items():
        name = _decode(raw_name, "a field name")
        if len(raw_name) > MAX_FIELD_NAME_BYTES:
            raise PlanError(
                "field_too_large", f"field name {name[:40]!r}... over {MAX_FIELD_NAME_BYTES} bytes"
            )
        if len(raw_value) > MAX_FIELD_VALUE_BYTES:
            raise PlanError(
                "field_too_large",
                f"field {name!r} is {len(raw_value)} bytes, at most {MAX_FIELD_VALUE_BYTES}",
            )
        fields[name] = _decode(raw_value, f"field {name!r}")
    return fields


def printable_name(raw: bytes | None) -> str:
    """A field's bytes for a result or a log line: never fails, undecodable bytes shown escaped."""
    if raw is None:
        return ""
    return raw[:MAX_FIELD_NAME_BYTES].decode("utf-8", errors="backslashreplace")


def _decode(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PlanError(
            "not_utf8", f"{what} is not UTF-8 (byte {error.object[error.start]:#04x} at {error.start})"
        ) from None
