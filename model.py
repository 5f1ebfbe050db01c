"""Canonical shapes of the gateway: ``Case``, ``Message``, ``Attachment`` and identifiers.

Role: the one vocabulary every other module speaks, independent of any wire contract
(RIV-TA names stay in ``rivta``/``inbound``; provider names stay in ``mapping``). Also
the identifier checks: HSA-ids and personnummer/samordningsnummer, and the one
description of the case's fields: each field gives an example and when it is present
(``about``), ``describe`` reads them with the types (what a field map may read).

May import: ``errors``, ``clock`` (the zone of 1177's timestamps).

Invariants: instances are immutable; a ``PersonId`` that exists has passed its check
digit and date check; ``repr`` and ``masked`` never show a person id in clear.
``person_ids_in`` returns ids found in a text as bare digits: for comparison only, never
for a log or an answer. ``safe_file_name`` and ``file_name_problem`` say what a plain file name is (no path, no
control or invisible formatting characters), for intake and the rules alike.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
import typing
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from stdnum import luhn
from stdnum.se import orgnr

from clock import SWEDEN
from errors import InvalidHsaId, InvalidPersonId, InvalidValue, redact_person_ids  # noqa: F401 - re-exported: the masking of ids

T = TypeVar("T")

#: 1177's timestamps on the wire (TimeStampType, DateType) are Swedish local time.
WIRE_ZONE = SWEDEN

PERSONNUMMER_OID = "1.2.752.129.2.1.3.1"
SAMORDNINGSNUMMER_OID = "1.2.752.129.2.1.3.3"


class CaseType(str, Enum):
    """Case type codes of the 1177 contracts."""

    COMPLAINT = "COMPLAINT"
    QUESTION = "QUESTION"
    PRESCRIPTION_RENEWAL = "PRESCRIPTION_RENEWAL"
    BOOKING = "BOOKING"
    OTHER = "OTHER"


class ReplyChannel(str, Enum):
    INKORG = "INKORG"
    TELEFON = "TELEFON"
    BREV = "BREV"


def about(example: object, when: str | None = None, *, wire: str | None = None, code: bool = False,
          hsa: bool = False, **kwargs: Any) -> Any:
    """A dataclass field that describes itself: an ``example`` of its value (as ``to_data``
    writes it) and ``when`` it is present, if not always; ``wire``: its name on the 1177 wire
    when that is not the field's name in camelCase (a list's items are named one by one:
    ``attachment``); ``code``: an identifier or code, read without surrounding blanks (an
    empty one is absent); ``hsa``: an HSA-id, checked when read from the wire. ``describe``,
    ``build`` and ``to_wire`` read them; they are the one description of the case's fields
    (``gateway mappings fields`` prints it)."""
    return field(metadata={"example": example, "when": when, "wire": wire, "code": code or hsa, "hsa": hsa}, **kwargs)


_HSA_RE = re.compile(r"^SE(\d{10})-[A-Za-z0-9]+$")


def hsa_id(value: str, *, field: str = "hsaId") -> str:
    """Return ``value`` as a canonical (upper-case) HSA-id, or raise ``InvalidHsaId``.

    Syntax: ``SE`` + a valid 10-digit organisation number + ``-`` + letters/digits, at
    most 31 characters. HSA-ids compare case-insensitively, so the canonical form is
    upper case.
    """
    text = (value or "").strip()
    canonical = _canonical_hsa_id(text)
    if canonical is None:
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise InvalidHsaId(f"'{shown}' in {field} is not a valid HSA-id.", field=field)
    return canonical


@functools.lru_cache(maxsize=4096)
def _canonical_hsa_id(text: str) -> str | None:
    """``text`` upper-cased if it is an HSA-id, else None (a gateway meets the same few
    hundred units' ids again and again: their organisation numbers are checked once)."""
    match = _HSA_RE.match(text.upper())
    if len(text) > 31 or not match or not orgnr.is_valid(match.group(1)):
        return None
    return text.upper()


def is_hsa_id(value: str) -> bool:
    try:
        hsa_id(value)
    except InvalidHsaId:
        return False
    return True


def mask_person_id(number: str) -> str:
    """A person id as it may appear in logs and messages: birth year only."""
    digits = re.sub(r"\D", "", number or "")
    return (digits[:4] if len(digits) >= 4 else "") + "********"


def file_name_problem(name: str) -> str | None:
    """Why ``name`` is not a plain file name, or None: a path (``/``, ``\\``, ``..``), a
    control character (CR, LF, NUL, …) or an invisible formatting character (such as the
    right-to-left override U+202E, which makes ``gpj.exe`` look like ``exe.jpg``)."""
    if "/" in name or "\\" in name or name.strip() in (".", ".."):
        return "is a path, not a file name ('/', '\\' or '..')"
    for char in name:
        category = unicodedata.category(char)
        if category == "Cc":
            return f"contains the control character U+{ord(char):04X}"
        if category in ("Cf", "Zl", "Zp"):
            return f"contains the invisible formatting character U+{ord(char):04X}"
    return None


def safe_file_name(name: str, *, default: str = "attachment") -> str:
    """``name`` made a plain file name: its last path component, without control and
    formatting characters, at most 255 characters (``default`` when nothing is left)."""
    name = re.split(r"[/\\]", name or "")[-1]
    name = "".join(c for c in name if unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp", "Cs"))
    name = name.strip()
    if name in ("", ".", ".."):
        return default
    return name[:255]


@dataclass(frozen=True)
class PersonId:
    """A checked personnummer or samordningsnummer (12 digits, ``YYYYMMDDNNNC``)."""

    id: str = about("191212121212", repr=False)
    type: str = about(PERSONNUMMER_OID, default=PERSONNUMMER_OID)  # or SAMORDNINGSNUMMER_OID

    @classmethod
    def parse(cls, number: str, type_oid: str, *, field: str = "personId") -> PersonId:
        """Check ``number`` against ``type_oid`` and return it, or raise ``InvalidPersonId``.

        Checks: 12 digits, a real date (day − 60 for a samordningsnummer), a Luhn check
        digit over digits 3–12, and a type OID that matches the kind of number.
        """
        digits = (number or "").strip()
        if not re.fullmatch(r"\d{12}", digits):
            raise InvalidPersonId(f"{field}: a person id must be 12 digits (YYYYMMDDNNNC).", field=field)
        if type_oid not in (PERSONNUMMER_OID, SAMORDNINGSNUMMER_OID):
            raise InvalidPersonId(
                f"{field}: type '{type_oid[:40]}' is neither personnummer ({PERSONNUMMER_OID}) "
                f"nor samordningsnummer ({SAMORDNINGSNUMMER_OID}).",
                field=field,
            )
        day = int(digits[6:8])
        is_coordination = day > 60
        if is_coordination != (type_oid == SAMORDNINGSNUMMER_OID):
            kind = "samordningsnummer" if is_coordination else "personnummer"
            raise InvalidPersonId(f"{field}: the number is a {kind} but its type OID says otherwise.", field=field)
        try:
            dt.date(int(digits[0:4]), int(digits[4:6]), day - 60 if is_coordination else day)
        except ValueError:
            raise InvalidPersonId(f"{field}: the number {mask_person_id(digits)} has no valid date.", field=field) from None
        if not luhn.is_valid(digits[2:]):
            raise InvalidPersonId(f"{field}: the check digit of {mask_person_id(digits)} is wrong.", field=field)
        return cls(digits, type_oid)

    @property
    def is_samordningsnummer(self) -> bool:
        return self.type == SAMORDNINGSNUMMER_OID

    @property
    def birth_date(self) -> dt.date:
        day = int(self.id[6:8])
        return dt.date(int(self.id[0:4]), int(self.id[4:6]), day - 60 if day > 60 else day)

    @property
    def masked(self) -> str:
        return mask_person_id(self.id)

    def age_on(self, day: dt.date) -> int:
        """Whole years of age on ``day`` (a 29 February birthday counts from 1 March in other years)."""
        born = self.birth_date
        return day.year - born.year - ((day.month, day.day) < (born.month, born.day))

    def __repr__(self) -> str:
        return f"PersonId({self.masked}, {self.type})"


#: A personnummer or samordningsnummer written in a text: 12 digits (``YYYYMMDDNNNC``) or
#: 10 (``YYMMDDNNNC``), with or without ``-``/``+`` before the last four.
_ID_IN_TEXT = re.compile(r"(?<!\d)(1[89]|20)?(\d{6})[-+]?(\d{4})(?!\d)")


def _real_birth_date(year: int, month: int, day: int) -> bool:
    try:
        dt.date(year, month, day - 60 if day > 60 else day)
    except ValueError:
        return False
    return True


def person_ids_in(text: str) -> list[str]:
    """Every valid personnummer or samordningsnummer written in ``text`` (a valid date,
    day + 60 for a samordningsnummer, and a valid Luhn check digit), each as its last ten
    digits ``YYMMDDNNNC`` (what identifies the person in both forms). A 10-digit form is
    valid when its date is real in the 1900s or the 2000s. Never log what this returns."""
    found = []
    for match in _ID_IN_TEXT.finditer(text or ""):
        century, date, tail = match.group(1), match.group(2), match.group(3)
        core = date + tail
        yy, month, day = int(date[0:2]), int(date[2:4]), int(date[4:6])
        years = [int(century) * 100 + yy] if century else [1900 + yy, 2000 + yy]
        if any(_real_birth_date(y, month, day) for y in years) and luhn.is_valid(core):
            found.append(core)
    return found


@dataclass(frozen=True)
class GuardFinding:
    """What the wrong-patient guard (rule 14) found in one place of a message to the citizen:
    ``where`` is ``body``, ``subject`` or an attachment's file name (``attachment`` its index,
    ``page`` its 1-based PDF page); ``kind`` is ``foreign_id`` (a valid id that is not the
    citizen's nor the representative's; ``count`` of them, never the ids) or ``not_checked``
    (a PDF whose text cannot be read)."""

    where: str
    kind: Literal["foreign_id", "not_checked"]
    page: int | None = None
    attachment: int | None = None
    count: int = 1

    @property
    def place(self) -> str:
        """Where, as a person reads it: ``body``, or ``svar.pdf page 2``."""
        return f"{self.where} page {self.page}" if self.page is not None else self.where

    def to_data(self) -> dict[str, Any]:
        return {"where": self.where, "kind": self.kind, "page": self.page, "attachment": self.attachment,
                "count": self.count}


@dataclass(frozen=True)
class GuardOutcome:
    """The wrong-patient guard's verdict on a message: ``held`` until someone confirms it."""

    held: bool = False
    findings: tuple[GuardFinding, ...] = ()
    checked: bool = True  # False: the guard did not run (a message stored before it existed)

    @property
    def foreign(self) -> tuple[GuardFinding, ...]:
        return tuple(f for f in self.findings if f.kind == "foreign_id")

    @property
    def not_checked(self) -> tuple[GuardFinding, ...]:
        return tuple(f for f in self.findings if f.kind == "not_checked")

    def to_data(self) -> dict[str, Any]:
        return {"held": self.held, "findings": [f.to_data() for f in self.findings]}

    @classmethod
    def from_data(cls, data: dict[str, Any] | None) -> GuardOutcome:
        if not data:
            return cls(checked=False)
        return cls(bool(data.get("held")), tuple(GuardFinding(**f) for f in data.get("findings", [])))


@dataclass(frozen=True)
class Attachment:
    """A file attached to a case or message. ``data`` is held once, stored by hash."""

    file_name: str = about("intyg.pdf")
    mime_type: str = about("application/pdf")  # or image/gif, image/jpeg, image/png
    data: bytes = about("(the file's bytes; transform: base64 for a JSON body)", repr=False)

    #: Read from the content, not sent by 1177: written by ``to_data`` beside the fields.
    computed: ClassVar[tuple[tuple[str, type, object], ...]] = (
        ("sha256", str, "9f2b5c1e…(64 hex digits)"),
        ("size", int, 48213),
    )

    @functools.cached_property
    def sha256(self) -> str:  # worked out once: the JSON content and the store both need it
        return hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class Contact:
    mobile: str | None = about("+46701234567", "when the citizen gave it", default=None)
    email: str | None = about("tolvan@example.org", "when the citizen gave it", default=None)
    consent_to_share: bool = about(True, default=False)


@dataclass(frozen=True)
class SubjectOfCare:
    person_id: PersonId = about(None)
    name: str | None = about("Tolvan Tolvansson", "when 1177 sends it", default=None)
    contact: Contact | None = about(None, "when the citizen gave any", default=None)


@dataclass(frozen=True)
class Representative:
    person_id: PersonId = about(None)
    name: str | None = about("Tolva Tolvansson", "when 1177 sends it", default=None)
    is_proxy: bool = about(True, default=False)


@dataclass(frozen=True)
class ReplyPreference:
    wants_reply: bool = about(True)
    channel: ReplyChannel = about("INKORG")


@dataclass(frozen=True)
class Complaint:
    """Complaint details. For a whole care process, ``event_date`` is its start date."""

    event_date: dt.date | None = about("2026-11-16")  # for a whole care process: its start date
    is_care_process: bool = about(False)
    event_location_text: str | None = about("Mottagningen, plan 2", "when the citizen named a place", default=None)
    care_unit_hsa_id: str | None = about("SE5566778899-KLIN1", "when the citizen (or a patient board) named the unit", default=None,
                                         code=True)


@dataclass(frozen=True)
class ChosenMedication:
    """A medication a citizen asks to renew (from the list GetMedicationList gave)."""

    prescription_id: str = about("RX-1001", code=True)
    name: str | None = about("Enalapril 10 mg", "when 1177 sends it", default=None)


@dataclass(frozen=True)
class Medication:
    """A previously prescribed medication, as the provider's system lists it."""

    prescription_id: str
    name: str
    last_prescribed: dt.date
    strength: str | None = None


@dataclass(frozen=True)
class Receiver:
    hsa_id: str = about("SE5566778899-KLIN1", hsa=True)
    is_patient_board: bool = about(False, default=False)


@dataclass(frozen=True)
class Case:
    """A citizen's case as 1177 sent it (or as registered from outside 1177)."""

    case_id: str = about("1177-C-0001", code=True)
    case_type: CaseType = about("COMPLAINT")
    receiver: Receiver = about(None)
    subject_of_care: SubjectOfCare = about(None)
    created_time: dt.datetime = about("2026-11-26T10:15:00+01:00")
    text: str = about("Jag vill lämna synpunkter på mitt besök den 16 november.")
    subject: str | None = about("Bemötande vid besök", "when the citizen gave one", default=None)
    representative: Representative | None = about(
        None, "when someone acts for the citizen (a guardian, a proxy)", default=None)
    reply_preference: ReplyPreference | None = about(None, "when 1177 sends it", default=None)
    complaint: Complaint | None = about(None, "COMPLAINT cases only", default=None)
    attachments: tuple[Attachment, ...] = about(None, "when the citizen attached files (at most 5)", default=(),
                                                wire="attachment")
    medications: tuple[ChosenMedication, ...] = about(None, "PRESCRIPTION_RENEWAL cases only", default=(),
                                                      wire="chosenMedication")


class MessageKind(str, Enum):
    """What a message from the care side to the citizen is (AddMessage ``kind``)."""

    CONFIRMATION = "CONFIRMATION"
    PARTIAL_REPLY = "PARTIAL_REPLY"
    QUESTION = "QUESTION"
    FINAL_REPLY = "FINAL_REPLY"
    INFO = "INFO"


class CaseStatus(str, Enum):
    RECEIVED = "RECEIVED"
    IN_PROGRESS = "IN_PROGRESS"
    CLOSED = "CLOSED"


class Channel(str, Enum):
    """How a case registered outside 1177 started."""

    TELEFON = "TELEFON"
    BREV = "BREV"
    BESOK = "BESOK"
    OTHER = "OTHER"


PROBLEM_CODE_SYSTEM = "1.2.752.129.5.1.22"  # huvud- och delproblem
BUSINESS_AREA_CODE_SYSTEM = "1.2.752.129.5.1.21"  # verksamhetsområde


@dataclass(frozen=True)
class Message:
    """A message in a case's dialog. ``direction`` is ``in`` (from the citizen, kind
    FOLLOW_UP) or ``out`` (from the care side, a ``MessageKind``, naming its sending unit)."""

    case_id: str = about("1177-C-0001", code=True)
    message_id: str = about("1177-M-0001", code=True)
    created_time: dt.datetime = about("2026-11-28T08:30:00+01:00")
    text: str = about("Här kommer svaret på er fråga.")
    direction: str = about("in", default="in")  # 'in': from the citizen; 'out': from the care side
    kind: str = about("FOLLOW_UP", default="FOLLOW_UP")  # a citizen's message; MessageKind for the care side's
    subject: str | None = about("Svar på fråga", "when the citizen gave one", default=None)
    attachments: tuple[Attachment, ...] = about(None, "when the citizen attached files (at most 5)", default=(),
                                                wire="attachment")
    sender_hsa_id: str | None = about("SE5566778899-KLIN1", "never from a citizen (the care side's messages only)", default=None)
    sender_name: str | None = about("Demokliniken", "never from a citizen (the care side's messages only)", default=None)
    #: the id the provider's system chose for its message (its ``messageId``); the gateway's
    #: own ``message_id`` is then derived from it, scoped to the target and the case
    provider_message_id: str | None = about("svar-2026-0042", "the care side's messages, when its system chose the id",
                                            default=None)
    #: who at the care side sends it (rule 13): RECEIVER (ärendemottagare) or HANDLER (ärendehanterare)
    sent_by_role: str | None = about("HANDLER", "the care side's messages, when its system says who sends it", default=None)
    sent_by_name: str | None = about("Dr Anna Läkare", "the care side's messages, when its system names the sender",
                                     default=None)


@dataclass(frozen=True)
class Code:
    """A coded value (CVType): code, code system OID, display name."""

    code: str
    code_system: str
    display_name: str | None = None


@dataclass(frozen=True)
class StatusUpdate:
    """A status change of a case, from the care side to 1177."""

    case_id: str
    status: CaseStatus
    care_unit_hsa_id: str | None = None
    problems: tuple[Code, ...] = field(default=(), metadata={"wire": "problem"})
    business_area: Code | None = None


# -- plain data (JSON) ↔ model ---------------------------------------------------------------------


def _plain(value: object) -> object:
    if value is None or type(value) in (str, int, float, bool):  # (not isinstance: a str Enum is a str)
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}


def _field_names(cls: type) -> tuple[str, ...] | None:
    """The fields of a dataclass of this module, in order (None for any other type)."""
    names = _FIELD_NAMES.get(cls, ())
    if names == ():
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls)) if is_dataclass(cls) else None
    return names


