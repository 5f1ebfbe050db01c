"""Mappings: the files in ``mappings/`` that say which unit is which, loaded and checked.

Role: load and validate the mapping files an integration engineer edits, and answer
look-ups on them. Units map a 1177 HSA-id to the provider's own unit code and to the
target (provider system) that serves it, with validity dates and an optional default
route (for example the region's patient board). Pure: no I/O after ``load``.

May import: ``model``, ``errors``.

Invariants: a loaded ``Mappings`` has no overlapping validity periods for one HSA-id
and no unit code that maps back to two HSA-ids at once; every look-up that falls
through returns ``None`` or raises ``MappingError`` naming the file, key and value,
never a silent default.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from errors import InvalidHsaId, MappingError
from model import hsa_id

UNITS_FILE = "units.yaml"


class _UnitRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hsa_id: str = Field(description="The unit's HSA-id as 1177 knows it.")
    code: str = Field(min_length=1, description="The provider system's own code for the unit.")
    target: str = Field(min_length=1, description="Name of the target (in config 'targets') that serves it.")
    name: str | None = None
    patient_board: bool = False
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None

    @field_validator("hsa_id")
    @classmethod
    def _hsa(cls, value: str) -> str:
        try:
            return hsa_id(value)
        except InvalidHsaId as exc:
            raise ValueError(exc.message) from None

    @field_validator("code", mode="before")
    @classmethod
    def _code(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class _DefaultRoute(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hsa_id: str = Field(description="A unit from 'units' that takes cases for units not listed.")

    @field_validator("hsa_id")
    @classmethod
    def _hsa(cls, value: str) -> str:
        try:
            return hsa_id(value)
        except InvalidHsaId as exc:
            raise ValueError(exc.message) from None


class _UnitsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    units: list[_UnitRow] = Field(default_factory=list)
    default_route: _DefaultRoute | None = None


@dataclass(frozen=True)
class Unit:
    """One row of the units table, valid from ``valid_from`` to ``valid_to`` (inclusive)."""

    hsa_id: str
    code: str
    target: str
    name: str | None
    patient_board: bool
    valid_from: dt.date | None
    valid_to: dt.date | None

    def valid_on(self, day: dt.date) -> bool:
        return (self.valid_from is None or self.valid_from <= day) and (self.valid_to is None or day <= self.valid_to)


@dataclass(frozen=True)
class Route:
    """Where a case for ``requested_hsa_id`` goes: ``unit`` (itself, or the default route)."""

    requested_hsa_id: str
    unit: Unit
    by_default: bool = False

    @property
    def target(self) -> str:
        return self.unit.target


def _overlaps(a: Unit, b: Unit) -> bool:
    lo = max(a.valid_from or dt.date.min, b.valid_from or dt.date.min)
    hi = min(a.valid_to or dt.date.max, b.valid_to or dt.date.max)
    return lo <= hi


class Units:
    """The units table with its look-ups."""

    def __init__(self, rows: Iterable[Unit], default_route: str | None = None, source: str = UNITS_FILE):
        self.rows = tuple(rows)
        self.source = source
        self.default_route = default_route
        self._by_hsa: dict[str, list[Unit]] = {}
        for row in self.rows:
            self._by_hsa.setdefault(row.hsa_id, []).append(row)

    def __len__(self) -> int:
        return len(self.rows)

    def unit(self, hsa: str, on: dt.date) -> Unit | None:
        """The row in force for ``hsa`` on ``on`` (HSA-ids compare case-insensitively)."""
        for row in self._by_hsa.get(hsa.strip().upper(), ()):
            if row.valid_on(on):
                return row
        return None

    def knows(self, hsa: str, on: dt.date) -> bool:
        return self.unit(hsa, on) is not None

    def route(self, hsa: str, on: dt.date) -> Route | None:
        """The route for a case addressed to ``hsa``: its own row, else the default route."""
        row = self.unit(hsa, on)
        if row is not None:
            return Route(hsa.strip().upper(), row)
        if self.default_route:
            fallback = self.unit(self.default_route, on)
            if fallback is not None:
                return Route(hsa.strip().upper(), fallback, by_default=True)
        return None

    def by_code(self, target: str, code: str, on: dt.date) -> Unit:
        """The unit a provider's ``code`` on ``target`` stands for, or ``MappingError``."""
        for row in self.rows:
            if row.target == target and row.code == code and row.valid_on(on):
                return row
        raise MappingError(f"{self.source}: no unit with code '{code}' for target '{target}' on {on.isoformat()}.", field="code")

    def problems(self, known_targets: Iterable[str] | None = None) -> list[str]:
        """Everything wrong with the table (empty when it is fine)."""
        found: list[str] = []
        targets = set(known_targets) if known_targets is not None else None
        for index, row in enumerate(self.rows):
            where = f"{self.source}: units[{index}] ({row.hsa_id})"
            if row.valid_from and row.valid_to and row.valid_from > row.valid_to:
                found.append(f"{where}: valid_from {row.valid_from} is after valid_to {row.valid_to}.")
            if targets is not None and row.target not in targets:
                found.append(f"{where}: target '{row.target}' is not defined under 'targets' in the config.")
            for other_index, other in enumerate(self.rows[index + 1 :], start=index + 1):
                if not _overlaps(row, other):
                    continue
                if other.hsa_id == row.hsa_id:
                    found.append(f"{where}: overlaps units[{other_index}] for the same HSA-id; give them separate validity dates.")
                elif other.target == row.target and other.code == row.code:
                    found.append(
                        f"{where}: code '{row.code}' on target '{row.target}' is also used by units[{other_index}] "
                        f"({other.hsa_id}) in the same period; answers could not be mapped back."
                    )
        if self.default_route and self.default_route not in self._by_hsa:
            found.append(f"{self.source}: default_route.hsa_id {self.default_route} is not one of the units.")
        return found


@dataclass(frozen=True)
class Mappings:
    """Everything loaded from ``mappings/``."""

    directory: Path
    units: Units

    def problems(self, known_targets: Iterable[str] | None = None) -> list[str]:
        return self.units.problems(known_targets)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingError(f"cannot read mapping file {path}: {exc.strerror}.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise MappingError(f"mapping file {path.name} is not valid YAML{where}.") from None


def _validation_message(name: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "is required"
        parts.append(f"{loc}: {msg}")
    return f"{name}: " + "; ".join(parts) + "."


def load(directory: str | Path) -> Mappings:
    """Load every mapping file in ``directory``; raise ``MappingError`` on the first bad file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MappingError(f"the mappings folder {directory} does not exist.", hint="Set mappings.dir in the config.")
    units_path = directory / UNITS_FILE
    data = _read_yaml(units_path) or {}
    try:
        parsed = _UnitsFile.model_validate(data)
    except ValidationError as exc:
        raise MappingError(_validation_message(UNITS_FILE, exc)) from None
    units = Units(
        (Unit(r.hsa_id, r.code, r.target, r.name, r.patient_board, r.valid_from, r.valid_to) for r in parsed.units),
        parsed.default_route.hsa_id if parsed.default_route else None,
        source=UNITS_FILE,
    )
    return Mappings(directory, units)
