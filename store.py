"""The store: every SQL statement of the gateway, on SQLite through sqlite-utils.

Role: durable state. Cases, messages and their attachments (each file stored once, by
SHA-256), the outbox the worker delivers from, the sync log operations read, and the
worker's heartbeat. The schema is built by ``sqlite_utils.migrations.Migrations``.

May import: ``model``, ``errors``, ``clock``.

Invariants:
- A case (or message) and its outbox row are committed in one transaction; a call that
  raises has written nothing.
- Write transactions start with ``BEGIN IMMEDIATE`` so a read-then-write (the duplicate
  check before an insert) can never fail half-way on a concurrent writer; waits are
  bounded by the busy timeout and surface as ``StoreError`` (GW050).
- Attachment bytes live only in ``attachment_blobs``; everything else refers to them by
  hash. JSON content never carries file data.
- One connection per thread (SQLite connections are not shared across threads); the
  database runs in WAL mode with ``synchronous=FULL`` so an acknowledged case survives
  a crash or power loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from clock import instant
from errors import (
    CaseClosed,
    CasePurged,
    IdConflict,
    NotCancellable,
    NotFound,
    NotHeld,
    StoreError,
    Undeliverable,
    UnknownCase,
)
from model import (
    Attachment,
    Case,
    CaseStatus,
    GuardOutcome,
    Message,
    StatusUpdate,
    case_from_data,
    message_from_data,
    redact_person_ids,
    status_from_data,
    to_data,
)

migrations = Migrations("gateway")


@migrations()
def m001_intake(db: Database) -> None:
    db["cases"].create(
        {
            "id": int,
            "case_id": str,  # 1177's id (or, for a case registered outside 1177, ours)
            "origin": str,  # '1177' | 'external'
            "case_type": str,
            "receiver_hsa_id": str,
            "is_patient_board": int,
            "target": str,  # the provider system that serves the receiving unit
            "provider_unit_code": str,
            "provider_case_id": str,
            "status": str,
            "created_time": str,  # when the citizen created it (1177's time)
            "received_at": str,  # when the gateway committed it (UTC)
            "updated_at": str,
            "correlation_id": str,
            "content_hash": str,
            "content": str,  # JSON of the canonical case, without file data
        },
        pk="id",
        not_null={"case_id", "origin", "case_type", "receiver_hsa_id", "status", "received_at", "content_hash"},
    )
    db["cases"].create_index(["case_id"], unique=True)
    db["cases"].create_index(["receiver_hsa_id"])
    db["cases"].create_index(["status"])

    db["messages"].create(
        {
            "id": int,
            "message_id": str,
            "case_id": str,
            "direction": str,  # 'in' (from the citizen) | 'out' (to the citizen)
            "kind": str,
            "status": str,
            "created_time": str,
            "received_at": str,
            "correlation_id": str,
            "content_hash": str,
            "content": str,
        },
        pk="id",
        not_null={"message_id", "case_id", "direction", "kind", "status", "received_at", "content_hash"},
        foreign_keys=[("case_id", "cases", "case_id")],
    )
    db["messages"].create_index(["message_id"], unique=True)
    db["messages"].create_index(["case_id"])

    db["attachment_blobs"].create(
        {"sha256": str, "size": int, "data": bytes, "created_at": str}, pk="sha256", not_null={"size", "data"}
    )
    db["attachments"].create(
        {
            "id": int,
            "case_id": str,
            "message_id": str,  # NULL for the case's own attachments
            "position": int,
            "file_name": str,
            "mime_type": str,
            "sha256": str,
        },
        pk="id",
        not_null={"case_id", "position", "file_name", "mime_type", "sha256"},
        foreign_keys=[("sha256", "attachment_blobs", "sha256"), ("case_id", "cases", "case_id")],
    )
    db["attachments"].create_index(["case_id", "message_id"])
    db["attachments"].create_index(["sha256"])

    db["outbox"].create(
        {
            "id": int,  # also the per-case order: a case's rows are delivered by ascending id
            "case_id": str,
            "action": str,  # deliver_case | deliver_message | …
            "ref_id": str,  # the case or message id the action carries
            "target": str,
            "status": str,  # pending | in_flight | done | dead | cancelled
            "attempts": int,
            "not_before": str,
            "lease_until": str,
            "idempotency_key": str,
            "last_error": str,
            "created_at": str,
            "updated_at": str,
        },
        pk="id",
        not_null={"case_id", "action", "ref_id", "status", "attempts", "not_before", "idempotency_key", "created_at"},
        defaults={"attempts": 0},
    )
    db["outbox"].create_index(["idempotency_key"], unique=True)
    db["outbox"].create_index(["status", "not_before"])
    db["outbox"].create_index(["case_id", "id"])

    db["sync_log"].create(
        {
            "id": int,
            "at": str,
            "correlation_id": str,
            "case_id": str,
            "message_id": str,
            "direction": str,  # 'in' (1177 → provider) | 'out' (provider → 1177)
            "event": str,
            "status": str,
            "target": str,
            "hsa_id": str,
            "error_code": str,
            "detail": str,  # metadata only: never citizen text or a person id in clear
        },
        pk="id",
        not_null={"at", "direction", "event", "status"},
    )
    db["sync_log"].create_index(["at"])
    db["sync_log"].create_index(["case_id", "at"])
    db["sync_log"].create_index(["hsa_id", "at"])

    db["heartbeats"].create({"name": str, "at": str, "detail": str}, pk="name")


@migrations()
def m002_delivery(db: Database) -> None:
    db["outbox"].add_column("claimed_by", str)
    db["outbox"].add_column("last_error_code", str)
    db["outbox"].add_column("delivered_at", str)
    db["attempts"].create(
        {
            "id": int,
            "outbox_id": int,
            "case_id": str,
            "target": str,
            "attempt": int,
            "started_at": str,
            "duration_ms": float,
            "outcome": str,  # delivered | retry | dead
            "status_code": int,
            "error_code": str,
            "detail": str,  # redacted: never citizen text or a person id
        },
        pk="id",
        not_null={"outbox_id", "case_id", "attempt", "started_at", "outcome"},
        foreign_keys=[("outbox_id", "outbox", "id")],
    )
    db["attempts"].create_index(["outbox_id", "id"])
    db["attempts"].create_index(["started_at"])
    db["targets"].create({"name": str, "paused": int, "changed_at": str, "changed_by": str}, pk="name")
    db["sync_log"].create_index(["target", "at"])


@migrations()
def m003_way_back(db: Database) -> None:
    db["cases"].add_column("national_case_id", str)  # 1177's caseId (a registered case gets it from 1177)
    db["cases"].add_column("channel", str)  # for a case started outside 1177: TELEFON, BREV, …
    db["cases"].add_column("citizen_status", str)  # the last status sent towards 1177
    db.execute("UPDATE cases SET national_case_id = case_id WHERE origin = '1177'")
    db["cases"].create_index(["target", "provider_case_id"])
    db["messages"].add_column("sent_at", str)
    db["messages"].add_column("origin", str)  # citizen | api | poll | auto
    db["status_updates"].create(
        {
            "id": int,
            "case_id": str,
            "status": str,
            "content": str,
            "state": str,  # queued | sent | cancelled | failed
            "created_at": str,
            "sent_at": str,
            "origin": str,
            "correlation_id": str,
        },
        pk="id",
        not_null={"case_id", "status", "content", "state", "created_at"},
        foreign_keys=[("case_id", "cases", "case_id")],
    )
    db["status_updates"].create_index(["case_id"])
    db["poll_cursors"].create({"target": str, "cursor": str, "updated_at": str}, pk="target")


@migrations()
def m004_operations(db: Database) -> None:
    db["cases"].add_column("purged_at", str)
    db["outbox"].create_index(["status", "created_at"])
    db["outbox"].create_index(["target", "status"])
    db["cases"].create_index(["target", "status"])
    db["sync_log"].create_index(["error_code", "at"])
    db["sync_log"].create_index(["status", "at"])
    db["sync_log"].create_index(["direction", "at"])
    db["audit_log"].create(
        {"id": int, "at": str, "who": str, "role": str, "action": str, "object": str, "detail": str},
        pk="id", not_null={"at", "who", "action"},
    )
    db["audit_log"].create_index(["at"])
    db["metrics_counters"].create(
        {"name": str, "target": str, "direction": str, "value": int}, pk=("name", "target", "direction")
    )
    db["metrics_latency"].create(
        {"target": str, "direction": str, "le": str, "count": int}, pk=("target", "direction", "le")
    )
    db["metrics_latency_sum"].create(
        {"target": str, "direction": str, "total_s": float, "count": int}, pk=("target", "direction")
    )
    db["alert_state"].create(
        {"key": str, "kind": str, "target": str, "active": int, "since": str, "last_sent_at": str, "detail": str},
        pk="key",
    )


@migrations(transactional=False)
def m005_incremental_vacuum(db: Database) -> None:
    # lets retention give freed pages back to the file system (PRAGMA incremental_vacuum)
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("VACUUM")


@migrations()
def m006_settings(db: Database) -> None:
    db["settings"].create({"name": str, "value": str}, pk="name")


@migrations()
def m007_event_index(db: Database) -> None:
    db["sync_log"].create_index(["event", "at"])  # the ops view and `gateway log` search by event too


@migrations()
def m008_ops_indexes(db: Database) -> None:
    db["outbox"].create_index(["status", "id"])  # dead letters, newest first
    db["messages"].create_index(["direction", "status"])  # the dashboard's counts
    db.execute("ANALYZE")  # statistics for the planner; retention refreshes them (PRAGMA optimize)


@migrations()
def m009_case_lifecycle(db: Database) -> None:
    # retention counts from the last activity (a message either way, a status change), not receipt
    db["cases"].add_column("last_activity_at", str)
    db.execute("UPDATE cases SET last_activity_at = COALESCE(updated_at, received_at)")
    db["cases"].create_index(["last_activity_at"])
    # 1177's own id finds a case registered outside 1177 (its citizen's answers carry that id)
    db["cases"].create_index(["national_case_id"])


@migrations()
def m010_provider_message_ids(db: Database) -> None:
    # the id a provider chose for its message; the gateway's own id is scoped from it
    db["messages"].add_column("provider_message_id", str)
    db["messages"].create_index(["case_id", "provider_message_id"])


@migrations()
def m011_job_leases(db: Database) -> None:
    # scheduled jobs (polls, alerts, retention) run once across every process and instance
    db["job_leases"].create(
        {"name": str, "owner": str, "due_at": str, "running_until": str, "last_run_at": str}, pk="name",
    )


@migrations()
def m012_ops_sign_in(db: Database) -> None:
    # failed sign-ins per key ('user:NAME' or 'address:IP'), shared by every process
    db["sign_in_failures"].create(
        {"key": str, "failures": int, "first_at": str, "last_at": str, "locked_until": str},
        pk="key", not_null={"failures", "first_at", "last_at"},
    )
    # one row per sign-in: the cookie names the session, sign-out ends it here
    db["ops_sessions"].create(
        {"sid": str, "user": str, "created_at": str, "ended_at": str},
        pk="sid", not_null={"user", "created_at"},
    )
    db["ops_sessions"].create_index(["user"])


@migrations()
def m013_attempt_responses(db: Database) -> None:
    # what came back with a refused answer (status, a few headers, the first kilobytes of the
    # body, person ids masked; JSON): content, for readers and admins, never monitors
    db["attempts"].add_column("response", str)


@migrations()
def m014_wrong_patient_guard(db: Database) -> None:
    # the guard's outcome (rule 14) kept with each message to the citizen: places, never ids;
    # a held message waits in the outbox as 'held' until someone releases it
    db["messages"].add_column("guard", str)
    db["messages"].add_column("released_at", str)
    db["messages"].add_column("released_by", str)


@dataclass(frozen=True)
class JobRun:
    """One run of a scheduled job claimed by this process; ``previous``: when it last ran anywhere."""

    name: str
    owner: str
    previous: dt.datetime | None


#: Upper bounds (seconds) of the intake-to-delivery latency histogram.
LATENCY_BUCKETS = ("0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "300", "1800", "+Inf")

#: Outbox states in which a row still has work to do (retention never touches their cases).
#: ``reserved``: the automatic receipt's place in its case's order, kept from intake until the
#: provider has the case (then it becomes ``pending`` with the receipt, or ``cancelled``).
#: ``held``: a message the wrong-patient guard holds until someone releases it (rule 14).
UNFINISHED = ("pending", "in_flight", "dead", "reserved", "held")

#: The outbox action and id of the automatic receipt of a case.
RECEIPT = "add_message"


def receipt_id(case_id: str) -> str:
    """The message id of the automatic receipt of ``case_id``."""
    return f"{case_id}:receipt"


def ts(value: dt.datetime) -> str:
    """The store's timestamp format: ISO 8601 UTC with microseconds, sortable as text."""
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_ts(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)


