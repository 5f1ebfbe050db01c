"""What a provider system says back: messages, status changes and external cases, from
plain JSON-like data to checked model objects.

Role: the one path shared by the provider REST API (``api``) and polling (``worker``), so
that a reply is checked the same way however it arrives. Maps the provider's unit code to
the HSA-id (every message names its sending unit), the provider's status codes to 1177's,
and applies 1177's rules (attachments, closing codes, the wrong-patient guard). Pure: no I/O.

May import: ``model``, ``rules``, ``errors``. The units and code tables are handed in
(``mapping.Units`` and ``mapping.Codes`` provide them), and so is the clock: every date a
rule is about is today's Swedish date (``Clock.day``), as at intake.

Invariants: a function returns a model object that passed every rule, or raises a
``GatewayError`` (``BadJson`` for a wrong shape, a ``RuleViolation`` for a broken rule)
whose ``field`` names the JSON field.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

import rules
from errors import (
    AttachmentTooLarge,
    BadJson,
    ExternalAttachments,
    InvalidValue,
    MappingError,
    SenderNotAllowed,
    UnmappedUnit,
)
from model import (
    BUSINESS_AREA_CODE_SYSTEM,
    PROBLEM_CODE_SYSTEM,
    Attachment,
    Case,
    CaseStatus,
    CaseType,
    Channel,
    Code,
    Complaint,
    GuardOutcome,
    Message,
    MessageKind,
    PersonId,
    Receiver,
    StatusUpdate,
    SubjectOfCare,
    is_hsa_id,
)

if TYPE_CHECKING:  # the time is handed in (``clock.Clock``): dates here are Swedish dates
    from clock import Clock


class UnitLookup(Protocol):
    def unit(self, hsa: str, on: dt.date) -> Any: ...

    def by_code(self, target: str, code: str, on: dt.date) -> Any: ...

    def may_sign(self, sender_hsa: str, case_unit_hsa: str, on: dt.date) -> bool: ...


class CodeLookup(Protocol):
    def lookup(self, table: str, target: str, value: str) -> str: ...


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...] = str) -> Any:
    if key not in data or data[key] is None:
        raise BadJson(f"'{key}' is required.", field=key)
    value = data[key]
    if not isinstance(value, kind):
        raise BadJson(f"'{key}' must be a {getattr(kind, '__name__', 'value')}.", field=key)
    return value


def _optional(data: dict[str, Any], key: str, kind: type = str) -> Any:
    value = data.get(key)
    if value is not None and not isinstance(value, kind):
        raise BadJson(f"'{key}' must be a {kind.__name__}.", field=key)
    return value


def _enum(enum: Any, value: str, field: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise BadJson(f"'{field}' must be one of {allowed}, not '{str(value)[:40]}'.", field=field) from None


def sender_hsa_id(units: UnitLookup, target: str, sender: str, today: dt.date) -> tuple[str, str | None]:
    """The HSA-id (and unit name) of a provider's sending unit, given as its code or HSA-id."""
    if is_hsa_id(sender):
        unit = units.unit(sender, today)
        if unit is None or unit.target != target:
            raise UnmappedUnit(f"senderUnit {sender} is not a unit of your target in units.yaml.", field="senderUnit")
        return unit.hsa_id, unit.name
    try:
        unit = units.by_code(target, sender, today)
    except MappingError:
        raise UnmappedUnit(f"senderUnit '{sender[:40]}' maps to no HSA-id (units.yaml, target '{target}').",
                           field="senderUnit") from None
    return unit.hsa_id, unit.name


def attachments(data: dict[str, Any], *, max_bytes: int) -> tuple[Attachment, ...]:
    items = data.get("attachments") or data.get("attachment") or []
    if not isinstance(items, list):
        raise BadJson("'attachments' must be a list.", field="attachments")
    found = []
    for index, item in enumerate(items):
        where = f"attachments[{index}]"
        if not isinstance(item, dict):
            raise BadJson(f"{where} must be an object.", field=where)
        encoded = _require(item, "data", (str, bytes))
        if isinstance(encoded, bytes):  # already decoded (a SOAP base64Binary field, by zeep)
            content = encoded
        else:
            if len(encoded) > (max_bytes * 4) // 3 + 8:  # refuse before decoding what is surely too big
                raise AttachmentTooLarge(f"{where} is over {max_bytes} bytes.", field=where)
            try:
                content = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise BadJson(f"{where}.data is not base64.", field=f"{where}.data") from None
        found.append(Attachment(_require(item, "fileName").strip(), _require(item, "mimeType").strip(), content))
    return tuple(found)


