"""The one place where the sink classifies an error raised while handling one command.

Every exception from decoding, validating, rendering (jinja2, babel), building MIME or encoding a
single command ends here and becomes a ``RecordError``: ``retryable`` (transient: I/O, timeouts — the
sink retries the command a few times, then fails it) or ``permanent`` (the same input fails the same
way: a ``failed`` outcome with the reason and a dead letter). No per-command error escapes the sink's
loop, so one bad command can never stop it or make it crash-loop on the same offset. SES call
errors have their own classification (``sinks.ses_sender.classify``): throttling and 5xx are retried
there, a pause stops sending, anything else is a permanent rejection of that one message.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.serde import SerdeError
from sinks.errors import InvalidAddress, SinkError
from sinks.rendering import RenderError

REASON_MAX_CHARS = 1000  # reasons go into outcomes, ledger entries and dead letters: keep them small


@dataclass(frozen=True)
class RecordError:
    kind: str  # retryable | permanent
    code: str  # stable, for the DLQ ``error`` field and the metric label
    detail: str

    @property
    def reason(self) -> str:
        return truncate(f"{self.code}: {self.detail}")


def truncate(text: str, limit: int = REASON_MAX_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def classify(exc: BaseException, stage: str) -> RecordError:
    """``stage`` names what was being done (decode, validate, render, mime) for errors of no known kind."""
    if isinstance(exc, RenderError):
        return RecordError("permanent", exc.reason, exc.detail)
    if isinstance(exc, SerdeError):
        return RecordError("permanent", exc.reason, exc.detail)
    if isinstance(exc, InvalidAddress):  # CR/LF, not one addr-spec: never reaches a header
        return RecordError("permanent", "invalid_address", str(exc))
    if isinstance(exc, SinkError):
        return RecordError("permanent", f"{stage}_invalid", str(exc))
    detail = f"{type(exc).__name__}: {exc}"
    if type(exc).__name__ == "UnknownLocaleError":  # babel: an unknown/invalid locale in the command
        return RecordError("permanent", "locale_unknown", detail)
    if isinstance(exc, (OSError, TimeoutError)):  # a template file read, a socket: may work next time
        return RecordError("retryable", f"{stage}_io_error", detail)
    return RecordError("permanent", f"{stage}_failed", detail)