def to_data(obj: Case | Message | StatusUpdate) -> dict:
    """The object as JSON-ready data. Attachments are described (name, type, hash, size),
    never carried: their bytes are stored once, by hash."""

    def convert(value: object) -> object:
        kind = type(value)
        if kind is Attachment:
            attachment = typing.cast(Attachment, value)
            return {"file_name": attachment.file_name, "mime_type": attachment.mime_type,
                    **{name: getattr(attachment, name) for name, _, _ in Attachment.computed}}
        if kind is PersonId:
            person = typing.cast(PersonId, value)
            return {"id": person.id, "type": person.type}
        names = _field_names(kind)
        if names is not None:
            return {name: convert(getattr(value, name)) for name in names}
        if kind is tuple or kind is list:
            return [convert(v) for v in typing.cast(Sequence[object], value)]
        return _plain(value)

    return convert(obj)  # type: ignore[return-value]  # (not asdict(): it deep-copies attachment bytes)


def case_from_data(data: dict[str, Any], attachments: tuple[Attachment, ...] = ()) -> Case:
    """Rebuild a ``Case`` from ``to_data`` output and its attachments (in order)."""
    return from_data(Case, data, attachments=attachments)


def message_from_data(data: dict[str, Any], attachments: tuple[Attachment, ...] = ()) -> Message:
    """Rebuild a ``Message`` from ``to_data`` output and its attachments (in order)."""
    return from_data(Message, data, attachments=attachments)


