"""The RIV-TA producer endpoint that 1177 and the national platform call.

Role: a Flask blueprint and, in front of the Flask app, a thin WSGI path for ``POST /rivta``
(``RivtaPath``), which answers every 1177-side contract, dispatching on
the namespace of the Body's first child as the platform does (ProcessCase,
ProcessCaseMessage, PingForConfiguration, GetMedicationList). ``GET /rivta`` lists the
WSDLs, served with the gateway's own address filled in (``gateway.public_url``, or a
loopback request's own; never a caller's Host otherwise), and their XSDs: the shipped
files, or the platform's own where ``rivta.contracts_dir`` holds them (``rivta.ContractFiles``,
the same files the requests are validated with). Each producer WSDL also comes as the
variant with its body part first (``?wsdl&variant=body-first``) for clients such as node-soap.

May import: ``rivta``, ``rules``, ``model``, ``store``, ``errors``, ``logs``, ``identity``. The unit
directory (``mapping.Units``) is handed in by the composition root as a ``UnitDirectory``.

Invariants:
- The body is read with a hard size limit before anything parses it.
- A case or message is answered ``OK`` only after it and its outbox row are committed.
- The checks run in one order: transport (Content-Type, size, caller), envelope (SOAP 1.1,
  mustUnderstand headers, contract, SOAPAction), address (LogicalAddress), schema; so an
  unknown LogicalAddress is GW016 even when the body also breaks the schema.
- A refused request has written nothing; its answer says why with a ``GW0xx`` code:
  a SOAP fault (HTTP 500) for technical refusals, ``resultCode ERROR`` for rule ones.
- No response or log line carries a stack trace, file content or a person id in clear.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import dataclasses
import datetime as dt
import functools
import logging
import posixpath
import time
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from flask import Blueprint, Flask, Response, current_app, request
from lxml import etree
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Request

import logs
import rivta
import rules
import identity
from errors import (
    CallerNotAllowed,
    CitizenFilesRefused,
    GatewayError,
    InternalError,
    InvalidValue,
    NoPublicAddress,
    NotSoap11,
    PayloadTooLarge,
    RuleViolation,
    UnknownLogicalAddress,
    UnsupportedMediaType,
)
from model import (
    Attachment,
    Case,
    Medication,
    Message,
    PersonId,
    Reading,
    WIRE_ZONE,
    build,
    hsa_id,
    safe_file_name,
)
from store import Store

if TYPE_CHECKING:  # handed in by the composition root
    from clock import Clock

log = logging.getLogger("gateway.inbound")
bp = Blueprint("inbound", __name__)

CORRELATION_HEADER = "x-skltp-correlation-id"
CONSUMER_HEADER = "x-rivta-original-serviceconsumer-hsaid"


class UnitDirectory(Protocol):
    """What intake needs of the units mapping (``mapping.Units`` provides it)."""

    def knows(self, hsa: str, on: dt.date) -> bool: ...

    def route(self, hsa: str, on: dt.date) -> Any | None: ...


@dataclass
class Intake:
    """Everything the endpoint needs, built once by ``gateway.create_app``."""

    store: Store
    units: UnitDirectory
    schemas: rivta.Schemas
    clock: Clock  # clock.SYSTEM: the rules' dates are Swedish dates (Clock.day)
    max_body_bytes: int
    max_attachment_bytes: int = rules.MAX_ATTACHMENT_BYTES
    max_attachments: int = rules.MAX_CITIZEN_ATTACHMENTS
    version: str = "0"
    #: the gateway's own system HSA-id: PingForConfiguration answers for it and for the units
    hsa_id: str | None = None
    #: PingForConfiguration's configuration list (the composition root decides what is in it)
    ping_configuration: dict[str, str] = field(default_factory=dict)
    public_url: str | None = None
    #: the case types whose automatic receipt (outbound.confirmations) follows the delivery;
    #: its place in the case's order is kept at intake, so it is the citizen's first message
    receipt_types: frozenset[str] = frozenset()
    #: called after a new case or message is committed (the worker's ``wake``)
    on_stored: Callable[[], None] = lambda: None
    #: the provider's medication list for (target, unit code, person id): the worker's
    #: ``fetch_medications`` (only the worker calls adapters); raises ``DeliveryError``
    medications: Callable[[str, str, PersonId], list[Medication]] | None = None
    #: who may call (config ``rivta``) and the CA that proxy-forwarded certificates must come from
    access: Any = None
    authority: identity.CertificateAuthority | None = None


def init_app(app: Flask, intake: Intake) -> None:
    app.extensions["gateway.intake"] = intake
    app.register_blueprint(bp)
    app.wsgi_app = RivtaPath(app.wsgi_app, intake)  # type: ignore[method-assign]


def _intake() -> Intake:
    return current_app.extensions["gateway.intake"]


# -- the endpoint ---------------------------------------------------------------------------------


class RivtaPath:
    """WSGI middleware: ``POST /rivta`` is answered here, by ``answer`` on a plain werkzeug
    ``Request``, and everything else goes on to the Flask app. The SOAP endpoint needs none
    of what Flask adds to a request (its contexts, the session, URL routing, template and
    error-page machinery), and on a small case that costs as much CPU as the rules do."""

    def __init__(self, app: Callable[..., Any], intake: Intake):
        self.app, self.intake = app, intake

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != "/rivta" or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        req = Request(environ)
        response = answer(self.intake, req)
        if (req.content_length or 0) > _BIG_REQUEST:
            response.call_on_close(_return_memory)  # once the request's objects are gone
        return response(environ, start_response)


def answer(intake: Intake, req: Request) -> Response:
    """The answer to a ``POST /rivta``: the contract's response, a ``resultCode ERROR``
    for a rule broken, or a SOAP fault."""
    started = time.perf_counter()
    correlation = (req.headers.get(CORRELATION_HEADER) or "").strip()[:128] or str(uuid.uuid4())
    token = logs.correlation_id.set(correlation)
    consumer = (req.headers.get(CONSUMER_HEADER) or "").strip()[:64] or None
    log_id = str(uuid.uuid4())
    contract: rivta.Contract | None = None
    try:
        caller = _check_caller(intake, req)
        # the raw body is not kept once parsed: with 5 × 20 MB files every copy counts
        envelope = rivta.read_envelope(rivta.parse(_read_body(req, intake.max_body_bytes)))
        soap_action = req.headers.get("SOAPAction")
        contract = rivta.contract_for(envelope, soap_action, lambda: _base_url(intake, req) or "")
        rivta.check_soap_action(soap_action, contract)
        # the order of the checks: transport, envelope, address, schema
        _require_address(intake, envelope, contract, intake.clock.day())
        intake.schemas.validate(envelope.body, contract)
        payload = HANDLERS[contract.name](intake, envelope, correlation, log_id)
        outcome, status = "ok", 200
    except RuleViolation as exc:
        assert contract is not None  # rules run only once the contract is known
        payload = rivta.response_element(contract, rivta.Result.error(exc, log_id))
        outcome, status = exc.code, 200
        log.warning(
            "request refused by rule",
            extra={"contract": contract.name, "error_code": exc.code, "field": exc.field, "log_id": log_id,
                   "consumer_hsa_id": consumer, "detail": exc.message},
        )
    except GatewayError as exc:
        _log_refusal(exc, contract, consumer, log_id)
        return _xml(rivta.fault_for(exc, log_id=log_id), 500, correlation)
    except Exception:
        log.error("internal error", exc_info=True, extra={"log_id": log_id, "contract": contract and contract.name})
        internal = InternalError(f"an unexpected error occurred (reference {log_id}).")
        return _xml(rivta.fault_for(internal, log_id=log_id), 500, correlation)
    finally:
        logs.correlation_id.reset(token)
    if log.isEnabledFor(logging.INFO):
        log.info(
            "request answered",
            extra={"contract": contract.name, "outcome": outcome, "log_id": log_id, "consumer_hsa_id": consumer,
                   "caller_hsa_id": caller.hsa_id if caller else None,
                   "logical_address": envelope.logical_address if outcome == "ok" else None,
                   "correlation_id": correlation, "duration_ms": round((time.perf_counter() - started) * 1000, 1)},
        )
    return _xml(payload if isinstance(payload, bytes) else rivta.envelope(payload), status, correlation)


_BIG_REQUEST = 8 * 1024 * 1024


def _return_memory() -> None:
    """Give the memory of a big request back to the OS (glibc keeps freed blocks otherwise,
    and a process that took 5 × 20 MB files would stay that size)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _check_caller(intake: Intake, req: Request) -> identity.Caller | None:
    """The verified caller; with ``rivta.require_client_cert`` it must be on the allow-list."""
    access = intake.access
    if access is None:
        return None
    caller = identity.caller_of(req.environ, remote_addr=req.remote_addr, proxy_header=access.proxy_cert_header,
                                proxy_addresses=list(access.proxy_addresses), ca=intake.authority)
    if not access.require_client_cert:
        return caller
    if caller is None:
        log.warning("caller refused: no verified client certificate", extra={"remote_addr": req.remote_addr})
        raise CallerNotAllowed("the call carries no verified client certificate.")
    if caller.hsa_id not in access.allowed_consumers:
        log.warning("caller refused: not on the allow-list",
                    extra={"presented_hsa_id": caller.hsa_id, "subject": caller.subject, "via": caller.via,
                           "remote_addr": req.remote_addr})
        raise CallerNotAllowed(f"the caller {caller.hsa_id or '(a certificate without SERIALNUMBER)'} may not call this gateway.")
    return caller


