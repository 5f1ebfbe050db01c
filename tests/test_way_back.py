"""The way back: the provider REST API, the national adapter against the loopback 1177
simulator (which validates every request against the project's XSDs and checks the
LogicalAddress), the review window, receipts, polling, and the whole loop."""

from __future__ import annotations

import base64
import copy
import time

import pytest
import requests
import responses
from conftest import BOARD, EXE, JPEG, KLIN1, KLIN2, PDF, PNG, PNR, ROOT, result_of
from lxml import etree

import config as config_mod
import cli
import gateway
from sandbox.national import create_national_stub
from sandbox.providers import create_rest_provider, serve_in_thread

#: about Swedish dates: `make test` also runs these at set instants (conftest --clock)
pytestmark = pytest.mark.dates

REST_TOKEN = "rest-token-0123456789"
SOAP_TOKEN = "soap-token-0123456789"
GW_HSA = "SE5566778899-GW01"
INERA = "SE165565594230-1000"


@pytest.fixture(scope="module")
def national_url():
    url, stop = serve_in_thread(create_national_stub())
    yield url
    stop()


@pytest.fixture(scope="module")
def rest_url():
    url, stop = serve_in_thread(create_rest_provider())
    yield url
    stop()


@pytest.fixture
def peers(national_url, rest_url):
    for url in (national_url, rest_url):
        requests.post(f"{url}/_reset", timeout=5)
    return {"national": national_url, "rest": rest_url}


def make_app(config_data, peers, **outbound):
    data = copy.deepcopy(config_data)
    data["national"]["endpoint"] = f"{peers['national']}/rivta"
    data["targets"]["demo_rest"]["base_url"] = f"{peers['rest']}/api"
    data["targets"]["demo_rest"]["api"] = {"token": REST_TOKEN}
    data["targets"]["demo_soap"]["api"] = {"token": SOAP_TOKEN}
    fast = {"max_attempts": 3, "initial_s": 0.01, "multiplier": 2, "max_s": 0.05, "jitter": 0}
    data["national"]["retry"] = fast
    for target in data["targets"].values():
        target["retry"] = fast
    data["outbound"].update(outbound)
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    return app


