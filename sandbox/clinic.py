"""The demo clinic: answers the cases a demo provider system received, like staff would.

Role: the behaviour attached to a demo provider's ``ProviderState`` (``state.clinic``).
For every case received (the first time per idempotency key), ``answer_delay_s`` later:
status ``IN_PROGRESS``; for every ``question_every``-th case a ``QUESTION`` message, then
nothing until a message on that case arrives from the gateway (the citizen's follow-up),
and ``answer_delay_s`` after it the rest; a ``FINAL_REPLY`` fitting the case type (a
complaint's with ``beslut.pdf``, a prescription renewal's naming the medications the
case listed); status ``CLOSED`` (a complaint's with closing codes). With ``notices_only``
(a gateway whose national profile is mvk-inbox-2.0, which carries no status, kind or
file) it answers every case with one INFO notice instead, and nothing else.
The texts and item shapes are ``sandbox.answers``'.

Every update is numbered 1..n in the order produced and kept in the clinic's feed, which
``updates_since`` serves (``GET /api/updates`` on REST, ``GetUpdates`` on SOAP): the
updates numbered above ``since``, at most 100, and the cursor = the number of the last one
returned (``since`` unchanged, or "0", when there are none). With a ``deliver`` callable
(the REST system's push to the gateway, ``sandbox.push``), each update is also handed to
it, in order; what it returns is recorded with the update in ``answers()``
(``GET /_received`` key ``"answers"``).

May import: ``sandbox.answers``, ``sandbox.state`` (types only). Never imported by the product.

Invariants:
- ``answer_delay_s`` 0 disables the clinic: nothing is scheduled, nothing produced.
- One daemon thread per clinic, started with the first case; it waits on one condition
  variable for the next due step (no thread per case) and ends on ``stop()``.
- All state is guarded by the one condition's lock; ``deliver`` (network I/O) is called
  without it. Steps of one case run in order, and the updates of one step are delivered
  before the next step runs, so a reply never overtakes its case's earlier updates.
- ``reset()`` forgets every case, pending step, update and answer, and numbering restarts
  at 1; work of before the reset that is still running is dropped, not recorded.
- ``deliver`` failures never end the thread (they are recorded, logged to stderr).
"""

from __future__ import annotations

import copy
import heapq
import itertools
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import clock
from . import answers

if TYPE_CHECKING:
    from .state import Received

MAX_UPDATES_PER_POLL = 100

# deliver(update, cancelled) -> what to record about the delivery (e.g. the push's HTTP status)
Deliver = Callable[[dict[str, Any], Callable[[], bool]], dict[str, Any]]


def parse_cursor(since: str | None) -> int:
    """The update number a ``since`` value names: "" or None is 0; else digits, or ``ValueError``."""
    text = (since or "").strip()
    if not text:
        return 0
    if not text.isdigit() or len(text) > 18:
        raise ValueError(f"since must be a cursor returned earlier (digits), not '{text[:20]}'")
    return int(text)


@dataclass
class _Script:
    """Where one case is in its answer."""

    facts: answers.Facts
    ask: bool  # selected for a counter-question
    waiting: bool = False  # the question is out; waiting for the citizen's message


