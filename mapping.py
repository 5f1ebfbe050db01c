"""Mappings: the files in ``mappings/`` that say which unit is which, loaded and checked.

Role: load and validate the mapping files an integration engineer edits, and answer
look-ups on them; hold the set in force and replace it on a reload (``Holder``). Pure: no
I/O but reading the files (``load``, ``Holder.reload``).

- ``units.yaml``: a 1177 HSA-id ↔ the provider's own unit code and the target (provider
  system) that serves it, with validity dates and an optional default route (for
  example the region's patient board).
- ``codes.yaml``: per target, 1177 case type codes → the provider's codes, and the
  provider's status codes → 1177's statuses.
- ``fieldmaps/<target>.yaml``: per target and action, how the body sent to the target is
  built from the canonical case: target field ← source path, with named transforms,
  code look-ups and constants. Declarative; nothing is evaluated as code. Every source
  path is checked against ``VOCABULARY``: what ``delivery_source`` gives a field map,
  described by ``DeliverySource`` from the model's own dataclasses (``model.describe``).

May import: ``model``, ``errors``.

Invariants: a loaded ``Mappings`` has no overlapping validity periods for one HSA-id
and no unit code that maps back to two HSA-ids at once; every look-up that falls
through returns ``None`` or raises ``MappingError`` naming the file, key and value,
never a silent default. ``VOCABULARY`` is derived, never written by hand: a field map
path it does not hold is a problem (file, line, the nearest known path). A ``Mappings`` is
immutable and names the bytes it came from (``digest``); a ``Holder`` puts new files in
force only after every check ``gateway check`` runs has passed on exactly those bytes, and
otherwise keeps the set it had.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import hashlib
import json
import mmap
import struct
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from errors import ConfigError, InvalidHsaId, MappingError, MappingsChanging, MappingsNotReloaded
from model import Case, CaseStatus, CaseType, FieldDoc, Message, about, describe, hsa_id, to_data

UNITS_FILE = "units.yaml"
CODES_FILE = "codes.yaml"
FIELDMAPS_DIR = "fieldmaps"
#: The case types intake accepts and the statuses 1177 knows, from the model's own codes.
CASE_TYPE_CODES = tuple(code.value for code in CaseType)
STATUS_CODES = tuple(status.value for status in CaseStatus)
ACTIONS = ("deliver_case", "deliver_message")


class _UnitRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hsa_id: str = Field(description="The unit's HSA-id as 1177 knows it.")
    code: str = Field(min_length=1, description="The provider system's own code for the unit.")
    target: str = Field(min_length=1, description="Name of the target (in config 'targets') that serves it.")
    name: str | None = None
    patient_board: bool = False
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None
    answers_for: list[str] = Field(default_factory=list, description=(
        "HSA-ids of other units in whose cases this unit may sign messages to the citizen "
        "(rule 11; e.g. a patient board for the clinics it handles complaints for)."))
    citizen_attachments: list[CaseType] | None = Field(
        default=None, description="The case types in which citizens may attach files to this unit (rule 12); default all.")

    @field_validator("hsa_id")
    @classmethod
    def _hsa(cls, value: str) -> str:
        try:
            return hsa_id(value)
        except InvalidHsaId as exc:
            raise ValueError(exc.message) from None

    @field_validator("answers_for")
    @classmethod
    def _answers_for(cls, values: list[str]) -> list[str]:
        try:
            return [hsa_id(value) for value in values]
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
    answers_for: tuple[str, ...] = ()
    citizen_attachments: frozenset[str] | None = None  # None: every case type

    def takes_citizen_files(self, case_type: str) -> bool:
        """Rule 12: whether citizens may attach files to this unit in ``case_type`` cases."""
        return self.citizen_attachments is None or case_type in self.citizen_attachments

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

    def may_sign(self, sender_hsa: str, case_unit_hsa: str, on: dt.date) -> bool:
        """Rule 11: whether ``sender_hsa`` may sign a message in a case of ``case_unit_hsa``: it
        is that unit, or the unit its cases are routed to (the default route), or its row in
        force lists the case's unit under ``answers_for``."""
        sender, case_unit = sender_hsa.strip().upper(), case_unit_hsa.strip().upper()
        if sender == case_unit:
            return True
        route = self.route(case_unit, on)
        if route is not None and route.unit.hsa_id == sender:
            return True
        row = self.unit(sender, on)
        return row is not None and case_unit in row.answers_for

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


