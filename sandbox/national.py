"""A loopback simulator of 1177 and the national service platform (NTjP), consumer side.

Role: stands in for the 1177 services the gateway *calls* (the gateway is the service
consumer here), in one of two versions of their contracts (``--profile``, the gateway's
``national.profile``):

- ``patientportal-2.0`` (the default): ``AddMessage`` 2.0 (the citizen's 1177 inbox),
  ``UpdateCaseStatus`` 1.0 and ``RegisterCase`` 1.0, the project's own contracts;
- ``mvk-inbox-2.0``: only ``AddMessage`` 2.0 of the legacy MVK inbox
  (``urn:mvk:crm:casemanagement:inbox``), validated against the official schema with one
  correction, said at start (log and ``GET /rivta``): its ``subjectOfCareId`` pattern is
  written ``^[0-9]{8}[0-9pPtTfF][0-9]{3}$``; XSD patterns are anchored already and have
  no ``^``/``$`` anchors, so as written it accepts only values that begin with ``^`` and
  end with ``$`` and refuses every valid personnummer. The simulator validates with
  ``[0-9]{8}[0-9pPtTfF][0-9]{3}`` (``mvk_schema(corrected=False)`` is the file as written).
  Its answer is ``AddMessageResponse`` {``resultCode``, ``resultText``}; a message is a
  notice outside any case thread (``businessObjectId`` is listed as the case it is about).

All SOAP 1.1 RIV-TA BP 2.1 on one endpoint, as the platform offers them. It checks each call the way the platform and 1177 would, answers with a
``ResultType`` and keeps what it received so that tests and the demo can look at the
citizen's inbox. Tests run it in a thread (``sandbox.providers.serve_in_thread``), the
demo as ``python -m sandbox.national --port 8083``.

    POST /rivta             SOAP 1.1; routed on the LogicalAddress header and the Body's
                            first child's namespace (AddMessage, UpdateCaseStatus, RegisterCase)
    GET  /rivta             plain-text list of the contracts served
    GET  /sandbox/inbox     JSON: {"messages": [...], "statuses": {caseId: [...]},
                            "registered": {externalCaseId: caseId}, "cases": {...}}; ?caseId=X
    GET  /sandbox/inbox.html  the same as a readable page, grouped by case (no JavaScript)
    POST /_cases            {"caseId", "subjectOfCareId", "caseType"?}: a case the citizen
                            created in 1177 (so AddMessage/UpdateCaseStatus know it)
    POST /_control          {"fail_next": N, "status": 503, "fault": "Client"|"Server",
                            "result": "ERROR"|"INFO", "message": "...", "delay_s": x}
    GET  /_received         every POST /rivta in order (operation, logicalAddress, headers,
                            valid, parsed fields, outcome)
    POST /_reset            forget everything

Checks, in order (each refusal is a SOAP 1.1 fault, HTTP 500): ``Content-Type`` is
``text/xml``; the body is UTF-8 XML without a DOCTYPE; it is a SOAP 1.1 Envelope with a
Body; the ``{urn:riv:itintegration:registry:1}LogicalAddress`` header is present
(``VP003``) and equal to ``logical_address`` (``VP004``, the platform's "no route"
error); the Body's first child is one of the three contracts (``VP004``); a non-empty
``SOAPAction`` is ``<ResponderNamespace>:<Operation>`` (``SOAPACTION``); the element is
valid against the responder XSD in ``contracts/`` (``SCHEMA_INVALID``; mvk-inbox-2.0's
corrected as above).
Then the 1177 logic answers ``resultCode`` OK or ERROR (``errorCode`` from RIV-TA's
``ErrorCodeEnum``, the simulator's own code in ``subCode``, and ``message``):

- AddMessage: ERROR ``INVALID_PERSON_ID`` if ``subjectOfCareId`` is not a valid
  personnummer/samordningsnummer (Luhn over digits 3-12, a real date, day - 60 for a
  samordningsnummer); ERROR ``UNKNOWN_CASE`` if ``strict_cases`` and the caseId is
  unknown; ERROR ``WRONG_CITIZEN`` if the case is known for another citizen. Otherwise
  the message is in the inbox; the same messageId again answers OK and is stored once.
- UpdateCaseStatus: OK and the status is added to the case's history; ERROR
  ``INVALID_CODE_SYSTEM`` if status is CLOSED and a problem is not in code system
  1.2.752.129.5.1.22 or businessArea not in 1.2.752.129.5.1.21; ERROR
  ``MISSING_CLASSIFICATION`` if a case known to be a COMPLAINT is CLOSED without problem
  and businessArea; ERROR ``UNKNOWN_CASE`` if ``strict_cases`` and the caseId is unknown.
- AddMessage of mvk-inbox-2.0: ERROR ``INVALID_PERSON_ID`` (in ``resultText``) as above;
  otherwise the notice is in the inbox; the same ``message/id`` again answers OK and is
  stored once. No case checks: the legacy inbox knows no cases.
- RegisterCase: ERROR ``INVALID_PERSON_ID`` for an invalid person id; else OK with a new
  caseId ``1177-EXT-000001`` (sequential), the same externalCaseId again answering the
  same caseId; the case is known from then on.

Every answer carries a fresh ``logId`` (not a UUID, as 1177's are not always) and is validated against the response
element's XSD before it is sent. Injected failures (``/_control``) are consumed one per
POST /rivta: ``status`` 500/503 → ``soap:Server`` fault, any other status → a plain
HTTP error of that status (as a proxy would answer), ``fault`` → a fault of that kind;
all before any check. ``result`` instead answers that resultCode with ``message`` after
the checks: ERROR stores nothing, INFO does the work and adds the remark.

May import: flask, lxml, werkzeug, stdnum, the standard library; nothing of the product.
Never imported by the product; deliberately independent of the gateway's ``rivta`` so
that it checks the gateway from outside. Reads the XSDs in ``contracts/`` (located
relative to this file).

Invariants:
- Hostile XML never reaches lxml's tree: a DOCTYPE in the prolog and non-UTF-8 bodies are
  refused first; the parser resolves no entities, loads no DTD, never uses the network.
- Every request is schema-validated before anything is stored; a refused call (fault or
  ERROR) stores nothing in the inbox (it is still listed by ``/_received``).
- All state is behind one lock; nothing sleeps or does I/O under it.
- Person ids are masked (first 8 digits + ``****``) in ``/sandbox/inbox`` and the HTML
  page; ``/_received`` is a test-only control route and shows what was sent.
- Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import base64
import logging
import datetime as dt
import hashlib
import html
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from lxml import etree
from stdnum import luhn
from werkzeug.serving import WSGIRequestHandler, make_server

import clock
from sandbox.soapkit import SoapFault, parse_envelope, read_envelope
from sandbox.state import add_control_routes

SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
REGISTRY_NS = "urn:riv:itintegration:registry:1"
CF = "urn:riv-application:supportprocess:logistics:complaintsandfeedback"
PP = "urn:riv-application:infrastructure:eservicesupply:patientportal"
MVK = "urn:mvk:crm:casemanagement:inbox"
CF_CORE_NS = f"{CF}:1"
PP_CORE_NS = f"{PP}:2"
MVK_CORE_NS = f"{MVK}:2"
CONTRACTS_DIR = Path(__file__).resolve().parent.parent / "contracts"
MVK_SCHEMAS = CONTRACTS_DIR / "mvk-inbox-2.0" / "schemas"
XS = "http://www.w3.org/2001/XMLSchema"
log = logging.getLogger("sandbox.national")
DEFAULT_LOGICAL_ADDRESS = "SE165565594230-1000"
HOST = "127.0.0.1"
MAX_BODY_BYTES = 300 * 1024 * 1024  # 10 attachments of 20 MB in base64, plus the envelope

PROBLEM_CODE_SYSTEM = "1.2.752.129.5.1.22"  # huvud- och delproblem
BUSINESS_AREA_CODE_SYSTEM = "1.2.752.129.5.1.21"  # verksamhetsområde
PERSON_ID_TYPES = ("1.2.752.129.2.1.3.1", "1.2.752.129.2.1.3.3")  # personnummer, samordningsnummer


@dataclass(frozen=True)
class Operation:
    """A contract the simulator answers."""

    name: str
    responder_ns: str
    core_ns: str  # namespace of the ResultType children
    xsd: Path
    profile: str = "patientportal-2.0"  # the version of the contracts it belongs to

    @property
    def soap_action(self) -> str:
        return f"{self.responder_ns}:{self.name}"

    @property
    def binding(self) -> str:
        """The WSDL binding QName, for zeep's ``client.create_service(binding, url)``."""
        root, major = self.responder_ns.rsplit(f":{self.name}Responder:", 1)
        return f"{{{root}:{self.name}:{major}:rivtabp21}}{self.name}ResponderBinding"

    @property
    def wsdl(self) -> Path:
        version = self.xsd.stem.rsplit("_", 1)[1]
        return self.xsd.parent / f"{self.name}Interaction_{version}_RIVTABP21.wsdl"


