"""The store's way back: the provider's messages and status changes to the citizen.

Role: queue replies (held by the review window or the wrong-patient guard), release or
cancel them, give the preview of what will be sent, keep the polling cursors.

May import: model, errors, clock (through ``store.base``).

Invariants: a message, once sent, is final (``NotCancellable``); a held message leaves only
by an explicit release, audited.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import Any

from sqlite_utils import Database

from clock import instant
from errors import (
    CasePurged,
    IdConflict,
    NotCancellable,
    NotFound,
    NotHeld,
    StoreError,
)
from model import (
    Attachment,
    CaseStatus,
    GuardOutcome,
    Message,
    StatusUpdate,
    redact_person_ids,
    status_from_data,
    to_data,
)

from .base import (
    NATIONAL_TARGET,
    RECEIPT,
    Accepted,
    StoreBase,
    content_json,
    parse_ts,
    refuse_finished,
    scalar,
    ts,
)


class Replies(StoreBase):
    """The provider's messages and statuses on their way to the citizen."""

    def add_reply(
        self,
        message: Message,
        *,
        hold_s: float = 0.0,
        origin: str = "api",
        correlation_id: str | None = None,
        reopen: bool = False,
        guard: GuardOutcome | None = None,
        now: dt.datetime | None = None,
    ) -> Accepted:
        """Queue a message to the citizen (``AddMessage``), held ``hold_s`` seconds for review.

        The content kept here is the immutable record of what the citizen is sent. A closed
        case takes it only with ``reopen`` (the status IN_PROGRESS is queued first, in the
        same transaction); a purged case never. ``guard``: the wrong-patient guard's outcome
        (rule 14), kept with the message; a held one waits in the outbox as ``held``, which
        the worker never claims, until ``release_message``.
        """
        now = now or instant()
        with self.write() as db:
            return self._insert_reply(db, message, hold_s=hold_s, origin=origin, correlation_id=correlation_id,
                                      reopen=reopen, now=now, guard=guard)

    def _insert_reply(
        self, db: Database, message: Message, *, hold_s: float, origin: str, correlation_id: str | None, now: dt.datetime,
        reopen: bool = False, reserved: bool = False, guard: GuardOutcome | None = None,
    ) -> Accepted:
        content, content_hash = content_json(message, not_hashed=("created_time",))
        case = self._case_state(db, message.case_id)
        if case is None:
            raise NotFound(f"there is no case '{message.case_id}'.", field="caseId")
        stored = self._message_hash(db, message.message_id)
        if stored is not None:
            if stored != content_hash:
                raise IdConflict(f"messageId '{message.message_id}' is already used for other content.", field="messageId")
            return Accepted(False, message.case_id, message.message_id)
        refuse_finished(message.case_id, case["purged_at"], case["citizen_status"], reopen=reopen)
        if case["citizen_status"] == CaseStatus.CLOSED.value:  # reopened by this request: the status goes first
            self._insert_status(db, StatusUpdate(message.case_id, CaseStatus.IN_PROGRESS), origin=origin,
                                correlation_id=correlation_id, now=now, hsa_id=case["receiver_hsa_id"])
        guarded = guard is not None and guard.held
        state = "held" if hold_s > 0 or guarded else "queued"
        self._insert_message(db, message, direction="out", status=state, content=content, content_hash=content_hash,
                             correlation_id=correlation_id, now=now, origin=origin,
                             guard=json.dumps(guard.to_data(), ensure_ascii=False) if guard is not None else None)
        filled = reserved and db.execute(
            "UPDATE outbox SET status = 'pending', ref_id = ?, not_before = ?, updated_at = ? "
            "WHERE case_id = ? AND action = ? AND status = 'reserved'",
            [message.message_id, ts(now + dt.timedelta(seconds=hold_s)), ts(now), message.case_id, RECEIPT],
        ).rowcount
        if not filled:
            self._enqueue(db, message.case_id, "add_message", message.message_id, NATIONAL_TARGET,
                          now + dt.timedelta(seconds=hold_s), created=now, status="held" if guarded else "pending")
        db.execute("UPDATE cases SET last_activity_at = ? WHERE case_id = ?", [ts(now), message.case_id])
        self._count(db, "received", NATIONAL_TARGET, "out")
        unread = ", ".join(f.where for f in guard.not_checked) if guard is not None else ""
        self._log(db, now, correlation_id=correlation_id, case_id=message.case_id, message_id=message.message_id,
                  direction="out", event="message_queued", status=state, target=NATIONAL_TARGET,
                  hsa_id=message.sender_hsa_id,
                  detail=f"{message.kind} from {origin}, {len(message.attachments)} attachment(s)"
                  + (f", held {hold_s:g} s for review" if hold_s > 0 else "")
                  + (f", not checked by the wrong-patient guard (no readable text): {unread}"[:600] if unread else ""))
        if guard is not None and guard.held:
            places = ", ".join(f"{f.place} ({'another citizen' if f.kind == 'foreign_id' else 'no readable text'})"
                               for f in guard.findings)
            self._log(db, now, correlation_id=correlation_id, case_id=message.case_id, message_id=message.message_id,
                      direction="out", event="message_held", status="held", target=NATIONAL_TARGET,
                      hsa_id=message.sender_hsa_id, error_code="GW047",
                      detail=redact_person_ids(f"held by the wrong-patient guard until released: {places}")[:1000])
        return Accepted(True, message.case_id, message.message_id)

    def release_message(self, message_id: str, *, by: str, case_id: str, role: str = "provider",
                        now: dt.datetime | None = None) -> str:
        """Release a message the wrong-patient guard holds (rule 14): someone confirmed it.
        Its outbox row becomes ``pending`` (after the review window, if one is still running),
        so the worker sends it, once. ``case_id``: the message must belong to that case,
        otherwise ``NotFound``. Returns the message's status; a second release of the same
        message changes nothing. The release is audited (who, when)."""
        now = now or instant()
        with self.write() as db:
            row = self._reply(db, message_id, case_id)
            if row is None:
                raise NotFound(f"there is no message '{message_id[:64]}' to a citizen in this case.", field="messageId")
            message_id = row["message_id"]
            if row["outbox_status"] != "held":
                if row["released_at"]:  # released before: the same confirmation again
                    return str(row["status"])
                raise NotHeld(f"message '{message_id[:64]}' is not held by the wrong-patient guard "
                              f"(it is {row['status']}).", field="messageId")
            not_before = max(parse_ts(row["not_before"]), now)
            db.execute("UPDATE outbox SET status = 'pending', not_before = ?, updated_at = ? WHERE id = ? AND status = 'held'",
                       [ts(not_before), ts(now), row["outbox_id"]])
            state = "held" if not_before > now else "queued"
            db.execute("UPDATE messages SET status = ?, released_at = ?, released_by = ? WHERE message_id = ?",
                       [state, ts(now), by, message_id])
            self._log(db, now, case_id=row["case_id"], message_id=message_id, direction="out", event="message_released",
                      status="ok", target=NATIONAL_TARGET, detail=f"released by {by}: the wrong-patient guard's hold confirmed")
            self._audit(db, now, by, role, "release_message", f"message {message_id}",
                        f"case {row['case_id']}: held by the wrong-patient guard (GW047), released for sending")
            return state

    def _reply(self, db: Database, message_id: str, case_id: str | None) -> sqlite3.Row | None:
        """A message to the citizen and its outbox row: by the gateway's id, or within
        ``case_id`` also by the provider's. Columns: ``case_id``, ``message_id``,
        ``provider_message_id``, ``status``, ``content``, ``guard``, ``released_at``,
        ``released_by``, ``outbox_id``, ``outbox_status``, ``not_before`` (NULL without a row)."""
        where, params = (("m.case_id = ? AND (m.message_id = ? OR m.provider_message_id = ?)",
                          [case_id, message_id, message_id]) if case_id is not None
                         else ("m.message_id = ?", [message_id]))
        row: sqlite3.Row | None = db.execute(
            f"""SELECT m.case_id, m.message_id, m.provider_message_id, m.status, m.content, m.guard, m.released_at,
                       m.released_by, o.id AS outbox_id, o.status AS outbox_status, o.not_before
                FROM messages m LEFT JOIN outbox o ON o.action = 'add_message' AND o.ref_id = m.message_id
                WHERE m.direction = 'out' AND {where}""", params).fetchone()
        return row

    def outgoing_message(self, case_id: str, message_id: str) -> dict[str, Any]:
        """A message to the citizen as it will be sent (the preview of rule 14): its content,
        status, the guard's outcome and its attachments' metadata (name, type, sha256, size).
        ``case_id``: the message must belong to that case, otherwise ``NotFound``."""
        found = self._reply(self.db, message_id, case_id)
        if found is None:
            raise NotFound(f"there is no message '{message_id[:64]}' to a citizen in this case.", field="messageId")
        row: dict[str, Any] = dict(found)
        if row["content"] is None:
            raise CasePurged(f"message '{message_id[:64]}': its content has been purged after the retention period.",
                             field="messageId")
        row["content"] = json.loads(row["content"])
        row["guard"] = GuardOutcome.from_data(json.loads(row["guard"]) if row["guard"] else None)
        row["attachments"] = [dict(a) for a in self._attachment_rows(case_id, row["message_id"])]
        return row

    def outgoing_attachment(self, case_id: str, message_id: str, index: int) -> Attachment:
        """The bytes of attachment ``index`` (0-based, as in the request) of a message to the
        citizen: the same bytes the worker sends. ``NotFound`` for any other case or index."""
        found = self.outgoing_message(case_id, message_id)
        files = self.attachments_of(case_id, found["message_id"])
        if not 0 <= index < len(files):
            raise NotFound(f"message '{message_id[:64]}' has no attachment {index}.", field="n")
        return files[index]

    def add_status(
        self, update: StatusUpdate, *, origin: str = "api", correlation_id: str | None = None, now: dt.datetime | None = None
    ) -> int:
        """Queue a status change towards 1177 (``UpdateCaseStatus``); returns its id."""
        now = now or instant()
        with self.write() as db:
            case = self._case_state(db, update.case_id)
            if case is None:
                raise NotFound(f"there is no case '{update.case_id}'.", field="caseId")
            refuse_finished(update.case_id, case["purged_at"], None)
            return self._insert_status(db, update, origin=origin, correlation_id=correlation_id, now=now,
                                       hsa_id=case["receiver_hsa_id"])

    def _insert_status(self, db: Database, update: StatusUpdate, *, origin: str, correlation_id: str | None,
                       now: dt.datetime, hsa_id: str) -> int:
        content = json.dumps(to_data(update), sort_keys=True, ensure_ascii=False)
        cursor = db.execute(
            """INSERT INTO status_updates (case_id, status, content, state, created_at, origin, correlation_id)
               VALUES (?, ?, ?, 'queued', ?, ?, ?) RETURNING id""",
            [update.case_id, update.status.value, content, ts(now), origin, correlation_id],
        )
        update_id = int(cursor.fetchone()["id"])  # RETURNING: both backends (PostgreSQL has no lastrowid)
        db.execute("UPDATE cases SET citizen_status = ?, updated_at = ?, last_activity_at = ? WHERE case_id = ?",
                   [update.status.value, ts(now), ts(now), update.case_id])
        self._enqueue(db, update.case_id, "update_status", str(update_id), NATIONAL_TARGET, now)
        self._count(db, "received", NATIONAL_TARGET, "out")
        self._log(db, now, correlation_id=correlation_id, case_id=update.case_id, direction="out",
                  event="status_queued", status="queued", target=NATIONAL_TARGET, hsa_id=hsa_id,
                  detail=f"{update.status.value}, {len(update.problems)} problem code(s)"
                  + (f", care unit {update.care_unit_hsa_id}" if update.care_unit_hsa_id else ""))
        return update_id

    def cancel_message(self, message_id: str, *, by: str, case_id: str | None = None, now: dt.datetime | None = None) -> None:
        """Cancel a message to the citizen that has not been sent yet (in its review window).

        ``case_id``: the message must belong to that case (a provider names its own case);
        otherwise it is ``NotFound``, the same answer as for an id that does not exist."""
        now = now or instant()
        with self.write() as db:
            row = self._reply(db, message_id, case_id)
            if row is None:
                raise NotFound(f"there is no message '{message_id[:64]}' to a citizen"
                               + (" in this case." if case_id is not None else "."), field="messageId")
            message_id = row["message_id"]  # the gateway's own id of the provider's message
            if row["status"] == "cancelled":
                return
            if row["outbox_status"] not in ("pending", "dead", "held"):
                state = "sent" if row["status"] == "sent" else "being sent"
                raise NotCancellable(f"message '{message_id}' has been {state}; it cannot be recalled.", field="messageId")
            db.execute("UPDATE outbox SET status = 'cancelled', updated_at = ? WHERE id = ?", [ts(now), row["outbox_id"]])
            db.execute("UPDATE messages SET status = 'cancelled' WHERE message_id = ?", [message_id])
            self._log(db, now, case_id=row["case_id"], message_id=message_id, direction="out", event="message_cancelled",
                      status="ok", target=NATIONAL_TARGET, detail=f"cancelled by {by} before it was sent")

    def load_status(self, update_id: int) -> StatusUpdate:
        content = scalar(self.db, "SELECT content FROM status_updates WHERE id = ?", [update_id])
        if content is None:
            raise StoreError(f"status update {update_id} is not stored.")
        return status_from_data(json.loads(content))

    def get_cursor(self, target: str) -> str | None:
        cursor: str | None = scalar(self.db, "SELECT cursor FROM poll_cursors WHERE target = ?", [target])
        return cursor

    def set_cursor(self, target: str, cursor: str, now: dt.datetime | None = None) -> None:
        with self.write() as db:
            db.execute(
                "INSERT INTO poll_cursors (target, cursor, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(target) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                [target, cursor, ts(now or instant())],
            )