# -- codes ------------------------------------------------------------------------------------------


class _CodesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    case_types: dict[str, dict[str, str]] = Field(default_factory=dict)
    statuses: dict[str, dict[str, str]] = Field(default_factory=dict)


@dataclass(frozen=True)
class Codes:
    """Code tables per target: ``case_types`` (1177 → provider), ``statuses`` (provider → 1177)."""

    case_types: dict[str, dict[str, str]]
    statuses: dict[str, dict[str, str]]
    source: str = CODES_FILE

    def lookup(self, table: str, target: str, value: str) -> str:
        """Map ``value`` through ``table`` for ``target``, or raise ``MappingError`` naming all three."""
        tables = {"case_types": self.case_types, "statuses": self.statuses}
        if table not in tables:
            raise MappingError(f"{self.source}: there is no code table '{table}'.")
        per_target = tables[table].get(target)
        if per_target is None:
            raise MappingError(f"{self.source}: {table} has no section for target '{target}'.", field=f"{table}.{target}")
        if value not in per_target:
            raise MappingError(
                f"{self.source}: {table}.{target} has no entry for '{value}'.", field=f"{table}.{target}.{value}"
            )
        return per_target[value]

    def problems(self, targets: Iterable[str] | None) -> list[str]:
        found = []
        known = set(targets) if targets is not None else None
        for target, table in self.case_types.items():
            if known is not None and target not in known:
                found.append(f"{self.source}: case_types.{target}: no such target in the config.")
            for code in table:
                if code not in CASE_TYPE_CODES:
                    found.append(f"{self.source}: case_types.{target}.{code}: not a 1177 case type ({', '.join(CASE_TYPE_CODES)}).")
        for target, table in self.statuses.items():
            if known is not None and target not in known:
                found.append(f"{self.source}: statuses.{target}: no such target in the config.")
            for code, status in table.items():
                if status not in STATUS_CODES:
                    found.append(f"{self.source}: statuses.{target}.{code}: '{status}' is not a 1177 status ({', '.join(STATUS_CODES)}).")
        return found


# -- field maps: what they may read ------------------------------------------------------------------


@dataclass(frozen=True)
class SourceRoute:
    """``route.…``: where the gateway sends the case (from ``units.yaml``)."""

    unit_code: str = about("KLIN1")  # the unit's code in the provider's system
    target: str = about("journal")
    hsa_id: str = about("SE5566778899-KLIN1")  # the unit that took the case (the default route's, if it did)


@dataclass(frozen=True)
class SourceProvider:
    """``provider.…``: what the provider's own system said about the case."""

    case_id: str | None = about("P-000123", "once the target's answer to deliver_case gave it (response.provider_case_id)")


#: What a provider is told it may use the citizen's contact details for (``contact.usage``).
CONTACT_USAGE = "messages_only"


@dataclass(frozen=True)
class SourceContact:
    """``contact.…``: the citizen's contact details, only with consent and only to send the
    citizen messages (DESIGN.md rule 8); the gateway erases them once the case is delivered."""

    mobile: str | None = about("+46701234567", "when the citizen gave it")
    email: str | None = about("tolvan@example.org", "when the citizen gave it")
    usage: str = about(CONTACT_USAGE)  # what the details may be used for: messages to the citizen only


@dataclass(frozen=True)
class SourceDelivery:
    """``delivery.…``: this delivery."""

    idempotency_key: str = about("6f1c2a9e-0b7d-4c51-9a3e-2f8d7c6b5a41")  # the same on every attempt


@dataclass(frozen=True)
class SourceGateway:
    """``gateway.…``: the gateway itself."""

    hsa_id: str | None = about("SE5566778899-GW01")  # gateway.hsa_id of the config


@dataclass(frozen=True)
class DeliverySource:
    """The shape of what ``delivery_source`` returns, i.e. what a field map may read. The
    citizen's contact details are only under ``contact``, and only with consent."""

    case: Case = about(None)
    message: Message | None = about(None, "deliver_message only")
    route: SourceRoute = about(None)
    provider: SourceProvider = about(None)
    contact: SourceContact | None = about(None, "only when the citizen consented to sharing them")  # DESIGN.md rule 8
    delivery: SourceDelivery = about(None)
    gateway: SourceGateway = about(None)


