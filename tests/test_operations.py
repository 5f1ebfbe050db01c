"""Operations without the browser: health, metrics, the ops CLI with --json, alerts (a local
SMTP server and a webhook stub) with throttling and recovery, and retention."""

from __future__ import annotations

import copy
import datetime as dt
import json
import time

import pytest
import requests
import responses
from conftest import PNR, ROOT, example_data, result_of, write_config
from flask import Flask, request
from lxml import etree

import config as config_mod
import cli
import gateway
from clock import utcnow

API = "http://127.0.0.1:8081/api"


def post_case(app, make_case, **overrides):
    response = app.test_client().post("/rivta", data=make_case(**overrides), headers={"Content-Type": "text/xml"})
    assert result_of(etree.fromstring(response.data))["resultCode"] == "OK"


def fast(data):
    for section in [*data["targets"].values(), data["national"]]:
        section["retry"] = {"max_attempts": 2, "initial_s": 0.01, "multiplier": 2, "max_s": 0.02, "jitter": 0}
    return data


# -- health and metrics ------------------------------------------------------------------------------------------


def test_health_live_and_ready(app, client):
    assert client.get("/health/live").json["status"] == "live"
    ready = client.get("/health/ready")
    in_force = app.extensions["gateway.mappings"]
    assert ready.status_code == 200 and ready.json == {
        "status": "ready", "problems": [],
        "mappings": {"loaded_at": ready.json["mappings"]["loaded_at"], "digest": in_force.digest, "units": 3,
                     "last_reload": None}}


def test_ready_is_503_with_the_reason_when_the_worker_is_stale(config_data):
    data = copy.deepcopy(config_data)
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}), start_worker=True)
    try:
        client = app.test_client()
        assert client.get("/health/ready").status_code == 200
        app.extensions["gateway.ops"].heartbeat_max_age_s = 0.0001
        time.sleep(0.01)
        answer = client.get("/health/ready")
        assert answer.status_code == 503 and "heartbeat" in answer.json["problems"][0]
    finally:
        app.extensions["gateway.worker"].stop()
        app.extensions["gateway.store"].close()


def test_ready_is_503_when_the_store_is_not_writable(app, client, store):
    import sqlite3

    store.busy_timeout_ms = 50
    store.close()
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        answer = client.get("/health/ready")
        assert answer.status_code == 503 and "store not writable" in answer.json["problems"][0]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


@responses.activate
def test_metrics_count_received_delivered_failed_dead_and_latency(app, client, make_case):
    responses.post(f"{API}/cases", status=201, json={"id": "P-1"})
    responses.post(f"{API}/cases", status=400)
    post_case(app, make_case, caseId="M-1")
    post_case(app, make_case, caseId="M-2")
    app.extensions["gateway.worker"].run_until_idle()
    text = client.get("/metrics").get_data(as_text=True)
    assert 'gateway_received_total{direction="in",target="demo_rest"} 2.0' in text
    assert 'gateway_delivered_total{direction="in",target="demo_rest"} 1.0' in text
    assert 'gateway_failed_total{direction="in",target="demo_rest"} 1.0' in text
    assert 'gateway_dead_total{direction="in",target="demo_rest"} 1.0' in text
    assert 'gateway_delivery_latency_seconds_count{direction="in",target="demo_rest"} 1.0' in text
    assert 'gateway_delivery_latency_seconds_bucket{direction="in",le="+Inf",target="demo_rest"} 1.0' in text
    assert 'gateway_queue_depth{status="dead",target="demo_rest"} 1.0' in text


def test_metrics_show_the_age_of_the_oldest_pending_row(app, client, make_case, store):
    store.set_paused("demo_rest", True, by="test")
    post_case(app, make_case)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'gateway_oldest_pending_age_seconds{target="demo_rest"}' in text
    assert 'gateway_queue_depth{status="pending",target="demo_rest"} 1.0' in text


# -- the CLI ---------------------------------------------------------------------------------------------------


