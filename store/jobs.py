"""The store's scheduled jobs and heartbeats: each job claimed once across processes.

Role: a lease row per job (``job_leases``) claimed with a conditional update, so polls,
alerts, retention and recovery run once whatever the number of processes; heartbeats per
worker, by which a dead worker's rows are recovered.

May import: model, errors, clock (through ``store.base``).
"""

from __future__ import annotations

from typing import Any

import datetime as dt
from dataclasses import dataclass

from clock import instant

from .base import (
    StoreBase,
    parse_ts,
    ts,
)


@dataclass(frozen=True)
class JobRun:
    """One run of a scheduled job claimed by this process; ``previous``: when it last ran anywhere."""

    name: str
    owner: str
    previous: dt.datetime | None


class Jobs(StoreBase):
    """Scheduled jobs claimed once, and heartbeats."""

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
        return JobRun(name, owner, parse_ts(previous) if previous else None)

    def finish_job(self, run: JobRun) -> None:
        """The run is over: the job may be claimed again once it is due."""
        with self.write() as db:
            db.execute("UPDATE job_leases SET running_until = NULL WHERE name = ? AND owner = ?", [run.name, run.owner])

    def beat(self, name: str, detail: str = "", now: dt.datetime | None = None) -> None:
        with self.write() as db:
            db.execute(
                "INSERT INTO heartbeats (name, at, detail) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET at = excluded.at, detail = excluded.detail",
                [name, ts(now or instant()), detail],
            )

    def beat_of(self, name: str) -> dict[str, Any] | None:
        """Worker ``name``'s last beat: ``at`` and ``detail`` (what the worker said of itself)."""
        rows = list(self.db.query("SELECT name, at, detail FROM heartbeats WHERE name = ?", [name]))
        return rows[0] if rows else None

    def last_beat(self, name: str) -> str | None:
        row = self.db.execute("SELECT at FROM heartbeats WHERE name = ?", [name]).fetchone()
        return row[0] if row else None