#: Never readable: ``delivery_source`` takes it out (``contact.…`` holds it, with consent).
WITHHELD = "case.subject_of_care.contact"
#: Every path a field map may read, ``case.attachments[].file_name`` for the items of a list
#: (``item.file_name`` inside ``each: case.attachments``). Derived from the dataclasses.
VOCABULARY: dict[str, FieldDoc] = {
    doc.path: doc for doc in describe(DeliverySource, "")
    if doc.path != WITHHELD and not doc.path.startswith(WITHHELD + ".")
}
#: Where a source path may start; ``item`` only inside ``each``.
SOURCE_ROOTS = (*(f.name for f in fields(DeliverySource)), "item")


def vocabulary() -> list[FieldDoc]:
    """The fields a field map can use, in the order of the model (``gateway mappings fields``)."""
    return list(VOCABULARY.values())


# -- field maps ---------------------------------------------------------------------------------------

_SPEC_KEYS = {"from", "transform", "lookup", "required", "const", "each", "fields", "format"}


def _transform_date(value: Any, fmt: str | None) -> Any:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value) if "T" in value else dt.date.fromisoformat(value)
    if isinstance(value, dt.datetime):
        value = value.date()
    return value.strftime(fmt) if fmt else value.isoformat()


def _transform_datetime(value: Any, fmt: str | None) -> Any:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.strftime(fmt) if fmt else value.isoformat()


def _transform_base64(value: Any, fmt: str | None) -> str:
    import base64

    return base64.b64encode(value).decode("ascii")


TRANSFORMS: dict[str, Any] = {
    "date": _transform_date,  # ISO date, or `format` (strftime)
    "datetime": _transform_datetime,  # ISO 8601 with offset, or `format`
    "base64": _transform_base64,  # bytes → base64 text (REST/JSON bodies)
    "string": lambda v, f: str(v),
    "upper": lambda v, f: str(v).upper(),
    "lower": lambda v, f: str(v).lower(),
    "bool": lambda v, f: bool(v),
}


def _get(source: dict[str, Any], path: str) -> Any:
    node: Any = source
    for part in path.split("."):
        if node is None:
            return None
        if isinstance(node, dict):
            node = node.get(part)
        else:
            return None
    return node


