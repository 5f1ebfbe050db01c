"""Operations benchmark: the ops view's reads on a store with a million sync-log rows.

What it measures
    A fresh store (``store.Store(path).migrate()`` in a temporary folder) is filled with
    1,000,000 sync-log rows and related rows over the last two years: 100,000 cases for the
    three demo units (SE5566778899-KLIN1 and SE2321000016-PN01 on demo_rest,
    SE5566778899-KLIN2 on demo_soap), about 150,000 outbox rows towards demo_rest, demo_soap
    and national (mostly done, some pending, about 200 dead), about 200,000 delivery
    attempts, the messages and status updates those outbox rows carry, and the sync log
    (case_received, delivered, retry_scheduled, dead, message_queued, status_queued, …,
    a few % with GW060/GW061/GW062) in time order. The last 24 hours are a busy day (a few
    thousand attempts, a short demo_soap outage, a national incident still going on and
    demo_soap paused) so the dashboard's charts and cards have something to show. The outbox
    keeps the size asked for, so about 650,000 sync-log rows are further rounds of the cases'
    dialogs whose outbox rows are not stored; the searches read only the sync log. Rows are
    inserted with executemany in one transaction per table; the timings then use a new
    ``Store`` (the gateway's own connection settings: WAL, synchronous=FULL, default cache),
    with the file in the OS page cache.

    Then it times, each ``--runs`` times (median and max; the first run is shown too):

    - ``store.search_log()``: no filter, case id, HSA-id, target, direction, status, error
      code, a time range, a combination (target + status + time range), a case id with a
      broad filter (status, direction), the 20th page (following the keyset cursor), a page
      half-way down the table (with and without a filter) and the event filter;
    - ``store.dashboard()``, ``store.outbox_list()`` (dead letters),
      ``store.case_detail(case_id, with_content=False)`` for the case with the most events
      and a typical one, and ``store.audit()`` (each case page a reader or admin opens writes one);
    - the ops pages through Flask's test client, signed in as an admin: ``GET /ops/``,
      ``/ops/log`` (first page, filters, the next page), ``/ops/cases/<id>``, ``/ops/dead``.
      If ``ops/view.py`` does not have those routes yet, it waits for them (``--wait-view``).

    Everything runs twice: before ``ANALYZE`` (the gateway itself never runs it, so this is
    what a production store has) and after it. Every SQL statement is captured with
    sqlite-utils' tracer and shown with its ``EXPLAIN QUERY PLAN`` and its time on its own;
    a plain ``SCAN sync_log`` (no index) is a failure, and so is a median above 100 ms.
    Last, proposed query and index changes are tried on the temporary store (never on
    store.py) and checked to return the same rows.

How to run (from the project folder)
    .venv/bin/python bench/ops.py [--log-rows N] [--cases N] [--outbox N] [--attempts N] [--runs N]

    Defaults: --log-rows 1000000 --cases 100000 --outbox 150000 --attempts 200000 --runs 20.
    Exit status 1 when a query scans sync_log without an index, is slower than 100 ms
    (median) or a page does not answer 200. The temporary folder is deleted at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import json
import random
import re
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# after the project: its package ops/ (the view) must win over this file, bench/ops.py
sys.path.append(str(Path(__file__).resolve().parent))

import intake  # noqa: E402  (bench/intake.py: the machine facts)
from store import Store  # noqa: E402

MIB = 1024 * 1024
US = 1_000_000  # times are kept as integer microseconds since the epoch (UTC)
HOUR = 3600 * US
DAY = 24 * HOUR
EPOCH = dt.datetime(1970, 1, 1)
NATIONAL = "national"
# (HSA-id, target, provider unit code, share of cases)
UNITS = (("SE5566778899-KLIN1", "demo_rest", "KLIN1", 45),
         ("SE5566778899-KLIN2", "demo_soap", "KLIN2", 40),
         ("SE2321000016-PN01", "demo_rest", "PN01", 15))
PATIENT_BOARD = "SE2321000016-PN01"
CASE_TYPES = (("QUESTION", 35), ("PRESCRIPTION_RENEWAL", 30), ("BOOKING", 20), ("COMPLAINT", 10), ("OTHER", 5))
REPLY_KINDS = (("CONFIRMATION", 50), ("FINAL_REPLY", 25), ("PARTIAL_REPLY", 10), ("QUESTION", 10), ("INFO", 5))
# extra outbox rows besides each case's first one: action, share
EXTRA_ACTIONS = (("add_message", 55), ("update_status", 30), ("deliver_message", 15))
SLOW_MS = 100.0
PAGE = 50


def iso(us: int) -> str:
    """The store's timestamp format, 'YYYY-MM-DDTHH:MM:SS.ffffffZ'."""
    return (EPOCH + dt.timedelta(microseconds=us)).isoformat(timespec="microseconds") + "Z"


def pick(rng: random.Random, weighted: tuple[tuple[Any, int], ...]) -> Any:
    return rng.choices([w[0] for w in weighted], [w[1] for w in weighted])[0]


# -- the machine -----------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """bench/intake.py's machine facts, plus the SQLite version."""
    return {**intake.machine(), "sqlite": sqlite3.sqlite_version}


# -- the data --------------------------------------------------------------------------------------


class Case:
    __slots__ = ("n", "case_id", "t", "hsa", "target", "unit", "case_type", "origin", "corr")

    def __init__(self, n, case_id, t, hsa, target, unit, case_type, origin, corr):
        self.n, self.case_id, self.t, self.hsa, self.target = n, case_id, t, hsa, target
        self.unit, self.case_type, self.origin, self.corr = unit, case_type, origin, corr


class Row:
    """An outbox row and its attempts (start µs, duration ms, outcome, status code, error code, detail)."""

    __slots__ = ("id", "case", "action", "ref", "target", "created", "status", "not_before", "attempts",
                 "delivered", "last_error", "last_code", "claimed_by", "lease_until", "replayed_at", "cancelled_at",
                 "lease_expired_at", "kind")

    def __init__(self, case: Case, action: str, target: str, created: int):
        self.case, self.action, self.target, self.created = case, action, target, created
        self.id = 0
        self.ref = case.case_id
        self.status = "done"
        self.not_before = created
        self.attempts: list[tuple[int, float, str, int | None, str | None, str | None]] = []
        self.delivered = None
        self.last_error = self.last_code = self.claimed_by = None
        self.lease_until = self.replayed_at = self.cancelled_at = self.lease_expired_at = None
        self.kind = None


def direction_of(action: str) -> str:
    return "out" if action in ("add_message", "update_status", "register_case") else "in"


