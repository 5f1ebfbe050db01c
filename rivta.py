"""RIV-TA Basic Profile 2.1 on the wire: hardened parsing, envelopes, faults, results, XSDs.

Role: everything about SOAP 1.1 that is not a particular operation's content. Parses a
request body safely into an ``Envelope`` (LogicalAddress, the Body's first child and its
contract namespace), validates it against the contract's XSD, and builds responses,
``ResultType`` elements and SOAP faults. Knows which contracts exist (``CONTRACTS``)
and where their WSDL/XSD files are in ``contracts/``.

May import: ``errors`` (also its person-id redaction).

Invariants:
- Hostile input is refused *before* lxml sees it: a DOCTYPE (and so any entity
  declaration) in the prolog, a non-UTF-8 encoding, more namespace declarations than
  any SOAP stack writes (``MAX_NAMESPACE_DECLARATIONS``: XSD validation is quadratic in
  the namespaces in scope). The parser itself never resolves entities, never loads a
  DTD and never touches the network.
- Before the Body is validated, the SOAP elements (Envelope, Header and its entries,
  Body) carry at most ``MAX_SOAP_ATTRIBUTES`` attributes each.
- The size limit is the caller's (``inbound`` reads at most ``max_body_bytes``).
- A fault's text is a stable code and a sentence; never a stack trace, file content or
  a person id.
- A ``result``'s ``errorCode`` is one of RIV-TA's ``ErrorCodeEnum`` values; the gateway's
  own ``GW0xx`` is its ``subCode``; the one table between them is ``RESULT_ERROR_CODES``.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from errors import (
    redact_person_ids,
    ContractError,
    DeliveryError,
    GatewayError,
    HeaderNotUnderstood,
    HostileXml,
    InternalError,
    MalformedXml,
    NotSoap11,
    SchemaViolation,
    SoapActionMismatch,
    StoreError,
    UnknownContract,
)

SOAP11_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
REGISTRY_NS = "urn:riv:itintegration:registry:1"
CONTENT_TYPE = "text/xml; charset=UTF-8"
CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"

_CF = "urn:riv-application:supportprocess:logistics:complaintsandfeedback"


@dataclass(frozen=True)
class Contract:
    """A service contract the gateway answers as producer."""

    name: str  # the operation, e.g. ProcessCase
    responder_ns: str  # namespace of the request/response elements
    folder: str  # folder under contracts/interactions
    xsd: str  # responder schema file name
    wsdl: str  # interaction WSDL file name

    @property
    def soap_action(self) -> str:
        return f"{self.responder_ns}:{self.name}"

    @property
    def xsd_path(self) -> Path:
        return CONTRACTS_DIR / "interactions" / self.folder / self.xsd

    @property
    def wsdl_path(self) -> Path:
        return CONTRACTS_DIR / "interactions" / self.folder / self.wsdl

    @property
    def wsdl_relpath(self) -> str:
        return f"interactions/{self.folder}/{self.wsdl}"


def _contract(name: str, responder_ns: str, version: str = "1.0") -> Contract:
    folder = f"{name}Interaction"
    return Contract(name, responder_ns, folder, f"{name}Responder_{version}.xsd", f"{folder}_{version}_RIVTABP21.wsdl")


PING = _contract("PingForConfiguration", "urn:riv:itintegration:monitoring:PingForConfigurationResponder:1")
PROCESS_CASE = _contract("ProcessCase", f"{_CF}:ProcessCaseResponder:1")
PROCESS_CASE_MESSAGE = _contract("ProcessCaseMessage", f"{_CF}:ProcessCaseMessageResponder:1")
GET_MEDICATION_LIST = _contract("GetMedicationList", f"{_CF}:GetMedicationListResponder:1")
CORE_NS = f"{_CF}:1"

_PP = "urn:riv-application:infrastructure:eservicesupply:patientportal"

#: The contracts the gateway calls as consumer (adapters/national.py).
ADD_MESSAGE = _contract("AddMessage", f"{_PP}:AddMessageResponder:2", "2.0")
UPDATE_CASE_STATUS = _contract("UpdateCaseStatus", f"{_CF}:UpdateCaseStatusResponder:1")
REGISTER_CASE = _contract("RegisterCase", f"{_CF}:RegisterCaseResponder:1")
PP_CORE_NS = f"{_PP}:2"

#: The producer contracts answered on POST /rivta, by responder namespace.
CONTRACTS: dict[str, Contract] = {
    c.responder_ns: c for c in (PING, PROCESS_CASE, PROCESS_CASE_MESSAGE, GET_MEDICATION_LIST)
}


# -- hardened parsing -----------------------------------------------------------------------

_PARSER = etree.XMLParser(
    resolve_entities=False,
    load_dtd=False,
    dtd_validation=False,
    no_network=True,
    remove_comments=True,
    remove_pis=True,
    collect_ids=False,
    huge_tree=True,  # base64 text of a 20 MB file is over libxml2's 10 MB text limit;
    # the body size is bounded before parsing and DTDs are refused, so no expansion bomb.
)
#: Namespace declarations a request may carry in all (zeep writes 5, a stack that declares
#: them on every element of a full ProcessCase about 60). Validating the Body costs time
#: quadratic in the namespaces in scope: 20,000 of them take over a second.
MAX_NAMESPACE_DECLARATIONS = 500
#: Attributes on each SOAP element (Envelope, Header, a header entry, Body).
MAX_SOAP_ATTRIBUTES = 64
# every declaration is written 'xmlns' or 'xmlns:prefix' then '=' (entities are refused,
# so nothing else can produce one); a mention of 'xmlns' in text rarely counts
_NS_DECLARATION = re.compile(rb"\sxmlns(?::[^\s=<>/]{1,1000})?\s*=\s*[\"']")
_XML_DECL = re.compile(rb"^<\?xml\s[^>]*?encoding\s*=\s*['\"]([A-Za-z0-9._-]+)['\"]")
_PROLOG_SKIP = re.compile(rb"\s*(?:<\?.*?\?>|<!--.*?-->)", re.S)
_WHITESPACE = re.compile(rb"\s*")


def check_prolog(body: bytes) -> None:
    """Refuse what must never reach the parser: non-UTF-8 encodings and any DOCTYPE."""
    if body.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00")) or body[:4].count(0):
        raise MalformedXml("the request is not encoded as UTF-8.")
    head = body.removeprefix(b"\xef\xbb\xbf")
    declaration = _XML_DECL.match(head)
    if declaration and declaration.group(1).lower() not in (b"utf-8", b"utf8"):
        raise MalformedXml(f"the request declares encoding {declaration.group(1).decode('ascii')}; only UTF-8 is accepted.")
    position = 0
    while True:
        match = _PROLOG_SKIP.match(head, position)
        if not match or match.end() == position:
            break
        position = match.end()
        if position > 65536:
            raise HostileXml("the request's prolog (declarations, comments, processing instructions) is over 64 KB.")
    position = _WHITESPACE.match(head, position).end()  # however much whitespace follows
    if head[position : position + 2] == b"<!":
        raise HostileXml("the request carries a DOCTYPE or other declaration, which is never accepted.")


def check_declarations(body: bytes) -> None:
    """Refuse a request with more namespace declarations than ``MAX_NAMESPACE_DECLARATIONS``
    (linear in the body; the cheap count decides for all but hostile or odd requests)."""
    if body.count(b"xmlns") <= MAX_NAMESPACE_DECLARATIONS:
        return
    found = 0
    for _ in _NS_DECLARATION.finditer(body):
        found += 1
        if found > MAX_NAMESPACE_DECLARATIONS:
            raise HostileXml(f"the request declares more than {MAX_NAMESPACE_DECLARATIONS} XML namespaces.")


def parse(body: bytes) -> etree._Element:
    """Parse a request body into its root element, or raise a ``RequestRefused``."""
    if not body.strip():
        raise MalformedXml("the request body is empty.")
    check_prolog(body)
    check_declarations(body)
    try:
        root = etree.fromstring(body, parser=_PARSER)
    except etree.XMLSyntaxError as exc:
        line = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        raise MalformedXml(f"the request is not well-formed XML{line}.") from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise HostileXml("the request carries a DOCTYPE, which is never accepted.")
    return root


# -- envelopes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """A parsed SOAP 1.1 request: its LogicalAddress and the Body's first child."""

    logical_address: str | None
    body: etree._Element
    namespace: str
    operation: str

    @property
    def contract(self) -> Contract:
        contract = CONTRACTS.get(self.namespace)
        if contract is None or contract.name != self.operation:
            raise UnknownContract(f"the gateway does not serve {{{self.namespace[:200]}}}{self.operation[:100]}.")
        return contract


