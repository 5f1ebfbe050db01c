"""The platform's own contract files, dropped in (issue 19, item 2): ``rivta.contracts_dir``
replaces the shipped file of every contract it holds, for validation and for what is
served, and ``gateway check`` says what it replaces or why it cannot; and the project's own
Ping and registry files declare what the official ones do (compared by lxml)."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import pytest
import requests
import zeep
from conftest import REFERENCE, ROOT, built_app, example_data, result_of, write_config
from lxml import etree

import config as config_mod
import errors
import gateway
import rivta
from sandbox.providers import serve_in_thread

#: The platform's own files, unchanged (CI lays shared/ beside the clone, as it is beside each worktree).
OFFICIAL = REFERENCE / "itintegration-monitoring-PingForConfiguration-1.0"
pytestmark = pytest.mark.skipif(not OFFICIAL.is_dir(), reason=f"the platform's Ping files are not at {OFFICIAL}")

XS = "http://www.w3.org/2001/XMLSchema"
WSDL = "http://schemas.xmlsoap.org/wsdl/"
SOAP_BINDING = "http://schemas.xmlsoap.org/wsdl/soap/"
GW_HSA = "SE5566778899-GW01"
PING_FILES = [
    "interactions/PingForConfigurationInteraction/PingForConfigurationInteraction_1.0_RIVTABP21.wsdl",
    "interactions/PingForConfigurationInteraction/PingForConfigurationResponder_1.0.xsd",
    "core_components/itintegration_monitoring_1.0.xsd",
    "core_components/itintegration_registry_1.0.xsd",
]


def _ping(address: str = GW_HSA) -> bytes:
    return f"""<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"
        xmlns:r="urn:riv:itintegration:registry:1" xmlns:p="{rivta.PING.responder_ns}">
      <soap:Header><r:LogicalAddress>{address}</r:LogicalAddress></soap:Header><soap:Body><p:PingForConfiguration>
      <p:serviceContractNamespace>{rivta.PING.responder_ns}</p:serviceContractNamespace>
      <p:logicalAddress>{address}</p:logicalAddress></p:PingForConfiguration></soap:Body></soap:Envelope>""".encode()


def _with_folder(config_data: dict, folder: Path) -> dict:
    data = copy.deepcopy(config_data)
    data["rivta"]["contracts_dir"] = str(folder)
    return data


def _copy_official(tmp_path: Path) -> Path:
    folder = tmp_path / "tkb"
    shutil.copytree(OFFICIAL, folder)
    return folder


def _edit(path: Path, change) -> None:
    tree = etree.parse(str(path))
    change(tree.getroot())
    tree.write(str(path), xml_declaration=True, encoding="UTF-8")


# -- served and validated from the folder --------------------------------------------------------


def _as_served(relpath: str, base: str) -> bytes:
    """The official file as the gateway must serve it: unchanged but for its addresses."""
    tree = etree.parse(str(OFFICIAL / "schemas" / relpath))
    folder = relpath.rsplit("/", 1)[0]
    for element in tree.iter(f"{{{XS}}}import", f"{{{XS}}}include"):
        target = Path(folder, element.get("schemaLocation")).as_posix()
        parts: list[str] = []
        for part in target.split("/"):
            parts = parts[:-1] if part == ".." else [*parts, part]
        element.set("schemaLocation", f"{base}/rivta/contracts/{'/'.join(parts)}")
    for address in tree.iter(f"{{{SOAP_BINDING}}}address"):
        address.set("location", f"{base}/rivta")
    return etree.tostring(tree, method="c14n")


def test_the_gateway_serves_the_platforms_ping_files_and_a_zeep_client_built_from_them_passes(config_data):
    with built_app(_with_folder(config_data, OFFICIAL)) as app:
        base, stop = serve_in_thread(app)
        try:
            served = {rel: requests.get(f"{base}/rivta/contracts/{rel}", timeout=10) for rel in PING_FILES}
            for rel, response in served.items():
                assert response.status_code == 200, rel
                # the official file, byte for byte in canonical form, with only its addresses filled in
                assert etree.tostring(etree.fromstring(response.content).getroottree(), method="c14n") == _as_served(rel, base), rel
            assert b"Sveriges Kommuner och Landsting" in served[PING_FILES[0]].content  # the official file's own text
            assert requests.get(f"{base}/rivta/PingForConfiguration?wsdl", timeout=10).content == served[PING_FILES[0]].content
            index = requests.get(f"{base}/rivta", timeout=10).text
            assert re.search(r"^PingForConfiguration: .*_RIVTABP21\.wsdl \(the platform's file, from rivta\.contracts_dir\)$", index, re.M)
            assert not re.search(r"^ProcessCase: .*contracts_dir", index, re.M)  # the folder holds no ProcessCase

            client = zeep.Client(f"{base}/rivta/PingForConfiguration?wsdl")
            answer = client.service.PingForConfiguration(
                serviceContractNamespace=rivta.PING.responder_ns, logicalAddress=GW_HSA, _soapheaders={"LogicalAddress": GW_HSA})
            assert answer.version == gateway.version() and re.fullmatch(r"\d{14}", answer.pingDateTime)
            assert {c.name: c.value for c in answer.configuration} == {"hsaId": GW_HSA, "database": "writable"}
        finally:
            stop()


def test_requests_are_validated_with_the_folders_schema(config_data, tmp_path):
    folder = _copy_official(tmp_path)
    xsd = folder / "schemas" / PING_FILES[1]

    def require_extra(root):  # the folder's PingForConfigurationType now demands one more element
        sequence = root.find(f"{{{XS}}}complexType[@name='PingForConfigurationType']/{{{XS}}}sequence")
        sequence.insert(2, etree.Element(f"{{{XS}}}element", name="extra", type="xs:string"))

    _edit(xsd, require_extra)
    with built_app(_with_folder(config_data, folder)) as app:
        response = app.test_client().post("/rivta", data=_ping(), headers={"Content-Type": "text/xml"})
        fault = result_of(etree.fromstring(response.data))
        assert response.status_code == 500 and fault["faultstring"].startswith("GW015 ") and "extra" in fault["faultstring"]
        served = app.test_client().get(f"/rivta/contracts/{PING_FILES[1]}", base_url="http://127.0.0.1:8080")
        assert b'name="extra"' in served.data
    with built_app(config_data) as app:  # the same request, with the shipped files
        response = app.test_client().post("/rivta", data=_ping(), headers={"Content-Type": "text/xml"})
        assert response.status_code == 200


CORE_CF = "core_components/supportprocess_logistics_complaintsandfeedback_1.0.xsd"


def _short_case_ids(root) -> None:
    root.find(f"{{{XS}}}complexType/{{{XS}}}sequence/{{{XS}}}element[@name='caseId']").find(
        f".//{{{XS}}}maxLength").set("value", "8")


def test_a_core_component_of_the_folder_replaces_the_shipped_one_also_for_shipped_contracts(config_data, tmp_path, make_case, runner):
    folder = tmp_path / "core-only"
    (folder / "schemas" / "interactions").mkdir(parents=True)
    (folder / "schemas" / "core_components").mkdir()
    shutil.copy(rivta.CONTRACTS_DIR / CORE_CF, folder / "schemas" / CORE_CF)
    _edit(folder / "schemas" / CORE_CF, _short_case_ids)
    with built_app(_with_folder(config_data, folder)) as app:
        client = app.test_client()
        response = client.post("/rivta", data=make_case(caseId="1177-C-0001"), headers={"Content-Type": "text/xml"})
        fault = result_of(etree.fromstring(response.data))
        assert response.status_code == 500 and fault["faultstring"].startswith("GW015 ") and "caseId" in fault["faultstring"]
        response = client.post("/rivta", data=make_case(caseId="1177-C-1"), headers={"Content-Type": "text/xml"})
        assert response.status_code == 200 and result_of(etree.fromstring(response.data))["resultCode"] == "OK"
        # the shipped ProcessCase XSD is served as before; what it imports is the folder's core component
        xsd = client.get("/rivta/contracts/interactions/ProcessCaseInteraction/ProcessCaseResponder_1.0.xsd",
                         base_url="http://127.0.0.1:8080")
        imported = etree.fromstring(xsd.data).find(f"{{{XS}}}import").get("schemaLocation")
        assert imported == f"http://127.0.0.1:8080/rivta/contracts/{CORE_CF}"
        core = client.get(f"/rivta/contracts/{CORE_CF}")
        assert re.search(rb"<xs:maxLength value=\"8\"/>", core.data)
    result = _check(runner, tmp_path, folder)
    assert result.exit_code == 0, result.output
    assert f"ok   contracts_dir {folder}: replaces no contract" in result.output
    assert f"ok   contracts_dir: {CORE_CF} (replaces the shipped file)" in result.output


def test_files_outside_the_tree_or_of_other_contracts_are_not_served(config_data, tmp_path):
    folder = _copy_official(tmp_path)
    other = folder / "schemas" / "interactions" / "GetSomethingInteraction"
    other.mkdir()
    (other / "GetSomethingResponder_1.0.xsd").write_text(f"<xs:schema xmlns:xs='{XS}'/>")
    with built_app(_with_folder(config_data, folder)) as app:
        client = app.test_client()
        for path in ("interactions/GetSomethingInteraction/GetSomethingResponder_1.0.xsd", "../SOURCE.md",
                     "../../tkb/schemas/core_components/itintegration_registry_1.0.xsd", "core_components/../../SOURCE.md"):
            assert client.get(f"/rivta/contracts/{path}").status_code == 404, path
        # a file the folder adds beside the ones it replaces is served
        assert client.get("/rivta/contracts/core_components/ws-addressing-1.0.xsd").status_code == 200


# -- gateway check ---------------------------------------------------------------------------------


def _check(runner, tmp_path: Path, folder: Path | str | None):
    data = example_data(tmp_path)
    data["rivta"]["contracts_dir"] = None if folder is None else str(folder)
    return runner.invoke(gateway.cli, ["check", "--config", str(write_config(tmp_path, data))])


def test_check_lists_what_the_folder_replaces(runner, tmp_path):
    result = _check(runner, tmp_path, OFFICIAL)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "contracts" in line]
    assert lines == [
        "ok   contracts: PingForConfiguration, ProcessCase, ProcessCaseMessage, GetMedicationList",
        f"ok   contracts_dir {OFFICIAL}: replaces PingForConfiguration",
        "ok   contracts_dir: core_components/itintegration_monitoring_1.0.xsd (replaces the shipped file)",
        "ok   contracts_dir: core_components/itintegration_registry_1.0.xsd (replaces the shipped file)",
        "ok   contracts_dir: core_components/ws-addressing-1.0.xsd (added)",
        f"ok   contracts_dir: {PING_FILES[0]} (replaces the shipped file)",
        f"ok   contracts_dir: {PING_FILES[1]} (replaces the shipped file)",
    ]
    without = _check(runner, tmp_path, None)
    assert without.exit_code == 0 and "ok   contracts: PingForConfiguration, ProcessCase, ProcessCaseMessage, " \
        "GetMedicationList (the shipped files)" in without.output and "contracts_dir" not in without.output


def _broken(tmp_path: Path, how: str) -> Path:
    folder = _copy_official(tmp_path)
    ping = folder / "schemas" / "interactions" / "PingForConfigurationInteraction"
    core = folder / "schemas" / "core_components"
    if how == "missing":
        return tmp_path / "no-such-folder"
    if how == "schemas itself":
        return folder / "schemas"
    if how == "unparsable":
        (core / "itintegration_registry_1.0.xsd").write_text("<xs:schema xmlns:xs='http://www.w3.org/2001/XMLSchema'>")
    elif how == "another version":
        for file in ping.iterdir():
            file.rename(ping / file.name.replace("_1.0", "_2.0"))
    elif how == "another namespace":
        _edit(ping / "PingForConfigurationResponder_1.0.xsd", lambda root: root.set("targetNamespace", "urn:other:1"))
    elif how == "answers do not fit":  # a timestamp of 8 digits: the gateway's pingDateTime has 14
        _edit(core / "itintegration_monitoring_1.0.xsd",
              lambda root: root.find(f".//{{{XS}}}pattern").set("value", "[0-9]{8}"))
    elif how == "import outside":
        _edit(ping / "PingForConfigurationResponder_1.0.xsd",
              lambda root: root.find(f"{{{XS}}}import").set("schemaLocation", "../../../../../outside.xsd"))
    elif how == "no contract":
        shutil.rmtree(ping)
        shutil.rmtree(core)
        (folder / "schemas" / "interactions" / "GetSomethingInteraction").mkdir()
    return folder


@pytest.mark.parametrize("how, says", [
    ("missing", "is not a folder."),
    ("schemas itself", "it looks like the schemas/ folder itself: point the key at the folder above it"),
    ("unparsable", "core_components/itintegration_registry_1.0.xsd does not parse (XMLSyntaxError, line 1)."),
    ("another version", "interactions/PingForConfigurationInteraction/ has no PingForConfigurationInteraction_1.0_RIVTABP21.wsdl "
                        "or PingForConfigurationResponder_1.0.xsd, the files of the PingForConfiguration version the gateway "
                        "speaks (it holds PingForConfigurationInteraction_2.0_RIVTABP21.wsdl, PingForConfigurationResponder_2.0.xsd)."),
    ("another namespace", "PingForConfigurationResponder_1.0.xsd has targetNamespace 'urn:other:1', not "
                          "urn:riv:itintegration:monitoring:PingForConfigurationResponder:1."),
    ("answers do not fit", "the gateway's PingForConfigurationResponse does not match PingForConfigurationResponder_1.0.xsd "
                           "with the folder's files: element 'pingDateTime': The value is not accepted by the pattern"),
    ("import outside", "imports ../../../../../outside.xsd, which is neither in the folder nor shipped."),
    ("no contract", "holds no contract or core component the gateway speaks (it holds GetSomethingInteraction;"),
])
def test_check_refuses_a_folder_it_cannot_use_and_so_does_the_start(runner, tmp_path, config_data, how, says):
    folder = _broken(tmp_path, how)
    result = _check(runner, tmp_path, folder)
    assert result.exit_code == 1, result.output
    failures = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert failures and all(line.startswith("FAIL contracts_dir: GW080 ") for line in failures), result.output
    assert any(says in line for line in failures), result.output
    with pytest.raises(errors.PlatformContractError, match=re.escape(says[:60])):
        gateway.create_app(config_mod.from_dict(_with_folder(config_data, folder), base_dir=ROOT, environ={}))


def test_a_relative_contracts_dir_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "platform").symlink_to(OFFICIAL)
    data = example_data(tmp_path)
    data["rivta"]["contracts_dir"] = "platform"
    cfg = config_mod.load(write_config(tmp_path, data))
    assert cfg.rivta.contracts_dir == tmp_path / "platform"
    assert [c.name for c in rivta.ContractFiles(cfg.rivta.contracts_dir).held] == ["PingForConfiguration"]


# -- the project's own files declare what the platform's do ---------------------------------------


def _qname(element: etree._Element, value: str | None) -> str | None:
    """A QName attribute as {namespace}local, by the element's own prefixes."""
    if value is None or ":" not in value and None not in element.nsmap:
        return value
    prefix, _, local = value.rpartition(":")
    return f"{{{element.nsmap.get(prefix or None)}}}{local}"


