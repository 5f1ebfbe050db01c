"""RIV-TA conformance (issue 19): ResultType as the platform's domains use it, SOAP 1.1 as
written (mustUnderstand, SOAPAction, the order of the checks), PingForConfiguration for
the gateway's own addresses only, and the addresses served in WSDLs and used towards 1177."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest
from conftest import KLIN1, PNR, ROOT, result_of
from lxml import etree

import errors
import rivta

XS = "http://www.w3.org/2001/XMLSchema"
CORE_XSDS = [
    rivta.CONTRACTS_DIR / "core_components" / "supportprocess_logistics_complaintsandfeedback_1.0.xsd",
    rivta.CONTRACTS_DIR / "core_components" / "infrastructure_eservicesupply_patientportal_2.0.xsd",
]


def _leaves(base: type) -> list[type]:
    return [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, base) and c is not base]


# -- 1. ResultType --------------------------------------------------------------------------------


def test_the_result_table_covers_every_rule_code_with_an_error_code_enum_value():
    rule_codes = {c.code for c in _leaves(errors.RuleViolation)}
    assert set(rivta.RESULT_ERROR_CODES) == rule_codes
    assert set(rivta.RESULT_ERROR_CODES.values()) <= set(rivta.ERROR_CODE_ENUM)


def test_the_readme_table_is_the_code_table():
    text = (ROOT / "README.md").read_text()
    section = text.split("#### ResultType: errorCode and subCode", 1)[1]
    rows = re.findall(r"^\| (GW0\d\d) \| ([A-Z_]+) \|$", section.split("\n\n| code |", 1)[0], re.M)
    assert dict(rows) == rivta.RESULT_ERROR_CODES and len(rows) == len(rivta.RESULT_ERROR_CODES)


@pytest.mark.parametrize("path", CORE_XSDS, ids=lambda p: p.name)
def test_the_contracts_result_type_is_riv_ta_s(path):
    schema = etree.parse(str(path))
    enum = schema.find(f"{{{XS}}}simpleType[@name='ErrorCodeEnum']")
    assert [e.get("value") for e in enum.iter(f"{{{XS}}}enumeration")] == list(rivta.ERROR_CODE_ENUM)
    result = schema.find(f"{{{XS}}}complexType[@name='ResultType']/{{{XS}}}sequence")
    elements = [(e.get("name"), e.get("type"), e.get("minOccurs")) for e in result.findall(f"{{{XS}}}element")]
    assert elements == [
        ("resultCode", "tns:ResultCodeEnum", None),
        ("errorCode", "tns:ErrorCodeEnum", "0"),
        ("subCode", "tns:ErrorCodeType", "0"),
        ("logId", "xs:string", None),
        ("message", "tns:ResultMessageType", "0"),
    ]


@pytest.mark.parametrize("log_id", ["b1f7c9e2-5d1e-4c3a-9a2b-0c4d5e6f7a8b", "1177-7f3a", "NTjP:logg/2026-11-26 10:15:00"])
def test_a_log_id_is_any_string(log_id):
    response = etree.Element(f"{{{rivta.PROCESS_CASE.responder_ns}}}ProcessCaseResponse")
    response.append(rivta.result_element(rivta.Result.ok(log_id), rivta.PROCESS_CASE.responder_ns))
    rivta.load_schema(rivta.PROCESS_CASE.xsd_path).assertValid(response)


def test_a_result_code_that_is_not_the_enum_is_invalid():
    response = etree.Element(f"{{{rivta.PROCESS_CASE.responder_ns}}}ProcessCaseResponse")
    result = rivta.Result("ERROR", str(uuid.uuid4()), "GW020", "x", "GW020")  # the old way: a GW code as errorCode
    response.append(rivta.result_element(result, rivta.PROCESS_CASE.responder_ns))
    assert not rivta.load_schema(rivta.PROCESS_CASE.xsd_path).validate(response)


def test_a_rule_refusal_answers_the_enum_and_the_gateway_code(post, make_case):
    status, root, _ = post(make_case(subjectOfCare={"personId": {"id": "191212121213", "type": "1.2.752.129.2.1.3.1"}}))
    result = result_of(root)
    assert status == 200 and result["resultCode"] == "ERROR"
    assert result["errorCode"] == "INVALID_REQUEST" and result["subCode"] == "GW020" and result["message"]
    body = root.find(f"{{{rivta.SOAP11_NS}}}Body")[0]
    rivta.load_schema(rivta.PROCESS_CASE.xsd_path).assertValid(body)
    names = [etree.QName(c).localname for c in body.find(f"{{{rivta.PROCESS_CASE.responder_ns}}}result")]
    assert names == ["resultCode", "errorCode", "subCode", "logId", "message"]


def test_a_message_for_an_unknown_case_is_an_application_error(post, make_message):
    status, root, _ = post(make_message(caseId="NEVER-SEEN"))
    result = result_of(root)
    assert status == 200 and (result["errorCode"], result["subCode"]) == ("APPLICATION_ERROR", "GW027")
    rivta.load_schema(rivta.PROCESS_CASE_MESSAGE.xsd_path).assertValid(root.find(f"{{{rivta.SOAP11_NS}}}Body")[0])


def test_an_accepted_case_has_no_error_code_and_no_sub_code(post, make_case):
    _, root, _ = post(make_case())
    result = result_of(root)
    assert result["resultCode"] == "OK" and "errorCode" not in result and "subCode" not in result


@pytest.mark.parametrize("contract", [rivta.PROCESS_CASE, rivta.PROCESS_CASE_MESSAGE], ids=lambda c: c.name)
def test_the_ok_answer_is_the_built_answer_byte_for_byte_and_valid(contract):
    """rivta.ok_envelope fills the logId into a serialised answer: it must be exactly what
    building the answer gives, and valid against the contract's own schema."""
    log_id = str(uuid.uuid4())
    built = rivta.envelope(rivta.response_element(contract, rivta.Result.ok(log_id)))
    fast = rivta.ok_envelope(contract, log_id)
    assert fast == built and log_id.encode() in fast
    body = etree.fromstring(fast).find(f"{{{rivta.SOAP11_NS}}}Body")[0]
    rivta.Schemas().validate(body, contract)  # the responder XSD declares the response too
    assert rivta.ok_envelope(contract, "another") != fast


