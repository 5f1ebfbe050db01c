"""SOAP clients the project did not write, against the running gateway (issue 19): a table
client × operation → result, for every producer operation.

- zeep and suds-community build their calls from the WSDLs served by default (RIV-TA's
  template order: the LogicalAddress header part first in the input message);
- node-soap (npm ``soap``, pinned in ``tests/node/package.json``) puts the *first* part of the
  input message in the Body (its issue #704), so it is built from the variant with the body
  part first (``/rivta/<Operation>?wsdl&variant=body-first``); from the default WSDL it gets
  GW014, which says what happened and points at that URL;
- PingForConfiguration also against a gateway that serves the platform's own Ping files
  (``rivta.contracts_dir``);
- xmllint (Debian's libxml2-utils) validates every served WSDL against the WSDL 1.1 schema and
  its SOAP binding's (and the schemas inside it against XSD's own), every served XSD against
  XSD's schema (and that it compiles), and every answer against the served responder XSD.

``.ci/run`` installs node, ``npm ci`` in ``tests/node`` and xmllint; on a machine without them
these tests are skipped with the reason (under ``CI`` they fail instead). The table is
printed by ``pytest -s tests/test_conformance_clients.py -k table``.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
from conftest import JPEG, KLIN1, PDF, PNR, REFERENCE, ROOT, example_data, sweden_now
from lxml import etree

import config as config_mod
import gateway
import rivta

GW_HSA = "SE5566778899-GW01"
PERSONNUMMER_OID = "1.2.752.129.2.1.3.1"
OFFICIAL = REFERENCE / "itintegration-monitoring-PingForConfiguration-1.0"
NODE_DIR = ROOT / "tests" / "node"
OPERATIONS = [c.name for c in rivta.CONTRACTS.values()]
XS = "http://www.w3.org/2001/XMLSchema"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"

#: (client, which WSDL) in the table's order; "official" is Ping on the platform's own files.
CLIENTS = [("zeep", "default"), ("suds", "default"), ("node-soap", "body-first"), ("node-soap", "default")]
PASSING = [c for c in CLIENTS if c != ("node-soap", "default")]


def _need(present: bool, what: str, how: str) -> None:
    """Skip (fail under CI, whose .ci/run must install it) when a tool is missing."""
    if present:
        return
    text = f"{what} is not installed here ({how})"
    if os.environ.get("CI"):
        pytest.fail(f"{text}; .ci/run must install it")
    pytest.skip(text)


def _need_node() -> None:
    _need(shutil.which("node") is not None, "node", "apt-get install nodejs npm")
    _need((NODE_DIR / "node_modules" / "soap" / "package.json").is_file(), "node-soap",
          "npm ci --prefix tests/node")


def _need_xmllint() -> None:
    _need(shutil.which("xmllint") is not None, "xmllint", "apt-get install libxml2-utils")


# -- the gateways and a demo provider on loopback --------------------------------------------------


@dataclasses.dataclass
class Gateway:
    base: str
    app: object

    def wsdl(self, operation: str, variant: str = "default") -> str:
        suffix = f"&variant={rivta.BODY_FIRST}" if variant == "body-first" else ""
        return f"{self.base}/rivta/{operation}?wsdl{suffix}"

    def xsd(self, operation: str) -> str:
        contract = next(c for c in rivta.CONTRACTS.values() if c.name == operation)
        return f"{self.base}/rivta/contracts/{rivta.xsd_relpath(contract)}"


@pytest.fixture(scope="module")
def gateways(tmp_path_factory):
    """A demo REST provider (for GetMedicationList) and two gateways on loopback: one with the
    shipped contract files, one with the platform's own Ping files as rivta.contracts_dir."""
    from sandbox.providers import create_rest_provider, serve_in_thread

    rest, stop_rest = serve_in_thread(create_rest_provider())
    stops, found = [stop_rest], {}
    try:
        for name, folder in (("shipped", None), ("official", OFFICIAL)):
            data = example_data(tmp_path_factory.mktemp(name))
            data["logging"]["format"] = "json"
            data["outbound"]["confirmations"]["enabled"] = False
            data["targets"]["demo_rest"]["base_url"] = f"{rest}/api"
            data["rivta"]["contracts_dir"] = str(folder) if folder else None
            app = gateway.create_app(config_mod.from_dict(copy.deepcopy(data), base_dir=ROOT, environ={}))
            base, stop = serve_in_thread(app)
            stops.append(stop)
            stops.append(app.extensions["gateway.store"].close)
            stops.append(app.extensions["gateway.worker"].stop)
            found[name] = Gateway(base, app)
        yield found
    finally:
        for stop in reversed(stops):
            stop()


