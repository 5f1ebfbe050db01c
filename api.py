"""The provider-facing REST API: what a provider's system says back to the citizen.

Role: a Flask blueprint under ``/api``. A provider system posts messages to the citizen
(confirmations, partial answers, counter-questions, final answers), status changes, and
cases that started outside 1177; it reads a case's status and timeline and fetches the
case's own attachments (audited); it previews a message to the citizen before it is sent
(its content and the very bytes of its files), releases one the wrong-patient guard holds
(rule 14), and cancels one during its review window. Every call authenticates with the
bearer token configured for its target (``targets.<name>.api.token``) and may only touch
the cases routed to that target.

One source of truth: the OpenAPI 3.1 document served at ``/api/openapi.json`` is generated
from models. Every request body is validated by its model in ``updates`` (``Reply``,
``Status``, ``ExternalCase``) and every JSON answer is built through its model here
(``CaseView``, ``MessageQueued``, ``Error``, …), so the document cannot say other than the
calls do; the limits in them are the rules' constants.

May import: ``updates``, ``rules``, ``model``, ``store``, ``errors``, ``logs``, ``identity``. Units and
code tables are handed in by the composition root, and so is what the national profile can
carry (``Api.carries``): what it cannot is refused here, whatever the profile.

Invariants: a refused call answers a 4xx JSON ``{code, message, field}`` (``Error``) and has
stored nothing; a JSON answer has exactly the fields of its model; entry points only write
to the store (the worker sends); no response carries a person id, a token or a stack trace.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import io
import json
import logging
import re
import uuid
from collections.abc import Callable
from urllib.parse import quote
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from flask import Blueprint, Flask, Response, current_app, jsonify, request, send_file
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema
from werkzeug.exceptions import HTTPException

import identity
import logs
import rules
import updates
from errors import (
    ApiError,
    BadJson,
    CaseClosed,
    CasePurged,
    Forbidden,
    GatewayError,
    IdConflict,
    InternalError,
    MessageHeld,
    MethodNotAllowed,
    NotCancellable,
    NotFound,
    NotHeld,
    PayloadTooLarge,
    RuleViolation,
    StoreError,
    Unauthenticated,
)
from model import CaseStatus, CaseType, GuardOutcome, redact_person_ids, safe_file_name
from store import Store

if TYPE_CHECKING:  # handed in by the composition root
    from clock import Clock

log = logging.getLogger("gateway.api")
bp = Blueprint("api", __name__, url_prefix="/api")


@dataclass
class Api:
    """What the API needs, built once by ``gateway.create_app``."""

    store: Store
    units: updates.UnitLookup
    codes: updates.CodeLookup
    tokens: dict[str, str]  # sha256 of a target's token → the target's name
    clock: Clock  # clock.SYSTEM: UTC instants; the rules' dates are Swedish dates (Clock.day)
    cert_targets: dict[str, str] = field(default_factory=dict)  # client certificate HSA-id → target
    access: Any = None  # config ``rivta``: the proxy header settings for forwarded certificates
    authority: Any = None  # identity.CertificateAuthority
    review_s: float = 0.0
    require_text: bool = False  # outbound.guard.require_text
    max_attachment_bytes: int = rules.MAX_ATTACHMENT_BYTES
    max_attachments: int = rules.MAX_CARE_ATTACHMENTS
    #: the case types whose automatic receipt (outbound.confirmations) is sent once 1177 has
    #: registered a case from outside it; its place is kept first in the case's order
    receipt_types: frozenset[str] = frozenset()
    on_stored: Callable[[], None] = lambda: None
    #: what the national profile can carry to 1177 (``adapters.national.Carries``, set by the
    #: composition root): ``refuse(action, item)`` raises GW083-GW085 (422) for the rest
    carries: Any = None
    version: str = "0"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def max_body_bytes(self) -> int:
        return (rules.MAX_CARE_ATTACHMENTS * self.max_attachment_bytes * 4) // 3 + 1024 * 1024


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def init_app(app: Flask, api: Api) -> None:
    app.extensions["gateway.api"] = api
    app.register_blueprint(bp)
    # a path no route matches (an id with '/'), or a method a route does not take, fails
    # before the blueprint is known: under /api it is answered in JSON all the same
    app.register_error_handler(HTTPException, _http_error)


def _api() -> Api:
    return current_app.extensions["gateway.api"]


# -- the answers: one description for the OpenAPI document and for what the calls return ------------------


class View(BaseModel):
    """An answer of the provider API, by its JSON (camelCase) names. Every answer is built
    through its model (``_answer``), so the document cannot promise what a call does not
    return; strict: a value of another type is a bug here, not something to convert."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, alias_generator=to_camel,
                              validate_by_name=True, validate_by_alias=False, serialize_by_alias=True)


