"""What a demo provider system received, its idempotency, and test-only failure injection.

Role: the in-memory state of one demo provider system (REST or SOAP): the cases and
messages it stored, keyed by the caller's idempotency key, the counters tests read, and
the failures and delay a test asked for. Also the control routes every demo provider has
for tests and the demo: ``POST /_control``, ``GET /_received``, ``POST /_reset``.

The demo clinic (``sandbox.clinic``), when attached as ``state.clinic``, is told of every
new case and message (never of a replay), is reset with the state, and its answers are in
``GET /_received`` under ``"answers"`` (an empty list without a clinic).

May import: flask, ``sandbox.clinic`` (types only). Used by ``sandbox.demo_rest`` and
``sandbox.demo_soap``.

Invariants:
- Every read and write of the state holds its one lock; nothing sleeps or does I/O under it,
  and the clinic is called only after it is released (the clinic has its own lock).
- An idempotency key is stored once: the same key again returns the item stored first
  (its ``calls`` + 1, its body unchanged); the same key for another kind of item, or for
  a message on another case, is a ``KeyConflict``.
- Ids are sequential per kind (``<prefix>-000001``) and reused only after ``reset``.
- ``total_calls`` counts every delivery call (and every medication-list call, REST
  ``GET /api/patients/<id>/medications`` and SOAP ``GetMedications``, which take the same
  injected failures and delay) that reached the provider, refused and failed ones
  included; ``failed_calls`` those that got an injected failure. Polls are not counted.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask, jsonify, request

import clock

if TYPE_CHECKING:
    from .clinic import Clinic


class UnknownCase(Exception):
    """A message names a case id this provider never issued."""


class KeyConflict(Exception):
    """An idempotency key already used for another kind of item or another case."""


def _stamp() -> str:
    return clock.instant().isoformat(timespec="milliseconds")


@dataclass
class Received:
    """One case or message the provider stored."""

    kind: str  # "case" | "message"
    id: str  # the provider's id: P-/M-000001 (REST), S-/SM-000001 (SOAP)
    idempotency_key: str
    body: dict[str, Any]  # REST: the JSON body as sent; SOAP: the request's fields
    case_id: str | None = None  # for a message: the case it was added to
    calls: int = 1  # successful calls with this key (1 + replays)
    received_at: str = field(default_factory=_stamp)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "id": self.id,
            "idempotency_key": self.idempotency_key,
            "body": self.body,
            "calls": self.calls,
            "received_at": self.received_at,
        }
        if self.case_id is not None:
            out["case_id"] = self.case_id
        return out


@dataclass(frozen=True)
class Failure:
    """A failure a test asked for with ``POST /_control``."""

    status: int  # the HTTP status to answer
    fault: str | None  # SOAP only: "Client" or "Server"; None = by status
    after_store: bool  # True: store the item first, then fail (a lost answer)


@dataclass(frozen=True)
class Call:
    """What ``begin_call`` tells a delivery handler to do."""

    delay_s: float
    failure: Failure | None


class ProviderState:
    """Cases and messages one demo provider received, thread-safe.

    Kept deliberately plain (dicts of ``Received``) so that later behaviour, such as the
    clinic answering a case, can hang its own fields off the same records.
    """

    def __init__(self, *, case_prefix: str, message_prefix: str, delay_s: float = 0.0) -> None:
        self.case_prefix = case_prefix
        self.message_prefix = message_prefix
        self._initial_delay_s = float(delay_s)
        self.lock = threading.Lock()
        self.clinic: Clinic | None = None  # set by the provider system that has one
        self.reset()

    # -- delivery calls ---------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything received and every failure asked for; restore the start delay;
        clear the clinic's pending work and answers."""
        if self.clinic is not None:
            self.clinic.reset()
        with self.lock:
            self.items: list[Received] = []  # arrival order
            self.cases: dict[str, Received] = {}
            self.messages: dict[str, Received] = {}
            self.by_key: dict[str, Received] = {}
            self.total_calls = 0
            self.failed_calls = 0
            self.delay_s = self._initial_delay_s
            self.fail_next = 0
            self.fail_status = 503
            self.fail_fault: str | None = None
            self.fail_after_store = False
            self.fail_every = 0  # > 0: every Nth call fails too (a flaky provider), besides fail_next

    def begin_call(self) -> Call:
        """Count a delivery (or medication-list) call; say how long to wait and whether to fail it."""
        with self.lock:
            self.total_calls += 1
            failure = None
            if self.fail_next > 0 or (self.fail_every and self.total_calls % self.fail_every == 0):
                self.fail_next = max(0, self.fail_next - 1)
                self.failed_calls += 1
                failure = Failure(self.fail_status, self.fail_fault, self.fail_after_store)
            return Call(self.delay_s, failure)

    def add_case(self, key: str, body: dict[str, Any]) -> tuple[Received, bool]:
        """Store a case under ``key``; (item, True) when new, (first item, False) on replay."""
        with self.lock:
            known = self._replay(key, "case", None)
            if known is not None:
                return known, False
            item = Received("case", self._next_id(self.case_prefix, self.cases), key, body)
            self.cases[item.id] = item
            self._keep(item)
        if self.clinic is not None:
            self.clinic.case_received(item)
        return item, True

    def add_message(self, key: str, case_id: str, body: dict[str, Any]) -> tuple[Received, bool]:
        """Store a message on case ``case_id``; raises ``UnknownCase`` for an unknown case."""
        with self.lock:
            known = self._replay(key, "message", case_id)
            if known is not None:
                return known, False
            if case_id not in self.cases:
                raise UnknownCase(case_id)
            item = Received("message", self._next_id(self.message_prefix, self.messages), key, body, case_id)
            self.messages[item.id] = item
            self._keep(item)
        if self.clinic is not None:
            self.clinic.message_received(item)
        return item, True

    def _replay(self, key: str, kind: str, case_id: str | None) -> Received | None:
        known = self.by_key.get(key)
        if known is None:
            return None
        if known.kind != kind or known.case_id != case_id:
            raise KeyConflict(key)
        known.calls += 1
        return known

    def _keep(self, item: Received) -> None:
        self.items.append(item)
        self.by_key[item.idempotency_key] = item

    @staticmethod
    def _next_id(prefix: str, existing: dict[str, Received]) -> str:
        return f"{prefix}-{len(existing) + 1:06d}"

    # -- control ----------------------------------------------------------------------

    def control(self, data: dict[str, Any]) -> dict[str, Any]:
        """Apply ``{"fail_next": N, "fail_every": M, "status": 503, "fault": "Client", "after_store": false,
        "delay_s": x}`` (every key optional; ``fail_every``: every Mth call fails, 0 none);
        raise ``ValueError`` for a bad value."""
        unknown = set(data) - {"fail_next", "fail_every", "status", "fault", "after_store", "delay_s"}
        if unknown:
            raise ValueError(f"unknown control keys: {sorted(unknown)}")
        with self.lock:
            if "delay_s" in data:
                delay = data["delay_s"]
                if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
                    raise ValueError("delay_s must be a number >= 0")
                self.delay_s = float(delay)
            if "fail_every" in data:
                every = data["fail_every"]
                if isinstance(every, bool) or not isinstance(every, int) or every < 0:
                    raise ValueError("fail_every must be an integer >= 0")
                self.fail_every = every
            if "fail_next" in data:
                n, status = data["fail_next"], data.get("status", 503)
                fault, after = data.get("fault"), data.get("after_store", False)
                if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                    raise ValueError("fail_next must be an integer >= 0")
                if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
                    raise ValueError("status must be an HTTP error status (400-599)")
                if fault not in (None, "Client", "Server"):
                    raise ValueError('fault must be "Client" or "Server"')
                if not isinstance(after, bool):
                    raise ValueError("after_store must be true or false")
                self.fail_next, self.fail_status = n, status
                self.fail_fault, self.fail_after_store = fault, after
            return self._settings()

    def _settings(self) -> dict[str, Any]:
        return {
            "fail_next": self.fail_next,
            "fail_every": self.fail_every,
            "status": self.fail_status,
            "fault": self.fail_fault,
            "after_store": self.fail_after_store,
            "delay_s": self.delay_s,
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything received (and the clinic's answers), as ``GET /_received`` answers it."""
        answers = self.clinic.answers() if self.clinic is not None else []
        with self.lock:
            return {
                "received": [item.to_json() for item in self.items],
                "total_calls": self.total_calls,
                "failed_calls": self.failed_calls,
                "control": self._settings(),
                "answers": answers,
            }


def add_control_routes(app: Flask, state: Any) -> None:
    """The test/demo control API: ``POST /_control``, ``GET /_received``, ``POST /_reset``,
    for any state with ``control(data)``, ``snapshot()`` and ``reset()`` (the demo providers'
    and the 1177 simulator's)."""

    @app.post("/_control")
    def _control():  # type: ignore[no-untyped-def]
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return jsonify(error="invalid_json", message="send a JSON object"), 400
        try:
            return jsonify(state.control(data))
        except ValueError as exc:
            return jsonify(error="invalid_control", message=str(exc)), 400

    @app.get("/_received")
    def _received():  # type: ignore[no-untyped-def]
        return jsonify(state.snapshot())

    @app.post("/_reset")
    def _reset():  # type: ignore[no-untyped-def]
        state.reset()
        return jsonify(state.snapshot())