def _pattern(value: str) -> str:
    return value.replace("{1}", "")  # 'x{1}' is 'x': the platform writes it, the project does not


def _schema_declarations(path: Path) -> dict:
    """What an XSD declares, as data: namespaces, forms, and every element, type, particle and
    facet with its name, type, minOccurs/maxOccurs (annotations and layout left out)."""
    root = etree.parse(str(path)).getroot()

    def particle(element: etree._Element) -> tuple:
        kind = etree.QName(element).localname
        occurs = (element.get("minOccurs", "1"), element.get("maxOccurs", "1"))
        if kind == "element":
            return ("element", element.get("name"), _qname(element, element.get("type")), _qname(element, element.get("ref")), occurs,
                    body(element))
        if kind == "any":
            return ("any", element.get("namespace", "##any"), element.get("processContents", "strict"), occurs)
        return (kind, occurs, tuple(particle(c) for c in element if isinstance(c.tag, str) and etree.QName(c).localname != "annotation"))

    def body(element: etree._Element) -> tuple:
        found = []
        for child in element:
            if not isinstance(child.tag, str) or etree.QName(child).localname in ("annotation",):
                continue
            kind = etree.QName(child).localname
            if kind in ("sequence", "choice", "all", "element", "any"):
                found.append(particle(child))
            elif kind == "restriction":
                facets = tuple((etree.QName(f).localname, _pattern(f.get("value")) if etree.QName(f).localname == "pattern"
                                else f.get("value")) for f in child if isinstance(f.tag, str) and etree.QName(f).localname != "annotation")
                found.append(("restriction", _qname(child, child.get("base")), facets))
            else:
                found.append((kind, body(child)))
        return tuple(found)

    top = {}
    for child in root:
        if isinstance(child.tag, str) and etree.QName(child).localname in ("element", "complexType", "simpleType"):
            top[(etree.QName(child).localname, child.get("name"))] = (_qname(child, child.get("type")), body(child))
    imports = sorted(i.get("namespace") for i in root.iter(f"{{{XS}}}import"))
    return {"targetNamespace": root.get("targetNamespace"), "elementFormDefault": root.get("elementFormDefault", "unqualified"),
            "attributeFormDefault": root.get("attributeFormDefault", "unqualified"), "imports": imports, "declarations": top}


