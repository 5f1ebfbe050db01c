"""The store's retention (rule 2): purge content, files and log detail after two years.

May import: model, errors, clock (through ``store.base``).

Invariants: never touches a case with undelivered, dead, reserved or held work; gives the
freed pages back to the file system.
"""

from __future__ import annotations

import datetime as dt

from clock import instant

from .base import (
    UNFINISHED,
    StoreBase,
    ts,
)


class Retention(StoreBase):
    """The purge of rule 2."""

    def purge(self, *, content_before: dt.datetime, log_before: dt.datetime, batch: int = 500,
              now: dt.datetime | None = None) -> dict[str, int]:
        """Remove the content and files of cases whose last activity (a message either way, a
        status change) was before ``content_before``, and sync-log detail written before
        ``log_before``; never for a case with undelivered, dead or reserved work.
        Returns what was removed; the freed pages are given back to the file system."""
        now = now or instant()
        before_bytes = self.dialect.size_bytes(self.db)
        removed = {"cases": 0, "messages": 0, "attachments": 0, "files": 0, "log_details": 0}
        unfinished = ", ".join(f"'{s}'" for s in UNFINISHED)
        while True:
            with self.write() as db:
                ids = [r["case_id"] for r in db.execute(
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
        self.dialect.after_purge(self.db)  # freed pages back to the file system; the planner's statistics
        after_bytes = self.dialect.size_bytes(self.db)
        removed["bytes_freed"] = max(0, before_bytes - after_bytes)
        return removed
