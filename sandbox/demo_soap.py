"""The demo provider system with a SOAP service (the demo config's target ``demo_soap``).

Role: a small, well-behaved stand-in for a care provider's own case system that takes
cases over SOAP 1.1 document/literal, as described by ``wsdl/DemoCaseService_1.0.wsdl``
(namespace ``urn:example:democlinic:caseservice:1``). Tests run it in a thread, the demo
as ``python -m sandbox.providers``.

    POST /soap   RegisterCase    -> RegisterCaseResponse {caseNumber: "S-000001"}
                 AddCaseMessage  -> AddCaseMessageResponse {accepted: true}
                 GetUpdates      -> GetUpdatesResponse {update*, cursor}
                 GetMedications  -> GetMedicationsResponse {medication*}
    GET  /soap?wsdl              -> the WSDL, soap:address set to this server
    GET  /DemoCaseService_1.0.xsd   the XSD the WSDL imports (resolves from /soap?wsdl)

Both delivery operations are idempotent on the ``idempotencyKey`` element: the same key
again answers the same caseNumber and stores nothing new. The stored body is the
request's fields by local name (``fields_of``); ``attachment`` is always a list, and a
prescription renewal's ``medication`` elements ({prescriptionId, name?}) a list too. Faults (HTTP 500) are ``soap:Client``
for anything the caller must fix (not XML, not SOAP 1.1, a DOCTYPE, another Content-Type
or SOAPAction, an unknown operation, a schema violation, an unknown caseNumber, a key
reused for another request) and ``soap:Server`` for injected outages; ``faultstring``
starts with a stable code (``SCHEMA_INVALID``, ``UNKNOWN_CASE``, ...). Plus the control
routes of ``sandbox.state``.

With ``answer_delay_s`` > 0 the system's clinic (``sandbox.clinic``) answers each new
case; its updates wait to be polled with ``GetUpdates`` {since?}: the updates numbered
above ``since``, at most 100, each an ``UpdateType`` (the fields of ``sandbox.answers``,
attachments as ``attachment`` {fileName, mimeType, data}), and ``cursor``. A ``since``
that is not a number is a ``BAD_CURSOR`` Client fault. Polls are not delivery calls: they
neither count in ``total_calls`` nor take an injected failure or delay.

``GetMedications`` {personId, unitCode?} lists the patient's prescriptions from
``sandbox.patients`` (dates relative to today), each a ``medication`` {prescriptionId,
name, strength?, lastPrescribedDate (xs:date)}; none for a person the system does not
know (unitCode is ignored). It stores nothing, but like a delivery call it counts in
``total_calls`` and takes the injected failures and delay, so tests can make it slow or
failing.

May import: flask, lxml, ``sandbox.state``, ``sandbox.clinic``, ``sandbox.patients``. Never imported by the
product; deliberately independent of the gateway's ``rivta`` so that it checks the
gateway from outside.

Invariants: hostile XML never reaches lxml's tree (a DOCTYPE anywhere in the prolog and
non-UTF-8 bodies are refused first; the parser resolves no entities, loads no DTD and
never touches the network); every request is validated against the XSD before anything
is stored.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from lxml import etree

import clock
from . import patients
from .soapkit import SoapFault, parse_envelope, read_envelope
from .clinic import Clinic
from .state import Failure, KeyConflict, ProviderState, UnknownCase, add_control_routes

NS = "urn:example:democlinic:caseservice:1"
SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
WSDL_DIR = Path(__file__).resolve().parent / "wsdl"
WSDL_PATH = WSDL_DIR / "DemoCaseService_1.0.wsdl"
XSD_PATH = WSDL_DIR / "DemoCaseService_1.0.xsd"
BINDING = f"{{{NS}}}DemoCaseServiceBinding"  # for zeep's client.create_service(BINDING, url)
WSDL_ADDRESS = "http://127.0.0.1:8082/soap"  # the soap:address written in the WSDL file
OPERATIONS = ("RegisterCase", "AddCaseMessage")  # the delivery calls
POLL_OPERATION = "GetUpdates"
MEDICATIONS_OPERATION = "GetMedications"  # a read, but counted and failed like a delivery call
MEDICATION_FIELDS = ("prescriptionId", "name", "strength", "lastPrescribedDate")  # MedicationType's order
# UpdateType's elements in the XSD's order; "attachments" of an update become "attachment".
UPDATE_FIELDS = ("type", "caseId", "providerCaseId", "messageId", "kind", "subject", "body", "senderUnit",
                 "status", "careUnitHsaId", "problems", "businessArea", "attachments")
MAX_BODY_BYTES = 160 * 1024 * 1024  # 5 attachments of 20 MB in base64, plus the envelope


def soap_action(operation: str) -> str:
    return f"{NS}:{operation}"


# -- reading requests (parse_envelope, SoapFault: sandbox.soapkit) ---------------------

def load_schema() -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.XMLSchema(etree.parse(str(XSD_PATH), parser))


# -- envelopes ---------------------------------------------------------------------------


def _envelope(payload: etree._Element) -> bytes:
    root = etree.Element(f"{{{SOAP11_NS}}}Envelope", nsmap={"soap": SOAP11_NS})
    etree.SubElement(root, f"{{{SOAP11_NS}}}Body").append(payload)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _xml(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, content_type="text/xml; charset=utf-8")


def fault_response(kind: str, code: str, text: str) -> Response:
    """A SOAP 1.1 Fault (HTTP 500); ``kind`` is Client, Server or VersionMismatch."""
    fault = etree.Element(f"{{{SOAP11_NS}}}Fault")
    etree.SubElement(fault, "faultcode").text = f"soap:{kind}"
    etree.SubElement(fault, "faultstring").text = f"{code} {text}"
    return _xml(_envelope(fault), 500)


def _injected(failure: Failure) -> Response:
    if failure.fault is not None:
        return fault_response(failure.fault, "INJECTED_FAILURE", "failure injected by /_control.")
    if failure.status in (500, 503):
        return fault_response("Server", "INJECTED_FAILURE", "failure injected by /_control; try again later.")
    # Any other status: as a proxy in front of the service would answer.
    return Response(f"{failure.status} failure injected by /_control\n", status=failure.status, content_type="text/plain")


def _answer(operation: str, **fields: str) -> Response:
    element = etree.Element(f"{{{NS}}}{operation}Response", nsmap={"tns": NS})
    for name, value in fields.items():
        etree.SubElement(element, f"{{{NS}}}{name}").text = value
    return _xml(_envelope(element))


def updates_answer(items: list[dict[str, Any]], cursor: str) -> Response:
    """``GetUpdatesResponse`` with ``items`` (as ``sandbox.answers`` makes them) and ``cursor``."""
    element = etree.Element(f"{{{NS}}}GetUpdatesResponse", nsmap={"tns": NS})
    for item in items:
        update = etree.SubElement(element, f"{{{NS}}}update")
        for name in UPDATE_FIELDS:
            value = item.get(name)
            if value is None:
                continue
            if name == "attachments":
                for attachment in value:
                    part = etree.SubElement(update, f"{{{NS}}}attachment")
                    for key in ("fileName", "mimeType", "data"):
                        etree.SubElement(part, f"{{{NS}}}{key}").text = attachment[key]
            elif name == "problems":
                for code in value:
                    etree.SubElement(update, f"{{{NS}}}problems").text = code
            else:
                etree.SubElement(update, f"{{{NS}}}{name}").text = str(value)
    etree.SubElement(element, f"{{{NS}}}cursor").text = cursor
    return _xml(_envelope(element))


def medications_answer(items: list[dict[str, Any]]) -> Response:
    """``GetMedicationsResponse`` with one ``medication`` per item of ``sandbox.patients``."""
    element = etree.Element(f"{{{NS}}}GetMedicationsResponse", nsmap={"tns": NS})
    for item in items:
        medication = etree.SubElement(element, f"{{{NS}}}medication")
        for name in MEDICATION_FIELDS:
            value = item.get(name)
            if value is None:
                continue
            text = value.isoformat() if isinstance(value, dt.date) else str(value)
            etree.SubElement(medication, f"{{{NS}}}{name}").text = text
    return _xml(_envelope(element))


def fields_of(element: etree._Element) -> dict[str, Any]:
    """The request's fields by local name, texts as sent; ``attachment`` is always a list of
    ``{fileName, contentType, size}`` (size of the decoded content, the content left out);
    ``medication`` (RegisterCase), when sent, a list of ``{prescriptionId, name?}``."""
    out: dict[str, Any] = {}
    for child in element:
        if not isinstance(child.tag, str):
            continue
        name = etree.QName(child).localname
        if name == "attachment":
            part = {etree.QName(c).localname: c.text or "" for c in child if isinstance(c.tag, str)}
            content = part.pop("content", "")
            part["size"] = len(base64.b64decode("".join(content.split())))
            out.setdefault("attachment", []).append(part)
        elif name == "medication":
            out.setdefault("medication", []).append(fields_of(child))
        elif len(child):
            out[name] = fields_of(child)
        else:
            out[name] = child.text or ""
    if etree.QName(element).localname in OPERATIONS:
        out.setdefault("attachment", [])
    return out


# -- the app -----------------------------------------------------------------------------


def create_soap_provider(*, delay_s: float = 0.0, answer_delay_s: float = 0.0, question_every: int = 3,
                         today: Callable[[], dt.date] | None = None, notices_only: bool = False) -> Flask:
    """The SOAP demo provider; its ``ProviderState`` is ``app.config["PROVIDER_STATE"]``.

    ``answer_delay_s`` > 0 turns the clinic on (``question_every``: a counter-question for
    every Nth case, 0 never; ``notices_only``: one INFO notice per case); its updates are
    served by ``GetUpdates``. ``today``: the date
    ``GetMedications`` dates are relative to (default: today's Swedish date, ``clock.SYSTEM.day``, as the gateway's rules count)."""
    app = Flask("sandbox.demo_soap")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    state = ProviderState(case_prefix="S", message_prefix="SM", delay_s=delay_s)
    clinic = state.clinic = Clinic(answer_delay_s=answer_delay_s, question_every=question_every, name="demo_soap",
                                   notices_only=notices_only)
    app.config["PROVIDER_STATE"] = state
    add_control_routes(app, state)
    schema = load_schema()
    wsdl_text = WSDL_PATH.read_text(encoding="utf-8")

    def check(element: etree._Element, operation: str) -> None:
        """The SOAPAction and the XSD, or a ``SoapFault``."""
        action = request.headers.get("SOAPAction", "").strip().strip('"')
        if action and action != soap_action(operation):
            raise SoapFault("WRONG_SOAPACTION", f"SOAPAction {action} does not match {operation}.")
        if not schema.validate(etree.ElementTree(element)):
            error = schema.error_log.last_error
            raise SoapFault("SCHEMA_INVALID", f"the request does not match the XSD: {error.message if error else ''}")

    def handle(element: etree._Element) -> tuple[str, dict[str, str]]:
        """Check and store one request; (operation, response fields) or a ``SoapFault``."""
        qname = etree.QName(element)
        if qname.namespace != NS or qname.localname not in OPERATIONS:
            raise SoapFault("UNKNOWN_OPERATION", f"{qname.localname} is not an operation of DemoCaseService.")
        operation = qname.localname
        check(element, operation)
        fields = fields_of(element)
        try:
            if operation == "RegisterCase":
                item, _ = state.add_case(fields["idempotencyKey"], fields)
                return operation, {"caseNumber": item.id}
            state.add_message(fields["idempotencyKey"], fields["caseNumber"], fields)
            return operation, {"accepted": "true"}
        except UnknownCase:
            raise SoapFault("UNKNOWN_CASE", f"no case with caseNumber {fields['caseNumber']}.") from None
        except KeyConflict:
            raise SoapFault("KEY_REUSED", "this idempotencyKey was used for another request.") from None

    def poll(element: etree._Element) -> Response:
        """``GetUpdates``: the clinic's updates after ``since``."""
        try:
            check(element, POLL_OPERATION)
            since = element.findtext(f"{{{NS}}}since")
            try:
                items, cursor = clinic.updates_since(since)
            except ValueError as exc:
                raise SoapFault("BAD_CURSOR", f"{exc}.") from None
        except SoapFault as exc:
            return fault_response(exc.kind, exc.code, exc.text)
        return updates_answer(items, cursor)

    def medications(element: etree._Element) -> Response:
        """``GetMedications``: the patient's prescriptions (or a ``SoapFault``)."""
        check(element, MEDICATIONS_OPERATION)
        person_id = (element.findtext(f"{{{NS}}}personId") or "").strip()
        return medications_answer(patients.medications_for(person_id, (today or clock.SYSTEM.day)()))

    @app.post("/soap")
    def soap():  # type: ignore[no-untyped-def]
        element: etree._Element | None = None
        refused: SoapFault | None = None
        try:
            if request.mimetype != "text/xml":
                raise SoapFault("WRONG_CONTENT_TYPE", "send Content-Type: text/xml (SOAP 1.1).")
            _, element = read_envelope(parse_envelope(request.get_data()))
        except SoapFault as exc:
            refused = exc
        if element is not None and etree.QName(element).namespace == NS \
                and etree.QName(element).localname == POLL_OPERATION:
            return poll(element)  # not a delivery call: no counting, failures or delay
        call = state.begin_call()
        if call.delay_s:
            time.sleep(call.delay_s)
        if call.failure and not call.failure.after_store:
            return _injected(call.failure)
        try:
            if refused is not None:
                raise refused
            assert element is not None
            if etree.QName(element).namespace == NS and etree.QName(element).localname == MEDICATIONS_OPERATION:
                response = medications(element)
            else:
                operation, answer = handle(element)
                response = _answer(operation, **answer)
        except SoapFault as exc:
            return fault_response(exc.kind, exc.code, exc.text)
        if call.failure:  # after_store: stored (or read), but the caller never hears it
            return _injected(call.failure)
        return response

    @app.get("/soap")
    def wsdl():  # type: ignore[no-untyped-def]
        if "wsdl" not in {key.lower() for key in request.args}:
            return Response("GET /soap?wsdl for the WSDL; POST /soap for the service\n", 400, content_type="text/plain")
        address = request.url_root.rstrip("/") + "/soap"
        return _xml(wsdl_text.replace(WSDL_ADDRESS, address).encode("utf-8"))

    @app.get(f"/{XSD_PATH.name}")
    def xsd():  # type: ignore[no-untyped-def]
        return _xml(XSD_PATH.read_bytes())

    return app