# -- what each operation is called with -----------------------------------------------------------


def _arguments(client: str, operation: str, *, base64_text: bool) -> tuple[str, dict]:
    """(LogicalAddress, the body's fields) for one call; ids are the client's own."""
    def data(content: bytes):
        return base64.b64encode(content).decode() if base64_text else content

    now = sweden_now().strftime("%Y%m%d%H%M%S")
    case_id = f"CONF-{client}-1"
    if operation == "PingForConfiguration":
        return GW_HSA, {"serviceContractNamespace": rivta.PING.responder_ns, "logicalAddress": GW_HSA}
    if operation == "ProcessCase":
        return KLIN1, {"case": {
            "caseId": case_id, "caseType": "QUESTION", "receiver": {"hsaId": KLIN1, "isPatientBoard": False},
            "subjectOfCare": {"personId": {"id": PNR, "type": PERSONNUMMER_OID}, "name": "Tolvan Tolvansson"},
            "createdTime": now, "subject": "Fråga om medicin", "text": "Får jag ta ibuprofen med min medicin?",
            "attachment": [{"fileName": "recept.pdf", "mimeType": "application/pdf", "data": data(PDF)}],
        }}
    if operation == "ProcessCaseMessage":
        return KLIN1, {"caseId": case_id, "messageId": f"CONF-{client}-M1", "createdTime": now,
                       "text": "Här är en bild på förpackningen.",
                       "attachment": [{"fileName": "bild.jpg", "mimeType": "image/jpeg", "data": data(JPEG)}]}
    return KLIN1, {"receiver": {"hsaId": KLIN1}, "subjectOfCare": {"personId": {"id": PNR, "type": PERSONNUMMER_OID}}}


# -- the clients ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Outcome:
    client: str
    wsdl: str
    operation: str
    gateway: str
    answer: bytes | None  # the SOAP envelope the gateway answered
    error: str | None = None  # what the client itself raised
    xmllint: str | None = None  # the answer's Body element against the served responder XSD
    envelope_xmllint: str | None = None  # the whole answer against SOAP 1.1's envelope schema

    @property
    def root(self) -> etree._Element | None:
        return etree.fromstring(self.answer) if self.answer else None

    @property
    def fault(self) -> str | None:
        root = self.root
        found = root.find(f".//{{{rivta.SOAP11_NS}}}Fault") if root is not None else None
        return found.findtext("faultstring") if found is not None else None

    @property
    def payload(self) -> etree._Element | None:
        root = self.root
        body = root.find(f"{{{rivta.SOAP11_NS}}}Body") if root is not None else None
        return body[0] if body is not None and len(body) else None

    def summary(self) -> str:
        if self.answer is None:
            return f"no answer: {(self.error or '')[:80]}"
        if self.fault:
            return f"fault {self.fault.split()[0]}"
        payload = self.payload
        code = payload.findtext(f".//{{{rivta.CORE_NS}}}resultCode")
        text = code or ("OK" if etree.QName(payload).localname == "PingForConfigurationResponse" else "?")
        medications = payload.findall(f"{{{rivta.GET_MEDICATION_LIST.responder_ns}}}medication")
        return f"{text}, {len(medications)} medications" if medications else text


def _run_zeep(gw: Gateway, operation: str, client_name: str) -> Outcome:
    import zeep
    from zeep.plugins import HistoryPlugin

    history = HistoryPlugin()
    client = zeep.Client(gw.wsdl(operation), plugins=[history])
    address, body = _arguments(client_name, operation, base64_text=False)
    error = None
    try:
        getattr(client.service, operation)(**body, _soapheaders={"LogicalAddress": address})
    except zeep.exceptions.Fault as exc:
        error = str(exc)
    received = history.last_received
    answer = etree.tostring(received["envelope"]) if received else None
    return Outcome("zeep", "default", operation, "", answer, error)


