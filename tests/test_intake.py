"""Intake over RIV-TA: every rule and refusal, idempotency, no partial writes, hostile XML."""

from __future__ import annotations

import copy
import io
import datetime as dt
import json

import pytest
from conftest import BOARD, EXE, GIF, JPEG, KLIN1, PDF, PNG, PNR, SAMORDNING, result_of, sweden_now

import rivta
from lxml import etree

#: about Swedish dates: `make test` also runs these at set instants (conftest --clock)
pytestmark = pytest.mark.dates


def stored(store) -> dict:
    return store.counts()


EMPTY = {"cases": 0, "messages": 0, "attachments": 0, "attachment_blobs": 0, "outbox": 0, "sync_log": 0}


# -- accepted ----------------------------------------------------------------------------------


def test_complaint_with_two_attachments_is_stored_with_its_outbox_row(post, make_case, store):
    status, root, _ = post(make_case(), headers={"x-skltp-correlation-id": "corr-1"})
    result = result_of(root)
    assert status == 200 and result["resultCode"] == "OK"
    row = store.case_row("1177-C-0001")
    assert row["receiver_hsa_id"] == KLIN1 and row["target"] == "demo_rest" and row["provider_unit_code"] == "KLIN1"
    assert row["correlation_id"] == "corr-1" and row["status"] == "received"
    content = json.loads(row["content"])
    assert content["subject_of_care"]["person_id"]["id"] == PNR
    assert all("data" not in a for a in content["attachments"])  # files are not inside JSON
    files = store.attachments_of("1177-C-0001")
    assert [(a.file_name, a.data) for a in files] == [("intyg.pdf", PDF), ("bild.png", PNG)]
    outbox = store.outbox_rows("1177-C-0001")
    assert [(o["action"], o["status"], o["target"]) for o in outbox] == [("deliver_case", "pending", "demo_rest")]
    log = list(store.db.query("select * from sync_log"))
    assert log[0]["event"] == "case_received" and log[0]["correlation_id"] == "corr-1" and log[0]["hsa_id"] == KLIN1


def test_response_conforms_to_the_contract(post, make_case):
    _, root, _ = post(make_case())
    body = root.find(f"{{{rivta.SOAP11_NS}}}Body")[0]
    assert etree.QName(body).localname == "ProcessCaseResponse"
    rivta.load_schema(rivta.PROCESS_CASE.xsd_path).assertValid(body)


@pytest.mark.parametrize(
    "overrides",
    [
        {"caseType": "QUESTION", "complaint": None, "attachment": [{"fileName": "a.gif", "mimeType": "image/gif", "data": GIF}]},
        {"caseType": "PRESCRIPTION_RENEWAL", "complaint": None, "attachment": None,
         "chosenMedication": [{"prescriptionId": "RX-1", "name": "Alvedon 500 mg"}]},
        {"caseType": "BOOKING", "complaint": None, "attachment": None, "replyPreference": None, "subject": None},
        {"subjectOfCare": {"personId": {"id": SAMORDNING, "type": "1.2.752.129.2.1.3.3"}}},
        {"representative": {"personId": {"id": "198112189876", "type": "1.2.752.129.2.1.3.1"}, "isProxy": True}},
    ],
)
def test_other_case_kinds_are_accepted(post, make_case, store, overrides):
    _, root, _ = post(make_case(**overrides))
    assert result_of(root)["resultCode"] == "OK"
    assert stored(store)["cases"] == 1


def test_complaint_to_patient_board_with_only_a_place(post, make_case, store):
    board_case = make_case(
        BOARD,
        receiver={"hsaId": BOARD, "isPatientBoard": True},
        complaint={"eventDate": sweden_now().strftime("%Y%m%d"), "isCareProcess": True, "eventLocationText": "Vårdcentralen i Ort"},
    )
    _, root, _ = post(board_case)
    assert result_of(root)["resultCode"] == "OK"
    assert store.case_row("1177-C-0001")["is_patient_board"] == 1


