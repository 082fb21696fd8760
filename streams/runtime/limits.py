"""Limits on what one record may bring in and what the runtime may produce for it.

Pure rules, no Kafka: the worker applies them to every input record before the domain core sees it and
to every output before it is produced, so one oversized or malformed record can never make the
producer fail (a producer error would abort the transaction and stop the partition on every restart).

Input (``admit``): a record is dead-lettered, with the reason, when
- its encoded value is larger than ``limits.max_record_bytes`` (``too_large``);
- its ``customer_id`` is empty (``invalid_key``) or differs from the record key (``key_mismatch``):
  all input topics are keyed by customer, so such a record would land in another customer's partition;
- one of its identifiers (event, order, cart, shipment id) is longer than ``limits.max_id_chars``
  (``invalid``): an id cannot be shortened without making two different ids equal.

Free text that reaches state and emails is clamped, not rejected (``clamp``): names to
``limits.max_name_chars``, every other text field to ``limits.max_text_chars``, URLs longer than
``limits.max_url_chars`` are dropped (a cut URL is a broken link), and a record keeps at most
``limits.max_items`` line items. Clamped records are counted by the caller. An email address longer
than 254 characters (RFC 5321's limit) is dropped the same way: such an address cannot be mailed.

Output: commands and changelog values larger than ``limits.max_message_bytes`` (the topics'
``max.message.bytes``; Kafka's default is 1 MB) are never handed to the producer. One rule for both:
key + value + ``limits.record_overhead_bytes`` must fit. ``fits`` applies it to encoded bytes (the
changelog); ``command_oversize`` applies it to a command before it is encoded, by an upper bound (the
context, which is free text, counted exactly; every other field of a command within
``COMMAND_FIELDS_BYTES``), so every driver — live, file or test — refuses the same commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.config import LimitSettings

MAX_EMAIL_CHARS = 254
_ID_FIELDS = ("event_id", "order_id", "cart_id", "shipment_id", "command_id", "message_id")
_NAME_FIELDS = ("first_name", "name")
_URL_FIELDS = ("url", "image_url", "cart_url", "tracking_url", "link")
_KEYLESS = frozenset({"clock", "inventory"})  # keyed by partition / by SKU, not by customer
COMMAND_FIELDS_BYTES = 4096  # upper bound on a command's key and fields other than its context (ids ≤ max_id_chars)


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str


def admit(limits: LimitSettings, logical: str, key: bytes | None, size: int,
          record: dict[str, Any] | None) -> Refusal | None:
    """Why this input record must go to the DLQ instead of the domain, or ``None`` to process it.
    ``record`` is ``None`` when the size check runs before decoding."""
    if size > limits.max_record_bytes:
        return Refusal("too_large", f"record of {size} bytes is larger than limits.max_record_bytes "
                                    f"({limits.max_record_bytes})")
    if record is None or logical in _KEYLESS:
        return None
    cid = record.get("customer_id")
    if not isinstance(cid, str) or not cid.strip():
        return Refusal("invalid_key", "customer_id is empty")
    if len(cid) > limits.max_id_chars:
        return Refusal("invalid", f"customer_id of {len(cid)} characters is longer than "
                                  f"limits.max_id_chars ({limits.max_id_chars})")
    if key is not None and key != cid.encode():
        shown = key[:80].decode(errors="replace")
        return Refusal("key_mismatch", f"record key {shown!r} differs from customer_id {cid[:80]!r}")
    max_id = limits.max_id_chars
    get = record.get  # every record passes here: the loop is kept to a lookup and a length
    for name in _ID_FIELDS:
        value = get(name)
        if type(value) is str and len(value) > max_id:
            return Refusal("invalid", f"{name} of {len(value)} characters is longer than "
                                      f"limits.max_id_chars ({max_id})")
    return None


def clamp(limits: LimitSettings, record: dict[str, Any]) -> bool:
    """Clamp free text in place (see the module docstring); returns whether anything changed."""
    if not _needs_clamp(limits, record):  # the hot path: nothing near a limit
        return False
    changed = _clamp_fields(limits, record)
    items = record.get("items")
    if isinstance(items, list):
        if len(items) > limits.max_items:
            del items[limits.max_items:]
            changed = True
        for item in items:
            if isinstance(item, dict) and _clamp_fields(limits, item):
                changed = True
    return changed


def _needs_clamp(limits: LimitSettings, record: dict[str, Any]) -> bool:
    """Whether any text is longer than the smallest cap, or there are too many items (cheap)."""
    cap = min(limits.max_name_chars, limits.max_text_chars)
    for value in record.values():
        if type(value) is str and len(value) > cap:
            return True
    items = record.get("items")
    if items:
        if len(items) > limits.max_items:
            return True
        for item in items:
            for value in item.values():
                if type(value) is str and len(value) > cap:
                    return True
    return False


def _clamp_fields(limits: LimitSettings, record: dict[str, Any]) -> bool:
    changed = False
    for name, value in record.items():
        if not isinstance(value, str) or name in _ID_FIELDS or name == "customer_id":
            continue
        if name in _URL_FIELDS:
            if len(value) > limits.max_url_chars:
                record[name] = None
                changed = True
        elif name == "email":
            if len(value) > MAX_EMAIL_CHARS:
                record[name] = None
                changed = True
        else:
            cap = limits.max_name_chars if name in _NAME_FIELDS else limits.max_text_chars
            if len(value) > cap:
                record[name] = value[:cap]
                changed = True
    return changed


def fits(limits: LimitSettings, key: bytes | None, value: bytes | None) -> bool:
    """Whether a record with this key and value stays under the topic's max.message.bytes (with room
    for the record and batch headers)."""
    size = (len(key) if key else 0) + (len(value) if value else 0)
    return size + limits.record_overhead_bytes <= limits.max_message_bytes


def command_oversize(limits: LimitSettings, cmd: dict[str, Any]) -> int:
    """0 when the encoded command is sure to ``fit``; else about how many bytes it would be (key and
    value). The context is the only field without a bound of its own: a context that fits even at
    4 UTF-8 bytes a character is not encoded at all (the hot path)."""
    room = limits.max_message_bytes - limits.record_overhead_bytes
    context = cmd["context"]
    if len(context) * 4 + COMMAND_FIELDS_BYTES <= room:
        return 0
    size = len(context.encode()) + COMMAND_FIELDS_BYTES
    return size if size > room else 0


def dead_letter_value(limits: LimitSettings, value: bytes | None) -> tuple[bytes | None, str]:
    """The original bytes as a dead letter can carry them: cut to ``limits.dead_letter_value_bytes``
    (the DLQ record must fit its topic too), with a note for the detail when cut. The original stays
    in its topic at the offset the dead letter names."""
    if value is None or len(value) <= limits.dead_letter_value_bytes:
        return value, ""
    return value[:limits.dead_letter_value_bytes], (f" [original_value cut to the first "
                                                    f"{limits.dead_letter_value_bytes} of {len(value)} bytes]")
