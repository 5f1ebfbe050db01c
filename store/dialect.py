"""The store's two SQL dialects, SQLite and PostgreSQL: every difference between them, here.

Role: each query of the store is written once, in SQLite's SQL (``?`` and ``:name``
placeholders, ``INSERT OR IGNORE``); ``Dialect.sql()`` turns it into the
backend's own. The rest of what differs is a hook of ``Dialect``: how a write transaction
begins (``BEGIN IMMEDIATE`` on SQLite; ``BEGIN`` and a transaction-level advisory lock on
PostgreSQL, so a read-then-write cannot race on either), the maintenance after a purge
(``incremental_vacuum``/``wal_checkpoint`` or ``VACUUM (ANALYZE)``) and the size of the
database. ``Row`` is the row type of PostgreSQL reads: by column name like
``sqlite3.Row`` (and by position, as ``sqlite3.Row`` allows too).

May import: errors (nothing of the gateway's own beyond that).

Invariants: the translation never changes text inside a quoted literal or identifier; a
query that means one thing on SQLite means the same on PostgreSQL (``LIKE`` becomes
``ILIKE``: SQLite's LIKE ignores ASCII case; a NULL-safe comparison is written
``IS NOT DISTINCT FROM CAST(? AS TEXT)``, which both understand).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

#: The advisory lock every PostgreSQL write transaction takes (cluster-wide, released at
#: COMMIT/ROLLBACK): one writer at a time, as SQLite's BEGIN IMMEDIATE gives, so the
#: store's read-then-write checks (a duplicate before an insert) keep their meaning.
WRITE_LOCK_KEY = 1177_0015

#: The LISTEN/NOTIFY channel on which a commit of new work wakes every instance's worker.
WORK_CHANNEL = "gateway_work"


class Executes(Protocol):
    def execute(self, sql: str, params: Any = ...) -> Any: ...


class Row(tuple[Any, ...]):
    """A row read from PostgreSQL: ``row["column"]``, ``row[0]``, ``row.keys()``, ``dict(row)``."""

    _names: tuple[str, ...]

    def __new__(cls, values: Sequence[Any], names: tuple[str, ...]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                return tuple.__getitem__(self, self._names.index(key))
            except ValueError:
                raise IndexError(f"no such column: {key}") from None
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(self._names, self))


_TOKENS = re.compile(r"""('(?:[^']|'')*')|("(?:[^"]|"")*")|(::)|(\?)|(:[A-Za-z_][A-Za-z0-9_]*)|(%)|(\bLIKE\b)""",
                     re.IGNORECASE)
_INSERT_OR_IGNORE = re.compile(r"^\s*INSERT\s+OR\s+IGNORE\s+", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def to_postgres(sql: str) -> str:
    """SQLite's text of a query as PostgreSQL's (psycopg's placeholders ``%s``/``%(name)s``)."""
    ignore = bool(_INSERT_OR_IGNORE.match(sql))
    if ignore:
        sql = _INSERT_OR_IGNORE.sub("INSERT ", sql, count=1)

    def swap(match: re.Match[str]) -> str:
        single, double, cast, mark, name, percent, like = match.groups()
        if single or double:
            return (single or double).replace("%", "%%")
        if cast:  # PostgreSQL's own cast (a query written for it alone): not a :name
            return cast
        if mark:
            return "%s"
        if name:
            return f"%({name[1:]})s"
        if percent:
            return "%%"
        assert like
        return "ILIKE"

    text = _TOKENS.sub(swap, sql)
    if ignore:
        text = text.rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    return text


class Dialect:
    """SQLite's ways; ``Postgres`` overrides what differs."""

    name = "sqlite"

    def begin(self, timeout_ms: int) -> tuple[str, ...]:
        """What a write transaction starts with (SQLite: its busy timeout bounds the wait)."""
        return ("BEGIN IMMEDIATE",)

    def sql(self, text: str) -> str:
        return text

    def unindexed(self, column: str) -> str:
        """``column`` in a condition whose index the planner should not pick: SQLite's ``+column``
        (without statistics it would take a broad index); PostgreSQL's planner has statistics."""
        return f"+{column}"

    def size_bytes(self, db: Executes) -> int:
        """The database's size on disk."""
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        return int(db.execute("PRAGMA page_count").fetchone()[0] * page_size)

    def after_purge(self, db: Any) -> None:
        """Give freed pages back to the file system and refresh the planner's statistics."""
        # executescript steps the pragma to the end; execute() would free a single page
        db.conn.executescript("PRAGMA incremental_vacuum; PRAGMA optimize;")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class Postgres(Dialect):
    name = "postgresql"

    def begin(self, timeout_ms: int) -> tuple[str, ...]:
        # the wait for the write lock is bounded as SQLite's busy timeout bounds it (lock_timeout)
        return ("BEGIN", f"SET LOCAL lock_timeout = {max(1, int(timeout_ms))}",
                f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")

    def sql(self, text: str) -> str:
        return to_postgres(text)

    def unindexed(self, column: str) -> str:
        return column

    def size_bytes(self, db: Executes) -> int:
        return int(db.execute("SELECT pg_database_size(current_database())").fetchone()[0])

    def after_purge(self, db: Any) -> None:
        # VACUUM cannot run in a transaction: the facade runs it on a connection of its own
        # (autocommit); it makes the freed space reusable (a VACUUM FULL would lock the tables)
        db.execute("VACUUM (ANALYZE)")


SQLITE = Dialect()
POSTGRES = Postgres()


def rows(cursor: Any) -> Iterator[dict[str, Any]]:
    """The rows of a cursor as dicts (what sqlite-utils' ``query`` gives)."""
    for row in cursor:
        yield dict(zip(row.keys(), row))
