"""The store's outbox: claim, complete, fail and recover the rows the worker delivers.

Role: the queue. Rows are claimed with a conditional update (safe with several worker
processes), kept in order per case, and every attempt is recorded.

May import: model, errors, clock (through ``store.base``).

Invariants: a row is in flight for one worker at a time; completing or failing a row whose
claim was lost changes nothing but the attempt record; a worker whose heartbeat stopped
loses its rows to the queue. A claim is committed without waiting for the disk
(``write(durable=False)``: its group's WAL is not synced; WAL keeps it atomic, and the
next durable commit on the file makes it durable too): a claim lost to a power cut leaves its row
pending, as if never claimed, which is what lease recovery would make of it anyway, and
nobody was told anything in between. So is a completion: lost to a power cut, its row is
in flight (or pending) again, recovery brings it back and the redelivery carries the same
idempotency key (the provider and 1177 take it once), as for a delivery whose outcome the
store could not write; the receipt it queued is queued again by the redelivery's
completion. What was acknowledged to someone (intake, an operator's action, a failure)
waits for the disk (its group's WAL is synced before ``write()`` returns).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlite_utils import Database

from clock import instant
from errors import Undeliverable
from model import (
    Message,
    redact_person_ids,
)

from .base import (
    CLAIMABLE_SQL,
    content_text,
    direction_of,
    parse_ts,
    scalar,
    ts,
)
from .replies import Replies


@dataclass(frozen=True)
class Job:
    """An outbox row claimed by one worker, with what the delivery needs of its case."""

    id: int
    case_id: str
    action: str
    ref_id: str
    target: str
    attempt: int  # 1 for the first attempt since the row was (re)queued
    idempotency_key: str
    claimed_by: str
    receiver_hsa_id: str
    provider_unit_code: str | None
    provider_case_id: str | None
    correlation_id: str | None
    national_case_id: str | None = None
    case_type: str | None = None  # the case's type (which receipt text applies)


#: The fields of ``Job`` read from its outbox row and case, by column name (``claimed_by`` is the claimer).
JOB_COLUMNS = ("id", "case_id", "action", "ref_id", "target", "attempt", "idempotency_key", "receiver_hsa_id",
               "provider_unit_code", "provider_case_id", "correlation_id", "national_case_id", "case_type")


#: The most of a response excerpt's body the store keeps, whatever the adapter sent.
RESPONSE_BODY_LIMIT = 4096


def response_json(response: dict[str, Any] | None) -> str | None:
    """An attempt's ``response`` as stored: JSON, person ids masked once more, the body bounded."""
    if not response:
        return None
    kept = {
        "status": response.get("status"),
        "headers": {str(k)[:64]: str(v)[:200] for k, v in list((response.get("headers") or {}).items())[:20]},
        "body": str(response.get("body") or "")[:RESPONSE_BODY_LIMIT],
        "truncated": bool(response.get("truncated")),
    }
    return redact_person_ids(json.dumps(kept, ensure_ascii=False))



@dataclass(frozen=True)
class Completion:
    """What delivering a row writes besides the row itself, in the same transaction.

    ``case_set``: what it sets on the case's row (``SET`` assignments, parameter ``now``),
    written in one UPDATE with the ids the target gave the case and the erasure of the
    contact details: the row carries the case's content, so each UPDATE of it writes the
    whole of it again. ``sql``: a statement on another table, with the parameters ``now``,
    ``case_id`` and ``ref_id``. ``of_message``: the row's ``ref_id`` is a message id (the
    sync log names it); ``erases_contact``: the citizen's contact details leave the gateway
    (rule 8); ``frees_receipt_place``: the place kept for the automatic receipt is taken by
    it, or cancelled."""

    sql: str | None = None
    case_set: str | None = None
    of_message: bool = False
    erases_contact: bool = False
    frees_receipt_place: bool = False


#: The completions by name; each action of the worker's registry names its own.
COMPLETIONS: dict[str, Completion] = {
    "deliver_case": Completion(case_set="status = 'delivered', updated_at = :now", erases_contact=True,
                               frees_receipt_place=True),
    "deliver_message": Completion("UPDATE messages SET status = 'delivered' WHERE message_id = :ref_id", of_message=True),
    "add_message": Completion("UPDATE messages SET status = 'sent', sent_at = :now WHERE message_id = :ref_id",
                              of_message=True),
    "update_status": Completion("UPDATE status_updates SET state = 'sent', sent_at = :now WHERE id = CAST(:ref_id AS INTEGER)"),
    "register_case": Completion(case_set="status = 'registered', updated_at = :now", frees_receipt_place=True),
}

