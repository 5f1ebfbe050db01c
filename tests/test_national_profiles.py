"""The national side is a profile (issue 19, item 7): the registry, each profile's requests
against its schema (mvk-inbox-2.0's official one, whose subjectOfCareId pattern the
simulator corrects and says so), what mvk-inbox-2.0 cannot carry refused at `gateway
check`, at the provider API (422 with the code, nothing stored) and, when it reaches the
worker anyway, as a dead row with an alert; and what it can carry reaching the inbox."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib

import pytest
import requests
from conftest import KLIN1, PDF, PNR, REFERENCE, ROOT, SAMORDNING, result_of, write_config
from flask import Flask, request
from lxml import etree

import config as config_mod
import errors
import cli
import gateway
import rivta
from clock import utcnow
from adapters import national
from adapters.national.base import ADD_MESSAGE, REGISTER_CASE, UPDATE_STATUS
from model import (
    BUSINESS_AREA_CODE_SYSTEM,
    PROBLEM_CODE_SYSTEM,
    Attachment,
    Case,
    CaseStatus,
    CaseType,
    Code,
    Complaint,
    Message,
    PersonId,
    Receiver,
    StatusUpdate,
    SubjectOfCare,
)
from sandbox import national as simulator
from sandbox.providers import create_rest_provider, serve_in_thread

#: intake and replies check Swedish dates: `make test` also runs these at set instants
pytestmark = pytest.mark.dates

MVK = "mvk-inbox-2.0"
PP = "patientportal-2.0"
TOKEN = "rest-token-0123456789"
GW_HSA = "SE5566778899-GW01"
WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
WRITTEN = dt.datetime(2026, 11, 28, 8, 30, tzinfo=dt.timezone.utc)


def message(kind: str = "INFO", attachments: tuple[Attachment, ...] = ()) -> Message:
    return Message(case_id="1177-C-0001", message_id="M-1", text="Vi har fått ditt ärende.", direction="out", kind=kind,
                   created_time=WRITTEN, subject="Om ditt ärende", sender_hsa_id=KLIN1, sender_name="Demokliniken",
                   attachments=attachments)


def mvk_data(config_data: dict, **national_keys) -> dict:
    data = copy.deepcopy(config_data)
    data["national"].update(profile=MVK, **national_keys)
    return data


def check(runner, tmp_path, data):
    return runner.invoke(cli.cli, ["check", "--config", str(write_config(tmp_path, data))])


# -- the registry -------------------------------------------------------------------------------------------


def test_the_registry_holds_both_profiles_and_the_default_is_the_current_contracts(cfg):
    assert sorted(national.PROFILES) == [MVK, PP] and national.DEFAULT_PROFILE == PP
    assert cfg.national.profile == PP  # the config's default
    for name, profile in national.PROFILES.items():
        assert profile.name == name
        assert all(op.wsdl_path.is_file() and op.xsd_path.is_file() for op in profile.operations.values())
    current = national.profile(PP).carries()
    assert current.actions == {ADD_MESSAGE, UPDATE_STATUS, REGISTER_CASE} and current.threaded
    assert current.kinds == {"CONFIRMATION", "PARTIAL_REPLY", "QUESTION", "FINAL_REPLY", "INFO"}
    assert current.max_attachments == 10 and current.calls == ("AddMessage", "UpdateCaseStatus", "RegisterCase")
    legacy = national.profile(MVK).carries()
    assert legacy.actions == {ADD_MESSAGE} and legacy.calls == ("AddMessage",)
    assert legacy.kinds == {"INFO"} and legacy.max_attachments == 0 and not legacy.threaded
    assert national.NationalAdapter is national.PROFILES[PP]  # the name the worker's adapter had
    with pytest.raises(errors.ProfileConfigError, match="national.profile"):
        national.profile("mvk-inbox-3.0")


def test_the_composition_root_builds_the_configured_profile(config_data, tmp_path):
    for name in (PP, MVK):
        data = copy.deepcopy(config_data)
        data["national"]["profile"] = name
        adapter = national.build(config_mod.from_dict(data, base_dir=ROOT, environ={}))
        try:
            assert type(adapter) is national.PROFILES[name] and adapter.source_system == GW_HSA
        finally:
            adapter.close()


def test_an_unknown_profile_is_refused_at_check_and_at_start(runner, config_data, tmp_path):
    data = copy.deepcopy(config_data)
    data["national"]["profile"] = "patientportal-9.9"
    result = check(runner, tmp_path, data)
    assert result.exit_code == 1
    assert "FAIL national: GW086 config key 'national.profile': there is no national profile 'patientportal-9.9'" in result.output
    assert "mvk-inbox-2.0, patientportal-2.0" in result.output
    with pytest.raises(errors.ProfileConfigError):
        gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))


def test_check_names_the_profile_and_what_it_calls(runner):
    result = runner.invoke(cli.cli, ["check", "--config", str(ROOT / "config.example.yaml")])
    assert result.exit_code == 0, result.output
    assert "ok   national profile patientportal-2.0: AddMessage, UpdateCaseStatus, RegisterCase at" in result.output


# -- gateway check: a config the profile cannot carry ------------------------------------------------------------


def test_check_refuses_receipts_under_a_profile_without_confirmations(runner, config_data, tmp_path):
    data = mvk_data(config_data)
    data["outbound"]["confirmations"]["enabled"] = True
    result = check(runner, tmp_path, data)
    assert result.exit_code == 1
    assert ("FAIL national: GW086 config key 'outbound.confirmations.enabled': the automatic receipts are messages of "
            "kind CONFIRMATION, which national profile 'mvk-inbox-2.0' cannot carry") in result.output
    with pytest.raises(errors.ProfileConfigError, match="outbound.confirmations.enabled"):  # and serve does not start
        gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))


def test_check_refuses_an_address_for_a_contract_the_profile_has_not(runner, config_data, tmp_path):
    data = mvk_data(config_data, logical_addresses={"AddMessage": "SE2321000016-INBX", "UpdateCaseStatus": "SE2321000016-ST"})
    result = check(runner, tmp_path, data)
    assert result.exit_code == 1
    assert "GW086 config key 'national.logical_addresses.UpdateCaseStatus'" in result.output
    assert "national.logical_addresses.AddMessage" not in result.output


def test_check_passes_a_config_mvk_can_carry_and_says_what_to_know(runner, config_data, tmp_path):
    result = check(runner, tmp_path, mvk_data(config_data))
    assert result.exit_code == 0, result.output
    assert "ok   national profile mvk-inbox-2.0: AddMessage at" in result.output
    assert "WARN outbound.max_attachments is 10, but national profile 'mvk-inbox-2.0' carries no files" in result.output
    assert ("WARN national profile 'mvk-inbox-2.0': the official schema writes the subjectOfCareId pattern as "
            "'^[0-9]{8}[0-9pPtTfF][0-9]{3}$'") in result.output
    assert "notice outside the citizen's case" in result.output


# -- each profile's request against its schema ----------------------------------------------------------------------


def _bodies(adapter) -> dict:
    complaint_case = Case(
        case_id="GW-1", case_type=CaseType.COMPLAINT, receiver=Receiver(KLIN1, False),
        subject_of_care=SubjectOfCare(PersonId(PNR, "1.2.752.129.2.1.3.1"), "Tolvan Tolvansson"),
        created_time=WRITTEN, text="Ringde in om bemötandet.", subject="Bemötande",
        complaint=Complaint(dt.date(2026, 11, 20), False, "Mottagningen", None),
    )
    closed = StatusUpdate("1177-C-0001", CaseStatus.CLOSED, None, (Code("2.3", PROBLEM_CODE_SYSTEM, "Bemötande"),),
                          Code("10", BUSINESS_AREA_CODE_SYSTEM))
    files = (Attachment("svar.pdf", "application/pdf", PDF),)
    return {
        ADD_MESSAGE: adapter.add_message_body(subject_of_care_id=PNR, national_case_id="1177-C-0001",
                                              message=message("FINAL_REPLY", files)),
        UPDATE_STATUS: adapter.update_status_body(national_case_id="1177-C-0001", update=closed),
        REGISTER_CASE: adapter.register_case_body(case=complaint_case, external_case_id="TEL-1", channel="TELEFON"),
    }


@pytest.mark.parametrize("action", [ADD_MESSAGE, UPDATE_STATUS, REGISTER_CASE])
def test_each_patientportal_request_validates_against_its_schema(cfg, action):
    adapter = national.build(cfg)
    try:
        element = adapter.request(action, _bodies(adapter)[action])
        schema = rivta.load_schema(adapter.operations[action].xsd_path)
        assert schema.validate(element), schema.error_log.last_error
        assert etree.QName(element).namespace == adapter.operations[action].responder_ns
    finally:
        adapter.close()


def test_the_mvk_request_validates_against_the_official_schema_once_its_pattern_is_corrected(config_data):
    adapter = national.build(config_mod.from_dict(mvk_data(config_data), base_dir=ROOT, environ={}))
    try:
        body = adapter.add_message_body(subject_of_care_id=PNR, national_case_id="1177-C-0001", message=message())
        element = adapter.request(ADD_MESSAGE, body)
    finally:
        adapter.close()
    assert etree.QName(element).namespace == "urn:mvk:crm:casemanagement:inbox:AddMessageResponder:2"
    official = simulator.mvk_schema(corrected=False)
    assert not official.validate(element)  # the file as written refuses the gateway's (valid) personnummer
    assert "subjectOfCareId" in official.error_log.last_error.message and "pattern" in official.error_log.last_error.message
    corrected = simulator.mvk_schema(corrected=True)
    assert corrected.validate(element), corrected.error_log.last_error
    core = "{urn:mvk:crm:casemanagement:inbox:2}"
    item = element.find("{urn:mvk:crm:casemanagement:inbox:AddMessageResponder:2}message")
    assert [etree.QName(e).localname for e in item] == [
        "id", "actionDate", "actionTime", "healthCareFacility", "businessObjectId", "headerText", "msg"]
    assert item.findtext(f"{core}businessObjectId") == "1177-C-0001" and item.findtext(f"{core}id") == "M-1"
    assert item.findtext(f"{core}actionTime") == "09:30:00"  # Swedish local time of 08:30 UTC in November
    assert item.findtext(f"{core}healthCareFacility/{core}hsaId") == KLIN1


def test_the_mvk_files_are_the_official_ones_byte_for_byte():
    official = REFERENCE / "mvk-crm-casemanagement-inbox-AddMessage-2.0" / "schemas"
    shipped = rivta.CONTRACTS_DIR / "mvk-inbox-2.0" / "schemas"
    files = sorted(p.relative_to(official) for p in official.rglob("*") if p.is_file())
    assert len(files) == 3 and sorted(p.relative_to(shipped) for p in shipped.rglob("*") if p.is_file()) == files
    for name in files:
        assert hashlib.sha256((shipped / name).read_bytes()).digest() == hashlib.sha256((official / name).read_bytes()).digest()


def _mvk_request(person_id: str) -> etree._Element:
    ns = "urn:mvk:crm:casemanagement:inbox:AddMessageResponder:2"
    element = etree.Element(f"{{{ns}}}AddMessage")
    etree.SubElement(element, f"{{{ns}}}subjectOfCareId").text = person_id
    etree.SubElement(element, f"{{{ns}}}message")
    etree.SubElement(element, f"{{{ns}}}notify").text = "true"
    return element


def test_the_official_pattern_refuses_every_valid_personnummer_and_the_corrected_one_accepts_them():
    official, corrected = simulator.mvk_schema(corrected=False), simulator.mvk_schema(corrected=True)
    for valid in (PNR, SAMORDNING, "19121212T212"):  # a personnummer, a samordningsnummer, a reserve number's letter
        assert not official.validate(_mvk_request(valid)), valid
        assert corrected.validate(_mvk_request(valid)), valid
    # what the pattern as written takes: the anchors as characters
    assert official.validate(_mvk_request(f"^{PNR}$")) and not corrected.validate(_mvk_request(f"^{PNR}$"))
    for invalid in ("19121212121", "1912121212121", "19121212-1212", "191212121X12"):
        assert not corrected.validate(_mvk_request(invalid)), invalid


def test_the_simulator_says_it_corrected_the_schema(caplog):
    with caplog.at_level("WARNING", logger="sandbox.national"):
        app = simulator.create_national_stub(profile=MVK)
    assert app.config["SCHEMA_CORRECTIONS"] == [simulator.MVK_CORRECTION]
    assert "schema corrected" in caplog.text and "'^[0-9]{8}[0-9pPtTfF][0-9]{3}$'" in caplog.text
    index = app.test_client().get("/rivta").get_data(as_text=True)
    assert "mvk-inbox-2.0" in index and "schema corrected: " in index and "urn:mvk:crm:casemanagement:inbox" in index
    assert "UpdateCaseStatus" not in index  # the legacy platform offers AddMessage only
    assert simulator.create_national_stub().config["SCHEMA_CORRECTIONS"] == []  # the project's own need none


# -- the gateway on mvk-inbox-2.0 against the simulator on mvk-inbox-2.0 ---------------------------------------------


@pytest.fixture(scope="module")
def mvk_national():
    url, stop = serve_in_thread(simulator.create_national_stub(profile=MVK))
    yield url
    stop()


@pytest.fixture
def webhook():
    received = []
    stub = Flask("webhook")

    @stub.post("/hook")
    def hook():
        received.append(request.get_json())
        return "", 204

    url, stop = serve_in_thread(stub)
    yield {"url": f"{url}/hook", "received": received}
    stop()


@pytest.fixture(scope="module")
def rest_url():
    url, stop = serve_in_thread(create_rest_provider())
    yield url
    stop()


@pytest.fixture
def mvk_app(config_data, mvk_national, rest_url, webhook):
    for url in (mvk_national, rest_url):
        requests.post(f"{url}/_reset", timeout=5)
    fast = {"max_attempts": 2, "initial_s": 0.01, "multiplier": 2, "max_s": 0.05, "jitter": 0}
    data = mvk_data(config_data, endpoint=f"{mvk_national}/rivta", retry=fast)
    data["targets"]["demo_rest"].update(base_url=f"{rest_url}/api", api={"token": TOKEN}, retry=fast)
    data["alerts"] = {"webhook_url": webhook["url"], "throttle_s": 3600}
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    app.config["TESTING"] = True
    yield app
    app.extensions["gateway.worker"].stop()
    app.extensions["gateway.store"].close()


def _intake(app, make_case, **overrides):
    response = app.test_client().post("/rivta", data=make_case(**overrides), headers={"Content-Type": "text/xml"})
    assert result_of(etree.fromstring(response.data))["resultCode"] == "OK"


def _reply(kind="INFO", **extra):
    return {"kind": kind, "subject": "Om ditt ärende", "body": "Vi har tagit emot ditt ärende.", "senderUnit": "KLIN1", **extra}


def _pdf():
    return {"fileName": "svar.pdf", "mimeType": "application/pdf", "data": base64.b64encode(PDF).decode()}


def _received(url):
    return requests.get(f"{url}/_received", timeout=5).json()["received"]


@pytest.mark.parametrize("path, body, code, field", [
    ("messages", _reply("INFO", attachments=[_pdf()]), "GW083", "attachments"),
    ("messages", _reply("FINAL_REPLY", attachments=[_pdf()]), "GW083", "attachments"),
    ("messages", _reply("FINAL_REPLY"), "GW084", "kind"),
    ("messages", _reply("QUESTION"), "GW084", "kind"),
    ("messages", _reply("CONFIRMATION"), "GW084", "kind"),
    ("messages", _reply("PARTIAL_REPLY"), "GW084", "kind"),
    ("status", {"status": "IN_PROGRESS"}, "GW085", "status"),
    ("status", {"status": "CLOSED", "problems": ["2.3"], "businessArea": "10"}, "GW085", "status"),
], ids=["INFO with a file", "FINAL_REPLY with a file", "FINAL_REPLY", "QUESTION", "CONFIRMATION", "PARTIAL_REPLY",
        "IN_PROGRESS", "CLOSED"])
def test_what_mvk_cannot_carry_is_refused_at_the_api_and_nothing_is_stored(mvk_app, mvk_national, make_case,
                                                                           path, body, code, field):
    _intake(mvk_app, make_case)
    store = mvk_app.extensions["gateway.store"]
    before = store.counts()
    response = mvk_app.test_client().post(f"/api/v1/cases/1177-C-0001/{path}", json=body,
                                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 422 and response.json["code"] == code and response.json["field"] == field, response.json
    assert "mvk-inbox-2.0" in response.json["message"] and PNR not in response.json["message"]
    assert store.counts() == before
    mvk_app.extensions["gateway.worker"].run_until_idle()
    assert _received(mvk_national) == []  # nothing went towards 1177


def test_a_case_from_outside_1177_is_refused_under_mvk(mvk_app):
    store = mvk_app.extensions["gateway.store"]
    before = store.counts()
    body = {"externalCaseId": "TEL-1", "channel": "TELEFON", "receiverUnit": "KLIN1", "caseType": "QUESTION",
            "subjectOfCare": {"personId": {"id": PNR}}, "text": "Ringde om sitt recept."}
    response = mvk_app.test_client().post("/api/v1/cases", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 422 and response.json["code"] == "GW085", response.json
    assert "RegisterCase" not in response.json["message"] and "a case registered outside 1177" in response.json["message"]
    assert store.counts() == before


def test_an_info_notice_reaches_the_legacy_inbox(mvk_app, mvk_national, make_case):
    _intake(mvk_app, make_case)
    response = mvk_app.test_client().post("/api/v1/cases/1177-C-0001/messages", json=_reply(messageId="N-1"),
                                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 202, response.json
    mvk_app.extensions["gateway.worker"].run_until_idle()
    call = _received(mvk_national)[-1]
    assert call["operation"] == "AddMessage" and call["valid"] and call["outcome"] == "OK"
    assert call["namespace"] == "urn:mvk:crm:casemanagement:inbox:AddMessageResponder:2"
    assert call["logicalAddress"] == "SE165565594230-1000"  # sent though the legacy WSDL declares no header
    assert call["headers"]["x-rivta-original-serviceconsumer-hsaid"] == GW_HSA
    notices = requests.get(f"{mvk_national}/sandbox/inbox", timeout=5).json()["messages"]
    assert [(n["caseId"], n["kind"], n["threaded"], n["senderHsaId"], n["body"]) for n in notices] == [
        ("1177-C-0001", None, False, KLIN1, "Vi har tagit emot ditt ärende.")]
    store = mvk_app.extensions["gateway.store"]
    sent = [m for m in store.timeline("1177-C-0001")["messages"] if m["message_id"] == response.json["messageId"]
            or m.get("provider_message_id") == "N-1"]
    assert sent and sent[0]["status"] == "sent"
    delivered = [e for e in store.search_log(case_id="1177-C-0001") if e["event"] == "delivered" and e["target"] == "national"]
    assert delivered and "a notice outside the case's thread (mvk-inbox-2.0 has none)" in delivered[0]["detail"]


def test_what_reaches_the_worker_anyway_goes_dead_with_its_code_and_an_alert(mvk_app, mvk_national, make_case, webhook):
    _intake(mvk_app, make_case)
    _intake(mvk_app, make_case, caseId="1177-C-0002")
    worker, store = mvk_app.extensions["gateway.worker"], mvk_app.extensions["gateway.store"]
    # a polled update takes the path the API shares (updates.py), without the API's refusal
    # (one case each: a dead row holds back the later rows of its case)
    worker.take_update("demo_rest", {"type": "message", "caseId": "1177-C-0001", **_reply("FINAL_REPLY", attachments=[_pdf()])})
    worker.take_update("demo_rest", {"type": "status", "caseId": "1177-C-0002", "status": "IN_PROGRESS"})
    worker.run_until_idle()
    dead = {row["action"]: row for row in store.outbox_list(status="dead", target="national")}
    assert set(dead) == {"add_message", "update_status"}
    assert dead["add_message"]["last_error_code"] == "GW083" and dead["update_status"]["last_error_code"] == "GW085"
    assert _received(mvk_national) == []  # never sent in part
    alerts = worker.check_alerts(now=utcnow() + dt.timedelta(seconds=1))
    assert [(a.kind, a.target) for a in alerts] == [("dead", "national")]
    assert "GW083" in str(webhook["received"]) and "GW085" in str(webhook["received"])


def test_the_served_mvk_wsdl_is_consumer_side(mvk_app):
    client = mvk_app.test_client()
    served = client.get("/rivta/contracts/mvk-inbox-2.0/schemas/interactions/AddMessage/AddMessageInteraction_2.0_RIVTABP21.wsdl")
    assert served.status_code == 200
    root = etree.fromstring(served.data)
    assert root.find(f"{{{WSDL_NS}}}service") is None  # 1177 answers it, not the gateway
    imports = [e.get("schemaLocation") for e in root.iter("{http://www.w3.org/2001/XMLSchema}import")]
    assert len(imports) == 1
    assert imports[0].endswith("/rivta/contracts/mvk-inbox-2.0/schemas/interactions/AddMessage/AddMessageResponder_2.0.xsd")
    producer = etree.fromstring(client.get("/rivta/ProcessCase?wsdl").data)
    assert producer.find(f"{{{WSDL_NS}}}service") is not None  # a producer WSDL keeps its address


def test_the_legacy_result_is_read_an_error_goes_dead_and_info_is_kept(mvk_app, mvk_national, make_case):
    _intake(mvk_app, make_case)
    _intake(mvk_app, make_case, caseId="1177-C-0002")
    client, worker, store = mvk_app.test_client(), mvk_app.extensions["gateway.worker"], mvk_app.extensions["gateway.store"]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    worker.run_until_idle()  # the cases reach demo_rest
    requests.post(f"{mvk_national}/_control", json={"fail_next": 1, "result": "ERROR", "message": "inkorgen är stängd"}, timeout=5)
    assert client.post("/api/v1/cases/1177-C-0001/messages", json=_reply(), headers=auth).status_code == 202
    worker.run_until_idle()
    requests.post(f"{mvk_national}/_control", json={"fail_next": 1, "result": "INFO", "message": "avisering ej skickad"}, timeout=5)
    assert client.post("/api/v1/cases/1177-C-0002/messages", json=_reply(), headers=auth).status_code == 202
    worker.run_until_idle()
    dead = store.outbox_list(status="dead", target="national")
    assert [(r["case_id"], r["last_error_code"]) for r in dead] == [("1177-C-0001", "GW065")]
    assert "1177 answered AddMessage with ERROR: INJECTED: inkorgen är stängd." in dead[0]["last_error"]
    delivered = [e for e in store.search_log(case_id="1177-C-0002") if e["event"] == "delivered" and e["target"] == "national"]
    assert "1177 INFO: INJECTED: avisering ej skickad; sent as a notice outside the case's thread" in delivered[0]["detail"]