def _operation(name: str, root: str, major: str, core_ns: str) -> Operation:
    xsd = CONTRACTS_DIR / "interactions" / f"{name}Interaction" / f"{name}Responder_{major}.0.xsd"
    return Operation(name, f"{root}:{name}Responder:{major}", core_ns, xsd)


ADD_MESSAGE = _operation("AddMessage", PP, "2", PP_CORE_NS)
UPDATE_CASE_STATUS = _operation("UpdateCaseStatus", CF, "1", CF_CORE_NS)
REGISTER_CASE = _operation("RegisterCase", CF, "1", CF_CORE_NS)
MVK_ADD_MESSAGE = Operation("AddMessage", f"{MVK}:AddMessageResponder:2", MVK_CORE_NS,
                            MVK_SCHEMAS / "interactions" / "AddMessage" / "AddMessageResponder_2.0.xsd", "mvk-inbox-2.0")
#: The contracts of each profile (``--profile``).
PROFILES: dict[str, tuple[Operation, ...]] = {
    "patientportal-2.0": (ADD_MESSAGE, UPDATE_CASE_STATUS, REGISTER_CASE),
    "mvk-inbox-2.0": (MVK_ADD_MESSAGE,),
}
DEFAULT_PROFILE = "patientportal-2.0"
#: The contracts answered on POST /rivta by default, by responder namespace.
OPERATIONS: dict[str, Operation] = {op.responder_ns: op for op in PROFILES[DEFAULT_PROFILE]}

#: The official mvk-inbox-2.0 core schema's pattern of SubjectOfCareIdType, as written, and
#: as the simulator reads it: an XSD pattern always matches the whole value and knows no
#: anchors, so the written '^' and '$' are characters a value would have to contain.
MVK_PATTERN_AS_WRITTEN = "^[0-9]{8}[0-9pPtTfF][0-9]{3}$"
MVK_PATTERN_CORRECTED = "[0-9]{8}[0-9pPtTfF][0-9]{3}"
MVK_CORE_XSD = MVK_SCHEMAS / "core_components" / "mvk_crm_casemanagement_inbox_2.0.xsd"
MVK_CORRECTION = (f"mvk-inbox-2.0: the official schema's subjectOfCareId pattern '{MVK_PATTERN_AS_WRITTEN}' (in "
                  f"{MVK_CORE_XSD.name}) refuses every valid personnummer (XSD reads '^' and '$' as characters); "
                  f"this simulator validates with '{MVK_PATTERN_CORRECTED}' instead")