def _log_refusal(exc: GatewayError, contract: rivta.Contract | None, consumer: str | None, log_id: str) -> None:
    log.warning(
        "request refused",
        extra={"error_code": exc.code, "contract": contract.name if contract else None, "log_id": log_id,
               "consumer_hsa_id": consumer, "detail": exc.message},
    )


def _xml(body: bytes, status: int, correlation: str) -> Response:
    response = Response(body, status=status, content_type=rivta.CONTENT_TYPE)
    response.headers[CORRELATION_HEADER] = correlation
    return response


def _read_body(req: Request, limit: int) -> bytes:
    mime = (req.mimetype or "").lower()
    if mime == "application/soap+xml":
        raise NotSoap11("the request is SOAP 1.2 (application/soap+xml); RIV-TA BP 2.1 uses SOAP 1.1.")
    if mime != "text/xml":
        raise UnsupportedMediaType(f"Content-Type '{mime[:60] or 'none'}' is not SOAP 1.1's text/xml.")
    if req.content_length is not None and req.content_length > limit:
        raise PayloadTooLarge(f"the request is {req.content_length} bytes; the limit is {limit}.")
    body = req.stream.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"the request is over the limit of {limit} bytes.")
    return body


# -- contract content → canonical model -----------------------------------------------------------


@functools.cache
def _tag(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


class _Reader:
    """Reads child elements of one contract element by local name (namespace-aware): the
    ``model.Fields`` of a 1177 request, from which ``model.build`` reads the case."""

    __slots__ = ("element", "ns", "_parent", "_name")

    def __init__(self, element: etree._Element, namespace: str, path: str | tuple[_Reader, str]):
        self.element, self.ns = element, namespace
        # the place, for error messages only: worked out when asked for
        self._parent: _Reader | None
        self._parent, self._name = (None, path) if isinstance(path, str) else path

    @property
    def path(self) -> str:
        return self._name if self._parent is None else f"{self._parent.path}/{self._name}"

    @property
    def where(self) -> str:
        return self.path

    def value(self, name: str) -> str | None:
        return self.text(name)

    def _first(self, name: str, namespace: str | None) -> etree._Element | None:
        # (not next(iterchildren(tag)): in the server that kept the peak memory of a case with
        # 5 × 20 MB files a fifth higher, 4.67× the body against 3.86×, bench/limit.py --big 5)
        return self.element.find(_tag(namespace or self.ns, name))

    def child(self, name: str, namespace: str | None = None) -> _Reader | None:
        found = self._first(name, namespace)
        return _Reader(found, rivta.CORE_NS, (self, name)) if found is not None else None

    def children(self, name: str, namespace: str | None = None) -> list[_Reader]:
        return [
            _Reader(e, rivta.CORE_NS, (self, f"{name}[{i}]"))
            for i, e in enumerate(self.element.iterchildren(_tag(namespace or self.ns, name)), start=1)
        ]

    def text(self, name: str, namespace: str | None = None) -> str | None:
        found = self._first(name, namespace)
        if found is None:
            return None
        text = found.text
        return "" if text is None else text

    def required(self, name: str, namespace: str | None = None) -> str:
        value = self.text(name, namespace)
        if value is None:  # the XSD makes this unreachable; kept as a guard
            raise InvalidValue(f"{self.path}/{name} is missing.", field=f"{self.path}/{name}")
        return value

    def flag(self, name: str) -> bool:
        return (self.text(name) or "").strip() in ("true", "1")


def _timestamp(value: str, where: str) -> dt.datetime:
    # YYYYMMDDhhmmss by hand: strptime costs as much as the rest of reading a case's times
    digits = value.strip()
    try:
        if len(digits) != 14 or not (digits.isascii() and digits.isdigit()):
            raise ValueError(digits)
        return dt.datetime(int(digits[:4]), int(digits[4:6]), int(digits[6:8]), int(digits[8:10]),
                           int(digits[10:12]), int(digits[12:]), tzinfo=WIRE_ZONE)
    except ValueError:
        raise InvalidValue(f"{where} '{value[:20]}' is not a valid date and time.", field=where) from None


def _date(value: str, where: str) -> dt.date:
    try:
        return dt.datetime.strptime(value.strip(), "%Y%m%d").date()
    except ValueError:
        raise InvalidValue(f"{where} '{value[:20]}' is not a valid date.", field=where) from None


def _person(reader: _Reader) -> PersonId:
    pid = reader.child("personId")
    if pid is None:
        raise InvalidValue(f"{reader.path}/personId is missing.", field=f"{reader.path}/personId")
    return _person_id(pid)


def _person_id(pid: _Reader) -> PersonId:
    return PersonId.parse(pid.required("id").strip(), pid.required("type").strip(), field=pid.path)


def _attachment(reader: _Reader) -> Attachment:
    try:
        data = base64.b64decode(reader.required("data"), validate=False)
    except (binascii.Error, ValueError):
        raise InvalidValue(f"{reader.path}/data is not valid base64.", field=f"{reader.path}/data") from None
    # 1177 has accepted the citizen's file: a path, CR/LF or a right-to-left override in its
    # name is dropped here (never refused), so that no provider and no inbox ever sees it
    found = Attachment(safe_file_name(reader.required("fileName")), reader.required("mimeType").strip(), data)
    # the tree's base64 text is no longer needed: free it now rather than with the tree
    data_element = reader._first("data", None)
    if data_element is not None:
        data_element.text = None
    return found


#: How a 1177 request writes the model's values (its names: ``model.wire_name``).
WIRE = Reading(
    wire=True,
    flag=lambda raw: str(raw).strip() in ("true", "1"),
    day=lambda raw, where: _date(str(raw), where),
    instant=lambda raw, where: _timestamp(str(raw), where),
    person=lambda source: _person_id(typing.cast(_Reader, source)),
    attachment=lambda source: _attachment(typing.cast(_Reader, source)),
    check_hsa=True,
)


def _case_from(element: etree._Element, ns: str) -> Case:
    case = _Reader(element, ns, "ProcessCase").child("case", ns)
    assert case is not None  # required by the XSD
    read = build(Case, case, WIRE)
    contact = read.subject_of_care.contact
    if contact is not None and not contact.consent_to_share:
        # rule 8: contact details only with the citizen's consent; without it they are not kept at all
        read = dataclasses.replace(read, subject_of_care=dataclasses.replace(read.subject_of_care, contact=None))
    return read


def _message_from(element: etree._Element, ns: str) -> Message:
    return build(Message, _Reader(element, ns, "ProcessCaseMessage"), WIRE, direction="in", kind="FOLLOW_UP")


def case_from_xml(body: bytes, schemas: rivta.Schemas) -> Case:
    """A ``Case`` from a ProcessCase request, as a whole SOAP envelope or just its
    ``ProcessCase`` element (for ``gateway mappings try``): parsed, validated, not stored."""
    root = rivta.parse(body)
    element = rivta.read_envelope(root).body if etree.QName(root).localname == "Envelope" else root
    if etree.QName(element).namespace != rivta.PROCESS_CASE.responder_ns or etree.QName(element).localname != "ProcessCase":
        raise InvalidValue("the file does not hold a ProcessCase request.")
    schemas.validate(element, rivta.PROCESS_CASE)
    return _case_from(element, rivta.PROCESS_CASE.responder_ns)


# -- handlers ------------------------------------------------------------------------------------


def _require_address(intake: Intake, envelope: rivta.Envelope, contract: rivta.Contract, today: dt.date) -> str:
    """The LogicalAddress must be a unit the gateway serves; PingForConfiguration may also
    ask for the gateway's own system HSA-id (``gateway.hsa_id``). Nothing else is answered."""
    address = envelope.logical_address
    if not address:
        raise UnknownLogicalAddress("the LogicalAddress header is missing.")
    if contract is rivta.PING and intake.hsa_id and address.upper() == intake.hsa_id.upper():
        return address
    if not intake.units.knows(address, today):
        raise UnknownLogicalAddress(f"LogicalAddress '{address[:64]}' is not a unit this gateway serves.")
    return address


#: What a handler answers: the response element, or the whole SOAP envelope already serialised
#: (``rivta.ok_envelope``).
Payload: TypeAlias = etree._Element | bytes


def handle_process_case(intake: Intake, envelope: rivta.Envelope, correlation: str, log_id: str) -> Payload:
    contract = rivta.PROCESS_CASE
    today = intake.clock.day()
    case = _case_from(envelope.body, contract.responder_ns)
    rules.check_case(
        case, today=today, max_attachments=intake.max_attachments, max_attachment_bytes=intake.max_attachment_bytes
    )
    route = intake.units.route(case.receiver.hsa_id, today)
    if route is None:
        raise InvalidValue(
            f"case/receiver/hsaId {case.receiver.hsa_id} is not a unit this gateway serves.", field="case/receiver/hsaId"
        )
    if case.attachments and not route.unit.takes_citizen_files(case.case_type.value):
        raise CitizenFilesRefused(f"case/attachment: {route.unit.hsa_id} takes no files from citizens in "
                                  f"{case.case_type.value} cases.", field="case/attachment")
    accepted = intake.store.accept_case(
        case, target=route.target, provider_unit_code=route.unit.code, correlation_id=correlation,
        reserve_receipt=case.case_type.value in intake.receipt_types,
    )
    if accepted.created:
        intake.on_stored()
    log.info(
        "case accepted" if accepted.created else "case already received",
        extra={"case_id": case.case_id, "receiver_hsa_id": case.receiver.hsa_id, "target": route.target,
               "case_type": case.case_type.value, "attachments": len(case.attachments)},
    )
    return rivta.ok_envelope(contract, log_id)


def handle_process_case_message(intake: Intake, envelope: rivta.Envelope, correlation: str, log_id: str) -> Payload:
    contract = rivta.PROCESS_CASE_MESSAGE
    message = _message_from(envelope.body, contract.responder_ns)
    rules.check_citizen_message(
        message, max_attachments=intake.max_attachments, max_attachment_bytes=intake.max_attachment_bytes
    )
    if message.attachments:  # rule 12: the clinic decides in which case types citizens attach files
        case = intake.store.find_case(message.case_id)
        route = intake.units.route(case["receiver_hsa_id"], intake.clock.day()) if case else None
        if case and route is not None and not route.unit.takes_citizen_files(case["case_type"]):
            raise CitizenFilesRefused(f"attachment: {route.unit.hsa_id} takes no files from citizens in "
                                      f"{case['case_type']} cases.", field="attachment")
    accepted = intake.store.accept_message(message, correlation_id=correlation)
    if accepted.created:
        intake.on_stored()
    log.info(
        "message accepted" if accepted.created else "message already received",
        extra={"case_id": message.case_id, "message_id": message.message_id, "attachments": len(message.attachments)},
    )
    return rivta.ok_envelope(contract, log_id)


def handle_ping(intake: Intake, envelope: rivta.Envelope, correlation: str, log_id: str) -> Payload:
    configuration = dict(intake.ping_configuration)
    try:
        intake.store.check_writable()
        configuration["database"] = "writable"
    except GatewayError as exc:
        configuration["database"] = f"unavailable ({exc.code})"
    return rivta.ping_response(intake.version, intake.clock.local_time().strftime("%Y%m%d%H%M%S"), configuration)


def handle_get_medication_list(intake: Intake, envelope: rivta.Envelope, correlation: str, log_id: str) -> Payload:
    """The citizen's medications for 1177's renewal form, from the provider, under rule 9."""
    contract = rivta.GET_MEDICATION_LIST
    today = intake.clock.day()
    request_ = _Reader(envelope.body, contract.responder_ns, "GetMedicationList")
    receiver = request_.child("receiver", contract.responder_ns)
    subject = request_.child("subjectOfCare", contract.responder_ns)
    assert receiver is not None and subject is not None  # required by the XSD
    unit_hsa = hsa_id(receiver.required("hsaId"), field="receiver/hsaId")
    person = _person(subject)
    proxy = request_.child("representative", contract.responder_ns)
    representative = _person(proxy) if proxy else None
    route = intake.units.route(unit_hsa, today)
    if route is None:
        raise InvalidValue(f"receiver/hsaId {unit_hsa} is not a unit this gateway serves.", field="receiver/hsaId")
    if intake.medications is None:
        raise InvalidValue("this gateway does not offer medication lists.")
    # the rules that need no list come first: nothing is fetched that may not be shown
    why = rules.medication_list_refusal(subject=person, representative=representative,
                                        is_proxy=bool(proxy and proxy.flag("isProxy")), today=today)
    listed: list[Medication] = []
    if why is None:
        fetched = intake.medications(route.target, route.unit.code, person)  # DeliveryError → a technical fault
        listed, why = rules.recent_medications(fetched, today=today)
    result = rivta.Result.info(why, log_id) if why else rivta.Result.ok(log_id)
    response = rivta.response_element(contract, result)
    core = rivta.CORE_NS
    for item in listed:
        element = etree.SubElement(response, f"{{{contract.responder_ns}}}medication")
        etree.SubElement(element, f"{{{core}}}prescriptionId").text = item.prescription_id
        etree.SubElement(element, f"{{{core}}}name").text = item.name
        if item.strength:
            etree.SubElement(element, f"{{{core}}}strength").text = item.strength
        etree.SubElement(element, f"{{{core}}}lastPrescribedDate").text = item.last_prescribed.strftime("%Y%m%d")
    log.info("medication list answered", extra={"receiver_hsa_id": unit_hsa, "target": route.target,
                                                "listed": len(listed), "rule": why})
    return response


HANDLERS: dict[str, Callable[[Intake, rivta.Envelope, str, str], Payload]] = {
    rivta.PROCESS_CASE.name: handle_process_case,
    rivta.PROCESS_CASE_MESSAGE.name: handle_process_case_message,
    rivta.PING.name: handle_ping,
    rivta.GET_MEDICATION_LIST.name: handle_get_medication_list,
}


# -- WSDLs and XSDs over HTTP ---------------------------------------------------------------------


_PRODUCER_WSDLS = frozenset(c.wsdl_relpath for c in rivta.CONTRACTS.values())
#: The folders of the contracts the gateway answers; any other WSDL (AddMessage, UpdateCaseStatus,
#: RegisterCase, a national profile's official files) is consumer-side: 1177 answers it.
_PRODUCER_FOLDERS = frozenset(c.folder for c in rivta.CONTRACTS.values())


def _base_url(intake: Intake, req: Request) -> str | None:
    """The gateway's address for served files: ``gateway.public_url``, or the request's own
    only when it came to a loopback Host; ``None`` otherwise (a Host header is the caller's
    to choose, so it is never written into a WSDL)."""
    if intake.public_url:
        return intake.public_url.rstrip("/")
    if identity.is_loopback_host(identity.host_of(req.host)):
        return req.host_url.rstrip("/")
    return None


@bp.get("/rivta")
def contracts_index() -> Response:
    files = _intake().schemas.files
    base = _base_url(_intake(), request) or ""  # without an address: paths, which a client resolves itself
    lines = [f"RIV-TA endpoint: POST {base}/rivta (SOAP 1.1). WSDLs:"]
    for c in rivta.CONTRACTS.values():
        origin = " (the platform's file, from rivta.contracts_dir)" if files.is_official(c.wsdl_relpath) else ""
        lines.append(f"{c.name}: {base}/rivta/contracts/{c.wsdl_relpath}{origin}")
    lines.append("With the body part first, for clients that put the first part of the input message in the Body "
                 "(node-soap, its issue #704); LogicalAddress is still a SOAP header:")
    lines += [f"{c.name}: {rivta.body_first_url(base, c)}" for c in rivta.CONTRACTS.values()]
    return Response("\n".join(lines) + "\n", content_type="text/plain; charset=utf-8")


@bp.get("/rivta/contracts/<path:path>")
def contract_file(path: str) -> Response:
    """A contract file as served to consumers, from ``rivta.ContractFiles`` (the platform's
    own where ``rivta.contracts_dir`` holds it): imports become URLs of this gateway (paths
    when it has no trusted address), and a producer WSDL's ``soap:address`` becomes the
    gateway's own endpoint. A consumer-side WSDL (AddMessage, UpdateCaseStatus,
    RegisterCase, a national profile's: 1177 answers those, not the gateway) is served
    without its service.
    ``?variant=body-first`` on a producer WSDL: its body part first (``rivta.body_first``)."""
    file = _intake().schemas.files.find(path) if path.endswith((".wsdl", ".xsd")) else None
    if file is None:
        raise NotFound()
    variant = request.args.get("variant")
    if variant is not None and (variant != rivta.BODY_FIRST or path not in _PRODUCER_WSDLS):
        raise NotFound(f"No variant '{variant[:40]}' of {posixpath.basename(path)[:100]}: the variant "
                       f"'{rivta.BODY_FIRST}' is served for the producer WSDLs listed at GET /rivta.")
    try:
        tree = etree.parse(str(file), etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False))
    except (OSError, etree.XMLSyntaxError):
        raise NotFound() from None
    base = _base_url(_intake(), request)
    folder = posixpath.dirname(posixpath.normpath(path))
    for element in tree.iter("{http://www.w3.org/2001/XMLSchema}import", "{http://www.w3.org/2001/XMLSchema}include"):
        location = element.get("schemaLocation")
        if location and "://" not in location:
            element.set("schemaLocation", f"{base or ''}/rivta/contracts/{posixpath.normpath(posixpath.join(folder, location))}")
    if posixpath.basename(folder) not in _PRODUCER_FOLDERS:
        for service in tree.getroot().findall("{http://schemas.xmlsoap.org/wsdl/}service"):
            tree.getroot().remove(service)
    else:
        for address in tree.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address"):
            if base is None:
                return _no_public_address()
            address.set("location", f"{base}/rivta")
    if variant is not None:
        rivta.body_first(tree)
    return Response(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"), content_type="text/xml; charset=utf-8")


def _no_public_address() -> Response:
    exc = NoPublicAddress("the WSDL's address cannot be taken from this request's Host, which is not loopback.")
    log.warning("wsdl refused: no public_url", extra={"error_code": exc.code, "remote_addr": request.remote_addr})
    return Response(f"{exc.code} {exc.message} {exc.hint}\n", status=503, content_type="text/plain; charset=utf-8")


@bp.get("/rivta/<name>")
def contract_wsdl(name: str) -> Response:
    """``GET /rivta/ProcessCase?wsdl`` → the contract's WSDL (``&variant=body-first``: its
    body part first)."""
    for contract in rivta.CONTRACTS.values():
        if contract.name == name:
            return contract_file(contract.wsdl_relpath)
    raise NotFound()
