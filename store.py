"""The store: every SQL statement of the gateway, on SQLite through sqlite-utils.

Role: durable state. Cases, messages and their attachments (each file stored once, by
SHA-256), the outbox the worker delivers from, the sync log operations read, and the
worker's heartbeat. The schema is built by ``sqlite_utils.migrations.Migrations``.

May import: ``model``, ``errors``.

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
import datetime as dt
import hashlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from errors import IdConflict, StoreError, UnknownCase
from model import Attachment, Case, Message

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


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def ts(value: dt.datetime) -> str:
    """The store's timestamp format: ISO 8601 UTC with microseconds, sortable as text."""
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _content(obj: Case | Message) -> tuple[str, str]:
    """JSON content without file bytes, and a hash over it and the files' hashes."""
    data = asdict(obj)
    data["attachments"] = [
        {"file_name": a.file_name, "mime_type": a.mime_type, "sha256": a.sha256, "size": a.size}
        for a in obj.attachments
    ]
    # asdict() copies the bytes of every attachment; drop them at once
    text = json.dumps(_jsonable(data), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()


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
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"the database is busy or unavailable ({exc}).") from None
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            if db.conn.in_transaction:
                db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                raise StoreError(f"the database could not complete the write ({exc}).") from None
            raise

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
        now: dt.datetime | None = None,
    ) -> Accepted:
        """Store a new case with its files and its outbox row, atomically.

        The same ``case_id`` with the same content again is a no-op (``created`` False);
        with other content it is an ``IdConflict``.
        """
        now = now or utcnow()
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
                       content_hash, content)
                   VALUES (?, ?, ?, ?, ?, ?, ?, 'received', ?, ?, ?, ?, ?, ?)""",
                [
                    case.case_id, origin, case.case_type.value, case.receiver.hsa_id,
                    int(case.receiver.is_patient_board), target, provider_unit_code,
                    case.created_time.isoformat(), ts(now), ts(now), correlation_id, content_hash, content,
                ],
            )
            self._put_attachments(db, case.case_id, None, case.attachments, now)
            self._enqueue(db, case.case_id, "deliver_case", case.case_id, target, now)
            self._log(
                db, now, correlation_id=correlation_id, case_id=case.case_id, direction="in",
                event="case_received", status="ok", target=target, hsa_id=case.receiver.hsa_id,
                detail=f"{case.case_type.value}, {len(case.attachments)} attachment(s)",
            )
        return Accepted(True, case.case_id, case.case_id)

    def accept_message(self, message: Message, *, correlation_id: str | None, now: dt.datetime | None = None) -> Accepted:
        """Store a citizen's follow-up message for a known case, with its outbox row."""
        now = now or utcnow()
        content, content_hash = _content(message)
        with self.write() as db:
            case = db.execute(
                "SELECT target, receiver_hsa_id FROM cases WHERE case_id = ?", [message.case_id]
            ).fetchone()
            if case is None:
                raise UnknownCase(f"caseId '{message.case_id}' is not known to this gateway.", field="caseId")
            target, receiver = case
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
            db.execute("UPDATE cases SET updated_at = ? WHERE case_id = ?", [ts(now), message.case_id])
            self._log(
                db, now, correlation_id=correlation_id, case_id=message.case_id, message_id=message.message_id,
                direction="in", event="message_received", status="ok", target=target, hsa_id=receiver,
                detail=f"{len(message.attachments)} attachment(s)",
            )
        return Accepted(True, message.case_id, message.message_id)

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

    def _enqueue(self, db: Database, case_id: str, action: str, ref_id: str, target: str | None, now: dt.datetime) -> None:
        db.execute(
            """INSERT INTO outbox (case_id, action, ref_id, target, status, attempts, not_before,
                   idempotency_key, created_at, updated_at)
               VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?)""",
            [case_id, action, ref_id, target, ts(now), str(uuid.uuid4()), ts(now), ts(now)],
        )

    def _log(self, db: Database, now: dt.datetime, **fields: Any) -> None:
        fields["at"] = ts(now)
        columns = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        db.execute(f"INSERT INTO sync_log ({columns}) VALUES ({marks})", list(fields.values()))

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
        return list(self.db.query("SELECT * FROM outbox WHERE case_id = ? ORDER BY id", [case_id]))

    def counts(self) -> dict[str, int]:
        """Row counts of the content tables (used by ``gateway check`` and tests)."""
        tables = ("cases", "messages", "attachments", "attachment_blobs", "outbox", "sync_log")
        return {t: self.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}

    # -- worker heartbeat -----------------------------------------------------------------

    def beat(self, name: str, detail: str = "", now: dt.datetime | None = None) -> None:
        with self.write() as db:
            db.execute(
                "INSERT INTO heartbeats (name, at, detail) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET at = excluded.at, detail = excluded.detail",
                [name, ts(now or utcnow()), detail],
            )

    def last_beat(self, name: str) -> str | None:
        row = self.db.execute("SELECT at FROM heartbeats WHERE name = ?", [name]).fetchone()
        return row[0] if row else None

    def check_writable(self) -> None:
        """Raise ``StoreError`` unless a write transaction can be opened now."""
        with self.write() as db:
            db.execute("SELECT 1")