class FieldMap:
    """One target's field map: for each action, the body to send and what to read back."""

    def __init__(self, target: str, data: dict[str, Any], source: str, codes: Codes, lines: dict[str, int] | None = None):
        self.target = target
        self.source = source
        self.codes = codes
        self.actions: dict[str, dict[str, Any]] = data
        self.lines = lines or {}  # dotted key → line in the file, for the problems

    def _at(self, where: str) -> str:
        """``file:line: where`` (the line of the key, or of the nearest enclosing one)."""
        key = where
        while key and key not in self.lines:
            key = key.rpartition(".")[0]
        return f"{self.source}:{self.lines[key]}: {where}" if key else f"{self.source}: {where}"

    def uses_lookup(self, table: str) -> bool:
        """Whether any action looks a value up in code table ``table`` (``lookup: …``)."""
        def walk(node: Any) -> bool:
            if isinstance(node, dict):
                return node.get("lookup") == table or any(walk(v) for v in node.values())
            return isinstance(node, list) and any(walk(v) for v in node)
        return walk(self.actions)

    def problems(self) -> list[str]:
        found: list[str] = []
        for action, spec in self.actions.items():
            if action not in ACTIONS:
                found.append(f"{self._at(action)}: not an action ({', '.join(ACTIONS)}).")
                continue
            if not isinstance(spec, dict) or "body" not in spec:
                found.append(f"{self._at(action)}: needs a 'body'.")
                continue
            unknown = set(spec) - {"body", "response"}
            if unknown:
                found.append(f"{self._at(action)}: unknown key(s) {', '.join(sorted(unknown))}.")
            self._check(spec["body"], f"{action}.body", found, item=None)
            for key, path in (spec.get("response") or {}).items():
                if key != "provider_case_id" or not isinstance(path, str):
                    found.append(f"{self._at(f'{action}.response.{key}')}: only 'provider_case_id: <field path>' is known.")
        for action in ACTIONS:
            if action not in self.actions:
                found.append(f"{self.source}: no '{action}' section; the target could not receive that.")
        return found

    def _check(self, spec: Any, where: str, found: list[str], item: str | None) -> None:
        """Check ``spec`` at ``where``; ``item`` is the vocabulary path of ``item.`` inside an
        ``each`` (``case.attachments[]``), None outside one."""
        if isinstance(spec, str):
            self._check_path(spec, where, found, item)
            return
        if not isinstance(spec, dict):
            found.append(f"{self._at(where)}: expected a source path or a mapping, got {type(spec).__name__}.")
            return
        if "const" in spec:
            return
        if "each" in spec:
            self._check(spec["each"], f"{where}.each", found, item)
            each = self._absolute(spec["each"], item) if isinstance(spec["each"], str) else None
            if not isinstance(spec.get("fields"), dict):
                found.append(f"{self._at(where)}: 'each' needs 'fields'.")
            else:
                for key, sub in spec["fields"].items():
                    self._check(sub, f"{where}.fields.{key}", found, item=f"{each}[]" if each in VOCABULARY else "")
            return
        if "from" in spec:
            unknown = set(spec) - _SPEC_KEYS
            if unknown:
                found.append(f"{self._at(where)}: unknown key(s) {', '.join(sorted(unknown))}.")
            self._check(spec["from"], f"{where}.from", found, item)
            if spec.get("transform") and spec["transform"] not in TRANSFORMS:
                found.append(f"{self._at(where)}: unknown transform '{spec['transform']}' ({', '.join(TRANSFORMS)}).")
            if spec.get("lookup") and spec["lookup"] not in ("case_types", "statuses"):
                found.append(f"{self._at(where)}: unknown lookup '{spec['lookup']}' (case_types, statuses).")
            return
        for key, sub in spec.items():
            self._check(sub, f"{where}.{key}", found, item)

    @staticmethod
    def _absolute(path: str, item: str | None) -> str:
        """``item.file_name`` inside ``each: case.attachments`` is ``case.attachments[].file_name``."""
        if item is not None and (path == "item" or path.startswith("item.")):
            return item + path[len("item"):]
        return path

    def _check_path(self, path: str, where: str, found: list[str], item: str | None) -> None:
        root = path.split(".", 1)[0]
        if root not in SOURCE_ROOTS or (root == "item" and item is None):
            nearest = self._nearest(path, item)
            found.append(f"{self._at(where)}: source '{path}' must start with one of {', '.join(SOURCE_ROOTS[:-1])}"
                         + (f" (did you mean '{nearest}'?)." if nearest else "."))
            return
        if path == WITHHELD or path.startswith(WITHHELD + "."):
            found.append(f"{self._at(where)}: use 'contact.…' (only present with the citizen's consent).")
            return
        if item == "" and root == "item":
            return  # inside an 'each' whose own path is wrong: that one is reported
        if self._absolute(path, item) not in VOCABULARY:
            nearest = self._nearest(path, item)
            found.append(f"{self._at(where)}: unknown source '{path}'" + (f": did you mean '{nearest}'?" if nearest else "")
                         + " ('gateway mappings fields' lists every field a field map can read).")

    @staticmethod
    def _nearest(path: str, item: str | None) -> str | None:
        """The known path closest to ``path`` (``item.…`` ones inside an ``each``), if any is close."""
        known = ["item" + p[len(item):] for p in VOCABULARY if p.startswith(item + ".")] if item else []
        known += [p for p in VOCABULARY if "[]" not in p]
        match = difflib.get_close_matches(path, known, n=1, cutoff=0.6)
        return match[0] if match else None

    def build(self, action: str, source: dict[str, Any]) -> dict[str, Any]:
        """The body for ``action`` from ``source`` (see ``delivery_source``)."""
        spec = self.actions.get(action)
        if spec is None:
            raise MappingError(f"{self.source}: no '{action}' section for target '{self.target}'.", field=action)
        body = self._value(spec["body"], source, f"{action}.body")
        return body if isinstance(body, dict) else {}

    def _value(self, spec: Any, source: dict[str, Any], where: str) -> Any:
        if isinstance(spec, str):
            return _get(source, spec)
        if "const" in spec:
            return spec["const"]
        if "each" in spec:
            items = _get(source, spec["each"]) or []
            return [
                self._value(spec["fields"], {**source, "item": item}, f"{where}[{i}]") for i, item in enumerate(items)
            ]
        if "from" in spec:
            value = _get(source, spec["from"])
            if value is None:
                if spec.get("required"):
                    raise MappingError(f"{self.source}: {where}: '{spec['from']}' has no value and is required.", field=where)
                return None
            if spec.get("lookup"):
                value = self.codes.lookup(spec["lookup"], self.target, str(value))
            if spec.get("transform"):
                try:
                    value = TRANSFORMS[spec["transform"]](value, spec.get("format"))
                except (TypeError, ValueError) as exc:
                    raise MappingError(
                        f"{self.source}: {where}: transform '{spec['transform']}' failed ({type(exc).__name__}).", field=where
                    ) from None
            return value
        built = {}
        for key, sub in spec.items():
            value = self._value(sub, source, f"{where}.{key}")
            if value is not None and value != {}:
                built[key] = value
        return built

    def provider_case_id(self, action: str, answer: Any) -> tuple[bool, str | None]:
        """(expected, value): whether the map reads the provider's case id, and what it found."""
        path = ((self.actions.get(action) or {}).get("response") or {}).get("provider_case_id")
        if not path:
            return False, None
        value = _get(answer if isinstance(answer, dict) else {}, path)
        return True, (str(value) if value not in (None, "") else None)


