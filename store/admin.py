"""The store's operator data: sign-in failures and locks, ops sessions, alert state, settings.

May import: model, errors, clock (through ``store.base``).

Invariants: a session id or a setting is created once (``INSERT OR IGNORE``) and read back,
so two processes agree on it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from clock import instant

from .base import (
    StoreBase,
    parse_ts,
    scalar,
    ts,
)


class Admin(StoreBase):
    """Sign-in locks, sessions, alert state and settings."""

    def sign_in_locked_until(self, keys: list[str], now: dt.datetime) -> str | None:
        """The latest lock end of ``keys`` that is still ahead of ``now``, or None."""
        marks = ", ".join("?" for _ in keys)
        until = scalar(self.db, f"SELECT max(locked_until) FROM sign_in_failures WHERE key IN ({marks}) "
                                "AND locked_until > ?", [*keys, ts(now)])
        return str(until) if until else None

    def record_sign_in_failure(self, limits: dict[str, int], *, window_s: float, lockout_s: float,
                               now: dt.datetime) -> list[str]:
        """Count a failed sign-in against each key (``{key: failures allowed}``); a key that
        reaches its limit within ``window_s`` is locked for ``lockout_s``. Returns the keys
        this failure locked."""
        locked = []
        with self.write() as db:
            for key, limit in limits.items():
                row = db.execute("SELECT failures, first_at, locked_until FROM sign_in_failures WHERE key = ?",
                                 [key]).fetchone()
                fresh = (row is None or parse_ts(row["first_at"]) < now - dt.timedelta(seconds=window_s)
                         or (row["locked_until"] is not None and row["locked_until"] <= ts(now)))
                failures = 1 if fresh else row["failures"] + 1
                first = ts(now) if fresh else row["first_at"]
                until = None if fresh else row["locked_until"]
                if until is None and failures >= limit:
                    until = ts(now + dt.timedelta(seconds=lockout_s))
                    locked.append(key)
                db.execute("INSERT INTO sign_in_failures (key, failures, first_at, last_at, locked_until) "
                           "VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET failures = excluded.failures, "
                           "first_at = excluded.first_at, last_at = excluded.last_at, locked_until = excluded.locked_until",
                           [key, failures, first, ts(now), until])
        return locked

    def clear_sign_in_failures(self, key: str) -> bool:
        """Forget the failures (and lift the lock) of ``key``; True if there were any."""
        with self.write() as db:
            return db.execute("DELETE FROM sign_in_failures WHERE key = ?", [key]).rowcount > 0

    def sign_in_failures(self) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM sign_in_failures ORDER BY key"))

    def start_session(self, user: str, now: dt.datetime) -> str:
        """A new ops session for ``user``; its id goes in the (signed) cookie."""
        sid = uuid.uuid4().hex + uuid.uuid4().hex
        with self.write() as db:
            # no cookie lives longer than ops.session_minutes (at most 7 days): older rows can go
            db.execute("DELETE FROM ops_sessions WHERE created_at < ?", [ts(now - dt.timedelta(days=8))])
            db.execute('INSERT INTO ops_sessions (sid, "user", created_at) VALUES (?, ?, ?)', [sid, user, ts(now)])
        return sid

    def session_user(self, sid: str) -> str | None:
        """The user of a session that has not ended, or None."""
        user: str | None = scalar(self.db, 'SELECT "user" FROM ops_sessions WHERE sid = ? AND ended_at IS NULL', [sid])
        return user

    def end_sessions(self, *, now: dt.datetime, sid: str | None = None, user: str | None = None) -> int:
        """End one session, or every session of ``user``; a copied cookie no longer works."""
        where, params = ("sid = ?", [sid]) if sid is not None else ('"user" = ?', [user])
        with self.write() as db:
            return db.execute(f"UPDATE ops_sessions SET ended_at = ? WHERE {where} AND ended_at IS NULL",
                              [ts(now), *params]).rowcount

    def alert_state(self, key: str) -> dict[str, Any] | None:
        rows = list(self.db.query("SELECT * FROM alert_state WHERE key = ?", [key]))
        return rows[0] if rows else None

    def set_alert_state(self, key: str, *, kind: str, target: str, active: bool, sent: bool, detail: str,
                        now: dt.datetime | None = None) -> None:
        now = now or instant()
        with self.write() as db:
            previous = db.execute("SELECT active, since, last_sent_at FROM alert_state WHERE key = ?", [key]).fetchone()
            since = previous["since"] if previous and bool(previous["active"]) == active else ts(now)
            last_sent = ts(now) if sent else (previous["last_sent_at"] if previous else None)
            db.execute(
                "INSERT INTO alert_state (key, kind, target, active, since, last_sent_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET active = excluded.active, since = excluded.since, "
                "last_sent_at = excluded.last_sent_at, detail = excluded.detail",
                [key, kind, target, int(active), since, last_sent, detail[:500]],
            )

    def setting(self, name: str, default: Any) -> str:
        """A value kept in the database, created from ``default()`` on first use (e.g. a signing key)."""
        row = self.db.execute("SELECT value FROM settings WHERE name = ?", [name]).fetchone()
        if row:
            return str(row["value"])
        with self.write() as db:
            db.execute("INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)", [name, default()])
            return str(scalar(db, "SELECT value FROM settings WHERE name = ?", [name]))
