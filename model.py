"""Canonical shapes of the gateway: ``Case``, ``Message``, ``Attachment`` and identifiers.

Role: the one vocabulary every other module speaks, independent of any wire contract
(RIV-TA names stay in ``rivta``/``inbound``; provider names stay in ``mapping``). Also
the identifier checks: HSA-ids and personnummer/samordningsnummer.

May import: ``errors``, ``clock`` (the zone of 1177's timestamps).

Invariants: instances are immutable; a ``PersonId`` that exists has passed its check
digit and date check; ``repr`` and ``masked`` never show a person id in clear.
``safe_file_name`` and ``file_name_problem`` say what a plain file name is (no path, no
control or invisible formatting characters), for intake and the rules alike.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from enum import Enum

from stdnum import luhn
from stdnum.se import orgnr

from clock import SWEDEN
from errors import InvalidHsaId, InvalidPersonId

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


_HSA_RE = re.compile(r"^SE(\d{10})-[A-Za-z0-9]+$")
_PNR_IN_TEXT = re.compile(r"(?<!\d)(19|20)(\d{6})[-+]?(\d{4})(?!\d)")
_PNR10_IN_TEXT = re.compile(r"(?<!\d)(\d{2})(\d{4})[-+](\d{4})(?!\d)")  # YYMMDD-NNNC


def hsa_id(value: str, *, field: str = "hsaId") -> str:
    """Return ``value`` as a canonical (upper-case) HSA-id, or raise ``InvalidHsaId``.

    Syntax: ``SE`` + a valid 10-digit organisation number + ``-`` + letters/digits, at
    most 31 characters. HSA-ids compare case-insensitively, so the canonical form is
    upper case.
    """
    text = (value or "").strip()
    match = _HSA_RE.match(text.upper())
    if len(text) > 31 or not match or not orgnr.is_valid(match.group(1)):
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise InvalidHsaId(f"'{shown}' in {field} is not a valid HSA-id.", field=field)
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


def redact_person_ids(text: str) -> str:
    """Replace everything in ``text`` that looks like a personnummer (12 digits, or the
    10-digit ``YYMMDD-NNNC`` form) by its mask."""
    text = _PNR_IN_TEXT.sub(lambda m: m.group(1) + m.group(2)[:2] + "********", text)
    return _PNR10_IN_TEXT.sub(lambda m: m.group(1) + "****-****", text)


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

    id: str = field(repr=False)
    type: str = PERSONNUMMER_OID

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


@dataclass(frozen=True)
class Attachment:
    """A file attached to a case or message. ``data`` is held once, stored by hash."""

    file_name: str
    mime_type: str
    data: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class Contact:
    mobile: str | None = None
    email: str | None = None
    consent_to_share: bool = False


@dataclass(frozen=True)
class SubjectOfCare:
    person_id: PersonId
    name: str | None = None
    contact: Contact | None = None


@dataclass(frozen=True)
class Representative:
    person_id: PersonId
    name: str | None = None
    is_proxy: bool = False


@dataclass(frozen=True)
class ReplyPreference:
    wants_reply: bool
    channel: ReplyChannel


@dataclass(frozen=True)
class Complaint:
    """Complaint details. For a whole care process, ``event_date`` is its start date."""

    event_date: dt.date | None
    is_care_process: bool
    event_location_text: str | None = None
    care_unit_hsa_id: str | None = None


@dataclass(frozen=True)
class ChosenMedication:
    """A medication a citizen asks to renew (from the list GetMedicationList gave)."""

    prescription_id: str
    name: str | None = None


@dataclass(frozen=True)
class Medication:
    """A previously prescribed medication, as the provider's system lists it."""

    prescription_id: str
    name: str
    last_prescribed: dt.date
    strength: str | None = None


@dataclass(frozen=True)
class Receiver:
    hsa_id: str
    is_patient_board: bool = False