def delivery_source(
    *,
    case: Any,
    message: Any = None,
    route: dict[str, Any],
    provider_case_id: str | None,
    idempotency_key: str,
    gateway_hsa_id: str | None = None,
) -> dict[str, Any]:
    """What a field map may read. Contact details only with consent (DESIGN.md rule 8)."""
    case_data = to_data(case)
    contact = case_data["subject_of_care"].pop("contact", None)
    case_data["attachments"] = [
        {**meta, "data": attachment.data} for meta, attachment in zip(case_data["attachments"], case.attachments, strict=True)
    ]
    source: dict[str, Any] = {
        "case": case_data,
        "route": route,
        "provider": {"case_id": provider_case_id},
        # rule 8: only with consent, and only to send the citizen messages (the provider is told so)
        "contact": {"mobile": contact.get("mobile"), "email": contact.get("email"), "usage": CONTACT_USAGE}
        if contact and contact.get("consent_to_share") else None,
        "delivery": {"idempotency_key": idempotency_key},
        "gateway": {"hsa_id": gateway_hsa_id},
    }
    if message is not None:
        message_data = to_data(message)
        message_data["attachments"] = [
            {**meta, "data": attachment.data} for meta, attachment in zip(message_data["attachments"], message.attachments, strict=True)
        ]
        source["message"] = message_data
    return source


# -- everything together ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mappings:
    """Everything loaded from ``mappings/``."""

    directory: Path
    units: Units
    codes: Codes
    fieldmaps: dict[str, FieldMap]
    #: ``Files.digest`` of the bytes these mappings were parsed from
    digest: str = ""

    def receiving_targets(self) -> dict[str, list[str]]:
        """Every target that can receive a case → the HSA-ids of its units in ``units.yaml``."""
        found: dict[str, list[str]] = {}
        for row in self.units.rows:
            if row.hsa_id not in found.setdefault(row.target, []):
                found[row.target].append(row.hsa_id)
        return found

    def incomplete_codes(self) -> list[str]:
        """A target that can receive a case needs a code for each case type intake accepts
        (when its field map looks them up, or it has a case_types table at all); a target
        with a statuses table needs a code for each of 1177's statuses. Otherwise the first
        such case, or the first such status, would be a dead row instead of a check error."""
        found: list[str] = []
        source = self.codes.source
        for target, units in sorted(self.receiving_targets().items()):
            fieldmap = self.fieldmaps.get(target)
            table = self.codes.case_types.get(target)
            looked_up = fieldmap is not None and fieldmap.uses_lookup("case_types")
            serves = f"serves {', '.join(units[:3])}{' …' if len(units) > 3 else ''} (units.yaml)"
            if table is None and looked_up:
                found.append(f"{source}: case_types has no section for target '{target}', which {serves} and whose "
                             f"{fieldmap.source if fieldmap else target} looks case types up (lookup: case_types); give it a code for each of "
                             f"{', '.join(CASE_TYPE_CODES)}.")
                continue
            for code in CASE_TYPE_CODES if table is not None else ():
                if table is not None and code not in table:
                    found.append(f"{source}: case_types.{target} has no code for {code}: target '{target}' {serves} and "
                                 f"intake accepts {code} cases, so the first would be a dead row; add '{code}: <your code>'.")
        for target, table in sorted(self.codes.statuses.items()):
            for status in STATUS_CODES:
                if status not in table.values():
                    found.append(f"{source}: statuses.{target} has no code for {status}: target '{target}' sends its "
                                 f"own status codes, and none of them would mean {status}; add '<your code>: {status}'.")
        return found

    def fieldmap(self, target: str) -> FieldMap:
        found = self.fieldmaps.get(target)
        if found is None:
            raise MappingError(f"{FIELDMAPS_DIR}/{target}.yaml does not exist: target '{target}' has no field map.")
        return found

    def problems(self, known_targets: Iterable[str] | None = None) -> list[str]:
        """Everything wrong across the files (empty when all is fine)."""
        targets = list(known_targets) if known_targets is not None else None
        found = self.units.problems(targets) + self.codes.problems(targets)
        for fieldmap in self.fieldmaps.values():
            found += fieldmap.problems()
            if targets is not None and fieldmap.target not in targets:
                found.append(f"{fieldmap.source}: no target '{fieldmap.target}' in the config.")
        if targets is not None:
            for target in targets:
                if target not in self.fieldmaps:
                    found.append(f"{FIELDMAPS_DIR}/{target}.yaml is missing: target '{target}' has no field map.")
        return found + self.incomplete_codes()


