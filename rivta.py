"""RIV-TA Basic Profile 2.1 on the wire: hardened parsing, envelopes, faults, results, XSDs.

Role: everything about SOAP 1.1 that is not a particular operation's content. Parses a
request body safely into an ``Envelope`` (LogicalAddress, the Body's first child and its
contract namespace), validates it against the contract's XSD, and builds responses,
``ResultType`` elements and SOAP faults. Knows which contracts exist (``CONTRACTS``)
and where their WSDL/XSD files are: the shipped ``contracts/``, overlaid by an operator's
folder of the platform's own files (``rivta.contracts_dir``, ``ContractFiles``), and the
variant of a producer WSDL with its body part first (``body_first``) for SOAP clients that
put the first part of the input message in the Body.

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
- Validation and serving read the same files: a file of ``rivta.contracts_dir`` replaces the
  shipped file at the same place for both, also where a shipped file imports it; schema
  imports never leave the two folders and never touch the network.
"""

from __future__ import annotations

import functools
import os
import posixpath
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

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
    PlatformContractError,
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
#: The contracts the gateway calls as consumer, by responder namespace.
CONSUMER_CONTRACTS: dict[str, Contract] = {c.responder_ns: c for c in (ADD_MESSAGE, UPDATE_CASE_STATUS, REGISTER_CASE)}
#: Every contract whose files the gateway reads (checked at start, served under /rivta/contracts/).
ALL_CONTRACTS: dict[str, Contract] = {**CONTRACTS, **CONSUMER_CONTRACTS}


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
    spaces = _WHITESPACE.match(head, position)  # however much whitespace follows (it matches empty)
    position = spaces.end() if spaces else position
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


# -- contract files -----------------------------------------------------------------------------

XS_NS = "http://www.w3.org/2001/XMLSchema"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
WSDL_SOAP_NS = "http://schemas.xmlsoap.org/wsdl/soap/"
#: Where a service contract zip (RIV-TA's TKB) keeps its files: the same tree as ``contracts/``.
PLATFORM_SCHEMAS = "schemas"
#: The layout ``rivta.contracts_dir`` must have, as said in messages.
PLATFORM_LAYOUT = "schemas/core_components/, schemas/interactions/<Operation>Interaction/"


def _file_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def _clean_relpath(path: str) -> str | None:
    """``path`` as a relative path inside a contracts tree, or ``None`` when it could leave it."""
    if not path or "\\" in path or "\x00" in path or path.startswith("/"):
        return None
    clean = posixpath.normpath(path)
    if clean in (".", "..") or clean.startswith("../"):
        return None
    return clean


