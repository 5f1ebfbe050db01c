"""The store's foundation: connections, write transactions, and what every area shares.

Role: SQLite connections (WAL, rows as ``sqlite3.Row``): one per thread for reads, one per
process for writes; ``write()`` for a write transaction (group commit: the blocks of threads
that write at the same time share one ``BEGIN IMMEDIATE`` transaction, each after the first
in its own savepoint, one COMMIT and, for what must survive a power cut, one fsync of the
WAL once the processes' write turn is free again), the timestamp format (``ts``/``parse_ts``),
``scalar()`` for a one-value query, and the statements more than one area runs, each once:
the sync log, the audit log, the counters, messages and attachments by hash, outbox rows,
a case's state and content, the attachment rows.

May import: model, errors, clock.

Invariants: a write block commits everything or nothing, and ``write()`` returns only once
its work is committed, and for a durable block on disk (a failed COMMIT or fsync fails every
block it held); a wait for the lock is
bounded by the busy timeout and surfaces as ``StoreError`` (GW050); attachment bytes are
stored once, by SHA-256, and JSON content never carries them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from clock import instant
from errors import (
    CaseClosed,
    CasePurged,
    StoreError,
)
from model import (
    Attachment,
    Case,
    CaseStatus,
    Message,
    redact_person_ids,
    to_data,
)

from .dialect import POSTGRES, SQLITE, WORK_CHANNEL, Dialect
from .pg import PgDatabase, is_postgres_url
from .wake import Bell

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
    global _last_ts
    last = _last_ts  # one tuple, read once: another thread may replace it meanwhile
    if last[0] is value:  # a write stamps one instant on several rows
        return last[1]
    text = value.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    _last_ts = (value, text)
    return text


_last_ts: tuple[dt.datetime | None, str] = (None, "")


def idempotency_key(created: dt.datetime) -> str:
    """A new outbox row's idempotency key: a UUID in the layout of version 7 (RFC 9562), 48
    bits of the creation's Unix milliseconds, then 74 random bits. Unique and unguessable as
    a version-4 UUID, but in creation order, so the unique index on it takes new keys at its
    end: one page for all the rows of a COMMIT instead of one page each, anywhere in the index."""
    millis = int(created.timestamp() * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def parse_ts(value: str) -> dt.datetime:
    """An instant as ``ts`` writes it (``2026-12-02T13:45:00.123456Z``); ValueError otherwise."""
    if len(value) == 27 and value[10] == "T" and value[19] == "." and value[-1] == "Z":
        return dt.datetime.fromisoformat(value[:-1]).replace(tzinfo=dt.timezone.utc)  # strptime's result, 10x faster
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)


def scalar(db: Database, sql: str, params: Sequence[Any] = ()) -> Any:
    """The first column of the first row of ``sql`` (None when there is no row)."""
    row = db.execute(sql, params).fetchone()
    return None if row is None else row[0]


def content_json(obj: Case | Message, *, not_hashed: tuple[str, ...] = ()) -> tuple[str, str]:
    """JSON content without file bytes, and a hash over it (files enter by their hash).

    ``not_hashed``: fields that may differ between two sendings of the same thing (the
    time the gateway stamped on a provider's message)."""
    data = to_data(obj)
    text = content_text(data)
    hashed = content_text({k: v for k, v in data.items() if k not in not_hashed}) if not_hashed else text
    return text, hashlib.sha256(hashed.encode("utf-8")).hexdigest()


def content_text(data: dict[str, Any]) -> str:
    """The stored JSON of a case's or message's content: sorted keys, compact, UTF-8 as is."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


#: The outbox target name of 1177 / the national platform.
NATIONAL_TARGET = "national"


#: Actions that go towards the citizen (to 1177); the others go to the provider.
OUTBOUND_ACTIONS = ("add_message", "update_status", "register_case")


def refuse_finished(case_id: str, purged_at: str | None, citizen_status: str | None, *, reopen: bool = False) -> None:
    """Refuse new work for a case whose content was purged, or that is closed (unless reopened)."""
    if purged_at:
        raise CasePurged(f"case '{case_id[:64]}': its content has been purged after the retention period "
                         "(two years from its last activity), so nothing more can be delivered in it.", field="caseId")
    if citizen_status == CaseStatus.CLOSED.value and not reopen:
        raise CaseClosed(f"case '{case_id[:64]}' is closed; it takes no more messages until it is reopened.",
                         field="caseId")


def direction_of(action: str) -> str:
    return "out" if action in OUTBOUND_ACTIONS else "in"


#: For a row still waiting: the earliest dead row of its case it is stuck behind (else NULL).
BLOCKER_SQL = """(SELECT min(e.id) FROM outbox e WHERE e.case_id = o.case_id AND e.id < o.id AND e.status = 'dead'
             AND o.status IN ('pending', 'reserved'))"""


BLOCKED_BY_SQL = f"{BLOCKER_SQL} AS blocked_by"


#: A row the worker may take once its not_before has passed: pending, its target not
#: paused, and no earlier row of its case still pending, in flight, dead or held (order per
#: case: nothing overtakes a message the wrong-patient guard holds).
CLAIMABLE_SQL = """o.status = 'pending'
    AND o.target NOT IN (SELECT name FROM targets WHERE paused = 1)
    AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.case_id = o.case_id AND e.id < o.id
                    AND e.status IN ('pending', 'in_flight', 'dead', 'reserved', 'held'))"""


#: The most write blocks one COMMIT takes (group commit); the next waits for the one after.
MAX_GROUP = 32


class _Group:
    """Write blocks of several threads that one SQLite COMMIT makes durable together."""

    __slots__ = ("done", "durable", "error", "jobs")

    def __init__(self, durable: bool) -> None:
        self.done = threading.Event()
        self.error: StoreError | None = None
        self.jobs = 0
        #: a block of it must be on disk before it returns (the WAL is synced after the COMMIT)
        self.durable = durable


@dataclass(frozen=True)
class Accepted:
    """The outcome of an intake: ``created`` is False for a repeated, identical request."""

    created: bool
    case_id: str
    ref_id: str


class StoreBase:
    """Connections and transactions. Thread-safe: one SQLite connection per thread, or a
    bounded pool of PostgreSQL connections (``location`` a ``postgresql://`` URL)."""

    def __init__(self, location: str | Path, *, busy_timeout_ms: int = 5000, pool_size: int = 10,
                 password: str | None = None):
        self.url: str | None = None
        self.pg: PgDatabase | None = None
        self.dialect: Dialect = SQLITE
        if is_postgres_url(location):
            self.url = str(location)
            self.dialect = POSTGRES
            self.pg = PgDatabase(self.url, pool_size=pool_size, timeout_s=busy_timeout_ms / 1000, password=password)
        self.path = Path(location) if self.pg is None else Path()
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # One writer at a time within this process. SQLite's busy handler retries with
        # sleeps of up to 100 ms and serves no queue, so without this the worker's short
        # claim/complete writes can lose again and again to a burst of intake writes.
        # Other processes still meet at SQLite's lock (bounded by the busy timeout).
        self._write_lock = threading.Lock()
        self._write_waiters = 0
        self._writer_db: Database | None = None
        self._writer_pid = 0
        #: the write connection's WAL file, open for ``fdatasync`` (None: not in WAL mode, and
        #: the connection commits with synchronous=FULL instead)
        self._writer_wal: int | None = None
        self._writer_turn: int | None = None  # the open file of the processes' write turn (``_take_turn``)
        self._group: _Group | None = None
        self._wake_bell: Bell | None = None  # SQLite's wake-up of worker processes, made on first use
        #: why the last write of this process failed (a full disk, an I/O error), until one succeeds
        self.last_write_failure: str | None = None

    @property
    def location(self) -> str | Path:
        """What ``Store()`` was given: the SQLite file, or the PostgreSQL URL (another ``Store`` on the same database)."""
        return self.url if self.url is not None else self.path

    @property
    def where(self) -> str:
        """The database, for messages: the SQLite file, or the PostgreSQL URL without its password."""
        return str(self.path) if self.pg is None else self.pg.display

    @property
    def db(self) -> Database:
        """This thread's connection, opened on first use; inside a ``write()`` block, the
        process's write connection, so that the block reads what it wrote (on PostgreSQL:
        the pool's facade, which offers the same ``execute``/``query``)."""
        if self.pg is not None:
            return self.pg  # type: ignore[return-value]  # the surface of Database the store uses
        db = getattr(self._local, "writing", None) or getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    def _connect(self) -> Database:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            wal = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
            # a write that must survive a power cut syncs the WAL itself after its COMMIT
            # (``_sync``), outside the processes' write turn; without WAL SQLite syncs
            conn.execute(f"PRAGMA synchronous={'NORMAL' if wal else 'FULL'}")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.row_factory = sqlite3.Row  # rows are read by column name
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}.") from None
        with self._lock:
            self._connections.append(conn)
        return Database(conn, execute_plugins=False)

    @property
    def _writer(self) -> Database:
        """The one connection this process writes SQLite through (every thread, in turn).
        A process forked from one that had it opens its own: a SQLite connection must not
        cross a fork."""
        with self._lock:
            writer = self._writer_db if self._writer_pid == os.getpid() else None
        if writer is None:
            writer = self._connect()
            with self._lock:
                self._writer_db, self._writer_pid = writer, os.getpid()
                self._group = None
                self._close_turn()  # a parent's: the same open file, the same lock
                self._writer_turn = self._open_turn()
                self._writer_wal = self._open_wal(writer)
        return writer

    def _open_turn(self) -> int | None:
        """The file whose ``flock`` gives the processes of this database their turn to write
        (``<database>.write-turn``, beside it); None where it cannot be made (a read-only
        folder): then the processes meet only at SQLite's own lock, as before."""
        try:
            return os.open(f"{self.path}.write-turn", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return None

    def _open_wal(self, writer: Database) -> int | None:
        """The write connection's WAL file, opened to be synced (``_sync``); None when the
        database is not in WAL mode or the file cannot be opened: then SQLite syncs at each
        COMMIT (``synchronous=FULL``). The WAL is the same file for as long as the write
        connection is open (SQLite deletes it only when the last connection closes)."""
        if self._writer_wal is not None:  # a parent's copy, or the last connection's
            with contextlib.suppress(OSError):
                os.close(self._writer_wal)
        mode = writer.execute("PRAGMA journal_mode").fetchone()[0]
        writer.execute("PRAGMA schema_version")  # a read: SQLite opens (or makes) the WAL file
        if mode == "wal":
            try:
                return os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                pass
        writer.execute("PRAGMA synchronous=FULL")
        return None

    def _take_turn(self) -> None:
        """Wait for this process's turn to write (the write lock is held). SQLite's own lock
        between processes is tried, not waited on: its busy handler sleeps 1, 2, 5, 10 … ms
        between tries, so the server and the worker process, writing in turns, would each
        sleep while the other one's short transaction is long over. The turn is a ``flock``
        that the kernel frees when its process ends however it ends; it is polled from 50 µs
        up to 1 ms apart, within the busy timeout, after which the write fails as GW050."""
        fd = self._writer_turn
        if fd is None:
            return
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        pause = 0.00005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreError(f"the database is busy: another process did not finish its write within "
                                     f"{self.busy_timeout_ms} ms.") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.001)
            except OSError:
                return

    def _close_turn(self) -> None:
        if self._writer_turn is not None:
            with contextlib.suppress(OSError):
                os.close(self._writer_turn)
            self._writer_turn = None

    def _end_turn(self) -> None:
        if self._writer_turn is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._writer_turn, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def write(self, *, durable: bool = True) -> Iterator[Database]:
        """A write transaction: what the block does is committed as a whole, or not at all
        (on an error in the block it is rolled back, and the error goes on).

        On SQLite the writes of the process's threads go through one connection, one block
        at a time, with group commit: while other threads wait to write, the block's work is
        kept in the open ``BEGIN IMMEDIATE`` transaction (rolled back alone if the block
        fails: the first block of a group by ROLLBACK, every later one in a savepoint of its
        own) and the last block of the group commits them all at
        once. ``write()`` returns only once its work is committed, and if that COMMIT fails
        every block of the group gets the ``StoreError``: nothing is acknowledged that was
        not committed. One fsync and one WAL append serve several cases at a time.

        Durable (the default): the block returns only once its work is on disk. SQLite
        commits with ``synchronous=NORMAL`` (its COMMIT writes the WAL without waiting for
        the disk) and the thread that committed the group then syncs the WAL (``fdatasync``)
        once it has given up the write lock and the processes' write turn: the other
        processes (and this one's next group) write meanwhile instead of waiting for this
        group's disk. A WAL frame is never overwritten before it is checkpointed into the
        database file, and SQLite syncs the WAL before each checkpoint, so the sync finds
        the group's frames in the file. ``durable=False``: a write that may be lost to a
        power cut (not to a crash) because losing it loses nothing, e.g. a claim (its row
        stays pending, as lease recovery would make it): its group is not synced unless a
        durable block shares it. WAL keeps the order, so the next sync makes every earlier
        commit durable too.

        (``db.atomic()`` would start a deferred transaction, whose upgrade from read to write
        fails at once, SQLITE_BUSY_SNAPSHOT, under a concurrent writer.) On PostgreSQL each
        block is its own transaction, which takes the write lock first (``Dialect.begin``),
        to the same effect across every instance.
        """
        if self.pg is not None:
            with self.pg.transaction(self.dialect.begin(self.busy_timeout_ms)) as tx:
                yield tx  # type: ignore[misc]  # the surface of Database the store uses
            self.last_write_failure = None
            return
        with self._lock:
            self._write_waiters += 1
        try:
            acquired = self._write_lock.acquire(timeout=self.busy_timeout_ms / 1000)
        finally:
            with self._lock:
                self._write_waiters -= 1
        if not acquired:
            raise StoreError("the database is busy: another write of this process did not finish in time.")
        failure: BaseException | None = None
        group: _Group | None = None
        committed: _Group | None = None
        try:
            db = self._writer
            group = self._group
            first = group is None  # the group's first block needs no savepoint: its undo is ROLLBACK
            group = group or self._begin(db, durable)
            group.durable = group.durable or durable
            if not first:
                db.execute("SAVEPOINT job")
            self._local.writing = db
            try:
                yield db
                if not first:
                    db.execute("RELEASE job")
                group.jobs += 1
            except BaseException as exc:
                failure = exc
                if not db.conn.in_transaction:  # SQLite rolled the whole transaction back (a full disk, an I/O error)
                    self._fail(group, exc)
                elif first:  # the group holds this block's work only: undo it all, the turn is free again
                    self._group = None
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    self._end_turn()
                    group.done.set()
                else:  # undo this block's work only
                    db.execute("ROLLBACK TO job")
                    db.execute("RELEASE job")  # (it raises below: it waits for no COMMIT)
            finally:
                self._local.writing = None
            with self._lock:
                waiting = self._write_waiters
            if self._group is not None and (not waiting or self._group.jobs >= MAX_GROUP):
                committed = self._group
                self._commit(db, committed)
        finally:
            self._write_lock.release()
        if committed is not None:
            self._sync(committed)
        if failure is not None:
            if isinstance(failure, sqlite3.OperationalError):  # disk full, I/O error, locked too long
                self.last_write_failure = f"the last write failed ({failure})"
                raise StoreError(f"the database could not complete the write ({failure}).") from None
            raise failure
        assert group is not None
        self._await(group)

    def _begin(self, db: Database, durable: bool) -> _Group:
        try:
            self._take_turn()
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            self._end_turn()
            raise StoreError(f"the database is busy or unavailable ({exc}).") from None
        self._group = _Group(durable)
        return self._group

    def _commit(self, db: Database, group: _Group) -> None:
        """COMMIT the open group (the write lock is held); ``_sync``, called once the lock is
        free, then tells its blocks how it went."""
        self._group = None
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            self.last_write_failure = f"the last write failed ({exc})"
            group.error = StoreError(f"the database could not complete the write ({exc}).")
        else:
            self.last_write_failure = None
        self._end_turn()

    def _sync(self, group: _Group) -> None:
        """Sync the WAL of a committed durable group (no lock held: other writes go on), then
        tell its blocks how it went. Should the sync fail, the work is committed but maybe
        not on disk: every block gets the ``StoreError`` and nothing is acknowledged (a
        sender that tries again finds its case stored, and is answered as for a repeat)."""
        wal = self._writer_wal
        if group.error is None and group.durable and wal is not None:
            try:
                os.fdatasync(wal)
            except OSError as exc:
                self.last_write_failure = f"the last write failed (the WAL could not be synced: {exc})"
                group.error = StoreError(f"the database could not make the write durable ({exc}).")
        group.done.set()

    def _fail(self, group: _Group, exc: BaseException) -> None:
        self._group = None
        self._end_turn()
        self.last_write_failure = f"the last write failed ({exc})"
        group.error = StoreError(f"the database could not complete the write ({exc}).")
        group.done.set()

    def _await(self, group: _Group) -> None:
        """Wait until ``group`` is committed; raise its ``StoreError`` if it was not. The last
        block of a group commits it; should the thread that was to come next give up
        waiting for the lock, a waiting block commits the group itself."""
        while not group.done.wait(0.05):
            if self._write_lock.acquire(blocking=False):
                committed = self._group is group
                try:
                    if committed:
                        self._commit(self._writer, group)
                finally:
                    self._write_lock.release()
                if committed:
                    self._sync(group)
        if group.error is not None:
            raise group.error

    def notify_work(self) -> None:
        """Tell every worker that new work was committed, at once rather than on its poll
        tick: PostgreSQL's NOTIFY (every instance); on SQLite a datagram to each worker
        process of this machine that listens (``store.wake``). Best effort, never raises."""
        if self.pg is not None:
            self.pg.notify(WORK_CHANNEL)
            return
        self._bell().ring()

    def listen_work(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake`` whenever any process commits new work and says so (``notify_work``;
        PostgreSQL: LISTEN in a thread of its own, reconnecting by itself; SQLite: a wake
        socket beside the database file). Returns a function that stops it; None when no
        socket could be made (logged: the worker then finds new work on its poll tick)."""
        if self.pg is None:
            return self._bell().listen(wake)
        return self.pg.listen(WORK_CHANNEL, wake)

    def _bell(self) -> Bell:
        if self._wake_bell is None:
            self._wake_bell = Bell(self.path)
        return self._wake_bell

    def close(self) -> None:
        if self.pg is not None:
            self.pg.close()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
            self._writer_db = None
            self._group = None
            self._close_turn()
            if self._writer_wal is not None:
                with contextlib.suppress(OSError):
                    os.close(self._writer_wal)
                self._writer_wal = None
        self._local = threading.local()

    def _count(self, db: Database, name: str, target: str | None, direction: str, by: int = 1) -> None:
        db.execute(
            "INSERT INTO metrics_counters (name, target, direction, value) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(name, target, direction) DO UPDATE SET value = metrics_counters.value + excluded.value",
            [name, target or "", direction, by],
        )

    def _observe_latency(self, db: Database, target: str, direction: str, seconds: float) -> None:
        bucket = next((le for le in LATENCY_BUCKETS[:-1] if seconds <= float(le)), "+Inf")
        db.execute(
            "INSERT INTO metrics_latency (target, direction, le, count) VALUES (?, ?, ?, 1) "
            "ON CONFLICT(target, direction, le) DO UPDATE SET count = metrics_latency.count + 1",
            [target, direction, bucket],
        )
        db.execute(
            "INSERT INTO metrics_latency_sum (target, direction, total_s, count) VALUES (?, ?, ?, 1) "
            "ON CONFLICT(target, direction) DO UPDATE SET total_s = metrics_latency_sum.total_s + excluded.total_s, "
            "count = metrics_latency_sum.count + 1",
            [target, direction, max(0.0, seconds)],
        )

    def _log(self, db: Database, now: dt.datetime, **fields: Any) -> None:
        fields["at"] = ts(now)
        columns = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        db.execute(f"INSERT INTO sync_log ({columns}) VALUES ({marks})", list(fields.values()))

    def log_event(self, *, direction: str, event: str, status: str, now: dt.datetime | None = None, **fields: Any) -> None:
        """A sync-log row of its own (metadata only; ``detail`` is scrubbed of person ids)."""
        if fields.get("detail"):
            fields["detail"] = redact_person_ids(str(fields["detail"]))[:1000]
        with self.write() as db:
            self._log(db, now or instant(), direction=direction, event=event, status=status, **fields)

    def audit(self, who: str, role: str, action: str, obj: str, detail: str = "", now: dt.datetime | None = None) -> None:
        """Record an operator's action (who, what, when)."""
        with self.write() as db:
            self._audit(db, now or instant(), who, role, action, obj, detail)

    def _audit(self, db: Database, now: dt.datetime, who: str, role: str, action: str, obj: str, detail: str) -> None:
        db.execute("INSERT INTO audit_log (at, who, role, action, object, detail) VALUES (?, ?, ?, ?, ?, ?)",
                   [ts(now), who, role, action, obj, redact_person_ids(detail)[:1000]])

    def _insert_message(
        self, db: Database, message: Message, *, direction: str, status: str, content: str, content_hash: str,
        correlation_id: str | None, now: dt.datetime, origin: str | None = None, guard: str | None = None,
    ) -> None:
        """Store a message (either way) and its files; ``guard``: the wrong-patient guard's outcome, JSON."""
        db.execute(
            """INSERT INTO messages (message_id, case_id, direction, kind, status, created_time, received_at,
                   correlation_id, content_hash, content, origin, provider_message_id, guard)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [message.message_id, message.case_id, direction, message.kind, status, message.created_time.isoformat(),
             ts(now), correlation_id, content_hash, content, origin, message.provider_message_id, guard],
        )
        self._put_attachments(db, message.case_id, message.message_id, message.attachments, now)

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
            [case_id, action, ref_id, target, status, ts(not_before), idempotency_key(created), ts(created), ts(created)],
        )
        if status == "pending" and self.pg is not None:
            db.execute(f"NOTIFY {WORK_CHANNEL}")  # sent at COMMIT (only if it commits): wakes every instance

    def _cancel_receipt(self, db: Database, case_id: str, now: dt.datetime) -> None:
        """Give up the place kept for a case's automatic receipt (its case never reached the provider)."""
        db.execute("UPDATE outbox SET status = 'cancelled', updated_at = ? "
                   "WHERE case_id = ? AND action = ? AND status = 'reserved'", [ts(now), case_id, RECEIPT])

    def _attachment_rows(
        self, case_id: str, message_id: str | None = None, *, every_message: bool = False, where: str = "",
        params: Sequence[Any] = (), with_data: bool = False, limit: int | None = None,
    ) -> list[sqlite3.Row]:
        """Attachments of a case, by message then position: ``message_id``, ``position``,
        ``file_name``, ``mime_type``, ``sha256``, ``size`` (and ``data``, the bytes, with
        ``with_data``). The case's own files (``message_id`` None), one message's, or with
        ``every_message`` all of them; ``where``/``params``: a further condition on ``a``."""
        scope = "" if every_message else " AND a.message_id IS NOT DISTINCT FROM CAST(? AS TEXT)"  # NULL-safe =, typed for PostgreSQL
        sql = (f"""SELECT a.message_id, a.position, a.file_name, a.mime_type, a.sha256, b.size{', b.data' if with_data else ''}
                   FROM attachments a JOIN attachment_blobs b ON b.sha256 = a.sha256
                   WHERE a.case_id = ?{scope}{f' AND {where}' if where else ''} ORDER BY a.message_id, a.position"""
               + (" LIMIT ?" if limit is not None else ""))
        values = [case_id, *([] if every_message else [message_id]), *params, *([] if limit is None else [limit])]
        return list(self.db.execute(sql, values))

    def attachments_of(self, case_id: str, message_id: str | None = None) -> list[Attachment]:
        return [Attachment(r["file_name"], r["mime_type"], bytes(r["data"]))
                for r in self._attachment_rows(case_id, message_id, with_data=True)]

    def case_row(self, case_id: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM cases WHERE case_id = ?", [case_id]))
        return rows[0] if rows else None

    def _case_state(self, db: Database, case_id: str, *, or_national: bool = False) -> sqlite3.Row | None:
        """What new work for a case needs to know of it: ``case_id``, ``target``,
        ``receiver_hsa_id``, ``purged_at``, ``citizen_status``. ``or_national``: ``case_id``
        may also be the id 1177 gave a case registered outside it."""
        columns = "case_id, target, receiver_hsa_id, purged_at, citizen_status"
        if not or_national:
            row: sqlite3.Row | None = db.execute(f"SELECT {columns} FROM cases WHERE case_id = ?", [case_id]).fetchone()
            return row
        row = db.execute(
            f"""SELECT {columns} FROM cases WHERE case_id = ?
                UNION ALL SELECT {columns} FROM cases WHERE national_case_id = ? AND case_id <> ? LIMIT 1""",
            [case_id, case_id, case_id]).fetchone()
        return row

    def _case_content(self, db: Database, case_id: str) -> dict[str, Any] | None:
        """The canonical case as stored (JSON, without file bytes); None when purged or unknown."""
        content = scalar(db, "SELECT content FROM cases WHERE case_id = ?", [case_id])
        return json.loads(content) if content else None

    def _message_hash(self, db: Database, message_id: str) -> str | None:
        """The content hash of a stored message (either way), None when there is none."""
        digest: str | None = scalar(db, "SELECT content_hash FROM messages WHERE message_id = ?", [message_id])
        return digest