@responses.activate
def test_log_case_show_outbox_list_replay_cancel_with_json(config_data, make_case, runner, tmp_path):
    data = fast(copy.deepcopy(config_data))
    path = str(write_config(tmp_path, data))
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    try:
        responses.post(f"{API}/cases", status=400, json={"error": f"patient {PNR} unknown"}, headers={"X-Request-Id": "r-1"})
        post_case(app, make_case, caseId="CLI-1")
        post_case(app, make_case, caseId="CLI-2")
        app.extensions["gateway.worker"].run_until_idle()
        log = json.loads(runner.invoke(cli.cli, ["log", "--config", path, "--case-id", "CLI-1", "--json"]).output)
        assert [r["event"] for r in log] == ["dead", "case_received"]
        dead = json.loads(runner.invoke(cli.cli, ["log", "--config", path, "--error-code", "GW062", "--json"]).output)
        assert {r["case_id"] for r in dead} == {"CLI-1", "CLI-2"}
        listed = json.loads(runner.invoke(cli.cli, ["outbox", "list", "--config", path, "--json"]).output)
        ids = sorted(r["id"] for r in listed)
        assert len(ids) == 2 and all(r["status"] == "dead" for r in listed)
        shown = runner.invoke(cli.cli, ["case", "show", "CLI-1", "--config", path])
        assert "GW062" in shown.output and "attempt 1" in shown.output and PNR not in shown.output
        assert "Jag vill lämna" not in shown.output  # no text without --content
        assert "came back: HTTP 400; Content-Type: application/json; X-Request-Id: r-1" in shown.output
        assert "unknown" not in shown.output and "--content shows them" in shown.output  # the body is content
        with_content = runner.invoke(cli.cli, ["case", "show", "CLI-1", "--content", "--config", path])
        assert "Jag vill lämna" in with_content.output
        assert "patient 1912******** unknown" in with_content.output and PNR not in with_content.output
        as_json = json.loads(runner.invoke(cli.cli, ["case", "show", "CLI-1", "--config", path, "--json"]).output)
        kept = as_json["outbox"][0]["attempts"][0]["response"]
        assert kept["status"] == 400 and kept["headers"]["X-Request-Id"] == "r-1" and kept["body"] is None
        responses.replace(responses.POST, f"{API}/cases", status=201, json={"id": "P-1"})
        replayed = runner.invoke(cli.cli, ["outbox", "replay", str(ids[0]), "--config", path, "--json"])
        assert replayed.exit_code == 0 and json.loads(replayed.output) == [{"id": ids[0], "replayed": True}]
        cancelled = runner.invoke(cli.cli, ["outbox", "cancel", str(ids[1]), "--config", path])
        assert cancelled.exit_code == 0 and "cancelled" in cancelled.output
        again = runner.invoke(cli.cli, ["outbox", "cancel", str(ids[1]), "--config", path])
        assert again.exit_code == 1
        app.extensions["gateway.worker"].run_until_idle()
        statuses = {r["case_id"]: r["status"] for r in app.extensions["gateway.store"].outbox_list(status=None)}
        assert statuses == {"CLI-1": "done", "CLI-2": "cancelled"}
        audit = [(a["action"], a["object"]) for a in app.extensions["gateway.store"].audit_entries()]
        assert ("replay", f"outbox {ids[0]}") in audit and ("cancel", f"outbox {ids[1]}") in audit
        assert ("read content", "case CLI-1") in audit
        paused = runner.invoke(cli.cli, ["target", "pause", "demo_rest", "--config", path, "--json"])
        assert json.loads(paused.output) == {"target": "demo_rest", "paused": True}
    finally:
        app.extensions["gateway.store"].close()


def test_hash_password(runner):
    from werkzeug.security import check_password_hash

    result = runner.invoke(cli.cli, ["ops", "hash-password"], input="s3cret-pw\ns3cret-pw\n")
    hashed = result.output.strip().splitlines()[-1]
    assert result.exit_code == 0 and check_password_hash(hashed, "s3cret-pw") and "s3cret-pw" not in hashed


# -- alerts ----------------------------------------------------------------------------------------------------


@pytest.fixture
def smtp_server():
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    class Inbox(Message):
        def __init__(self):
            super().__init__()
            self.messages = []

        def handle_message(self, message):
            self.messages.append(message)

    from conftest import free_port

    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield {"port": port, "inbox": handler.messages}
    controller.stop()


@pytest.fixture
def webhook():
    from sandbox.providers import serve_in_thread

    received = []
    stub = Flask("webhook")

    @stub.post("/hook")
    def hook():
        received.append(request.get_json())
        return "", 204

    url, stop = serve_in_thread(stub)
    yield {"url": f"{url}/hook", "received": received}
    stop()


