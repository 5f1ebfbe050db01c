"""What a provider system says back: messages, status changes and external cases, from
plain JSON-like data to checked model objects; and the one description of those bodies.

Role: the one path shared by the provider REST API (``api``) and polling (``worker``), so
that a reply is checked the same way however it arrives. The bodies the API takes
(``Reply``, ``Status``, ``ExternalCase``) are pydantic models in strict mode: ``api``
generates its OpenAPI document from them and validates every request body with them, and
a polled update is read with the same models (``from_update``). Their limits are the
rules' own constants (``rules.MAX_TEXT``, ``rules.MAX_CARE_ATTACHMENTS``, …), never
numbers of their own. Maps the provider's unit code to the HSA-id (every message names
its sending unit), the provider's status codes to 1177's, and applies 1177's rules
(attachments, closing codes, the wrong-patient guard). Pure: no I/O.

May import: ``model``, ``rules``, ``errors``. The units and code tables are handed in
(``mapping.Units`` and ``mapping.Codes`` provide them), and so is the clock: every date a
rule is about is today's Swedish date (``Clock.day``), as at intake.

Invariants: a function returns a model object that passed every rule, or raises a
``GatewayError`` whose ``field`` names the JSON field (``attachments[0].data``): ``BadJson``
for a wrong shape (a missing field, a wrong JSON type, a value outside an enum, a field the
document does not name), the rule's own error for a broken limit (``InvalidValue``,
``TooManyAttachments``, …). Strict: nothing is coerced ("1" is not a number, "no" not a
boolean); ``null`` for an optional field is read as not given.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypeVar, Union, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
)
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError

import rules
from errors import (
    AttachmentTooLarge,
    BadJson,
    ExternalAttachments,
    GatewayError,
    InvalidHsaId,
    InvalidPersonId,
    InvalidValue,
    MappingError,
    SenderNotAllowed,
    TooManyAttachments,
    UnmappedUnit,
    redact_person_ids,
)
from model import (
    BUSINESS_AREA_CODE_SYSTEM,
    PERSONNUMMER_OID,
    PROBLEM_CODE_SYSTEM,
    SAMORDNINGSNUMMER_OID,
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


# -- the bodies: one description for the OpenAPI document, the API's checks and polling ---------------


@dataclass(frozen=True)
class Refuse:
    """How a broken constraint of a field is answered: with ``error`` (a ``GatewayError``
    class) for the pydantic error types in ``on`` (all but wrong shapes when empty), and
    ``says`` (what is wrong, after the field's name) instead of the generic text. The
    nearest ``Refuse`` on the way from the body to the field that applies wins; without
    one a broken limit is ``InvalidValue`` (GW029) and a wrong shape ``BadJson`` (GW033)."""

    error: type[GatewayError]
    on: tuple[str, ...] = ()
    says: str | None = None

    def applies(self, kind: str) -> bool:
        return not self.on or kind in self.on


class Body(BaseModel):
    """A request body of the provider API, by its JSON (camelCase) names: strict (no
    value is coerced to another type) and closed (a field it does not name is refused)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, alias_generator=to_camel,
                              validate_by_alias=True, validate_by_name=False)


def _values(enum: Any) -> tuple[str, ...]:
    return tuple(member.value for member in enum)