def _content(obj: Case | Message, *, not_hashed: tuple[str, ...] = ()) -> tuple[str, str]:
    """JSON content without file bytes, and a hash over it (files enter by their hash).

    ``not_hashed``: fields that may differ between two sendings of the same thing (the
    time the gateway stamped on a provider's message)."""
    data = to_data(obj)
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    if not_hashed:
        data = {k: v for k, v in data.items() if k not in not_hashed}
    hashed = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text, hashlib.sha256(hashed.encode("utf-8")).hexdigest()


#: The outbox target name of 1177 / the national platform.
NATIONAL_TARGET = "national"

#: Actions that go towards the citizen (to 1177); the others go to the provider.
OUTBOUND_ACTIONS = ("add_message", "update_status", "register_case")


def _refuse_finished(case_id: str, purged_at: str | None, citizen_status: str | None, *, reopen: bool = False) -> None:
    """Refuse new work for a case whose content was purged, or that is closed (unless reopened)."""
    if purged_at:
        raise CasePurged(f"case '{case_id[:64]}': its content has been purged after the retention period "
                         "(two years from its last activity), so nothing more can be delivered in it.", field="caseId")
    if citizen_status == CaseStatus.CLOSED.value and not reopen:
        raise CaseClosed(f"case '{case_id[:64]}' is closed; it takes no more messages until it is reopened.",
                         field="caseId")


def _direction(action: str) -> str:
    return "out" if action in OUTBOUND_ACTIONS else "in"


#: For a row still waiting: the earliest dead row of its case it is stuck behind (else NULL).
_BLOCKER = """(SELECT min(e.id) FROM outbox e WHERE e.case_id = o.case_id AND e.id < o.id AND e.status = 'dead'
             AND o.status IN ('pending', 'reserved'))"""
_BLOCKED_BY = f"{_BLOCKER} AS blocked_by"

#: A row the worker may take once its not_before has passed: pending, its target not
#: paused, and no earlier row of its case still pending, in flight, dead or held (order per
#: case: nothing overtakes a message the wrong-patient guard holds).
_CLAIMABLE = """o.status = 'pending'
    AND o.target NOT IN (SELECT name FROM targets WHERE paused = 1)
    AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.case_id = o.case_id AND e.id < o.id
                    AND e.status IN ('pending', 'in_flight', 'dead', 'reserved', 'held'))"""


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


@dataclass(frozen=True)
class Accepted:
    """The outcome of an intake: ``created`` is False for a repeated, identical request."""

    created: bool
    case_id: str
    ref_id: str


