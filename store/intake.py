"""The store's intake: cases and citizens' messages from 1177, and cases registered outside it.

Role: store what an entry point accepted together with its outbox rows, once (the same id
twice is stored once; the same id with other content is ``IdConflict``), and read a case
or message back for delivery.

May import: model, errors, clock (through ``store.base``).

Invariants: a case (message) and its outbox rows are committed in one transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from clock import instant
from errors import (
    IdConflict,
    Undeliverable,
    UnknownCase,
)
from model import (
    Case,
    Message,
    case_from_data,
    message_from_data,
)

from .base import (
    NATIONAL_TARGET,
    RECEIPT,
    Accepted,
    StoreBase,
    content_json,
    receipt_id,
    refuse_finished,
    scalar,
    ts,
)


class Intake(StoreBase):
    """Storing what 1177 (or a provider, for an external case) hands in."""

    def accept_case(
        self,
        case: Case,
        *,
        target: str | None,
        provider_unit_code: str | None,
        correlation_id: str | None,
        origin: str = "1177",
        reserve_receipt: bool = False,
        now: dt.datetime | None = None,
    ) -> Accepted:
        """Store a new case with its files and its outbox row, atomically.

        The same ``case_id`` with the same content again is a no-op (``created`` False);
        with other content it is an ``IdConflict``. ``reserve_receipt``: keep the automatic
        receipt's place right after the delivery, so that it is the case's first message to
        the citizen whatever the provider sends meanwhile.
        """
        now = now or instant()
        content, content_hash = content_json(case)
        with self.write() as db:
            stored = scalar(db, "SELECT content_hash FROM cases WHERE case_id = ?", [case.case_id])
            if stored is not None:
                if stored != content_hash:
                    raise IdConflict(f"caseId '{case.case_id}' is already stored with other content.", field="caseId")
                return Accepted(False, case.case_id, case.case_id)
            db.execute(
                """INSERT INTO cases (case_id, origin, case_type, receiver_hsa_id, is_patient_board, target,
                       provider_unit_code, status, created_time, received_at, updated_at, correlation_id,
                       content_hash, content, national_case_id, citizen_status, last_activity_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, 'received', ?, ?, ?, ?, ?, ?, ?, 'RECEIVED', ?)""",
                [
                    case.case_id, origin, case.case_type.value, case.receiver.hsa_id,
                    int(case.receiver.is_patient_board), target, provider_unit_code,
                    case.created_time.isoformat(), ts(now), ts(now), correlation_id, content_hash, content,
                    case.case_id if origin == "1177" else None, ts(now),
                ],
            )
            self._put_attachments(db, case.case_id, None, case.attachments, now)
            self._enqueue(db, case.case_id, "deliver_case", case.case_id, target, now)
            if reserve_receipt:
                self._enqueue(db, case.case_id, RECEIPT, receipt_id(case.case_id), NATIONAL_TARGET, now, status="reserved")
            self._count(db, "received", target, "in")
            self._log(
                db, now, correlation_id=correlation_id, case_id=case.case_id, direction="in",
                event="case_received", status="ok", target=target, hsa_id=case.receiver.hsa_id,
                detail=f"{case.case_type.value}, {len(case.attachments)} attachment(s)",
            )
        return Accepted(True, case.case_id, case.case_id)

    def accept_message(self, message: Message, *, correlation_id: str | None, now: dt.datetime | None = None) -> Accepted:
        """Store a citizen's follow-up message for a known case, with its outbox row.

        ``message.case_id`` may be the gateway's id or 1177's (a case registered outside
        1177 is known to 1177, and to its citizen's answers, by the id 1177 gave it); the
        message is stored under the gateway's. A purged case (``CasePurged``) or a closed one
        (``CaseClosed``) takes no more messages."""
        now = now or instant()
        with self.write() as db:
            case = self._case_state(db, message.case_id, or_national=True)
            if case is None:
                raise UnknownCase(f"caseId '{message.case_id}' is not known to this gateway.", field="caseId")
            target, receiver = case["target"], case["receiver_hsa_id"]
            refuse_finished(message.case_id, case["purged_at"], case["citizen_status"])
            if case["case_id"] != message.case_id:
                message = dataclasses.replace(message, case_id=case["case_id"])
            content, content_hash = content_json(message)
            stored = self._message_hash(db, message.message_id)
            if stored is not None:
                if stored != content_hash:
                    raise IdConflict(
                        f"messageId '{message.message_id}' is already stored with other content.", field="messageId"
                    )
                return Accepted(False, message.case_id, message.message_id)
            self._insert_message(db, message, direction=message.direction, status="received", content=content,
                                 content_hash=content_hash, correlation_id=correlation_id, now=now)
            self._enqueue(db, message.case_id, "deliver_message", message.message_id, target, now)
            self._count(db, "received", target, "in")
            db.execute("UPDATE cases SET updated_at = ?, last_activity_at = ? WHERE case_id = ?",
                       [ts(now), ts(now), message.case_id])
            self._log(
                db, now, correlation_id=correlation_id, case_id=message.case_id, message_id=message.message_id,
                direction="in", event="message_received", status="ok", target=target, hsa_id=receiver,
                detail=f"{len(message.attachments)} attachment(s)",
            )
        return Accepted(True, message.case_id, message.message_id)

    def register_external(
        self,
        case: Case,
        *,
        target: str,
        provider_unit_code: str,
        external_case_id: str,
        channel: str,
        correlation_id: str | None = None,
        reserve_receipt: bool = False,
        now: dt.datetime | None = None,
    ) -> Accepted:
        """Store a case that started outside 1177 and queue its registration with 1177
        (and, with ``reserve_receipt``, the automatic receipt's place right after it).

        ``case.case_id`` is the gateway's id; the provider's own id is ``external_case_id``
        (the same one again, with the same content, is the same case)."""
        now = now or instant()
        content, content_hash = content_json(case, not_hashed=("created_time",))
        with self.write() as db:
            row = db.execute(
                "SELECT case_id, content_hash FROM cases WHERE target = ? AND provider_case_id = ? AND origin = 'external'",
                [target, external_case_id],
            ).fetchone()
            if row is not None:
                if row["content_hash"] != content_hash:
                    raise IdConflict(f"externalCaseId '{external_case_id}' is already registered with other content.",
                                     field="externalCaseId")
                return Accepted(False, row["case_id"], row["case_id"])
            db.execute(
                """INSERT INTO cases (case_id, origin, case_type, receiver_hsa_id, is_patient_board, target,
                       provider_unit_code, provider_case_id, status, created_time, received_at, updated_at,
                       correlation_id, content_hash, content, channel, citizen_status, last_activity_at)
                   VALUES (?, 'external', ?, ?, ?, ?, ?, ?, 'registering', ?, ?, ?, ?, ?, ?, ?, 'RECEIVED', ?)""",
                [case.case_id, case.case_type.value, case.receiver.hsa_id, int(case.receiver.is_patient_board), target,
                 provider_unit_code, external_case_id, case.created_time.isoformat(), ts(now), ts(now), correlation_id,
                 content_hash, content, channel, ts(now)],
            )
            self._put_attachments(db, case.case_id, None, case.attachments, now)
            self._enqueue(db, case.case_id, "register_case", case.case_id, NATIONAL_TARGET, now)
            if reserve_receipt:
                self._enqueue(db, case.case_id, RECEIPT, receipt_id(case.case_id), NATIONAL_TARGET, now, status="reserved")
            self._count(db, "received", NATIONAL_TARGET, "out")
            self._log(db, now, correlation_id=correlation_id, case_id=case.case_id, direction="out",
                      event="case_registered", status="queued", target=NATIONAL_TARGET, hsa_id=case.receiver.hsa_id,
                      detail=f"{case.case_type.value} by {channel} from target {target}")
        return Accepted(True, case.case_id, case.case_id)

    def find_case(self, ident: str, *, target: str | None = None) -> dict[str, Any] | None:
        """The case known by ``ident``: the gateway's id, 1177's id (a case registered outside
        1177 gets one from 1177) or, given ``target``, that target's own id for it."""
        case_id = scalar(
            self.db,
            """SELECT case_id FROM cases WHERE case_id = ?
               UNION ALL SELECT case_id FROM cases WHERE national_case_id = ?
               UNION ALL SELECT case_id FROM cases WHERE CAST(? AS TEXT) IS NOT NULL AND target = ? AND provider_case_id = ?
               LIMIT 1""", [ident, ident, target, target, ident])
        return self.case_row(case_id) if case_id is not None else None

    def load_case(self, case_id: str) -> Case:
        data = self._case_content(self.db, case_id)
        if data is None:
            state = self._case_state(self.db, case_id)
            why = "was purged after the retention period" if state and state["purged_at"] else "is not stored"
            raise Undeliverable(f"the content of case '{case_id[:64]}' {why}; nothing can be delivered for it.")
        return case_from_data(data, tuple(self.attachments_of(case_id)))

    def case_person_ids(self, case_id: str) -> list[str]:
        """The person ids of a case's citizen and representative (the wrong-patient guard's
        'own' ids, rule 14). For comparison only: never log or answer them."""
        data = self._case_content(self.db, case_id)
        if data is None:
            return []
        people = [data.get("subject_of_care"), data.get("representative")]
        return [p["person_id"]["id"] for p in people if p and (p.get("person_id") or {}).get("id")]

    def load_message(self, message_id: str) -> Message:
        row = self.db.execute("SELECT case_id, content FROM messages WHERE message_id = ?", [message_id]).fetchone()
        if row is None or row["content"] is None:
            raise Undeliverable(f"the content of message '{message_id[:64]}' is gone (purged or never stored).")
        return message_from_data(json.loads(row["content"]), tuple(self.attachments_of(row["case_id"], message_id)))

    def case_by_provider_id(self, target: str, provider_case_id: str) -> str | None:
        case_id: str | None = scalar(
            self.db, "SELECT case_id FROM cases WHERE target = ? AND provider_case_id = ?", [target, provider_case_id])
        return case_id