#: an instant as the store keeps it: ISO 8601 (RFC 3339), UTC
Instant = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class Error(View):
    """A refused call: nothing of it was stored."""

    code: Annotated[str, Field(pattern=r"^GW0[0-9]{2}$", description="Stable: see the README's table of codes")]
    message: Annotated[str, Field(description="What went wrong and what to do")]
    field: Annotated[str | None, Field(description="The JSON field concerned (attachments[0].data), if one is")]


class Finding(View):
    """Where the wrong-patient guard found something: a place, never the id."""

    where: Annotated[str, Field(description="'body', 'subject' or the attachment's file name")]
    page: int | None
    attachment: int | None
    kind: Literal["foreign_id", "not_checked"]
    count: int


class Guard(View):
    """The wrong-patient guard's outcome (rule 14): places, never ids."""

    checked: bool
    held: bool
    findings: list[Finding]


class MessageQueued(View):
    """A message to the citizen, stored: queued, or held by the review window or the guard."""

    message_id: Annotated[str, Field(description="Your messageId, or the gateway's when you gave none")]
    status: Literal["held", "queued"]
    send_after: Annotated[Instant | None, Field(description="null while the wrong-patient guard holds it")]
    created: Annotated[bool, Field(description="false: the same message was posted before")]
    guard: Guard
    code: Annotated[Literal["GW047"] | None, Field(description="Only when the wrong-patient guard holds it: "
                                                               "release or cancel it")] = None
    message: Annotated[str | None, Field(description="Where the guard found another citizen's id (never the id)")] = None
    hint: str | None = None


class Sender(View):
    """Who at the care side sent it (rule 13), as the message said."""

    role: str | None
    name: str | None


class Release(View):
    """Who confirmed a message the wrong-patient guard held, and when."""

    at: Instant
    by: str


class MessageAttachment(View):
    """A file of a message to the citizen: the bytes are at ``href``."""

    n: Annotated[int, Field(ge=0, description="Its index: GET …/attachments/{n} returns the bytes")]
    file_name: str
    mime_type: str
    sha256: str
    size: int | None
    href: str


class MessageView(View):
    """A message to the citizen as stored and as it will be sent."""

    message_id: str
    case_id: str
    kind: str
    subject: str | None
    body: str
    sender_hsa_id: str | None
    sender_name: str | None
    sent_by: Sender | None
    status: Annotated[str, Field(description="held, queued, sent, cancelled")]
    held_by_guard: bool
    send_after: Instant | None
    released: Release | None
    guard: Guard
    attachments: list[MessageAttachment]


class Cancelled(View):
    """A message cancelled during its review window: it is never sent."""

    message_id: str
    status: Literal["cancelled"]


class Released(View):
    """A message the wrong-patient guard held, confirmed: it is sent once."""

    message_id: str
    status: Annotated[str, Field(description="held while a review window still runs, else queued")]
    released: bool


class StatusQueued(View):
    """A status change, queued for 1177 in the case's order."""

    status_id: int
    status: Literal[tuple(s.value for s in CaseStatus)]  # type: ignore[valid-type]
    queued: bool


class Registered(View):
    """A case registered outside 1177: 1177 is told in the background."""

    case_id: Annotated[str, Field(description="Use it as the caseId of later calls")]
    external_case_id: str
    status: Literal["registering"]


class CaseAttachment(View):
    """One of the case's own files (the citizen's)."""

    position: Annotated[int, Field(ge=1, description="GET …/attachments/{position} returns the bytes")]
    file_name: str
    mime_type: str
    size: int
    sha256: str


class CaseMessage(View):
    """A message of the case, either way: metadata, never its text."""

    message_id: str
    direction: Literal["in", "out"]
    kind: str
    status: str
    created_time: Instant | None
    sent_at: Instant | None


class CaseStatusChange(View):
    """A status change of the case towards 1177."""

    status_id: int
    status: str
    state: str
    created_at: Instant
    sent_at: Instant | None


