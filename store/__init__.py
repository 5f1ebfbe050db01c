"""The store: every SQL statement of the gateway, by area, behind one ``Store`` facade.

Role: durable state. Cases, messages and their attachments (each file stored once, by
SHA-256), the outbox the worker delivers from, the sync log operations read, the
scheduled jobs' leases and the workers' heartbeats. SQLite (through sqlite-utils) is the
embedded default; a ``postgresql://`` URL selects PostgreSQL (psycopg 3 and its pool), for
several instances on one database. Each query is written once; what differs between the
two is in store/dialect.py.

    store/base.py         connections, write transactions, the shared writes (sync log, counters, files)
    store/dialect.py      SQLite's and PostgreSQL's differences: placeholders, INSERT OR IGNORE, BEGIN, maintenance
    store/pg.py           PostgreSQL: the pool behind sqlite-utils' execute/query surface; LISTEN/NOTIFY
    store/schema.py       migrations (sqlite_utils Migrations) and the writable check
    store/schema_pg.py    PostgreSQL's migrations (SQL DDL) to the same schema
    store/intake.py       cases and citizens' messages from 1177; cases registered outside it
    store/replies.py      the provider's messages and statuses to the citizen; held, released, cancelled
    store/outbox.py       the queue: claim, complete, fail, recover
    store/ops_queries.py  the reads of the ops view, /metrics, the CLI and the alerts
    store/retention.py    the purge of rule 2
    store/admin.py        sign-in locks, ops sessions, alert state, settings
    store/transfer.py     a SQLite store copied into PostgreSQL with its history (migrate --from-sqlite)
    store/jobs.py         scheduled jobs claimed once across processes; heartbeats
    store/wake.py         SQLite: new work wakes the worker processes of the machine at once (datagram sockets)

May import: model, errors, clock.

Invariants:
- A case (or message) and its outbox row are committed in one transaction; a call that
  raises has written nothing.
- Write transactions start with ``BEGIN IMMEDIATE`` (PostgreSQL: ``BEGIN`` and a
  transaction-level advisory lock, the same for every instance) so a read-then-write (the
  duplicate check before an insert) can never fail half-way on a concurrent writer; waits
  are bounded by the busy timeout and surface as ``StoreError`` (GW050).
- Rows are read by column name (``sqlite3.Row``, ``dialect.Row``), never by position.
- The store raises domain errors (``errors``); it knows nothing of HTTP or SOAP.
"""

from __future__ import annotations

from .admin import Admin
from .base import (
    LATENCY_BUCKETS,
    NATIONAL_TARGET,
    OUTBOUND_ACTIONS,
    RECEIPT,
    UNFINISHED,
    Accepted,
    StoreBase,
    parse_ts,
    receipt_id,
    ts,
)
from .intake import Intake
from .jobs import JobRun, Jobs
from .ops_queries import OpsQueries
from .outbox import COMPLETIONS, RESPONSE_BODY_LIMIT, Completion, Job, Outbox
from .retention import Retention
from .schema import migrations
from .transfer import Transfer

__all__ = [
    "LATENCY_BUCKETS", "NATIONAL_TARGET", "OUTBOUND_ACTIONS", "RECEIPT", "RESPONSE_BODY_LIMIT", "UNFINISHED",
    "COMPLETIONS", "Accepted", "Completion", "Job", "JobRun", "Store", "StoreBase", "migrations", "parse_ts", "receipt_id", "ts",
]


class Store(Transfer, Intake, Outbox, OpsQueries, Retention, Admin, Jobs):  # Transfer is a Schema
    """All persistence of the gateway, one object: each area's queries (the classes above)
    on one set of connections. Thread-safe: one SQLite connection per thread, or a bounded
    pool of PostgreSQL connections."""
