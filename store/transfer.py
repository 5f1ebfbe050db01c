"""Copying a SQLite store into PostgreSQL with its whole history (``gateway migrate --from-sqlite``).

Role: a provider who outgrows the embedded default moves without losing anything: every
table of the gateway's schema, row for row, ids kept (the outbox's per-case order and the
attempts' references are ids), and the identity sequences set past the highest id copied.

May import: model, errors, clock (through ``store.base``).

Invariants: the copy is one PostgreSQL transaction under the write lock: it is all there or
not at all; a target that already holds rows is refused (``TargetNotEmpty``, GW051), and so
is a source whose schema is not up to date or that has tables the gateway does not know.
The source is opened read-only and rows are read in batches (attachment bytes a few at a
time), so memory stays bounded by the batch, not by the store.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from errors import StoreError, TargetNotEmpty

from .schema import Schema, migrations

#: Every table of the schema, parents before the tables whose foreign keys name them.
TABLES = (
    "cases", "messages", "attachment_blobs", "attachments", "outbox", "attempts", "sync_log", "heartbeats",
    "targets", "status_updates", "poll_cursors", "audit_log", "metrics_counters", "metrics_latency",
    "metrics_latency_sum", "alert_state", "settings", "job_leases", "sign_in_failures", "ops_sessions",
)

#: The tables whose ``id`` is an identity column (a sequence to set after the copy).
WITH_IDS = ("cases", "messages", "attachments", "outbox", "attempts", "sync_log", "status_updates", "audit_log")


class Transfer(Schema):
    """``copy_from_sqlite``: this (PostgreSQL) store takes over a SQLite store's rows."""

    def copy_from_sqlite(self, source: str | Path, *, batch: int = 500) -> dict[str, int]:
        """Copy every row of the SQLite store at ``source`` into this empty PostgreSQL store
        (migrated first); returns the rows copied per table."""
        if self.pg is None:
            raise StoreError("database.url names no PostgreSQL database: --from-sqlite copies a SQLite store "
                             "into PostgreSQL, so set database.url to the new database.")
        path = Path(source)
        if not path.is_file():
            raise StoreError(f"there is no SQLite database at {path}.")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite database {path}: {exc}.") from None
        conn.row_factory = sqlite3.Row
        try:
            return self._copy(conn, path, batch)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot read the SQLite database {path}: {exc}.") from None
        finally:
            conn.close()

    def _copy(self, conn: sqlite3.Connection, path: Path, batch: int) -> dict[str, int]:
        from sqlite_utils import Database

        pending = [m.name for m in migrations.pending(Database(conn))]
        if pending:
            raise StoreError(f"the SQLite database {path} is not up to date ({len(pending)} migration(s) pending): "
                             "run 'gateway migrate' on it with its own config first.")
        present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        unknown = sorted(present - set(TABLES) - {"_sqlite_migrations", "sqlite_stat1", "sqlite_sequence"})
        if unknown:
            raise StoreError(f"the SQLite database {path} has tables the gateway does not know ({', '.join(unknown)}); "
                             "is it a gateway's database?")
        self.migrate()
        copied: dict[str, int] = {}
        with self.write() as db:
            full = [t for t in TABLES if db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() is not None]
            if full:
                raise TargetNotEmpty(f"the PostgreSQL database {self.where} already holds rows "
                                     f"(in {', '.join(full)}); a copy goes only into an empty one.")
            for table in TABLES:
                columns = [r["name"] for r in conn.execute(f'PRAGMA table_info("{table}")')]
                names = ", ".join(f'"{c}"' for c in columns)
                marks = ", ".join("?" for _ in columns)
                insert = f"INSERT INTO {table} ({names}) VALUES ({marks})"
                size = 4 if table == "attachment_blobs" else batch  # a few files in memory at a time
                cursor = conn.execute(f"SELECT {names} FROM {table} ORDER BY rowid")
                count = 0
                while rows := cursor.fetchmany(size):
                    assert self.pg is not None
                    self.pg.execute_many(insert, [tuple(row) for row in rows])
                    count += len(rows)
                copied[table] = count
            for table in WITH_IDS:  # the next id after the highest copied, as SQLite would give it
                db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                           f"COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)")
        return copied