def status_from_data(data: dict[str, Any]) -> StatusUpdate:
    """Rebuild a ``StatusUpdate`` from ``to_data`` output."""
    return from_data(StatusUpdate, data)


# -- the one description, read and written: the 1177 wire, stored data -----------------------------


class Fields(Protocol):
    """Where a model object's values are read from: an element of a 1177 request, or the
    data ``to_data`` stored. ``where`` names the place in error messages."""

    @property
    def where(self) -> str: ...

    def value(self, name: str) -> object | None: ...

    def child(self, name: str) -> Fields | None: ...

    def children(self, name: str) -> Sequence[Fields]: ...


@dataclass(frozen=True)
class Reading:
    """How a source spells names (the fields' own, or their wire names) and writes the values
    that are not plain text: flags, dates, instants, person ids, files."""

    wire: bool
    flag: Callable[[object], bool]
    day: Callable[[object, str], dt.date]
    instant: Callable[[object, str], dt.datetime]
    person: Callable[[Fields], PersonId]
    attachment: Callable[[Fields], Attachment]
    check_hsa: bool = False


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def wire_name(item: Field[Any]) -> str:
    """A field's name on the 1177 wire (and in the provider API): its own in camelCase,
    unless ``about(wire=…)`` names it."""
    return item.metadata.get("wire") or _camel(item.name)


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@dataclass(frozen=True)
class _Slot:
    """How ``build`` reads one field of a class: worked out once per class, not per read."""

    item: Field[Any]
    wire: str
    kind: Literal["list", "object", "value"]
    annotation: Any  # the type without its None; for a list, the items' type
    optional: bool  # None is a value of the field's type