class ContractFiles:
    """The contract files in force: the shipped ``contracts/`` and, over them, an operator's
    folder of the platform's own files (``rivta.contracts_dir``).

    That folder is laid out as a RIV-TA service contract zip, unpacked: ``schemas/core_components/``
    and ``schemas/interactions/<Op>Interaction/``, the same tree as ``contracts/``. A contract
    whose interaction folder it holds is *replaced*: its WSDL and responder XSD are read from
    there, for validation and for what is served; so are the core components the folder holds,
    for every contract that imports them (one tree: what is validated is what is served). Other
    interaction folders in it are not contracts the gateway speaks and are ignored.
    """

    def __init__(self, folder: Path | None = None, shipped: Path = CONTRACTS_DIR):
        self.folder = Path(os.path.abspath(folder)) if folder is not None else None
        self.shipped = Path(os.path.abspath(shipped))
        self.official = self.folder / PLATFORM_SCHEMAS if self.folder is not None else None
        interactions = self.official / "interactions" if self.official is not None else None
        self.held: list[Contract] = [
            c for c in ALL_CONTRACTS.values() if interactions is not None and (interactions / c.folder).is_dir()
        ]
        known = {c.folder for c in ALL_CONTRACTS.values()}
        self.ignored: list[str] = sorted(
            p.name for p in (interactions.iterdir() if interactions is not None and interactions.is_dir() else [])
            if p.is_dir() and p.name not in known
        )
        self._held_folders = frozenset(c.folder for c in self.held)

    def _official_scope(self, rel: str) -> bool:
        parts = rel.split("/")
        if parts[0] == "core_components":
            return len(parts) == 2
        return len(parts) == 3 and parts[0] == "interactions" and parts[1] in self._held_folders

    def official_file(self, relpath: str) -> Path | None:
        """The folder's file at ``relpath`` when it replaces (or adds) that file, else ``None``."""
        rel = _clean_relpath(relpath)
        if rel is None or self.official is None or not self._official_scope(rel):
            return None
        file = self.official / rel
        return file if file.is_file() else None

    def find(self, relpath: str) -> Path | None:
        """The file read and served at ``relpath`` (a path as under ``contracts/``): the folder's
        when it holds it, else the shipped one; ``None`` when neither has it, or the path would
        leave the tree."""
        official = self.official_file(relpath)
        if official is not None:
            return official
        rel = _clean_relpath(relpath)
        file = self.shipped / rel if rel is not None else None
        return file if file is not None and file.is_file() else None

    def is_official(self, relpath: str) -> bool:
        return self.official_file(relpath) is not None

    def relpath_of(self, path: str | os.PathLike[str]) -> str | None:
        """The tree path of a file in either folder (``None`` for a file outside both)."""
        absolute = os.path.normpath(os.path.abspath(path))
        for root in (self.official, self.shipped):
            if root is not None and absolute.startswith(str(root) + os.sep):
                return Path(absolute).relative_to(root).as_posix()
        return None

    def wsdl_path(self, contract: Contract) -> Path:
        return self.find(contract.wsdl_relpath) or contract.wsdl_path

    def xsd_path(self, contract: Contract) -> Path:
        return self.find(xsd_relpath(contract)) or contract.xsd_path

    def parser(self) -> etree.XMLParser:
        """A hardened parser whose schema imports resolve in this one tree."""
        parser = _file_parser()
        parser.resolvers.add(_OneTree(self))
        return parser

    def load_schema(self, contract: Contract) -> etree.XMLSchema:
        return load_schema(self.xsd_path(contract), self.parser())

    def replaced_files(self) -> list[str]:
        """The tree paths the folder replaces or adds (what it changes of what is read and served)."""
        if self.official is None or not self.official.is_dir():
            return []
        return sorted(
            rel for file in self.official.rglob("*")
            if file.suffix in (".wsdl", ".xsd") and (rel := file.relative_to(self.official).as_posix())
            and self.official_file(rel) is not None
        )

    def problems(self) -> list[str]:
        """What makes the folder unusable, one sentence each (empty without a folder)."""
        if self.folder is None or self.official is None:
            return []
        if not self.folder.is_dir():
            return [f"{self.folder} is not a folder."]
        if not (self.official / "interactions").is_dir():
            above = " (it looks like the schemas/ folder itself: point the key at the folder above it)" \
                if (self.folder / "interactions").is_dir() else ""
            return [f"{self.folder} has no schemas/interactions/: it is not laid out as a RIV-TA service contract "
                    f"zip ({PLATFORM_LAYOUT}){above}."]
        if not self.held and not self.replaced_files():
            return [f"{self.folder} holds no contract or core component the gateway speaks (it holds "
                    f"{', '.join(self.ignored) or 'no interaction'}; the gateway's are "
                    f"{', '.join(c.folder for c in ALL_CONTRACTS.values())})."]
        found: list[str] = []
        parsed: dict[str, etree._ElementTree] = {}
        for file in sorted(self.official.rglob("*")):
            if file.suffix not in (".wsdl", ".xsd") or not file.is_file():
                continue
            rel = file.relative_to(self.official).as_posix()
            try:
                parsed[rel] = etree.parse(str(file), _file_parser())
            except (OSError, etree.XMLSyntaxError) as exc:
                lineno = getattr(exc, "lineno", None)
                line = f", line {lineno}" if lineno else ""
                found.append(f"{rel} does not parse ({type(exc).__name__}{line}).")
        for contract in self.held:
            found.extend(self._contract_problems(contract, parsed))
        if found:
            return found
        for rel, tree in parsed.items():
            found.extend(self._import_problems(rel, tree))
        for contract in ALL_CONTRACTS.values():  # a replaced core component must suit the shipped contracts too
            try:
                schema = self.load_schema(contract)
            except ContractError as exc:
                found.append(f"{xsd_relpath(contract)} does not compile with the folder's files ({exc.message})")
                continue
            if contract.responder_ns in CONTRACTS:  # also where only a core component is replaced
                for answer in sample_answers(contract):
                    if not schema.validate(answer):
                        error = schema.error_log.last_error
                        found.append(f"the gateway's {etree.QName(answer).localname} does not match "
                                     f"{contract.xsd} with the folder's files: "
                                     f"{_clean_schema_message(error.message) if error else 'invalid'}.")
                        break
        return found

    def _contract_problems(self, contract: Contract, parsed: dict[str, etree._ElementTree]) -> list[str]:
        folder = f"interactions/{contract.folder}"
        missing = [name for name in (contract.wsdl, contract.xsd) if f"{folder}/{name}" not in parsed]
        if missing:
            assert self.official is not None  # only a folder's contracts are looked at
            holds = sorted(p.name for p in (self.official / folder).iterdir() if p.suffix in (".wsdl", ".xsd"))
            return [f"{folder}/ has no {' or '.join(missing)}, the files of the {contract.name} version the gateway "
                    f"speaks (it holds {', '.join(holds) or 'no WSDL or XSD'})."]
        found = []
        xsd = parsed[f"{folder}/{contract.xsd}"].getroot()
        if xsd.get("targetNamespace") != contract.responder_ns:
            found.append(f"{folder}/{contract.xsd} has targetNamespace '{(xsd.get('targetNamespace') or '')[:200]}', "
                         f"not {contract.responder_ns}.")
        declared = {e.get("name") for e in xsd.findall(f"{{{XS_NS}}}element")}
        for name in (contract.name, f"{contract.name}Response"):
            if name not in declared:
                found.append(f"{folder}/{contract.xsd} declares no element {name}.")
        wsdl = parsed[f"{folder}/{contract.wsdl}"].getroot()
        actions = {(o.get("soapAction") or "").strip('"') for o in wsdl.iter(f"{{{WSDL_SOAP_NS}}}operation")}
        if contract.soap_action not in actions:
            found.append(f"{folder}/{contract.wsdl} has no operation with soapAction {contract.soap_action}.")
        return found

    def _import_problems(self, rel: str, tree: etree._ElementTree) -> list[str]:
        found = []
        for element in tree.iter(f"{{{XS_NS}}}import", f"{{{XS_NS}}}include"):
            location = element.get("schemaLocation")
            if not location:
                continue
            target = _clean_relpath(posixpath.join(posixpath.dirname(rel), location)) if "://" not in location else None
            if target is None or self.find(target) is None:
                found.append(f"{rel} imports {location[:200]}, which is neither in the folder nor shipped.")
        return found

    def require(self) -> None:
        """Raise ``PlatformContractError`` unless the folder (if any) can be used."""
        problems = self.problems()
        if problems:
            more = f" (and {len(problems) - 3} more: run 'gateway check')" if len(problems) > 3 else ""
            raise PlatformContractError(f"rivta.contracts_dir: {' '.join(problems[:3])}{more}")