class Filler:
    """Builds the rows in memory (deterministic for a seed), then writes them in big transactions."""

    def __init__(self, args: argparse.Namespace, now: int):
        self.rng = random.Random(args.seed)
        self.args = args
        self.now = now
        self.pause_at = now - 40 * 60 * US  # demo_soap paused by an operator 40 minutes ago
        self.incident_at = now - 15 * 60 * US  # national answers 503 since 15 minutes
        self.outage = (now - 6 * HOUR - 12 * 60 * US, now - 6 * HOUR)  # demo_soap unreachable for 12 minutes
        self.cases: list[Case] = []
        self.rows: list[Row] = []
        self.events: list[tuple] = []
        self.heavy: Case | None = None
        self.typical: Case | None = None
        self.seq = 0

    def uuid(self) -> str:
        s = f"{self.rng.getrandbits(128):032x}"
        return f"{s[:8]}-{s[8:12]}-4{s[13:16]}-{s[16:20]}-{s[20:]}"

    def ms(self, target: str) -> float:
        """A provider call's duration: lognormal around 60 ms (providers) or 150 ms (1177)."""
        return round(self.rng.lognormvariate(4.1 if target != NATIONAL else 5.0, 0.45), 1)

    def later(self, case: Case, mean_days: float) -> int:
        """A time after the case arrived (exponential, mean ``mean_days``), never in the future."""
        t = case.t + int(self.rng.expovariate(1 / (mean_days * DAY)))
        if t >= self.now - US:
            t = case.t + int(self.rng.random() * max(1, self.now - US - case.t))
        return t

    # -- cases and outbox rows ---------------------------------------------------------------------

    def make_all(self) -> None:
        """Every row, in the order they depend on each other: cases, outbox, attempts, events."""
        self.make_cases()
        self.make_outbox()
        self.make_attempts()
        self.make_events()

    def make_cases(self) -> None:
        rng, a = self.rng, self.args
        recent = max(1, a.cases * 15 // 1000)  # 1.5% of the cases in the last 24 h: a busy day
        times = [self.now - rng.randrange(DAY, 730 * DAY) for _ in range(a.cases - recent)]
        times += [self.now - rng.randrange(2 * US, DAY) for _ in range(recent)]
        times.sort()
        unit_weights = [u[3] for u in UNITS]
        for n, t in enumerate(times, start=1):
            hsa, target, unit, _ = rng.choices(UNITS, unit_weights)[0]
            case_type = "COMPLAINT" if hsa == PATIENT_BOARD else pick(rng, CASE_TYPES)
            origin = "external" if rng.random() < 0.03 else "1177"
            self.cases.append(Case(n, f"1177-{n:08d}", t, hsa, target, unit, case_type, origin, self.uuid()))
        # the case with many events: three weeks old; a typical one: half a year old
        self.heavy = min(self.cases, key=lambda c: abs(c.t - (self.now - 21 * DAY)))
        self.heavy.origin = "1177"
        self.typical = min(self.cases, key=lambda c: abs(c.t - (self.now - 180 * DAY)))

    def new_row(self, case: Case, action: str, created: int) -> Row:
        target = NATIONAL if action in ("add_message", "update_status", "register_case") else case.target
        row = Row(case, action, target, created)
        self.seq += 1
        if action == "deliver_message":
            row.ref, row.kind = f"{case.case_id}-M{self.seq}", "FOLLOW_UP"
        elif action == "add_message":
            row.ref, row.kind = f"{case.case_id}-R{self.seq}", pick(self.rng, REPLY_KINDS)
        elif action == "update_status":
            row.kind = self.rng.choice(("IN_PROGRESS", "IN_PROGRESS", "CLOSED"))
        return row

    def make_outbox(self) -> None:
        rng = self.rng
        rows = [self.new_row(c, "register_case" if c.origin == "external" else "deliver_case", c.t) for c in self.cases]
        heavy_rows = 40
        for i in range(heavy_rows):
            action = ("deliver_message", "add_message", "update_status")[i % 3]
            rows.append(self.new_row(self.heavy, action, self.later(self.heavy, 7)))
        for _ in range(max(0, self.args.outbox - len(rows))):
            case = rng.choice(self.cases)
            rows.append(self.new_row(case, pick(rng, EXTRA_ACTIONS), self.later(case, 2)))
        rows.sort(key=lambda r: r.created)
        for n, row in enumerate(rows, start=1):
            row.id = n
        self.rows = rows

    # -- what happened to each outbox row ----------------------------------------------------------

    def delay(self, attempt: int) -> int:
        """The configured retry delay (2 s doubling, at most 900 s, ±20% jitter) in µs."""
        base = min(900.0, 2.0 * 2 ** (attempt - 1))
        return int(base * (0.8 + 0.4 * self.rng.random()) * US)

    def failure(self, code: str, target: str) -> tuple[int | None, str]:
        where = "1177" if target == NATIONAL else target
        if code == "GW060":
            return None, f"cannot reach {where}: connection refused"
        if code == "GW061":
            status = self.rng.choice((502, 503, 503, 504, 429))
            return status, f"{where} answered HTTP {status}"
        if code == "GW062":
            return 422, f"{where} refused the request: HTTP 422 (unit code not known)"
        return None, f"1177 answered resultCode ERROR: {self.rng.choice(('the case is closed', 'unknown caseId'))}"

    def attempt_chain(self, row: Row, failures: list[str], *, then: str | None, start: int | None = None,
                      fail_until: tuple[str, int] | None = None) -> int:
        """Failed attempts with the given codes (or with ``fail_until`` = (code, time): that code
        for every attempt that starts before that time), then ``then`` ('delivered', 'dead' or
        None: the next attempt is not made yet). Returns the end of the last attempt."""
        t = start if start is not None else row.created + self.rng.randrange(2_000, 200_000)
        end = t
        codes = list(failures)
        k = 0
        while True:
            if fail_until is not None:
                if t >= fail_until[1] or k >= 9:
                    break
                code = fail_until[0]
            elif k < len(codes):
                code = codes[k]
            else:
                break
            k += 1
            status, reason = self.failure(code, row.target)
            duration = round(self.rng.uniform(1, 30), 1) if code == "GW060" else self.ms(row.target)
            last = then == "dead" and fail_until is None and k == len(codes)
            row.attempts.append((t, duration, "dead" if last else "retry", status, code, reason))
            end = t + int(duration * 1000)
            t = end + self.delay(k)
        if then == "delivered":
            duration = self.ms(row.target)
            row.attempts.append((t, duration, "delivered", 200, None, None))
            end = t + int(duration * 1000)
            row.delivered = end
        elif then is None and row.attempts:
            row.not_before = t  # the next attempt, not made yet
        return end

    def make_attempts(self) -> None:
        rng, now = self.rng, self.now
        undecided = []
        for row in self.rows:
            if row.target == "demo_soap" and row.created >= self.pause_at:
                row.status = "pending"  # the target is paused: nothing tried
            elif row.target == NATIONAL and row.created >= self.incident_at:
                row.status = "pending"  # 1177 answers 503 since the incident began
                self.attempt_chain(row, [], then=None, fail_until=("GW061", now - US))
                if row.attempts:
                    row.last_code, row.last_error = "GW061", row.attempts[-1][5]
            elif row.target == "demo_soap" and self.outage[0] <= row.created < self.outage[1]:
                self.attempt_chain(row, [], then="delivered", fail_until=("GW060", self.outage[1]))
            else:
                undecided.append(row)
        # the three newest demo_rest rows are being delivered right now
        flying = [r for r in reversed(undecided) if r.target == "demo_rest"][:3]
        for row in flying:
            row.status, row.claimed_by, row.lease_until = "in_flight", "gateway-1:worker-2", now + 300 * US
        flying_ids = {r.id for r in flying}
        older = [r for r in undecided if r.created < now - DAY and r.id not in flying_ids and r.case is not self.heavy]
        chosen = rng.sample(older, 194 + 40 + 60)
        dead, cancelled, replayed = chosen[:194], chosen[194:234], chosen[234:]
        for row in dead:
            self.kill(row)
        # a few dead rows of the busy day
        today = [r for r in undecided if now - DAY <= r.created < now - 2 * HOUR and r.target != NATIONAL]
        for row in rng.sample(today, min(6, len(today))):
            self.kill(row, code="GW062")
            dead.append(row)
        for row in cancelled:
            self.kill(row, code="GW062")
            row.status = "cancelled"
            row.cancelled_at = row.attempts[-1][0] + rng.randrange(HOUR, 3 * DAY)
        for row in replayed:
            self.kill(row, code="GW062")
            row.status = "done"
            row.replayed_at = row.attempts[-1][0] + rng.randrange(HOUR, 3 * DAY)
            self.attempt_chain(row, [], then="delivered", start=row.replayed_at + rng.randrange(2_000, 100_000))
            row.last_code = row.last_error = None
        special = {r.id for r in chosen} | {r.id for r in dead} | flying_ids
        plain = [r for r in undecided if r.id not in special]
        used = sum(len(r.attempts) for r in self.rows)
        budget = self.args.attempts - used - len(plain)
        rng.shuffle(plain)
        retry_sizes = (1,) * 40 + (2,) * 25 + (3,) * 15 + (4,) * 8 + (5,) * 5 + (6,) * 3 + (7,) * 2 + (8,) * 1 + (9,) * 1
        for row in plain:
            k = 0
            if budget > 0 and row.created < now - 2 * HOUR:  # the last 2 hours: no retries (but the incident's)
                k = min(budget, rng.choice(retry_sizes))
                budget -= k
            codes = [rng.choice(("GW060", "GW061", "GW061")) for _ in range(k)]
            self.attempt_chain(row, codes, then="delivered")
            if rng.random() < 0.0008:
                row.lease_expired_at = row.attempts[0][0] - rng.randrange(1_000, 60_000)  # a worker died mid-call
        for row in self.rows:
            if row.delivered and row.delivered > now:  # a call that would end in the future: not ended yet
                shift = row.delivered - now + rng.randrange(1_000, 500_000)
                row.attempts = [(a[0] - shift, *a[1:]) for a in row.attempts]
                row.delivered -= shift
                row.created -= shift
                row.not_before = min(row.not_before, row.created)

    def kill(self, row: Row, code: str | None = None) -> None:
        """Make ``row`` dead: a permanent refusal, or a transient failure 10 times over."""
        if code is None:
            code = "GW065" if row.target == NATIONAL and self.rng.random() < 0.5 else self.rng.choice(("GW062", "GW062", "GW064"))
            if row.target == NATIONAL and code == "GW062":
                code = "GW065"
        if row.target == NATIONAL and code == "GW062":
            code = "GW065"  # 1177 refuses with resultCode ERROR
        if code == "GW064":
            codes = [self.rng.choice(("GW060", "GW061")) for _ in range(10)]
            self.attempt_chain(row, codes, then="dead")
            last = row.attempts[-1]
            reason = f"gave up after 10 attempt(s); the last: {last[4]} {last[5]}"
            row.attempts[-1] = (*last[:4], "GW064", reason)
        else:
            self.attempt_chain(row, [code], then="dead")
        row.status = "dead"
        row.last_code, row.last_error = row.attempts[-1][4], row.attempts[-1][5]

    # -- the sync log ----------------------------------------------------------------------------

    def make_events(self) -> None:
        rng, ev = self.rng, self.events
        append = ev.append
        for row in self.rows:
            c = row.case
            msg = row.ref if row.action in ("deliver_message", "add_message") else None
            d = direction_of(row.action)
            if row.action == "deliver_case":
                append((row.created, c.corr, c.case_id, None, "in", "case_received", "ok", c.target, c.hsa, None,
                        f"{c.case_type}, {rng.choice((0, 0, 1, 1, 2))} attachment(s)"))
            elif row.action == "register_case":
                append((row.created, c.corr, c.case_id, None, "out", "case_registered", "queued", NATIONAL, c.hsa, None,
                        f"{c.case_type} by {c.target}, channel TELEFON"))
            elif row.action == "deliver_message":
                append((row.created, self.uuid(), c.case_id, msg, "in", "message_received", "ok", c.target, c.hsa, None,
                        "0 attachment(s)"))
            elif row.action == "add_message":
                origin = "auto" if row.kind == "CONFIRMATION" else "api"
                append((row.created, self.uuid() if origin == "api" else c.corr, c.case_id, msg, "out", "message_queued",
                        "queued", NATIONAL, c.hsa, None, f"{row.kind} from {origin}, 0 attachment(s)"))
            else:
                append((row.created, self.uuid(), c.case_id, None, "out", "status_queued", "queued", NATIONAL, c.hsa, None,
                        f"{row.kind}, 0 problem code(s)"))
            if row.lease_expired_at:
                append((row.lease_expired_at, c.corr, c.case_id, None, d, "lease_expired", "retry", row.target, c.hsa,
                        None, f"{row.action}: gateway-1:worker-1 stopped during the attempt; requeued"))
            for k, (start, duration, outcome, status, code, reason) in enumerate(row.attempts, start=1):
                end = start + int(duration * 1000)
                if outcome == "delivered":
                    append((end, c.corr, c.case_id, msg, d, "delivered", "ok", row.target, c.hsa, None,
                            f"{row.action}, attempt {k}, {round(duration)} ms"))
                else:
                    dead = outcome == "dead"
                    nxt = "" if dead else f"; next attempt {iso(end + self.delay(k))}"
                    append((end, c.corr, c.case_id, msg, d, "dead" if dead else "retry_scheduled", "dead" if dead else "retry",
                            row.target, c.hsa, code, f"{row.action}, attempt {k}: {reason}{nxt}"))
            if row.replayed_at:
                append((row.replayed_at, None, c.case_id, None, "in", "replayed", "ok", row.target, None, None,
                        f"outbox row {row.id} replayed by anna (ops)"))
            if row.cancelled_at:
                append((row.cancelled_at, None, c.case_id, None, "in", "cancelled", "ok", row.target, None, None,
                        f"outbox row {row.id} cancelled by anna (ops)"))
        append((self.pause_at, None, None, None, "in", "target_paused", "ok", "demo_soap", None, None,
                "paused by anna (ops)"))
        # the daily retention run
        day0 = self.now - 730 * DAY
        for day in range(730):
            t = day0 + day * DAY + rng.randrange(0, 60 * US)
            if t < self.now:
                append((t, None, None, None, "in", "purged", "ok", None, None, None,
                        "retention: content of 0 case(s), 0 file(s); detail of 0 sync-log row(s)"))
        # a polling target's updates that could not be taken
        for _ in range(300):
            c = rng.choice(self.cases)
            append((self.later(c, 5), None, c.case_id, None, "out", "poll_update_refused", "refused", c.target, None,
                    "GW062", f"update 1 of 1 from {c.target}: unknown status code"))
        self.conversation()

    def conversation(self) -> None:
        """More rounds of the cases' dialogs (queued or received, then delivered) up to --log-rows.

        Their outbox rows are not stored (the outbox keeps the size asked for); only the
        sync log sees them, which is all the searches read."""
        rng, ev = self.rng, self.events
        append = ev.append
        left = self.args.log_rows - len(ev)
        heavy_rounds = 180
        kinds = (("message_received", 30), ("message_queued", 40), ("status_queued", 30))
        n = 0
        while left > 0:
            if left == 1:
                c = rng.choice(self.cases)
                append((self.later(c, 3), c.corr, c.case_id, None, "in", "lease_expired", "retry", c.target, c.hsa, None,
                        "deliver_message: gateway-1:worker-3 stopped during the attempt; requeued"))
                break
            c = self.heavy if n < heavy_rounds else rng.choice(self.cases)
            n += 1
            what = pick(rng, kinds)
            t = self.later(c, 10 if c is self.heavy else 4)
            self.seq += 1
            if what == "message_received":
                action, target, d, msg = "deliver_message", c.target, "in", f"{c.case_id}-M{self.seq}"
                append((t, self.uuid(), c.case_id, msg, d, what, "ok", target, c.hsa, None, "0 attachment(s)"))
            elif what == "message_queued":
                action, target, d, msg = "add_message", NATIONAL, "out", f"{c.case_id}-R{self.seq}"
                kind = pick(rng, REPLY_KINDS)
                append((t, self.uuid(), c.case_id, msg, d, what, "queued", target, c.hsa, None, f"{kind} from api, 0 attachment(s)"))
            else:
                action, target, d, msg = "update_status", NATIONAL, "out", None
                append((t, self.uuid(), c.case_id, None, d, what, "queued", target, c.hsa, None,
                        f"{rng.choice(('IN_PROGRESS', 'CLOSED'))}, 0 problem code(s)"))
            left -= 1
            retries = 0
            if rng.random() < 0.045:
                retries = min(left - 1, rng.choice((1, 1, 1, 2, 2, 3, 4)))
            t += rng.randrange(2_000, 200_000)
            for k in range(1, retries + 1):
                code = rng.choice(("GW060", "GW061", "GW061"))
                _, reason = self.failure(code, target)
                t += int(self.ms(target) * 1000)
                append((t, c.corr, c.case_id, msg, d, "retry_scheduled", "retry", target, c.hsa, code,
                        f"{action}, attempt {k}: {reason}; next attempt {iso(t + self.delay(k))}"))
                t += self.delay(k)
            left -= retries
            if left > 0:
                duration = self.ms(target)
                t = min(t + int(duration * 1000), self.now - rng.randrange(1_000, 1_000_000))
                append((t, c.corr, c.case_id, msg, d, "delivered", "ok", target, c.hsa, None,
                        f"{action}, attempt {retries + 1}, {round(duration)} ms"))
                left -= 1

    # -- writing ---------------------------------------------------------------------------------------

    def write(self, store: Store) -> dict[str, float]:
        """Insert everything with executemany in a few big transactions; seconds per table."""
        timings: dict[str, float] = {}
        rng = self.rng
        if store.pg is not None:
            # PostgreSQL: one COPY per table on a connection of its own (the columns of the INSERT)
            import psycopg

            pg = psycopg.connect(store.pg.url, autocommit=True)

            def run(name: str, sql: str, rows: Any) -> None:
                started = time.perf_counter()
                m = re.match(r"\s*INSERT INTO (\w+) \(([^)]*)\)", sql)
                assert m is not None, sql
                with pg.transaction(), pg.cursor() as cursor:
                    with cursor.copy(f"COPY {m.group(1)} ({m.group(2)}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                timings[name] = time.perf_counter() - started
        else:
            def run(name: str, sql: str, rows: Any) -> None:
                started = time.perf_counter()
                # the store's write connection (its writes go through one connection of the process)
                with store.write() as db:
                    db.conn.execute("PRAGMA cache_size = -524288")  # 512 MiB while filling
                    db.conn.executemany(sql, rows)
                timings[name] = time.perf_counter() - started

        first = {}
        status_count: dict[str, int] = {}
        for row in self.rows:
            if row.action in ("deliver_case", "register_case"):
                first[row.case.case_id] = row
            elif row.action == "update_status":
                status_count[row.case.case_id] = status_count.get(row.case.case_id, 0) + 1

        def cases():
            for c in self.cases:
                row = first[c.case_id]
                done = row.status == "done"
                if c.origin == "external":
                    status = "registered" if done else "received"
                else:
                    status = "delivered" if done else "received"
                provider = (f"P-{c.n}" if c.target == "demo_rest" else str(900000 + c.n)) if done or c.origin == "external" else None
                content = json.dumps({"caseId": c.case_id, "caseType": c.case_type, "subject": "Mitt ärende",
                                      "text": "Hej! Jag har en fråga om min behandling och vill att någon ringer upp mig.",
                                      "receiver": {"hsaId": c.hsa}, "attachments": []}, ensure_ascii=False)
                at = iso(c.t)
                citizen = "RECEIVED" if not status_count.get(c.case_id) else rng.choice(("IN_PROGRESS", "CLOSED"))
                yield (c.case_id, c.origin, c.case_type, c.hsa, int(c.hsa == PATIENT_BOARD), c.target, c.unit, provider,
                       status, iso(c.t - rng.randrange(10 * US, 600 * US)), at, at, c.corr,
                       hashlib.sha256(content.encode()).hexdigest(), content,
                       c.case_id if c.origin == "1177" else None, "TELEFON" if c.origin == "external" else None, citizen)

        run("cases", """INSERT INTO cases (case_id, origin, case_type, receiver_hsa_id, is_patient_board, target,
                            provider_unit_code, provider_case_id, status, created_time, received_at, updated_at,
                            correlation_id, content_hash, content, national_case_id, channel, citizen_status)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""", cases())

        # status updates first: an update_status row's ref_id is the status update's id
        updates = [r for r in self.rows if r.action == "update_status"]
        for n, row in enumerate(updates, start=1):
            row.ref = str(n)

        def outbox():
            for r in self.rows:
                updated = r.delivered or (r.attempts[-1][0] if r.attempts else r.created)
                yield (r.id, r.case.case_id, r.action, r.ref, r.target, r.status, len(r.attempts), iso(r.not_before),
                       iso(r.lease_until) if r.lease_until else None, self.uuid(), r.last_error, iso(r.created),
                       iso(updated), r.claimed_by, r.last_code, iso(r.delivered) if r.delivered else None)

        run("outbox", """INSERT INTO outbox (id, case_id, action, ref_id, target, status, attempts, not_before,
                             lease_until, idempotency_key, last_error, created_at, updated_at, claimed_by,
                             last_error_code, delivered_at)
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""", outbox())

        attempts = sorted(((a[0], r, k, a) for r in self.rows for k, a in enumerate(r.attempts, start=1)),
                          key=itemgetter(0))
        self.attempt_count = len(attempts)
        run("attempts", """INSERT INTO attempts (id, outbox_id, case_id, target, attempt, started_at, duration_ms,
                               outcome, status_code, error_code, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            ((n, r.id, r.case.case_id, r.target, k, iso(a[0]), a[1], a[2], a[3], a[4], a[5])
             for n, (_, r, k, a) in enumerate(attempts, start=1)))
        del attempts

        def messages():
            for r in self.rows:
                if r.action not in ("deliver_message", "add_message"):
                    continue
                inbound = r.action == "deliver_message"
                content = json.dumps({"caseId": r.case.case_id, "messageId": r.ref, "kind": r.kind,
                                      "text": "Tack för ditt svar, jag återkommer." if inbound else "Vi har tagit emot ditt ärende."},
                                     ensure_ascii=False)
                done = r.status == "done"
                status = ("delivered" if done else "received") if inbound else ("sent" if done else "queued")
                origin = "citizen" if inbound else ("auto" if r.kind == "CONFIRMATION" else "api")
                yield (r.ref, r.case.case_id, "in" if inbound else "out", r.kind, status, iso(r.created - 5 * US),
                       iso(r.created), r.case.corr, hashlib.sha256(content.encode()).hexdigest(), content,
                       iso(r.delivered) if (done and not inbound) else None, origin)

        run("messages", """INSERT INTO messages (message_id, case_id, direction, kind, status, created_time, received_at,
                               correlation_id, content_hash, content, sent_at, origin)
                           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""", messages())
        run("status_updates", """INSERT INTO status_updates (id, case_id, status, content, state, created_at, sent_at,
                                     origin, correlation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            ((int(r.ref), r.case.case_id, r.kind, json.dumps({"caseId": r.case.case_id, "status": r.kind}),
              "sent" if r.status == "done" else "queued", iso(r.created), iso(r.delivered) if r.delivered else None,
              "api", r.case.corr) for r in updates))

        started = time.perf_counter()
        self.events.sort(key=itemgetter(0))
        timings["sort sync_log"] = time.perf_counter() - started
        run("sync_log", """INSERT INTO sync_log (id, at, correlation_id, case_id, message_id, direction, event, status,
                               target, hsa_id, error_code, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            ((n, iso(e[0]), *e[1:]) for n, e in enumerate(self.events, start=1)))
        with store.write() as db:
            db.execute("INSERT INTO targets (name, paused, changed_at, changed_by) VALUES ('demo_soap', 1, ?, 'anna (ops)')",
                       [iso(self.pause_at)])
            db.execute("INSERT INTO audit_log (at, who, role, action, object, detail) VALUES (?, 'anna', 'admin', "
                       "'pause', 'target demo_soap', '')", [iso(self.pause_at)])
        if store.pg is not None:
            # the ids were given: the sequences go on after them, as after the gateway's own inserts
            for (table,) in pg.execute("SELECT table_name FROM information_schema.columns WHERE column_name = 'id' "
                                       "AND is_identity = 'YES' AND table_schema = current_schema()").fetchall():
                pg.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                           f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)")
            pg.close()
        return timings


# -- measuring -------------------------------------------------------------------------------------


class Query:
    """One thing timed: its runs (ms), rows, the SQL statements it ran and their plans."""

    def __init__(self, key: str, label: str):
        self.key, self.label = key, label
        self.ms: list[float] = []
        self.rows: str = ""
        self.statements: list[tuple[str, Any]] = []
        self.plans: list[list[str]] = []
        self.stmt_ms: list[float] = []
        self.status_ok = True

    @property
    def median(self) -> float:
        return statistics.median(self.ms)

    @property
    def max(self) -> float:
        return max(self.ms)


def normal(sql: str) -> str:
    return " ".join(sql.split())


def plan_of(conn: sqlite3.Connection, sql: str, params: Any) -> list[str]:
    rows = conn.execute("EXPLAIN QUERY PLAN " + sql, params if params is not None else ()).fetchall()
    depth = {0: -1}
    lines = []
    for node, parent, _, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + detail)
    return lines


FULL_SCAN = re.compile(r"\bSCAN sync_log\b(?! USING)")
WALK = re.compile(r"\bSCAN sync_log USING (?:COVERING )?INDEX (\S+)")
OTHER_SCAN = re.compile(r"\bSCAN (?!sync_log\b)(\w+)")


def judge(plan: list[str]) -> tuple[list[str], list[str]]:
    """(failures, notes) for one statement's plan."""
    bad, notes = [], []
    for line in plan:
        text = line.strip()
        if FULL_SCAN.search(text):
            bad.append(f"full scan of sync_log: {text}")
        elif WALK.search(text):
            notes.append(f"walks the index {WALK.search(text).group(1)} in order (no range on it: cost grows with "
                         f"the rows it must pass before LIMIT is met)")
        elif OTHER_SCAN.search(text) and OTHER_SCAN.search(text).group(1) != "targets":  # targets: a few rows
            notes.append(f"scans {OTHER_SCAN.search(text).group(1)} ({text})")
        if "MULTI-INDEX OR" in text:
            notes.append("MULTI-INDEX OR (the OR is answered by several index searches and then sorted)")
        if "TEMP B-TREE" in text:
            notes.append(f"sorts ({text})")
    return bad, notes


def short_plan(q: Query) -> str:
    """The sync_log access of a query in a few words, for the table."""
    parts = []
    for plan in q.plans:
        for line in plan:
            text = line.strip()
            if "sync_log" in text:
                m = re.search(r"(SEARCH|SCAN) sync_log(?: USING (?:COVERING )?INDEX (\S+))?(?: \((.*)\))?", text)
                if m:
                    idx = (m.group(2) or "").replace("idx_sync_log_", "")
                    parts.append(f"{m.group(1)} {idx or 'table'}" + (f" ({m.group(3)})" if m.group(3) else ""))
                elif "MULTI-INDEX OR" in text:
                    parts.append("MULTI-INDEX OR")
            if "TEMP B-TREE" in text and any("sync_log" in line2 for line2 in plan):
                parts.append("+ sort")
    out = []
    for p in parts:
        if p not in out:
            out.append(p)
    return "; ".join(out) or "no sync_log"


def measure(key: str, label: str, fn: Callable[[], Any], db: Any, runs: int, rows: Callable[[Any], str]) -> Query:
    """Run ``fn`` ``runs`` times; the first run is traced (its SQL and plans kept)."""
    q = Query(key, label)

    def tracer(sql: str, params: Any) -> None:
        q.statements.append((sql, params))

    started = time.perf_counter()
    if not hasattr(db, "tracer"):  # PostgreSQL: timings only (no sqlite-utils tracer, no SQLite plans)
        result = fn()
        q.ms.append((time.perf_counter() - started) * 1000)
        for _ in range(runs - 1):
            started = time.perf_counter()
            result = fn()
            q.ms.append((time.perf_counter() - started) * 1000)
        q.rows = rows(result)
        return q
    with db.tracer(tracer):
        result = fn()
    q.ms.append((time.perf_counter() - started) * 1000)
    for _ in range(runs - 1):
        started = time.perf_counter()
        result = fn()
        q.ms.append((time.perf_counter() - started) * 1000)
    q.rows = rows(result)
    # one entry per distinct SELECT (case_detail runs attempts_of once per outbox row)
    distinct, seen = [], set()
    for sql, params in q.statements:
        if normal(sql) not in seen and re.match(r"\s*(SELECT|WITH)\b", sql, re.I):
            seen.add(normal(sql))
            distinct.append((sql, params))
    q.statements = distinct
    for sql, params in distinct:
        q.plans.append(plan_of(db.conn, sql, params))
        q.stmt_ms.append(statement_ms(db.conn, sql, params))
    return q


def statement_ms(conn: sqlite3.Connection, sql: str, params: Any, runs: int = 7) -> float:
    """Median ms of one statement on its own (executed and fetched), for the plan listing."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        conn.execute(sql, params if params is not None else ()).fetchall()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def store_queries(store: Store, filler_info: dict[str, Any], runs: int) -> list[Query]:
    db = store.db
    heavy, typical = filler_info["heavy"], filler_info["typical"]
    now = filler_info["now"]
    day = iso(now - 365 * DAY)
    day_end = iso(now - 364 * DAY)
    month = iso(now - 30 * DAY)
    count = lambda result: str(len(result))  # noqa: E731
    out = []

    def add(key, label, fn, rows=count):
        out.append(measure(key, label, fn, db, runs, rows))

    add("log", "search_log(): no filter, first page", lambda: store.search_log())
    add("log_case", f"search_log(case_id) ({filler_info['heavy_events']} events)", lambda: store.search_log(case_id=heavy))
    add("log_hsa", "search_log(hsa_id=SE2321000016-PN01)", lambda: store.search_log(hsa_id="SE2321000016-PN01"))
    add("log_target", "search_log(target=national)", lambda: store.search_log(target=NATIONAL))
    add("log_direction", "search_log(direction=out)", lambda: store.search_log(direction="out"))
    add("log_status", "search_log(status=retry)", lambda: store.search_log(status="retry"))
    add("log_error", "search_log(error_code=GW062)", lambda: store.search_log(error_code="GW062"))
    add("log_range", "search_log(since, until): one day a year ago", lambda: store.search_log(since=day, until=day_end))
    add("log_combo", "search_log(target=demo_soap, status=retry, since 30 days)",
        lambda: store.search_log(target="demo_soap", status="retry", since=month))
    add("log_case_status", "search_log(case_id, status=ok): a case + a broad filter",
        lambda: store.search_log(case_id=typical, status="ok"))
    add("log_case_direction", "search_log(case_id, direction=in)", lambda: store.search_log(case_id=typical, direction="in"))
    add("log_error_direction", "search_log(error_code=GW062, direction=in)",
        lambda: store.search_log(error_code="GW062", direction="in"))
    # follow the keyset cursor down 20 pages
    cursor = None
    walk_started = time.perf_counter()
    for _ in range(19):
        page = store.search_log(before=cursor)
        cursor = (page[-1]["at"], page[-1]["id"])
    walk_ms = (time.perf_counter() - walk_started) * 1000
    filler_info["walk_19_ms"] = walk_ms
    add("log_page20", "search_log(before=cursor): page 20", lambda: store.search_log(before=cursor))
    mid = db.execute("SELECT at, id FROM sync_log WHERE id = ?", [filler_info["log_rows"] // 2]).fetchone()
    add("log_deep", "search_log(before=cursor): half-way down (~10,000 pages)", lambda: store.search_log(before=tuple(mid)))
    add("log_deep_target", "search_log(target=demo_rest, before=cursor) half-way down",
        lambda: store.search_log(target="demo_rest", before=tuple(mid)))
    add("log_event", "search_log(event=dead) (the view's event filter)", lambda: store.search_log(event="dead"))
    add("log_event_rare", "search_log(event=target_paused)", lambda: store.search_log(event="target_paused"))
    add("dashboard", "dashboard()", lambda: store.dashboard(), rows=lambda r: f"{r['dead']} dead")
    add("dead", "outbox_list(status=dead): dead letters", lambda: store.outbox_list(status="dead"))
    add("dead_target", "outbox_list(status=dead, target=national)",
        lambda: store.outbox_list(status="dead", target=NATIONAL))
    add("cancelled", "outbox_list(status=cancelled): 40 rows, under a page",
        lambda: store.outbox_list(status="cancelled"))
    add("case_heavy", "case_detail(with_content=False): the busiest case",
        lambda: store.case_detail(heavy, with_content=False),
        rows=lambda r: f"{len(r['events'])} ev, {len(r['outbox'])} ob")
    add("case_typical", "case_detail(with_content=False): a typical case",
        lambda: store.case_detail(typical, with_content=False),
        rows=lambda r: f"{len(r['events'])} ev, {len(r['outbox'])} ob")
    add("audit", "audit(): the write of each case page a reader/admin opens",
        lambda: store.audit("bench-admin", "admin", "read_case", f"case {typical}", "case content shown"),
        rows=lambda r: "1 row")
    return out


# -- what would fix what: tried on the temporary store only (store.py is not changed) --------------


class Trials:
    """Timed SQL next to what store.py runs now; a proposal is checked to return the same rows."""

    def __init__(self, db_path: Path, runs: int):
        self.conn = sqlite3.connect(db_path)
        self.runs = runs
        self.table: list[list[str]] = []

    def __call__(self, label: str, sql: str, params: list[Any], reference: tuple[str, list[Any]] | None = None) -> None:
        plan = plan_of(self.conn, sql, params)
        times = []
        for _ in range(self.runs):
            started = time.perf_counter()
            rows = self.conn.execute(sql, params).fetchall()
            times.append((time.perf_counter() - started) * 1000)
        same = "-"
        if reference is not None:
            same = "yes" if rows == self.conn.execute(*reference).fetchall() else "NO"
        print(f"  {label}")
        print(f"    {normal(sql)}{show_params(params)}")
        for line in plan:
            print(f"      {line}")
        print(f"    {len(rows)} rows; median {statistics.median(times):.2f} ms, max {max(times):.2f} ms; same rows: {same}")
        self.table.append([label, str(len(rows)), f"{statistics.median(times):.2f}", f"{max(times):.2f}", same,
                           " / ".join(line.strip() for line in plan)])

    def close(self) -> None:
        self.conn.close()


ORDER = " ORDER BY at DESC, id DESC LIMIT 50"


def what_if_plain(db_path: Path, info: dict[str, Any], runs: int) -> list[list[str]]:
    """Before ANALYZE: a case id together with a broad filter. Without statistics SQLite may
    take the broad filter's index; a unary ``+`` on the other columns leaves it only the case's."""
    trial = Trials(db_path, runs)
    case = info["typical"]
    for column, value in (("status", "ok"), ("direction", "in")):
        now_sql = f"SELECT * FROM sync_log WHERE case_id = ? AND {column} = ?" + ORDER
        trial(f"[no ANALYZE] case_id + {column}, as store.py has it", now_sql, [case, value])
        trial(f"[no ANALYZE] case_id + {column}: +{column} = ? (only the case_id index is usable)",
              f"SELECT * FROM sync_log WHERE case_id = ? AND +{column} = ?" + ORDER, [case, value], (now_sql, [case, value]))
    now_sql = "SELECT * FROM sync_log WHERE error_code = ? AND direction = ?" + ORDER
    trial("[no ANALYZE] error_code + direction, as store.py has it", now_sql, ["GW062", "in"])
    trial("[no ANALYZE] error_code + direction: +direction = ?",
          "SELECT * FROM sync_log WHERE error_code = ? AND +direction = ?" + ORDER, ["GW062", "in"], (now_sql, ["GW062", "in"]))
    trial.close()
    return trial.table


def what_if(db_path: Path, info: dict[str, Any], runs: int) -> list[list[str]]:
    """After ANALYZE: the keyset condition with a range on ``at``; an index for the dead-letter
    list (whose plan turns into a walk of the whole outbox once statistics exist) and one for
    the dashboard's count of messages."""
    trial = Trials(db_path, runs)
    at, rid = trial.conn.execute("SELECT at, id FROM sync_log WHERE id = ?", [info["log_rows"] // 2]).fetchone()
    now_sql = "SELECT * FROM sync_log WHERE (at < ? OR (at = ? AND id < ?))" + ORDER
    trial("keyset half-way down, as store.py has it", now_sql, [at, at, rid])
    trial("keyset half-way down: at <= ? AND (at < ? OR id < ?)",
          "SELECT * FROM sync_log WHERE at <= ? AND (at < ? OR id < ?)" + ORDER, [at, at, rid], (now_sql, [at, at, rid]))
    trial("keyset half-way down: row value (at, id) < (?, ?)",
          "SELECT * FROM sync_log WHERE (at, id) < (?, ?)" + ORDER, [at, rid], (now_sql, [at, at, rid]))
    now_t = "SELECT * FROM sync_log WHERE target = ? AND (at < ? OR (at = ? AND id < ?))" + ORDER
    trial("target + keyset half-way down, as store.py has it", now_t, ["demo_rest", at, at, rid])
    trial("target + keyset half-way down: at <= ? AND (at < ? OR id < ?)",
          "SELECT * FROM sync_log WHERE target = ? AND at <= ? AND (at < ? OR id < ?)" + ORDER,
          ["demo_rest", at, at, rid], (now_t, ["demo_rest", at, at, rid]))

    dead_sql = "SELECT * FROM outbox WHERE status = ? ORDER BY id DESC LIMIT 100"
    trial("outbox_list(cancelled: under a page), as now", dead_sql, ["cancelled"])
    messages_sql = "SELECT direction, status, count(*) AS n FROM messages GROUP BY direction, status"
    trial("dashboard's messages count, as now", messages_sql, [])
    started = time.perf_counter()
    trial.conn.execute("CREATE INDEX bench_outbox_status_id ON outbox (status, id)")
    trial.conn.execute("CREATE INDEX bench_messages_direction_status ON messages (direction, status)")
    trial.conn.execute("ANALYZE")
    trial.conn.commit()
    print(f"  (created outbox(status, id) and messages(direction, status) and ran ANALYZE again: "
          f"{time.perf_counter() - started:.1f} s)")
    trial("outbox_list(cancelled) with an index outbox(status, id)", dead_sql, ["cancelled"], (dead_sql, ["cancelled"]))
    trial("outbox_list(dead) with an index outbox(status, id)", dead_sql, ["dead"])
    trial("dashboard's messages count with an index messages(direction, status)", messages_sql, [])
    trial.close()
    return trial.table


# -- the ops view over HTTP ----------------------------------------------------------------------------


CHECK_VIEW = ("from flask import Flask\nfrom ops import view\napp = Flask('check')\nview.init_app(app)\n"
              "print('\\n'.join(sorted(r.rule for r in app.url_map.iter_rules())))")


def view_routes() -> tuple[bool, str]:
    """Is ops/view.py the real view (its routes registered)? Checked in a child process."""
    try:
        done = subprocess.run([sys.executable, "-c", CHECK_VIEW], cwd=ROOT, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False, "the import timed out"
    if done.returncode != 0:
        return False, (done.stderr.strip().splitlines() or ["import failed"])[-1]
    rules = set(done.stdout.split())
    wanted = ["/ops/login", "/ops/", "/ops/log"]
    missing = [r for r in wanted if r not in rules] + ([] if any(r.startswith("/ops/cases/") for r in rules) else ["/ops/cases/<id>"])
    return (not missing), ("routes " + ", ".join(sorted(r for r in rules if r.startswith("/ops")))) if not missing else \
        f"missing routes: {', '.join(missing)}"


def wait_for_view(wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        ready, why = view_routes()
        if ready:
            print(f"ops view: ready ({why})")
            return True
        if time.monotonic() >= deadline:
            print(f"ops view: still not the real view after {wait_s:.0f} s ({why}); the HTTP part is skipped")
            return False
        print(f"ops view: not ready ({why}); checking again in 60 s")
        time.sleep(60)


def absolute_paths(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: absolute_paths(value) for key, value in node.items()}
    if isinstance(node, list):
        return [absolute_paths(value) for value in node]
    if isinstance(node, str) and "/" in node and "://" not in node and not node.startswith("/") and (ROOT / node).exists():
        return str((ROOT / node).resolve())
    return node


def http_pages(db_path: Path, info: dict[str, Any], runs: int) -> list[Query]:
    import yaml
    from werkzeug.security import generate_password_hash

    import config as config_mod
    import gateway

    data = absolute_paths(yaml.safe_load((ROOT / "config.example.yaml").read_text()))
    data["database"]["path"] = str(db_path)
    data["mappings"]["dir"] = str((ROOT / "mappings").resolve())
    data["logging"]["level"] = "WARNING"
    password = secrets.token_urlsafe(18)
    data["ops"]["users"] = [{"name": "bench-admin", "role": "admin", "password_hash": generate_password_hash(password)}]
    data["ops"]["secret_key"] = secrets.token_hex(32)
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    store = app.extensions["gateway.store"]
    try:
        client = app.test_client()
        form = client.get("/ops/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token"\s+value="([^"]+)"', form)
        if token is None:
            raise RuntimeError("no CSRF token in the sign-in form")
        answer = client.post("/ops/login", data={"username": "bench-admin", "password": password,
                                                 "csrf_token": token.group(1)})
        if answer.status_code != 302:
            raise RuntimeError(f"sign-in answered {answer.status_code}, not a redirect")
        print(f"signed in as bench-admin (admin) -> {answer.headers.get('Location')}")

        first = client.get("/ops/log").get_data(as_text=True)
        nxt = re.search(r'href="(/ops/log\?[^"]*before=[^"]+)"', first)
        next_url = nxt.group(1).replace("&amp;", "&") if nxt else None
        since = (EPOCH + dt.timedelta(microseconds=info["now"] - 30 * DAY)).strftime("%Y-%m-%dT%H:%M")
        pages = [
            ("http_dash", "GET /ops/ (dashboard)", "/ops/"),
            ("http_log", "GET /ops/log (first page)", "/ops/log"),
            ("http_log_next", "GET /ops/log (next page, from the page's link)", next_url),
            ("http_log_case", "GET /ops/log?case_id=…", f"/ops/log?case_id={info['heavy']}"),
            ("http_log_error", "GET /ops/log?error_code=GW062", "/ops/log?error_code=GW062"),
            ("http_log_combo", "GET /ops/log?target=demo_soap&status=retry&since=-30 d",
             f"/ops/log?target=demo_soap&status=retry&since={since}"),
            ("http_log_event", "GET /ops/log?event=target_paused", "/ops/log?event=target_paused"),
            ("http_log_case_status", "GET /ops/log?case_id=…&status=ok", f"/ops/log?case_id={info['typical']}&status=ok"),
            ("http_case_heavy", "GET /ops/cases/<id> (busiest case)", f"/ops/cases/{info['heavy']}"),
            ("http_case_typical", "GET /ops/cases/<id> (typical case)", f"/ops/cases/{info['typical']}"),
            ("http_dead", "GET /ops/dead (dead letters)", "/ops/dead"),
        ]
        out = []
        for key, label, url in pages:
            if url is None:
                print(f"  {label}: no next-page link on /ops/log; skipped")
                continue
            statuses = []

            def get(url=url, statuses=statuses):
                response = client.get(url)
                statuses.append(response.status_code)
                return response

            q = measure(key, label, get, store.db, runs, lambda r: f"{len(r.get_data()) / 1000:.0f} KB")
            q.status_ok = all(s == 200 for s in statuses)
            q.rows += "" if q.status_ok else f" HTTP {sorted(set(statuses))}"
            q.label += f"  [{url if len(url) < 70 else url[:67] + '…'}]"
            out.append(q)
        return out
    finally:
        app.extensions["gateway.worker"].stop()
        store.close()


# -- output ----------------------------------------------------------------------------------------


def markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def show_params(params: Any) -> str:
    if not params:
        return ""
    return "  -- params " + ", ".join(repr(p) if not isinstance(p, str) or len(p) < 40 else repr(p[:37] + "…") for p in params)


def print_plans(queries: list[Query], before: dict[str, Query], printed: dict[str, list[str]]) -> None:
    """Each statement with its parameters, its median time on its own and its plan (once;
    later uses of the same statement with the same plan are only named)."""
    for q in queries:
        print(f"### {q.label}")
        for (sql, params), plan, ms in zip(q.statements, q.plans, q.stmt_ms):
            text = normal(sql)
            if text in printed and printed[text] == plan:
                print(f"  [{ms:7.2f} ms] {text[:100]}{'…' if len(text) > 100 else ''}  (plan as above)")
                continue
            printed[text] = plan
            print(f"  [{ms:7.2f} ms] {text}{show_params(params)}")
            for line in plan:
                print(f"                 {line}")
            earlier = before.get(q.key)
            if earlier is not None:
                old = dict(zip((normal(s) for s, _ in earlier.statements), earlier.plans)).get(text)
                if old is not None and old != plan:
                    print("               before ANALYZE the plan was:")
                    for line in old:
                        print(f"                 {line}")
        print()


def findings(queries: list[Query], before: dict[str, Query]) -> tuple[list[str], list[str]]:
    """(failures, notes): full scans of sync_log, slow medians and failed pages; then what
    else the plans show (ordered walks, scans of other tables, sorts), each note once with
    the queries it concerns."""
    bad: list[str] = []
    notes: dict[str, list[str]] = {}
    for q in queries:
        name = q.label.split("  [")[0]
        for (sql, _), plan in zip(q.statements, q.plans):
            b, n = judge(plan)
            bad += [f"{name}: {x}" for x in b]
            for x in n:
                if name not in notes.setdefault(x, []):
                    notes[x].append(name)
        if q.median > SLOW_MS:
            bad.append(f"{name}: median {q.median:.1f} ms > {SLOW_MS:.0f} ms")
        if not q.status_ok:
            bad.append(f"{name}: not every answer was HTTP 200 ({q.rows})")
    for q in before.values():
        name = q.label.split("  [")[0]
        for (sql, _), plan in zip(q.statements, q.plans):
            b, _ = judge(plan)
            bad += [f"{name} (before ANALYZE): {x}" for x in b]
        if q.median > SLOW_MS:
            bad.append(f"{name} (before ANALYZE): median {q.median:.1f} ms > {SLOW_MS:.0f} ms")
        if not q.status_ok:
            bad.append(f"{name} (before ANALYZE): not every answer was HTTP 200 ({q.rows})")
    return list(dict.fromkeys(bad)), [f"{text}\n          in: {'; '.join(names)}" for text, names in notes.items()]


# -- main ----------------------------------------------------------------------------------------


def file_sizes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.glob("gateway.db*"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-rows", type=int, default=1_000_000, help="sync-log rows (default 1000000)")
    parser.add_argument("--cases", type=int, default=100_000, help="cases (default 100000)")
    parser.add_argument("--outbox", type=int, default=150_000, help="outbox rows (default 150000)")
    parser.add_argument("--attempts", type=int, default=200_000, help="delivery attempts, about (default 200000)")
    parser.add_argument("--runs", type=int, default=20, help="runs of each query or page (default 20)")
    parser.add_argument("--wait-view", type=float, default=600, help="seconds to wait for the real ops view (default 600)")
    parser.add_argument("--seed", type=int, default=1177)
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="sqlite",
                        help="the store's backend; both: SQLite first, then PostgreSQL on the same rows, with ratios")
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="the PostgreSQL database (a schema of its own is made in it and dropped after)")
    args = parser.parse_args()
    if args.backend == "postgres":
        now = now_us()
        print_header(args)
        queries = postgres_queries(args, now)
        print_pg(queries, args.runs)
        return 1 if any(q.median > 100 for q in queries) else 0
    sqlite_queries: list[Query] = []
    status = sqlite_main(args, sqlite_queries)
    if args.backend == "both":
        queries = postgres_queries(args, sqlite_queries[0].now if sqlite_queries else now_us())  # type: ignore[attr-defined]
        print_pg(queries, args.runs)
        print(f"## PostgreSQL / SQLite per store query (SQLite after ANALYZE; PostgreSQL after VACUUM ANALYZE), {args.runs} runs each")
        print()
        by_key = {q.key: q for q in sqlite_queries}
        table = []
        for q in queries:
            b = by_key.get(q.key)
            table.append([q.label, q.rows, f"{b.median:.2f}" if b else "-", f"{q.median:.2f}", f"{q.max:.2f}",
                          f"{q.median / b.median:.2f}" if b and b.median else "-"])
        print(markdown(["query", "rows (PG)", "SQLite median ms", "PG median ms", "PG max ms", "PG/SQLite"], table))
        print()
        status = status or int(any(q.median > 100 for q in queries))
    return status


def now_us() -> int:
    now_dt = dt.datetime.now(dt.timezone.utc)
    return int((now_dt - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) / dt.timedelta(microseconds=1))


def print_header(args: argparse.Namespace) -> None:
    info = machine()
    print("# gateway operations benchmark (bench/ops.py)")
    print(f"date     {info['date']}")
    print(f"machine  {info['cores']} cores (nproc), {info['cpu']}; {info['memory']} RAM; {info['os']}")
    print(f"python   {info['python']} ({sys.executable}); SQLite {info['sqlite']}")
    print(f"run      --backend {args.backend} --log-rows {args.log_rows} --cases {args.cases} --outbox {args.outbox} "
          f"--attempts {args.attempts} --runs {args.runs} --seed {args.seed}")
    print()


def postgres_queries(args: argparse.Namespace, now: int) -> list[Query]:
    """The same rows (same seed, same instant) in a PostgreSQL schema of their own, filled with
    COPY; VACUUM ANALYZE (autovacuum's job in production), then the store's own queries through a
    ``Store`` on that schema. The schema is dropped at the end."""
    import uuid

    import psycopg

    name = f"bench_ops_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{name}"')
        version = admin.execute("SHOW server_version").fetchone()[0]
    url = f"{args.url}{'&' if '?' in args.url else '?'}options=-csearch_path%3D{name}"
    print(f"## PostgreSQL {version}: schema {name} of {args.url}")
    try:
        store = Store(url, pool_size=4)
        store.migrate()
        started = time.perf_counter()
        filler = Filler(args, now)
        filler.make_all()
        generated = time.perf_counter() - started
        written = filler.write(store)
        shared = {"heavy": filler.heavy.case_id, "typical": filler.typical.case_id, "now": now}
        del filler
        gc.collect()
        analyzed = time.perf_counter()
        # VACUUM ANALYZE, what autovacuum leaves on a live database: statistics, and the visibility
        # map that lets the dashboard's whole-table counts read only the (target, status) indexes
        store.db.execute("VACUUM ANALYZE")
        analyze_s = time.perf_counter() - analyzed
        shared["log_rows"] = store.db.execute("SELECT count(*) FROM sync_log").fetchone()[0]
        shared["heavy_events"] = store.db.execute("SELECT count(*) FROM sync_log WHERE case_id = ?",
                                                  [shared["heavy"]]).fetchone()[0]
        size = store.db.execute("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
                                "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'"
                                ).fetchone()[0]
        print(f"fill     generated in {generated:.1f} s; COPY in {sum(written.values()):.1f} s ("
              + ", ".join(f"{k} {v:.1f} s" for k, v in written.items()) + f"); VACUUM ANALYZE {analyze_s:.1f} s; "
              f"{shared['log_rows']} sync-log rows; schema {int(size) / MIB:.1f} MiB")
        queries = store_queries(store, shared, args.runs)
        print(f"  (walking pages 1-19 to reach page 20 took {shared['walk_19_ms']:.1f} ms in all)")
        store.close()
        return queries
    finally:
        with psycopg.connect(args.url, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def print_pg(queries: list[Query], runs: int) -> None:
    print(f"## store queries on PostgreSQL (after VACUUM ANALYZE), {runs} runs each")
    print()
    print(markdown(["query", "rows", "first ms", "median ms", "max ms"],
                   [[q.label, q.rows, f"{q.ms[0]:.2f}", f"{q.median:.2f}", f"{q.max:.2f}"] for q in queries]))
    print()


def sqlite_main(args: argparse.Namespace, keep: list[Query]) -> int:

    print_header(args)
    folder = Path(tempfile.mkdtemp(prefix="gateway-bench-ops-"))
    db_path = folder / "gateway.db"
    failed = False
    try:
        now = now_us()
        store = Store(db_path)
        store.migrate()
        started = time.perf_counter()
        filler = Filler(args, now)
        filler.make_all()
        generated = time.perf_counter() - started
        written = filler.write(store)
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        fill_s = time.perf_counter() - started
        counts = store.counts()
        counts["attempts"] = store.db.execute("SELECT count(*) FROM attempts").fetchone()[0]
        counts["status_updates"] = store.db.execute("SELECT count(*) FROM status_updates").fetchone()[0]
        heavy = filler.heavy.case_id
        typical = filler.typical.case_id
        heavy_events = store.db.execute("SELECT count(*) FROM sync_log WHERE case_id = ?", [heavy]).fetchone()[0]
        typical_events = store.db.execute("SELECT count(*) FROM sync_log WHERE case_id = ?", [typical]).fetchone()[0]
        mix = store.db.execute("SELECT event, count(*) FROM sync_log GROUP BY event ORDER BY 2 DESC").fetchall()
        codes = store.db.execute("SELECT error_code, count(*) FROM sync_log WHERE error_code IS NOT NULL "
                                 "GROUP BY 1 ORDER BY 2 DESC").fetchall()
        outbox_mix = store.db.execute("SELECT status, count(*) FROM outbox GROUP BY 1 ORDER BY 2 DESC").fetchall()
        day_ago = iso(now - DAY)
        last_day = store.db.execute("SELECT outcome, count(*) FROM attempts WHERE started_at >= ? GROUP BY 1 ORDER BY 2 DESC",
                                    [day_ago]).fetchall()
        span = store.db.execute("SELECT min(at), max(at) FROM sync_log").fetchone()
        ordered = store.db.execute("SELECT count(*) FROM sync_log a JOIN sync_log b ON b.id = a.id + 1 WHERE b.at < a.at"
                                   ).fetchone()[0]
        store.close()
        sizes = file_sizes(folder)
        del filler  # millions of objects: a full garbage collection would show up in the timings
        gc.collect()
        print(f"fill     generated in {generated:.1f} s; written in {sum(written.values()):.1f} s ("
              + ", ".join(f"{k} {v:.1f} s" for k, v in written.items()) + f"); {fill_s:.1f} s in all")
        print("rows     " + ", ".join(f"{n} {t}" for t, n in counts.items()))
        print(f"sync_log {span[0]} .. {span[1]}; ids in time order: {'yes' if ordered == 0 else f'NO ({ordered} inversions)'}")
        print("  events      " + ", ".join(f"{e} {n}" for e, n in mix))
        print("  error codes " + ", ".join(f"{e} {n} ({n / counts['sync_log']:.2%})" for e, n in codes))
        print("outbox   " + ", ".join(f"{s} {n}" for s, n in outbox_mix))
        print("attempts in the last 24 h: " + ", ".join(f"{o} {n}" for o, n in last_day)
              + f" ({sum(n for _, n in last_day)} in all)")
        print(f"cases    busiest {heavy} ({heavy_events} sync-log events); typical {typical} ({typical_events} events)")
        print("database " + ", ".join(f"{name} {size / MIB:.1f} MiB" for name, size in sizes.items()))
        try:
            check = sqlite3.connect(db_path)
            objects = check.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 14").fetchall()
            check.close()
            print("  largest objects: " + ", ".join(f"{n} {s / MIB:.1f}" for n, s in objects) + " (MiB)")
        except sqlite3.Error:
            pass
        print()

        shared = {"heavy": heavy, "typical": typical, "now": now, "log_rows": counts["sync_log"],
                  "heavy_events": heavy_events}

        print(f"## store queries before ANALYZE (no sqlite_stat1: the gateway never runs ANALYZE), {args.runs} runs each")
        store = Store(db_path)
        before = {q.key: q for q in store_queries(store, shared, args.runs)}
        store.close()
        for q in before.values():
            print(f"  {q.label:<62} rows {q.rows:>16}  first {q.ms[0]:7.2f}  median {q.median:7.2f} ms  max {q.max:7.2f} ms")
        print()

        print("## HTTP before ANALYZE: the ops view through Flask's test client, signed in as admin")
        view_ready = wait_for_view(args.wait_view)
        pages_before: list[Query] = []
        if view_ready:
            pages_before = http_pages(db_path, shared, args.runs)
            for q in pages_before:
                print(f"  {q.label:<100} {q.rows:>8}  first {q.ms[0]:7.2f}  median {q.median:7.2f} ms  max {q.max:7.2f} ms")
        print()

        print("## what would fix what, before ANALYZE (tried on this temporary store only; store.py is not changed)")
        proposals = what_if_plain(db_path, shared, args.runs)
        print()

        started = time.perf_counter()
        conn = sqlite3.connect(db_path)
        conn.execute("ANALYZE")
        conn.close()
        print(f"ANALYZE  {time.perf_counter() - started:.1f} s")
        print()

        print(f"## store queries after ANALYZE, {args.runs} runs each")
        store = Store(db_path)
        after = store_queries(store, shared, args.runs)
        store.close()
        keep.extend(after)
        if after:
            after[0].now = now  # type: ignore[attr-defined]  # the instant the PostgreSQL run fills for
        for q in after:
            print(f"  {q.label:<62} rows {q.rows:>16}  first {q.ms[0]:7.2f}  median {q.median:7.2f} ms  max {q.max:7.2f} ms")
        print(f"  (walking pages 1-19 to reach page 20 took {shared['walk_19_ms']:.1f} ms in all)")
        print()

        print("## HTTP after ANALYZE")
        pages: list[Query] = []
        if view_ready:
            pages = http_pages(db_path, shared, args.runs)
            for q in pages:
                print(f"  {q.label:<100} {q.rows:>8}  first {q.ms[0]:7.2f}  median {q.median:7.2f} ms  max {q.max:7.2f} ms")
        else:
            print("  skipped: the ops view is not there")
        print()

        print("## what would fix what, after ANALYZE (tried on this temporary store only; store.py is not changed)")
        proposals += what_if(db_path, shared, args.runs)
        print()

        before.update({q.key: q for q in pages_before})
        print("## query plans (EXPLAIN QUERY PLAN of every statement, after ANALYZE; [median ms of the statement alone])")
        print()
        printed: dict[str, list[str]] = {}
        print_plans(after + pages, before, printed)

        bad, notes = findings(after + pages, before)
        print("## findings")
        for line in bad:
            print(f"  FAIL  {line}")
        for line in notes:
            print(f"  note  {line}")
        if not bad:
            print("  no full scan of sync_log; every median under 100 ms")
        print()

        print("## results")
        print()
        header = ["query", "rows", "no ANALYZE median ms", "max ms", "ANALYZE first ms", "median ms", "max ms", "sync_log access"]
        table = []
        for q in after:
            b = before.get(q.key)
            access = short_plan(q)
            if b is not None and short_plan(b) != access:
                access += f" (no ANALYZE: {short_plan(b)})"
            table.append([q.label, q.rows, f"{b.median:.2f}" if b else "-", f"{b.max:.2f}" if b else "-",
                          f"{q.ms[0]:.2f}", f"{q.median:.2f}", f"{q.max:.2f}", access])
        print(markdown(header, table))
        print()
        if pages:
            header = ["page (admin, test client)", "size", "no ANALYZE median ms", "max ms", "ANALYZE first ms",
                      "median ms", "max ms"]
            table = []
            for q in pages:
                b = before.get(q.key)
                table.append([q.label.split("  [")[0], q.rows, f"{b.median:.2f}" if b else "-", f"{b.max:.2f}" if b else "-",
                              f"{q.ms[0]:.2f}", f"{q.median:.2f}", f"{q.max:.2f}"])
            print(markdown(header, table))
            print()
        print(markdown(["proposal (temporary store only)", "rows", "median ms", "max ms", "same rows", "plan"], proposals))
        print()
        print(markdown(["database", "MiB"], [[n, f"{s / MIB:.1f}"] for n, s in sizes.items()]))
        print()
        failed = bool(bad)
        print("FAILED: see the findings above" if failed else "all queries indexed and under 100 ms")
        return 1 if failed else 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