@dataclass(frozen=True)
class Files:
    """The mapping files of a folder, each read once: what ``load_files`` parses, and what
    ``digest`` names (so the digest is always that of the bytes the mappings came from)."""

    directory: Path
    content: dict[str, bytes]  # name in the folder (units.yaml, codes.yaml, fieldmaps/x.yaml) → bytes

    @property
    def digest(self) -> str:
        """SHA-256 over every file's name and bytes: equal digests, equal mappings."""
        hashed = hashlib.sha256()
        for name in sorted(self.content):
            raw = self.content[name]
            hashed.update(f"{name}\0{len(raw)}\0".encode() + raw)
        return hashed.hexdigest()


def read_files(directory: str | Path) -> Files:
    """The bytes of ``units.yaml``, ``codes.yaml`` (if there is one) and ``fieldmaps/*.yaml``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MappingError(f"the mappings folder {directory} does not exist.", hint="Set mappings.dir in the config.")
    names = [UNITS_FILE] + ([CODES_FILE] if (directory / CODES_FILE).exists() else [])
    folder = directory / FIELDMAPS_DIR
    names += [f"{FIELDMAPS_DIR}/{path.name}" for path in sorted(folder.glob("*.yaml"))] if folder.is_dir() else []
    content: dict[str, bytes] = {}
    for name in names:
        try:
            content[name] = (directory / name).read_bytes()
        except OSError as exc:
            raise MappingError(f"cannot read mapping file {directory / name}: {exc.strerror}.") from None
    return Files(directory, content)


def _text(name: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MappingError(f"mapping file {name} is not UTF-8 text (byte {exc.start + 1}).") from None


def _parse_yaml(name: str, raw: bytes) -> Any:
    try:
        return yaml.safe_load(_text(name, raw))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise MappingError(f"mapping file {name} is not valid YAML{where}.") from None


def _key_lines(text: str) -> dict[str, int]:
    """Dotted key (``deliver_case.body.text``) → its line (1-based) in the YAML text."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    lines: dict[str, int] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                dotted = f"{prefix}.{key.value}" if prefix else str(key.value)
                lines.setdefault(dotted, key.start_mark.line + 1)
                walk(value, dotted)

    walk(root, "")
    return lines


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
    return load_files(read_files(directory))