@dataclass(frozen=True)
class Case:
    """A citizen's case as 1177 sent it (or as registered from outside 1177)."""

    case_id: str
    case_type: CaseType
    receiver: Receiver
    subject_of_care: SubjectOfCare
    created_time: dt.datetime
    text: str
    subject: str | None = None
    representative: Representative | None = None
    reply_preference: ReplyPreference | None = None
    complaint: Complaint | None = None
    attachments: tuple[Attachment, ...] = ()
    medications: tuple[ChosenMedication, ...] = ()


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

    case_id: str
    message_id: str
    created_time: dt.datetime
    text: str
    direction: str = "in"
    kind: str = "FOLLOW_UP"
    subject: str | None = None
    attachments: tuple[Attachment, ...] = ()
    sender_hsa_id: str | None = None
    sender_name: str | None = None


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
    problems: tuple[Code, ...] = ()
    business_area: Code | None = None


# -- plain data (JSON) ↔ model ---------------------------------------------------------------------


def _plain(value: object) -> object:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def to_data(obj: Case | Message | StatusUpdate) -> dict:
    """The object as JSON-ready data. Attachments are described (name, type, hash, size),
    never carried: their bytes are stored once, by hash."""
    from dataclasses import fields, is_dataclass

    def convert(value: object) -> object:
        if isinstance(value, Attachment):
            return {"file_name": value.file_name, "mime_type": value.mime_type, "sha256": value.sha256, "size": value.size}
        if isinstance(value, PersonId):
            return {"id": value.id, "type": value.type}
        if is_dataclass(value) and not isinstance(value, type):
            return {f.name: convert(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return _plain(value)

    return convert(obj)  # type: ignore[return-value]  # (not asdict(): it deep-copies attachment bytes)


def _person(data: dict) -> PersonId:
    # data that was stored has been checked at intake; trust it without re-parsing
    return PersonId(data["id"], data["type"])


def case_from_data(data: dict, attachments: tuple[Attachment, ...] = ()) -> Case:
    """Rebuild a ``Case`` from ``to_data`` output and its attachments (in order)."""
    soc = data["subject_of_care"]
    rep = data.get("representative")
    pref = data.get("reply_preference")
    comp = data.get("complaint")
    contact = soc.get("contact")
    return Case(
        case_id=data["case_id"],
        case_type=CaseType(data["case_type"]),
        receiver=Receiver(data["receiver"]["hsa_id"], data["receiver"]["is_patient_board"]),
        subject_of_care=SubjectOfCare(
            _person(soc["person_id"]),
            soc.get("name"),
            Contact(contact.get("mobile"), contact.get("email"), contact.get("consent_to_share", False)) if contact else None,
        ),
        created_time=dt.datetime.fromisoformat(data["created_time"]),
        text=data["text"],
        subject=data.get("subject"),
        representative=Representative(_person(rep["person_id"]), rep.get("name"), rep.get("is_proxy", False)) if rep else None,
        reply_preference=ReplyPreference(pref["wants_reply"], ReplyChannel(pref["channel"])) if pref else None,
        complaint=(
            Complaint(
                dt.date.fromisoformat(comp["event_date"]) if comp.get("event_date") else None,
                comp["is_care_process"],
                comp.get("event_location_text"),
                comp.get("care_unit_hsa_id"),
            )
            if comp
            else None
        ),
        attachments=attachments,
        medications=tuple(ChosenMedication(m["prescription_id"], m.get("name")) for m in data.get("medications") or ()),
    )


def message_from_data(data: dict, attachments: tuple[Attachment, ...] = ()) -> Message:
    """Rebuild a ``Message`` from ``to_data`` output and its attachments (in order)."""
    return Message(
        case_id=data["case_id"],
        message_id=data["message_id"],
        created_time=dt.datetime.fromisoformat(data["created_time"]),
        text=data["text"],
        direction=data.get("direction", "in"),
        kind=data.get("kind", "FOLLOW_UP"),
        subject=data.get("subject"),
        attachments=attachments,
        sender_hsa_id=data.get("sender_hsa_id"),
        sender_name=data.get("sender_name"),
    )


def status_from_data(data: dict) -> StatusUpdate:
    """Rebuild a ``StatusUpdate`` from ``to_data`` output."""
    area = data.get("business_area")
    return StatusUpdate(
        case_id=data["case_id"],
        status=CaseStatus(data["status"]),
        care_unit_hsa_id=data.get("care_unit_hsa_id"),
        problems=tuple(Code(p["code"], p["code_system"], p.get("display_name")) for p in data.get("problems") or ()),
        business_area=Code(area["code"], area["code_system"], area.get("display_name")) if area else None,
    )
