"""The store's reads for operations: the sync log, the dashboard, a case's timeline, metrics.

Role: everything the ops view, ``/metrics``, the CLI and the alerts read. Nothing here
writes.

May import: model, errors, clock (through ``store.base``).

Invariants: metadata and content are separate reads (``with_content``): a monitor's page
never queries a citizen's text or files.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from clock import instant
from errors import (
    CasePurged,
    NotFound,
)

from .base import (
    BLOCKED_BY_SQL,
    BLOCKER_SQL,
    StoreBase,
    scalar,
    ts,
)


class OpsQueries(StoreBase):
    """The reads of operations (ops view, metrics, CLI, alerts)."""

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

    def attempts_of(self, outbox_id: int) -> list[dict[str, Any]]:
        """The attempts of a row, oldest first; ``response`` (what came back) as a dict or None."""
        rows = list(self.db.query("SELECT * FROM attempts WHERE outbox_id = ? ORDER BY id", [outbox_id]))
        for row in rows:
            try:
                row["response"] = json.loads(row["response"]) if row.get("response") else None
            except ValueError:
                row["response"] = None
        return rows

    def outbox_rows(self, case_id: str) -> list[dict[str, Any]]:
        """A case's outbox rows in order; ``blocked_by``: the dead row a waiting one is stuck behind."""
        return list(self.db.query(f"SELECT o.*, {BLOCKED_BY_SQL} FROM outbox o WHERE o.case_id = ? ORDER BY o.id", [case_id]))

    def blocked_counts(self) -> list[dict[str, Any]]:
        """Per target, how many rows wait behind a dead row of their case (they cannot move on their own)."""
        return list(self.db.query(
            """SELECT o.target, count(*) AS n FROM outbox o WHERE o.status IN ('pending', 'reserved')
                 AND EXISTS (SELECT 1 FROM outbox e WHERE e.case_id = o.case_id AND e.id < o.id AND e.status = 'dead')
               GROUP BY o.target"""))

    def counts(self) -> dict[str, int]:
        """Row counts of the content tables (used by ``gateway check`` and tests)."""
        tables = ("cases", "messages", "attachments", "attachment_blobs", "outbox", "sync_log")
        return {t: int(scalar(self.db, f"SELECT count(*) FROM {t}")) for t in tables}

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
        where: list[str] = []
        params: list[str | int] = []
        # The most selective filter leads its (column, at) index; the others are written
        # '+column' so SQLite cannot pick their broader index instead (without ANALYZE
        # statistics it would, and walk most of the table for a case id plus a status).
        leading = True
        for column, value in (("case_id", case_id), ("error_code", error_code), ("event", event),
                              ("hsa_id", hsa_id.upper() if hsa_id else None), ("target", target), ("status", status),
                              ("direction", direction)):
            if value:
                where.append(f"{column if leading else self.dialect.unindexed(column)} = ?")
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
        for row in db.execute(
            """SELECT substr(started_at, 1, 13) AS hour, outcome, count(*) AS n FROM attempts
               WHERE started_at >= ? GROUP BY 1, 2""", [day_ago]
        ):
            hours.setdefault(row["hour"], {})[row["outcome"]] = row["n"]
        # the oldest of each status (each one walk of the (status, created_at) index), then the older
        oldest = [db.execute("""SELECT id, case_id, action, target, status, created_at, last_error_code FROM outbox
                                WHERE status = ? ORDER BY created_at LIMIT 1""", [status]).fetchone()
                  for status in ("pending", "in_flight")]
        candidates = [r for r in oldest if r]
        first = min(candidates, key=lambda r: r["created_at"]) if candidates else None
        return {
            "cases": list(db.query("SELECT target, status, count(*) AS n FROM cases GROUP BY target, status ORDER BY target, status")),
            "messages": list(db.query("SELECT direction, status, count(*) AS n FROM messages GROUP BY direction, status")),
            "outbox": list(db.query("SELECT target, status, count(*) AS n FROM outbox GROUP BY target, status ORDER BY target, status")),
            "hours": hours,
            "oldest_undelivered": dict(first) if first else None,
            "dead": scalar(db, "SELECT count(*) FROM outbox WHERE status = 'dead'"),
            "paused": sorted(self.paused_targets()),
        }

    def outbox_list(self, *, status: str | None = "dead", target: str | None = None, limit: int = 100,
                    before_id: int | None = None) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[str | int] = []
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
            where[0] = f"{BLOCKER_SQL} IS NOT NULL"
            params.pop(0)
        sql = (f"SELECT o.*, {BLOCKED_BY_SQL} FROM outbox o" + (" WHERE " + " AND ".join(where) if where else "")
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
        view["attachments"] = [dict(a) for a in self._attachment_rows(case_id, every_message=True)]
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
        rows = self._attachment_rows(case_id, every_message=True, where="a.sha256 = ?", params=[sha256],
                                     with_data=True, limit=1)
        return (rows[0]["file_name"], rows[0]["mime_type"], bytes(rows[0]["data"])) if rows else None

    def case_attachments(self, case_id: str) -> list[dict[str, Any]]:
        """The case's own attachments (not its messages'), by position: position, file_name,
        mime_type, sha256, size."""
        return [dict(a) for a in self._attachment_rows(case_id)]

    def case_attachment(self, case_id: str, ref: str) -> dict[str, Any] | None:
        """One of the case's own attachments by its position (1-based) or its SHA-256, with
        its bytes (``data``); None when the case has no such file. A purged case's files are
        gone: ``CasePurged``."""
        case = self._case_state(self.db, case_id)
        if case is not None and case["purged_at"]:
            raise CasePurged(f"case '{case_id[:64]}': its files have been purged after the retention period.",
                             field="caseId")
        value: int | str
        if ref.isdigit() and len(ref) <= 3:
            where, value = "a.position = ?", int(ref)
        elif len(ref) == 64 and all(c in "0123456789abcdef" for c in ref.lower()):
            where, value = "a.sha256 = ?", ref.lower()
        else:
            return None
        rows = self._attachment_rows(case_id, where=where, params=[value], with_data=True, limit=1)
        return {**dict(rows[0]), "data": bytes(rows[0]["data"])} if rows else None

    def queue_depth(self) -> list[dict[str, Any]]:
        """Rows still to deliver per target and status, and the oldest one's creation time."""
        return list(self.db.query(
            """SELECT target, status, count(*) AS n, min(created_at) AS oldest FROM outbox
               WHERE status IN ('pending', 'in_flight', 'dead') GROUP BY target, status"""))

    def failure_rate(self, target: str, since: dt.datetime) -> tuple[int, int]:
        """(failed, all) attempts of ``target`` since ``since``."""
        row = self.db.execute(
            """SELECT sum(CASE WHEN outcome IN ('retry', 'dead', 'failed_late') THEN 1 ELSE 0 END) AS failed, count(*) AS n FROM attempts
               WHERE started_at >= ? AND target = ?""", [ts(since), target]).fetchone()
        return int(row["failed"] or 0), int(row["n"] or 0)

    def dead_since(self, since: dt.datetime) -> list[dict[str, Any]]:
        """Rows that went dead after ``since`` (for the dead-letter alert)."""
        return list(self.db.query(
            "SELECT id, case_id, action, target, last_error_code, updated_at FROM outbox "
            "WHERE status = 'dead' AND updated_at > ? ORDER BY updated_at", [ts(since)]))

    def metric_counters(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT name, target, direction, value FROM metrics_counters"))

    def metric_latency(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return (list(self.db.query("SELECT target, direction, le, count FROM metrics_latency")),
                list(self.db.query("SELECT target, direction, total_s, count FROM metrics_latency_sum")))

    def audit_entries(self, limit: int = 100) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM audit_log ORDER BY id DESC LIMIT ?", [limit]))

    def job_leases(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM job_leases ORDER BY name"))

    def paused_targets(self) -> set[str]:
        return {r["name"] for r in self.db.execute("SELECT name FROM targets WHERE paused = 1")}