def _run_suds(gw: Gateway, operation: str, client_name: str) -> Outcome:
    from suds import WebFault
    from suds.client import Client
    from suds.plugin import MessagePlugin

    class Keep(MessagePlugin):
        reply: bytes | None = None

        def received(self, context):
            self.reply = context.reply

    keep = Keep()
    client = Client(gw.wsdl(operation), plugins=[keep], cache=None, timeout=30)
    address, body = _arguments(client_name, operation, base64_text=True)
    client.set_options(soapheaders={"LogicalAddress": address})
    error = None
    try:
        getattr(client.service, operation)(**body)
    except WebFault as exc:
        error = str(exc)
    return Outcome("suds", "default", operation, "", keep.reply, error)


def _run_node(jobs: list[tuple[Gateway, str, str, str]]) -> list[Outcome]:
    """Every node-soap call in one node process (tests/node/call.js), in order."""
    calls = []
    for gw, operation, variant, client_name in jobs:
        address, body = _arguments(client_name, operation, base64_text=True)
        calls.append({"wsdl": gw.wsdl(operation, variant), "operation": operation, "args": body, "logicalAddress": address})
    run = subprocess.run(["node", str(NODE_DIR / "call.js")], input=json.dumps(calls), capture_output=True, text=True,
                         timeout=300, cwd=NODE_DIR)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)
    return [Outcome("node-soap", variant, operation, "", (r["response"] or "").encode() or None, r["error"])
            for (gw, operation, variant, _), r in zip(jobs, results)]


def _xmllint_answer(gw: Gateway, outcome: Outcome, tools: dict[str, Path]) -> tuple[str, str]:
    """xmllint on an answer: the whole envelope against SOAP 1.1's schema (a fault's too), and
    the Body's element against the responder XSD the gateway serves."""
    if outcome.answer is None:
        return "no answer", "no answer"
    file = tools["folder"] / f"{outcome.client}-{outcome.wsdl}-{outcome.operation}-{outcome.gateway}.xml"
    file.write_bytes(outcome.answer)
    run = _xmllint(tools["soap"], file, tools["catalog"])
    envelope = "valid" if run.returncode == 0 else f"INVALID: {run.stderr.strip()[-300:]}"
    payload = outcome.payload
    if payload is None or outcome.fault:
        return "a fault: no contract element", envelope
    file.write_bytes(etree.tostring(payload, xml_declaration=True, encoding="UTF-8"))
    run = _xmllint(gw.xsd(outcome.operation), file, tools["catalog"], nonet=False)  # the served XSD, imports too
    return ("valid" if run.returncode == 0 else f"INVALID: {run.stderr.strip()[-300:]}"), envelope


@pytest.fixture(scope="module")
def outcomes(gateways, schemas_for_xmllint) -> dict[tuple[str, str, str, str], Outcome]:
    """Every client's call of every producer operation, once: keyed (client, wsdl, operation,
    gateway). ProcessCaseMessage follows the same client's ProcessCase."""
    _need_node()
    found: dict[tuple[str, str, str, str], Outcome] = {}
    shipped, official = gateways["shipped"], gateways["official"]
    for run in (_run_zeep, _run_suds):
        for gw_name, gw, operations in (("shipped", shipped, OPERATIONS), ("official", official, ["PingForConfiguration"])):
            for operation in operations:
                outcome = run(gw, operation, run.__name__[5:] + ("-official" if gw_name == "official" else ""))
                outcome.gateway = gw_name
                found[(outcome.client, outcome.wsdl, operation, gw_name)] = outcome
    jobs = [(shipped, op, "body-first", "node") for op in OPERATIONS]
    jobs += [(official, "PingForConfiguration", "body-first", "node-official")]
    jobs += [(shipped, op, "default", "node-default") for op in OPERATIONS]
    jobs += [(official, "PingForConfiguration", "default", "node-default-official")]
    for (gw, *_), outcome in zip(jobs, _run_node(jobs)):
        outcome.gateway = "official" if gw is official else "shipped"
        found[(outcome.client, outcome.wsdl, outcome.operation, outcome.gateway)] = outcome
    for (client, wsdl, operation, gw_name), outcome in found.items():
        outcome.xmllint, outcome.envelope_xmllint = _xmllint_answer(gateways[gw_name], outcome, schemas_for_xmllint)
    return found


