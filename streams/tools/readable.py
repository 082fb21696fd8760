"""What the data-team commands (`simulate`, `replay`, `report`, `export`) print for people: times as
ISO-8601 with their offset (UTC, or the customer's zone where one applies), durations as ``+1 h``,
summaries as rich tables (or JSON), and progress bars with an ETA on stderr that stay silent when
stderr is not a terminal or the command runs with ``--quiet``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

from streams.core.timetext import MINUS, UNITS, duration, iso  # one implementation, shared with the core

__all__ = ["MINUS", "UNITS", "Bar", "change_text", "console_for", "duration", "flow_summary", "flow_table",
           "is_duration_field", "is_time_field", "iso", "object_changes", "progress", "progress_enabled",
           "readable_record", "stderr_console", "table", "value_text"]


def is_time_field(name: str) -> bool:
    """Event and send times in shopmail's schemas are epoch milliseconds named ``*_at``."""
    return name.endswith("_at") or name == "at"


def is_duration_field(name: str) -> bool:
    return name.endswith("_ms")


def value_text(name: str, value: Any, zone: str | None = None, width: int = 40) -> str:
    """One field's value as a person reads it: times as ISO-8601, durations as ``1 h``, the rest
    shortened to ``width`` characters."""
    if isinstance(value, int) and not isinstance(value, bool):
        if is_time_field(name):
            return iso(value, zone)
        if is_duration_field(name):
            return duration(value, signed=False)
    text = "∅" if value is None else str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


_ABSENT = object()


def _json_object(value: Any) -> dict[str, Any] | None:
    """``value`` as a JSON object: a dict, or a string holding one (the commands' ``context``); else None."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def _member_text(key: str, value: Any, zone: str | None) -> str:
    if value is _ABSENT:
        return "(absent)"
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return value_text(key, value, zone)


def _from_first_difference(old: str, new: str, before: int = 12) -> tuple[str, str]:
    """Two long strings cut to start a little before where they first differ (``…cart/aab``), so the
    shortened forms still show the difference."""
    same = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
    start = max(0, same - before)
    return (old, new) if start == 0 else ("…" + old[start:], "…" + new[start:])


def object_changes(old: Any, new: Any, zone: str | None = None, path: str = "") -> list[str]:
    """The members that differ between two JSON values, by dotted path (``cart.items[0].price: 9.00 →
    12.00``; ``(absent)`` for a member only one side has); nested objects and lists of the same length
    are compared member by member."""
    if isinstance(old, dict) and isinstance(new, dict):
        pairs = [(f"{path}{k}", old.get(k, _ABSENT), new.get(k, _ABSENT)) for k in sorted(set(old) | set(new))]
        sep = "."
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        pairs = [(f"{path.rstrip('.')}[{i}]", a, b) for i, (a, b) in enumerate(zip(old, new))]
        sep = "."
    else:
        key = path.rstrip(".").rsplit(".", 1)[-1]
        if isinstance(old, str) and isinstance(new, str) and max(len(old), len(new)) > 40:
            old, new = _from_first_difference(old, new)
        return [f"{path.rstrip('.')}: {_member_text(key, old, zone)} → {_member_text(key, new, zone)}"]
    out: list[str] = []
    for where, a, b in pairs:
        if a != b:
            out += object_changes(a, b, zone, where + sep) if a is not _ABSENT and b is not _ABSENT else \
                [f"{where}: {_member_text(where.rsplit('.', 1)[-1], a, zone)} → "
                 f"{_member_text(where.rsplit('.', 1)[-1], b, zone)}"]
    return out


def change_text(name: str, old: Any, new: Any, zone: str | None = None) -> str:
    """``send_at: 2026-01-14T13:15:30+00:00 → 2026-01-14T14:15:30+00:00 (+1 h)``; a JSON object (the
    commands' ``context``) ``name: key: old → new; other.key: (absent) → new`` for each member that
    differs; other fields ``name: old → new``."""
    old_obj, new_obj = _json_object(old), _json_object(new)
    if old_obj is not None and new_obj is not None and old_obj != new_obj:
        return f"{name}: " + "; ".join(object_changes(old_obj, new_obj, zone))
    text = f"{name}: {value_text(name, old, zone)} → {value_text(name, new, zone)}"
    numbers = all(isinstance(v, int) and not isinstance(v, bool) for v in (old, new))
    if numbers and (is_time_field(name) or is_duration_field(name)):
        text += f" ({duration(new - old)})"
    return text


def readable_record(record: Mapping[str, Any], zone: str | None = None) -> dict[str, Any]:
    """A copy of ``record`` with its ``*_at`` times as ISO-8601 strings (for JSON meant for people;
    the epoch value stays under ``<name>_ms``)."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        if is_time_field(k) and isinstance(v, int) and not isinstance(v, bool):
            out[k] = iso(v, zone)
            out[f"{k}_ms"] = v
        else:
            out[k] = v
    return out


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], numeric_from: int = 1,
          numeric_to: int | None = None) -> Table:
    """A plain rich table: columns ``numeric_from`` up to ``numeric_to`` (exclusive; default: the last)
    right-aligned, the others left-aligned; numbers with thousands separators."""
    t = Table(title=title, title_justify="left", title_style="bold", header_style="bold", box=box.SIMPLE_HEAD,
              pad_edge=False, min_width=len(title))  # a narrow table does not wrap its title
    end = len(columns) if numeric_to is None else numeric_to
    for i, name in enumerate(columns):
        t.add_column(name, justify="right" if numeric_from <= i < end else "left", overflow="fold")
    for row in rows:
        t.add_row(*(f"{c:,}" if isinstance(c, int) and not isinstance(c, bool) else str(c) for c in row))
    return t


