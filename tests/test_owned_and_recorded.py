"""What a red team broke (issue 18): one provider cancelling another's message, and a
delivered case marked dead because the database was busy."""

from __future__ import annotations

import copy

import pytest
import requests
import sample_files
from conftest import KLIN2
from test_way_back import SOAP_TOKEN, auth, intake, make_app, national_url, peers, reply, rest_url  # noqa: F401

from errors import StoreError

QUESTION = {"caseType": "QUESTION", "complaint": None}


@pytest.fixture
def held_app(config_data, peers):
    data = copy.deepcopy(config_data)
    data["outbound"]["review_s"] = 3600  # messages wait an hour: cancellable
    app = make_app(data, peers)
    yield app
    app.extensions["gateway.worker"].stop()
    app.extensions["gateway.store"].close()


def test_a_provider_cannot_cancel_another_providers_message(held_app, make_case):
    store, worker, client = held_app.extensions["gateway.store"], held_app.extensions["gateway.worker"], held_app.test_client()
    intake(held_app, make_case, caseId="B-CASE", **QUESTION)  # KLIN1: demo_rest
    intake(held_app, make_case, address=KLIN2, caseId="A-CASE", receiver={"hsaId": KLIN2, "isPatientBoard": False},
           **QUESTION)  # KLIN2: demo_soap
    worker.run_until_idle()
    b_message = client.post("/api/v1/cases/B-CASE/messages", json=reply(), headers=auth()).json["messageId"]
    # A (demo_soap's token) names its own case and B's message
    stolen = client.post(f"/api/v1/cases/A-CASE/messages/{b_message}/cancel", headers=auth(SOAP_TOKEN))
    unknown = client.post("/api/v1/cases/A-CASE/messages/no-such-message/cancel", headers=auth(SOAP_TOKEN))
    assert stolen.status_code == unknown.status_code == 404
    assert stolen.json["code"] == unknown.json["code"] == "GW032"  # nothing tells A that B's id exists
    assert store.db.execute("SELECT status FROM messages WHERE message_id = ?", [b_message]).fetchone()[0] == "held"
    # B can
    assert client.post(f"/api/v1/cases/B-CASE/messages/{b_message}/cancel", headers=auth()).status_code == 200


def test_a_delivered_case_is_never_dead_because_the_database_was_busy(config_data, peers, make_case, monkeypatch):
    app = make_app(config_data, peers)
    store, worker = app.extensions["gateway.store"], app.extensions["gateway.worker"]
    try:
        monkeypatch.setattr(worker, "STORE_RETRIES_S", (0.0, 0.0))
        real, busy = store.complete, {"left": 2}

        def complete(*args, **kwargs):
            if busy["left"]:  # a backup or a CLI command holds the write lock
                busy["left"] -= 1
                raise StoreError("the database is locked.")
            return real(*args, **kwargs)

        monkeypatch.setattr(store, "complete", complete)
        intake(app, make_case, **QUESTION)
        worker.run_until_idle()
        row = store.outbox_rows("1177-C-0001")[0]
        assert row["status"] == "done" and row["last_error_code"] is None
        assert len(requests.get(f"{peers['rest']}/_received", timeout=5).json()["received"]) == 1

        # a store that stays down: the row is left for recovery (same key), never dead
        busy["left"] = 99
        intake(app, make_case, caseId="C-2", **QUESTION)
        worker.run_until_idle(timeout=1)
        row = store.outbox_rows("C-2")[0]
        assert row["status"] == "in_flight" and row["last_error_code"] is None
    finally:
        worker.stop()
        store.close()


def test_message_ids_a_provider_chooses_are_its_own(config_data, peers, make_case, make_message):
    data = copy.deepcopy(config_data)
    data["outbound"]["confirmations"] = {"enabled": True, "texts": {"QUESTION": "Vi har tagit emot ditt ärende."}}
    app = make_app(data, peers)
    store, worker, client = app.extensions["gateway.store"], app.extensions["gateway.worker"], app.test_client()
    try:
        intake(app, make_case, address=KLIN2, caseId="A-CASE", receiver={"hsaId": KLIN2, "isPatientBoard": False},
               **QUESTION)
        worker.run_until_idle()
        # A picks ids that are 1177's next message id and B's receipt id
        for chosen in ("1177-M-0001", "B-CASE:receipt"):
            sent = client.post("/api/v1/cases/A-CASE/messages", json=reply(senderUnit="KLIN2", messageId=chosen),
                               headers=auth(SOAP_TOKEN))
            assert sent.status_code == 202 and sent.json["messageId"] == chosen
        again = client.post("/api/v1/cases/A-CASE/messages", json=reply(senderUnit="KLIN2", messageId="1177-M-0001"),
                            headers=auth(SOAP_TOKEN))
        assert again.status_code == 202 and again.json["created"] is False  # a retry is the same message
        # B's case arrives, is delivered and gets its receipt; the citizen's message 1177-M-0001 is taken
        intake(app, make_case, caseId="B-CASE", **QUESTION)
        worker.run_until_idle()
        answer = app.test_client().post("/rivta", data=make_message(caseId="B-CASE", messageId="1177-M-0001"),
                                        headers={"Content-Type": "text/xml"})
        assert b">OK<" in answer.data
        rows = {r["action"]: r["status"] for r in store.outbox_rows("B-CASE")}
        assert rows == {"deliver_case": "done", "add_message": "done", "deliver_message": "pending"}
        view = client.get("/api/v1/cases/A-CASE", headers=auth(SOAP_TOKEN)).json
        # A's own messages keep the ids A chose (A's automatic receipt, when it has one, is 1177's kind CONFIRMATION)
        assert sorted(m["messageId"] for m in view["messages"] if m["kind"] != "CONFIRMATION") == ["1177-M-0001", "B-CASE:receipt"]
    finally:
        worker.stop()
        store.close()


def test_not_ready_while_the_disk_is_full_and_ready_again_after(app, make_case):
    store, client = app.extensions["gateway.store"], app.test_client()
    assert client.get("/health/ready").status_code == 200
    with store.write() as db:  # the connection the store writes through
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")  # as good as a full disk for this database
    big = [{"fileName": "big.pdf", "mimeType": "application/pdf", "data": sample_files.pdf(size=2_000_000)}]
    answer = client.post("/rivta", data=make_case(attachment=big), headers={"Content-Type": "text/xml"})
    assert answer.status_code == 500 and b"GW050" in answer.data
    ready = client.get("/health/ready")
    assert ready.status_code == 503 and "the last write failed" in " ".join(ready.json["problems"])
    with store.write() as db:
        db.execute("PRAGMA max_page_count = 1073741823")  # space again
    answer = client.post("/rivta", data=make_case(attachment=big), headers={"Content-Type": "text/xml"})
    assert b">OK<" in answer.data
    assert client.get("/health/ready").status_code == 200