COLUMNS = [(op, "shipped") for op in OPERATIONS] + [("PingForConfiguration", "official")]


def _cases(clients):
    return [pytest.param(client, wsdl, op, gw, id=f"{client}-{wsdl}-{op}-{gw}")
            for client, wsdl in clients for op, gw in COLUMNS]


# -- the clients pass ------------------------------------------------------------------------------


@pytest.mark.parametrize("client, wsdl, operation, gw", _cases(PASSING))
def test_a_client_passes_every_producer_operation(outcomes, gateways, client, wsdl, operation, gw):
    outcome = outcomes[(client, wsdl, operation, gw)]
    assert outcome.answer is not None and not outcome.fault, (outcome.error, outcome.answer)
    payload = outcome.payload
    assert etree.QName(payload).localname == f"{operation}Response"
    if operation == "PingForConfiguration":
        ns = {"p": rivta.PING.responder_ns}
        names = payload.xpath("p:configuration/p:name/text()", namespaces=ns)
        assert names == ["hsaId", "database"] and payload.findtext("p:version", namespaces=ns) == gateway.version()
        return
    assert payload.findtext(f".//{{{rivta.CORE_NS}}}resultCode") == "OK", outcome.answer
    store = gateways[gw].app.extensions["gateway.store"]
    label = {"zeep": "zeep", "suds": "suds", "node-soap": "node"}[client]
    if operation == "ProcessCase":
        case = store.find_case(f"CONF-{label}-1")
        assert case is not None and case["receiver_hsa_id"] == KLIN1
    elif operation == "GetMedicationList":
        ids = sorted(m.findtext(f"{{{rivta.CORE_NS}}}prescriptionId")
                     for m in payload.findall(f"{{{rivta.GET_MEDICATION_LIST.responder_ns}}}medication"))
        assert ids == ["RX-1001", "RX-1002", "RX-1003"]  # the demo patient's, within five years


@pytest.mark.parametrize("client, wsdl, operation, gw", _cases(PASSING))
def test_every_answer_is_valid_by_xmllint_against_the_served_schema(outcomes, client, wsdl, operation, gw):
    outcome = outcomes[(client, wsdl, operation, gw)]
    assert (outcome.xmllint, outcome.envelope_xmllint) == ("valid", "valid")


@pytest.mark.parametrize("operation, gw", COLUMNS, ids=[f"{op}-{gw}" for op, gw in COLUMNS])
def test_node_soap_from_the_default_wsdl_is_told_about_the_variant(outcomes, gateways, operation, gw):
    """node-soap's issue #704, with the project's WSDLs and the platform's own Ping WSDL alike:
    the LogicalAddress part comes first, so node-soap puts it in the Body. GW014 says so and
    names the variant of the operation it called (its SOAPAction says which)."""
    outcome = outcomes[("node-soap", "default", operation, gw)]
    fault = outcome.fault
    assert fault is not None and fault.startswith("GW014 "), outcome.answer
    assert outcome.envelope_xmllint == "valid"  # a SOAP 1.1 fault as its schema has it
    assert "LogicalAddress header" in fault and "issue #704" in fault
    assert f"{gateways[gw].base}/rivta/{operation}?wsdl&variant=body-first" in fault
    if operation == "ProcessCase":
        assert gateways[gw].app.extensions["gateway.store"].find_case("CONF-node-default-1") is None


def test_without_a_soap_action_the_hint_names_the_url_pattern(gateways):
    gw = gateways["shipped"]
    body = f"""<soap:Envelope xmlns:soap="{rivta.SOAP11_NS}"><soap:Body>
      <rgy:LogicalAddress xmlns:rgy="{rivta.REGISTRY_NS}">{KLIN1}</rgy:LogicalAddress></soap:Body></soap:Envelope>"""
    response = requests.post(f"{gw.base}/rivta", data=body.encode(), headers={"Content-Type": "text/xml"}, timeout=10)
    fault = etree.fromstring(response.content).find(f".//{{{rivta.SOAP11_NS}}}Fault").findtext("faultstring")
    assert response.status_code == 500 and fault.startswith("GW014 ")
    assert f"{gw.base}/rivta/<Operation>?wsdl&variant=body-first" in fault and KLIN1 not in fault


# -- the variant ----------------------------------------------------------------------------------