def flow_summary(counters: Mapping[str, int]) -> list[dict[str, Any]]:
    """Engine counters (``command:<flow>``, ``holdout:<flow>``, ``dropped:<flow>:<reason>``) → one
    dict per flow: commands, holdouts, dropped steps in all and by reason."""
    flows: dict[str, dict[str, Any]] = {}

    def row(flow: str) -> dict[str, Any]:
        return flows.setdefault(flow, {"flow": flow, "commands": 0, "holdouts": 0, "dropped": 0,
                                       "dropped_by_reason": {}})

    for key, n in counters.items():
        kind, _, rest = key.partition(":")
        if kind == "command":
            row(rest)["commands"] += n
        elif kind == "holdout":
            row(rest)["holdouts"] += n
        elif kind == "dropped":
            flow, _, reason = rest.partition(":")
            r = row(flow)
            r["dropped"] += n
            r["dropped_by_reason"][reason or "unknown"] = r["dropped_by_reason"].get(reason or "unknown", 0) + n
    return [flows[f] for f in sorted(flows)]


def flow_table(title: str, counters: Mapping[str, int]) -> Table:
    """The per-flow summary as a table (dropped steps with their reasons)."""
    rows = []
    for r in flow_summary(counters):
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(r["dropped_by_reason"].items()))
        rows.append((r["flow"], r["commands"], r["holdouts"], r["dropped"], reasons or "–"))
    return table(title, ("flow", "commands", "holdouts", "dropped", "dropped by reason"), rows, numeric_from=1,
                 numeric_to=4)


PIPE_WIDTH = 240  # piped or in CI: wide enough that tables never split an ISO time or an id mid-value


def console_for(stderr: bool = False, **options: Any) -> Console:
    """A console for results: on a terminal as wide as the terminal; piped (a file, CI) ``PIPE_WIDTH``
    columns unless ``COLUMNS`` says otherwise (rich's 80 would fold ``2026-01-14T13:15:30+00:00`` or
    ``expired_by_frequency_cap`` inside a table cell)."""
    stream = sys.stderr if stderr else sys.stdout
    piped = not getattr(stream, "isatty", lambda: False)()
    width = PIPE_WIDTH if piped and not os.environ.get("COLUMNS") else None
    return Console(stderr=stderr, width=width, **options)


def stderr_console(quiet: bool = False) -> Console:
    """Where summaries and progress go when stdout may carry data (commands JSONL)."""
    return console_for(stderr=True, soft_wrap=True, quiet=quiet)


class Bar:
    """One progress bar's handle; a disabled bar takes updates and shows nothing."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    @property
    def shown(self) -> bool:
        """Whether anyone sees it (callers skip the work of feeding a hidden bar)."""
        return not self._progress.disable

    def total(self, total: float | None) -> None:
        self._progress.update(self._task, total=total)

    def advance(self, n: float = 1) -> None:
        self._progress.update(self._task, advance=n)

    def to(self, completed: float, description: str | None = None) -> None:
        if description is None:
            self._progress.update(self._task, completed=completed)
        else:
            self._progress.update(self._task, completed=completed, description=description)


def progress_enabled(quiet: bool = False, stream: Any = None) -> bool:
    """Bars only for a person watching: stderr is a terminal and ``--quiet`` was not given."""
    stream = sys.stderr if stream is None else stream
    return not quiet and bool(getattr(stream, "isatty", lambda: False)())


@contextmanager
def progress(description: str, total: float | None = None, quiet: bool = False, unit: str = "") -> Iterator[Bar]:
    """A bar with the count, the elapsed time and an ETA on stderr, for work longer than a few seconds."""
    columns = [TextColumn("[progress.description]{task.description}"), BarColumn(),
               MofNCompleteColumn() if not unit else TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=True,
                  disable=not progress_enabled(quiet)) as bars:
        yield Bar(bars, bars.add_task(description, total=total))