def test_five_attachments_of_the_maximum_size_are_accepted(app, post, make_case, store):
    app.extensions["gateway.intake"].max_attachment_bytes = 4096
    big = PDF.ljust(4096, b"\n")
    files = [{"fileName": f"{i}.pdf", "mimeType": "application/pdf", "data": big[:-1] + bytes([i])} for i in range(5)]
    _, root, _ = post(make_case(attachment=files))
    assert result_of(root)["resultCode"] == "OK"
    assert stored(store)["attachment_blobs"] == 5


# -- idempotency ------------------------------------------------------------------------------


def test_same_case_twice_is_stored_once_and_answered_ok_both_times(post, make_case, store):
    body = make_case()
    first, second = post(body), post(body)
    assert result_of(first[1])["resultCode"] == result_of(second[1])["resultCode"] == "OK"
    assert stored(store) == {**EMPTY, "cases": 1, "attachments": 2, "attachment_blobs": 2, "outbox": 1, "sync_log": 1}


def test_same_case_id_with_other_content_is_refused(post, make_case, store):
    post(make_case())
    before = stored(store)
    _, root, _ = post(make_case(text="Ändrad text"))
    result = result_of(root)
    assert result["resultCode"] == "ERROR" and result["subCode"] == "GW028"
    assert stored(store) == before


def test_same_file_in_two_cases_is_stored_once(post, make_case, store):
    post(make_case(caseId="A"))
    post(make_case(caseId="B"))
    counts = stored(store)
    assert counts["cases"] == 2 and counts["attachments"] == 4 and counts["attachment_blobs"] == 2


def test_follow_up_message(post, make_case, make_message, store):
    post(make_case())
    _, root, _ = post(make_message())
    assert result_of(root)["resultCode"] == "OK"
    _, again, _ = post(make_message())
    assert result_of(again)["resultCode"] == "OK"
    assert [o["action"] for o in store.outbox_rows("1177-C-0001")] == ["deliver_case", "deliver_message"]
    assert [a.data for a in store.attachments_of("1177-C-0001", "1177-M-0001")] == [JPEG]
    assert stored(store)["messages"] == 1


def test_follow_up_for_unknown_case_is_refused_and_stores_nothing(post, make_message, store):
    _, root, _ = post(make_message(caseId="NEVER-SEEN"))
    result = result_of(root)
    assert result["resultCode"] == "ERROR" and result["subCode"] == "GW027" and "NEVER-SEEN" in result["message"]
    assert stored(store) == EMPTY


# -- rule refusals: resultCode ERROR, nothing stored -----------------------------------------------


def _tomorrow() -> str:
    return (sweden_now().date() + dt.timedelta(days=1)).strftime("%Y%m%d")


REFUSALS = [
    ("bad check digit", {"subjectOfCare": {"personId": {"id": "191212121213", "type": "1.2.752.129.2.1.3.1"}}}, "GW020"),
    ("samordningsnummer typed as personnummer", {"subjectOfCare": {"personId": {"id": SAMORDNING, "type": "1.2.752.129.2.1.3.1"}}}, "GW020"),
    ("impossible date", {"subjectOfCare": {"personId": {"id": "191213121212", "type": "1.2.752.129.2.1.3.1"}}}, "GW020"),
    ("unknown id type", {"subjectOfCare": {"personId": {"id": PNR, "type": "1.2.752.129.2.1.3.2"}}}, "GW020"),
    ("representative with a bad number", {"representative": {"personId": {"id": "198112189875", "type": "1.2.752.129.2.1.3.1"}, "isProxy": False}}, "GW020"),
    ("receiver not an HSA-id", {"receiver": {"hsaId": "KLIN1", "isPatientBoard": False}}, "GW021"),
    ("disguised executable", {"attachment": [{"fileName": "intyg.pdf", "mimeType": "application/pdf", "data": EXE}]}, "GW022"),
    ("declared type differs", {"attachment": [{"fileName": "a.png", "mimeType": "image/png", "data": PDF}]}, "GW022"),
    ("complaint without event date", {"complaint": {"isCareProcess": False, "eventLocationText": "x"}}, "GW025"),
    ("complaint without complaint block", {"complaint": None}, "GW025"),
    ("event in the future", {"complaint": {"eventDate": None, "isCareProcess": False}}, "GW025"),
    ("invalid calendar date", {"complaint": {"eventDate": "20250230", "isCareProcess": False}}, "GW029"),
    ("patient board without unit or place", {"receiver": {"hsaId": BOARD, "isPatientBoard": True}, "complaint": {"eventDate": "20250101", "isCareProcess": False}}, "GW026"),
    ("receiver not served", {"receiver": {"hsaId": "SE5566778899-OTHER", "isPatientBoard": False}}, "GW029"),
    ("empty text", {"text": "   "}, "GW029"),
]