def _wsdl_declarations(path: Path) -> dict:
    """What a WSDL declares: its messages and parts, port type, binding (soapAction, style,
    header and body parts) and the namespaces its types import (documentation left out)."""
    root = etree.parse(str(path)).getroot()
    w, s = f"{{{WSDL}}}", f"{{{SOAP_BINDING}}}"
    messages = {m.get("name"): [(p.get("name"), _qname(p, p.get("element"))) for p in m.findall(f"{w}part")]
                for m in root.findall(f"{w}message")}
    port_types = {pt.get("name"): [(o.get("name"), _qname(o.find(f"{w}input"), o.find(f"{w}input").get("message")),
                                    _qname(o.find(f"{w}output"), o.find(f"{w}output").get("message")))
                                   for o in pt.findall(f"{w}operation")] for pt in root.findall(f"{w}portType")}
    bindings = {}
    for binding in root.findall(f"{w}binding"):
        operations = []
        for op in binding.findall(f"{w}operation"):
            action = op.find(f"{s}operation")
            operations.append((op.get("name"), action.get("soapAction"), action.get("style"),
                               [(_qname(h, h.get("message")), h.get("part"), h.get("use")) for h in op.iter(f"{s}header")],
                               [(b.getparent().tag, b.get("parts"), b.get("use")) for b in op.iter(f"{s}body")]))
        bindings[binding.get("name")] = (_qname(binding, binding.get("type")), binding.find(f"{s}binding").get("style"),
                                         binding.find(f"{s}binding").get("transport"), operations)
    services = {sv.get("name"): [(p.get("name"), _qname(p, p.get("binding"))) for p in sv.findall(f"{w}port")]
                for sv in root.findall(f"{w}service")}
    imports = sorted(i.get("namespace") for i in root.iter(f"{{{XS}}}import"))
    return {"name": root.get("name"), "targetNamespace": root.get("targetNamespace"), "imports": imports,
            "messages": messages, "portTypes": port_types, "bindings": bindings, "services": services}