# -- identifiers ---------------------------------------------------------------------------


def valid_person_id(value: str) -> bool:
    """True for a 12-digit personnummer or samordningsnummer with a real date (day - 60
    for a samordningsnummer) and a Luhn check digit over digits 3-12."""
    if not re.fullmatch(r"[0-9]{12}", value or ""):
        return False
    if not luhn.is_valid(value[2:]):
        return False
    year, month, day = int(value[0:4]), int(value[4:6]), int(value[6:8])
    if day > 60:
        day -= 60
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def mask(person_id: str | None) -> str | None:
    """``191212121212`` → ``19121212****``."""
    if person_id is None:
        return None
    return person_id[:8] + "****"


def _stamp() -> str:
    return clock.instant().isoformat(timespec="milliseconds")


# -- reading requests (parse_envelope, SoapFault: sandbox.soapkit) ---------------------------

def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def load_schema(path: Path) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(path), _parser()))


class _Replace(etree.Resolver):
    """Serves ``content`` in place of the file at ``path`` when a schema imports it."""

    def __init__(self, path: Path, content: bytes):
        super().__init__()
        self.path, self.content = path.resolve(), content

    def resolve(self, url: str, pubid: str | None, context: Any) -> Any:
        if Path(url.removeprefix("file://")).resolve() == self.path:
            return self.resolve_string(self.content, context, base_url=url)
        return None


def mvk_schema(*, corrected: bool = True) -> etree.XMLSchema:
    """The AddMessage responder schema of mvk-inbox-2.0 from the official files in
    ``contracts/mvk-inbox-2.0/``: as written (``corrected=False``), or with the pattern of
    ``SubjectOfCareIdType`` read as XSD means it (``MVK_PATTERN_CORRECTED``). Refuses to
    correct a core schema whose pattern is not the one the correction is for."""
    if not corrected:
        return load_schema(MVK_ADD_MESSAGE.xsd)
    core = etree.parse(str(MVK_CORE_XSD), _parser())
    facets = core.findall(f"{{{XS}}}simpleType[@name='SubjectOfCareIdType']/{{{XS}}}restriction/{{{XS}}}pattern")
    if [f.get("value") for f in facets] != [MVK_PATTERN_AS_WRITTEN]:
        raise RuntimeError(f"{MVK_CORE_XSD.name} is not the file this correction is for (pattern "
                           f"{[f.get('value') for f in facets]})")
    facets[0].set("value", MVK_PATTERN_CORRECTED)
    parser = _parser()
    parser.resolvers.add(_Replace(MVK_CORE_XSD, etree.tostring(core, xml_declaration=True, encoding="UTF-8")))
    return etree.XMLSchema(etree.parse(str(MVK_ADD_MESSAGE.xsd), parser))


_LIST_FIELDS = {"attachment", "problem"}


def fields_of(element: etree._Element) -> dict[str, Any]:
    """The request's fields by local name, texts as sent. ``attachment`` and ``problem``
    are always lists; an attachment is ``{fileName, mimeType, size, sha256}`` (of the
    decoded content, which is left out)."""
    out: dict[str, Any] = {}
    for child in element:
        if not isinstance(child.tag, str):
            continue
        name = etree.QName(child).localname
        if name == "attachment":
            part = {etree.QName(c).localname: c.text or "" for c in child if isinstance(c.tag, str)}
            data = part.pop("data", "")
            try:
                content = base64.b64decode("".join(data.split()))
                part["size"], part["sha256"] = len(content), hashlib.sha256(content).hexdigest()
            except ValueError:
                part["size"], part["sha256"] = None, None
            value: Any = part
        elif len(child):
            value = fields_of(child)
        else:
            value = child.text or ""
        if name in _LIST_FIELDS:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out


# -- responses -----------------------------------------------------------------------------


def _xml(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, content_type="text/xml; charset=UTF-8")


def _envelope(payload: etree._Element) -> bytes:
    root = etree.Element(f"{{{SOAP11_NS}}}Envelope", nsmap={"soap": SOAP11_NS})
    etree.SubElement(root, f"{{{SOAP11_NS}}}Header")
    etree.SubElement(root, f"{{{SOAP11_NS}}}Body").append(payload)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def fault_response(kind: str, code: str, text: str) -> Response:
    """A SOAP 1.1 Fault (HTTP 500); ``kind`` is Client, Server or VersionMismatch."""
    root = etree.Element(f"{{{SOAP11_NS}}}Envelope", nsmap={"soap": SOAP11_NS})
    fault = etree.SubElement(etree.SubElement(root, f"{{{SOAP11_NS}}}Body"), f"{{{SOAP11_NS}}}Fault")
    etree.SubElement(fault, "faultcode").text = f"soap:{kind}"
    etree.SubElement(fault, "faultstring").text = f"{code} {text}"
    return _xml(etree.tostring(root, xml_declaration=True, encoding="UTF-8"), 500)


@dataclass(frozen=True)
class Answer:
    """What the 1177 logic decided for one call."""

    code: str  # OK | INFO | ERROR
    sub_code: str | None = None  # the simulator's own code (subCode), e.g. UNKNOWN_CASE
    message: str | None = None
    case_id: str | None = None  # RegisterCase only

    @property
    def error_code(self) -> str | None:
        """RIV-TA's ``ErrorCodeEnum`` value beside ``subCode`` (an ERROR only)."""
        return ERROR_KINDS.get(self.sub_code or "", "APPLICATION_ERROR") if self.code == "ERROR" else None


