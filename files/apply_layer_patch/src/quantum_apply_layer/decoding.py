"""Redis replies as text: what redis-py hands back without `decode_responses` is bytes.

Names Redis made (entry ids, streams, groups) are ASCII; text others wrote (a switch's reason, a
result's fields) may hold anything, so undecodable bytes are shown escaped, never raised on.
Plan entries are not decoded here: entry.py checks their bytes strictly, to dead-letter them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def text(value: object) -> str:
    """One reply item as text: bytes decoded (bad bytes escaped), anything else as str() gives it."""
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


def optional_text(value: object) -> str | None:
    """As text(), keeping None (a key that does not exist) apart from an empty value."""
    return None if value is None else text(value)


def text_fields(fields: Mapping[Any, object]) -> dict[str, str]:
    """A stream entry's or a hash's fields as text."""
    return {text(key): text(value) for key, value in fields.items()}