class Store:
    """All persistence of the gateway. Thread-safe: one SQLite connection per thread."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000):
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # One writer at a time within this process. SQLite's busy handler retries with
        # sleeps of up to 100 ms and serves no queue, so without this the worker's short
        # claim/complete writes can lose again and again to a burst of intake writes.
        # Other processes still meet at SQLite's lock (bounded by the busy timeout).
        self._write_lock = threading.Lock()
        #: why the last write of this process failed (a full disk, an I/O error), until one succeeds
        self.last_write_failure: str | None = None

    # -- connections and transactions -------------------------------------------------

    @property
    def db(self) -> Database:
        """This thread's connection, opened on first use."""
        db = getattr(self._local, "db", None)
        if db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(
                    self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
                )
                conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open the database {self.path}: {exc}.") from None
            db = Database(conn, execute_plugins=False)
            self._local.db = db
            with self._lock:
                self._connections.append(conn)
        return db

    @contextlib.contextmanager
    def write(self) -> Iterator[Database]:
        """A write transaction (``BEGIN IMMEDIATE``): commits on success, rolls back on error.

        ``db.atomic()`` would start a deferred transaction, whose upgrade from read to
        write fails at once (SQLITE_BUSY_SNAPSHOT) under a concurrent writer.
        """
        db = self.db
        if not self._write_lock.acquire(timeout=self.busy_timeout_ms / 1000):
            raise StoreError("the database is busy: another write of this process did not finish in time.")
        try:
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreError(f"the database is busy or unavailable ({exc}).") from None
            try:
                yield db
                db.execute("COMMIT")
                self.last_write_failure = None
            except BaseException as exc:
                if db.conn.in_transaction:
                    db.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):  # disk full, I/O error, locked too long
                    self.last_write_failure = f"the last write failed ({exc})"
                    raise StoreError(f"the database could not complete the write ({exc}).") from None
                raise
        finally:
            self._write_lock.release()

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()

    # -- schema -------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied."""
        pending = [m.name for m in migrations.pending(self.db)]
        migrations.apply(self.db)
        return pending

    def pending_migrations(self) -> list[str]:
        return [m.name for m in migrations.pending(self.db)]

    # -- intake -------------------------------------------------------------------------

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
        content, content_hash = _content(case)
        with self.write() as db:
            row = db.execute("SELECT content_hash FROM cases WHERE case_id = ?", [case.case_id]).fetchone()
            if row is not None:
                if row[0] != content_hash:
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
            case = db.execute(
                """SELECT case_id, target, receiver_hsa_id, purged_at, citizen_status FROM cases WHERE case_id = ?
                   UNION ALL SELECT case_id, target, receiver_hsa_id, purged_at, citizen_status FROM cases
                   WHERE national_case_id = ? AND case_id <> ? LIMIT 1""",
                [message.case_id, message.case_id, message.case_id],
            ).fetchone()
            if case is None:
                raise UnknownCase(f"caseId '{message.case_id}' is not known to this gateway.", field="caseId")
            case_id, target, receiver, purged_at, citizen_status = case
            _refuse_finished(message.case_id, purged_at, citizen_status)
            if case_id != message.case_id:
                message = dataclasses.replace(message, case_id=case_id)
            content, content_hash = _content(message)
            row = db.execute(
                "SELECT content_hash FROM messages WHERE message_id = ?", [message.message_id]
            ).fetchone()
            if row is not None:
                if row[0] != content_hash:
                    raise IdConflict(
                        f"messageId '{message.message_id}' is already stored with other content.", field="messageId"
                    )
                return Accepted(False, message.case_id, message.message_id)
            db.execute(
                """INSERT INTO messages (message_id, case_id, direction, kind, status, created_time, received_at,
                       correlation_id, content_hash, content)
                   VALUES (?, ?, ?, ?, 'received', ?, ?, ?, ?, ?)""",
                [
                    message.message_id, message.case_id, message.direction, message.kind,
                    message.created_time.isoformat(), ts(now), correlation_id, content_hash, content,
                ],
            )
            self._put_attachments(db, message.case_id, message.message_id, message.attachments, now)
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

    # -- the way back: from the provider towards the citizen ------------------------------

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
        content, content_hash = _content(message, not_hashed=("created_time",))
        case = db.execute("SELECT receiver_hsa_id, purged_at, citizen_status FROM cases WHERE case_id = ?",
                          [message.case_id]).fetchone()
        if case is None:
            raise NotFound(f"there is no case '{message.case_id}'.", field="caseId")
        row = db.execute("SELECT content_hash FROM messages WHERE message_id = ?", [message.message_id]).fetchone()
        if row is not None:
            if row[0] != content_hash:
                raise IdConflict(f"messageId '{message.message_id}' is already used for other content.", field="messageId")
            return Accepted(False, message.case_id, message.message_id)
        _refuse_finished(message.case_id, case[1], case[2], reopen=reopen)
        if case[2] == CaseStatus.CLOSED.value:  # reopened by this request: the status goes first
            self._insert_status(db, StatusUpdate(message.case_id, CaseStatus.IN_PROGRESS), origin=origin,
                                correlation_id=correlation_id, now=now, hsa_id=case[0])
        guarded = guard is not None and guard.held
        state = "held" if hold_s > 0 or guarded else "queued"
        db.execute(
            """INSERT INTO messages (message_id, case_id, direction, kind, status, created_time, received_at,
                   correlation_id, content_hash, content, origin, provider_message_id, guard)
               VALUES (?, ?, 'out', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [message.message_id, message.case_id, message.kind, state, message.created_time.isoformat(), ts(now),
             correlation_id, content_hash, content, origin, message.provider_message_id,
             json.dumps(guard.to_data(), ensure_ascii=False) if guard is not None else None],
        )
        self._put_attachments(db, message.case_id, message.message_id, message.attachments, now)
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
        if guarded:
            places = ", ".join(f"{f.place} ({'another citizen' if f.kind == 'foreign_id' else 'no readable text'})"
                               for f in guard.findings)
            self._log(db, now, correlation_id=correlation_id, case_id=message.case_id, message_id=message.message_id,
                      direction="out", event="message_held", status="held", target=NATIONAL_TARGET,
                      hsa_id=message.sender_hsa_id, error_code="GW047",
                      detail=redact_person_ids(f"held by the wrong-patient guard until released: {places}")[:1000])
        return Accepted(True, message.case_id, message.message_id)

    def release_message(self, message_id: str, *, by: str, case_id: str, now: dt.datetime | None = None) -> str:
        """Release a message the wrong-patient guard holds (rule 14): someone confirmed it.
        Its outbox row becomes ``pending`` (after the review window, if one is still running),
        so the worker sends it, once. ``case_id``: the message must belong to that case,
        otherwise ``NotFound``. Returns the message's status; a second release of the same
        message changes nothing. The release is audited (who, when)."""
        now = now or instant()
        with self.write() as db:
            row = db.execute(
                "SELECT case_id, status, message_id, released_at FROM messages WHERE direction = 'out' AND case_id = ? "
                "AND (message_id = ? OR provider_message_id = ?)", [case_id, message_id, message_id]).fetchone()
            if row is None:
                raise NotFound(f"there is no message '{message_id[:64]}' to a citizen in this case.", field="messageId")
            message_id = row[2]
            outbox = db.execute("SELECT id, status, not_before FROM outbox WHERE action = 'add_message' AND ref_id = ?",
                                [message_id]).fetchone()
            if outbox is None or outbox[1] != "held":
                if row[3]:  # released before: the same confirmation again
                    return str(row[1])
                raise NotHeld(f"message '{message_id[:64]}' is not held by the wrong-patient guard (it is {row[1]}).",
                              field="messageId")
            not_before = max(_parse_ts(outbox[2]), now)
            db.execute("UPDATE outbox SET status = 'pending', not_before = ?, updated_at = ? WHERE id = ? AND status = 'held'",
                       [ts(not_before), ts(now), outbox[0]])
            state = "held" if not_before > now else "queued"
            db.execute("UPDATE messages SET status = ?, released_at = ?, released_by = ? WHERE message_id = ?",
                       [state, ts(now), by, message_id])
            self._log(db, now, case_id=row[0], message_id=message_id, direction="out", event="message_released",
                      status="ok", target=NATIONAL_TARGET, detail=f"released by {by}: the wrong-patient guard's hold confirmed")
            db.execute("INSERT INTO audit_log (at, who, role, action, object, detail) VALUES (?, ?, ?, ?, ?, ?)",
                       [ts(now), by, "provider", "release_message", f"message {message_id}",
                        f"case {row[0]}: held by the wrong-patient guard (GW047), released for sending"[:1000]])
            return state

    def outgoing_message(self, case_id: str, message_id: str) -> dict[str, Any]:
        """A message to the citizen as it will be sent (the preview of rule 14): its content,
        status, the guard's outcome and its attachments' metadata (name, type, sha256, size).
        ``case_id``: the message must belong to that case, otherwise ``NotFound``."""
        rows = list(self.db.query(
            """SELECT m.message_id, m.provider_message_id, m.status, m.content, m.guard, m.released_at, m.released_by,
                      o.status AS outbox_status, o.not_before
               FROM messages m LEFT JOIN outbox o ON o.action = 'add_message' AND o.ref_id = m.message_id
               WHERE m.direction = 'out' AND m.case_id = ? AND (m.message_id = ? OR m.provider_message_id = ?)""",
            [case_id, message_id, message_id]))
        if not rows:
            raise NotFound(f"there is no message '{message_id[:64]}' to a citizen in this case.", field="messageId")
        row = rows[0]
        if row["content"] is None:
            raise CasePurged(f"message '{message_id[:64]}': its content has been purged after the retention period.",
                             field="messageId")
        row["content"] = json.loads(row["content"])
        row["guard"] = GuardOutcome.from_data(json.loads(row["guard"]) if row["guard"] else None)
        row["attachments"] = list(self.db.query(
            """SELECT a.position, a.file_name, a.mime_type, a.sha256, b.size FROM attachments a
               LEFT JOIN attachment_blobs b ON b.sha256 = a.sha256
               WHERE a.case_id = ? AND a.message_id = ? ORDER BY a.position""", [case_id, row["message_id"]]))
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
            case = db.execute("SELECT receiver_hsa_id, purged_at FROM cases WHERE case_id = ?", [update.case_id]).fetchone()
            if case is None:
                raise NotFound(f"there is no case '{update.case_id}'.", field="caseId")
            _refuse_finished(update.case_id, case[1], None)
            return self._insert_status(db, update, origin=origin, correlation_id=correlation_id, now=now, hsa_id=case[0])

    def _insert_status(self, db: Database, update: StatusUpdate, *, origin: str, correlation_id: str | None,
                       now: dt.datetime, hsa_id: str) -> int:
        content = json.dumps(to_data(update), sort_keys=True, ensure_ascii=False)
        cursor = db.execute(
            """INSERT INTO status_updates (case_id, status, content, state, created_at, origin, correlation_id)
               VALUES (?, ?, ?, 'queued', ?, ?, ?)""",
            [update.case_id, update.status.value, content, ts(now), origin, correlation_id],
        )
        update_id = cursor.lastrowid
        db.execute("UPDATE cases SET citizen_status = ?, updated_at = ?, last_activity_at = ? WHERE case_id = ?",
                   [update.status.value, ts(now), ts(now), update.case_id])
        self._enqueue(db, update.case_id, "update_status", str(update_id), NATIONAL_TARGET, now)
        self._count(db, "received", NATIONAL_TARGET, "out")
        self._log(db, now, correlation_id=correlation_id, case_id=update.case_id, direction="out",
                  event="status_queued", status="queued", target=NATIONAL_TARGET, hsa_id=hsa_id,
                  detail=f"{update.status.value}, {len(update.problems)} problem code(s)"
                  + (f", care unit {update.care_unit_hsa_id}" if update.care_unit_hsa_id else ""))
        return int(update_id)  # type: ignore[arg-type]

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
        content, content_hash = _content(case, not_hashed=("created_time",))
        with self.write() as db:
            row = db.execute(
                "SELECT case_id, content_hash FROM cases WHERE target = ? AND provider_case_id = ? AND origin = 'external'",
                [target, external_case_id],
            ).fetchone()
            if row is not None:
                if row[1] != content_hash:
                    raise IdConflict(f"externalCaseId '{external_case_id}' is already registered with other content.",
                                     field="externalCaseId")
                return Accepted(False, row[0], row[0])
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

    def cancel_message(self, message_id: str, *, by: str, case_id: str | None = None, now: dt.datetime | None = None) -> None:
        """Cancel a message to the citizen that has not been sent yet (in its review window).

        ``case_id``: the message must belong to that case (a provider names its own case);
        otherwise it is ``NotFound``, the same answer as for an id that does not exist."""
        now = now or instant()
        with self.write() as db:
            row = db.execute(
                "SELECT case_id, status, message_id FROM messages WHERE direction = 'out' AND "
                + ("case_id = ? AND (message_id = ? OR provider_message_id = ?)" if case_id is not None
                   else "message_id = ?"),
                [case_id, message_id, message_id] if case_id is not None else [message_id],
            ).fetchone()
            if row is not None:
                message_id = row[2]  # the gateway's own id of the provider's message
            if row is None:
                raise NotFound(f"there is no message '{message_id[:64]}' to a citizen"
                               + (" in this case." if case_id is not None else "."), field="messageId")
            outbox = db.execute(
                "SELECT id, status FROM outbox WHERE action = 'add_message' AND ref_id = ?", [message_id]
            ).fetchone()
            if row[1] == "cancelled":
                return
            if outbox is None or outbox[1] not in ("pending", "dead", "held"):
                state = "sent" if row[1] == "sent" else "being sent"
                raise NotCancellable(f"message '{message_id}' has been {state}; it cannot be recalled.", field="messageId")
            db.execute("UPDATE outbox SET status = 'cancelled', updated_at = ? WHERE id = ?", [ts(now), outbox[0]])
            db.execute("UPDATE messages SET status = 'cancelled' WHERE message_id = ?", [message_id])
            self._log(db, now, case_id=row[0], message_id=message_id, direction="out", event="message_cancelled",
                      status="ok", target=NATIONAL_TARGET, detail=f"cancelled by {by} before it was sent")

    def load_status(self, update_id: int) -> StatusUpdate:
        row = self.db.execute("SELECT content FROM status_updates WHERE id = ?", [update_id]).fetchone()
        if row is None:
            raise StoreError(f"status update {update_id} is not stored.")
        return status_from_data(json.loads(row[0]))

    def case_by_provider_id(self, target: str, provider_case_id: str) -> str | None:
        row = self.db.execute(
            "SELECT case_id FROM cases WHERE target = ? AND provider_case_id = ?", [target, provider_case_id]
        ).fetchone()
        return row[0] if row else None

    def timeline(self, case_id: str) -> dict[str, Any]:
        """The case's metadata, messages (without text), status changes and sync-log events."""
        case = self.case_row(case_id)
        if case is None:
            raise NotFound(f"there is no case '{case_id}'.", field="caseId")
        messages = list(self.db.query(
            """SELECT message_id, direction, kind, status, created_time, received_at, sent_at, origin,
                      provider_message_id
               FROM messages WHERE case_id = ? ORDER BY id""", [case_id]))
        statuses = list(self.db.query(
            "SELECT id, status, state, created_at, sent_at, origin FROM status_updates WHERE case_id = ? ORDER BY id",
            [case_id]))
        events = list(self.db.query(
            """SELECT at, direction, event, status, target, message_id, error_code, detail
               FROM sync_log WHERE case_id = ? ORDER BY id""", [case_id]))
        return {"case": case, "messages": messages, "statuses": statuses, "events": events}

    def log_event(self, *, direction: str, event: str, status: str, now: dt.datetime | None = None, **fields: Any) -> None:
        """A sync-log row of its own (metadata only; ``detail`` is scrubbed of person ids)."""
        if fields.get("detail"):
            fields["detail"] = redact_person_ids(str(fields["detail"]))[:1000]
        with self.write() as db:
            self._log(db, now or instant(), direction=direction, event=event, status=status, **fields)

    def get_cursor(self, target: str) -> str | None:
        row = self.db.execute("SELECT cursor FROM poll_cursors WHERE target = ?", [target]).fetchone()
        return row[0] if row else None

    def set_cursor(self, target: str, cursor: str, now: dt.datetime | None = None) -> None:
        with self.write() as db:
            db.execute(
                "INSERT INTO poll_cursors (target, cursor, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(target) DO UPDATE SET cursor = excluded.cursor, updated_at = excluded.updated_at",
                [target, cursor, ts(now or instant())],
            )

    def _put_attachments(
        self, db: Database, case_id: str, message_id: str | None, attachments: tuple[Attachment, ...], now: dt.datetime
    ) -> None:
        for position, attachment in enumerate(attachments, start=1):
            digest = attachment.sha256
            db.execute(
                "INSERT OR IGNORE INTO attachment_blobs (sha256, size, data, created_at) VALUES (?, ?, ?, ?)",
                [digest, attachment.size, sqlite3.Binary(attachment.data), ts(now)],
            )
            db.execute(
                """INSERT INTO attachments (case_id, message_id, position, file_name, mime_type, sha256)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                [case_id, message_id, position, attachment.file_name, attachment.mime_type, digest],
            )

    def _enqueue(
        self, db: Database, case_id: str, action: str, ref_id: str, target: str | None, not_before: dt.datetime,
        *, created: dt.datetime | None = None, status: str = "pending",
    ) -> None:
        created = created or not_before
        db.execute(
            """INSERT INTO outbox (case_id, action, ref_id, target, status, attempts, not_before,
                   idempotency_key, created_at, updated_at)
               VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?)""",
            [case_id, action, ref_id, target, status, ts(not_before), str(uuid.uuid4()), ts(created), ts(created)],
        )

    def _count(self, db: Database, name: str, target: str | None, direction: str, by: int = 1) -> None:
        db.execute(
            "INSERT INTO metrics_counters (name, target, direction, value) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name, target, direction) DO UPDATE SET value = value + excluded.value",
            [name, target or "", direction, by],
        )

    def _observe_latency(self, db: Database, target: str, direction: str, seconds: float) -> None:
        bucket = next((le for le in LATENCY_BUCKETS[:-1] if seconds <= float(le)), "+Inf")
        db.execute(
            "INSERT INTO metrics_latency (target, direction, le, count) VALUES (?, ?, ?, 1) "
            "ON CONFLICT(target, direction, le) DO UPDATE SET count = count + 1",
            [target, direction, bucket],
        )
        db.execute(
            "INSERT INTO metrics_latency_sum (target, direction, total_s, count) VALUES (?, ?, ?, 1) "
            "ON CONFLICT(target, direction) DO UPDATE SET total_s = total_s + excluded.total_s, count = count + 1",
            [target, direction, max(0.0, seconds)],
        )

    def _log(self, db: Database, now: dt.datetime, **fields: Any) -> None:
        fields["at"] = ts(now)
        columns = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        db.execute(f"INSERT INTO sync_log ({columns}) VALUES ({marks})", list(fields.values()))

    # -- delivery (the worker's side of the outbox) ----------------------------------------

    def claim(self, worker: str, *, limit: int, lease_s: float, now: dt.datetime | None = None,
              skip_ids: frozenset[int] = frozenset(), room: dict[str, int] | None = None,
              room_per_target: int | None = None) -> list[Job]:
        """Claim up to ``limit`` due rows for ``worker`` with a conditional update.

        A row is due when it is pending, its ``not_before`` has passed, its target is not
        paused, and no earlier row of the same case is still pending, in flight or dead
        (order per case; other cases are not held up).
        """
        if limit <= 0:
            return []
        now = now or instant()
        lease = ts(now + dt.timedelta(seconds=lease_s))
        jobs: list[Job] = []
        with self.write() as db:
            # ``room``: how many more calls each target may take now (``room_per_target`` for the rest)
            left = dict(room or {})
            full = sorted(t for t, n in left.items() if n <= 0)
            skip = "".join(
                [f" AND o.target NOT IN ({', '.join('?' for _ in full)})" if full else "",
                 f" AND o.id NOT IN ({', '.join('?' for _ in skip_ids)})" if skip_ids else ""])
            candidates = db.execute(
                f"SELECT o.id, o.target FROM outbox o WHERE {_CLAIMABLE}{skip} AND o.not_before <= ? "
                "ORDER BY o.not_before, o.id LIMIT ?",
                [*full, *sorted(skip_ids), ts(now), limit if room_per_target is None else limit * 8],
            ).fetchall()
            for row_id, target in candidates:
                if len(jobs) >= limit:
                    break
                if room_per_target is not None:
                    if left.setdefault(target, room_per_target) <= 0:
                        continue
                    left[target] -= 1
                claimed = db.execute(
                    """UPDATE outbox SET status = 'in_flight', claimed_by = ?, lease_until = ?,
                           attempts = attempts + 1, updated_at = ?
                       WHERE id = ? AND status = 'pending'""",
                    [worker, lease, ts(now), row_id],
                ).rowcount
                if not claimed:
                    continue
                row = db.execute(
                    """SELECT o.id, o.case_id, o.action, o.ref_id, o.target, o.attempts, o.idempotency_key,
                              c.receiver_hsa_id, c.provider_unit_code, c.provider_case_id, c.correlation_id,
                              c.national_case_id
                       FROM outbox o JOIN cases c ON c.case_id = o.case_id WHERE o.id = ?""",
                    [row_id],
                ).fetchone()
                jobs.append(Job(row[0], row[1], row[2], row[3], row[4], row[5], row[6], worker, *row[7:]))
        return jobs

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
        number = db.execute("SELECT count(*) + 1 FROM attempts WHERE outbox_id = ?", [job.id]).fetchone()[0]
        db.execute(
            """INSERT INTO attempts (outbox_id, case_id, target, attempt, started_at, duration_ms, outcome,
                   status_code, error_code, detail, response) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [job.id, job.case_id, job.target, number, ts(started), round(duration_ms, 1), outcome, status_code,
             error_code, detail, _response_json(response)],
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
        now: dt.datetime | None = None,
    ) -> bool:
        """Mark a claimed row delivered. False if the claim was lost (lease ran out meanwhile).

        ``provider_case_id``/``national_case_id``: the ids the provider or 1177 gave the case;
        ``detail``: what the target said besides OK (1177's INFO text), kept on the attempt;
        ``follow_up``: a message to the citizen queued in the same transaction (the automatic
        receipt once the provider has accepted the case), so it cannot be lost in between."""
        now = now or instant()
        with self.write() as db:
            updated = db.execute(
                """UPDATE outbox SET status = 'done', delivered_at = ?, updated_at = ?, lease_until = NULL,
                       last_error = NULL, last_error_code = NULL
                   WHERE id = ? AND status = 'in_flight' AND claimed_by = ?""",
                [ts(now), ts(now), job.id, job.claimed_by],
            ).rowcount
            detail = redact_person_ids(detail) if detail else None
            self._finish(db, job, started=started, duration_ms=duration_ms,
                         outcome="delivered" if updated else "delivered_late", status_code=status_code,
                         error_code=None, detail=detail if updated else "the lease had run out; the row was requeued")
            if not updated:
                return False
            self._count(db, "delivered", job.target, _direction(job.action))
            created = db.execute("SELECT created_at FROM outbox WHERE id = ?", [job.id]).fetchone()[0]
            self._observe_latency(db, job.target, _direction(job.action), (now - _parse_ts(created)).total_seconds())
            if provider_case_id:
                db.execute("UPDATE cases SET provider_case_id = ? WHERE case_id = ?", [provider_case_id, job.case_id])
            if national_case_id:
                db.execute("UPDATE cases SET national_case_id = ? WHERE case_id = ?", [national_case_id, job.case_id])
            if job.action == "deliver_case":
                db.execute("UPDATE cases SET status = 'delivered', updated_at = ? WHERE case_id = ?", [ts(now), job.case_id])
            elif job.action == "deliver_message":
                db.execute("UPDATE messages SET status = 'delivered' WHERE message_id = ?", [job.ref_id])
            elif job.action == "add_message":
                db.execute("UPDATE messages SET status = 'sent', sent_at = ? WHERE message_id = ?", [ts(now), job.ref_id])
            elif job.action == "update_status":
                db.execute("UPDATE status_updates SET state = 'sent', sent_at = ? WHERE id = ?", [ts(now), int(job.ref_id)])
            elif job.action == "register_case":
                db.execute("UPDATE cases SET status = 'registered', updated_at = ? WHERE case_id = ?", [ts(now), job.case_id])
            self._log(db, now, correlation_id=job.correlation_id, case_id=job.case_id,
                      message_id=job.ref_id if job.action in ("deliver_message", "add_message") else None,
                      direction=_direction(job.action), event="delivered", status="ok", target=job.target,
                      hsa_id=job.receiver_hsa_id,
                      detail=f"{job.action}, attempt {job.attempt}, {round(duration_ms)} ms"
                      + (f", provider case {provider_case_id}" if provider_case_id else "")
                      + (f", 1177 case {national_case_id}" if national_case_id else "")
                      + (f"; {detail}" if detail else ""))
            if job.action == "deliver_case":
                self._erase_contact(db, job, now)
            if job.action in ("deliver_case", "register_case"):
                if follow_up is not None:  # the receipt takes the place kept for it at intake
                    self._insert_reply(db, follow_up, hold_s=0, origin="auto", correlation_id=job.correlation_id,
                                       now=now, reserved=True)
                else:
                    db.execute("UPDATE outbox SET status = 'cancelled', updated_at = ? "
                               "WHERE case_id = ? AND action = ? AND status = 'reserved'", [ts(now), job.case_id, RECEIPT])
        return True

    def _erase_contact(self, db: Database, job: Job, now: dt.datetime) -> None:
        """Rule 8: the citizen's contact details (given with consent, for messages only) are
        not kept once the provider has them; the sync log records that they were erased."""
        row = db.execute("SELECT content FROM cases WHERE case_id = ?", [job.case_id]).fetchone()
        if not row or not row[0]:
            return
        data = json.loads(row[0])
        if not (data.get("subject_of_care") or {}).get("contact"):
            return
        data["subject_of_care"]["contact"] = None
        db.execute("UPDATE cases SET content = ? WHERE case_id = ?",
                   [json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":")), job.case_id])
        self._log(db, now, correlation_id=job.correlation_id, case_id=job.case_id, direction="in",
                  event="contact_erased", status="ok", target=job.target, hsa_id=job.receiver_hsa_id,
                  detail="the citizen's contact details were delivered (for messages only) and erased from the gateway")

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
                self._count(db, "failed", job.target, _direction(job.action))
                if dead:
                    self._count(db, "dead", job.target, _direction(job.action))
                self._log(db, now, correlation_id=job.correlation_id, case_id=job.case_id,
                          message_id=job.ref_id if job.action in ("deliver_message", "add_message") else None,
                          direction=_direction(job.action),
                          event="dead" if dead else "retry_scheduled", status="dead" if dead else "retry",
                          target=job.target, hsa_id=job.receiver_hsa_id, error_code=error_code,
                          # the reason may quote the target's answer (content): it stays on the
                          # attempt and the row, for readers; the sync log (metadata) has the code
                          detail=f"{job.action}, attempt {job.attempt}: {error_code}"
                          + (f" (HTTP {status_code})" if status_code else "")
                          + ("" if dead else f"; next attempt {ts(retry_at)}"))  # type: ignore[arg-type]
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
                   WHERE o.status = 'in_flight' AND (o.lease_until < ? OR (? IS NOT NULL AND h.at < ?))""",
                [ts(now), ts(now), stale_before, stale_before],
            ).fetchall()
            for row_id, case_id, target, claimed_by, action, hsa, correlation, expired in rows:
                why = ("its lease ran out during the attempt" if expired
                       else f"its heartbeat stopped (none for {stale_s:g} s)")
                db.execute(
                    """UPDATE outbox SET status = 'pending', claimed_by = NULL, lease_until = NULL, updated_at = ?,
                           last_error = ?, last_error_code = NULL
                       WHERE id = ? AND status = 'in_flight'""",
                    [ts(now), f"requeued: the worker {why}", row_id],
                )
                self._log(db, now, correlation_id=correlation, case_id=case_id, direction=_direction(action),
                          event="lease_expired" if expired else "worker_dead",
                          status="retry", target=target, hsa_id=hsa,
                          detail=f"{action}: {claimed_by} is gone ({why}); requeued")
        return len(rows)

    def next_due(self) -> dt.datetime | None:
        """When the earliest claimable row becomes due (None when there is none)."""
        row = self.db.execute(f"SELECT min(o.not_before) FROM outbox o WHERE {_CLAIMABLE}").fetchone()
        return _parse_ts(row[0]) if row[0] else None

    def find_case(self, ident: str, *, target: str | None = None) -> dict[str, Any] | None:
        """The case known by ``ident``: the gateway's id, 1177's id (a case registered outside
        1177 gets one from 1177) or, given ``target``, that target's own id for it."""
        row = self.db.execute(
            """SELECT case_id FROM cases WHERE case_id = ?
               UNION ALL SELECT case_id FROM cases WHERE national_case_id = ?
               UNION ALL SELECT case_id FROM cases WHERE ? IS NOT NULL AND target = ? AND provider_case_id = ?
               LIMIT 1""", [ident, ident, target, target, ident]).fetchone()
        return self.case_row(row[0]) if row else None

    def load_case(self, case_id: str) -> Case:
        row = self.db.execute("SELECT content, purged_at FROM cases WHERE case_id = ?", [case_id]).fetchone()
        if row is None or row[0] is None:
            why = "was purged after the retention period" if row and row[1] else "is not stored"
            raise Undeliverable(f"the content of case '{case_id[:64]}' {why}; nothing can be delivered for it.")
        return case_from_data(json.loads(row[0]), tuple(self.attachments_of(case_id)))

    def case_person_ids(self, case_id: str) -> list[str]:
        """The person ids of a case's citizen and representative (the wrong-patient guard's
        'own' ids, rule 14). For comparison only: never log or answer them."""
        row = self.db.execute("SELECT content FROM cases WHERE case_id = ?", [case_id]).fetchone()
        if row is None or row[0] is None:
            return []
        data = json.loads(row[0])
        people = [data.get("subject_of_care"), data.get("representative")]
        return [p["person_id"]["id"] for p in people if p and (p.get("person_id") or {}).get("id")]

    def load_message(self, message_id: str) -> Message:
        row = self.db.execute("SELECT case_id, content FROM messages WHERE message_id = ?", [message_id]).fetchone()
        if row is None or row[1] is None:
            raise Undeliverable(f"the content of message '{message_id[:64]}' is gone (purged or never stored).")
        return message_from_data(json.loads(row[1]), tuple(self.attachments_of(row[0], message_id)))

    # -- operator actions -------------------------------------------------------------------

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

    def paused_targets(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM targets WHERE paused = 1").fetchall()}

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
            self._log(db, now, case_id=row[0], direction="in", event="replayed", status="ok", target=row[1],
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
            if row[2] in ("deliver_case", "register_case"):  # no receipt for a case that never got there
                db.execute("UPDATE outbox SET status = 'cancelled', updated_at = ? "
                           "WHERE case_id = ? AND action = ? AND status = 'reserved'", [ts(now), row[0], RECEIPT])
            self._log(db, now, case_id=row[0], direction="in", event="cancelled", status="ok", target=row[1],
                      detail=f"outbox row {outbox_id} cancelled by {by}")
        return True

    def attempts_of(self, outbox_id: int) -> list[dict[str, Any]]:
        """The attempts of a row, oldest first; ``response`` (what came back) as a dict or None."""
        rows = list(self.db.query("SELECT * FROM attempts WHERE outbox_id = ? ORDER BY id", [outbox_id]))
        for row in rows:
            try:
                row["response"] = json.loads(row["response"]) if row.get("response") else None
            except ValueError:
                row["response"] = None
        return rows

    # -- reads ----------------------------------------------------------------------------

    def case_row(self, case_id: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM cases WHERE case_id = ?", [case_id]))
        return rows[0] if rows else None

    def attachments_of(self, case_id: str, message_id: str | None = None) -> list[Attachment]:
        rows = self.db.execute(
            """SELECT a.file_name, a.mime_type, b.data FROM attachments a
               JOIN attachment_blobs b ON b.sha256 = a.sha256
               WHERE a.case_id = ? AND a.message_id IS ? ORDER BY a.position""",
            [case_id, message_id],
        ).fetchall()
        return [Attachment(name, mime, bytes(data)) for name, mime, data in rows]

    def outbox_rows(self, case_id: str) -> list[dict[str, Any]]:
        """A case's outbox rows in order; ``blocked_by``: the dead row a waiting one is stuck behind."""
        return list(self.db.query(f"SELECT o.*, {_BLOCKED_BY} FROM outbox o WHERE o.case_id = ? ORDER BY o.id", [case_id]))

    def blocked_counts(self) -> list[dict[str, Any]]:
        """Per target, how many rows wait behind a dead row of their case (they cannot move on their own)."""
        return list(self.db.query(
            """SELECT o.target, count(*) AS n FROM outbox o WHERE o.status IN ('pending', 'reserved')
                 AND EXISTS (SELECT 1 FROM outbox e WHERE e.case_id = o.case_id AND e.id < o.id AND e.status = 'dead')
               GROUP BY o.target"""))

    def counts(self) -> dict[str, int]:
        """Row counts of the content tables (used by ``gateway check`` and tests)."""
        tables = ("cases", "messages", "attachments", "attachment_blobs", "outbox", "sync_log")
        return {t: self.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}

    # -- operations: what the ops view, the CLI and /metrics read ------------------------------

    def search_log(
        self,
        *,
        case_id: str | None = None,
        hsa_id: str | None = None,
        target: str | None = None,
        direction: str | None = None,
        status: str | None = None,
        error_code: str | None = None,
        event: str | None = None,
        since: str | None = None,
        until: str | None = None,
        before: tuple[str, int] | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Sync-log rows matching every given filter, newest first, ``limit`` at a time.

        ``before`` is the (at, id) of the last row of the previous page (keyset paging, so
        a deep page costs what the first one does). Every filter column leads an index
        together with ``at``, so no search scans the table."""
        where, params = [], []
        # The most selective filter leads its (column, at) index; the others are written
        # '+column' so SQLite cannot pick their broader index instead (without ANALYZE
        # statistics it would, and walk most of the table for a case id plus a status).
        leading = True
        for column, value in (("case_id", case_id), ("error_code", error_code), ("event", event),
                              ("hsa_id", hsa_id.upper() if hsa_id else None), ("target", target), ("status", status),
                              ("direction", direction)):
            if value:
                where.append(f"{'' if leading else '+'}{column} = ?")
                params.append(value)
                leading = False
        if since:
            where.append("at >= ?")
            params.append(since)
        if until:
            where.append("at < ?")
            params.append(until)
        if before:
            # 'at <= ?' gives the index a range to start from, so a deep page costs what the first does
            where.append("at <= ? AND (at < ? OR id < ?)")
            params += [before[0], before[0], before[1]]
        sql = "SELECT * FROM sync_log" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY at DESC, id DESC LIMIT ?"
        return list(self.db.query(sql, [*params, max(1, min(limit, 500))]))

    def dashboard(self, now: dt.datetime | None = None) -> dict[str, Any]:
        """Counts per status and target, deliveries and failures per hour over the last day,
        the oldest undelivered row and the dead-letter count."""
        now = now or instant()
        db = self.db
        day_ago = ts(now - dt.timedelta(hours=24))
        hours: dict[str, dict[str, int]] = {}
        for hour, outcome, count in db.execute(
            """SELECT substr(started_at, 1, 13), outcome, count(*) FROM attempts
               WHERE started_at >= ? GROUP BY 1, 2""", [day_ago]
        ):
            hours.setdefault(hour, {})[outcome] = count
        oldest = db.execute(
            """SELECT id, case_id, action, target, status, created_at, last_error_code FROM outbox
               WHERE status = 'pending' ORDER BY created_at LIMIT 1""").fetchone()
        in_flight = db.execute(
            "SELECT id, case_id, action, target, status, created_at, last_error_code FROM outbox "
            "WHERE status = 'in_flight' ORDER BY created_at LIMIT 1").fetchone()
        candidates = [r for r in (oldest, in_flight) if r]
        first = min(candidates, key=lambda r: r[5]) if candidates else None
        return {
            "cases": list(db.query("SELECT target, status, count(*) AS n FROM cases GROUP BY target, status ORDER BY target, status")),
            "messages": list(db.query("SELECT direction, status, count(*) AS n FROM messages GROUP BY direction, status")),
            "outbox": list(db.query("SELECT target, status, count(*) AS n FROM outbox GROUP BY target, status ORDER BY target, status")),
            "hours": hours,
            "oldest_undelivered": dict(zip(("id", "case_id", "action", "target", "status", "created_at", "last_error_code"), first, strict=True)) if first else None,
            "dead": db.execute("SELECT count(*) FROM outbox WHERE status = 'dead'").fetchone()[0],
            "paused": sorted(self.paused_targets()),
        }

    def outbox_list(self, *, status: str | None = "dead", target: str | None = None, limit: int = 100,
                    before_id: int | None = None) -> list[dict[str, Any]]:
        where, params = [], []
        if status:
            where.append("status = ?")
            params.append(status)
        if target:
            where.append("target = ?")
            params.append(target)
        if before_id:
            where.append("id < ?")
            params.append(before_id)
        if status == "blocked":  # waiting behind a dead row of the case
            where[0] = f"{_BLOCKER} IS NOT NULL"
            params.pop(0)
        sql = (f"SELECT o.*, {_BLOCKED_BY} FROM outbox o" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY o.id DESC LIMIT ?")
        return list(self.db.query(sql, [*params, max(1, min(limit, 1000))]))

    def outbox_row(self, outbox_id: int) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM outbox WHERE id = ?", [outbox_id]))
        return rows[0] if rows else None

    def case_detail(self, case_id: str, *, with_content: bool) -> dict[str, Any]:
        """Everything about one case: its timeline both ways, every outbox row with its
        attempts; with ``with_content`` also the citizen's and the care side's texts."""
        view = self.timeline(case_id)
        outbox = self.outbox_rows(case_id)
        for row in outbox:
            row["attempts"] = self.attempts_of(row["id"])
        view["outbox"] = outbox
        view["attachments"] = list(self.db.query(
            "SELECT message_id, position, file_name, mime_type, a.sha256, b.size FROM attachments a "
            "JOIN attachment_blobs b ON b.sha256 = a.sha256 WHERE case_id = ? ORDER BY message_id, position", [case_id]))
        if with_content:
            content = view["case"].get("content")
            view["content"] = json.loads(content) if content else None
            view["message_contents"] = {
                r["message_id"]: json.loads(r["content"]) if r["content"] else None
                for r in self.db.query("SELECT message_id, content FROM messages WHERE case_id = ?", [case_id])
            }
        view["case"] = {k: v for k, v in view["case"].items() if k != "content"}
        return view

    def attachment(self, case_id: str, sha256: str) -> tuple[str, str, bytes] | None:
        row = self.db.execute(
            """SELECT a.file_name, a.mime_type, b.data FROM attachments a JOIN attachment_blobs b ON b.sha256 = a.sha256
               WHERE a.case_id = ? AND a.sha256 = ? LIMIT 1""", [case_id, sha256]).fetchone()
        return (row[0], row[1], bytes(row[2])) if row else None

    def case_attachments(self, case_id: str) -> list[dict[str, Any]]:
        """The case's own attachments (not its messages'), by position: position, file_name,
        mime_type, sha256, size."""
        return list(self.db.query(
            "SELECT a.position, a.file_name, a.mime_type, a.sha256, b.size FROM attachments a "
            "JOIN attachment_blobs b ON b.sha256 = a.sha256 WHERE a.case_id = ? AND a.message_id IS NULL "
            "ORDER BY a.position", [case_id]))

    def case_attachment(self, case_id: str, ref: str) -> dict[str, Any] | None:
        """One of the case's own attachments by its position (1-based) or its SHA-256, with
        its bytes (``data``); None when the case has no such file. A purged case's files are
        gone: ``CasePurged``."""
        case = self.db.execute("SELECT purged_at FROM cases WHERE case_id = ?", [case_id]).fetchone()
        if case is not None and case[0]:
            raise CasePurged(f"case '{case_id[:64]}': its files have been purged after the retention period.",
                             field="caseId")
        if ref.isdigit() and len(ref) <= 3:
            where, value = "a.position = ?", int(ref)
        elif len(ref) == 64 and all(c in "0123456789abcdef" for c in ref.lower()):
            where, value = "a.sha256 = ?", ref.lower()
        else:
            return None
        row = self.db.execute(
            f"""SELECT a.position, a.file_name, a.mime_type, a.sha256, b.size, b.data FROM attachments a
                JOIN attachment_blobs b ON b.sha256 = a.sha256
                WHERE a.case_id = ? AND a.message_id IS NULL AND {where} ORDER BY a.position LIMIT 1""",
            [case_id, value]).fetchone()
        if row is None:
            return None
        return {"position": row[0], "file_name": row[1], "mime_type": row[2], "sha256": row[3], "size": row[4],
                "data": bytes(row[5])}

    def audit(self, who: str, role: str, action: str, obj: str, detail: str = "", now: dt.datetime | None = None) -> None:
        """Record an operator's action (who, what, when)."""
        with self.write() as db:
            db.execute("INSERT INTO audit_log (at, who, role, action, object, detail) VALUES (?, ?, ?, ?, ?, ?)",
                       [ts(now or instant()), who, role, action, obj, redact_person_ids(detail)[:1000]])

    # -- the ops view's sign-in: throttling and sessions ---------------------------------------

    def sign_in_locked_until(self, keys: list[str], now: dt.datetime) -> str | None:
        """The latest lock end of ``keys`` that is still ahead of ``now``, or None."""
        marks = ", ".join("?" for _ in keys)
        row = self.db.execute(f"SELECT max(locked_until) FROM sign_in_failures WHERE key IN ({marks}) "
                              "AND locked_until > ?", [*keys, ts(now)]).fetchone()
        return row[0] if row and row[0] else None

    def record_sign_in_failure(self, limits: dict[str, int], *, window_s: float, lockout_s: float,
                               now: dt.datetime) -> list[str]:
        """Count a failed sign-in against each key (``{key: failures allowed}``); a key that
        reaches its limit within ``window_s`` is locked for ``lockout_s``. Returns the keys
        this failure locked."""
        locked = []
        with self.write() as db:
            for key, limit in limits.items():
                row = db.execute("SELECT failures, first_at, locked_until FROM sign_in_failures WHERE key = ?",
                                 [key]).fetchone()
                fresh = (row is None or _parse_ts(row[1]) < now - dt.timedelta(seconds=window_s)
                         or (row[2] is not None and row[2] <= ts(now)))
                failures = 1 if fresh else row[0] + 1
                first = ts(now) if fresh else row[1]
                until = None if fresh else row[2]
                if until is None and failures >= limit:
                    until = ts(now + dt.timedelta(seconds=lockout_s))
                    locked.append(key)
                db.execute("INSERT INTO sign_in_failures (key, failures, first_at, last_at, locked_until) "
                           "VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET failures = excluded.failures, "
                           "first_at = excluded.first_at, last_at = excluded.last_at, locked_until = excluded.locked_until",
                           [key, failures, first, ts(now), until])
        return locked

    def clear_sign_in_failures(self, key: str) -> bool:
        """Forget the failures (and lift the lock) of ``key``; True if there were any."""
        with self.write() as db:
            return db.execute("DELETE FROM sign_in_failures WHERE key = ?", [key]).rowcount > 0

    def sign_in_failures(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM sign_in_failures ORDER BY key"))

    def start_session(self, user: str, now: dt.datetime) -> str:
        """A new ops session for ``user``; its id goes in the (signed) cookie."""
        sid = uuid.uuid4().hex + uuid.uuid4().hex
        with self.write() as db:
            # no cookie lives longer than ops.session_minutes (at most 7 days): older rows can go
            db.execute("DELETE FROM ops_sessions WHERE created_at < ?", [ts(now - dt.timedelta(days=8))])
            db.execute("INSERT INTO ops_sessions (sid, user, created_at) VALUES (?, ?, ?)", [sid, user, ts(now)])
        return sid

    def session_user(self, sid: str) -> str | None:
        """The user of a session that has not ended, or None."""
        row = self.db.execute("SELECT user FROM ops_sessions WHERE sid = ? AND ended_at IS NULL", [sid]).fetchone()
        return row[0] if row else None

    def end_sessions(self, *, now: dt.datetime, sid: str | None = None, user: str | None = None) -> int:
        """End one session, or every session of ``user``; a copied cookie no longer works."""
        where, params = ("sid = ?", [sid]) if sid is not None else ("user = ?", [user])
        with self.write() as db:
            return db.execute(f"UPDATE ops_sessions SET ended_at = ? WHERE {where} AND ended_at IS NULL",
                              [ts(now), *params]).rowcount

    def audit_entries(self, limit: int = 100) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", [limit]))

    def metric_counters(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT name, target, direction, value FROM metrics_counters"))

    def metric_latency(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return (list(self.db.query("SELECT target, direction, le, count FROM metrics_latency")),
                list(self.db.query("SELECT target, direction, total_s, count FROM metrics_latency_sum")))

    def queue_depth(self) -> list[dict[str, Any]]:
        """Rows still to deliver per target and status, and the oldest one's creation time."""
        return list(self.db.query(
            """SELECT target, status, count(*) AS n, min(created_at) AS oldest FROM outbox
               WHERE status IN ('pending', 'in_flight', 'dead') GROUP BY target, status"""))

    def failure_rate(self, target: str, since: dt.datetime) -> tuple[int, int]:
        """(failed, all) attempts of ``target`` since ``since``."""
        row = self.db.execute(
            """SELECT sum(outcome IN ('retry', 'dead', 'failed_late')), count(*) FROM attempts
               WHERE started_at >= ? AND target = ?""", [ts(since), target]).fetchone()
        return int(row[0] or 0), int(row[1] or 0)

    def alert_state(self, key: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM alert_state WHERE key = ?", [key]))
        return rows[0] if rows else None

    def set_alert_state(self, key: str, *, kind: str, target: str, active: bool, sent: bool, detail: str,
                        now: dt.datetime | None = None) -> None:
        now = now or instant()
        with self.write() as db:
            previous = db.execute("SELECT active, since, last_sent_at FROM alert_state WHERE key = ?", [key]).fetchone()
            since = previous[1] if previous and bool(previous[0]) == active else ts(now)
            last_sent = ts(now) if sent else (previous[2] if previous else None)
            db.execute(
                "INSERT INTO alert_state (key, kind, target, active, since, last_sent_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET active = excluded.active, since = excluded.since, "
                "last_sent_at = excluded.last_sent_at, detail = excluded.detail",
                [key, kind, target, int(active), since, last_sent, detail[:500]],
            )

    def dead_since(self, since: dt.datetime) -> list[dict[str, Any]]:
        """Rows that went dead after ``since`` (for the dead-letter alert)."""
        return list(self.db.query(
            "SELECT id, case_id, action, target, last_error_code, updated_at FROM outbox "
            "WHERE status = 'dead' AND updated_at > ? ORDER BY updated_at", [ts(since)]))

    # -- retention (DESIGN.md rule 2) ---------------------------------------------------------

    def purge(self, *, content_before: dt.datetime, log_before: dt.datetime, batch: int = 500,
              now: dt.datetime | None = None) -> dict[str, int]:
        """Remove the content and files of cases whose last activity (a message either way, a
        status change) was before ``content_before``, and sync-log detail written before
        ``log_before``; never for a case with undelivered, dead or reserved work.
        Returns what was removed; the freed pages are given back to the file system."""
        now = now or instant()
        page_size = self.db.execute("PRAGMA page_size").fetchone()[0]
        before_bytes = self.db.execute("PRAGMA page_count").fetchone()[0] * page_size
        removed = {"cases": 0, "messages": 0, "attachments": 0, "files": 0, "log_details": 0}
        unfinished = ", ".join(f"'{s}'" for s in UNFINISHED)
        while True:
            with self.write() as db:
                ids = [r[0] for r in db.execute(
                    f"""SELECT c.case_id FROM cases c
                        WHERE c.last_activity_at < ? AND c.purged_at IS NULL
                          AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.case_id = c.case_id AND o.status IN ({unfinished}))
                        LIMIT ?""", [ts(content_before), batch])]
                if not ids:
                    break
                marks = ", ".join("?" for _ in ids)
                removed["cases"] += db.execute(
                    f"UPDATE cases SET content = NULL, purged_at = ? WHERE case_id IN ({marks})", [ts(now), *ids]).rowcount
                removed["messages"] += db.execute(
                    f"UPDATE messages SET content = NULL WHERE case_id IN ({marks}) AND content IS NOT NULL", ids).rowcount
                removed["attachments"] += db.execute(f"DELETE FROM attachments WHERE case_id IN ({marks})", ids).rowcount
                # what a target answered may quote the case: content, purged with it
                db.execute(f"UPDATE attempts SET response = NULL WHERE case_id IN ({marks}) AND response IS NOT NULL", ids)
                removed["files"] += db.execute(
                    "DELETE FROM attachment_blobs WHERE NOT EXISTS "
                    "(SELECT 1 FROM attachments a WHERE a.sha256 = attachment_blobs.sha256)").rowcount
                self._log(db, now, direction="in", event="purged", status="ok",
                          detail=f"content and files of {len(ids)} case(s) with no activity since {ts(content_before)}")
        while True:
            with self.write() as db:
                count = db.execute(
                    f"""UPDATE sync_log SET detail = NULL WHERE id IN (
                          SELECT s.id FROM sync_log s WHERE s.at < ? AND s.detail IS NOT NULL
                            AND (s.case_id IS NULL OR NOT EXISTS (
                                 SELECT 1 FROM outbox o WHERE o.case_id = s.case_id AND o.status IN ({unfinished})))
                          LIMIT ?)""", [ts(log_before), batch * 10]).rowcount
            removed["log_details"] += count
            if count == 0:
                break
        # executescript steps the pragma to the end; execute() would free a single page
        self.db.conn.executescript("PRAGMA incremental_vacuum; PRAGMA optimize;")  # and refresh the planner's statistics
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        after_bytes = self.db.execute("PRAGMA page_count").fetchone()[0] * page_size
        removed["bytes_freed"] = max(0, before_bytes - after_bytes)
        return removed

    def setting(self, name: str, default: Any) -> str:
        """A value kept in the database, created from ``default()`` on first use (e.g. a signing key)."""
        row = self.db.execute("SELECT value FROM settings WHERE name = ?", [name]).fetchone()
        if row:
            return row[0]
        with self.write() as db:
            db.execute("INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)", [name, default()])
            return db.execute("SELECT value FROM settings WHERE name = ?", [name]).fetchone()[0]

    # -- scheduled jobs, claimed once across processes ------------------------------------

    def claim_job(self, name: str, owner: str, *, every_s: float, run_for_s: float,
                  now: dt.datetime | None = None) -> JobRun | None:
        """Claim the next run of scheduled job ``name`` for ``owner``, or None when it is not
        due yet or another process runs it. Every process asks on its own timer; the one that
        finds it due wins (a conditional update in one write transaction), and the next run
        falls due ``every_s`` later. ``run_for_s``: how long the run may hold the job before
        another process may take it over (a process that died mid-run)."""
        now = now or instant()
        with self.write() as db:
            db.execute("INSERT OR IGNORE INTO job_leases (name, due_at) VALUES (?, ?)", [name, ts(now)])
            claimed = db.execute(
                """UPDATE job_leases SET owner = ?, due_at = ?, running_until = ?
                   WHERE name = ? AND due_at <= ? AND (running_until IS NULL OR running_until < ?)""",
                [owner, ts(now + dt.timedelta(seconds=every_s)), ts(now + dt.timedelta(seconds=run_for_s)),
                 name, ts(now), ts(now)],
            ).rowcount
            if not claimed:
                return None
            previous = db.execute("SELECT last_run_at FROM job_leases WHERE name = ?", [name]).fetchone()[0]
            db.execute("UPDATE job_leases SET last_run_at = ? WHERE name = ?", [ts(now), name])
        return JobRun(name, owner, _parse_ts(previous) if previous else None)

    def finish_job(self, run: JobRun) -> None:
        """The run is over: the job may be claimed again once it is due."""
        with self.write() as db:
            db.execute("UPDATE job_leases SET running_until = NULL WHERE name = ? AND owner = ?", [run.name, run.owner])

    def job_leases(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM job_leases ORDER BY name"))

    # -- worker heartbeat -----------------------------------------------------------------

    def beat(self, name: str, detail: str = "", now: dt.datetime | None = None) -> None:
        with self.write() as db:
            db.execute(
                "INSERT INTO heartbeats (name, at, detail) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET at = excluded.at, detail = excluded.detail",
                [name, ts(now or instant()), detail],
            )

    def last_beat(self, name: str) -> str | None:
        row = self.db.execute("SELECT at FROM heartbeats WHERE name = ?", [name]).fetchone()
        return row[0] if row else None

    def check_writable(self) -> None:
        """Raise ``StoreError`` unless the store can be written: a write transaction opens, and
        the last real write of this process did not fail (a full disk lets a transaction
        open and even commit nothing, but not store a case)."""
        failure = self.last_write_failure
        with self.write() as db:
            db.execute("SELECT 1")
        if failure:  # this probe stored nothing: only a real write (a case, a heartbeat) clears it
            self.last_write_failure = failure
            raise StoreError(f"{failure}; new cases are refused until a write succeeds.")


#: The most of a response excerpt's body the store keeps, whatever the adapter sent.
RESPONSE_BODY_LIMIT = 4096


def _response_json(response: dict[str, Any] | None) -> str | None:
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