#: the simulator's own codes (``subCode``) → RIV-TA's ``ErrorCodeEnum`` (``errorCode``)
ERROR_KINDS = {
    "INVALID_PERSON_ID": "INVALID_REQUEST",
    "INVALID_CODE_SYSTEM": "INVALID_REQUEST",
    "MISSING_CLASSIFICATION": "INVALID_REQUEST",
    "UNKNOWN_CASE": "APPLICATION_ERROR",
    "WRONG_CITIZEN": "APPLICATION_ERROR",
    "INJECTED": "APPLICATION_ERROR",
}


def response_element(op: Operation, answer: Answer) -> etree._Element:
    """``<op>Response`` with ``result`` (children in the core namespace) and, for
    RegisterCase, ``caseId``; mvk-inbox-2.0's with ``resultCode`` and ``resultText``
    (the simulator's own code first) directly in it."""
    ns = op.responder_ns
    if op.profile == "mvk-inbox-2.0":
        element = etree.Element(f"{{{ns}}}{op.name}Response", nsmap={None: ns})
        etree.SubElement(element, f"{{{ns}}}resultCode").text = answer.code
        text = ": ".join(t for t in (answer.sub_code, answer.message) if t)
        if text:
            etree.SubElement(element, f"{{{ns}}}resultText").text = text
        return element
    element = etree.Element(f"{{{ns}}}{op.name}Response", nsmap={None: ns, "core": op.core_ns})
    result = etree.SubElement(element, f"{{{ns}}}result")
    etree.SubElement(result, f"{{{op.core_ns}}}resultCode").text = answer.code
    if answer.error_code:
        etree.SubElement(result, f"{{{op.core_ns}}}errorCode").text = answer.error_code
    if answer.sub_code:
        etree.SubElement(result, f"{{{op.core_ns}}}subCode").text = answer.sub_code
    # 1177's logIds are not always UUIDs: the simulator's are not either
    etree.SubElement(result, f"{{{op.core_ns}}}logId").text = f"1177-{uuid.uuid4().hex[:16]}"
    if answer.message:
        etree.SubElement(result, f"{{{op.core_ns}}}message").text = answer.message
    if answer.case_id is not None:
        etree.SubElement(element, f"{{{ns}}}caseId").text = answer.case_id
    return element


# -- state ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Injection:
    """A failure a test asked for with ``POST /_control``."""

    status: int
    fault: str | None  # "Client" | "Server" | None
    result: str | None  # "ERROR" | "INFO" | None
    message: str


