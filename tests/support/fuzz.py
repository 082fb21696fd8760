"""Property-based fuzzing of a running HTTP service from its own OpenAPI description (schemathesis
generates the requests, valid and invalid, from ``/openapi.json``; hypothesis drives them). Every
request goes over a real socket; a 5xx, a request that gets no answer within the timeout, or a
connection the service drops are each recorded with the request that caused them."""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import requests
import schemathesis
from schemathesis import Case, GenerationMode

Signer = Callable[[Case, bytes], dict[str, str]]  # a case and its body → headers that authenticate it


@dataclass
class FuzzReport:
    requests: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    server_errors: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    not_sendable: int = 0  # generated requests the HTTP client itself refuses to send (e.g. a newline in a header)

    def problems(self) -> list[str]:
        return self.server_errors + self.hangs + self.dropped

    def __str__(self) -> str:
        return (f"{self.requests} requests ({self.not_sendable} more not sendable), statuses {dict(sorted(self.statuses.items()))}, "
                f"{len(self.server_errors)} server errors, {len(self.hangs)} hangs, {len(self.dropped)} dropped")


def fuzz(base_url: str, examples_per_operation: int, timeout_s: float = 10.0,
         signers: dict[str, Signer] | None = None, path_parameters: dict[str, dict[str, Any]] | None = None,
         query: dict[str, dict[str, Any]] | None = None) -> FuzzReport:
    """Fuzz every operation of the service at ``base_url`` with valid and invalid requests.

    ``signers`` (by path template) add authentication headers over the exact body sent, so generated
    bodies also reach the code behind a signature check; ``path_parameters`` / ``query`` (by path
    template) pin some values for an extra run, e.g. a provider that has a secret, a signed link."""
    spec = requests.get(base_url + "/openapi.json", timeout=timeout_s).json()
    schema = schemathesis.openapi.from_dict(spec)
    report = FuzzReport()
    session = requests.Session()
    for result in schema.get_all_operations():
        operation = result.ok()
        path = operation.path
        runs: list[tuple[GenerationMode, dict[str, Any]]] = [(GenerationMode.POSITIVE, {}),
                                                             (GenerationMode.NEGATIVE, {})]
        pinned = {k: v for k, v in (("path_parameters", (path_parameters or {}).get(path)),
                                    ("query", (query or {}).get(path))) if v}
        if pinned:
            runs += [(GenerationMode.POSITIVE, pinned), (GenerationMode.NEGATIVE, pinned)]
        for mode, fixed in runs:
            strategy = operation.as_strategy(generation_mode=mode, **fixed)

            @hypothesis.settings(max_examples=examples_per_operation, deadline=None, database=None,
                                 derandomize=True, suppress_health_check=list(hypothesis.HealthCheck),
                                 phases=[hypothesis.Phase.generate])
            @hypothesis.given(strategy)
            def send(case: Case) -> None:
                _send(session, case, base_url, timeout_s, (signers or {}).get(path), report)

            try:
                send()
            except hypothesis.errors.Unsatisfiable:  # e.g. no invalid variant of a fully pinned request
                continue
    return report


def _send(session: requests.Session, case: Case, base_url: str, timeout_s: float, signer: Signer | None,
          report: FuzzReport) -> None:
    kwargs = case.as_transport_kwargs(base_url=base_url)
    what = f"{case.method} {kwargs.get('url', '')[:200]}"
    if signer is not None:
        prepared = requests.Request(**{k: v for k, v in kwargs.items()
                                       if k in ("method", "url", "headers", "params", "data", "json", "cookies")}
                                    ).prepare()
        body = prepared.body if isinstance(prepared.body, bytes) else (prepared.body or "").encode()
        prepared.headers.update(signer(case, body))
        send: Callable[[], requests.Response] = lambda: session.send(prepared, timeout=timeout_s)  # noqa: E731
    else:
        send = lambda: session.request(**{**kwargs, "timeout": timeout_s})  # noqa: E731
    try:
        response = send()
    except requests.Timeout:
        report.requests += 1
        report.hangs.append(what)
        return
    except requests.ConnectionError as exc:
        report.requests += 1
        report.dropped.append(f"{what}: {exc}")
        return
    except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError):
        report.not_sendable += 1
        return
    report.requests += 1
    report.statuses[response.status_code] += 1
    if response.status_code >= 500:
        report.server_errors.append(f"{what} → {response.status_code} {response.text[:200]}")
