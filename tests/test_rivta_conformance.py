"""RIV-TA conformance (issue 19): ResultType as the platform's domains use it, SOAP 1.1 as
written (mustUnderstand, SOAPAction, the order of the checks), PingForConfiguration for
the gateway's own addresses only, and the addresses served in WSDLs and used towards 1177."""

from __future__ import annotations

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
        ("subCode", "xs:string", "0"),
        ("logId", "xs:string", None),
        ("message", "xs:string", "0"),
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