class Clinic:
    """Answers received cases after a delay; thread-safe."""

    def __init__(self, *, answer_delay_s: float = 0.0, question_every: int = 3,
                 deliver: Deliver | None = None, name: str = "clinic", notices_only: bool = False) -> None:
        if answer_delay_s < 0 or question_every < 0:
            raise ValueError("answer_delay_s and question_every must be >= 0")
        self.answer_delay_s = float(answer_delay_s)
        self.question_every = 0 if notices_only else int(question_every)
        self.notices_only = notices_only
        self.deliver = deliver
        self.name = name
        self._cond = threading.Condition()
        self._order = itertools.count()  # tie-break of steps due at the same time
        self._thread: threading.Thread | None = None
        self._closed = False
        self.reset()

    @property
    def enabled(self) -> bool:
        return self.answer_delay_s > 0

    # -- what the provider system tells the clinic --------------------------------------

    def case_received(self, item: Received) -> None:
        """A new case was stored (not a replay): answer it ``answer_delay_s`` from now."""
        if not self.enabled:
            return
        with self._cond:
            if self._closed:
                return
            self._received += 1
            ask = self.question_every > 0 and self._received % self.question_every == 0
            self._cases[item.id] = _Script(answers.facts(item.id, item.body), ask)
            self._schedule(item.id, "start")

    def message_received(self, item: Received) -> None:
        """A new message was stored on a case: the answer to a pending question continues."""
        if not self.enabled or item.case_id is None:
            return
        with self._cond:
            script = self._cases.get(item.case_id)
            if script is not None and script.waiting and not self._closed:
                script.waiting = False
                self._schedule(item.case_id, "finish")

    # -- what the clinic tells the world --------------------------------------------------

    def updates_since(self, since: str | None) -> tuple[list[dict[str, Any]], str]:
        """(updates numbered above ``since``, at most 100; the new cursor). ``ValueError`` for
        a ``since`` that is not a number."""
        start = parse_cursor(since)
        with self._cond:
            chunk = self._updates[start:start + MAX_UPDATES_PER_POLL]
            return copy.deepcopy(chunk), str(start + len(chunk))

    def answers(self) -> list[dict[str, Any]]:
        """Every update produced, with its number, time and (when pushed) the push's outcome."""
        with self._cond:
            return copy.deepcopy(self._answers)

    def reset(self) -> None:
        """Forget every case, pending step, update and answer; numbering restarts at 1."""
        with self._cond:
            self._generation = getattr(self, "_generation", 0) + 1
            self._received = 0
            self._cases: dict[str, _Script] = {}
            self._due: list[tuple[float, int, str, str]] = []  # (due, order, provider case id, step)
            self._updates: list[dict[str, Any]] = []
            self._answers: list[dict[str, Any]] = []
            self._cond.notify_all()

    def stop(self) -> None:
        """End the thread (a push in progress gives up its retries); later cases are ignored."""
        with self._cond:
            self._closed = True
            self._due.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=15)

    # -- the thread -----------------------------------------------------------------------

    def _schedule(self, case_id: str, step: str) -> None:
        """Under the lock: run ``step`` of ``case_id`` ``answer_delay_s`` from now."""
        heapq.heappush(self._due, (time.monotonic() + self.answer_delay_s, next(self._order), case_id, step))
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name=f"sandbox-{self.name}-clinic", daemon=True)
            self._thread.start()
        self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._due or self._due[0][0] > time.monotonic()):
                    self._cond.wait(None if not self._due else self._due[0][0] - time.monotonic())
                if self._closed:
                    return
                _, _, case_id, step = heapq.heappop(self._due)
                generation = self._generation
                records = [self._record(update) for update in self._step(case_id, step)]
            for record in records:
                self._deliver(record, generation)

    def _step(self, case_id: str, step: str) -> list[dict[str, Any]]:
        """Under the lock: the updates of one step, advancing the case's script."""
        script = self._cases.get(case_id)
        if script is None:
            return []
        case = script.facts
        if self.notices_only:
            del self._cases[case_id]
            return [answers.notice(case)]
        if step == "start":
            out = [answers.status(case, "IN_PROGRESS")]
            if script.ask:
                script.waiting = True
                return out + [answers.question(case)]
        else:  # "finish"
            out = []
        del self._cases[case_id]
        return out + [answers.final_reply(case), answers.status(case, "CLOSED")]

    def _record(self, update: dict[str, Any]) -> dict[str, Any]:
        """Under the lock: number the update, put it in the feed and the answers."""
        self._updates.append(update)
        record = {
            "number": len(self._updates),
            "at": clock.instant().isoformat(timespec="milliseconds"),
            "update": update,
            "push": None,
        }
        self._answers.append(record)
        return record

    def _deliver(self, record: dict[str, Any], generation: int) -> None:
        if self.deliver is None:
            return

        def cancelled() -> bool:
            return self._closed or self._generation != generation

        if cancelled():
            return
        try:
            outcome = self.deliver(record["update"], cancelled)
        except Exception as exc:  # never end the thread over one update
            print(f"sandbox {self.name}: delivering update {record['number']} failed: {exc!r}", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
            outcome = {"status": None, "error": repr(exc)[:300]}
        with self._cond:
            if self._generation == generation:
                record["push"] = outcome
