"""Errors the sink raises for a single email; each names what is wrong so the caller can classify it."""

from __future__ import annotations


class SinkError(ValueError):
    """Base of the sink's per-email errors (the email cannot be built; sending it again will not help)."""


class InvalidAddress(SinkError):
    """A recipient or sender address that must not reach a header: CR/LF/NUL, not exactly one
    ``local@domain`` addr-spec, or a domain that cannot receive mail. ``role`` is ``to`` or ``from``."""

    def __init__(self, role: str, address: str, why: str) -> None:
        super().__init__(f"invalid {role} address {address!r}: {why}")
        self.role = role
        self.address = address
        self.why = why