@functools.cache
def _slots(cls: Any) -> tuple[_Slot, ...]:
    hints = _hints(cls)
    found = []
    for item in fields(cls):
        annotation = _optional(hints[item.name])
        optional = type(None) in typing.get_args(hints[item.name])
        if typing.get_origin(annotation) is tuple:
            found.append(_Slot(item, wire_name(item), "list", typing.get_args(annotation)[0], optional))
        elif annotation is PersonId or annotation is Attachment or is_dataclass(annotation):
            found.append(_Slot(item, wire_name(item), "object", annotation, optional))
        else:
            found.append(_Slot(item, wire_name(item), "value", annotation, optional))
    return tuple(found)


def build(cls: type[T], source: Fields, reading: Reading, **given: Any) -> T:
    """A ``cls`` (a dataclass of this module) read from ``source`` field by field, as the
    fields describe themselves: by their name (or wire name), converted by their type;
    ``given``: values already at hand (stored files). A required value that is missing is
    ``InvalidValue`` naming its place."""
    values: dict[str, Any] = {}
    for slot in _slots(typing.cast(Any, cls)):
        item = slot.item
        if item.name in given:
            values[item.name] = given[item.name]
            continue
        name = slot.wire if reading.wire else item.name
        if slot.kind == "list":
            values[item.name] = tuple(_item(slot.annotation, child, reading) for child in source.children(name))
            continue
        if slot.kind == "object":
            child = source.child(name)
            if child is not None:
                values[item.name] = _item(slot.annotation, child, reading)
            elif item.default is MISSING:
                where = f"{source.where}/{name}"
                raise InvalidValue(f"{where} is missing.", field=where)
            continue
        raw = source.value(name)
        if raw == "" and slot.optional and slot.annotation in (dt.date, dt.datetime):
            raw = None  # an empty date is no date
        if raw is not None:
            values[item.name] = _scalar(slot.annotation, raw, source, name, item, reading)
        elif item.default is MISSING:
            if not slot.optional:
                where = f"{source.where}/{name}"
                raise InvalidValue(f"{where} is missing.", field=where)
            values[item.name] = None  # an optional value without a default (a complaint's event date)
    return cls(**values)