def read_envelope(root: etree._Element) -> Envelope:
    """Pick a SOAP 1.1 envelope apart; refuse SOAP 1.2 and anything that is not an envelope."""
    qname = etree.QName(root)
    if qname.localname == "Envelope" and qname.namespace == SOAP12_NS:
        raise NotSoap11("the request is SOAP 1.2; RIV-TA BP 2.1 uses SOAP 1.1.")
    if qname.localname != "Envelope" or qname.namespace != SOAP11_NS:
        raise NotSoap11("the document is not a SOAP 1.1 Envelope.")
    header = root.find(f"{{{SOAP11_NS}}}Header")
    body = root.find(f"{{{SOAP11_NS}}}Body")
    if body is None:
        raise NotSoap11("the SOAP envelope has no Body.")
    children = [c for c in body if isinstance(c.tag, str)]
    if not children:
        raise NotSoap11("the SOAP Body is empty.")
    soap_elements = [root, body] + ([header, *header] if header is not None else [])
    for element in soap_elements:
        if isinstance(element.tag, str) and len(element.attrib) > MAX_SOAP_ATTRIBUTES:
            raise HostileXml(f"the SOAP element {etree.QName(element).localname[:60]} carries more than "
                             f"{MAX_SOAP_ATTRIBUTES} attributes.")
    address = None
    if header is not None:
        check_must_understand(header)
        element = header.find(f"{{{REGISTRY_NS}}}LogicalAddress")
        if element is not None:
            address = (element.text or "").strip()
    first = etree.QName(children[0])
    return Envelope(address, children[0], first.namespace or "", first.localname)