def load_files(files: Files) -> Mappings:
    """The mappings in ``files`` (see ``read_files``); raise ``MappingError`` on the first bad file."""
    data = _parse_yaml(UNITS_FILE, files.content[UNITS_FILE]) or {}
    try:
        parsed = _UnitsFile.model_validate(data)
    except ValidationError as exc:
        raise MappingError(_validation_message(UNITS_FILE, exc)) from None
    units = Units(
        (Unit(r.hsa_id, r.code, r.target, r.name, r.patient_board, r.valid_from, r.valid_to, tuple(r.answers_for),
              frozenset(c.value for c in r.citizen_attachments) if r.citizen_attachments is not None else None)
         for r in parsed.units),
        parsed.default_route.hsa_id if parsed.default_route else None,
        source=UNITS_FILE,
    )
    codes_data = (_parse_yaml(CODES_FILE, files.content[CODES_FILE]) or {}) if CODES_FILE in files.content else {}
    try:
        parsed_codes = _CodesFile.model_validate(codes_data)
    except ValidationError as exc:
        raise MappingError(_validation_message(CODES_FILE, exc)) from None
    codes = Codes(
        {t: {str(k): str(v) for k, v in table.items()} for t, table in parsed_codes.case_types.items()},
        {t: {str(k): str(v) for k, v in table.items()} for t, table in parsed_codes.statuses.items()},
    )
    fieldmaps: dict[str, FieldMap] = {}
    for name, raw in sorted(files.content.items()):
        if not name.startswith(FIELDMAPS_DIR + "/"):
            continue
        content = _parse_yaml(name, raw) or {}
        if not isinstance(content, dict):
            raise MappingError(f"{name}: expected a mapping of actions at the top level.")
        target = Path(name).stem
        fieldmaps[target] = FieldMap(target, content, name, codes, _key_lines(_text(name, raw)))
    return Mappings(files.directory, units, codes, fieldmaps, files.digest)


# -- the mappings in force, and reloading them ----------------------------------------------------------

#: A reload's outcome names at most this many problems (``gateway mappings check`` lists them all).
RELOAD_PROBLEMS_SHOWN = 5


def _iso(instant: dt.datetime) -> str:
    return instant.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Reload:
    """The outcome of one reload: the new files are in force (``ok``), or ``code`` and
    ``message`` say why the mappings that were in force stay (``GW073``, ``GW074``)."""

    ok: bool
    at: str  # UTC, ISO 8601
    digest: str | None  # ``Files.digest`` of what it read; None when the files could not be read
    code: str | None = None
    message: str | None = None

    @property
    def error(self) -> str | None:
        """``GW0xx what went wrong and what to do``, or None when the reload took."""
        return f"{self.code} {self.message}" if not self.ok else None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "at": self.at, "digest": self.digest, "error": self.error}


class SharedOutcome:
    """One small JSON value shared by a process and every process it forks after making it
    (an anonymous shared memory map): the gunicorn master writes the last reload's outcome,
    and the ``/health/ready`` and ops page of every worker process read it. A reader never
    takes half a write: a write makes the sequence number odd, then writes the bytes, then
    an even number with their length and CRC; the reader checks all three."""

    CAPACITY = 65536
    _HEADER = struct.Struct("<QII")  # sequence, length, crc32

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, self.CAPACITY)  # MAP_SHARED | MAP_ANONYMOUS: shared over fork

    def write(self, value: dict[str, Any]) -> None:
        raw = json.dumps(value, ensure_ascii=False).encode("utf-8")
        if len(raw) > self.CAPACITY - self._HEADER.size:
            raise ValueError(f"{len(raw)} bytes do not fit in {self.CAPACITY - self._HEADER.size}")
        sequence = self._HEADER.unpack_from(self._map, 0)[0]
        self._HEADER.pack_into(self._map, 0, sequence + 1, 0, 0)
        self._map[self._HEADER.size:self._HEADER.size + len(raw)] = raw
        self._HEADER.pack_into(self._map, 0, sequence + 2, len(raw), zlib.crc32(raw))

    def read(self) -> dict[str, Any] | None:
        """The last value written (by this process or the one it was forked from), or None."""
        for _ in range(1000):
            sequence, length, crc = self._HEADER.unpack_from(self._map, 0)
            if sequence == 0:
                return None
            if sequence % 2 == 0:
                raw = self._map[self._HEADER.size:self._HEADER.size + length]
                if self._HEADER.unpack_from(self._map, 0)[0] == sequence and zlib.crc32(raw) == crc:
                    value: dict[str, Any] = json.loads(raw)
                    return value
            time.sleep(0.0005)  # a write is under way (it takes microseconds)
        return None


