"""PostgreSQL for the store: a bounded psycopg pool behind the surface of sqlite-utils'
``Database`` that the store's areas use (``execute``, ``query``), LISTEN/NOTIFY.

Role: run each query (in SQLite's SQL, translated by ``dialect.to_postgres``) on a
connection of the pool: outside a transaction on any free one (autocommit), inside
``transaction()`` on the one that transaction holds for its thread. Rows come back as
``dialect.Row`` (by name, like ``sqlite3.Row``); results are read whole before the
connection goes back to the pool.

May import: errors (and store.dialect).

Invariants: a database that is down, or a connection lost mid-transaction, raises
``StoreError`` (GW050) and nothing is reported as written that was not committed (a
failed COMMIT raises); the pool checks a connection before lending it and opens new
ones by itself, so the store recovers when the database is back. At most ``pool_size``
connections per process, plus one for LISTEN.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql as pgsql
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

from errors import StoreError

from .dialect import Row, rows, to_postgres

log = logging.getLogger("gateway.store")


def is_postgres_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def without_password(url: str) -> str:
    """``url`` as it may be shown (in a log line, a message of ``gateway check``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    names = tuple(column.name for column in cursor.description or ())
    return lambda values: Row(values, names)


class Result:
    """What ``execute`` gives: the rows read whole, ``rowcount``; a cursor's reading methods."""

    def __init__(self, fetched: list[Row], rowcount: int):
        self._rows = fetched
        self._next = 0
        self.rowcount = rowcount
        self.lastrowid = None  # PostgreSQL has none: the store asks ``RETURNING id``

    def fetchone(self) -> Row | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[Row]:
        rest, self._next = self._rows[self._next:], len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


def _unavailable(exc: BaseException, what: str) -> StoreError:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreError(f"the PostgreSQL database {what} ({text}); nothing was stored. "
                      "The gateway reconnects by itself when it is reachable again.")


class PgDatabase:
    """A pool of connections to one PostgreSQL database; thread-safe."""

    def __init__(self, url: str, *, pool_size: int = 10, timeout_s: float = 5.0, password: str | None = None):
        self.url = url
        self.display = without_password(url)
        self.timeout_s = max(timeout_s, 0.5)
        self._connect_kwargs: dict[str, Any] = {"autocommit": True, "row_factory": _row_factory,
                                                "connect_timeout": max(1, int(self.timeout_s))}
        if password:
            self._connect_kwargs["password"] = password
        self.pool = ConnectionPool(
            url, min_size=1, max_size=max(1, pool_size), kwargs=self._connect_kwargs, open=False,
            timeout=self.timeout_s, check=ConnectionPool.check_connection, name="gateway",
            # a failed connection attempt is given up at once, not retried with a growing backoff:
            # the next request asks for a new one, so a database that is back is used at once
            reconnect_timeout=0,
        )
        self.pool.open(wait=False)
        self._local = threading.local()
        self._listeners: list[threading.Event] = []

    # -- queries -----------------------------------------------------------------------------

    def _run(self, conn: psycopg.Connection[Any], text: str, params: Any) -> Result:
        # binary results: a bytea comes as its bytes, not as hex text twice its size to decode
        # (not for a script without parameters, e.g. a migration's DDL: several statements in
        # one go need the simple protocol)
        cursor = conn.execute(to_postgres(text), params, prepare=False, binary=params is not None)
        fetched = list(cursor.fetchall()) if cursor.description is not None else []
        return Result(fetched, cursor.rowcount)

    def execute(self, text: str, params: Any = None) -> Result:
        conn = getattr(self._local, "conn", None)
        if conn is not None:  # inside this thread's write transaction
            try:
                return self._run(conn, text, params)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                raise _unavailable(exc, "could not complete the write") from None
        try:
            with self.pool.connection() as free:
                return self._run(free, text, params)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise _unavailable(exc, f"{self.display} cannot be reached") from None

    def execute_many(self, text: str, params: Sequence[Sequence[Any]]) -> None:
        """One statement for many rows, in this thread's write transaction (a bulk copy)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            raise StoreError("execute_many runs only in a write transaction.")
        try:
            with conn.cursor() as cursor:
                cursor.executemany(to_postgres(text), params)
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise _unavailable(exc, "could not complete the write") from None

    def query(self, text: str, params: Any = None) -> Iterator[dict[str, Any]]:
        return rows(self.execute(text, params))

    @contextlib.contextmanager
    def transaction(self, begin: Sequence[str]) -> Iterator[PgDatabase]:
        """A write transaction on one connection of the pool; commits on success."""
        if getattr(self._local, "conn", None) is not None:
            raise StoreError("a write transaction is already open in this thread.")
        try:
            lent = self.pool.connection()
            conn = lent.__enter__()
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise _unavailable(exc, f"{self.display} cannot be reached") from None
        self._local.conn = conn
        failure: BaseException | None = None
        try:
            try:
                for statement in begin:
                    conn.execute(statement)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                raise _unavailable(exc, "is busy or unavailable") from None
            yield self
            try:
                conn.execute("COMMIT")
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                # the commit's outcome is unknown: report it as not done (the caller did not acknowledge)
                raise _unavailable(exc, "could not confirm the commit") from None
        except BaseException as exc:
            failure = exc
            if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            raise
        finally:
            self._local.conn = None
            if failure is not None:
                lent.__exit__(type(failure), failure, failure.__traceback__)
            else:
                lent.__exit__(None, None, None)

    # -- LISTEN / NOTIFY -------------------------------------------------------------------------

    def notify(self, channel: str) -> None:
        """NOTIFY ``channel``; inside a transaction it is sent at COMMIT, and only then."""
        self.execute(pgsql.SQL("NOTIFY {}").format(pgsql.Identifier(channel)).as_string(None))

    def listen(self, channel: str, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` on each NOTIFY on ``channel``, in a thread of its own; returns ``stop``."""
        stopping = threading.Event()
        self._listeners.append(stopping)

        def loop() -> None:
            while not stopping.is_set():
                try:
                    with psycopg.connect(self.url, **self._connect_kwargs) as conn:
                        conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
                        wake()  # what was notified while this thread was not listening
                        while not stopping.is_set():
                            for _ in conn.notifies(timeout=0.5):
                                wake()
                except psycopg.Error as exc:
                    log.warning("LISTEN connection lost; reconnecting", extra={"detail": str(exc)[:200]})
                    stopping.wait(1.0)

        thread = threading.Thread(target=loop, name=f"listen:{channel}", daemon=True)
        thread.start()

        def stop() -> None:
            stopping.set()
            thread.join(timeout=5)

        return stop

    def close(self) -> None:
        for stopping in self._listeners:
            stopping.set()
        self.pool.close(timeout=5)