WSA_NS = "http://www.w3.org/2005/08/addressing"
#: The Header elements the gateway processes, so may carry ``mustUnderstand="1"``:
#: LogicalAddress, and WS-Addressing's message headers (informational: the contract is
#: chosen by the Body, the answer goes back on the same connection). WS-Security's
#: ``Security`` is *not* here: the gateway verifies no signature or token in it (TLS
#: client certificates say who calls), so one that must be understood is refused.
UNDERSTOOD_HEADERS = frozenset(
    {f"{{{REGISTRY_NS}}}LogicalAddress"}
    | {f"{{{WSA_NS}}}{name}" for name in ("To", "Action", "MessageID", "RelatesTo", "ReplyTo", "From", "FaultTo")}
)
_ACTOR_NEXT = "http://schemas.xmlsoap.org/soap/actor/next"


def check_must_understand(header: etree._Element) -> None:
    """SOAP 1.1 section 4.2.3: a header for this node (no ``actor``, or ``actor`` next) with
    ``mustUnderstand="1"`` that the gateway does not process is refused (soap:MustUnderstand)."""
    for element in header:
        if not isinstance(element.tag, str):
            continue
        flag = (element.get(f"{{{SOAP11_NS}}}mustUnderstand") or "").strip()
        actor = (element.get(f"{{{SOAP11_NS}}}actor") or "").strip()
        if flag in ("1", "true") and actor in ("", _ACTOR_NEXT) and element.tag not in UNDERSTOOD_HEADERS:
            name = etree.QName(element)
            raise HeaderNotUnderstood(
                f"the header {{{(name.namespace or '')[:200]}}}{name.localname[:100]} must be understood, "
                "and the gateway does not process it."
            )


def check_soap_action(value: str | None, contract: Contract) -> None:
    """A ``SOAPAction`` HTTP header, when not empty, names the Body's operation
    (``<ResponderNamespace>:<Operation>``, quoted or not); a missing one is accepted."""
    action = (value or "").strip()
    if len(action) >= 2 and action[0] == action[-1] == '"':
        action = action[1:-1].strip()
    if action and action != contract.soap_action:
        raise SoapActionMismatch(
            f"the SOAPAction '{action[:200]}' does not name the operation in the Body, {contract.soap_action}."
        )


# -- schemas ------------------------------------------------------------------------------------


class Schemas:
    """The compiled responder XSD of every contract, loaded once at start."""

    def __init__(self, contracts: dict[str, Contract] = CONTRACTS):
        self._schemas: dict[str, etree.XMLSchema] = {}
        for ns, contract in contracts.items():
            self._schemas[ns] = load_schema(contract.xsd_path)

    def validate(self, element: etree._Element, contract: Contract) -> None:
        schema = self._schemas[contract.responder_ns]
        if not schema.validate(element):
            error = schema.error_log.last_error
            where = _element_path(error.path) if error is not None else ""
            what = _clean_schema_message(error.message) if error is not None else "invalid"
            raise SchemaViolation(f"{contract.name} does not match its schema at {where}: {what}.", field=where or None)