class NationalState:
    """What the simulated 1177 received and knows, thread-safe (one lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.messages: list[dict[str, Any]] = []  # arrival order
            self.by_message_id: dict[str, dict[str, Any]] = {}
            self.statuses: dict[str, list[dict[str, Any]]] = {}
            self.registered: dict[str, str] = {}  # externalCaseId -> caseId
            self.cases: dict[str, dict[str, Any]] = {}  # caseId -> {subjectOfCareId, caseType, origin}
            self.received: list[dict[str, Any]] = []
            self.next_case = 1
            self.fail_next = 0
            self.fail_status = 503
            self.fail_fault: str | None = None
            self.fail_result: str | None = None
            self.fail_message = "failure injected by /_control"
            self.delay_s = 0.0

    # -- calls ------------------------------------------------------------------------

    def begin_call(self, record: dict[str, Any]) -> tuple[float, Injection | None]:
        """Keep the record of one POST /rivta (filled in later); (delay, injection)."""
        with self.lock:
            record["seq"] = len(self.received) + 1
            self.received.append(record)
            injection = None
            if self.fail_next > 0:
                self.fail_next -= 1
                injection = Injection(self.fail_status, self.fail_fault, self.fail_result, self.fail_message)
            return self.delay_s, injection

    def add_case(self, case_id: str, subject_of_care_id: str | None, case_type: str | None, origin: str) -> dict[str, Any]:
        with self.lock:
            case = self.cases.setdefault(case_id, {"caseId": case_id})
            case.update(subjectOfCareId=subject_of_care_id, caseType=case_type, origin=origin)
            return dict(case)

    def add_message(self, message: dict[str, Any], *, strict: bool, threaded: bool = True) -> Answer:
        """A message in the inbox; ``threaded`` False (mvk-inbox-2.0): a notice outside any
        case, so 1177's case checks do not apply."""
        with self.lock:
            known = self.by_message_id.get(message["messageId"]) if message["messageId"] else None
            if known is not None:
                known["deliveries"] += 1
                return Answer("OK", message="the message was already delivered; stored once.")
            case = self.cases.get(message["caseId"]) if threaded else None
            if not threaded:
                strict = False
            if case is None and strict:
                return Answer("ERROR", "UNKNOWN_CASE", f"1177 knows no case {message['caseId']}.")
            if case is not None and case.get("subjectOfCareId") and case["subjectOfCareId"] != message["subjectOfCareId"]:
                return Answer("ERROR", "WRONG_CITIZEN", f"case {message['caseId']} belongs to another citizen.")
            message["deliveries"] = 1
            self.messages.append(message)
            if message["messageId"]:
                self.by_message_id[message["messageId"]] = message
            return Answer("OK")

    def add_status(self, entry: dict[str, Any], *, strict: bool) -> Answer:
        with self.lock:
            case = self.cases.get(entry["caseId"])
            if case is None and strict:
                return Answer("ERROR", "UNKNOWN_CASE", f"1177 knows no case {entry['caseId']}.")
            if entry["status"] == "CLOSED":
                wrong = [p["code"] for p in entry["problems"] if p["codeSystem"] != PROBLEM_CODE_SYSTEM]
                if wrong:
                    return Answer("ERROR", "INVALID_CODE_SYSTEM", f"problem {wrong[0]} is not in code system {PROBLEM_CODE_SYSTEM}.")
                area = entry["businessArea"]
                if area is not None and area["codeSystem"] != BUSINESS_AREA_CODE_SYSTEM:
                    return Answer("ERROR", "INVALID_CODE_SYSTEM", f"businessArea {area['code']} is not in code system {BUSINESS_AREA_CODE_SYSTEM}.")
                if case is not None and case.get("caseType") == "COMPLAINT" and (not entry["problems"] or area is None):
                    return Answer("ERROR", "MISSING_CLASSIFICATION", "a closed complaint needs at least one problem and a businessArea.")
            self.statuses.setdefault(entry["caseId"], []).append(entry)
            return Answer("OK")

    def register(self, fields: dict[str, Any]) -> Answer:
        person = fields["subjectOfCare"]["personId"]
        with self.lock:
            external = fields["externalCaseId"]
            known = self.registered.get(external)
            if known is not None:
                return Answer("OK", message="the case was already registered.", case_id=known)
            case_id = f"1177-EXT-{self.next_case:06d}"
            self.next_case += 1
            self.registered[external] = case_id
            self.cases[case_id] = {
                "caseId": case_id,
                "subjectOfCareId": person["id"],
                "caseType": fields["caseType"],
                "origin": "RegisterCase",
                "externalCaseId": external,
                "channel": fields["channel"],
                "receiverHsaId": fields["receiver"]["hsaId"],
                "received_at": _stamp(),
            }
            return Answer("OK", case_id=case_id)

    # -- control ----------------------------------------------------------------------

    def control(self, data: dict[str, Any]) -> dict[str, Any]:
        """Apply ``{"fail_next", "status", "fault", "result", "message", "delay_s"}``
        (every key optional); raise ``ValueError`` for a bad value."""
        unknown = set(data) - {"fail_next", "status", "fault", "result", "message", "delay_s"}
        if unknown:
            raise ValueError(f"unknown control keys: {sorted(unknown)}")
        n, status = data.get("fail_next", 0), data.get("status", 503)
        fault, result = data.get("fault"), data.get("result")
        message = data.get("message", "failure injected by /_control")
        delay = data.get("delay_s", None)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError("fail_next must be an integer >= 0")
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if fault not in (None, "Client", "Server"):
            raise ValueError('fault must be "Client" or "Server"')
        if result not in (None, "ERROR", "INFO"):
            raise ValueError('result must be "ERROR" or "INFO"')
        if fault is not None and result is not None:
            raise ValueError("give fault or result, not both")
        if not isinstance(message, str) or not message:
            raise ValueError("message must be a non-empty string")
        if delay is not None and (isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0):
            raise ValueError("delay_s must be a number >= 0")
        with self.lock:
            if "fail_next" in data:
                self.fail_next, self.fail_status = n, status
                self.fail_fault, self.fail_result, self.fail_message = fault, result, message
            if delay is not None:
                self.delay_s = float(delay)
            return self._settings()

    def _settings(self) -> dict[str, Any]:
        return {
            "fail_next": self.fail_next,
            "status": self.fail_status,
            "fault": self.fail_fault,
            "result": self.fail_result,
            "message": self.fail_message,
            "delay_s": self.delay_s,
        }

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"received": [dict(r) for r in self.received], "total_calls": len(self.received), "control": self._settings()}

    def inbox(self, case_id: str | None = None) -> dict[str, Any]:
        """The inbox as ``GET /sandbox/inbox`` answers it, person ids masked."""
        with self.lock:
            messages = [m for m in self.messages if case_id is None or m["caseId"] == case_id]
            statuses = {k: v for k, v in self.statuses.items() if case_id is None or k == case_id}
            registered = {k: v for k, v in self.registered.items() if case_id is None or v == case_id}
            cases = {k: v for k, v in self.cases.items() if case_id is None or k == case_id}
            return {
                "messages": [{**m, "subjectOfCareId": mask(m["subjectOfCareId"])} for m in messages],
                "statuses": {k: [dict(e) for e in v] for k, v in statuses.items()},
                "registered": dict(registered),
                "cases": {k: {**v, "subjectOfCareId": mask(v.get("subjectOfCareId"))} for k, v in cases.items()},
            }


# -- the 1177 logic per operation ------------------------------------------------------------


def _message_record(fields: dict[str, Any]) -> dict[str, Any]:
    message = fields["message"]
    return {
        "caseId": message["caseId"],
        "messageId": message["messageId"],
        "kind": message["kind"],
        "subjectOfCareId": fields["subjectOfCareId"],
        "senderHsaId": message["senderHsaId"],
        "senderName": message.get("senderName"),
        "subject": message["subject"],
        "body": message["body"],
        "attachments": list(message.get("attachment", [])),
        "notify": fields["notify"] in ("true", "1"),
        "sourceSystem": fields["sourceSystem"],
        "received_at": _stamp(),
    }


