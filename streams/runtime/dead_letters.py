"""DeadLetter records (schemas/DeadLetter.avsc), built in one place for every component."""

from __future__ import annotations

import time
from typing import Any

from streams.config import LimitSettings
from streams.runtime.limits import dead_letter_value

MAX_DETAIL_CHARS = 2000


def dead_letter(limits: LimitSettings, *, topic: str, partition: int, offset: int, key: bytes | None,
                value: bytes | None, reason: str, detail: str, component: str,
                failed_at: int | None = None) -> dict[str, Any]:
    """The DeadLetter record for one input record that could not be read or processed. The original
    bytes are cut to ``limits.dead_letter_value_bytes`` (the DLQ record must fit its topic too); the
    original stays in its topic at the offset named here."""
    cut_value, note = dead_letter_value(limits, value)
    cut_key, _ = dead_letter_value(limits, key)
    return {"original_value": cut_value, "original_key": cut_key, "topic": topic, "partition": partition,
            "offset": offset, "error": reason, "detail": detail[:MAX_DETAIL_CHARS] + note,
            "failed_at": int(time.time() * 1000) if failed_at is None else failed_at, "component": component}