def load_schema(path: Path) -> etree.XMLSchema:
    """Compile an XSD from ``contracts/`` (relative imports resolve from its folder)."""
    try:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        return etree.XMLSchema(etree.parse(str(path), parser))
    except (OSError, etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
        raise ContractError(f"the contract schema {path.name} cannot be loaded ({type(exc).__name__}).") from None


def check_contract_files(contracts: dict[str, Contract] | None = None) -> None:
    """Raise ``ContractError`` unless every contract's WSDL parses and its XSD compiles."""
    if contracts is None:
        contracts = {**CONTRACTS, **{c.responder_ns: c for c in (ADD_MESSAGE, UPDATE_CASE_STATUS, REGISTER_CASE)}}
    Schemas(contracts)
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    for contract in contracts.values():
        try:
            etree.parse(str(contract.wsdl_path), parser)
        except (OSError, etree.XMLSyntaxError) as exc:
            raise ContractError(f"the contract {contract.wsdl_relpath} cannot be read ({type(exc).__name__}).") from None


_NS_IN_PATH = re.compile(r"\{[^}]*\}|[a-zA-Z0-9]+:")


def _element_path(path: str | None) -> str:
    """'/ns0:Envelope/.../ns1:case/ns2:attachment[6]' → 'case/attachment[6]' (relative to the request element)."""
    if not path:
        return ""
    parts = [_NS_IN_PATH.sub("", p) for p in path.strip("/").split("/")]
    return "/".join(parts[1:]) if len(parts) > 1 else parts[0]


_QUOTED = re.compile(r"'([^']*)'")


def _clean_schema_message(message: str) -> str:
    # libxml2 quotes the offending value, which may be huge, a person id or citizen text:
    # keep element names, drop every other quoted value (each regex here is linear)
    text = message[:4000]
    if text.count("'") % 2:  # a quoted value cut off by the limit: drop its tail
        text = text[: text.rfind("'")] + "'…'"
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[facet '[^']*'\] ", "", text)
    text = re.sub(r"Element '([^']*)'", r"element «\1»", text)
    text = _QUOTED.sub(lambda m: "'…'" if any(c.isdigit() for c in m.group(1)) or len(m.group(1)) > 40 else m.group(0), text)
    text = text.replace("The value '…'", "The value").replace("«", "'").replace("»", "'")
    return text.strip().rstrip(".")[:300]


# -- responses and faults -------------------------------------------------------------------------


#: RIV-TA's ``ErrorCodeEnum``: the kind of a logical error, carried in ``result/errorCode``.
INVALID_REQUEST = "INVALID_REQUEST"
TRANSFORMATION_ERROR = "TRANSFORMATION_ERROR"
APPLICATION_ERROR = "APPLICATION_ERROR"
TECHNICAL_ERROR = "TECHNICAL_ERROR"
ERROR_CODE_ENUM = (INVALID_REQUEST, TRANSFORMATION_ERROR, APPLICATION_ERROR, TECHNICAL_ERROR)

#: The one table from a gateway code (in ``result/subCode``) to the ``errorCode`` beside
#: it: every code a ``result`` can carry (the rule refusals, ``RuleViolation``). README's
#: table "ResultType: errorCode and subCode" reproduces it (a test compares them).
RESULT_ERROR_CODES: dict[str, str] = {
    "GW020": INVALID_REQUEST,  # person id missing or invalid
    "GW021": INVALID_REQUEST,  # HSA-id syntax
    "GW022": INVALID_REQUEST,  # attachment type
    "GW023": INVALID_REQUEST,  # attachment size
    "GW024": INVALID_REQUEST,  # too many attachments
    "GW025": INVALID_REQUEST,  # event date
    "GW026": INVALID_REQUEST,  # patient board complaint without a place
    "GW027": APPLICATION_ERROR,  # follow-up for a case never received
    "GW028": APPLICATION_ERROR,  # a known id with other content
    "GW029": INVALID_REQUEST,  # another field breaks a rule
    "GW035": TRANSFORMATION_ERROR,  # a unit code that maps to no HSA-id
    "GW036": INVALID_REQUEST,  # closing codes missing
    "GW040": APPLICATION_ERROR,  # the case's content was purged
    "GW041": APPLICATION_ERROR,  # the case is closed
    "GW042": INVALID_REQUEST,  # files on a case registered outside 1177
    "GW043": INVALID_REQUEST,  # chosen medications where rule 9 shows no list
    "GW044": INVALID_REQUEST,  # a sending unit that may not answer for the case's unit
    "GW045": INVALID_REQUEST,  # a citizen's files in a case type where the clinic takes none
    "GW046": INVALID_REQUEST,  # files or a counter-question the sender's role may not send
    "GW083": INVALID_REQUEST,  # files the national profile cannot carry
    "GW084": INVALID_REQUEST,  # a message kind the national profile cannot carry
    "GW085": APPLICATION_ERROR,  # a status or registration the national profile has no contract for
}


def error_code_for(code: str) -> str:
    """The ``ErrorCodeEnum`` value for a gateway code (``TECHNICAL_ERROR`` for any other)."""
    return RESULT_ERROR_CODES.get(code, TECHNICAL_ERROR)


@dataclass(frozen=True)
class Result:
    """The RIV-TA ``result``: resultCode OK|INFO|ERROR, errorCode (``ErrorCodeEnum``),
    subCode (the gateway's ``GW0xx``), logId (any string), message."""

    code: str
    log_id: str
    error_code: str | None = None
    message: str | None = None
    sub_code: str | None = None

    @classmethod
    def ok(cls, log_id: str | None = None, message: str | None = None) -> Result:
        return cls("OK", log_id or str(uuid.uuid4()), None, message)

    @classmethod
    def info(cls, message: str, log_id: str | None = None) -> Result:
        return cls("INFO", log_id or str(uuid.uuid4()), None, message)

    @classmethod
    def error(cls, exc: GatewayError, log_id: str | None = None) -> Result:
        text = exc.message if not exc.hint else f"{exc.message} {exc.hint}"
        # a message may quote what the caller sent (a file name, an id): never a person id
        return cls("ERROR", log_id or str(uuid.uuid4()), error_code_for(exc.code), redact_person_ids(text), exc.code)


def result_element(result: Result, responder_ns: str, namespace: str = CORE_NS) -> etree._Element:
    """The ``result`` element of a response: itself in the responder namespace, its
    children (declared by the core ``ResultType``) in the contracts' core namespace."""
    element = etree.Element(f"{{{responder_ns}}}result")
    etree.SubElement(element, f"{{{namespace}}}resultCode").text = result.code
    if result.error_code:
        etree.SubElement(element, f"{{{namespace}}}errorCode").text = result.error_code
    if result.sub_code:
        etree.SubElement(element, f"{{{namespace}}}subCode").text = result.sub_code
    etree.SubElement(element, f"{{{namespace}}}logId").text = result.log_id
    if result.message:
        etree.SubElement(element, f"{{{namespace}}}message").text = result.message
    return element


def envelope(payload: etree._Element) -> bytes:
    """Wrap a response element in a SOAP 1.1 envelope and serialise it as UTF-8."""
    root = etree.Element(f"{{{SOAP11_NS}}}Envelope", nsmap={"soap": SOAP11_NS})
    etree.SubElement(root, f"{{{SOAP11_NS}}}Header")
    etree.SubElement(root, f"{{{SOAP11_NS}}}Body").append(payload)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def fault(code: str, text: str, *, server: bool = False, version_mismatch: bool = False, log_id: str | None = None,
          must_understand: bool = False) -> bytes:
    """A SOAP 1.1 Fault whose ``faultstring`` starts with the gateway's stable code."""
    root = etree.Element(f"{{{SOAP11_NS}}}Envelope", nsmap={"soap": SOAP11_NS})
    body = etree.SubElement(root, f"{{{SOAP11_NS}}}Body")
    element = etree.SubElement(body, f"{{{SOAP11_NS}}}Fault")
    kind = ("VersionMismatch" if version_mismatch else "MustUnderstand" if must_understand
            else "Server" if server else "Client")
    etree.SubElement(element, "faultcode").text = f"soap:{kind}"
    etree.SubElement(element, "faultstring").text = f"{code} {text}"
    if log_id:
        detail = etree.SubElement(element, "detail")
        etree.SubElement(detail, "logId").text = log_id
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def fault_for(exc: GatewayError, *, log_id: str | None = None) -> bytes:
    text = redact_person_ids(exc.message if not exc.hint else f"{exc.message} {exc.hint}")
    return fault(
        exc.code,
        text,
        server=isinstance(exc, (StoreError, InternalError, DeliveryError)),
        version_mismatch=isinstance(exc, NotSoap11) and "SOAP 1.2" in exc.message,
        must_understand=isinstance(exc, HeaderNotUnderstood),
        log_id=log_id,
    )