def _mvk_message_record(fields: dict[str, Any]) -> dict[str, Any]:
    """A notice of mvk-inbox-2.0: no kind, no files, no case thread (``caseId`` is the
    ``businessObjectId`` it names, a reference only)."""
    message = fields["message"] if isinstance(fields.get("message"), dict) else {}
    facility = message.get("healthCareFacility") if isinstance(message.get("healthCareFacility"), dict) else {}
    return {
        "caseId": message.get("businessObjectId"),
        "messageId": message.get("id"),
        "kind": None,
        "contract": "mvk-inbox-2.0",
        "threaded": False,
        "subjectOfCareId": fields["subjectOfCareId"],
        "senderHsaId": facility.get("hsaId") or "",
        "senderName": facility.get("healthCareFacilityName"),
        "subject": message.get("headerText") or "",
        "body": message.get("msg") or message.get("bodyText") or "",
        "attachments": [],
        "notify": fields["notify"] in ("true", "1"),
        "sourceSystem": fields.get("sourceSystem"),
        "received_at": _stamp(),
    }


def _cv(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {"code": value["code"], "codeSystem": value["codeSystem"]}


def _status_record(fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "caseId": fields["caseId"],
        "status": fields["status"],
        "careUnitHsaId": fields.get("careUnitHsaId"),
        "problems": [_cv(p) for p in fields.get("problem", [])],
        "businessArea": _cv(fields.get("businessArea")),
        "received_at": _stamp(),
    }


def _apply(state: NationalState, op: Operation, fields: dict[str, Any], *, strict: bool) -> Answer:
    """Run the 1177 logic of ``op``: check, then store (nothing is stored for an ERROR)."""
    if op is MVK_ADD_MESSAGE:
        if not valid_person_id(fields["subjectOfCareId"]):
            return Answer("ERROR", "INVALID_PERSON_ID", "subjectOfCareId is not a valid personnummer or samordningsnummer.")
        return state.add_message(_mvk_message_record(fields), strict=False, threaded=False)
    if op is ADD_MESSAGE:
        if not valid_person_id(fields["subjectOfCareId"]):
            return Answer("ERROR", "INVALID_PERSON_ID", "subjectOfCareId is not a valid personnummer or samordningsnummer.")
        return state.add_message(_message_record(fields), strict=strict)
    if op is UPDATE_CASE_STATUS:
        return state.add_status(_status_record(fields), strict=strict)
    person = fields["subjectOfCare"]["personId"]
    if person["type"] not in PERSON_ID_TYPES or not valid_person_id(person["id"]):
        return Answer("ERROR", "INVALID_PERSON_ID", "subjectOfCare/personId is not a valid personnummer or samordningsnummer.")
    return state.register(fields)


def _injected_transport(injection: Injection) -> Response:
    if injection.fault is not None:
        return fault_response(injection.fault, "INJECTED_FAILURE", injection.message)
    if injection.status in (500, 503):
        return fault_response("Server", "INJECTED_FAILURE", f"{injection.message}; try again later.")
    return Response(f"{injection.status} {injection.message}\n", status=injection.status, content_type="text/plain")


# -- the app -------------------------------------------------------------------------------


def create_national_stub(*, logical_address: str = DEFAULT_LOGICAL_ADDRESS, strict_cases: bool = False,
                         profile: str = DEFAULT_PROFILE) -> Flask:
    """The 1177/NTjP simulator; its ``NationalState`` is ``app.config["NATIONAL_STATE"]``.

    ``logical_address``: the only LogicalAddress the simulated platform routes (anything
    else is a VP004 fault). ``strict_cases``: AddMessage and UpdateCaseStatus to a caseId
    1177 does not know (neither registered with RegisterCase nor with ``POST /_cases``)
    answer ERROR ``UNKNOWN_CASE``. ``profile``: the version of the contracts served
    (``PROFILES``); the schema corrections it needs are logged and kept in
    ``app.config["SCHEMA_CORRECTIONS"]``.
    """
    if profile not in PROFILES:
        raise ValueError(f"no profile {profile!r}; there are {', '.join(PROFILES)}")
    app = Flask("sandbox.national")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    state = NationalState()
    app.config["NATIONAL_STATE"] = state
    app.config["NATIONAL_LOGICAL_ADDRESS"] = logical_address
    app.config["NATIONAL_PROFILE"] = profile
    operations = {op.responder_ns: op for op in PROFILES[profile]}
    corrections: list[str] = []
    schemas = {}
    for ns, op in operations.items():
        if op is MVK_ADD_MESSAGE:
            schemas[ns] = mvk_schema(corrected=True)
            corrections.append(MVK_CORRECTION)
            log.warning("schema corrected: %s", MVK_CORRECTION)
        else:
            schemas[ns] = load_schema(op.xsd)
    app.config["SCHEMA_CORRECTIONS"] = corrections

    def check(record: dict[str, Any]) -> tuple[Operation, dict[str, Any]]:
        """The checks of every call, in order; (operation, fields) or a ``SoapFault``."""
        if request.mimetype != "text/xml":
            raise SoapFault("WRONG_CONTENT_TYPE", "send Content-Type: text/xml; charset=UTF-8 (SOAP 1.1).")
        address, element = read_envelope(parse_envelope(request.get_data()))
        qname = etree.QName(element)
        record.update(logicalAddress=address, namespace=qname.namespace, element=qname.localname)
        if not address:
            raise SoapFault("VP003", "No receiverId (logical address) found in message header.")
        op = operations.get(qname.namespace or "")
        if op is not None and qname.localname == op.name:
            record["operation"] = op.name
        if address != logical_address or op is None or qname.localname != op.name:
            raise SoapFault("VP004", f"No Logical Adress found for serviceNamespace:{qname.namespace}, receiverId:{address}")
        action = request.headers.get("SOAPAction", "").strip().strip('"')
        if action and action != op.soap_action:
            raise SoapFault("SOAPACTION", f"SOAPAction {action} does not match {op.soap_action}.")
        schema = schemas[op.responder_ns]
        record["fields"] = fields_of(element)
        if not schema.validate(etree.ElementTree(element)):
            error = schema.error_log.last_error
            raise SoapFault("SCHEMA_INVALID", f"{op.name} does not match its schema: {error.message if error else 'invalid'}")
        record["valid"] = True
        return op, record["fields"]

    def answer(op: Operation, result: Answer) -> Response:
        element = response_element(op, result)
        if not schemas[op.responder_ns].validate(etree.ElementTree(element)):  # a bug in this simulator
            error = schemas[op.responder_ns].error_log.last_error
            return fault_response("Server", "SIMULATOR_BUG", f"the simulator's own answer is invalid: {error}")
        return _xml(_envelope(element))

    @app.post("/rivta")
    def rivta():  # type: ignore[no-untyped-def]
        record: dict[str, Any] = {
            "at": _stamp(),
            "operation": None,
            "logicalAddress": None,
            "headers": {
                "x-rivta-original-serviceconsumer-hsaid": request.headers.get("x-rivta-original-serviceconsumer-hsaid"),
                "x-skltp-correlation-id": request.headers.get("x-skltp-correlation-id"),
                "SOAPAction": request.headers.get("SOAPAction"),
                "Content-Type": request.headers.get("Content-Type"),
            },
            "valid": False,
            "fields": None,
            "outcome": None,
        }
        delay_s, injection = state.begin_call(record)
        if delay_s:
            time.sleep(delay_s)
        try:
            op, fields = check(record)
        except SoapFault as exc:
            if injection is not None and injection.result is None:
                record["outcome"] = "injected"
                return _injected_transport(injection)
            record["outcome"] = f"fault:{exc.code}"
            return fault_response(exc.kind, exc.code, exc.text)
        if injection is not None and injection.result is None:
            record["outcome"] = "injected"
            return _injected_transport(injection)
        if injection is not None and injection.result == "ERROR":
            result = Answer("ERROR", "INJECTED", injection.message)
        else:
            result = _apply(state, op, fields, strict=strict_cases)
            if injection is not None and result.code != "ERROR":  # INFO: done, with a remark
                result = Answer("INFO", "INJECTED", injection.message, result.case_id)
        record["outcome"] = result.code if not result.sub_code else f"{result.code}:{result.sub_code}"
        return answer(op, result)

    @app.get("/rivta")
    def rivta_index():  # type: ignore[no-untyped-def]
        lines = [f"1177/NTjP simulator ({profile}); LogicalAddress {logical_address}; POST SOAP 1.1 here.", ""]
        for op in operations.values():
            lines.append(f"{op.name}  {op.responder_ns}  ({op.wsdl.relative_to(CONTRACTS_DIR)})")
        lines += [f"schema corrected: {text}" for text in corrections]
        return Response("\n".join(lines) + "\n", content_type="text/plain; charset=utf-8")

    @app.post("/_cases")
    def known_case():  # type: ignore[no-untyped-def]
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            return jsonify(error="invalid_json", message="send a JSON object"), 400
        case_id, person, case_type = data.get("caseId"), data.get("subjectOfCareId"), data.get("caseType")
        if not isinstance(case_id, str) or not 1 <= len(case_id) <= 64:
            return jsonify(error="invalid_case", message="caseId must be a string of 1-64 characters"), 400
        if not isinstance(person, str) or not re.fullmatch(r"[0-9]{12}", person):
            return jsonify(error="invalid_case", message="subjectOfCareId must be 12 digits"), 400
        if case_type is not None and case_type not in ("COMPLAINT", "QUESTION", "PRESCRIPTION_RENEWAL", "BOOKING", "OTHER"):
            return jsonify(error="invalid_case", message="caseType must be a 1177 case type code"), 400
        case = state.add_case(case_id, person, case_type, "1177")
        return jsonify({**case, "subjectOfCareId": mask(case["subjectOfCareId"])}), 201

    @app.get("/sandbox/inbox")
    def inbox():  # type: ignore[no-untyped-def]
        return jsonify(state.inbox(request.args.get("caseId") or None))

    @app.get("/sandbox/inbox.html")
    def inbox_html():  # type: ignore[no-untyped-def]
        page = render_inbox(state.inbox(request.args.get("caseId") or None), logical_address)
        return Response(page, content_type="text/html; charset=utf-8")

    add_control_routes(app, state)

    return app


# -- the inbox page --------------------------------------------------------------------------

_KIND_LABEL = {
    "CONFIRMATION": "Bekräftelse",
    "PARTIAL_REPLY": "Delsvar",
    "QUESTION": "Motfråga",
    "FINAL_REPLY": "Svar",
    "INFO": "Information",
}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#222;line-height:1.4}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin:0} .case{border:1px solid #ccc;border-radius:6px;padding:1rem;margin:1rem 0}
.meta{color:#555;font-size:.9rem} .msg{border-top:1px solid #eee;padding:.6rem 0} .kind{font-weight:600}
.body{white-space:pre-wrap;margin:.3rem 0} ul{margin:.2rem 0} table{border-collapse:collapse;font-size:.9rem}
td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
"""


def render_inbox(data: dict[str, Any], logical_address: str) -> str:
    """The inbox page: one section per case, its messages in arrival order and its
    status history. Everything is escaped; person ids are already masked."""
    e = html.escape
    case_ids: list[str] = []
    for m in data["messages"]:
        if m["caseId"] not in case_ids:
            case_ids.append(m["caseId"])
    for case_id in list(data["statuses"]) + list(data["cases"]):
        if case_id not in case_ids:
            case_ids.append(case_id)
    out = [
        "<!doctype html><html lang='sv'><head><meta charset='utf-8'>",
        "<title>1177 inkorg (simulator)</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>1177 inkorg &ndash; simulator</h1>",
        f"<p class='meta'>LogicalAddress {e(logical_address)}; {len(data['messages'])} meddelanden, "
        f"{len(case_ids)} ärenden. JSON: <a href='/sandbox/inbox'>/sandbox/inbox</a></p>",
    ]
    if not case_ids:
        out.append("<p>Inga meddelanden ännu.</p>")
    externals = {case_id: external for external, case_id in data["registered"].items()}
    for case_id in case_ids:
        case = data["cases"].get(case_id, {})
        messages = [m for m in data["messages"] if m["caseId"] == case_id]
        citizen = case.get("subjectOfCareId") or (messages[0]["subjectOfCareId"] if messages else None)
        out.append(f"<section class='case'><h2>Ärende {e(case_id or 'okänt')}</h2><p class='meta'>")
        details = [f"invånare {e(citizen or 'okänd')}"]
        if case.get("caseType"):
            details.append(f"typ {e(case['caseType'])}")
        details.append("registrerat utanför 1177" if case.get("origin") == "RegisterCase" else ("skapat i 1177" if case else "okänt för 1177"))
        if case_id in externals:
            details.append(f"externt id {e(externals[case_id])}")
        if case.get("channel"):
            details.append(f"kanal {e(case['channel'])}")
        out.append(", ".join(details) + "</p>")
        history = data["statuses"].get(case_id, [])
        if history:
            out.append("<table><tr><th>tid</th><th>status</th><th>vårdenhet</th><th>problem</th><th>verksamhetsområde</th></tr>")
            for s in history:
                problems = ", ".join(f"{p['code']} ({p['codeSystem']})" for p in s["problems"]) or "&ndash;"
                area = s["businessArea"]
                out.append(
                    f"<tr><td>{e(s['received_at'])}</td><td>{e(s['status'])}</td><td>{e(s['careUnitHsaId'] or '–')}</td>"
                    f"<td>{e(problems) if s['problems'] else problems}</td>"
                    f"<td>{e(area['code'] + ' (' + area['codeSystem'] + ')') if area else '&ndash;'}</td></tr>"
                )
            out.append("</table>")
        for m in messages:
            sender = m["senderHsaId"] + (f" ({m['senderName']})" if m.get("senderName") else "")
            label = _KIND_LABEL.get(m["kind"], m["kind"]) if m["kind"] else "Meddelande"
            kind = m["kind"] or f"utan typ, utanför ärendet: {m.get('contract', '')}"
            out.append(
                f"<div class='msg'><div><span class='kind'>{e(label)}</span> "
                f"<span class='meta'>[{e(kind)}] från {e(sender)} &middot; {e(m['received_at'])} &middot; "
                f"meddelande {e(m['messageId'] or '–')}{' &middot; avisering' if m['notify'] else ''}</span></div>"
                f"<div><strong>{e(m['subject'])}</strong></div><div class='body'>{e(m['body'])}</div>"
            )
            if m["attachments"]:
                out.append("<ul>" + "".join(
                    f"<li>{e(a.get('fileName', ''))} <span class='meta'>({e(a.get('mimeType', ''))}, {a.get('size')} byte)</span></li>"
                    for a in m["attachments"]) + "</ul>")
            out.append("</div>")
        out.append("</section>")
    out.append("</body></html>")
    return "\n".join(out)


# -- running it --------------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    """No access-log line per request."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the simulator on 127.0.0.1 until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m sandbox.national", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8083, help="port to listen on (0: any free port)")
    parser.add_argument("--logical-address", default=DEFAULT_LOGICAL_ADDRESS, help="the LogicalAddress routed (default %(default)s)")
    parser.add_argument("--strict-cases", action="store_true", help="refuse AddMessage/UpdateCaseStatus for unknown caseIds")
    parser.add_argument("--profile", choices=list(PROFILES), default=DEFAULT_PROFILE,
                        help="the version of the contracts served (the gateway's national.profile; default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no access-log line per request")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM) ...")
    parser.add_argument("--tls-key", help="... and key")
    parser.add_argument("--tls-client-ca", help="require a client certificate from this CA (mutual TLS)")
    args = parser.parse_args(argv)

    logging.basicConfig(format="sandbox.national: %(message)s", level=logging.INFO, stream=sys.stdout)
    app = create_national_stub(logical_address=args.logical_address, strict_cases=args.strict_cases, profile=args.profile)
    context = None
    if args.tls_cert:
        from sandbox.providers import tls_context

        context = tls_context(args.tls_cert, args.tls_key, args.tls_client_ca)
    try:
        server = make_server(HOST, args.port, app, threaded=True, request_handler=_QuietHandler if args.quiet else None,
                             ssl_context=context)
    except (OSError, SystemExit) as exc:  # werkzeug exits when the port is taken
        print(f"sandbox.national: cannot listen on port {args.port} ({exc})", file=sys.stderr)
        return 1
    thread = threading.Thread(target=server.serve_forever, name="sandbox-national", daemon=True)
    thread.start()
    print(f"national {'https' if context else 'http'}://{HOST}:{server.server_port}  ({args.profile}; POST /rivta, "
          "GET /sandbox/inbox.html)", flush=True)

    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stopping.wait(0.5):
        pass
    server.shutdown()
    thread.join(timeout=10)
    server.server_close()
    print("sandbox.national: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