class TimelineEvent(View):
    """An event of the case's sync log (metadata only)."""

    at: Instant
    direction: str
    event: str
    status: str
    target: str | None
    message_id: str | None
    error_code: str | None


class CaseView(View):
    """A case's status and timeline: metadata, never the citizen's text."""

    case_id: str
    origin: Literal["1177", "external"]
    case_type: str
    receiver_hsa_id: str
    unit_code: Annotated[str | None, Field(description="Your code of the receiving unit (units.yaml)")]
    provider_case_id: Annotated[str | None, Field(description="Your system's id of the case")]
    national_case_id: Annotated[str | None, Field(description="1177's caseId (a registered case gets it from 1177)")]
    delivery_status: Annotated[str, Field(description="Of the delivery to your system")]
    status: Annotated[str | None, Field(description="The last status sent towards 1177")]
    received_at: Instant
    attachments: Annotated[list[CaseAttachment], Field(description="The case's own attachments")]
    messages: list[CaseMessage]
    statuses: list[CaseStatusChange]
    timeline: list[TimelineEvent]


#: every answer the API gives in JSON
VIEWS: tuple[type[View], ...] = (Error, MessageQueued, MessageView, Cancelled, Released, StatusQueued, Registered,
                                 CaseView)


def _answer(view: View, status: int = 200) -> Response:
    """The JSON of ``view``: the fields it was built with (an optional one left out is absent)."""
    response = jsonify(view.model_dump(mode="json", by_alias=True, exclude_unset=True))
    response.status_code = status
    return response


# -- errors ---------------------------------------------------------------------------------------


