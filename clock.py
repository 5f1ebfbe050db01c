"""The one clock of the gateway: UTC instants, and the Swedish date of every 1177 rule.

Role: the only module that reads the wall clock. Every instant the gateway stores or
compares is an aware UTC ``datetime`` (``utcnow``); every date a 1177 rule is about (an
event date not in the future, the 16th birthday, five years of medications, a unit's
``valid_from``/``valid_to``, two years of retention, the demo providers' "today") is the
**Europe/Stockholm** calendar date of such an instant (``swedish_date``), whatever zone
the machine runs in and whichever entry point the request came in by. Calendar arithmetic
in whole years follows the calendar: 29 February plus or minus years lands on 1 March in a
year without one (``add_years``).

Parts that read the time take a ``Clock`` (default ``SYSTEM``); tests move it with
``time-machine`` (which the system clock follows) or hand in a ``FixedClock``.

May import: nothing of ours.

Invariants: ``Clock.instant()`` is always aware and in UTC; ``Clock.day()`` is always
``swedish_date(instant())``; nothing else in the product calls ``datetime.now()``,
``date.today()`` or ``time.localtime()`` (``tests/test_clock.py`` proves it).
"""

from __future__ import annotations

import datetime as dt
import time
from zoneinfo import ZoneInfo

#: The zone of 1177's dates and of its timestamps on the wire (TimeStampType, DateType).
SWEDEN = ZoneInfo("Europe/Stockholm")
UTC = dt.timezone.utc


def instant() -> dt.datetime:
    """The current instant, aware, in UTC."""
    return dt.datetime.now(UTC)


#: The same as ``instant`` (the name the tests know it by).
utcnow = instant


def monotonic() -> float:
    """Seconds on a clock that never goes back, for deadlines and durations (not dates)."""
    return time.monotonic()


def swedish_time(instant: dt.datetime) -> dt.datetime:
    """``instant`` as Swedish local time (an aware instant is converted; a naive one is
    taken as UTC, the store's convention)."""
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(SWEDEN)


def swedish_date(instant: dt.datetime) -> dt.date:
    """The Europe/Stockholm calendar date of ``instant``: the date every 1177 rule is about."""
    return swedish_time(instant).date()


def start_of_swedish_day(day: dt.date) -> dt.datetime:
    """The UTC instant at which ``day`` begins in Sweden (00:00 local, either side of DST)."""
    return dt.datetime.combine(day, dt.time(0), tzinfo=SWEDEN).astimezone(UTC)


def add_years(day: dt.date, years: int) -> dt.date:
    """``day`` moved by whole calendar ``years`` (negative for earlier); 29 February becomes
    1 March in a year without one (the day after 28 February), as 1177's rules count."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February in a common year
        return dt.date(day.year + years, 3, 1)


def years_before(day: dt.date, years: int) -> dt.date:
    """The date ``years`` calendar years before ``day`` (29 February → 1 March)."""
    return add_years(day, -years)


class Clock:
    """Reads the time for one part of the gateway; the default follows the system clock."""

    def instant(self) -> dt.datetime:
        """The current instant, aware, in UTC."""
        return instant()

    def day(self) -> dt.date:
        """Today's date in Sweden: the date of the 1177 rules."""
        return swedish_date(self.instant())

    def local_time(self) -> dt.datetime:
        """The current instant as Swedish local time (for 1177's timestamps on the wire)."""
        return swedish_time(self.instant())


class FixedClock(Clock):
    """A clock that stands where it is told (tests, ``gateway check`` at a given instant)."""

    def __init__(self, at: dt.datetime):
        self.at = at if at.tzinfo else at.replace(tzinfo=UTC)

    def instant(self) -> dt.datetime:
        return self.at.astimezone(UTC)

    def move(self, **delta: float) -> None:
        """Move the clock forward by ``datetime.timedelta(**delta)``."""
        self.at = self.at + dt.timedelta(**delta)


#: The clock the gateway runs on.
SYSTEM = Clock()