def reply(
    data: dict[str, Any],
    *,
    case_id: str,
    target: str,
    units: UnitLookup,
    clock: Clock,
    case_unit: str | None = None,
    citizen_started: bool = True,
    max_attachments: int = rules.MAX_CARE_ATTACHMENTS,
    max_attachment_bytes: int = rules.MAX_ATTACHMENT_BYTES,
) -> Message:
    """A message to the citizen from ``{kind, subject?, body, senderUnit, attachments?, messageId?,
    reopen?}``; the sending unit must be valid on today's Swedish date and be the case's own
    unit (``case_unit``) or one that units.yaml lets answer for it (rule 11)."""
    if not isinstance(data, dict):
        raise BadJson("the body must be a JSON object.")
    now = clock.instant()
    kind = _enum(MessageKind, _require(data, "kind"), "kind")
    sender, sender_name = sender_hsa_id(units, target, _require(data, "senderUnit"), clock.day())
    if case_unit is not None and not units.may_sign(sender, case_unit, clock.day()):
        raise SenderNotAllowed(f"senderUnit {sender} may not answer in a case of unit {case_unit}.", field="senderUnit")
    reopen(data)
    sent_by = _optional(data, "sentBy", dict) or {}
    role = _optional(sent_by, "role")
    role_name = _optional(sent_by, "name")
    if role_name is not None and len(role_name) > 255:
        raise InvalidValue("sentBy.name is over 255 characters.", field="sentBy.name")
    given = _optional(data, "messageId")
    if given is not None and not 0 < len(given) <= 64:
        raise InvalidValue("messageId must be 1 to 64 characters.", field="messageId")
    message = Message(
        case_id=case_id,
        message_id=scoped_message_id(target, case_id, given) if given else str(uuid.uuid4()),
        provider_message_id=given,
        sent_by_role=role,
        sent_by_name=role_name,
        created_time=now,
        text=_require(data, "body"),
        direction="out",
        kind=kind.value,
        subject=_optional(data, "subject"),
        attachments=attachments(data, max_bytes=max_attachment_bytes),
        sender_hsa_id=sender,
        sender_name=_optional(data, "senderName") or sender_name,
    )
    rules.check_care_message(message, max_attachments=max_attachments, max_attachment_bytes=max_attachment_bytes)
    rules.check_sender_rights(message, citizen_started=citizen_started)
    return message


def guard(message: Message, own_ids: Iterable[str], *, require_text: bool = False) -> GuardOutcome:
    """The wrong-patient guard (rule 14) over a checked message to the citizen, the same
    for the API and polling: ``own_ids`` are the case's citizen's and representative's
    person ids (``Store.case_person_ids``). See ``rules.wrong_patient_guard``."""
    return rules.wrong_patient_guard(message, own_ids, require_text=require_text)


def scoped_message_id(target: str, case_id: str, given: str) -> str:
    """The gateway's id for a message whose id a provider chose: derived from the target, the
    case and that id, so one provider's ids never collide with another's, with 1177's, or
    with the gateway's own (``<case>:receipt``), and a retry maps to the same message."""
    return f"P-{uuid.uuid5(uuid.NAMESPACE_URL, f'gateway-1177:{target}:{case_id}:{given}')}"


def reopen(data: dict[str, Any]) -> bool:
    """Whether a message asks to reopen its closed case first (``"reopen": true``)."""
    value = data.get("reopen", False)
    if not isinstance(value, bool):
        raise BadJson("'reopen' must be true or false.", field="reopen")
    return value


def _code(item: Any, system: str, where: str) -> Code:
    """A code as text, or ``{code, displayName?}`` (the code system is 1177's, fixed)."""
    if isinstance(item, str) and 0 < len(item.strip()) <= 64:
        return Code(item.strip(), system)
    if isinstance(item, dict) and isinstance(item.get("code"), str) and 0 < len(item["code"].strip()) <= 64:
        name = item.get("displayName")
        if name is not None and (not isinstance(name, str) or len(name) > 255):
            raise BadJson(f"{where}.displayName must be text of at most 255 characters.", field=f"{where}.displayName")
        system_given = item.get("codeSystem")
        if system_given is not None and not isinstance(system_given, str):
            raise BadJson(f"{where}.codeSystem must be text.", field=f"{where}.codeSystem")
        return Code(item["code"].strip(), system_given or system, name)
    raise BadJson(f"{where} must be a code (1 to 64 characters) or {{code, displayName?}}.", field=where)


def status(
    data: dict[str, Any], *, case_id: str, case_type: CaseType, target: str, codes: CodeLookup
) -> StatusUpdate:
    """A status change from ``{status, careUnitHsaId?, problems?, businessArea?}``.

    ``status`` is 1177's (RECEIVED, IN_PROGRESS, CLOSED) or the provider's own code from
    ``codes.yaml`` (``statuses``)."""
    if not isinstance(data, dict):
        raise BadJson("the body must be a JSON object.")
    raw = _require(data, "status")
    if raw in CaseStatus.__members__:
        value = CaseStatus(raw)
    else:
        try:
            value = CaseStatus(codes.lookup("statuses", target, raw))
        except MappingError as exc:
            raise InvalidValue(f"status '{raw[:40]}' is neither 1177's nor in {exc.message}", field="status") from None
    raw_problems = data.get("problems") if data.get("problems") is not None else data.get("problem")  # a SOAP poll says 'problem'
    if raw_problems is not None and not isinstance(raw_problems, list):
        raise BadJson("'problems' must be a list of codes.", field="problems")
    problems = [_code(item, PROBLEM_CODE_SYSTEM, f"problems[{i}]") for i, item in enumerate(raw_problems or [])]
    area = data.get("businessArea")
    business = _code(area, BUSINESS_AREA_CODE_SYSTEM, "businessArea") if area is not None else None
    care_unit = _optional(data, "careUnitHsaId")
    update = StatusUpdate(case_id, value, care_unit.strip().upper() if care_unit else None, tuple(problems), business)
    rules.check_status_update(update, case_type)
    return update