class _OneTree(etree.Resolver):
    """Resolves a schema import to the file of ``ContractFiles`` at the same tree path, so a
    core component of the folder replaces the shipped one also where a shipped file imports
    it, and a folder's file may import a shipped one it does not hold. An import outside the
    two folders resolves to nothing (and the schema does not compile)."""

    def __init__(self, files: ContractFiles):
        super().__init__()
        self.files = files

    def resolve(self, url: str, pubid: str | None, context: object) -> object:
        path = unquote(url[len("file://"):]) if url.startswith("file://") else url
        if "://" in path:
            return None  # the parser's no_network refuses it
        rel = self.files.relpath_of(path)
        found = self.files.find(rel) if rel is not None else None
        if found is None:
            return self.resolve_string("<not-a-contract-file/>", context)
        return self.resolve_filename(str(found), context)


def xsd_relpath(contract: Contract) -> str:
    return f"interactions/{contract.folder}/{contract.xsd}"


# -- schemas ------------------------------------------------------------------------------------


class Schemas:
    """The compiled responder XSD of every contract, loaded once at start (from ``files``:
    the shipped contracts, or an operator's folder of the platform's own over them)."""

    def __init__(self, contracts: dict[str, Contract] = CONTRACTS, files: ContractFiles | None = None):
        files = files or ContractFiles()
        files.require()
        self.files = files
        self._schemas: dict[str, etree.XMLSchema] = {}
        for ns, contract in contracts.items():
            self._schemas[ns] = files.load_schema(contract)

    def validate(self, element: etree._Element, contract: Contract) -> None:
        schema = self._schemas[contract.responder_ns]
        if not schema.validate(element):
            error = schema.error_log.last_error
            where = _element_path(error.path) if error is not None else ""
            what = _clean_schema_message(error.message) if error is not None else "invalid"
            raise SchemaViolation(f"{contract.name} does not match its schema at {where}: {what}.", field=where or None)


