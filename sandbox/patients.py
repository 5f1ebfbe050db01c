"""The demo patients' medications, as the demo provider systems hold them.

Role: the prescriptions a demo provider system (``sandbox.demo_rest``, ``sandbox.demo_soap``)
lists for a patient when the gateway answers 1177's ``GetMedicationList``, and that the
demo clinic (``sandbox.answers``) names when it renews them. The dates are relative to the
``today`` given, so that the five-year limit of rule 9 (DESIGN.md section 6) always has a
medication just inside it (exactly five years ago) and one just outside (five years and a
day ago), whatever day the tests run.

    medications_for("191212121212", clock.SYSTEM.day())  # today's Swedish date
    -> [{"prescriptionId": "RX-1001", "name": "Alvedon", "strength": "500 mg tablett",
         "lastPrescribedDate": date(...)}, ...]

The demo patients (valid 12-digit personnummer/samordningsnummer, Luhn over digits 3-12):

    191212121212  Tolvan Tolvansson, an adult with five prescriptions (two outside 5 years)
    198112189876  an adult with three prescriptions (one outside 5 years)
    CHILD         201304042391, born 2013-04-04: under 16 (rule 9: no list is shown)
    TEEN_16       201011262399, born 2010-11-26: 16 from 2026-11-26 (sees their own list)
    SAMORDNING    198003752394, a samordningsnummer (born 1980-03-15, day + 60), an adult

May import: the standard library only (deliberately not the product's ``rules``, so that
the sandbox checks the gateway from outside). Never imported by the product.

Invariants:
- Pure: the same (person id, today) gives the same list; a new list (and new dicts) each call.
- Every ``prescriptionId`` is unique across all patients (``RX-1001`` ...).
- ``lastPrescribedDate`` is a ``datetime.date``, never after ``today``; "N years ago" is
  the same month and day N years before ``today`` (29 February becomes 1 March).
- ``strength`` is present only when the prescription has one; an unknown person id has no
  medications (an empty list, not an error).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import clock

TOLVAN = "191212121212"  # Tolvan Tolvansson, the classic Skatteverket test person
ADULT = "198112189876"
CHILD = "201304042391"  # born 2013-04-04: under 16
TEEN_16 = "201011262399"  # born 2010-11-26: turns 16 on 2026-11-26
SAMORDNING = "198003752394"  # samordningsnummer: born 1980-03-15 (day 15 + 60 = 75)

PATIENTS = (TOLVAN, ADULT, CHILD, TEEN_16, SAMORDNING)


def years_ago(today: dt.date, years: int) -> dt.date:
    """The same month and day ``years`` before ``today``, in calendar years as the gateway
    counts them (29 February becomes 1 March)."""
    return clock.years_before(today, years)


def days_ago(today: dt.date, days: int) -> dt.date:
    return today - dt.timedelta(days=days)


# (prescriptionId, name, strength or None, when: today -> lastPrescribedDate)
_Row = tuple[str, str, str | None, Callable[[dt.date], dt.date]]

_MEDICATIONS: dict[str, list[_Row]] = {
    TOLVAN: [
        ("RX-1001", "Alvedon", "500 mg tablett", lambda t: days_ago(t, 60)),
        ("RX-1002", "Atorvastatin", "20 mg", lambda t: days_ago(t, 400)),
        ("RX-1003", "Omeprazol", "20 mg", lambda t: years_ago(t, 5)),  # the last day inside 5 years
        ("RX-1004", "Kåvepenin", "1 g", lambda t: days_ago(years_ago(t, 5), 1)),  # the first day outside
        ("RX-1005", "Sertralin", "50 mg", lambda t: years_ago(t, 8)),
    ],
    ADULT: [
        ("RX-2001", "Levaxin", "50 mikrogram", lambda t: days_ago(t, 90)),
        ("RX-2002", "Ventoline", "0,1 mg/dos inhalator", lambda t: years_ago(t, 3)),
        ("RX-2003", "Citalopram", "20 mg", lambda t: years_ago(t, 6)),
    ],
    CHILD: [
        ("RX-3001", "Desloratadin", "0,5 mg/ml oral lösning", lambda t: days_ago(t, 30)),
        ("RX-3002", "Amoxicillin", "50 mg/ml oral suspension", lambda t: years_ago(t, 6)),
    ],
    TEEN_16: [
        ("RX-4001", "Flutikason", "50 mikrogram/dos nässpray", lambda t: days_ago(t, 45)),
        ("RX-4002", "Kåvepenin", "250 mg", lambda t: years_ago(t, 6)),
    ],
    SAMORDNING: [
        ("RX-5001", "Ipren", "400 mg tablett", lambda t: days_ago(t, 20)),
        ("RX-5002", "Metformin", "500 mg", lambda t: years_ago(t, 6)),
    ],
}


def medications_for(person_id: str, today: dt.date) -> list[dict[str, Any]]:
    """The patient's prescriptions: ``[{"prescriptionId", "name", "strength"?,
    "lastPrescribedDate": date}]`` with dates relative to ``today``; [] for an unknown id."""
    out: list[dict[str, Any]] = []
    for prescription_id, name, strength, when in _MEDICATIONS.get((person_id or "").strip(), []):
        item: dict[str, Any] = {"prescriptionId": prescription_id, "name": name}
        if strength:
            item["strength"] = strength
        item["lastPrescribedDate"] = when(today)
        out.append(item)
    return out


def label(prescription_id: str | None, name: str | None, person_id: str | None, today: dt.date) -> str:
    """How the clinic names a renewed medication: the name sent (else the patient's record's
    name), with the record's strength when the prescription is the patient's and the name
    does not already say it; ``recept <id>`` when nothing names it."""
    record = next((m for m in medications_for(person_id or "", today)
                   if prescription_id and m["prescriptionId"] == prescription_id.strip()), None)
    text = (name or "").strip() or (record["name"] if record else "")
    if not text:
        return f"recept {prescription_id.strip()}" if prescription_id and prescription_id.strip() else ""
    strength = record.get("strength") if record else None
    if strength and strength.lower() not in text.lower():
        text = f"{text} {strength}"
    return text