def _declarations(path: Path) -> dict:
    return _wsdl_declarations(path) if path.suffix == ".wsdl" else _schema_declarations(path)


@pytest.mark.parametrize("relpath", PING_FILES, ids=lambda p: p.rsplit("/", 1)[1])
def test_the_projects_ping_and_registry_files_declare_what_the_platforms_do(relpath):
    ours, theirs = _declarations(rivta.CONTRACTS_DIR / relpath), _declarations(OFFICIAL / "schemas" / relpath)
    assert ours == theirs


def test_the_comparison_sees_a_difference(tmp_path):
    """The comparison is not blind: a changed maxOccurs, type, element name or namespace is a difference."""
    source = rivta.CONTRACTS_DIR / PING_FILES[1]
    seq = f"{{{XS}}}complexType[@name='PingForConfigurationResponseType']/{{{XS}}}sequence"
    changes = {
        "maxOccurs": lambda r: r.find(f"{seq}/{{{XS}}}element[@name='configuration']").set("maxOccurs", "1"),
        "minOccurs": lambda r: r.find(f"{seq}/{{{XS}}}element[@name='version']").set("minOccurs", "0"),
        "type": lambda r: r.find(f"{seq}/{{{XS}}}element[@name='version']").set("type", "xs:token"),
        "name": lambda r: r.find(f"{seq}/{{{XS}}}element[@name='version']").set("name", "versionId"),
        "namespace": lambda r: r.set("elementFormDefault", "unqualified"),
    }
    baseline = _declarations(source)
    assert baseline["declarations"][("element", "PingForConfiguration")][0] == f"{{{rivta.PING.responder_ns}}}PingForConfigurationType"
    for what, change in changes.items():
        copy_ = tmp_path / f"{what}.xsd"
        shutil.copy(source, copy_)
        _edit(copy_, change)
        assert _declarations(copy_) != baseline, what
    wsdl = tmp_path / "ping.wsdl"
    shutil.copy(rivta.CONTRACTS_DIR / PING_FILES[0], wsdl)
    _edit(wsdl, lambda r: r.find(f".//{{{SOAP_BINDING}}}header").set("part", "parameters"))
    assert _declarations(wsdl) != _declarations(rivta.CONTRACTS_DIR / PING_FILES[0])


def test_the_gateway_answers_ping_and_results_as_the_platforms_schemas_require():
    """Answers built by the gateway's own builders validate against the official Ping schema."""
    files = rivta.ContractFiles(OFFICIAL)
    schema = files.load_schema(rivta.PING)
    for answer in rivta.sample_answers(rivta.PING):
        schema.assertValid(answer)
    assert files.xsd_path(rivta.PING) == OFFICIAL / "schemas" / PING_FILES[1]
    assert files.xsd_path(rivta.PROCESS_CASE) == rivta.PROCESS_CASE.xsd_path
