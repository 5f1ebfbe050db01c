"""The store's schema: the migrations (``sqlite_utils.migrations.Migrations``), in order.

Role: create and upgrade the tables and indexes; say which migrations are pending and
whether the database can be written (``gateway check``).

May import: model, errors, clock (through ``store.base``).

Invariants: a migration, once released, is never edited: a change is a new ``m0NN``.
"""

from __future__ import annotations

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

from errors import (
    StoreError,
)

from clock import instant

from . import schema_pg
from .base import (
    StoreBase,
    scalar,
    ts,
)

migrations = Migrations("gateway")


@migrations()
def m001_intake(db: Database) -> None:
    db.table("cases").create(
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
    db.table("cases").create_index(["case_id"], unique=True)
    db.table("cases").create_index(["receiver_hsa_id"])
    db.table("cases").create_index(["status"])

    db.table("messages").create(
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
    db.table("messages").create_index(["message_id"], unique=True)
    db.table("messages").create_index(["case_id"])

    db.table("attachment_blobs").create(
        {"sha256": str, "size": int, "data": bytes, "created_at": str}, pk="sha256", not_null={"size", "data"}
    )
    db.table("attachments").create(
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
    db.table("attachments").create_index(["case_id", "message_id"])
    db.table("attachments").create_index(["sha256"])

    db.table("outbox").create(
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
    db.table("outbox").create_index(["idempotency_key"], unique=True)
    db.table("outbox").create_index(["status", "not_before"])
    db.table("outbox").create_index(["case_id", "id"])

    db.table("sync_log").create(
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
    db.table("sync_log").create_index(["at"])
    db.table("sync_log").create_index(["case_id", "at"])
    db.table("sync_log").create_index(["hsa_id", "at"])

    db.table("heartbeats").create({"name": str, "at": str, "detail": str}, pk="name")


@migrations()
def m002_delivery(db: Database) -> None:
    db.table("outbox").add_column("claimed_by", str)
    db.table("outbox").add_column("last_error_code", str)
    db.table("outbox").add_column("delivered_at", str)
    db.table("attempts").create(
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
    db.table("attempts").create_index(["outbox_id", "id"])
    db.table("attempts").create_index(["started_at"])
    db.table("targets").create({"name": str, "paused": int, "changed_at": str, "changed_by": str}, pk="name")
    db.table("sync_log").create_index(["target", "at"])


@migrations()
def m003_way_back(db: Database) -> None:
    db.table("cases").add_column("national_case_id", str)  # 1177's caseId (a registered case gets it from 1177)
    db.table("cases").add_column("channel", str)  # for a case started outside 1177: TELEFON, BREV, …
    db.table("cases").add_column("citizen_status", str)  # the last status sent towards 1177
    db.execute("UPDATE cases SET national_case_id = case_id WHERE origin = '1177'")
    db.table("cases").create_index(["target", "provider_case_id"])
    db.table("messages").add_column("sent_at", str)
    db.table("messages").add_column("origin", str)  # citizen | api | poll | auto
    db.table("status_updates").create(
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
    db.table("status_updates").create_index(["case_id"])
    db.table("poll_cursors").create({"target": str, "cursor": str, "updated_at": str}, pk="target")


@migrations()
def m004_operations(db: Database) -> None:
    db.table("cases").add_column("purged_at", str)
    db.table("outbox").create_index(["status", "created_at"])
    db.table("outbox").create_index(["target", "status"])
    db.table("cases").create_index(["target", "status"])
    db.table("sync_log").create_index(["error_code", "at"])
    db.table("sync_log").create_index(["status", "at"])
    db.table("sync_log").create_index(["direction", "at"])
    db.table("audit_log").create(
        {"id": int, "at": str, "who": str, "role": str, "action": str, "object": str, "detail": str},
        pk="id", not_null={"at", "who", "action"},
    )
    db.table("audit_log").create_index(["at"])
    db.table("metrics_counters").create(
        {"name": str, "target": str, "direction": str, "value": int}, pk=("name", "target", "direction")
    )
    db.table("metrics_latency").create(
        {"target": str, "direction": str, "le": str, "count": int}, pk=("target", "direction", "le")
    )
    db.table("metrics_latency_sum").create(
        {"target": str, "direction": str, "total_s": float, "count": int}, pk=("target", "direction")
    )
    db.table("alert_state").create(
        {"key": str, "kind": str, "target": str, "active": int, "since": str, "last_sent_at": str, "detail": str},
        pk="key",
    )


@migrations(transactional=False)
def m005_incremental_vacuum(db: Database) -> None:
    # lets retention give freed pages back to the file system (PRAGMA incremental_vacuum)
    if scalar(db, "PRAGMA auto_vacuum") != 2:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("VACUUM")


@migrations()
def m006_settings(db: Database) -> None:
    db.table("settings").create({"name": str, "value": str}, pk="name")


@migrations()
def m007_event_index(db: Database) -> None:
    db.table("sync_log").create_index(["event", "at"])  # the ops view and `gateway log` search by event too


@migrations()
def m008_ops_indexes(db: Database) -> None:
    db.table("outbox").create_index(["status", "id"])  # dead letters, newest first
    db.table("messages").create_index(["direction", "status"])  # the dashboard's counts
    db.execute("ANALYZE")  # statistics for the planner; retention refreshes them (PRAGMA optimize)


@migrations()
def m009_case_lifecycle(db: Database) -> None:
    # retention counts from the last activity (a message either way, a status change), not receipt
    db.table("cases").add_column("last_activity_at", str)
    db.execute("UPDATE cases SET last_activity_at = COALESCE(updated_at, received_at)")
    db.table("cases").create_index(["last_activity_at"])
    # 1177's own id finds a case registered outside 1177 (its citizen's answers carry that id)
    db.table("cases").create_index(["national_case_id"])


@migrations()
def m010_provider_message_ids(db: Database) -> None:
    # the id a provider chose for its message; the gateway's own id is scoped from it
    db.table("messages").add_column("provider_message_id", str)
    db.table("messages").create_index(["case_id", "provider_message_id"])


@migrations()
def m011_job_leases(db: Database) -> None:
    # scheduled jobs (polls, alerts, retention) run once across every process and instance
    db.table("job_leases").create(
        {"name": str, "owner": str, "due_at": str, "running_until": str, "last_run_at": str}, pk="name",
    )


@migrations()
def m012_ops_sign_in(db: Database) -> None:
    # failed sign-ins per key ('user:NAME' or 'address:IP'), shared by every process
    db.table("sign_in_failures").create(
        {"key": str, "failures": int, "first_at": str, "last_at": str, "locked_until": str},
        pk="key", not_null={"failures", "first_at", "last_at"},
    )
    # one row per sign-in: the cookie names the session, sign-out ends it here
    db.table("ops_sessions").create(
        {"sid": str, "user": str, "created_at": str, "ended_at": str},
        pk="sid", not_null={"user", "created_at"},
    )
    db.table("ops_sessions").create_index(["user"])


@migrations()
def m013_attempt_responses(db: Database) -> None:
    # what came back with a refused answer (status, a few headers, the first kilobytes of the
    # body, person ids masked; JSON): content, for readers and admins, never monitors
    db.table("attempts").add_column("response", str)


@migrations()
def m014_wrong_patient_guard(db: Database) -> None:
    # the guard's outcome (rule 14) kept with each message to the citizen: places, never ids;
    # a held message waits in the outbox as 'held' until someone releases it
    db.table("messages").add_column("guard", str)
    db.table("messages").add_column("released_at", str)
    db.table("messages").add_column("released_by", str)


@migrations()
def m015_claim_per_target(db: Database) -> None:
    # a claim for a target with room reads only that target's due rows, in order, whatever
    # the backlog of a target at its limit (the longer index serves (target, status) too)
    db.execute("DROP INDEX IF EXISTS idx_outbox_target_status")
    db.table("outbox").create_index(["target", "status", "not_before"])


class Schema(StoreBase):
    """Migrations and the writable check."""

    def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied."""
        if self.pg is not None:
            return self._migrate_pg()
        pending = [m.name for m in migrations.pending(self.db)]
        migrations.apply(self.db)
        return pending

    def pending_migrations(self) -> list[str]:
        if self.pg is not None:
            return [name for name, _ in schema_pg.MIGRATIONS if name not in self._applied_pg()]
        return [m.name for m in migrations.pending(self.db)]

    def _applied_pg(self) -> set[str]:
        if not scalar(self.db, "SELECT to_regclass('_pg_migrations') IS NOT NULL"):
            return set()
        return {r["name"] for r in self.db.execute("SELECT name FROM _pg_migrations")}

    def _migrate_pg(self) -> list[str]:
        applied: list[str] = []
        with self.write() as db:  # under the write lock: two instances starting at once migrate once
            db.execute("CREATE TABLE IF NOT EXISTS _pg_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
            done = {r["name"] for r in db.execute("SELECT name FROM _pg_migrations")}
            for name, ddl in schema_pg.MIGRATIONS:
                if name in done:
                    continue
                db.execute(ddl)
                db.execute("INSERT INTO _pg_migrations (name, applied_at) VALUES (?, ?)", [name, ts(instant())])
                applied.append(name)
        return applied

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