def _error(exc: GatewayError, status: int) -> Response:
    response = _answer(Error(code=exc.code, message=f"{exc.message} {exc.hint}".strip(), field=exc.field), status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="gateway"'
    return response


#: The HTTP status of each kind of refusal, most specific first (the store and the rules raise
#: domain errors; only the API knows they are HTTP answers).
HTTP_STATUS: tuple[tuple[type[GatewayError], int], ...] = (
    (NotFound, 404), (NotCancellable, 409), (NotHeld, 409), (IdConflict, 409), (CaseClosed, 409),
    (CasePurged, 410), (PayloadTooLarge, 413), (RuleViolation, 422), (StoreError, 503),
)


def http_status(exc: GatewayError) -> int:
    """The status the API answers ``exc`` with."""
    if isinstance(exc, ApiError):
        return exc.status
    return next((status for kind, status in HTTP_STATUS if isinstance(exc, kind)), 500)


@bp.errorhandler(GatewayError)
def _gateway_error(exc: GatewayError) -> Response:
    status = http_status(exc)
    log.warning("api call refused", extra={"error_code": exc.code, "field": exc.field, "path": request.path,
                                           "status": status, "detail": exc.message})
    return _error(exc, status)


def _http_refusal(exc: HTTPException) -> Response:
    status = exc.code or 500
    if status == 404:
        error: GatewayError = NotFound(f"there is no API path {request.path[:100]!r}; ids never contain '/'.")
    elif status == 405:
        allowed = ", ".join(sorted(m for m in (getattr(exc, "valid_methods", None) or ()) if m not in ("HEAD", "OPTIONS")))
        error = MethodNotAllowed(f"{request.method[:10]} is not a method of {request.path[:100]!r}"
                                 + (f" (it takes {allowed})." if allowed else "."))
    elif status == 413:
        error = PayloadTooLarge("the body is over the limit.")
    elif status == 400:
        error = BadJson(f"{exc.name}.")
    else:
        error = ApiError(f"{exc.name}.")
    return _error(error, status)


def _http_error(exc: HTTPException) -> Any:
    if request.path == "/api" or request.path.startswith("/api/"):
        return _http_refusal(exc)
    return exc  # elsewhere, Flask's own answer (the ops view has its own pages)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):
        return _http_refusal(exc)
    reference = str(uuid.uuid4())
    log.error("api internal error", exc_info=True, extra={"log_id": reference, "path": request.path})
    return _error(InternalError(f"an unexpected error occurred (reference {reference})."), 500)


# -- authentication and access --------------------------------------------------------------------


def _target() -> str:
    """The target whose credentials came with the call (a bearer token, or a verified client
    certificate whose HSA-id a target names), or ``Unauthenticated``."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if not header and _api().cert_targets:
        api = _api()
        access = api.access
        caller = identity.caller_of(request.environ, remote_addr=request.remote_addr,
                                    proxy_header=access.proxy_cert_header if access else None,
                                    proxy_addresses=list(access.proxy_addresses) if access else [], ca=api.authority)
        if caller is not None and caller.hsa_id in api.cert_targets:
            return api.cert_targets[caller.hsa_id]
        if caller is not None:
            log.warning("api caller's certificate names no target", extra={"presented_hsa_id": caller.hsa_id})
            raise Unauthenticated(f"the client certificate ({caller.hsa_id}) is not one a target is configured with.")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the call has no bearer token (or client certificate).")
    digest = token_digest(token.strip())
    for known, target in _api().tokens.items():
        if hmac.compare_digest(known, digest):
            return target
    raise Unauthenticated("the bearer token is not one the gateway knows.")


def _case(target: str, case_id: str) -> dict[str, Any]:
    """The case ``case_id`` names, by any id it is known by: the gateway's, 1177's, or the
    caller's own (its provider case id); only the caller's own cases."""
    row = _api().store.find_case(case_id, target=target)
    if row is None:
        raise NotFound(f"there is no case '{case_id[:64]}'.", field="caseId")
    if row["target"] != target:
        raise Forbidden(f"case '{case_id[:64]}' is not routed to your target.", field="caseId")
    return row


def _json() -> dict[str, Any]:
    limit = _api().max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"the body is {request.content_length} bytes; the limit is {limit}.")
    if (request.mimetype or "") != "application/json":
        raise BadJson("Content-Type must be application/json.")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge(f"the body is over the limit of {limit} bytes.")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadJson("the body is not valid JSON.") from None
    except RecursionError:
        raise BadJson(f"the body is nested deeper than {MAX_JSON_DEPTH} levels.") from None
    if not isinstance(data, dict):
        raise BadJson("the body must be a JSON object.")
    _check_shape(data, surrogates=_ESCAPED_SURROGATE.search(raw) is not None)
    return data


BodyT = TypeVar("BodyT", bound=updates.Body)


def _body(model: type[BodyT]) -> BodyT:
    """The call's JSON body, validated by its model (``updates.BODIES``): the same model the
    OpenAPI document describes it by."""
    return updates.read(model, _json(), max_attachment_bytes=_api().max_attachment_bytes)


#: No body this API describes is nested deeper than this.
MAX_JSON_DEPTH = 16
# a lone surrogate can only come from a \uD800-\uDFFF escape (raw UTF-8 cannot carry one)
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_shape(data: Any, *, surrogates: bool) -> None:
    """Refuse a body nested deeper than ``MAX_JSON_DEPTH`` or, when its raw text escapes a
    surrogate, one whose strings hold a lone surrogate (no text can carry it)."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, dict):
            items: Any = value.items()
        elif isinstance(value, list):
            items = ((f"[{i}]", v) for i, v in enumerate(value))
        else:
            if surrogates and isinstance(value, str) and _SURROGATE.search(value):
                raise BadJson(f"'{where or 'body'}' holds a lone UTF-16 surrogate, which is not a character.",
                              field=where or None)
            continue
        if depth >= MAX_JSON_DEPTH:
            raise BadJson(f"the body is nested deeper than {MAX_JSON_DEPTH} levels.", field=where or None)
        for key, item in items:
            if surrogates and isinstance(key, str) and _SURROGATE.search(key):
                raise BadJson("a key of the body holds a lone UTF-16 surrogate, which is not a character.",
                              field=where or None)
            path = f"{where}{key}" if key.startswith("[") else (f"{where}.{key}" if where else key)
            stack.append((item, path, depth + 1))


def _carried(action: str, item: Any) -> None:
    """Refuse what the national profile cannot carry to 1177 (422 with its code: files, a
    message kind, a status change or a registration it has no contract for) before anything
    is stored, rather than queue a row that could only go dead."""
    carries = _api().carries
    if carries is not None:
        carries.refuse(action, item)


def _stored(target: str, what: str, **extra: Any) -> None:
    _api().on_stored()
    log.info(what, extra={"target": target, **extra})


@bp.before_request
def _correlate() -> None:
    correlation = (request.headers.get("x-correlation-id") or "").strip()[:128] or str(uuid.uuid4())
    request.environ["gateway.correlation_id"] = correlation
    request.environ["gateway.correlation_token"] = logs.correlation_id.set(correlation)


@bp.teardown_request
def _uncorrelate(_: BaseException | None) -> None:
    # the server's threads serve request after request: the next one must not carry this id
    token = request.environ.pop("gateway.correlation_token", None)
    if token is not None:
        logs.correlation_id.reset(token)


def _correlation() -> str:
    return request.environ.get("gateway.correlation_id", "")


# -- the calls --------------------------------------------------------------------------------------


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document(_api().version))