def test_every_error_code_is_in_the_tree_docstring_and_the_readme():
    readme = (ROOT / "README.md").read_text()
    for cls in _leaves(errors.GatewayError):
        assert f"{cls.code}" in errors.__doc__, cls
        assert cls.code in readme or cls.code in ("GW001", "GW002", "GW003"), cls  # GW001–003 is one row


# -- 3. SOAP 1.1 as written --------------------------------------------------------------------------

GW_HSA = "SE5566778899-GW01"
WSA = "http://www.w3.org/2005/08/addressing"
SOAP_ENV = rivta.SOAP11_NS


def _with_header(body: bytes, *headers: etree._Element) -> bytes:
    root = etree.fromstring(body)
    header = root.find(f"{{{SOAP_ENV}}}Header")
    for element in headers:
        header.append(element)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _header(tag: str, must: str | None = "1", actor: str | None = None, text: str = "x") -> etree._Element:
    element = etree.Element(tag)
    element.text = text
    if must is not None:
        element.set(f"{{{SOAP_ENV}}}mustUnderstand", must)
    if actor is not None:
        element.set(f"{{{SOAP_ENV}}}actor", actor)
    return element


def _fault(root) -> tuple[str, str]:
    fault = root.find(f".//{{{SOAP_ENV}}}Fault")
    assert fault is not None, etree.tostring(root)
    return fault.findtext("faultcode"), fault.findtext("faultstring")


WSSE = "{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd}Security"


@pytest.mark.parametrize("tag", ["{urn:example:custom}Trace", WSSE])
def test_a_header_that_must_be_understood_and_is_not_gets_must_understand(post, make_case, store, tag):
    status, root, _ = post(_with_header(make_case(), _header(tag)))
    code, text = _fault(root)
    assert status == 500 and code == "soap:MustUnderstand" and text.startswith("GW070 ") and "mustUnderstand" in text
    assert store.counts()["cases"] == 0