def _parts(tree: etree._Element, message: str) -> list[str]:
    return tree.xpath(f"wsdl:message[@name='{message}']/wsdl:part/@name", namespaces={"wsdl": WSDL_NS})


@pytest.mark.parametrize("operation", OPERATIONS)
def test_the_variant_only_lists_the_body_part_first(gateways, operation):
    gw = gateways["shipped"]
    default = etree.fromstring(requests.get(gw.wsdl(operation), timeout=10).content)
    variant_text = requests.get(gw.wsdl(operation, "body-first"), timeout=10).content
    variant = etree.fromstring(variant_text)
    assert _parts(default, f"{operation}Request") == ["LogicalAddress", "parameters"]  # RIV-TA's template order
    assert _parts(variant, f"{operation}Request") == ["parameters", "LogicalAddress"]
    assert b"Variant 'body-first'" in variant_text
    # put back in the template's order, the variant is the default WSDL
    message = variant.find(f"{{{WSDL_NS}}}message[@name='{operation}Request']")
    message.insert(list(message).index(message[0]), message.find(f"{{{WSDL_NS}}}part[@name='LogicalAddress']"))
    assert _canonical(variant) == _canonical(default)


def _canonical(root: etree._Element) -> bytes:
    """C14N without comments and without whitespace-only text (the layout)."""
    root = copy.deepcopy(root)
    for element in root.iter():
        if element.text is not None and not element.text.strip():
            element.text = None
        if element.tail is not None and not element.tail.strip():
            element.tail = None
    return etree.tostring(root, method="c14n", with_comments=False)


@pytest.mark.parametrize("path", [
    f"/rivta/contracts/{rivta.ADD_MESSAGE.wsdl_relpath}?variant=body-first",  # a consumer-side WSDL
    f"/rivta/contracts/{rivta.xsd_relpath(rivta.PING)}?variant=body-first",  # not a WSDL
    "/rivta/ProcessCase?wsdl&variant=header-last",
])
def test_there_is_no_other_variant(gateways, path):
    response = requests.get(f"{gateways['shipped'].base}{path}", timeout=10)
    assert response.status_code == 404 and b"body-first" in response.content


def test_the_index_lists_the_variants(gateways):
    gw = gateways["shipped"]
    index = requests.get(f"{gw.base}/rivta", timeout=10).text
    for operation in OPERATIONS:
        assert f"{operation}: {gw.base}/rivta/{operation}?wsdl&variant=body-first" in index


# -- xmllint over every served file -------------------------------------------------------------------


def _served_files(gw: Gateway, operations: list[str], consumers: bool = True) -> list[str]:
    """The URL of every WSDL the gateway serves for ``operations`` (each also as the variant)
    and for the consumer-side contracts, and of every XSD they import, through the imports."""
    urls = [gw.wsdl(op, variant) for op in operations for variant in ("default", "body-first")]
    urls += [f"{gw.base}/rivta/contracts/{c.wsdl_relpath}" for c in rivta.CONSUMER_CONTRACTS.values() if consumers]
    seen, queue = list(urls), list(urls)
    while queue:
        url = queue.pop()
        tree = etree.fromstring(requests.get(url, timeout=10).content)
        for element in tree.iter(f"{{{XS}}}import", f"{{{XS}}}include"):
            target = urljoin(url, element.get("schemaLocation"))
            if target not in seen:
                seen.append(target)
                queue.append(target)
    return seen