def _item(cls: Any, source: Fields, reading: Reading) -> Any:
    if cls is PersonId:
        return reading.person(source)
    if cls is Attachment:
        return reading.attachment(source)
    return build(cls, source, reading)


def _scalar(annotation: Any, raw: object, source: Fields, name: str, item: Field[Any], reading: Reading) -> object:
    """``raw`` as the field's type; ``source`` and ``name`` place it in an error message."""
    if annotation is str and not item.metadata.get("code"):
        return str(raw)  # most values: plain text
    if annotation is bool:
        return reading.flag(raw)
    if annotation is dt.datetime:
        return reading.instant(raw, f"{source.where}/{name}")
    if annotation is dt.date:
        return reading.day(raw, f"{source.where}/{name}")
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return annotation(str(raw).strip())
    text = str(raw)
    if item.metadata.get("code"):
        text = text.strip()
        if item.metadata.get("hsa") and reading.check_hsa:
            return hsa_id(text, field=f"{source.where}/{name}")
        return text or (None if item.default is None else text)
    return text


class _Stored:
    """The data ``to_data`` wrote, as ``Fields``."""

    def __init__(self, data: Mapping[str, Any], where: str = ""):
        self.data, self.where = data, where

    def value(self, name: str) -> object | None:
        return self.data.get(name)

    def child(self, name: str) -> Fields | None:
        found = self.data.get(name)
        return _Stored(found, f"{self.where}/{name}") if isinstance(found, Mapping) else None

    def children(self, name: str) -> list[Fields]:
        return [_Stored(item, f"{self.where}/{name}[{n}]") for n, item in enumerate(self.data.get(name) or (), start=1)]