@pytest.mark.parametrize("header", [
    _header("{urn:example:custom}Trace", must="0"),  # may be ignored
    _header("{urn:example:custom}Trace", must=None),
    _header("{urn:example:custom}Trace", actor="urn:some:other:node"),  # not for this node
    _header(f"{{{WSA}}}MessageID", text="urn:uuid:6b29fc40-ca47-1067-b31d-00dd010662da"),
    _header(f"{{{WSA}}}To", actor="http://schemas.xmlsoap.org/soap/actor/next"),
    _header(f"{{{WSA}}}Action", must="true", text=rivta.PROCESS_CASE.soap_action),
])
def test_headers_the_gateway_processes_or_may_ignore_are_accepted(post, make_case, header):
    status, root, _ = post(_with_header(make_case(), header))
    assert status == 200 and result_of(root)["resultCode"] == "OK"


def test_logical_address_may_be_marked_must_understand(post, make_case):
    root = etree.fromstring(make_case())
    address = root.find(f".//{{{rivta.REGISTRY_NS}}}LogicalAddress")
    address.set(f"{{{SOAP_ENV}}}mustUnderstand", "1")
    status, answer, _ = post(etree.tostring(root))
    assert status == 200 and result_of(answer)["resultCode"] == "OK"


@pytest.mark.parametrize("action", [rivta.PROCESS_CASE_MESSAGE.soap_action, f'"{rivta.PING.soap_action}"',
                                    "urn:wrong:Op", f"{rivta.PROCESS_CASE.responder_ns}:ProcessCaseMessage"])
def test_a_soap_action_naming_another_operation_is_refused(post, make_case, store, action):
    status, root, _ = post(make_case(), headers={"SOAPAction": action})
    code, text = _fault(root)
    assert status == 500 and code == "soap:Client" and text.startswith("GW071 ")
    assert store.counts()["cases"] == 0


@pytest.mark.parametrize("action", [None, "", '""', rivta.PROCESS_CASE.soap_action, f'"{rivta.PROCESS_CASE.soap_action}"'])
def test_a_missing_empty_or_right_soap_action_is_accepted(post, make_case, action):
    headers = {} if action is None else {"SOAPAction": action}
    status, root, _ = post(make_case(), headers=headers)
    assert status == 200 and result_of(root)["resultCode"] == "OK"


def test_an_unknown_address_is_reported_before_the_schema(post, make_case, store):
    root = etree.fromstring(make_case(address="SE5566778899-NOPE"))
    case = root.find(f".//{{{rivta.PROCESS_CASE.responder_ns}}}case")
    etree.SubElement(case, f"{{{rivta.CORE_NS}}}notInTheSchema").text = "x"
    status, answer, _ = post(etree.tostring(root))
    assert status == 500 and _fault(answer)[1].startswith("GW016 ")
    # with a known address the same body is a schema violation
    case.getparent().getparent().getparent().find(f".//{{{rivta.REGISTRY_NS}}}LogicalAddress").text = KLIN1
    status, answer, _ = post(etree.tostring(root))
    assert status == 500 and _fault(answer)[1].startswith("GW015 ")
    assert store.counts()["cases"] == 0


def test_the_envelope_is_checked_before_the_address(post, make_case):
    body = _with_header(make_case(address="SE5566778899-NOPE"), _header("{urn:example:custom}Trace"))
    assert _fault(post(body)[1])[1].startswith("GW070 ")
    assert _fault(post(make_case(address="SE5566778899-NOPE"), headers={"SOAPAction": "urn:wrong:Op"})[1])[1].startswith("GW071 ")


def test_the_transport_is_checked_before_the_envelope(post, make_case):
    body = _with_header(make_case(address="SE5566778899-NOPE"), _header("{urn:example:custom}Trace"))
    status, root, _ = post(body, content_type="application/json")
    assert status == 500 and _fault(root)[1].startswith("GW017 ")


# -- 4. PingForConfiguration ----------------------------------------------------------------------------


def _ping(address: str | None) -> bytes:
    header = f"<soap:Header><r:LogicalAddress>{address}</r:LogicalAddress></soap:Header>" if address else ""
    return f"""<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"
        xmlns:r="urn:riv:itintegration:registry:1" xmlns:p="urn:riv:itintegration:monitoring:PingForConfigurationResponder:1">
      {header}<soap:Body><p:PingForConfiguration>
      <p:serviceContractNamespace>urn:riv:itintegration:monitoring:PingForConfigurationResponder:1</p:serviceContractNamespace>
      <p:logicalAddress>{address or GW_HSA}</p:logicalAddress></p:PingForConfiguration></soap:Body></soap:Envelope>""".encode()