def external_case(
    data: dict[str, Any],
    *,
    target: str,
    units: UnitLookup,
    clock: Clock,
    max_attachment_bytes: int = rules.MAX_ATTACHMENT_BYTES,
) -> tuple[Case, str, str, str]:
    """A case that started outside 1177: (case, external id, channel, the receiving unit's code).

    Body: ``{externalCaseId, channel, receiverUnit, caseType, subjectOfCare: {personId: {id,
    type?}, name?}, createdTime?, subject?, text, complaint?: {eventDate, isCareProcess?,
    eventLocationText?, careUnitHsaId?}, attachments?}``."""
    if not isinstance(data, dict):
        raise BadJson("the body must be a JSON object.")
    now, today = clock.instant(), clock.day()  # the rules' dates are Swedish dates
    external_id = _require(data, "externalCaseId").strip()
    if not 0 < len(external_id) <= 64:
        raise InvalidValue("externalCaseId must be 1 to 64 characters.", field="externalCaseId")
    channel = _enum(Channel, _require(data, "channel"), "channel")
    case_type = _enum(CaseType, _require(data, "caseType"), "caseType")
    receiver, _ = sender_hsa_id(units, target, _require(data, "receiverUnit"), today)
    unit = units.unit(receiver, today)
    subject = _require(data, "subjectOfCare", dict)
    person = _require(subject, "personId", dict)
    number = _require(person, "id")
    type_oid = _optional(person, "type") or (
        "1.2.752.129.2.1.3.3" if len(number) == 12 and number[6:8].isdigit() and int(number[6:8]) > 60
        else "1.2.752.129.2.1.3.1"
    )
    complaint_data = _optional(data, "complaint", dict)
    complaint = None
    if complaint_data is not None:
        event = _optional(complaint_data, "eventDate")
        try:
            event_date = dt.date.fromisoformat(event) if event else None
        except ValueError:
            raise InvalidValue("complaint.eventDate must be a date (YYYY-MM-DD).", field="complaint.eventDate") from None
        location = _optional(complaint_data, "eventLocationText")
        if location is not None and len(location) > 1000:
            raise InvalidValue("complaint.eventLocationText is over 1000 characters.", field="complaint.eventLocationText")
        complaint = Complaint(event_date, _optional(complaint_data, "isCareProcess", bool) or False, location,
                              _optional(complaint_data, "careUnitHsaId"))
    created = _optional(data, "createdTime")
    try:
        created_time = dt.datetime.fromisoformat(created) if created else now
    except ValueError:
        raise InvalidValue("createdTime must be an ISO 8601 date and time.", field="createdTime") from None
    if not 1900 <= created_time.year <= 2099:  # checked first: far-off years overflow in arithmetic
        raise InvalidValue("createdTime must be a real time (1900-2099).", field="createdTime")
    if created_time.tzinfo is None:
        created_time = created_time.replace(tzinfo=now.tzinfo)
    if created_time > now + dt.timedelta(days=1):
        raise InvalidValue("createdTime is in the future.", field="createdTime")
    case = Case(
        # the same external case from the same target always gets the same id, so a retried
        # registration is recognised as the same case
        case_id=f"GW-{uuid.uuid5(uuid.NAMESPACE_URL, f'gateway-1177:{target}:{external_id}')}",
        case_type=case_type,
        receiver=Receiver(receiver, bool(unit.patient_board) if unit else False),
        subject_of_care=SubjectOfCare(PersonId.parse(number, type_oid, field="subjectOfCare.personId"),
                                      _optional(subject, "name")),  # (name: text or absent)
        created_time=created_time,
        text=_require(data, "text"),
        subject=_optional(data, "subject"),
        complaint=complaint,  # lengths and dates: rules.check_case below
        attachments=attachments(data, max_bytes=max_attachment_bytes),
    )
    if case.attachments:  # RegisterCase carries no files: they would be stored and never reach the citizen
        raise ExternalAttachments("attachments: a case registered outside 1177 carries no files.", field="attachments")
    rules.check_case(case, today=today, max_attachments=rules.MAX_CARE_ATTACHMENTS, max_attachment_bytes=max_attachment_bytes)
    return case, external_id, channel.value, unit.code if unit else ""