#: Stored data: written by ``to_data`` and checked at intake, so it is trusted (no re-parse).
STORED = Reading(
    wire=False,
    flag=bool,
    day=lambda raw, _where: dt.date.fromisoformat(str(raw)),
    instant=lambda raw, _where: dt.datetime.fromisoformat(str(raw)),
    person=lambda source: PersonId(str(source.value("id")), str(source.value("type"))),
    attachment=lambda source: Attachment(str(source.value("file_name")), str(source.value("mime_type")), b""),
)


def from_data(cls: type[T], data: Mapping[str, Any], **given: Any) -> T:
    """A ``cls`` rebuilt from the data ``to_data`` wrote (``given``: its files, in order)."""
    return build(cls, _Stored(data), STORED, **given)


def to_wire(obj: Any, *, day: Callable[[dt.date], object], instant: Callable[[dt.datetime], object],
            omit: frozenset[str] = frozenset(), prefix: str = "") -> dict[str, Any]:
    """``obj`` (a dataclass of this module) as the 1177 wire names it, field by field (a
    zeep dict): ``day``/``instant`` write dates and times; ``omit``: dotted field paths
    (``subject_of_care.contact``) that are not sent."""
    out: dict[str, Any] = {}
    for item in fields(obj):
        path = f"{prefix}{item.name}"
        if path in omit:
            continue
        out[wire_name(item)] = _wire_value(getattr(obj, item.name), day=day, instant=instant, omit=omit, prefix=f"{path}.")
    return out