class Outbox(Replies):
    """The delivery queue the worker claims from."""

    def claim(self, worker: str, *, limit: int, lease_s: float, now: dt.datetime | None = None,
              skip_ids: frozenset[int] = frozenset(), room: dict[str, int] | None = None,
              room_per_target: int | None = None, targets: Sequence[str] | None = None) -> list[Job]:
        """Claim up to ``limit`` due rows for ``worker`` with a conditional update.

        A row is due when it is pending, its ``not_before`` has passed, its target is not
        paused, and no earlier row of the same case is still pending, in flight or dead
        (order per case; other cases are not held up). ``room``: how many more calls each
        target may take now (``room_per_target`` for the rest); ``targets``: the targets the
        worker delivers to. While one of them is at its limit, the others' due rows are read
        target by target (index (target, status, not_before)), so the claim never walks the
        backlog of the target that is full, however long it is.
        """
        if limit <= 0:
            return []
        now = now or instant()
        lease = ts(now + dt.timedelta(seconds=lease_s))
        jobs: list[Job] = []
        with self.write(durable=False) as db:  # lost to a power cut, a claim loses nothing
            left = dict(room or {})
            full = sorted(t for t, n in left.items() if n <= 0)
            skipped = f" AND o.id NOT IN ({', '.join('?' for _ in skip_ids)})" if skip_ids else ""
            if full and targets is not None and room_per_target is not None:
                candidates = []
                for target in sorted(set(targets) - set(full)):
                    candidates += db.execute(
                        f"SELECT o.id, o.target, o.not_before FROM outbox o WHERE o.target = ? AND {CLAIMABLE_SQL}"
                        f"{skipped} AND o.not_before <= ? ORDER BY o.not_before, o.id LIMIT ?",
                        [target, *sorted(skip_ids), ts(now), min(limit, left.get(target, room_per_target))],
                    ).fetchall()
                candidates.sort(key=lambda row: (row["not_before"], row["id"]))
            else:
                skip = (f" AND o.target NOT IN ({', '.join('?' for _ in full)})" if full else "") + skipped
                candidates = db.execute(
                    f"SELECT o.id, o.target FROM outbox o WHERE {CLAIMABLE_SQL}{skip} AND o.not_before <= ? "
                    "ORDER BY o.not_before, o.id LIMIT ?",
                    [*full, *sorted(skip_ids), ts(now), limit if room_per_target is None else limit * 8],
                ).fetchall()
            chosen: list[int] = []
            for candidate in candidates:
                if len(chosen) >= limit:
                    break
                target = candidate["target"]
                if room_per_target is not None:
                    if left.setdefault(target, room_per_target) <= 0:
                        continue
                    left[target] -= 1
                chosen.append(candidate["id"])
            if not chosen:
                return jobs
            # two statements for the whole claim, not two per row: each statement under the
            # write turn gives up the GIL and waits to get it back from the process's other threads
            marks = ", ".join("?" for _ in chosen)
            claimed = {row["id"] for row in db.execute(
                f"""UPDATE outbox SET status = 'in_flight', claimed_by = ?, lease_until = ?,
                       attempts = attempts + 1, updated_at = ?
                   WHERE id IN ({marks}) AND status = 'pending' RETURNING id""",
                [worker, lease, ts(now), *chosen],
            ).fetchall()}
            if not claimed:
                return jobs
            rows = {row["id"]: row for row in db.execute(
                f"""SELECT o.id, o.case_id, o.action, o.ref_id, o.target, o.attempts AS attempt, o.idempotency_key,
                          c.receiver_hsa_id, c.provider_unit_code, c.provider_case_id, c.correlation_id,
                          c.national_case_id, c.case_type
                   FROM outbox o JOIN cases c ON c.case_id = o.case_id WHERE o.id IN ({", ".join("?" for _ in claimed)})""",
                sorted(claimed),
            ).fetchall()}
            jobs.extend(Job(**{k: rows[i][k] for k in JOB_COLUMNS}, claimed_by=worker) for i in chosen if i in rows)
        return jobs

    def subject_of_care_id(self, case_id: str) -> str:
        """The person id of a case's citizen (a message to them in 1177 names it), read from
        the stored content without building the case or reading its files."""
        data = self._case_content(self.db, case_id)
        person = ((data or {}).get("subject_of_care") or {}).get("person_id") or {}
        if not person.get("id"):
            state = self._case_state(self.db, case_id)
            why = "was purged after the retention period" if state and state["purged_at"] else "is not stored"
            raise Undeliverable(f"the content of case '{case_id[:64]}' {why}; nothing can be delivered for it.")
        return str(person["id"])

    def _finish(
        self,
        db: Database,
        job: Job,
        *,
        started: dt.datetime,
        duration_ms: float,
        outcome: str,
        status_code: int | None,
        error_code: str | None,
        detail: str | None,
        response: dict[str, Any] | None = None,
    ) -> None:
        db.execute(  # the attempt's number: one more than the row's attempts so far (replays included)
            """INSERT INTO attempts (outbox_id, case_id, target, attempt, started_at, duration_ms, outcome,
                   status_code, error_code, detail, response)
               VALUES (?, ?, ?, (SELECT count(*) + 1 FROM attempts WHERE outbox_id = ?), ?, ?, ?, ?, ?, ?, ?)""",
            [job.id, job.case_id, job.target, job.id, ts(started), round(duration_ms, 1), outcome, status_code,
             error_code, detail, response_json(response)],
        )

    def complete(
        self,
        job: Job,
        *,
        started: dt.datetime,
        duration_ms: float,
        status_code: int | None,
        provider_case_id: str | None = None,
        national_case_id: str | None = None,
        detail: str | None = None,
        follow_up: Message | None = None,
        completion: Completion | None = None,
        now: dt.datetime | None = None,
    ) -> bool:
        """Mark a claimed row delivered. False if the claim was lost (lease ran out meanwhile).

        ``completion``: what else delivering it writes (one of ``COMPLETIONS``, named by the
        worker's action; by default the one of the row's action);
        ``provider_case_id``/``national_case_id``: the ids the provider or 1177 gave the case;
        ``detail``: what the target said besides OK (1177's INFO text), kept on the attempt;
        ``follow_up``: a message to the citizen queued in the same transaction (the automatic
        receipt once the provider has accepted the case), so it cannot be lost in between."""
        now = now or instant()
        completion = completion or COMPLETIONS[job.action]
        with self.write(durable=False) as db:  # lost to a power cut, the row is redelivered
            done = db.execute(
                """UPDATE outbox SET status = 'done', delivered_at = ?, updated_at = ?, lease_until = NULL,
                       last_error = NULL, last_error_code = NULL
                   WHERE id = ? AND status = 'in_flight' AND claimed_by = ? RETURNING created_at""",
                [ts(now), ts(now), job.id, job.claimed_by],
            ).fetchall()
            updated = bool(done)
            detail = redact_person_ids(detail) if detail else None
            self._finish(db, job, started=started, duration_ms=duration_ms,
                         outcome="delivered" if updated else "delivered_late", status_code=status_code,
                         error_code=None, detail=detail if updated else "the lease had run out; the row was requeued")
            if not updated:
                return False
            self._count(db, "delivered", job.target, direction_of(job.action))
            created = done[0]["created_at"]
            self._observe_latency(db, job.target, direction_of(job.action), (now - parse_ts(created)).total_seconds())
            params = {"now": ts(now), "case_id": job.case_id}
            sets = [completion.case_set] if completion.case_set else []
            if provider_case_id:
                sets.append("provider_case_id = :provider_case_id")
                params["provider_case_id"] = provider_case_id
            if national_case_id:
                sets.append("national_case_id = :national_case_id")
                params["national_case_id"] = national_case_id
            erased = self._erased_content(db, job.case_id) if completion.erases_contact else None
            if erased is not None:
                sets.append("content = :content")
                params["content"] = erased
            if sets:
                db.execute(f"UPDATE cases SET {', '.join(sets)} WHERE case_id = :case_id", params)
            if completion.sql:
                db.execute(completion.sql, {"now": ts(now), "case_id": job.case_id, "ref_id": job.ref_id})
            self._log(db, now, correlation_id=job.correlation_id, case_id=job.case_id,
                      message_id=job.ref_id if completion.of_message else None,
                      direction=direction_of(job.action), event="delivered", status="ok", target=job.target,
                      hsa_id=job.receiver_hsa_id,
                      detail=f"{job.action}, attempt {job.attempt}, {round(duration_ms)} ms"
                      + (f", provider case {provider_case_id}" if provider_case_id else "")
                      + (f", 1177 case {national_case_id}" if national_case_id else "")
                      + (f"; {detail}" if detail else ""))
            if erased is not None:
                self._log(db, now, correlation_id=job.correlation_id, case_id=job.case_id, direction="in",
                          event="contact_erased", status="ok", target=job.target, hsa_id=job.receiver_hsa_id,
                          detail="the citizen's contact details were delivered (for messages only) and erased from the gateway")
            if completion.frees_receipt_place:
                if follow_up is not None:  # the receipt takes the place kept for it at intake
                    self._insert_reply(db, follow_up, hold_s=0, origin="auto", correlation_id=job.correlation_id,
                                       now=now, reserved=True)
                else:
                    self._cancel_receipt(db, job.case_id, now)
        return True

    def _erased_content(self, db: Database, case_id: str) -> str | None:
        """Rule 8: the citizen's contact details (given with consent, for messages only) are
        not kept once the provider has them: the case's content without them, or None when
        it has none (or is purged)."""
        data = self._case_content(db, case_id)
        if not data or not (data.get("subject_of_care") or {}).get("contact"):
            return None
        data["subject_of_care"]["contact"] = None
        return content_text(data)

    def fail(
        self,
        job: Job,
        *,
        started: dt.datetime,
        duration_ms: float,
        error_code: str,
        reason: str,
        status_code: int | None = None,
        retry_at: dt.datetime | None = None,
        now: dt.datetime | None = None,
        response: dict[str, Any] | None = None,
    ) -> bool:
        """Record a failed attempt: back to the queue at ``retry_at``, or dead when it is None.
        ``response``: what came back (``adapters.base.excerpt``), kept on the attempt."""
        now = now or instant()
        dead = retry_at is None
        reason = redact_person_ids(reason)  # a target's fault text may quote what it was sent
        with self.write() as db:
            updated = db.execute(
                """UPDATE outbox SET status = ?, not_before = COALESCE(?, not_before), updated_at = ?,
                       lease_until = NULL, last_error = ?, last_error_code = ?
                   WHERE id = ? AND status = 'in_flight' AND claimed_by = ?""",
                ["dead" if dead else "pending", ts(retry_at) if retry_at else None, ts(now), reason[:1000],
                 error_code, job.id, job.claimed_by],
            ).rowcount
            self._finish(db, job, started=started, duration_ms=duration_ms,
                         outcome=("dead" if dead else "retry") if updated else "failed_late",
                         status_code=status_code, error_code=error_code, detail=reason[:1000], response=response)
            if updated:
                self._count(db, "failed", job.target, direction_of(job.action))
                if dead:
                    self._count(db, "dead", job.target, direction_of(job.action))
                self._log(db, now, correlation_id=job.correlation_id, case_id=job.case_id,
                          message_id=job.ref_id if _of_message(job.action) else None,
                          direction=direction_of(job.action),
                          event="dead" if dead else "retry_scheduled", status="dead" if dead else "retry",
                          target=job.target, hsa_id=job.receiver_hsa_id, error_code=error_code,
                          # the reason may quote the target's answer (content): it stays on the
                          # attempt and the row, for readers; the sync log (metadata) has the code
                          detail=f"{job.action}, attempt {job.attempt}: {error_code}"
                          + (f" (HTTP {status_code})" if status_code else "")
                          + ("" if retry_at is None else f"; next attempt {ts(retry_at)}"))
        return bool(updated)

    def recover_leases(self, now: dt.datetime | None = None, *, stale_s: float | None = None) -> int:
        """Return to the queue the rows of workers that are gone; how many.

        A worker whose heartbeat is older than ``stale_s`` seconds is dead: its rows come
        back at once. The lease is the last resort, for a worker that beats but hangs (or
        one that never beat). A row whose worker beats and whose lease runs is never taken."""
        now = now or instant()
        stale_before = ts(now - dt.timedelta(seconds=stale_s)) if stale_s is not None else None
        with self.write() as db:
            rows = db.execute(
                """SELECT o.id, o.case_id, o.target, o.claimed_by, o.action, c.receiver_hsa_id, c.correlation_id,
                          o.lease_until < ? AS expired
                   FROM outbox o JOIN cases c ON c.case_id = o.case_id
                   LEFT JOIN heartbeats h ON h.name = o.claimed_by
                   WHERE o.status = 'in_flight' AND (o.lease_until < ? OR (CAST(? AS TEXT) IS NOT NULL AND h.at < ?))""",
                [ts(now), ts(now), stale_before, stale_before],
            ).fetchall()
            for row in rows:
                expired = row["expired"]
                why = ("its lease ran out during the attempt" if expired
                       else f"its heartbeat stopped (none for {stale_s:g} s)")
                db.execute(
                    """UPDATE outbox SET status = 'pending', claimed_by = NULL, lease_until = NULL, updated_at = ?,
                           last_error = ?, last_error_code = NULL
                       WHERE id = ? AND status = 'in_flight'""",
                    [ts(now), f"requeued: the worker {why}", row["id"]],
                )
                self._log(db, now, correlation_id=row["correlation_id"], case_id=row["case_id"],
                          direction=direction_of(row["action"]), event="lease_expired" if expired else "worker_dead",
                          status="retry", target=row["target"], hsa_id=row["receiver_hsa_id"],
                          detail=f"{row['action']}: {row['claimed_by']} is gone ({why}); requeued")
        return len(rows)

    def next_due(self) -> dt.datetime | None:
        """When the earliest claimable row becomes due (None when there is none)."""
        due = scalar(self.db, f"SELECT min(o.not_before) FROM outbox o WHERE {CLAIMABLE_SQL}")
        return parse_ts(due) if due else None

    def set_paused(self, target: str, paused: bool, *, by: str = "cli", now: dt.datetime | None = None) -> None:
        now = now or instant()
        with self.write() as db:
            db.execute(
                "INSERT INTO targets (name, paused, changed_at, changed_by) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET paused = excluded.paused, changed_at = excluded.changed_at, "
                "changed_by = excluded.changed_by",
                [target, int(paused), ts(now), by],
            )
            self._log(db, now, direction="in", event="target_paused" if paused else "target_resumed",
                      status="ok", target=target, detail=f"by {by}")

    def replay(self, outbox_id: int, *, by: str = "cli", now: dt.datetime | None = None) -> bool:
        """Put a dead row back in the queue with a fresh attempt budget; its attempts are kept."""
        now = now or instant()
        with self.write() as db:
            row = db.execute("SELECT case_id, target FROM outbox WHERE id = ? AND status = 'dead'", [outbox_id]).fetchone()
            if row is None:
                return False
            db.execute(
                "UPDATE outbox SET status = 'pending', attempts = 0, not_before = ?, updated_at = ? WHERE id = ?",
                [ts(now), ts(now), outbox_id],
            )
            self._log(db, now, case_id=row["case_id"], direction="in", event="replayed", status="ok", target=row["target"],
                      detail=f"outbox row {outbox_id} replayed by {by}")
        return True

    def cancel(self, outbox_id: int, *, by: str = "cli", now: dt.datetime | None = None) -> bool:
        """Give up a pending or dead row (it will never be delivered)."""
        now = now or instant()
        with self.write() as db:
            row = db.execute(
                "SELECT case_id, target, action FROM outbox WHERE id = ? AND status IN ('pending', 'dead')", [outbox_id]
            ).fetchone()
            if row is None:
                return False
            db.execute("UPDATE outbox SET status = 'cancelled', updated_at = ? WHERE id = ?", [ts(now), outbox_id])
            if row["action"] in ("deliver_case", "register_case"):  # no receipt for a case that never got there
                self._cancel_receipt(db, row["case_id"], now)
            self._log(db, now, case_id=row["case_id"], direction="in", event="cancelled", status="ok", target=row["target"],
                      detail=f"outbox row {outbox_id} cancelled by {by}")
        return True


def _of_message(action: str) -> bool:
    """Whether a row of ``action`` carries a message (the sync log names its id)."""
    completion = COMPLETIONS.get(action)
    return completion is not None and completion.of_message