@pytest.fixture(scope="module")
def schemas_for_xmllint(tmp_path_factory) -> dict[str, Path]:
    """W3C's schemas for WSDL 1.1, its SOAP binding and XSD 1.0 (the copies the xmlschema
    package ships), one driver schema that imports them, and a catalog for xml.xsd."""
    _need_xmllint()
    import xmlschema

    shipped = Path(xmlschema.__file__).parent / "schemas"
    folder = tmp_path_factory.mktemp("xmllint")
    (folder / "catalog.xml").write_text(f"""<?xml version="1.0"?>
<catalog xmlns="urn:oasis:names:tc:entity:xmlns:xml:catalog">
  <system systemId="http://www.w3.org/2001/xml.xsd" uri="{(shipped / 'XML' / 'xml.xsd').as_uri()}"/>
  <uri name="http://www.w3.org/2001/xml.xsd" uri="{(shipped / 'XML' / 'xml.xsd').as_uri()}"/>
</catalog>""")
    (folder / "wsdl-driver.xsd").write_text(f"""<xs:schema xmlns:xs="{XS}" targetNamespace="urn:test:wsdl-driver">
  <xs:import namespace="{WSDL_NS}" schemaLocation="{(shipped / 'WSDL' / 'wsdl.xsd').as_uri()}"/>
  <xs:import namespace="http://schemas.xmlsoap.org/wsdl/soap/" schemaLocation="{(shipped / 'WSDL' / 'wsdl-soap.xsd').as_uri()}"/>
  <xs:import namespace="{XS}" schemaLocation="{(shipped / 'XSD_1.0' / 'XMLSchema.xsd').as_uri()}"/>
</xs:schema>""")
    (folder / "nothing.xml").write_text("<nothing/>")
    return {"catalog": folder / "catalog.xml", "wsdl": folder / "wsdl-driver.xsd", "xsd": shipped / "XSD_1.0" / "XMLSchema.xsd",
            "soap": shipped / "WSDL" / "soap-envelope.xsd", "nothing": folder / "nothing.xml", "folder": folder}


def _xmllint(schema: Path | str, document: Path, catalog: Path, *, nonet: bool = True) -> subprocess.CompletedProcess:
    command = ["xmllint", "--noout", *(["--nonet"] if nonet else []), "--schema", str(schema), str(document)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env={**os.environ, "XML_CATALOG_FILES": str(catalog)})


#: The one deviation xmllint finds in the platform's own Ping WSDL: RIV-TA's template
#: annotates the LogicalAddress part with xs:annotation, where WSDL 1.1's schema allows only
#: wsdl:documentation. The gateway serves the platform's file as it is; clients take it.
OFFICIAL_PART_ANNOTATION = "Element '{http://www.w3.org/2001/XMLSchema}annotation': This element is not expected. " \
    "Expected is ( {http://schemas.xmlsoap.org/wsdl/}documentation )."


def _lint_served(gw: Gateway, url: str, tools: dict[str, Path]) -> str:
    file = tools["folder"] / (url.rsplit("/", 1)[-1].replace("?", "_").replace("&", "_").replace("=", "_") or "index")
    file.write_bytes(requests.get(url, timeout=10).content)
    if "wsdl" in url.rsplit("/", 1)[-1].lower():
        run = _xmllint(tools["wsdl"], file, tools["catalog"])
        errors = [line.split(": ", 3)[-1] for line in run.stderr.splitlines() if "validity error" in line]
        if run.returncode == 0:
            return "valid (WSDL 1.1 + SOAP binding schemas)"
        return "INVALID: " + " | ".join(errors or [run.stderr.strip()[-300:]])
    meta = _xmllint(tools["xsd"], file, tools["catalog"])
    compiles = _xmllint(url, tools["nothing"], tools["catalog"], nonet=False)  # fetched as served, imports too
    if meta.returncode == 0 and "failed to compile" not in compiles.stderr and compiles.returncode != 5:
        return "valid (XSD schema), compiles"
    return f"INVALID: {(meta.stderr + compiles.stderr).strip()[-300:]}"


@pytest.fixture(scope="module")
def served_files(gateways, schemas_for_xmllint) -> dict[tuple[str, str], str]:
    """xmllint's verdict on every file served: all of the shipped gateway's, and the Ping
    files of the one on the platform's own files."""
    found = {}
    for name, gw in gateways.items():
        urls = _served_files(gw, OPERATIONS) if name == "shipped" else _served_files(gw, ["PingForConfiguration"], False)
        for url in urls:
            found[(name, url.removeprefix(gw.base))] = _lint_served(gw, url, schemas_for_xmllint)
    return found


def test_xmllint_finds_every_served_wsdl_and_xsd_valid(served_files):
    shipped = {path: result for (gw, path), result in served_files.items() if gw == "shipped"}
    assert len([p for p in shipped if "wsdl" in p.lower()]) == 2 * len(OPERATIONS) + len(rivta.CONSUMER_CONTRACTS)
    assert len([p for p in shipped if p.endswith(".xsd")]) >= 6  # every responder XSD and the core components
    assert {path: result for path, result in shipped.items() if not result.startswith("valid")} == {}