@bp.post("/v1/cases/<case_id>/messages")
def post_message(case_id: str) -> Response:
    target = _target()
    row = _case(target, case_id)
    case_id = row["case_id"]
    api = _api()
    data = _body(updates.Reply)
    message = updates.reply(data, case_id=case_id, target=target, units=api.units, clock=api.clock,
                            case_unit=row["receiver_hsa_id"], citizen_started=row["origin"] == "1177",
                            max_attachments=api.max_attachments,
                            max_attachment_bytes=api.max_attachment_bytes)
    _carried("add_message", message)
    guard = updates.guard(message, api.store.case_person_ids(case_id), require_text=api.require_text)
    accepted = api.store.add_reply(message, hold_s=api.review_s, origin="api", correlation_id=_correlation(),
                                   reopen=data.reopen, guard=guard)
    held = guard.held
    if not accepted.created:  # the same message again: answer with what is stored (it may have been released)
        stored = api.store.outgoing_message(case_id, message.message_id)
        guard, held = stored["guard"], stored["outbox_status"] == "held"
    _stored(target, "message to citizen held by the wrong-patient guard" if held else "message to citizen queued",
            case_id=case_id, message_id=message.message_id, kind=message.kind, sender_hsa_id=message.sender_hsa_id)
    send_after = api.clock.instant() + dt.timedelta(seconds=api.review_s)
    queued = MessageQueued(message_id=message.provider_message_id or accepted.ref_id,
                           status="held" if api.review_s > 0 or held else "queued",
                           send_after=None if held else send_after.isoformat(), created=accepted.created,
                           guard=_guard_view(guard))
    if held:
        queued = queued.model_copy(update=dict(code=MessageHeld.code, message=_held_text(guard), hint=MessageHeld.hint))
    return _answer(queued, 202)


def _guard_view(guard: GuardOutcome) -> Guard:
    """The wrong-patient guard's outcome as the API shows it: places, never the ids."""
    return Guard(checked=guard.checked, held=guard.held,
                 findings=[Finding(where=f.where, page=f.page, attachment=f.attachment, kind=f.kind, count=f.count)
                           for f in guard.findings])


def _held_text(guard: GuardOutcome) -> str:
    foreign = ", ".join(f.place for f in guard.foreign)
    unread = ", ".join(f.place for f in guard.not_checked)
    parts = []
    if foreign:
        parts.append(f"{foreign} names a personnummer or samordningsnummer that is neither the citizen's "
                     "nor their representative's")
    if unread and not foreign:
        parts.append(f"{unread} has no readable text to check (outbound.guard.require_text)")
    return redact_person_ids("held by the wrong-patient guard, not sent: " + "; ".join(parts) + ".")


def _message_view(case_id: str, message_id: str) -> MessageView:
    row = _api().store.outgoing_message(case_id, message_id)
    content = row["content"]
    guard_held = row["outbox_status"] == "held"
    shown = row["provider_message_id"] or row["message_id"]
    return MessageView(
        message_id=shown, case_id=case_id, kind=content["kind"], subject=content.get("subject"),
        body=content["text"], sender_hsa_id=content.get("sender_hsa_id"), sender_name=content.get("sender_name"),
        sent_by=Sender(role=content.get("sent_by_role"), name=content.get("sent_by_name"))
        if content.get("sent_by_role") or content.get("sent_by_name") else None,
        status=row["status"], held_by_guard=guard_held,
        send_after=row["not_before"] if row["outbox_status"] == "pending" else None,
        released=Release(at=row["released_at"], by=row["released_by"]) if row["released_at"] else None,
        guard=_guard_view(row["guard"]),
        attachments=[MessageAttachment(n=i, file_name=a["file_name"], mime_type=a["mime_type"], sha256=a["sha256"],
                                       size=a["size"], href=f"/api/v1/cases/{case_id}/messages/{shown}/attachments/{i}")
                     for i, a in enumerate(row["attachments"])],
    )