class Holder:
    """The mappings in force, and how they are replaced.

    ``current`` is one immutable ``Mappings``: whoever takes it uses it for the whole of what
    it does (``gateway serve`` gives each server process one for its whole life), so a case
    is never routed half by old, half by new files. ``reload`` reads the files once, runs on
    them every check ``gateway check`` runs (``Mappings.problems``: the field-map vocabulary,
    complete code tables, …) and puts them in force only when nothing is wrong; otherwise
    the mappings in force stay and the outcome says why (``GW073``; ``GW074`` when the
    files changed while they were read). The last outcome is kept in a ``SharedOutcome``,
    so the processes forked from this one see it too.
    """

    def __init__(self, directory: str | Path, targets: Iterable[str] | None, *, now: Callable[[], dt.datetime]):
        """Load and check the files now; raise ``MappingError`` (a file that cannot be read or
        parsed) or ``ConfigError`` (the problems ``gateway check`` lists) if they are not sound."""
        self.directory = Path(directory)
        self.targets = list(targets) if targets is not None else None
        self._now = now
        self._outcome = SharedOutcome()
        maps = load(self.directory)
        problems = maps.problems(self.targets)
        if problems:
            raise ConfigError("the mappings have problems: " + " ".join(problems), hint="Run 'gateway check' for the list.")
        self._in_force = (maps, now())  # one reference: swapped whole, never field by field

    @property
    def current(self) -> Mappings:
        return self._in_force[0]

    @property
    def loaded_at(self) -> dt.datetime:
        return self._in_force[1]

    @property
    def last_reload(self) -> Reload | None:
        """The outcome of the last reload here or in the process this one was forked from."""
        found = self._outcome.read()
        return Reload(**found) if found else None

    def reload(self) -> Reload:
        """Read and check the files; put them in force only if nothing is wrong."""
        at = _iso(self._now())
        digest: str | None = None
        try:
            files = read_files(self.directory)
            digest = files.digest
            maps = load_files(files)
            problems = maps.problems(self.targets)
        except MappingError as exc:
            problems = [exc.message]
        if problems:
            outcome = self._refused(at, digest, MappingsNotReloaded(self._problems_text(problems)))
        elif self._digest_now() != digest:
            outcome = self._refused(at, digest, MappingsChanging(f"the mapping files in {self.directory} changed while they were read"))
        else:
            self._in_force = (maps, self._now())
            outcome = Reload(True, at, digest)
        self._outcome.write(dataclasses.asdict(outcome))
        return outcome

    def _digest_now(self) -> str | None:
        try:
            return read_files(self.directory).digest
        except MappingError:
            return None

    def _problems_text(self, problems: list[str]) -> str:
        shown = [p if len(p) <= 400 else p[:399] + "…" for p in problems[:RELOAD_PROBLEMS_SHOWN]]
        more = len(problems) - len(shown)
        return (f"the mapping files in {self.directory} were not loaded: " + " ".join(shown)
                + (f" (and {more} more problem(s))" if more else ""))

    def _refused(self, at: str, digest: str | None, why: MappingError) -> Reload:
        kept = f"the mappings loaded at {_iso(self.loaded_at)} (digest {self.current.digest[:12]}) stay in force"
        return Reload(False, at, digest, why.code, f"{why.message.rstrip('.')}; {kept}. {why.hint}")

    def on_disk(self) -> str | None:
        """The digest of the files in the folder now (None if they cannot be read): equal to
        ``current.digest`` unless they changed since they were put in force."""
        return self._digest_now()

    def pinned(self) -> InForce:
        """The set in force now, as a process that takes it uses it for its whole life."""
        maps, loaded_at = self._in_force
        return InForce(self, maps, loaded_at)

    def details(self) -> dict[str, Any]:
        return self.pinned().details()


@dataclass(frozen=True)
class InForce:
    """The mappings one process uses (``gateway.create_app`` takes them once), with when they
    were loaded and the holder's last reload: what ``/health/ready`` and the ops page show."""

    holder: Holder
    mappings: Mappings
    loaded_at: dt.datetime

    @property
    def directory(self) -> Path:
        return self.holder.directory

    def on_disk(self) -> str | None:
        return self.holder.on_disk()

    def details(self) -> dict[str, Any]:
        """``{loaded_at, digest, units, last_reload: {ok, at, digest, error} | None}``."""
        last = self.holder.last_reload
        return {"loaded_at": _iso(self.loaded_at), "digest": self.mappings.digest, "units": len(self.mappings.units),
                "last_reload": last.as_dict() if last else None}
