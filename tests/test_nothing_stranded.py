"""Nothing stranded: every case, message and contact detail reaches its end or stops loudly.

Each test goes through the real paths: intake over /rivta, the provider API, the worker,
and the loopback 1177 simulator (which validates what it is sent against the contracts)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import shutil

import pytest
import requests
import responses
import time_machine
import yaml
from conftest import BOARD, JPEG, KLIN1, PDF, PNG, PNR, ROOT, result_of, write_config
from lxml import etree
from test_way_back import (  # noqa: F401 - fixtures
    GW_HSA,
    app,
    attachment,
    auth,
    external,
    inbox,
    intake,
    make_app,
    national_url,
    peers,
    received,
    reply,
    rest_url,
)

import config as config_mod
import cli
import gateway
from clock import utcnow
from errors import ConfigError

QUESTION = {"caseType": "QUESTION", "complaint": None}


def soap(app, body: bytes) -> dict:
    answer = app.test_client().post("/rivta", data=body, headers={"Content-Type": "text/xml"})
    return result_of(etree.fromstring(answer.data))


def receipts_on(config_data: dict) -> dict:
    data = copy.deepcopy(config_data)
    data["outbound"]["confirmations"] = {"enabled": True, "texts": {t: "Vi har tagit emot ditt ärende."
                                                                   for t in ("COMPLAINT", "QUESTION")}}
    return data


# -- 1. every id a case is known by finds it ----------------------------------------------------------------------


def test_the_citizens_answer_in_a_case_registered_outside_1177_reaches_the_provider(
        config_data, peers, make_message, runner, tmp_path):
    data = receipts_on(config_data)
    app = make_app(data, peers)
    client, store, worker = app.test_client(), app.extensions["gateway.store"], app.extensions["gateway.worker"]
    try:
        created = client.post("/api/v1/cases", json=external(), headers=auth())
        assert created.status_code == 201
        ours = created.json["caseId"]
        worker.run_until_idle()
        national_id = inbox(peers)["registered"]["JOURNAL-77"]
        assert national_id != ours
        # the receipt, as for a case that came through 1177
        assert [m["kind"] for m in inbox(peers, national_id)["messages"]] == ["CONFIRMATION"]
        # the clinic asks; the citizen answers in 1177, which knows the case by its own id
        question = client.post(f"/api/v1/cases/{national_id}/messages", json=reply("QUESTION"), headers=auth())
        assert question.status_code == 202
        worker.run_until_idle()
        answer = soap(app, make_message(caseId=national_id, messageId="1177-ANSWER-1"))
        assert answer["resultCode"] == "OK", answer
        assert store.db.execute("SELECT case_id FROM messages WHERE message_id = '1177-ANSWER-1'").fetchone()[0] == ours
        with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
            mock.add_passthru(peers["national"])
            mock.post(f"{peers['rest']}/api/cases/JOURNAL-77/messages", status=201, json={"id": "M-1"})
            worker.run_until_idle()
        assert [r["status"] for r in store.outbox_rows(ours) if r["action"] == "deliver_message"] == ["done"]
        # the API finds it by all three ids: the gateway's, 1177's and the provider's own
        for ident in (ours, national_id, "JOURNAL-77"):
            view = client.get(f"/api/v1/cases/{ident}", headers=auth())
            assert view.status_code == 200 and view.json["caseId"] == ours, ident
        path = write_config(tmp_path, data)
        shown = runner.invoke(cli.cli, ["case", "show", national_id, "--config", str(path), "--json"])
        assert shown.exit_code == 0 and json.loads(shown.output)["case"]["case_id"] == ours
    finally:
        worker.stop()
        store.close()


# -- 2. retention counts from the last activity, and a purged case says so ------------------------------------


def test_retention_counts_from_the_last_activity_and_a_purged_case_refuses_more(
        app, make_case, make_message, runner, config_data, tmp_path, peers):
    store, worker, client = app.extensions["gateway.store"], app.extensions["gateway.worker"], app.test_client()
    three_years_ago = utcnow() - dt.timedelta(days=3 * 366)
    with time_machine.travel(three_years_ago, tick=False):
        intake(app, make_case, caseId="OLD-QUIET", **QUESTION)
        intake(app, make_case, caseId="OLD-TALKING", **QUESTION)
        worker.run_until_idle()
    # the dialogue in one of them went on until last month
    with time_machine.travel(utcnow() - dt.timedelta(days=30), tick=False):
        assert soap(app, make_message(caseId="OLD-TALKING", messageId="M-RECENT"))["resultCode"] == "OK"
        worker.run_until_idle()
    removed = gateway.run_retention(app.config["GATEWAY"], store)
    assert removed["cases"] == 1
    assert store.case_row("OLD-QUIET")["purged_at"] and store.case_row("OLD-TALKING")["content"] is not None
    # afterwards, nothing more is taken for the purged case, with a code that says why
    late = soap(app, make_message(caseId="OLD-QUIET", messageId="M-LATE"))
    assert late["resultCode"] == "ERROR" and late["subCode"] == "GW040" and "purged" in late["message"]
    refused = client.post("/api/v1/cases/OLD-QUIET/messages", json=reply(), headers=auth())
    assert refused.status_code == 410 and refused.json["code"] == "GW040"
    status = client.post("/api/v1/cases/OLD-QUIET/status", json={"status": "IN_PROGRESS"}, headers=auth())
    assert status.status_code == 410 and status.json["code"] == "GW040"
    assert [r["status"] for r in store.outbox_rows("OLD-QUIET")] == ["done"]


def test_a_delivery_that_cannot_be_built_goes_dead_at_once_with_an_alert(config_data, peers, make_case, make_message):
    data = copy.deepcopy(config_data)
    data["alerts"]["webhook_url"] = "http://127.0.0.1:9/hook"  # nothing listens: the alert is still raised
    app = make_app(data, peers)
    store, worker = app.extensions["gateway.store"], app.extensions["gateway.worker"]
    try:
        intake(app, make_case, **QUESTION)
        worker.run_until_idle()
        assert soap(app, make_message())["resultCode"] == "OK"
        store.db.execute("UPDATE messages SET content = NULL WHERE message_id = '1177-M-0001'")  # its content is gone
        assert worker.run_until_idle(timeout=2) == 1  # one attempt, not one per lease
        row = [r for r in store.outbox_rows("1177-C-0001") if r["action"] == "deliver_message"][0]
        assert row["status"] == "dead" and row["last_error_code"] == "GW066" and row["attempts"] == 1
        alerts = worker.check_alerts(now=utcnow() + dt.timedelta(seconds=1))
        assert [(a.kind, a.target) for a in alerts] == [("dead", "demo_rest")] and "GW066" in alerts[0].text
    finally:
        worker.stop()
        store.close()


# -- 3. a closed case ----------------------------------------------------------------------------------------


def test_a_closed_case_takes_no_messages_until_it_is_reopened(app, make_case, make_message, peers):
    store, worker, client = app.extensions["gateway.store"], app.extensions["gateway.worker"], app.test_client()
    intake(app, make_case, **QUESTION)
    worker.run_until_idle()
    assert client.post("/api/v1/cases/1177-C-0001/status", json={"status": "CLOSED"}, headers=auth()).status_code == 202
    worker.run_until_idle()
    late = soap(app, make_message(messageId="M-AFTER-CLOSE"))
    assert late["resultCode"] == "ERROR" and late["subCode"] == "GW041"
    refused = client.post("/api/v1/cases/1177-C-0001/messages", json=reply(), headers=auth())
    assert refused.status_code == 409 and refused.json["code"] == "GW041"
    # the same request may reopen it: the status IN_PROGRESS goes to 1177 before the message
    reopened = client.post("/api/v1/cases/1177-C-0001/messages", json=reply("PARTIAL_REPLY", reopen=True), headers=auth())
    assert reopened.status_code == 202, reopened.json
    worker.run_until_idle()
    calls = [c["operation"] for c in received(peers)]
    assert calls[-2:] == ["UpdateCaseStatus", "AddMessage"]
    assert store.case_row("1177-C-0001")["citizen_status"] == "IN_PROGRESS"
    assert soap(app, make_message(messageId="M-AFTER-REOPEN"))["resultCode"] == "OK"


# -- 4. the receipt comes first --------------------------------------------------------------------------------


def test_the_receipt_is_the_first_message_even_when_the_provider_answers_before_its_delivery_returns(
        config_data, peers, make_case):
    app = make_app(receipts_on(config_data), peers)
    client, store, worker = app.test_client(), app.extensions["gateway.store"], app.extensions["gateway.worker"]
    try:
        intake(app, make_case, **QUESTION)
        job = store.claim("w", limit=1, lease_s=30)[0]  # the delivery call is under way...
        # ...and the clinic's system posts its answer before the call has returned
        assert client.post("/api/v1/cases/1177-C-0001/messages", json=reply(), headers=auth()).status_code == 202
        assert worker.run_until_idle(timeout=0.5) == 0  # nothing may overtake the delivery
        worker.deliver(job)
        worker.run_until_idle()
        kinds = [m["kind"] for m in inbox(peers, "1177-C-0001")["messages"]]
        assert kinds == ["CONFIRMATION", "FINAL_REPLY"]
    finally:
        worker.stop()
        store.close()


# -- 5. a dead worker's rows come back after three missed heartbeats, not after the lease ------------------------


def test_a_worker_whose_heartbeat_stopped_loses_its_rows_within_three_beats(app, make_case):
    store = app.extensions["gateway.store"]
    intake(app, make_case, **QUESTION)
    intake(app, make_case, caseId="C-2", **QUESTION)
    start = utcnow()
    with time_machine.travel(start, tick=False):
        store.beat("worker@host:1:dead")
        store.beat("worker@host:2:alive")
        dead = store.claim("worker@host:1:dead", limit=1, lease_s=300)[0]
        alive = store.claim("worker@host:2:alive", limit=1, lease_s=300)[0]
    with time_machine.travel(start + dt.timedelta(seconds=29), tick=False):
        store.beat("worker@host:2:alive")
        assert store.recover_leases(stale_s=30) == 0  # two beats missed: not yet
    with time_machine.travel(start + dt.timedelta(seconds=31), tick=False):
        store.beat("worker@host:2:alive")
        assert store.recover_leases(stale_s=30) == 1  # long before the 300 s lease
        rows = {r["id"]: r for r in store.outbox_rows(dead.case_id) + store.outbox_rows(alive.case_id)}
    assert rows[dead.id]["status"] == "pending" and rows[alive.id]["status"] == "in_flight"
    events = [e["event"] for e in store.timeline(dead.case_id)["events"]]
    assert events[-1] == "worker_dead"


# -- 6. contact details are kept no longer than their use ------------------------------------------------------


def test_contact_details_without_consent_are_never_stored(app, make_case, runner, config_data, tmp_path):
    intake(app, make_case, subjectOfCare={"personId": {"id": PNR, "type": "1.2.752.129.2.1.3.1"},
                                          "contact": {"mobile": "+46701111111", "email": "nej@example.org",
                                                      "consentToShare": False}})
    store = app.extensions["gateway.store"]
    assert "+46701111111" not in store.case_row("1177-C-0001")["content"]
    path = write_config(tmp_path, app.config["GATEWAY"].model_dump(mode="json") | {"source": None})
    shown = runner.invoke(cli.cli, ["case", "show", "1177-C-0001", "--content", "--json", "--config", str(path)])
    assert shown.exit_code == 0 and "+46701111111" not in shown.output and "nej@example.org" not in shown.output


def test_contact_details_with_consent_go_to_the_provider_for_messages_only_then_are_erased(app, make_case, peers):
    store, worker = app.extensions["gateway.store"], app.extensions["gateway.worker"]
    intake(app, make_case, **QUESTION)  # the conftest case: mobile and e-mail, with consent
    assert "+46701234567" in store.case_row("1177-C-0001")["content"]
    worker.run_until_idle()
    delivered = requests.get(f"{peers['rest']}/_received", timeout=5).json()["received"][0]["body"]
    assert delivered["contact"] == {"mobile": "+46701234567", "email": "tolvan@example.org", "usage": "messages_only"}
    detail = store.case_detail("1177-C-0001", with_content=True)
    assert "+46701234567" not in json.dumps(detail) and "tolvan@example.org" not in json.dumps(detail)
    assert [e["event"] for e in detail["events"]][-1] == "contact_erased"


# -- 7. documented limits are enforced ---------------------------------------------------------------------------


def test_outbound_limits_are_honoured_and_capped_at_1177s_own(config_data, peers, make_case):
    data = copy.deepcopy(config_data)
    data["outbound"]["max_attachments"] = 2
    app = make_app(data, peers)
    try:
        intake(app, make_case, **QUESTION)
        app.extensions["gateway.worker"].run_until_idle()
        three = reply(attachments=[attachment(), attachment(PNG, "b.png", "image/png"), attachment(JPEG, "c.jpg", "image/jpeg")])
        refused = app.test_client().post("/api/v1/cases/1177-C-0001/messages", json=three, headers=auth())
        assert refused.status_code == 422 and refused.json["code"] == "GW024"
    finally:
        app.extensions["gateway.store"].close()
    for key, value in (("max_attachments", 11), ("max_attachment_bytes", 20 * 1024 * 1024 + 1)):
        bad = copy.deepcopy(config_data)
        bad["outbound"][key] = value
        with pytest.raises(ConfigError, match=f"outbound.{key}"):
            config_mod.from_dict(bad, base_dir=ROOT, environ={})


def test_files_on_a_case_registered_outside_1177_are_refused_not_dropped(app):
    store = app.extensions["gateway.store"]
    refused = app.test_client().post("/api/v1/cases", json=external(attachments=[attachment()]), headers=auth())
    assert refused.status_code == 422 and refused.json["code"] == "GW042" and refused.json["field"] == "attachments"
    assert store.counts()["cases"] == 0


# -- 8. prescription renewals follow rule 9 ---------------------------------------------------------------------


def _born(day: dt.date) -> str:
    from stdnum import luhn

    base = f"{day:%Y%m%d}239"
    return base + luhn.calc_check_digit(base[2:])


def test_a_renewal_for_a_child_or_by_a_guardian_for_a_child_names_no_medications(app, make_case):
    child = _born(dt.date(utcnow().year - 10, 1, 15))
    teen = _born(dt.date(utcnow().year - 17, 1, 15))
    chosen = [{"prescriptionId": "RX-1", "name": "Alvedon"}]
    renewal = {"caseType": "PRESCRIPTION_RENEWAL", "complaint": None}
    for case_id, person, extra in (
            ("R-CHILD", child, {}),
            ("R-PROXY", teen, {"representative": {"personId": {"id": PNR, "type": "1.2.752.129.2.1.3.1"},
                                                  "isProxy": True}})):
        answer = soap(app, make_case(caseId=case_id, chosenMedication=chosen, **renewal, **extra,
                                     subjectOfCare={"personId": {"id": person, "type": "1.2.752.129.2.1.3.1"}}))
        assert answer["resultCode"] == "ERROR" and answer["subCode"] == "GW043", (case_id, answer)
        assert PNR not in answer["message"] and person not in answer["message"]
    # without chosen medications (described in the text) the child's renewal is taken
    taken = soap(app, make_case(caseId="R-CHILD-TEXT", **renewal,
                                subjectOfCare={"personId": {"id": child, "type": "1.2.752.129.2.1.3.1"}}))
    assert taken["resultCode"] == "OK"


# -- 9. a reply is signed by the case's unit -------------------------------------------------------------------


def _mappings(tmp_path, **board) -> str:
    folder = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", folder)
    units = yaml.safe_load((folder / "units.yaml").read_text())
    for unit in units["units"]:
        if unit["hsa_id"] == BOARD:
            unit.update(board)
    (folder / "units.yaml").write_text(yaml.safe_dump(units, allow_unicode=True))
    return str(folder)


@pytest.mark.parametrize("answers_for, status", [(None, 422), ([KLIN1], 202)], ids=["not allowed", "answers_for"])
def test_a_reply_is_signed_by_the_cases_unit_or_one_allowed_to_answer_for_it(
        config_data, peers, make_case, tmp_path, answers_for, status):
    data = copy.deepcopy(config_data)
    data["mappings"]["dir"] = _mappings(tmp_path, **({"answers_for": answers_for} if answers_for else {}))
    app = make_app(data, peers)
    try:
        intake(app, make_case, **QUESTION)  # a case of KLIN1; the patient board is a unit of the same target
        answer = app.test_client().post("/api/v1/cases/1177-C-0001/messages", json=reply(senderUnit="PN01"),
                                        headers=auth())
        assert answer.status_code == status, answer.json
        if status == 422:
            assert answer.json["code"] == "GW044" and answer.json["field"] == "senderUnit"
        own = app.test_client().post("/api/v1/cases/1177-C-0001/messages", json=reply(messageId="OWN"), headers=auth())
        assert own.status_code == 202
    finally:
        app.extensions["gateway.store"].close()


# -- 10. silent waits become visible ------------------------------------------------------------------------------


def test_a_message_behind_a_dead_row_is_shown_as_blocked(app, make_case, make_message, runner, tmp_path, config_data):
    store, worker = app.extensions["gateway.store"], app.extensions["gateway.worker"]
    with responses.RequestsMock() as mock:
        mock.add_passthru(app.config["GATEWAY"].national.endpoint)
        mock.post(f"{app.config['GATEWAY'].targets['demo_rest'].base_url}/cases", status=400)
        intake(app, make_case, **QUESTION)
        worker.run_until_idle()
    assert soap(app, make_message())["resultCode"] == "OK"
    dead, waiting = store.outbox_rows("1177-C-0001")
    assert dead["status"] == "dead" and waiting["blocked_by"] == dead["id"]
    path = write_config(tmp_path, app.config["GATEWAY"].model_dump(mode="json") | {"source": None})
    listed = runner.invoke(cli.cli, ["outbox", "list", "--status", "blocked", "--config", str(path)])
    assert listed.exit_code == 0 and f"BLOCKED behind dead row {dead['id']}" in listed.output
    shown = runner.invoke(cli.cli, ["case", "show", "1177-C-0001", "--config", str(path)])
    assert f"BLOCKED behind dead row {dead['id']}" in shown.output
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert 'gateway_blocked_rows{target="demo_rest"} 1.0' in metrics


def test_check_warns_when_no_alert_channel_is_configured(runner, config_data, tmp_path):
    path = write_config(tmp_path, config_data)
    result = runner.invoke(cli.cli, ["check", "--config", str(path)])
    assert "WARN alerts: no alert channel" in result.output
    data = copy.deepcopy(config_data)
    data["alerts"]["webhook_url"] = "https://alerts.example.org/hook"
    path = write_config(tmp_path, data, "with-alerts.yaml")
    assert "no alert channel" not in runner.invoke(cli.cli, ["check", "--config", str(path)]).output