@bp.get("/v1/cases/<case_id>/messages/<message_id>")
def get_message(case_id: str, message_id: str) -> Response:
    """The preview of a message to the citizen (rule 14): what will be sent, as stored."""
    target = _target()
    case_id = _case(target, case_id)["case_id"]
    return _answer(_message_view(case_id, message_id))


@bp.get("/v1/cases/<case_id>/messages/<message_id>/attachments/<n>")
def get_message_attachment(case_id: str, message_id: str, n: str) -> Response:
    """The bytes of a message's attachment ``n`` (0-based): the very bytes the worker sends."""
    target = _target()
    case_id = _case(target, case_id)["case_id"]
    if not re.fullmatch(r"\d{1,3}", n):
        raise NotFound(f"there is no attachment '{n[:8]}'.", field="n")
    found = _api().store.outgoing_attachment(case_id, message_id, int(n))
    response = Response(found.data, mimetype=found.mime_type)
    response.headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(found.file_name)}"
    response.headers["X-Content-SHA256"] = found.sha256
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@bp.post("/v1/cases/<case_id>/messages/<message_id>/release")
def release_message(case_id: str, message_id: str) -> Response:
    """Confirm a message the wrong-patient guard holds: it is sent (once)."""
    target = _target()
    case_id = _case(target, case_id)["case_id"]
    api = _api()
    state = api.store.release_message(message_id, by=f"api:{target}", case_id=case_id)
    _stored(target, "message to citizen released", case_id=case_id, message_id=message_id)
    return _answer(Released(message_id=message_id, status=state, released=True))


@bp.post("/v1/cases/<case_id>/messages/<message_id>/cancel")
def cancel_message(case_id: str, message_id: str) -> Response:
    target = _target()
    case_id = _case(target, case_id)["case_id"]
    _api().store.cancel_message(message_id, by=f"api:{target}", case_id=case_id)  # only a message of this case
    _stored(target, "message to citizen cancelled", case_id=case_id, message_id=message_id)
    return _answer(Cancelled(message_id=message_id, status="cancelled"))


@bp.post("/v1/cases/<case_id>/status")
def post_status(case_id: str) -> Response:
    target = _target()
    row = _case(target, case_id)
    case_id = row["case_id"]
    api = _api()
    update = updates.status(_body(updates.Status), case_id=case_id, case_type=CaseType(row["case_type"]), target=target,
                            codes=api.codes)
    _carried("update_status", update)
    status_id = api.store.add_status(update, origin="api", correlation_id=_correlation())
    _stored(target, "status queued", case_id=case_id, status=update.status.value)
    return _answer(StatusQueued(status_id=status_id, status=update.status.value, queued=True), 202)


@bp.post("/v1/cases")
def register_case() -> Response:
    target = _target()
    api = _api()
    case, external_id, channel, unit_code = updates.external_case(
        _body(updates.ExternalCase), target=target, units=api.units, clock=api.clock, max_attachment_bytes=api.max_attachment_bytes
    )
    _carried("register_case", case)
    accepted = api.store.register_external(case, target=target, provider_unit_code=unit_code,
                                           external_case_id=external_id, channel=channel, correlation_id=_correlation(),
                                           reserve_receipt=case.case_type.value in api.receipt_types)
    _stored(target, "external case registered", case_id=accepted.case_id, channel=channel)
    return _answer(Registered(case_id=accepted.case_id, external_case_id=external_id, status="registering"),
                   201 if accepted.created else 200)