def _iso(kind: type[dt.date]) -> BeforeValidator:
    """Reads an ISO 8601 text as a date (or a date and time); anything but text is left to
    the strict type check, which refuses it."""
    what = "a date (YYYY-MM-DD)" if kind is dt.date else "an ISO 8601 date and time"

    def parse(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return kind.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError("InvalidValue", f"must be {what}") from None

    return BeforeValidator(parse)


def encoded_length(size: int) -> int:
    """The length of the base64 text of ``size`` bytes."""
    return 4 * ((size + 2) // 3)


def _within_limit(value: str, info: ValidationInfo) -> str:
    """The configured size limit (``outbound.max_attachment_bytes``, handed in as context),
    checked on the base64 text before anything is decoded."""
    limit = (info.context or {}).get("max_attachment_bytes", rules.MAX_ATTACHMENT_BYTES)
    if len(value) > encoded_length(limit):
        raise PydanticCustomError("AttachmentTooLarge", "is over {limit} bytes", {"limit": limit})
    return value


#: standard base64 with its padding, nothing else (no line breaks): what b64decode(validate=True) reads
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
Day = Annotated[dt.date, _iso(dt.date)]
Instant = Annotated[dt.datetime, _iso(dt.datetime)]
if TYPE_CHECKING:  # the codes are the model's enums' values, which a type checker cannot read
    Kind = str
    ChannelCode = str
    CaseTypeCode = str
    Role = str
    PersonIdType = str
else:
    Kind = Literal[_values(MessageKind)]
    ChannelCode = Literal[_values(Channel)]
    CaseTypeCode = Literal[_values(CaseType)]
    Role = Literal[rules.SENDER_ROLES]
    PersonIdType = Literal[PERSONNUMMER_OID, SAMORDNINGSNUMMER_OID]


class Upload(Body):
    """A file to attach (rule 1): PDF, GIF, JPEG or PNG, recognised by its content."""

    file_name: Annotated[str, Field(min_length=1, max_length=rules.MAX_FILE_NAME,
                                    description="The file's name alone (no path, no control or invisible characters)")]
    mime_type: Annotated[str, Field(max_length=rules.MAX_MIME_TYPE,
                                    description=f"{', '.join(rules.ATTACHMENT_TYPES)}: it must agree with the content")]
    data: Annotated[str, Field(max_length=encoded_length(rules.MAX_ATTACHMENT_BYTES), pattern=BASE64,
                               json_schema_extra={"contentEncoding": "base64"},
                               description=f"The content in base64: at most outbound.max_attachment_bytes "
                                           f"(default and most {rules.MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB) decoded"),
                    AfterValidator(_within_limit),
                    Refuse(BadJson, on=("string_pattern_mismatch",), says="is not base64"),
                    Refuse(AttachmentTooLarge, on=("string_too_long",))]


class SentBy(Body):
    """Who at the care side sends the message (rule 13): then 1177's rights apply."""

    role: Annotated[Role | None, Refuse(InvalidValue),
                    Field(description="RECEIVER (ärendemottagare) attaches files only to a PARTIAL_REPLY; HANDLER "
                                      "(ärendehanterare) to a PARTIAL_REPLY, FINAL_REPLY or QUESTION")] = None
    name: Annotated[str | None, Field(max_length=rules.MAX_NAME)] = None


class Reply(Body):
    """A message to the citizen's 1177 inbox, signed by one of your units."""

    kind: Kind
    subject: Annotated[str | None, Field(max_length=rules.MAX_SUBJECT)] = None
    body: Annotated[str, Field(min_length=1, max_length=rules.MAX_TEXT)]
    sender_unit: Annotated[str, Field(description="Your unit's code, or its HSA-id (units.yaml); it must be the "
                                                  "case's unit or one that may answer for it")]
    sender_name: Annotated[str | None, Field(max_length=rules.MAX_NAME,
                                             description="Default: the unit's name in units.yaml")] = None
    message_id: Annotated[str | None, Field(min_length=1, max_length=rules.MAX_ID,
                                            description="Your id for it: the same id again is the same message")] = None
    sent_by: SentBy | None = None
    reopen: Annotated[bool, Field(description="Reopen a closed case first (IN_PROGRESS goes to 1177 before the "
                                              "message)")] = False
    attachments: Annotated[list[Upload] | None, Field(max_length=rules.MAX_CARE_ATTACHMENTS,
                                                      description="At most outbound.max_attachments files"),
                           Refuse(TooManyAttachments, on=("too_long",))] = None


class CodeValue(Body):
    """A code of 1177's code system, with its display text."""

    code: Annotated[str, Field(min_length=1, max_length=rules.MAX_CODE)]
    display_name: Annotated[str | None, Field(max_length=rules.MAX_NAME)] = None
    code_system: Annotated[str | None, Field(max_length=rules.MAX_CODE,
                                             description="Implied (problems 1.2.752.129.5.1.22, business area "
                                                         "1.2.752.129.5.1.21); another one is refused")] = None


#: a code as text, or as ``{code, displayName?}``
CodeItem = Annotated[
    Union[Annotated[Annotated[str, Field(min_length=1, max_length=rules.MAX_CODE)], Tag("<text>")],
          Annotated[CodeValue, Tag("<object>")]],
    Discriminator(lambda value: "<text>" if isinstance(value, str) else "<object>"),
]
#: the tags of the unions above: in an error's place (``loc``), never the name of a JSON field
_TAGS = frozenset({"<text>", "<object>"})


class Status(Body):
    """A change of the case's status in 1177."""

    status: Annotated[str, Field(min_length=1, max_length=rules.MAX_CODE,
                                 description=f"{', '.join(_values(CaseStatus))}, or your own code (codes.yaml)")]
    care_unit_hsa_id: Annotated[str | None, Field(max_length=rules.MAX_HSA_ID,
                                                  description="A patient board's correction of where the event "
                                                              "happened"),
                                Refuse(InvalidHsaId)] = None
    problems: Annotated[list[CodeItem] | None, Refuse(BadJson),
                        Field(description="Problem codes (1.2.752.129.5.1.22); closing a complaint needs one")] = None
    business_area: Annotated[CodeItem | None, Refuse(BadJson),
                             Field(description="The business area (1.2.752.129.5.1.21); closing a complaint "
                                               "needs it")] = None


class CitizenId(Body):
    """The citizen's personnummer or samordningsnummer."""

    id: Annotated[str, Field(pattern=r"^[0-9]{12}$", description="12 digits, YYYYMMDDNNNC"),
                  Refuse(InvalidPersonId, says="must be 12 digits (YYYYMMDDNNNC)")]
    type: Annotated[PersonIdType | None, Refuse(InvalidPersonId),
                    Field(description="Default: read from the number (day + 60: a samordningsnummer)")] = None


class Citizen(Body):
    """Whom the case is about."""

    person_id: CitizenId
    name: Annotated[str | None, Field(max_length=rules.MAX_NAME)] = None


class ComplaintDetails(Body):
    """What a complaint is about (rules 4-6)."""

    event_date: Annotated[Day | None, Field(description="The day of the event (for a whole care process, its "
                                                        "start); not in the future")] = None
    is_care_process: bool | None = None
    event_location_text: Annotated[str | None, Field(max_length=rules.MAX_LOCATION)] = None
    care_unit_hsa_id: Annotated[str | None, Field(max_length=rules.MAX_HSA_ID), Refuse(InvalidHsaId)] = None


class ExternalCase(Body):
    """A case that started outside 1177 (phone, letter, visit): its dialog then runs
    through the citizen's 1177 inbox."""

    external_case_id: Annotated[str, Field(min_length=1, max_length=rules.MAX_ID,
                                           description="Your id for it: the same id again is the same case")]
    channel: ChannelCode
    receiver_unit: Annotated[str, Field(description="Your unit's code, or its HSA-id (units.yaml)")]
    case_type: CaseTypeCode
    subject_of_care: Citizen
    created_time: Annotated[Instant | None, Field(description="Default: now")] = None
    subject: Annotated[str | None, Field(max_length=rules.MAX_SUBJECT)] = None
    text: Annotated[str, Field(min_length=1, max_length=rules.MAX_TEXT)]
    complaint: Annotated[ComplaintDetails | None, Field(description="For caseType COMPLAINT, which needs it")] = None
    attachments: Annotated[list[Upload] | None, Field(max_length=0, description="None: RegisterCase carries no "
                                                                                "files; send them to the citizen in a "
                                                                                "message of the case"),
                           Refuse(ExternalAttachments, on=("too_long",),
                                  says="is not taken: a case registered outside 1177 carries no files")] = None


#: every request body the API takes, as its OpenAPI document names them
BODIES: tuple[type[Body], ...] = (Reply, Status, ExternalCase)

B = TypeVar("B", bound=Body)
#: the errors of a wrong shape (besides every ``*_type``): answered ``BadJson``, whatever the field
_SHAPE = frozenset({"missing", "extra_forbidden", "union_tag_invalid", "union_tag_not_found"})
_TYPE_WORDS = {"string_type": "text", "bool_type": "true or false", "list_type": "a list", "model_type": "an object",
               "model_attributes_type": "an object", "dict_type": "an object", "date_type": "a date (YYYY-MM-DD)",
               "datetime_type": "an ISO 8601 date and time", "int_type": "a whole number"}
#: the errors a validator above raises, by name
_RAISED: dict[str, type[GatewayError]] = {cls.__name__: cls for cls in (InvalidValue, AttachmentTooLarge, BadJson)}


def _model_in(annotation: Any) -> type[Body] | None:
    """The body model inside ``annotation`` (through Annotated, unions, lists), if any."""
    if isinstance(annotation, type) and issubclass(annotation, Body):
        return annotation
    for inner in get_args(annotation):
        found = _model_in(inner)
        if found is not None:
            return found
    return None


def _place(model: type[Body], loc: tuple[int | str, ...]) -> tuple[str, list[Refuse]]:
    """The JSON path of an error's ``loc`` (``attachments[0].data``) and the ``Refuse``
    markers on the way, outermost first."""
    path = ""
    annotation: Any = model
    markers: list[Refuse] = []
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            continue
        owner = _model_in(annotation)
        fields = {info.alias or name: info for name, info in owner.model_fields.items()} if owner else {}
        if part in fields:
            annotation = fields[part].annotation
            markers.extend(m for m in fields[part].metadata if isinstance(m, Refuse))
        elif part in _TAGS:
            continue
        else:
            annotation = None  # a field the body does not have
        path = f"{path}.{part[:64]}" if path else part[:64]
    return path, markers


def _shown(value: Any) -> str:
    """A value as an error message shows it: a text's first 40 characters, else its JSON type."""
    if isinstance(value, str):
        return f"'{value[:40]}'"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return {int: "a number", float: "a number", list: "a list", dict: "an object"}.get(type(value), "another value")


def _says(error: ErrorDetails) -> str:
    """What is wrong with the value, after its name (never the value of a text in full)."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a field of this call"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', 'another value')}, not {_shown(value)}"
    if kind == "model_type" and error["loc"] and error["loc"][-1] == "<object>":  # a CodeItem
        return "must be a code: text, or {code, displayName?}"
    if kind in _TYPE_WORDS or kind.endswith("_type"):
        return f"must be {_TYPE_WORDS.get(kind, 'of another type')}"
    if kind == "string_too_long":
        return f"is {len(value) if isinstance(value, str) else '?'} characters; at most {ctx.get('max_length')} are allowed"
    if kind == "string_too_short":
        return "is empty" if ctx.get("min_length") == 1 else f"is under {ctx.get('min_length')} characters"
    if kind == "too_long":
        return f"has {ctx.get('actual_length')} items; at most {ctx.get('max_length')} are allowed"
    if kind == "string_pattern_mismatch":
        return f"does not match {ctx.get('pattern')}"
    if kind.startswith("union_tag"):
        return "must be text or an object"
    return error["msg"] if kind in _RAISED else f"is not valid: {error['msg']}"


def refusal(model: type[Body], error: ErrorDetails) -> GatewayError:
    """The ``GatewayError`` that answers one validation error of a ``model`` body: a
    validator's own (``_RAISED``); for a wrong shape ``BadJson``; for a broken constraint the
    nearest ``Refuse`` that applies, else ``BadJson`` for a value outside an enum and
    ``InvalidValue`` for a broken limit."""
    where, markers = _place(model, tuple(error["loc"]))
    kind = error["type"]
    says = _says(error)
    if kind in _RAISED:
        cls = _RAISED[kind]
    elif kind in _SHAPE or kind.endswith("_type"):
        cls = BadJson
    else:
        chosen = next((m for m in reversed(markers) if m.applies(kind)), None)
        if chosen is not None:
            cls, says = chosen.error, chosen.says or says
        else:
            cls = BadJson if kind == "literal_error" else InvalidValue
    return cls(redact_person_ids(f"{where or 'the body'} {says}."), field=where or None)


def read(model: type[B], data: Any, *, max_attachment_bytes: int = rules.MAX_ATTACHMENT_BYTES) -> B:
    """``data`` (a JSON object, parsed) as a ``model`` body, or the ``GatewayError`` of its
    first problem (``refusal``). ``max_attachment_bytes``: ``outbound.max_attachment_bytes``."""
    if not isinstance(data, Mapping):
        raise BadJson("the body must be a JSON object.")
    try:
        return model.model_validate(data, context={"max_attachment_bytes": max_attachment_bytes})
    except ValidationError as exc:
        raise refusal(model, exc.errors(include_url=False)[0]) from None


def _fields(model: type[Body]) -> frozenset[str]:
    return frozenset(info.alias or name for name, info in model.model_fields.items())


#: the fields of a polled update that name the case and the kind of update, not the body's
UPDATE_ENVELOPE = frozenset({"type", "caseId", "providerCaseId"})
#: a SOAP poll's names (one element per item) for the fields of the bodies
_SOAP_NAMES = {"attachment": "attachments", "problem": "problems"}


def from_update(model: type[B], item: Mapping[str, Any], *,
                max_attachment_bytes: int = rules.MAX_ATTACHMENT_BYTES) -> B:
    """A polled update (``{"type", "caseId" or "providerCaseId", …the fields of the API
    call…}``) read as the API call's body, with the same model: the envelope, ``null``s and
    the other kind of update's fields (a SOAP ``update`` element has both kinds') are left
    out; a SOAP poll's ``attachment``/``problem`` are ``attachments``/``problems``, its
    decoded ``base64Binary`` is base64 again. Any other field is refused, as by the API."""
    other = (_fields(Status) if model is Reply else _fields(Reply)) - _fields(model)
    data: dict[str, Any] = {}
    for key, value in item.items():
        key = _SOAP_NAMES.get(key, key)
        if value is None or key in UPDATE_ENVELOPE or key in other or (key in data and not value):
            continue
        data[key] = value
    files = data.get("attachments")
    if isinstance(files, list):
        data["attachments"] = [
            {**f, "data": base64.b64encode(f["data"]).decode("ascii")} if isinstance(f, dict) and isinstance(f.get("data"), bytes) else f
            for f in files]
    return read(model, data, max_attachment_bytes=max_attachment_bytes)


# -- from a body to checked model objects -------------------------------------------------------------------


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


def files(uploads: Iterable[Upload] | None) -> tuple[Attachment, ...]:
    """The attachments of a body, decoded (their base64 is checked by ``Upload``)."""
    found = []
    for index, upload in enumerate(uploads or ()):
        try:
            content = base64.b64decode(upload.data, validate=True)
        except (binascii.Error, ValueError):
            raise BadJson(f"attachments[{index}].data is not base64.", field=f"attachments[{index}].data") from None
        found.append(Attachment(upload.file_name.strip(), upload.mime_type.strip(), content))
    return tuple(found)


def reply(
    data: Reply | Mapping[str, Any],
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
    """A message to the citizen from a ``Reply`` body (or a polled update, read by
    ``from_update``); the sending unit must be valid on today's Swedish date and be the
    case's own unit (``case_unit``) or one that units.yaml lets answer for it (rule 11)."""
    body = data if isinstance(data, Reply) else from_update(Reply, data, max_attachment_bytes=max_attachment_bytes)
    now = clock.instant()
    sender, sender_name = sender_hsa_id(units, target, body.sender_unit, clock.day())
    if case_unit is not None and not units.may_sign(sender, case_unit, clock.day()):
        raise SenderNotAllowed(f"senderUnit {sender} may not answer in a case of unit {case_unit}.", field="senderUnit")
    given = body.message_id
    message = Message(
        case_id=case_id,
        message_id=scoped_message_id(target, case_id, given) if given else str(uuid.uuid4()),
        provider_message_id=given,
        sent_by_role=body.sent_by.role if body.sent_by else None,
        sent_by_name=body.sent_by.name if body.sent_by else None,
        created_time=now,
        text=body.body,
        direction="out",
        kind=body.kind,
        subject=body.subject,
        attachments=files(body.attachments),
        sender_hsa_id=sender,
        sender_name=body.sender_name or sender_name,
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


def reopen(data: Reply | Mapping[str, Any]) -> bool:
    """Whether a message asks to reopen its closed case first (``"reopen": true``): of a
    ``Reply`` body, or of a polled update (where ``null`` is not given, as in the body)."""
    if isinstance(data, Reply):
        return data.reopen
    value = data.get("reopen")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadJson("reopen must be true or false.", field="reopen")
    return value


def _code(item: str | CodeValue, system: str) -> Code:
    """A code given as text, or as ``{code, displayName?}`` (the code system is 1177's)."""
    if isinstance(item, str):
        return Code(item.strip(), system)
    return Code(item.code.strip(), item.code_system or system, item.display_name)


def status(
    data: Status | Mapping[str, Any], *, case_id: str, case_type: CaseType, target: str, codes: CodeLookup
) -> StatusUpdate:
    """A status change from a ``Status`` body (or a polled update, read by ``from_update``).

    ``status`` is 1177's (RECEIVED, IN_PROGRESS, CLOSED) or the provider's own code from
    ``codes.yaml`` (``statuses``)."""
    body = data if isinstance(data, Status) else from_update(Status, data)
    raw = body.status
    if raw in CaseStatus.__members__:
        value = CaseStatus(raw)
    else:
        try:
            value = CaseStatus(codes.lookup("statuses", target, raw))
        except MappingError as exc:
            raise InvalidValue(f"status '{raw[:40]}' is neither 1177's nor in {exc.message}", field="status") from None
    problems = tuple(_code(item, PROBLEM_CODE_SYSTEM) for item in body.problems or ())
    business = _code(body.business_area, BUSINESS_AREA_CODE_SYSTEM) if body.business_area is not None else None
    care_unit = body.care_unit_hsa_id
    update = StatusUpdate(case_id, value, care_unit.strip().upper() if care_unit else None, problems, business)
    rules.check_status_update(update, case_type)
    return update


def external_case(
    data: ExternalCase | Mapping[str, Any],
    *,
    target: str,
    units: UnitLookup,
    clock: Clock,
    max_attachment_bytes: int = rules.MAX_ATTACHMENT_BYTES,
) -> tuple[Case, str, str, str]:
    """A case that started outside 1177, from an ``ExternalCase`` body (a mapping is read as
    one): (case, external id, channel, the receiving unit's code)."""
    body = data if isinstance(data, ExternalCase) else read(ExternalCase, data, max_attachment_bytes=max_attachment_bytes)
    now, today = clock.instant(), clock.day()  # the rules' dates are Swedish dates
    external_id = body.external_case_id.strip()
    if not external_id:
        raise InvalidValue("externalCaseId must be 1 to 64 characters.", field="externalCaseId")
    receiver, _ = sender_hsa_id(units, target, body.receiver_unit, today)
    unit = units.unit(receiver, today)
    person = body.subject_of_care.person_id
    number = person.id
    type_oid = person.type or (SAMORDNINGSNUMMER_OID if int(number[6:8]) > 60 else PERSONNUMMER_OID)
    details = body.complaint
    complaint = None
    if details is not None:
        complaint = Complaint(details.event_date, details.is_care_process or False, details.event_location_text,
                              details.care_unit_hsa_id)
    created_time = body.created_time or now
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
        case_type=CaseType(body.case_type),
        receiver=Receiver(receiver, bool(unit.patient_board) if unit else False),
        subject_of_care=SubjectOfCare(PersonId.parse(number, type_oid, field="subjectOfCare.personId"),
                                      body.subject_of_care.name),
        created_time=created_time,
        text=body.text,
        subject=body.subject,
        complaint=complaint,  # lengths and dates: rules.check_case below
        # no attachments: the body takes none (RegisterCase carries no files, ExternalCase.attachments)
    )
    rules.check_case(case, today=today, max_attachments=rules.MAX_CARE_ATTACHMENTS, max_attachment_bytes=max_attachment_bytes)
    return case, external_id, body.channel, unit.code if unit else ""