PING_NS = {"p": rivta.PING.responder_ns}


def _configuration(root) -> dict[str, str]:
    names = root.xpath("//p:configuration/p:name/text()", namespaces=PING_NS)
    return dict(zip(names, root.xpath("//p:configuration/p:value/text()", namespaces=PING_NS)))


@pytest.mark.parametrize("address", [GW_HSA, GW_HSA.lower(), KLIN1])
def test_ping_answers_for_the_gateway_and_its_units_with_no_internals(post, address):
    status, root, text = post(_ping(address))
    assert status == 200
    rivta.load_schema(rivta.PING.xsd_path).assertValid(root.find(f"{{{SOAP_ENV}}}Body")[0])
    assert _configuration(root) == {"hsaId": GW_HSA, "database": "writable"}
    for internal in ("python", "demo_rest", "demo_soap", "targets", "units"):
        assert internal not in text.lower()


@pytest.mark.parametrize("address", ["SE165565594230-1000", "SE5566778899-NOPE", None])
def test_ping_refuses_other_addresses(post, address):
    status, root, _ = post(_ping(address))
    assert status == 500 and _fault(root)[1].startswith("GW016 ")


def test_ping_details_on_request(config_data):
    import copy

    import config as config_mod
    import cli
    import gateway

    data = copy.deepcopy(config_data)
    data["rivta"]["ping_details"] = True
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    try:
        response = app.test_client().post("/rivta", data=_ping(GW_HSA), headers={"Content-Type": "text/xml"})
        found = _configuration(etree.fromstring(response.data))
        assert {"hsaId", "database", "python", "targets", "units", "contracts"} <= set(found)
        assert "demo_rest" in found["targets"]
    finally:
        app.extensions["gateway.worker"].stop()
        app.extensions["gateway.store"].close()


# -- 5. addresses --------------------------------------------------------------------------------------

SOAP_ADDRESS = "//soap:address/@location"
WSDL_NS = {"soap": "http://schemas.xmlsoap.org/wsdl/soap/", "wsdl": "http://schemas.xmlsoap.org/wsdl/"}