@pytest.fixture
def app(config_data, peers):
    app = make_app(config_data, peers)
    yield app
    app.extensions["gateway.worker"].stop()
    app.extensions["gateway.store"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def store(app):
    return app.extensions["gateway.store"]


@pytest.fixture
def run(app):
    return lambda: app.extensions["gateway.worker"].run_until_idle()


def auth(token=REST_TOKEN):
    return {"Authorization": f"Bearer {token}"}


def intake(app, make_case, **overrides):
    body = make_case(**overrides) if "address" not in overrides else make_case(overrides.pop("address"), **overrides)
    response = app.test_client().post("/rivta", data=body, headers={"Content-Type": "text/xml"})
    assert result_of(etree.fromstring(response.data))["resultCode"] == "OK"


def inbox(peers, case_id=None):
    params = {"caseId": case_id} if case_id else {}
    return requests.get(f"{peers['national']}/sandbox/inbox", params=params, timeout=5).json()


def received(peers):
    return requests.get(f"{peers['national']}/_received", timeout=5).json()["received"]


def reply(kind="FINAL_REPLY", **extra):
    return {"kind": kind, "subject": "Svar på dina synpunkter", "body": "Tack, vi har gått igenom ditt ärende.",
            "senderUnit": "KLIN1", **extra}


def ours(message_id, case_id="1177-C-0001", target="demo_rest"):
    """The gateway's id of a message whose id the provider chose (scoped to its target and case)."""
    from updates import scoped_message_id

    return scoped_message_id(target, case_id, message_id)


def attachment(data=PDF, name="svar.pdf", mime="application/pdf"):
    return {"fileName": name, "mimeType": mime, "data": base64.b64encode(data).decode()}


# -- messages to the citizen ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["CONFIRMATION", "PARTIAL_REPLY", "QUESTION", "FINAL_REPLY", "INFO"])
def test_each_message_kind_reaches_the_inbox_conformant(app, client, store, peers, run, make_case, kind):
    intake(app, make_case)
    response = client.post("/api/v1/cases/1177-C-0001/messages", json=reply(kind, attachments=[attachment()]), headers=auth())
    assert response.status_code == 202, response.json
    message_id = response.json["messageId"]
    run()
    messages = inbox(peers, "1177-C-0001")["messages"]
    assert [(m["messageId"], m["kind"], m["senderHsaId"]) for m in messages] == [(message_id, kind, KLIN1)]
    assert messages[0]["attachments"][0]["fileName"] == "svar.pdf" and messages[0]["sourceSystem"] == GW_HSA
    call = received(peers)[-1]
    assert call["operation"] == "AddMessage" and call["valid"] and call["logicalAddress"] == INERA
    assert call["headers"]["x-rivta-original-serviceconsumer-hsaid"] == GW_HSA
    assert call["fields"]["subjectOfCareId"] == PNR
    row = [m for m in store.timeline("1177-C-0001")["messages"] if m["message_id"] == message_id][0]
    assert row["status"] == "sent" and row["sent_at"]


def test_sender_unit_as_hsa_id_and_the_record_of_what_was_sent(app, client, store, peers, run, make_case):
    intake(app, make_case)
    response = client.post("/api/v1/cases/1177-C-0001/messages",
                           json=reply(senderUnit=KLIN1.lower(), messageId="M-1"), headers=auth())
    assert response.status_code == 202
    run()
    sent = store.load_message(ours("M-1"))  # the gateway's id of the provider's "M-1"
    assert sent.sender_hsa_id == KLIN1 and sent.text.startswith("Tack") and sent.kind == "FINAL_REPLY"
    again = client.post("/api/v1/cases/1177-C-0001/messages", json=reply(senderUnit=KLIN1, messageId="M-1"), headers=auth())
    assert again.status_code == 202 and again.json["created"] is False
    changed = client.post("/api/v1/cases/1177-C-0001/messages",
                          json=reply(senderUnit=KLIN1, messageId="M-1", body="Annan text"), headers=auth())
    assert changed.status_code == 409 and changed.json["code"] == "GW028"


# -- refusals: 4xx JSON, nothing stored ----------------------------------------------------------------------


def _counts(store):
    return store.counts()


@pytest.mark.parametrize(
    "body, status, code",
    [
        (reply(attachments=[attachment(PDF, f"{i}.pdf") for i in range(11)]), 422, "GW024"),
        (reply(attachments=[attachment(EXE, "svar.pdf")]), 422, "GW022"),
        (reply(attachments=[attachment(PDF, "bild.png", "image/png")]), 422, "GW022"),
        (reply(senderUnit="NOPE"), 422, "GW035"),
        (reply(senderUnit="SE5566778899-KLIN9"), 422, "GW035"),
        (reply(senderUnit="KLIN2"), 422, "GW035"),  # a unit of another target
        (reply(kind="LETTER"), 400, "GW033"),
        ({"kind": "INFO", "senderUnit": "KLIN1"}, 400, "GW033"),
        (reply(body="   "), 422, "GW029"),
        (reply(attachments=[{"fileName": "a.pdf", "mimeType": "application/pdf", "data": "not base64!"}]), 400, "GW033"),
    ],
    ids=["11 attachments", "disguised file", "declared type differs", "unknown unit code", "unknown HSA-id",
         "unit of another target", "unknown kind", "no body", "blank body", "bad base64"],
)
def test_message_refusals(app, client, store, make_case, body, status, code):
    intake(app, make_case)
    before = _counts(store)
    response = client.post("/api/v1/cases/1177-C-0001/messages", json=body, headers=auth())
    assert response.status_code == status and response.json["code"] == code, response.json
    assert response.json["message"] and "field" in response.json
    assert _counts(store) == before


def test_credentials_and_access(app, client, store, make_case):
    intake(app, make_case)  # routed to demo_rest
    before = _counts(store)
    assert client.post("/api/v1/cases/1177-C-0001/messages", json=reply()).status_code == 401
    wrong = client.post("/api/v1/cases/1177-C-0001/messages", json=reply(), headers=auth("guess"))
    assert wrong.status_code == 401 and wrong.json["code"] == "GW030" and wrong.headers["WWW-Authenticate"]
    foreign = client.post("/api/v1/cases/1177-C-0001/messages", json=reply(), headers=auth(SOAP_TOKEN))
    assert foreign.status_code == 403 and foreign.json["code"] == "GW031"
    assert client.get("/api/v1/cases/1177-C-0001", headers=auth(SOAP_TOKEN)).status_code == 403
    missing = client.post("/api/v1/cases/NOPE/messages", json=reply(), headers=auth())
    assert missing.status_code == 404 and missing.json["code"] == "GW032"
    bad = client.post("/api/v1/cases/1177-C-0001/messages", data="{nope", headers={**auth(), "Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json["code"] == "GW033"
    assert _counts(store) == before
    assert REST_TOKEN not in foreign.get_data(as_text=True)


# -- status ---------------------------------------------------------------------------------------------------


def test_closing_a_complaint_needs_codes(app, client, store, make_case):
    intake(app, make_case)
    before = _counts(store)
    for body, code in (({"status": "CLOSED"}, "GW036"), ({"status": "CLOSED", "problems": ["1.1"]}, "GW036"),
                       ({"status": "DONE"}, "GW029")):
        response = client.post("/api/v1/cases/1177-C-0001/status", json=body, headers=auth())
        assert response.status_code == 422 and response.json["code"] == code, response.json
    assert _counts(store) == before


def test_status_with_closing_codes_and_provider_status_codes(app, client, peers, run, make_case):
    intake(app, make_case)
    assert client.post("/api/v1/cases/1177-C-0001/status", json={"status": "PAGAR"}, headers=auth()).status_code == 202
    closing = {"status": "CLOSED", "problems": [{"code": "2.3", "displayName": "Bemötande"}, "4"], "businessArea": "10"}
    assert client.post("/api/v1/cases/1177-C-0001/status", json=closing, headers=auth()).status_code == 202
    run()
    history = inbox(peers)["statuses"]["1177-C-0001"]
    assert [s["status"] for s in history] == ["IN_PROGRESS", "CLOSED"]
    assert [p["codeSystem"] for p in history[1]["problems"]] == ["1.2.752.129.5.1.22"] * 2
    assert history[1]["businessArea"] == {"code": "10", "codeSystem": "1.2.752.129.5.1.21"}
    assert all(r["valid"] for r in received(peers))


def test_patient_board_correction_of_the_care_unit(app, client, peers, run, make_case):
    intake(app, make_case, address=BOARD, receiver={"hsaId": BOARD, "isPatientBoard": True},
           complaint={"eventDate": "20260101", "isCareProcess": False, "eventLocationText": "Vårdcentralen"})
    response = client.post("/api/v1/cases/1177-C-0001/status",
                           json={"status": "IN_PROGRESS", "careUnitHsaId": KLIN2}, headers=auth())
    assert response.status_code == 202
    run()
    assert inbox(peers)["statuses"]["1177-C-0001"][0]["careUnitHsaId"] == KLIN2


# -- external cases -----------------------------------------------------------------------------------------------


def external(**extra):
    return {"externalCaseId": "JOURNAL-77", "channel": "TELEFON", "receiverUnit": "KLIN1", "caseType": "QUESTION",
            "subjectOfCare": {"personId": {"id": PNR}, "name": "Tolvan"}, "text": "Ringde om sitt recept.", **extra}


def test_an_external_case_gets_its_dialog_through_the_inbox(app, client, store, peers, run):
    created = client.post("/api/v1/cases", json=external(), headers=auth())
    assert created.status_code == 201, created.json
    case_id = created.json["caseId"]
    again = client.post("/api/v1/cases", json=external(), headers=auth())
    assert again.status_code == 200 and again.json["caseId"] == case_id
    conflict = client.post("/api/v1/cases", json=external(text="Annat"), headers=auth())
    assert conflict.status_code == 409 and conflict.json["code"] == "GW028"
    assert client.post(f"/api/v1/cases/{case_id}/messages", json=reply("CONFIRMATION"), headers=auth()).status_code == 202
    run()
    registered = inbox(peers)["registered"]
    national_id = registered["JOURNAL-77"]
    assert [m["caseId"] for m in inbox(peers)["messages"]] == [national_id]
    view = client.get(f"/api/v1/cases/{case_id}", headers=auth()).json
    assert view["nationalCaseId"] == national_id and view["origin"] == "external"
    assert [c["operation"] for c in received(peers)] == ["RegisterCase", "AddMessage"]
    assert store.case_row(case_id)["channel"] == "TELEFON"


def test_external_case_refusals(app, client, store):
    before = _counts(store)
    for body, code in ((external(subjectOfCare={"personId": {"id": "191212121213"}}), "GW020"),
                       (external(channel="FAX"), "GW033"), (external(receiverUnit="KLIN2"), "GW035"),
                       (external(caseType="COMPLAINT"), "GW025")):
        response = client.post("/api/v1/cases", json=body, headers=auth())
        assert response.status_code in (400, 422) and response.json["code"] == code, response.json
        assert PNR not in response.get_data(as_text=True)
    assert _counts(store) == before


# -- review window, 1177's answers ---------------------------------------------------------------------------------


def test_review_window_hold_and_cancel(config_data, peers, make_case):
    import time_machine

    app = make_app(config_data, peers, review_s=600)  # ten minutes to think it over; the test moves the clock
    traveller = time_machine.travel(__import__("clock").instant(), tick=False)
    clock = traveller.start()
    try:
        client, store, worker = app.test_client(), app.extensions["gateway.store"], app.extensions["gateway.worker"]
        intake(app, make_case)
        worker.run_until_idle()  # the case reaches the provider
        first = client.post("/api/v1/cases/1177-C-0001/messages", json=reply("PARTIAL_REPLY"), headers=auth()).json
        assert first["status"] == "held"
        cancelled = client.post(f"/api/v1/cases/1177-C-0001/messages/{first['messageId']}/cancel", headers=auth())
        assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
        second = client.post("/api/v1/cases/1177-C-0001/messages", json=reply(), headers=auth()).json
        clock.shift(599)
        assert worker.run_until_idle(timeout=0.1) == 0  # held: nothing is sent within the window
        assert inbox(peers)["messages"] == []
        clock.shift(2)
        worker.run_until_idle(timeout=3)
        assert [m["messageId"] for m in inbox(peers)["messages"]] == [second["messageId"]]
        late = client.post(f"/api/v1/cases/1177-C-0001/messages/{second['messageId']}/cancel", headers=auth())
        assert late.status_code == 409 and late.json["code"] == "GW034"
        statuses = {m["message_id"]: m["status"] for m in store.timeline("1177-C-0001")["messages"]}
        assert statuses == {first["messageId"]: "cancelled", second["messageId"]: "sent"}
    finally:
        traveller.stop()
        app.extensions["gateway.worker"].stop()
        app.extensions["gateway.store"].close()


def test_1177_error_is_permanent_and_keeps_its_message_info_is_success(app, client, store, peers, run, make_case):
    intake(app, make_case)
    requests.post(f"{peers['national']}/_control", json={"fail_next": 1, "result": "ERROR", "message": "Inkorgen är stängd"}, timeout=5)
    client.post("/api/v1/cases/1177-C-0001/messages", json=reply(messageId="E-1"), headers=auth())
    run()
    row = [o for o in store.outbox_rows("1177-C-0001") if o["ref_id"] == ours("E-1")][0]
    assert row["status"] == "dead" and row["last_error_code"] == "GW065" and "Inkorgen är stängd" in row["last_error"]
    # ResultType as RIV-TA domains use it: the enum kind and 1177's own code; a logId that is no UUID
    assert "ERROR APPLICATION_ERROR/INJECTED" in row["last_error"] and "(logId 1177-" in row["last_error"]
    store.cancel(row["id"], by="test")
    requests.post(f"{peers['national']}/_control", json={"fail_next": 1, "result": "INFO", "message": "Levererat med anmärkning"}, timeout=5)
    client.post("/api/v1/cases/1177-C-0001/messages", json=reply(messageId="I-1"), headers=auth())
    run()
    info = [o for o in store.outbox_rows("1177-C-0001") if o["ref_id"] == ours("I-1")][0]
    assert info["status"] == "done"
    assert "Levererat med anmärkning" in store.attempts_of(info["id"])[-1]["detail"]


def test_1177_faults_and_outages_are_retried(app, client, store, peers, run, make_case):
    intake(app, make_case)
    requests.post(f"{peers['national']}/_control", json={"fail_next": 2, "status": 503}, timeout=5)
    client.post("/api/v1/cases/1177-C-0001/messages", json=reply(messageId="R-1"), headers=auth())
    run()
    row = [o for o in store.outbox_rows("1177-C-0001") if o["ref_id"] == ours("R-1")][0]
    assert row["status"] == "done"
    assert [a["outcome"] for a in store.attempts_of(row["id"])] == ["retry", "retry", "delivered"]
    assert len(inbox(peers)["messages"]) == 1


# -- polling --------------------------------------------------------------------------------------------------------


def test_polling_feeds_updates_through_the_same_path(config_data, peers, make_case):
    data = copy.deepcopy(config_data)
    data["targets"]["demo_rest"]["poll"] = {"interval_s": 60, "path": "/updates"}
    app = make_app(data, peers)
    try:
        store, worker = app.extensions["gateway.store"], app.extensions["gateway.worker"]
        intake(app, make_case)
        base = f"{peers['rest']}/api"
        with responses.RequestsMock() as mock:
            mock.add_passthru(peers["national"])
            mock.add_passthru(peers["rest"])
            mock.get(f"{base}/updates", json={"cursor": "c1", "updates": [
                {"type": "message", "caseId": "1177-C-0001", "kind": "QUESTION", "body": "Vilket datum?", "senderUnit": "KLIN1"},
                {"type": "status", "caseId": "1177-C-0001", "status": "IN_PROGRESS"},
                {"type": "message", "caseId": "1177-C-0001", "kind": "INFO", "body": "x", "senderUnit": "NOPE"},
                {"type": "message", "caseId": "OTHER", "kind": "INFO", "body": "x", "senderUnit": "KLIN1"},
            ]})
            mock.get(f"{base}/updates", json={"cursor": "c2", "updates": []})
            assert worker.poll("demo_rest") == 2
            assert store.get_cursor("demo_rest") == "c1"
            assert worker.poll("demo_rest") == 0
            assert mock.calls[1].request.params == {"since": "c1"}
        worker.run_until_idle()
        assert [m["kind"] for m in inbox(peers)["messages"]] == ["QUESTION"]
        assert [s["status"] for s in inbox(peers)["statuses"]["1177-C-0001"]] == ["IN_PROGRESS"]
        refused = list(store.db.query("select error_code from sync_log where event = 'poll_update_refused'"))
        assert [r["error_code"] for r in refused] == ["GW035", "GW032"]
        assert store.get_cursor("demo_rest") == "c2"
    finally:
        app.extensions["gateway.worker"].stop()
        app.extensions["gateway.store"].close()


# -- the whole loop -------------------------------------------------------------------------------------------------


def test_whole_loop_case_in_delivered_receipt_and_answer_in_order(config_data, peers, make_case):
    data = copy.deepcopy(config_data)
    data["outbound"]["confirmations"]["enabled"] = True
    app = make_app(data, peers)
    try:
        client, store, worker = app.test_client(), app.extensions["gateway.store"], app.extensions["gateway.worker"]
        requests.post(f"{peers['national']}/_control", json={"fail_next": 1, "status": 503}, timeout=5)
        intake(app, make_case, attachment=[{"fileName": "a.jpg", "mimeType": "image/jpeg", "data": JPEG}])
        job = store.claim("w", limit=1, lease_s=30)[0]
        worker.deliver(job)  # the provider takes the case; the receipt is queued with it
        # the clinic answers at once, while the receipt's first attempt to 1177 fails
        assert client.post("/api/v1/cases/1177-C-0001/messages", json=reply(), headers=auth()).status_code == 202
        assert client.post("/api/v1/cases/1177-C-0001/status", json={"status": "CLOSED", "problems": ["2"],
                                                                    "businessArea": "10"}, headers=auth()).status_code == 202
        worker.run_until_idle()
        messages = inbox(peers, "1177-C-0001")["messages"]
        assert [m["kind"] for m in messages] == ["CONFIRMATION", "FINAL_REPLY"]
        assert messages[0]["subject"] == "Vi har tagit emot ditt ärende" and messages[0]["senderHsaId"] == KLIN1
        assert [c["operation"] for c in received(peers)] == ["AddMessage", "AddMessage", "AddMessage", "UpdateCaseStatus"]
        delivered = requests.get(f"{peers['rest']}/_received", timeout=5).json()["received"]
        assert delivered[0]["body"]["externalId"] == "1177-C-0001"
        events = [(e["direction"], e["event"]) for e in store.timeline("1177-C-0001")["events"]]
        assert events[:4] == [("in", "case_received"), ("in", "delivered"), ("in", "contact_erased"),
                              ("out", "message_queued")]
        view = client.get("/api/v1/cases/1177-C-0001", headers=auth()).json
        assert view["status"] == "CLOSED" and [m["status"] for m in view["messages"]] == ["sent", "sent"]
        assert "Tack" not in str(view) and PNR not in str(view)  # metadata only
    finally:
        app.extensions["gateway.worker"].stop()
        app.extensions["gateway.store"].close()


def test_openapi_document(client):
    doc = client.get("/api/openapi.json").json
    assert doc["openapi"].startswith("3.") and doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert {"/v1/cases", "/v1/cases/{caseId}", "/v1/cases/{caseId}/messages", "/v1/cases/{caseId}/status",
            "/v1/cases/{caseId}/messages/{messageId}/cancel", "/v1/cases/{caseId}/attachments/{n}"} <= set(doc["paths"])


def test_cancel_from_the_cli(config_data, peers, make_case, runner, tmp_path):
    from conftest import write_config

    data = copy.deepcopy(config_data)
    data["outbound"]["review_s"] = 3600
    path = write_config(tmp_path, data)
    app = make_app(data, peers)
    try:
        intake(app, make_case)
        held = app.test_client().post("/api/v1/cases/1177-C-0001/messages", json=reply(), headers=auth()).json
        result = runner.invoke(cli.cli, ["message", "cancel", held["messageId"], "--config", str(path)])
        assert result.exit_code == 0 and "cancelled" in result.output
        again = runner.invoke(cli.cli, ["message", "cancel", "no-such-id", "--config", str(path)])
        assert again.exit_code == 1 and "GW032" in again.output
        statuses = {m["message_id"]: m["status"] for m in app.extensions["gateway.store"].timeline("1177-C-0001")["messages"]}
        assert statuses[held["messageId"]] == "cancelled"
    finally:
        app.extensions["gateway.worker"].stop()
        app.extensions["gateway.store"].close()


def test_polling_a_soap_target(config_data, peers, make_case):
    """The demo SOAP clinic answers; the gateway polls it (GetUpdates) and relays the answers."""
    from conftest import KLIN2
    from sandbox.providers import create_soap_provider

    url, stop = serve_in_thread(create_soap_provider(answer_delay_s=0.05, question_every=0))
    data = copy.deepcopy(config_data)
    data["targets"]["demo_soap"]["endpoint"] = f"{url}/soap"
    data["targets"]["demo_soap"]["poll"] = {"interval_s": 60, "operation": "GetUpdates"}
    app = make_app(data, peers)
    try:
        store, worker = app.extensions["gateway.store"], app.extensions["gateway.worker"]
        intake(app, make_case, address=KLIN2, receiver={"hsaId": KLIN2, "isPatientBoard": False})
        worker.run_until_idle()
        deadline = time.monotonic() + 10
        taken = 0
        while taken < 3 and time.monotonic() < deadline:  # IN_PROGRESS, FINAL_REPLY, CLOSED
            time.sleep(0.1)
            taken += worker.poll("demo_soap")
        assert taken == 3 and store.get_cursor("demo_soap") == "3"
        worker.run_until_idle()
        messages = inbox(peers, "1177-C-0001")["messages"]
        assert [(m["kind"], m["senderHsaId"]) for m in messages] == [("FINAL_REPLY", KLIN2)]
        assert messages[0]["attachments"][0]["fileName"] == "beslut.pdf"
        assert [s["status"] for s in inbox(peers)["statuses"]["1177-C-0001"]] == ["IN_PROGRESS", "CLOSED"]
    finally:
        app.extensions["gateway.worker"].stop()
        app.extensions["gateway.store"].close()
        stop()


# -- the case's attachments, fetched later by the provider (issue 13, item 8) ---------------------------------


def test_a_provider_fetches_its_cases_attachments_by_position_or_sha256_under_its_own_id(
        app, client, store, run, make_case, make_message):
    import hashlib

    intake(app, make_case)  # two files: intyg.pdf, bild.png
    app.test_client().post("/rivta", data=make_message(), headers={"Content-Type": "text/xml"})  # one more, the message's
    run()
    provider_id = store.case_row("1177-C-0001")["provider_case_id"]
    assert provider_id
    view = client.get(f"/api/v1/cases/{provider_id}", headers=auth()).json
    assert view["attachments"] == [
        {"position": 1, "fileName": "intyg.pdf", "mimeType": "application/pdf", "size": len(PDF),
         "sha256": hashlib.sha256(PDF).hexdigest()},
        {"position": 2, "fileName": "bild.png", "mimeType": "image/png", "size": len(PNG),
         "sha256": hashlib.sha256(PNG).hexdigest()},
    ]
    first = client.get(f"/api/v1/cases/{provider_id}/attachments/1", headers=auth())
    assert first.status_code == 200 and first.data == PDF and first.mimetype == "application/pdf"
    assert first.headers["Content-Disposition"] == "attachment; filename=intyg.pdf"
    assert first.headers["X-Content-Type-Options"] == "nosniff"
    by_hash = client.get(f"/api/v1/cases/1177-C-0001/attachments/{hashlib.sha256(PNG).hexdigest()}", headers=auth())
    assert by_hash.status_code == 200 and by_hash.data == PNG and by_hash.mimetype == "image/png"
    audited = [(e["who"], e["role"], e["action"], e["object"]) for e in store.audit_entries()]
    assert audited.count(("demo_rest", "api", "download", "case 1177-C-0001")) == 2
    # the third file is the message's, not the case's own: no position 3
    assert client.get(f"/api/v1/cases/{provider_id}/attachments/3", headers=auth()).json["code"] == "GW032"
    assert client.get(f"/api/v1/cases/{provider_id}/attachments/x", headers=auth()).status_code == 404


def test_another_targets_case_attachments_are_answered_as_unknown(app, client, store, make_case):
    intake(app, make_case)  # routed to demo_rest
    foreign = client.get("/api/v1/cases/1177-C-0001/attachments/1", headers=auth(SOAP_TOKEN))
    unknown = client.get("/api/v1/cases/NOPE/attachments/1", headers=auth(SOAP_TOKEN))
    assert foreign.status_code == unknown.status_code == 404
    assert foreign.json == unknown.json | {"message": foreign.json["message"]} and foreign.json["code"] == "GW032"
    assert foreign.json["message"] == unknown.json["message"].replace("NOPE", "1177-C-0001")
    assert client.get("/api/v1/cases/1177-C-0001/attachments/1").status_code == 401
    assert not [e for e in store.audit_entries() if e["action"] == "download"]