@bp.get("/v1/cases/<case_id>")
def get_case(case_id: str) -> Response:
    target = _target()
    case_id = _case(target, case_id)["case_id"]
    view = _api().store.timeline(case_id)
    case = view["case"]
    return _answer(CaseView(
        case_id=case["case_id"],
        origin=case["origin"],
        case_type=case["case_type"],
        receiver_hsa_id=case["receiver_hsa_id"],
        unit_code=case["provider_unit_code"],
        provider_case_id=case["provider_case_id"],
        national_case_id=case["national_case_id"],
        delivery_status=case["status"],
        status=case["citizen_status"],
        received_at=case["received_at"],
        attachments=[CaseAttachment(position=a["position"], file_name=a["file_name"], mime_type=a["mime_type"],
                                    size=a["size"], sha256=a["sha256"])
                     for a in _api().store.case_attachments(case_id)],
        messages=[CaseMessage(message_id=m["provider_message_id"] or m["message_id"], direction=m["direction"],
                              kind=m["kind"], status=m["status"], created_time=m["created_time"], sent_at=m["sent_at"])
                  for m in view["messages"]],
        statuses=[CaseStatusChange(status_id=s["id"], status=s["status"], state=s["state"], created_at=s["created_at"],
                                   sent_at=s["sent_at"])
                  for s in view["statuses"]],
        timeline=[TimelineEvent(at=e["at"], direction=e["direction"], event=e["event"], status=e["status"],
                                target=e["target"], message_id=e["message_id"], error_code=e["error_code"])
                  for e in view["events"]],
    ))


@bp.get("/v1/cases/<case_id>/attachments/<ref>")
def get_case_attachment(case_id: str, ref: str) -> Response:
    """One of the case's own attachments, by position (1-based) or SHA-256: only the caller's
    own cases; another target's case is answered as an unknown one (404 GW032). Audited."""
    target = _target()
    api = _api()
    row = api.store.find_case(case_id, target=target)
    if row is None or row["target"] != target:
        raise NotFound(f"there is no case '{case_id[:64]}'.", field="caseId")
    found = api.store.case_attachment(row["case_id"], ref)
    if found is None:
        raise NotFound(f"case '{case_id[:64]}' has no attachment '{ref[:64]}'.", field="n")
    api.store.audit(target, "api", "download", f"case {row['case_id']}",
                    f"attachment {found['position']} {found['sha256'][:16]} ({found['mime_type']})")
    log.info("attachment fetched", extra={"target": target, "case_id": row["case_id"], "position": found["position"]})
    response = send_file(io.BytesIO(found["data"]), mimetype=found["mime_type"] or "application/octet-stream",
                         as_attachment=True, download_name=safe_file_name(found["file_name"] or ""),
                         max_age=0, etag=False, conditional=False)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"
    return response


# -- the OpenAPI document: generated from the bodies (updates) and the answers (above) -------------------------

REF = "#/components/schemas/{model}"
FILE_TYPES = rules.ATTACHMENT_TYPES