def _wire_value(value: Any, *, day: Callable[[dt.date], object], instant: Callable[[dt.datetime], object],
                omit: frozenset[str], prefix: str) -> object:
    if isinstance(value, Attachment):
        return {"fileName": value.file_name, "mimeType": value.mime_type, "data": value.data}
    if is_dataclass(value) and not isinstance(value, type):
        return to_wire(value, day=day, instant=instant, omit=omit, prefix=prefix)
    if isinstance(value, (list, tuple)):
        return [_wire_value(v, day=day, instant=instant, omit=omit, prefix=prefix) for v in value]
    if isinstance(value, dt.datetime):
        return instant(value)
    if isinstance(value, dt.date):
        return day(value)
    if isinstance(value, Enum):
        return value.value
    return value


# -- the description of the fields: what a field map can read -----------------------------------------


@dataclass(frozen=True)
class FieldDoc:
    """One path into the data ``to_data`` writes: ``case.complaint.event_date``. Items of a
    list are ``case.attachments[].file_name``."""

    path: str
    type: str
    example: object = None
    when: str | None = None
    values: tuple[str, ...] = ()  # the codes a ``code`` may be


_TYPE_NAMES: dict[object, str] = {
    str: "text", bool: "true/false", int: "number", float: "number", bytes: "bytes",
    dt.date: "date (ISO)", dt.datetime: "date-time (ISO, with offset)",
}


def _type_name(annotation: object) -> str:
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "code"
    return _TYPE_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _optional(annotation: object) -> object:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if len(args) == 1 and len(typing.get_args(annotation)) == 2 else annotation


def describe(cls: Any, prefix: str, when: str | None = None) -> list[FieldDoc]:
    """Every path under ``prefix`` into a dataclass of this module as ``to_data`` writes it,
    from the fields themselves (their types, and the examples ``about`` gave them): an
    object or a list first, then what is inside it. A field says when it is present, or
    has its parent's condition (``when``)."""
    hints = typing.get_type_hints(cls)
    found: list[FieldDoc] = []
    for item in fields(cls):
        annotation = _optional(hints[item.name])
        path = f"{prefix}.{item.name}" if prefix else item.name
        note = item.metadata.get("when") or when
        if typing.get_origin(annotation) is tuple:
            inner = typing.get_args(annotation)[0]
            found.append(FieldDoc(path, "list", None, note))
            if is_dataclass(inner):
                found += describe(inner, f"{path}[]", note)
        elif isinstance(annotation, type) and is_dataclass(annotation):
            found.append(FieldDoc(path, "object", None, note))
            found += describe(annotation, path, note)
        else:
            values = tuple(m.value for m in annotation) if isinstance(annotation, type) and issubclass(annotation, Enum) else ()
            found.append(FieldDoc(path, _type_name(annotation), item.metadata.get("example"), note, values))
    for name, kind, example in getattr(cls, "computed", ()):
        found.append(FieldDoc(f"{prefix}.{name}", _type_name(kind), example, when))
    return found