def test_xmllint_on_the_platforms_ping_files(served_files):
    official = {path: result for (gw, path), result in served_files.items() if gw == "official"}
    assert {path: result for path, result in official.items() if not path.endswith(".xsd")} == {
        "/rivta/PingForConfiguration?wsdl": f"INVALID: {OFFICIAL_PART_ANNOTATION}",
        "/rivta/PingForConfiguration?wsdl&variant=body-first": f"INVALID: {OFFICIAL_PART_ANNOTATION}",
    }
    assert {path: result for path, result in official.items() if path.endswith(".xsd")} == {
        f"/rivta/contracts/{rel}": "valid (XSD schema), compiles" for rel in (
            rivta.xsd_relpath(rivta.PING), "core_components/itintegration_monitoring_1.0.xsd",
            "core_components/itintegration_registry_1.0.xsd")}


@pytest.mark.parametrize("kind, change, says", [
    ("wsdl", lambda r: r.find(f".//{{{WSDL_NS}}}part").set("type", "xs:string:bad"), "part"),
    ("wsdl", lambda r: r.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}body").set("use", "bogus"), "use"),
    ("wsdl", lambda r: r.find(f".//{{{XS}}}import").set("bogus", "x"), "bogus"),
    ("xsd", lambda r: r.find(f".//{{{XS}}}element").set("minOccurs", "many"), "minOccurs"),
])
def test_the_xmllint_checks_see_a_broken_file(gateways, schemas_for_xmllint, tmp_path, kind, change, says):
    """The checks are not blind: a part typed with a bad QName, a soap:body use that is not
    literal/encoded, an unknown attribute in the WSDL's own schema, a minOccurs that is not a
    number are each reported."""
    import http.server
    import threading

    gw = gateways["shipped"]
    url = gw.wsdl("PingForConfiguration") if kind == "wsdl" else gw.xsd("PingForConfiguration")
    root = etree.fromstring(requests.get(url, timeout=10).content)
    change(root)
    (tmp_path / "broken").write_bytes(etree.tostring(root))

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        name = "broken.wsdl" if kind == "wsdl" else "broken.xsd"
        (tmp_path / name).write_bytes((tmp_path / "broken").read_bytes())
        result = _lint_served(gw, f"http://127.0.0.1:{server.server_port}/{name}", schemas_for_xmllint)
    finally:
        server.shutdown()
        server.server_close()
    assert result.startswith("INVALID") and says in result, result


# -- the table -------------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    import suds
    import zeep

    node = json.loads((NODE_DIR / "node_modules" / "soap" / "package.json").read_text())["version"]
    xmllint = subprocess.run(["xmllint", "--version"], capture_output=True, text=True).stderr.split("\n")[0].split()[-1]
    return {"zeep": zeep.__version__, "suds": suds.__version__, "node-soap": node, "xmllint": f"libxml {xmllint}"}


def test_the_table(outcomes, served_files):
    """Prints client × operation → result (with -s), to paste into a note."""
    versions = _versions()
    header = ["client", "WSDL"] + [f"{op}{' (platform files)' if gw == 'official' else ''}" for op, gw in COLUMNS]
    rows = []
    for client, wsdl in CLIENTS:
        cells = []
        for op, gw in COLUMNS:
            outcome = outcomes[(client, wsdl, op, gw)]
            lint = ("; answer valid (xmllint)" if outcome.xmllint == "valid" == outcome.envelope_xmllint
                    else "; a valid SOAP 1.1 fault (xmllint)" if outcome.fault and outcome.envelope_xmllint == "valid"
                    else f"; xmllint: {outcome.xmllint} / {outcome.envelope_xmllint}")
            cells.append(outcome.summary() + lint)
        rows.append([f"{'suds-community' if client == 'suds' else client} {versions[client]}", wsdl, *cells])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", f"| served file ({versions['xmllint']}) | gateway | xmllint |", "|---|---|---|"]
    lines += [f"| `{path}` | {'platform files' if gw == 'official' else 'shipped'} | {result} |"
              for (gw, path), result in sorted(served_files.items())]
    table = "\n".join(lines)
    print("\n" + table)
    assert len(rows) == len(CLIENTS) and all(len(row) == len(header) for row in rows)
    assert all("no answer" not in cell for row in rows for cell in row)