@pytest.mark.parametrize("why, overrides, code", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_rule_refusals_answer_error_and_store_nothing(post, make_case, store, capsys, why, overrides, code):
    if why == "event in the future":
        overrides = {"complaint": {"eventDate": _tomorrow(), "isCareProcess": False}}
    status, root, text = post(make_case(**overrides))
    result = result_of(root)
    assert status == 200 and result["resultCode"] == "ERROR" and result["subCode"] == code, result
    assert result["message"] and len(result["logId"]) == 36
    assert stored(store) == EMPTY
    logged = capsys.readouterr().err
    for number in (PNR, SAMORDNING, "191212121213", "198112189875", "191213121212"):
        assert number not in text and number not in logged


def test_too_large_attachment(app, post, make_case, store):
    app.extensions["gateway.intake"].max_attachment_bytes = 1000
    _, root, _ = post(make_case(attachment=[{"fileName": "a.pdf", "mimeType": "application/pdf", "data": PDF.ljust(1001)}]))
    assert result_of(root)["subCode"] == "GW023"
    assert stored(store) == EMPTY


def test_message_with_disguised_file_is_refused(post, make_case, make_message, store):
    post(make_case())
    before = stored(store)
    _, root, _ = post(make_message(attachment=[{"fileName": "x.jpg", "mimeType": "image/jpeg", "data": EXE}]))
    assert result_of(root)["subCode"] == "GW022"
    assert stored(store) == before


# -- technical refusals: SOAP faults, nothing stored ------------------------------------------------


def _fault(post, body, **kwargs) -> tuple[int, dict]:
    status, root, text = post(body, **kwargs)
    assert "Traceback" not in text
    return status, result_of(root)


def test_six_attachments_break_the_schema(post, make_case, store):
    files = [{"fileName": f"{i}.pdf", "mimeType": "application/pdf", "data": PDF} for i in range(5)]
    root = etree.fromstring(make_case(attachment=files))
    attachments = root.xpath("//*[local-name()='attachment']")
    attachments[-1].addnext(copy.deepcopy(attachments[-1]))  # a sixth: zeep itself refuses to build one
    status, fault = _fault(post, etree.tostring(root))
    assert status == 500 and fault["fault"] == "soap:Client" and fault["faultstring"].startswith("GW015")
    assert "attachment" in fault["faultstring"]
    assert stored(store) == EMPTY


def test_schema_errors_never_echo_a_person_id(post, make_case, store, capsys):
    root = etree.fromstring(make_case())
    pid = root.xpath("//*[local-name()='personId']/*[local-name()='id']")[0]
    pid.text = "19121212121"  # 11 digits: breaks the schema's pattern
    status, fault = _fault(post, etree.tostring(root))
    assert status == 500 and fault["faultstring"].startswith("GW015") and "personId/id" in fault["faultstring"]
    assert "19121212121" not in fault["faultstring"] and "19121212121" not in capsys.readouterr().err
    assert stored(store) == EMPTY


def test_missing_and_unknown_logical_address(post, make_case, store):
    status, fault = _fault(post, make_case(None))
    assert status == 500 and fault["faultstring"].startswith("GW016") and "missing" in fault["faultstring"]
    status, fault = _fault(post, make_case("SE5566778899-NOPE"))
    assert fault["faultstring"].startswith("GW016") and "SE5566778899-NOPE" in fault["faultstring"]
    assert stored(store) == EMPTY


def test_address_is_case_insensitive(post, make_case):
    _, root, _ = post(make_case(KLIN1.lower()))
    assert result_of(root)["resultCode"] == "OK"


def test_unknown_contract(post):
    body = (
        b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
        b'<x:DoSomething xmlns:x="urn:riv:other:DoSomethingResponder:1"/></soap:Body></soap:Envelope>'
    )
    status, fault = _fault(post, body)
    assert status == 500 and fault["faultstring"].startswith("GW014")


def test_soap_12_is_refused_with_version_mismatch(post):
    body = b'<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body/></env:Envelope>'
    status, fault = _fault(post, body)
    assert status == 500 and fault["fault"] == "soap:VersionMismatch" and fault["faultstring"].startswith("GW013")
    status, fault = _fault(post, body, content_type="application/soap+xml; charset=utf-8")
    assert fault["faultstring"].startswith("GW013")


@pytest.mark.parametrize(
    "body, code",
    [
        (b"", "GW012"),
        (b"<soap:Envelope xmlns:soap='http://schemas.xmlsoap.org/soap/envelope/'><soap:Body>", "GW012"),
        (b"not xml at all", "GW012"),
        (b"<x/>", "GW013"),
        (b"<soap:Envelope xmlns:soap='http://schemas.xmlsoap.org/soap/envelope/'/>", "GW013"),
        (b"<soap:Envelope xmlns:soap='http://schemas.xmlsoap.org/soap/envelope/'><soap:Body/></soap:Envelope>", "GW013"),
        ("<?xml version='1.0' encoding='UTF-16'?><x/>".encode("utf-16"), "GW012"),
        (b"<?xml version='1.0' encoding='ISO-8859-1'?><x/>", "GW012"),
    ],
)
def test_malformed_requests(post, store, body, code):
    status, fault = _fault(post, body)
    assert status == 500 and fault["faultstring"].startswith(code), fault
    assert stored(store) == EMPTY


def test_wrong_content_type(post, make_case):
    status, fault = _fault(post, make_case(), content_type="application/json")
    assert fault["faultstring"].startswith("GW017")


HOSTILE = {
    "billion laughs": b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><a>&lol3;</a></soap:Body></soap:Envelope>""",
    "external entity": b"""<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><a>&xxe;</a></soap:Body></soap:Envelope>""",
    "external dtd": b"""<!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd">
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body/></soap:Envelope>""",
    "doctype after comment": b"""<?xml version="1.0"?><!-- hello --><!DOCTYPE r []>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body/></soap:Envelope>""",
    "utf-8 bom and doctype": b"""\xef\xbb\xbf<!DOCTYPE r [<!ENTITY a "b">]><r>&a;</r>""",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_xml_is_refused_before_parsing(post, store, monkeypatch, name):
    class NoParsing:
        def __getattr__(self, name):
            return getattr(etree, name)

        def fromstring(self, *args, **kwargs):
            raise AssertionError("the parser was reached")

    monkeypatch.setattr(rivta, "etree", NoParsing())
    status, root, text = post(HOSTILE[name])
    assert status == 500 and result_of(root)["faultstring"].startswith("GW011")
    assert "root:" not in text
    assert stored(store) == EMPTY


def test_entity_reference_without_doctype_is_not_expanded(post, store):
    body = b"""<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><a>&xxe;</a></soap:Body></soap:Envelope>"""
    status, fault = _fault(post, body)
    assert status == 500 and fault["faultstring"].startswith("GW012")


def test_body_over_the_limit_is_refused_unread(app, post, make_case, store):
    app.extensions["gateway.intake"].max_body_bytes = 2000
    big = make_case(attachment=[{"fileName": "a.pdf", "mimeType": "application/pdf", "data": PDF.ljust(3000)}])
    status, fault = _fault(post, big)
    assert status == 500 and fault["faultstring"].startswith("GW010")
    assert stored(store) == EMPTY


def test_chunked_body_over_the_limit(app, client, make_case, store):
    app.extensions["gateway.intake"].max_body_bytes = 2000
    body = make_case(attachment=[{"fileName": "a.pdf", "mimeType": "application/pdf", "data": PDF.ljust(3000)}])

    response = client.post(
        "/rivta",
        input_stream=io.BytesIO(body),  # no Content-Length, as with chunked transfer encoding
        headers={"Content-Type": "text/xml", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 500 and b"GW010" in response.data
    assert stored(store) == EMPTY


# -- no partial writes, internal errors ----------------------------------------------------------


def test_failure_inside_the_transaction_leaves_nothing(post, make_case, store, monkeypatch, capsys):
    import store as store_mod

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire 191212121212")

    monkeypatch.setattr(store_mod.Store, "_enqueue", boom)
    status, root, text = post(make_case())
    fault = result_of(root)
    assert status == 500 and fault["fault"] == "soap:Server" and fault["faultstring"].startswith("GW099")
    assert "disk on fire" not in text and "Traceback" not in text
    assert stored(store) == EMPTY
    logged = capsys.readouterr().err
    assert PNR not in logged and "RuntimeError" in logged


def test_database_locked_is_a_server_fault_and_nothing_is_stored(app, post, make_case, store, backend):
    store.busy_timeout_ms = 50
    if backend == "postgresql":  # another instance holds the write lock
        import psycopg

        from store.dialect import WRITE_LOCK_KEY

        blocker = psycopg.connect(store.url, autocommit=True)
        blocker.execute("BEGIN")
        blocker.execute(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")
    else:
        import sqlite3

        store.close()
        blocker = sqlite3.connect(store.path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
    try:
        status, root, _ = post(make_case())
        fault = result_of(root)
        assert status == 500 and fault["fault"] == "soap:Server" and fault["faultstring"].startswith("GW050")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert stored(store) == EMPTY


# -- ping and contract files -------------------------------------------------------------------------


def test_ping_for_configuration(post):
    body = b"""<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"
        xmlns:r="urn:riv:itintegration:registry:1" xmlns:p="urn:riv:itintegration:monitoring:PingForConfigurationResponder:1">
      <soap:Header><r:LogicalAddress>SE5566778899-GW01</r:LogicalAddress></soap:Header>
      <soap:Body><p:PingForConfiguration><p:serviceContractNamespace>urn:x</p:serviceContractNamespace>
      <p:logicalAddress>SE5566778899-GW01</p:logicalAddress></p:PingForConfiguration></soap:Body></soap:Envelope>"""
    status, root, text = post(body)
    assert status == 200
    ns = {"p": "urn:riv:itintegration:monitoring:PingForConfigurationResponder:1"}
    config = dict(zip(root.xpath("//p:configuration/p:name/text()", namespaces=ns), root.xpath("//p:configuration/p:value/text()", namespaces=ns)))
    assert config["hsaId"] == "SE5566778899-GW01" and config["database"] == "writable"
    assert root.xpath("//p:version/text()", namespaces=ns)
    assert "secret" not in text.lower()


def test_wsdls_are_served_with_the_gateways_address(app, client):
    index = client.get("/rivta").get_data(as_text=True)
    assert "ProcessCaseInteraction_1.0_RIVTABP21.wsdl" in index
    app.extensions["gateway.intake"].public_url = "https://gw.example.se"
    wsdl = client.get("/rivta/ProcessCase?wsdl", base_url="https://other.example.se")
    tree = etree.fromstring(wsdl.data)
    locations = tree.xpath("//soap:address/@location", namespaces={"soap": "http://schemas.xmlsoap.org/wsdl/soap/"})
    assert locations == ["https://gw.example.se/rivta"]
    xsd = client.get("/rivta/contracts/core_components/supportprocess_logistics_complaintsandfeedback_1.0.xsd")
    assert xsd.status_code == 200 and b"CaseType" in xsd.data
    assert client.get("/rivta/contracts/../gateway.py").status_code == 404
    assert client.get("/rivta/contracts/../../etc/passwd").status_code == 404