class _Schema(GenerateJsonSchema):
    """JSON Schema 2020-12 (OpenAPI 3.1's) of the models, without a title per property."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


@functools.cache
def schemas() -> dict[str, Any]:
    """The components of the document: every body (as validated) and every answer (as
    serialized), by model name."""
    _, top = models_json_schema([(m, "validation") for m in updates.BODIES] + [(m, "serialization") for m in VIEWS],
                                ref_template=REF, schema_generator=_Schema)
    return top["$defs"]


def _json_of(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}


def _error_responses(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed body: not JSON, a wrong type, a missing or unknown field (GW033)",
            401: "No or wrong token (GW030)", 403: "Case of another target (GW031)",
            404: "No such case or message (GW032)",
            409: "Conflict: id reused, message already sent, not held, or the case is closed (GW028, GW034, GW041, GW048)",
            410: "The content was purged after the retention period (GW040)",
            413: "Body too large (GW010)",
            422: "A 1177 rule or limit refuses it (GW020-GW029, GW035, GW036, GW042, GW044, GW046), "
                 "or the national profile cannot carry it (GW083-GW085)"}
    return {str(c): {"description": text[c], "content": _json_of(Error)} for c in codes}


def _ok(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": _json_of(model)}


def _request_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": _json_of(model)}


def _file(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {mime: {"schema": {"type": "string", "contentMediaType": mime}} for mime in FILE_TYPES}}


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 description of this API: its paths here, its bodies and answers
    generated from the models that validate and build them."""
    case_id = {"name": "caseId", "in": "path", "required": True, "schema": {"type": "string", "maxLength": rules.MAX_ID},
               "description": "1177's caseId, the caseId the gateway returned when the case was registered, or "
                              "your own id for the case"}
    message_id = {"name": "messageId", "in": "path", "required": True,
                  "schema": {"type": "string", "maxLength": rules.MAX_ID},
                  "description": "Your messageId, or the one the gateway returned."}
    return {
        "openapi": "3.1.0",
        "info": {"title": "1177 integration gateway: provider API", "version": version,
                 "description": "What a care provider's system says back to the citizen through 1177. "
                                "Authenticate with the bearer token configured for your target."},
        "servers": [{"url": "/api"}],
        "security": [{"bearer": []}],
        "paths": {
            "/v1/cases": {"post": {
                "summary": "Register a case that started outside 1177 (phone, letter, visit)",
                "operationId": "registerCase", "requestBody": _request_body(updates.ExternalCase),
                "responses": {"201": _ok(Registered, "Registered; 1177 is told in the background"),
                              "200": _ok(Registered, "Already registered (same externalCaseId and content)"),
                              **_error_responses(400, 401, 409, 413, 422)}}},
            "/v1/cases/{caseId}": {"get": {
                "summary": "A case's status and timeline (metadata, no citizen text)",
                "operationId": "getCase", "parameters": [case_id],
                "responses": {"200": _ok(CaseView, "The case"), **_error_responses(401, 403, 404)}}},
            "/v1/cases/{caseId}/attachments/{n}": {"get": {
                "summary": "One of the case's own attachments (the bytes), by position or SHA-256; each fetch is audited",
                "operationId": "getAttachment",
                "parameters": [case_id, {"name": "n", "in": "path", "required": True,
                                         "description": "The attachment's position in the case (1-based, as listed by getCase), "
                                                        "or its sha256 (64 hex digits)",
                                         "schema": {"type": "string", "maxLength": 64}}],
                "responses": {"200": _file("The file, with its stored MIME type and a safe file name in "
                                           "Content-Disposition"),
                              **_error_responses(401, 404, 410)}}},
            "/v1/cases/{caseId}/messages": {"post": {
                "summary": "Send a message to the citizen's 1177 inbox",
                "operationId": "postMessage", "parameters": [case_id], "requestBody": _request_body(updates.Reply),
                "responses": {"202": _ok(MessageQueued, "Queued (held for review when a review window is configured, "
                                                        "or by the wrong-patient guard: GW047)"),
                              **_error_responses(400, 401, 403, 404, 409, 410, 413, 422)}}},
            "/v1/cases/{caseId}/messages/{messageId}": {"get": {
                "summary": "Preview a message to the citizen: what will be sent (kind, subject, body, sender, status, "
                           "the wrong-patient guard's findings, attachments with sha256 and size)",
                "operationId": "getMessage", "parameters": [case_id, message_id],
                "responses": {"200": _ok(MessageView, "The message as stored and as it will be sent"),
                              **_error_responses(401, 403, 404, 410)}}},
            "/v1/cases/{caseId}/messages/{messageId}/attachments/{n}": {"get": {
                "summary": "The bytes of a message's attachment n (0-based): the same bytes that are sent",
                "operationId": "getMessageAttachment",
                "parameters": [case_id, message_id, {"name": "n", "in": "path", "required": True,
                                                     "schema": {"type": "integer", "minimum": 0,
                                                                "maximum": rules.MAX_CARE_ATTACHMENTS - 1}}],
                "responses": {"200": _file("The file"), **_error_responses(401, 403, 404, 410)}}},
            "/v1/cases/{caseId}/messages/{messageId}/cancel": {"post": {
                "summary": "Cancel a message during its review window (a sent message cannot be recalled)",
                "operationId": "cancelMessage", "parameters": [case_id, message_id],
                "responses": {"200": _ok(Cancelled, "Cancelled"), **_error_responses(401, 403, 404, 409)}}},
            "/v1/cases/{caseId}/messages/{messageId}/release": {"post": {
                "summary": "Confirm a message the wrong-patient guard holds (GW047): it is then sent, once",
                "operationId": "releaseMessage", "parameters": [case_id, message_id],
                "responses": {"200": _ok(Released, "Released (a second release answers the same)"),
                              **_error_responses(401, 403, 404, 409)}}},
            "/v1/cases/{caseId}/status": {"post": {
                "summary": "Change the case's status in 1177",
                "operationId": "postStatus", "parameters": [case_id], "requestBody": _request_body(updates.Status),
                "responses": {"202": _ok(StatusQueued, "Queued"),
                              **_error_responses(400, 401, 403, 404, 410, 413, 422)}}},
        },
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": schemas()},
    }