def load_schema(path: Path, parser: etree.XMLParser | None = None) -> etree.XMLSchema:
    """Compile an XSD (relative imports resolve from its folder, or as ``parser`` resolves them)."""
    try:
        return etree.XMLSchema(etree.parse(str(path), parser or _file_parser()))
    except (OSError, etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
        raise ContractError(f"the contract schema {path.name} cannot be loaded ({type(exc).__name__}).") from None


def check_contract_files(contracts: dict[str, Contract] | None = None, files: ContractFiles | None = None) -> None:
    """Raise ``ContractError`` unless every contract's WSDL parses and its XSD compiles."""
    contracts = ALL_CONTRACTS if contracts is None else contracts
    files = files or ContractFiles()
    Schemas(contracts, files)
    for contract in contracts.values():
        try:
            etree.parse(str(files.wsdl_path(contract)), _file_parser())
        except (OSError, etree.XMLSyntaxError) as exc:
            raise ContractError(f"the contract {contract.wsdl_relpath} cannot be read ({type(exc).__name__}).") from None


def check_report(folder: Path | None) -> list[tuple[bool, str]]:
    """What ``gateway check`` says of the contract files, as (passed, line) pairs: the
    contracts, and with ``rivta.contracts_dir`` what the folder replaces, or why it cannot."""
    files = ContractFiles(folder)
    problems = files.problems()
    if problems:
        return [(False, f"contracts_dir: {PlatformContractError.code} {problem}") for problem in problems]
    try:
        check_contract_files(files=files)
    except GatewayError as exc:
        return [(False, f"contracts: {exc}")]
    names = ", ".join(c.name for c in CONTRACTS.values())
    if files.folder is None:
        return [(True, f"contracts: {names} (the shipped files)")]
    lines = [(True, f"contracts: {names}"),
             (True, f"contracts_dir {files.folder}: replaces {', '.join(c.name for c in files.held) or 'no contract'}")]
    for rel in files.replaced_files():
        kind = "replaces the shipped file" if (files.shipped / rel).is_file() else "added"
        lines.append((True, f"contracts_dir: {rel} ({kind})"))
    if files.ignored:
        lines.append((True, f"contracts_dir: ignored, not contracts the gateway speaks: {', '.join(files.ignored)}"))
    return lines


# -- the variant of a WSDL with its body part first -------------------------------------------------

#: ``GET /rivta/<Operation>?wsdl&variant=body-first``: a producer WSDL whose input message
#: lists its body part before the LogicalAddress header part, for SOAP clients that put the
#: first part of the input message in the Body (node-soap: its issue #704). Same wire format.
BODY_FIRST = "body-first"


def body_first_url(base: str, contract: Contract | None) -> str:
    return f"{base}/rivta/{contract.name if contract else '<Operation>'}?wsdl&variant={BODY_FIRST}"


def body_first(tree: etree._ElementTree) -> None:
    """Reorder, in place, each input message of a WSDL that has SOAP header parts so that its
    body parts come first. Nothing else changes: the binding still puts LogicalAddress in the
    Header, so the requests are the same as with the RIV-TA template's order."""
    root = tree.getroot()
    messages = {m.get("name"): m for m in root.findall(f"{{{WSDL_NS}}}message")}
    for binding_input in root.iterfind(f"{{{WSDL_NS}}}binding/{{{WSDL_NS}}}operation/{{{WSDL_NS}}}input"):
        by_message: dict[str, set[str]] = {}
        for header in binding_input.findall(f"{{{WSDL_SOAP_NS}}}header"):
            name = (header.get("message") or "").rpartition(":")[2]
            by_message.setdefault(name, set()).add(header.get("part") or "")
        for name, header_parts in by_message.items():
            message = messages.get(name)
            if message is None:
                continue
            parts = message.findall(f"{{{WSDL_NS}}}part")
            ordered = [p for p in parts if p.get("name") not in header_parts] + [p for p in parts if p.get("name") in header_parts]
            if ordered == parts:
                continue
            start, tails = list(message).index(parts[0]), [part.tail for part in parts]
            for part in parts:
                message.remove(part)
            for offset, (part, tail) in enumerate(zip(ordered, tails)):
                part.tail = tail  # the layout stays the file's
                message.insert(start + offset, part)
    note = etree.Comment(
        f" Variant '{BODY_FIRST}' of this WSDL, served by the 1177 integration gateway: the input message lists its "
        "body part first, for SOAP clients that put the first part in the Body (node-soap, its issue #704). "
        "The requests it describes are the same: LogicalAddress is still a SOAP header. ")
    note.tail, root.text = root.text, "\n  "
    root.insert(0, note)


def contract_for(envelope: Envelope, soap_action: str | None = None, base_url: Callable[[], str] = lambda: "") -> Contract:
    """The contract the Body's first child names (``UnknownContract``, GW014, if none). A Body
    whose first child is the LogicalAddress header is refused with what happened and the URL
    of the WSDL variant that such a client can use (for the operation its SOAPAction names);
    ``base_url`` gives the gateway's address for that URL (asked only then)."""
    if envelope.namespace == REGISTRY_NS and envelope.operation == "LogicalAddress":
        action = (soap_action or "").strip().strip('"')
        named = next((c for c in CONTRACTS.values() if action and c.soap_action == action), None)
        raise UnknownContract(
            "the Body's first element is the LogicalAddress header, not a request: the client put the first part of "
            "the WSDL's input message in the Body instead of the Header (node-soap does, its issue #704).",
            hint=f"Build the client from the WSDL with the body part first, {body_first_url(base_url(), named)} "
                 "(GET /rivta lists one per contract), and send LogicalAddress as a SOAP header "
                 "(node-soap: client.addSoapHeader).",
        )
    return envelope.contract


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


def response_element(contract: Contract, result: Result) -> etree._Element:
    """``<OperationResponse>`` with its ``result``, as ProcessCase, ProcessCaseMessage and
    GetMedicationList answer (GetMedicationList adds its ``medication`` elements after it)."""
    element = etree.Element(f"{{{contract.responder_ns}}}{contract.name}Response")
    element.append(result_element(result, contract.responder_ns))
    return element


def ping_response(version: str, ping_time: str, configuration: dict[str, str]) -> etree._Element:
    """PingForConfiguration's answer: ``version``, ``pingDateTime`` (YYYYMMDDHHMMSS) and a
    ``configuration`` name/value pair per entry."""
    ns = PING.responder_ns
    response = etree.Element(f"{{{ns}}}PingForConfigurationResponse")
    etree.SubElement(response, f"{{{ns}}}version").text = version
    etree.SubElement(response, f"{{{ns}}}pingDateTime").text = ping_time
    for name, value in configuration.items():
        entry = etree.SubElement(response, f"{{{ns}}}configuration")
        etree.SubElement(entry, f"{{{ns}}}name").text = name
        etree.SubElement(entry, f"{{{ns}}}value").text = value
    return response


def sample_answers(contract: Contract) -> list[etree._Element]:
    """Answers of every shape the gateway gives for a producer contract (built by the same
    functions as the real ones), which a replacing schema must accept."""
    if contract is PING:
        return [ping_response("1.0.0", "20261126101500", {"hsaId": "SE5566778899-GW01", "database": "writable"})]
    refused = Result("ERROR", "1177-7f3a", INVALID_REQUEST, "case/receiver/hsaId is not valid.", "GW021")
    return [response_element(contract, Result.ok("1177-7f3a")), response_element(contract, refused)]


def envelope(payload: etree._Element) -> bytes:
    """Wrap a response element in a SOAP 1.1 envelope and serialise it as UTF-8."""
    root = etree.Element(f"{{{SOAP11_NS}}}Envelope", nsmap={"soap": SOAP11_NS})
    etree.SubElement(root, f"{{{SOAP11_NS}}}Header")
    etree.SubElement(root, f"{{{SOAP11_NS}}}Body").append(payload)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


_LOG_ID_MARK = "00000000-0000-4000-8000-00000000f00d"


@functools.cache
def _ok_parts(contract: Contract) -> tuple[bytes, bytes]:
    text = envelope(response_element(contract, Result.ok(_LOG_ID_MARK)))
    before, after = text.split(_LOG_ID_MARK.encode("ascii"))
    return before, after


def ok_envelope(contract: Contract, log_id: str) -> bytes:
    """``envelope(response_element(contract, Result.ok(log_id)))``, byte for byte, from the
    contract's serialised answer with only the ``logId`` filled in (the gateway's own id: a
    UUID, nothing to escape): the answer to almost every request, without building and
    serialising its tree each time."""
    before, after = _ok_parts(contract)
    return before + log_id.encode("ascii") + after


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