@responses.activate
def test_alerts_on_dead_rows_and_failure_rate_throttled_with_recovery(config_data, make_case, smtp_server, webhook):
    responses.add_passthru("http://127.0.0.1")  # the webhook stub is real
    responses.post(f"{API}/cases", status=400)
    data = fast(copy.deepcopy(config_data))
    data["alerts"] = {"webhook_url": webhook["url"], "smtp_host": "127.0.0.1", "smtp_port": smtp_server["port"],
                      "mail_to": ["ops@example.se"], "throttle_s": 3600, "failure_rate": 0.5, "min_attempts": 2,
                      "queue_age_s": 3600}
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    worker, store = app.extensions["gateway.worker"], app.extensions["gateway.store"]
    try:
        post_case(app, make_case, caseId="AL-1")
        post_case(app, make_case, caseId="AL-2")
        worker.run_until_idle()
        sent = worker.check_alerts()
        kinds = sorted((a.kind, a.target) for a in sent)
        assert kinds == [("dead", "demo_rest"), ("failure_rate", "demo_rest")]
        assert len(webhook["received"]) == 2 and len(smtp_server["inbox"]) == 2
        mail = smtp_server["inbox"][0]
        assert "demo_rest" in mail["Subject"] and PNR not in mail.get_payload()
        assert "AL-1" in json.dumps(webhook["received"])
        # another dead row within the throttle period: no new alert
        post_case(app, make_case, caseId="AL-3")
        worker.run_until_idle()
        assert worker.check_alerts() == [] and len(webhook["received"]) == 2
        # the operator cancels the dead rows: recovery notice for 'dead'
        for row in store.outbox_list(status="dead"):
            store.cancel(row["id"], by="test")
        later = utcnow() + dt.timedelta(hours=1)  # the failure window has passed too
        recovered = worker.check_alerts(now=later)
        assert sorted(a.kind for a in recovered) == ["dead", "failure_rate"] and all(a.recovered for a in recovered)
        assert "recovered" in webhook["received"][-1]["subject"]
        assert worker.check_alerts(now=later + dt.timedelta(minutes=1)) == []
    finally:
        app.extensions["gateway.store"].close()


def test_queue_age_alert_and_a_failing_channel_does_not_stop_the_check(config_data, make_case, webhook):
    data = copy.deepcopy(config_data)
    data["alerts"] = {"webhook_url": webhook["url"], "smtp_host": "127.0.0.1", "smtp_port": 9, "mail_to": ["x@example.se"],
                      "queue_age_s": 1}
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    try:
        app.extensions["gateway.store"].set_paused("demo_rest", True, by="test")
        post_case(app, make_case)
        sent = app.extensions["gateway.worker"].check_alerts(now=utcnow() + dt.timedelta(seconds=30))
        assert [(a.kind, a.target) for a in sent] == [("queue_age", "demo_rest")]
        assert len(webhook["received"]) == 1  # the SMTP channel failed (port 9), the webhook still got it
    finally:
        app.extensions["gateway.store"].close()


# -- retention -------------------------------------------------------------------------------------------------


@responses.activate
def test_retention_purges_old_done_cases_never_undelivered_or_dead_and_the_file_shrinks(config_data, make_case, runner, tmp_path):
    import os

    from conftest import PDF

    data = fast(copy.deepcopy(config_data))
    path = str(write_config(tmp_path, data))
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    store, worker = app.extensions["gateway.store"], app.extensions["gateway.worker"]
    try:
        big = [{"fileName": f"{i}.pdf", "mimeType": "application/pdf", "data": PDF + os.urandom(400_000)} for i in range(3)]
        responses.post(f"{API}/cases", status=201, json={"id": "P-1"})
        post_case(app, make_case, caseId="OLD-DONE", attachment=big)
        worker.run_until_idle()
        responses.replace(responses.POST, f"{API}/cases", status=400)
        post_case(app, make_case, caseId="OLD-DEAD", attachment=big[:1])
        worker.run_until_idle()
        store.set_paused("demo_rest", True, by="test")
        post_case(app, make_case, caseId="OLD-PENDING")
        old = "2020-01-01T00:00:00.000000Z"
        store.db.execute("UPDATE cases SET received_at = ?, last_activity_at = ?", [old, old])
        store.db.execute("UPDATE sync_log SET at = ?", [old])
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the data into the main file, to measure it
        size_before = os.path.getsize(store.path)
        result = runner.invoke(cli.cli, ["retention", "--config", path, "--json"])
        removed = json.loads(result.output)
        # the file OLD-DONE shares with OLD-DEAD stays: it is still needed
        assert removed["cases"] == 1 and removed["files"] == 2 and removed["bytes_freed"] > 700_000
        assert os.path.getsize(store.path) < size_before - 700_000
        assert store.case_row("OLD-DONE")["content"] is None and store.attachments_of("OLD-DONE") == []
        assert store.case_row("OLD-DEAD")["content"] is not None and len(store.attachments_of("OLD-DEAD")) == 1
        assert store.case_row("OLD-PENDING")["content"] is not None
        details = {r["case_id"]: r["detail"] for r in store.db.query("select case_id, detail from sync_log where event = 'case_received'")}
        assert details["OLD-DONE"] is None and details["OLD-DEAD"] and details["OLD-PENDING"]
        again = json.loads(runner.invoke(cli.cli, ["retention", "--config", path, "--json"]).output)
        assert again["cases"] == 0 and again["files"] == 0
    finally:
        app.extensions["gateway.store"].close()