@pytest.mark.parametrize("base", ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"])
def test_without_public_url_a_loopback_request_gets_its_own_address(client, base):
    wsdl = client.get("/rivta/ProcessCase?wsdl", base_url=base)
    assert wsdl.status_code == 200
    assert etree.fromstring(wsdl.data).xpath(SOAP_ADDRESS, namespaces=WSDL_NS) == [f"{base}/rivta"]


def test_a_spoofed_host_is_never_written_into_a_wsdl(client):
    for path in ("/rivta/ProcessCase?wsdl", "/rivta/contracts/" + rivta.PING.wsdl_relpath):
        wsdl = client.get(path, headers={"Host": "evil.example"})
        assert wsdl.status_code == 503 and wsdl.data.startswith(b"GW072 ") and b"evil" not in wsdl.data
        assert b"gateway.public_url" in wsdl.data
    for path in ("/rivta", "/rivta/contracts/interactions/ProcessCaseInteraction/ProcessCaseResponder_1.0.xsd"):
        served = client.get(path, headers={"Host": "evil.example"})
        assert served.status_code == 200 and b"evil" not in served.data
    xsd = client.get("/rivta/contracts/interactions/ProcessCaseInteraction/ProcessCaseResponder_1.0.xsd",
                     headers={"Host": "evil.example"})
    locations = etree.fromstring(xsd.data).xpath("//xs:import/@schemaLocation", namespaces={"xs": XS})
    assert locations and all(location.startswith("/rivta/contracts/") for location in locations)


def test_with_public_url_the_host_does_not_matter(app, client):
    app.extensions["gateway.intake"].public_url = "https://gw.example.se/"
    wsdl = client.get("/rivta/ProcessCase?wsdl", headers={"Host": "evil.example"})
    assert wsdl.status_code == 200 and b"evil" not in wsdl.data
    assert etree.fromstring(wsdl.data).xpath(SOAP_ADDRESS, namespaces=WSDL_NS) == ["https://gw.example.se/rivta"]


@pytest.mark.parametrize("contract", [rivta.ADD_MESSAGE, rivta.UPDATE_CASE_STATUS, rivta.REGISTER_CASE], ids=lambda c: c.name)
@pytest.mark.parametrize("host", ["127.0.0.1:8080", "evil.example"])
def test_consumer_side_wsdls_carry_no_address_of_the_gateway(client, contract, host):
    served = client.get(f"/rivta/contracts/{contract.wsdl_relpath}", headers={"Host": host})
    assert served.status_code == 200
    tree = etree.fromstring(served.data)
    assert tree.xpath("//soap:address", namespaces=WSDL_NS) == [] and tree.xpath("//wsdl:service", namespaces=WSDL_NS) == []
    assert tree.xpath("//wsdl:binding", namespaces=WSDL_NS)  # still usable to build a client


def _check(runner, tmp_path, **gateway_keys):
    import cli
    import gateway
    from conftest import example_data, write_config

    data = example_data(tmp_path)
    data["server"]["bind"] = gateway_keys.pop("bind")
    data["gateway"].update(gateway_keys)
    return runner.invoke(cli.cli, ["check", "--config", str(write_config(tmp_path, data))])


def test_check_requires_public_url_when_binding_beyond_loopback(runner, tmp_path):
    refused = _check(runner, tmp_path, bind="0.0.0.0:8080")
    assert refused.exit_code == 1 and "FAIL config: GW001 config key 'gateway.public_url'" in refused.output
    assert _check(runner, tmp_path, bind="0.0.0.0:8080", public_url="https://gw.example.se").exit_code == 0
    for bind in ("127.0.0.1:8080", "[::1]:8080", "localhost:8080"):
        assert _check(runner, tmp_path, bind=bind).exit_code == 0, bind


def test_the_shipped_example_passes_check(runner):
    import cli
    import gateway

    result = runner.invoke(cli.cli, ["check", "--config", str(ROOT / "config.example.yaml")])
    assert result.exit_code == 0, result.output


def test_national_takes_a_logical_address_per_contract(config_data):
    import copy

    import requests

    import config as config_mod
    from adapters.national import NationalAdapter
    from errors import TargetRefused
    from model import Message
    from sandbox.national import create_national_stub
    from sandbox.providers import serve_in_thread

    inbox = "SE2321000016-INBX"
    url, stop = serve_in_thread(create_national_stub(logical_address=inbox))
    data = copy.deepcopy(config_data)
    data["national"].update(endpoint=f"{url}/rivta", logical_addresses={"AddMessage": inbox},
                            retry={"max_attempts": 1, "initial_s": 0.01, "multiplier": 2, "max_s": 0.01, "jitter": 0})
    cfg = config_mod.from_dict(data, base_dir=ROOT, environ={})
    assert cfg.national.address_for("AddMessage") == inbox
    assert cfg.national.address_for("UpdateCaseStatus") == cfg.national.logical_address
    adapter = NationalAdapter(cfg.national, source_system=GW_HSA)
    try:
        message = Message(case_id="1177-C-1", message_id="M-1", text="Svar", direction="out", kind="FINAL_REPLY",
                          created_time=dt.datetime(2026, 11, 28, 8, 30, tzinfo=dt.timezone.utc), sender_hsa_id=KLIN1)
        assert adapter.add_message(subject_of_care_id=PNR, national_case_id="1177-C-1", message=message).status_code == 200
        from model import CaseStatus, StatusUpdate

        with pytest.raises(TargetRefused):  # the shared address, which this platform does not route: VP004
            adapter.update_status(national_case_id="1177-C-1", update=StatusUpdate(case_id="1177-C-1", status=CaseStatus.IN_PROGRESS))
        received = requests.get(f"{url}/_received", timeout=5).json()["received"]
        assert [(r["operation"], r["logicalAddress"]) for r in received] == [
            ("AddMessage", inbox), ("UpdateCaseStatus", cfg.national.logical_address)]
    finally:
        adapter.close()
        stop()


def test_a_per_contract_logical_address_names_a_known_contract(config_data):
    import copy

    import config as config_mod

    data = copy.deepcopy(config_data)
    data["national"]["logical_addresses"] = {"SendMessage": "SE2321000016-INBX"}
    with pytest.raises(errors.ConfigError, match="national.logical_addresses"):
        config_mod.from_dict(data, base_dir=ROOT, environ={})
