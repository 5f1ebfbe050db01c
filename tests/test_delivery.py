"""Delivery to provider systems: the worker, the REST adapter (against `responses`), retries,
dead letters, idempotency keys, order per case, leases, pausing, consent and field maps."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import threading
import time

import pytest
import time_machine
import requests
import responses
from conftest import PDF, PNG, PNR, ROOT, result_of

import config as config_mod
import gateway
from clock import utcnow
from store import Store, parse_ts

API = "http://127.0.0.1:8081/api"


@pytest.fixture
def fast_retry(config_data):
    """Retries after ~10 ms, at most 3 attempts, so tests do not wait."""
    for target in config_data["targets"].values():
        target["retry"] = {"max_attempts": 3, "initial_s": 0.01, "multiplier": 2, "max_s": 0.05, "jitter": 0.0}
    return config_data


@pytest.fixture
def dapp(fast_retry, tmp_path):
    from conftest import ROOT

    cfg = config_mod.from_dict(copy.deepcopy(fast_retry), base_dir=ROOT, environ={})
    app = gateway.create_app(cfg)
    yield app
    app.extensions["gateway.worker"].stop()
    app.extensions["gateway.store"].close()


@pytest.fixture
def dclient(dapp):
    return dapp.test_client()


@pytest.fixture
def dstore(dapp) -> Store:
    return dapp.extensions["gateway.store"]


@pytest.fixture
def worker(dapp):
    return dapp.extensions["gateway.worker"]


@pytest.fixture
def send(dclient, make_case, make_message):
    def post(kind="case", **overrides):
        body = make_case(**overrides) if kind == "case" else make_message(**overrides)
        response = dclient.post("/rivta", data=body, headers={"Content-Type": "text/xml"})
        from lxml import etree

        assert result_of(etree.fromstring(response.data))["resultCode"] == "OK", response.data
    return post


def outbox(store, case_id="1177-C-0001"):
    return store.outbox_rows(case_id)


# -- success ------------------------------------------------------------------------------------


@responses.activate
def test_case_is_delivered_as_the_field_map_says(send, worker, dstore):
    responses.post(f"{API}/cases", status=201, json={"id": "P-1"})
    send()
    assert worker.run_until_idle() == 1
    call = responses.calls[0].request
    body = json.loads(call.body)
    row = outbox(dstore)[0]
    assert call.headers["Idempotency-Key"] == row["idempotency_key"]
    assert body["externalId"] == "1177-C-0001" and body["type"] == "SYNPUNKT" and body["unit"] == "KLIN1"
    assert body["patient"]["personnummer"] == PNR
    assert body["contact"] == {"mobile": "+46701234567", "email": "tolvan@example.org", "usage": "messages_only"}
    assert body["complaint"]["isCareProcess"] is False
    assert [base64.b64decode(a["content"]) for a in body["attachments"]] == [PDF, PNG]
    assert row["status"] == "done"
    case = dstore.case_row("1177-C-0001")
    assert case["provider_case_id"] == "P-1" and case["status"] == "delivered"
    attempts = dstore.attempts_of(row["id"])
    assert [(a["outcome"], a["status_code"]) for a in attempts] == [("delivered", 201)]
    events = [r["event"] for r in dstore.db.query("select event from sync_log order by id")]
    assert events == ["case_received", "delivered", "contact_erased"]


@responses.activate
def test_message_follows_its_case_to_the_providers_case_id(send, worker, dstore):
    responses.post(f"{API}/cases", status=201, json={"id": "P-7"})
    responses.post(f"{API}/cases/P-7/messages", status=201, json={"id": "M-1"})
    send()
    send("message")
    worker.run_until_idle()
    assert [c.request.url for c in responses.calls] == [f"{API}/cases", f"{API}/cases/P-7/messages"]
    message = json.loads(responses.calls[1].request.body)
    assert message["externalMessageId"] == "1177-M-0001" and message["text"].startswith("Här kommer")
    assert [r["status"] for r in outbox(dstore)] == ["done", "done"]


@responses.activate
def test_contact_details_are_not_forwarded_without_consent(send, worker):
    responses.post(f"{API}/cases", status=201, json={"id": "P-1"})
    send(subjectOfCare={"personId": {"id": PNR, "type": "1.2.752.129.2.1.3.1"},
                        "contact": {"mobile": "+46701234567", "email": "t@example.org", "consentToShare": False}})
    worker.run_until_idle()
    body = json.loads(responses.calls[0].request.body)
    assert "contact" not in body and "+46701234567" not in responses.calls[0].request.body.decode()


# -- failures ---------------------------------------------------------------------------------------


@responses.activate
def test_transient_failure_is_retried_with_the_same_idempotency_key(send, worker, dstore):
    responses.post(f"{API}/cases", status=503)
    responses.post(f"{API}/cases", status=201, json={"id": "P-1"})
    send()
    worker.run_until_idle()
    keys = {c.request.headers["Idempotency-Key"] for c in responses.calls}
    assert len(responses.calls) == 2 and len(keys) == 1
    row = outbox(dstore)[0]
    assert row["status"] == "done"
    assert [(a["outcome"], a["status_code"], a["error_code"]) for a in dstore.attempts_of(row["id"])] == [
        ("retry", 503, "GW061"), ("delivered", 201, None)]
    assert "retry_scheduled" in [r["event"] for r in dstore.db.query("select event from sync_log")]


@pytest.mark.parametrize(
    "failure, code",
    [
        (dict(status=429), "GW061"),
        (dict(status=408), "GW061"),
        (dict(body=requests.ConnectionError("refused")), "GW060"),
        (dict(body=requests.Timeout("slow")), "GW060"),
    ],
)
@responses.activate
def test_each_transient_failure_kind_retries_then_goes_dead(send, worker, dstore, failure, code):
    responses.post(f"{API}/cases", **failure)
    send()
    worker.run_until_idle()
    row = outbox(dstore)[0]
    attempts = dstore.attempts_of(row["id"])
    assert len(responses.calls) == 3 and [a["outcome"] for a in attempts] == ["retry", "retry", "dead"]
    assert all(a["error_code"] == code for a in attempts[:2])
    assert row["status"] == "dead" and row["last_error_code"] == "GW064" and "gave up after 3" in row["last_error"]


@pytest.mark.parametrize("status", [400, 404, 409, 422])
@responses.activate
def test_permanent_failure_goes_dead_at_once(send, worker, dstore, status):
    responses.post(f"{API}/cases", status=status, json={"error": f"patient {PNR} unknown"})
    send()
    worker.run_until_idle()
    row = outbox(dstore)[0]
    assert len(responses.calls) == 1
    assert row["status"] == "dead" and row["last_error_code"] == "GW062" and f"HTTP {status}" in row["last_error"]
    assert "dead" in [r["event"] for r in dstore.db.query("select event from sync_log")]


@responses.activate
def test_answer_without_the_providers_case_id_is_a_dead_letter(send, worker, dstore):
    responses.post(f"{API}/cases", status=201, json={"ok": True})
    send()
    worker.run_until_idle()
    row = outbox(dstore)[0]
    assert row["status"] == "dead" and row["last_error_code"] == "GW063"


# -- the method and the success statuses of each action ------------------------------------------------


@pytest.fixture
def put_target(fast_retry):
    """demo_rest as a system that takes a case by PUT at its own address and answers 200 or 201."""
    rest = fast_retry["targets"]["demo_rest"]
    rest["paths"] = {"deliver_case": "/v2/cases/{case_id}", "deliver_message": "/v2/cases/{provider_case_id}/messages"}
    rest["methods"] = {"deliver_case": "PUT", "deliver_message": "post"}
    rest["success_statuses"] = [200, 201]
    return fast_retry


@responses.activate
def test_a_put_target_takes_the_case_at_its_own_address(put_target, send, worker, dstore):
    responses.put(f"{API}/v2/cases/1177-C-0001", status=200, json={"id": "P-9"})
    responses.post(f"{API}/v2/cases/P-9/messages", status=201, json={})
    send()
    send("message")
    worker.run_until_idle()
    assert [(c.request.method, c.request.url) for c in responses.calls] == [
        ("PUT", f"{API}/v2/cases/1177-C-0001"), ("POST", f"{API}/v2/cases/P-9/messages")]
    rows = outbox(dstore)
    assert [r["status"] for r in rows] == ["done", "done"]
    assert responses.calls[0].request.headers["Idempotency-Key"] == rows[0]["idempotency_key"]
    assert json.loads(responses.calls[0].request.body)["type"] == "SYNPUNKT"
    assert dstore.case_row("1177-C-0001")["provider_case_id"] == "P-9"
    assert [(a["outcome"], a["status_code"]) for a in dstore.attempts_of(rows[0]["id"])] == [("delivered", 200)]


@responses.activate
def test_a_2xx_the_target_does_not_list_as_success_is_a_dead_letter(put_target, send, worker, dstore):
    responses.put(f"{API}/v2/cases/1177-C-0001", status=202, json={"id": "P-9"})
    send()
    worker.run_until_idle()
    row = outbox(dstore)[0]
    assert len(responses.calls) == 1  # not retried: the target said something else than "taken"
    assert row["status"] == "dead" and row["last_error_code"] == "GW063"
    assert "HTTP 202" in row["last_error"] and "success_statuses (200, 201)" in row["last_error"]
    assert dstore.case_row("1177-C-0001")["provider_case_id"] is None


def test_any_2xx_is_success_when_the_target_lists_none():
    import adapters

    data = config_mod.from_dict(_rest_target(methods={"deliver_case": "PATCH"}), base_dir=ROOT, environ={})
    adapter = adapters.build("demo_rest", data.targets["demo_rest"])
    with responses.RequestsMock() as mock:
        mock.patch(f"{API}/cases", status=202, json={"id": "P-1"})
        assert adapter.deliver_case(adapters.Request({"a": 1}, "key-1")).status_code == 202
    assert adapter.preview("deliver_case", adapters.Request({"a": 1}, "key-1")).startswith(f"PATCH {API}/cases\n")


def _rest_target(**changes) -> dict:
    import yaml

    data = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    data["targets"] = {"demo_rest": {**data["targets"]["demo_rest"], **changes}}
    return data


@responses.activate
def test_mapping_that_falls_through_is_dead_and_names_file_key_and_value(send, worker, dstore, dapp):
    maps = dapp.extensions["gateway.mappings"]
    del maps.codes.case_types["demo_rest"]["QUESTION"]
    send(caseType="QUESTION", complaint=None)
    worker.run_until_idle()
    row = outbox(dstore)[0]
    assert len(responses.calls) == 0
    assert row["status"] == "dead" and row["last_error_code"] == "GW002"
    assert "codes.yaml: case_types.demo_rest has no entry for 'QUESTION'" in row["last_error"]


@responses.activate
def test_retry_after_is_respected_within_the_ceiling(send, worker, dstore):
    responses.post(f"{API}/cases", status=503, headers={"Retry-After": "1"})
    send()
    job = dstore.claim("w", limit=1, lease_s=30)[0]
    before = utcnow()
    worker.deliver(job)
    not_before = parse_ts(outbox(dstore)[0]["not_before"])
    assert (not_before - before).total_seconds() <= 0.06  # ceiling max_s = 0.05 wins over Retry-After


def test_backoff_is_exponential_with_jitter_and_a_ceiling():
    retry = config_mod.RetrySection(initial_s=2, multiplier=2, max_s=60, jitter=0.2)
    assert [retry.delay(n, 0.5) for n in (1, 2, 3, 4, 5, 6, 7)] == [2, 4, 8, 16, 32, 60, 60]
    assert retry.delay(1, 0.0) == pytest.approx(1.6) and retry.delay(1, 0.9999) == pytest.approx(2.4, abs=1e-3)


# -- order, leases, concurrency, pausing ----------------------------------------------------------------


@responses.activate
def test_a_stuck_case_holds_its_own_messages_but_not_other_cases(send, worker, dstore):
    responses.post(f"{API}/cases", status=400)  # case A is refused for good
    send(caseId="A")
    send("message", caseId="A", messageId="A-M1")
    worker.run_until_idle()
    assert [r["status"] for r in outbox(dstore, "A")] == ["dead", "pending"]
    responses.replace(responses.POST, f"{API}/cases", status=201, json={"id": "P-B"})
    send(caseId="B")
    worker.run_until_idle()
    assert outbox(dstore, "B")[0]["status"] == "done"  # the stuck case does not block others
    assert outbox(dstore, "A")[1]["status"] == "pending"  # its message waits behind the dead row
    assert len([c for c in responses.calls if "/messages" in c.request.url]) == 0
    # an operator fixes the cause and replays: the case, then its message, go through
    responses.replace(responses.POST, f"{API}/cases", status=201, json={"id": "P-A"})
    responses.post(f"{API}/cases/P-A/messages", status=201, json={})
    assert dstore.replay(outbox(dstore, "A")[0]["id"], by="test")
    worker.run_until_idle()
    assert [r["status"] for r in outbox(dstore, "A")] == ["done", "done"]
    dead_attempts = dstore.attempts_of(outbox(dstore, "A")[0]["id"])
    assert [a["outcome"] for a in dead_attempts] == ["dead", "delivered"]  # the replay kept the first attempt
    assert "replayed" in [r["event"] for r in dstore.db.query("select event from sync_log")]


@responses.activate
def test_a_retrying_case_keeps_its_message_waiting(send, worker, dstore):
    responses.post(f"{API}/cases", status=503)
    with time_machine.travel(utcnow(), tick=False):  # the clock stands: the (short) retry is not due yet
        send()
        send("message")
        job = dstore.claim("w1", limit=5, lease_s=30)
        assert [j.action for j in job] == ["deliver_case"]  # the message is not claimable yet
        worker.deliver(job[0])
        assert dstore.claim("w1", limit=5, lease_s=30) == []  # retry not due, message still behind it


def test_a_crashed_workers_row_returns_after_its_lease_with_the_same_key(send, dstore):
    send()
    first = dstore.claim("crashed-worker", limit=1, lease_s=300)[0]
    assert dstore.claim("other", limit=1, lease_s=30) == []  # in flight: nobody else takes it
    with time_machine.travel(utcnow() + dt.timedelta(seconds=299), tick=False):
        assert dstore.recover_leases() == 0  # the lease still runs
    with time_machine.travel(utcnow() + dt.timedelta(seconds=301), tick=False):
        assert dstore.recover_leases() == 1
    second = dstore.claim("other", limit=1, lease_s=30)[0]
    assert second.id == first.id and second.idempotency_key == first.idempotency_key
    # the crashed worker coming back late cannot finish a row it no longer holds
    assert not dstore.complete(first, started=utcnow(), duration_ms=1, status_code=201)
    assert dstore.complete(second, started=utcnow(), duration_ms=1, status_code=201)
    events = [r["event"] for r in dstore.db.query("select event from sync_log order by id")]
    assert "lease_expired" in events and events[-2:] == ["delivered", "contact_erased"]


def test_two_workers_never_claim_the_same_row(send, dstore):
    for i in range(40):
        send(caseId=f"C-{i}")
    claimed: list[int] = []
    lock = threading.Lock()

    def claim_all(name):
        store = Store(dstore.location)
        while True:
            jobs = store.claim(name, limit=3, lease_s=30)
            if not jobs:
                break
            with lock:
                claimed.extend(j.id for j in jobs)
        store.close()

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 40 and len(set(claimed)) == 40


def test_while_a_target_is_at_its_limit_the_others_are_claimed_without_reading_its_backlog(send, dstore, backend):
    """demo_rest at its limit with a backlog: a claim takes demo_soap's due rows, oldest
    first, as many as demo_soap has room for, and reads them by (target, status, not_before),
    not by walking every pending row in time order past demo_rest's."""
    from conftest import KLIN2

    for i in range(12):
        send(caseId=f"REST-{i:02d}")
    for i in range(3):
        send(address=KLIN2, caseId=f"SOAP-{i}", attachment=None, receiver={"hsaId": KLIN2, "isPatientBoard": False})
    targets = ["demo_rest", "demo_soap", "national"]
    jobs = dstore.claim("w1", limit=8, lease_s=30, room={"demo_rest": 0}, room_per_target=2, targets=targets)
    assert [(j.target, j.case_id) for j in jobs] == [("demo_soap", "SOAP-0"), ("demo_soap", "SOAP-1")]
    rest = dstore.claim("w1", limit=8, lease_s=30, room={"demo_rest": 2, "demo_soap": 0}, room_per_target=2, targets=targets)
    assert [(j.target, j.case_id) for j in rest] == [("demo_rest", "REST-00"), ("demo_rest", "REST-01")]
    if backend == "sqlite":
        from store.base import CLAIMABLE_SQL

        plan = " ".join(str(tuple(r)) for r in dstore.db.execute(
            f"EXPLAIN QUERY PLAN SELECT o.id FROM outbox o WHERE o.target = ? AND {CLAIMABLE_SQL} AND o.not_before <= ? "
            "ORDER BY o.not_before, o.id LIMIT 2", ["demo_soap", "9999"]).fetchall())
        assert "idx_outbox_target_status_not_before" in plan and "TEMP B-TREE" not in plan, plan


@responses.activate
def test_paused_target_is_not_delivered_until_resumed(send, worker, dstore):
    responses.post(f"{API}/cases", status=201, json={"id": "P-1"})
    dstore.set_paused("demo_rest", True, by="test")
    send()
    worker.run_until_idle(timeout=0.2)
    assert len(responses.calls) == 0 and outbox(dstore)[0]["status"] == "pending"
    dstore.set_paused("demo_rest", False, by="test")
    worker.run_until_idle()
    assert outbox(dstore)[0]["status"] == "done"


@responses.activate
def test_cancelled_row_is_never_delivered(send, worker, dstore):
    send()
    assert dstore.cancel(outbox(dstore)[0]["id"], by="test")
    worker.run_until_idle()
    assert len(responses.calls) == 0 and outbox(dstore)[0]["status"] == "cancelled"


# -- the threaded worker -------------------------------------------------------------------------------


def test_new_work_is_dispatched_at_once_not_on_the_next_tick(fast_retry, make_case, tmp_path):
    from conftest import ROOT

    fast_retry["worker"]["poll_s"] = 60  # the tick alone would take a minute
    cfg = config_mod.from_dict(copy.deepcopy(fast_retry), base_dir=ROOT, environ={})
    app = gateway.create_app(cfg, start_worker=True)
    store = app.extensions["gateway.store"]
    try:
        with responses.RequestsMock() as mock:
            mock.post(f"{API}/cases", status=201, json={"id": "P-1"})
            started = time.monotonic()
            app.test_client().post("/rivta", data=make_case(), headers={"Content-Type": "text/xml"})
            while outbox(store)[0]["status"] != "done":
                assert time.monotonic() - started < 5, "not delivered"
                time.sleep(0.01)
            elapsed = time.monotonic() - started
        assert elapsed < 5
    finally:
        app.extensions["gateway.worker"].stop()
        store.close()


# -- REST authentication --------------------------------------------------------------------------------


def _rest_adapter(**auth):
    import adapters

    settings = config_mod.RestTarget(kind="rest", base_url=API, auth=config_mod.AuthSection(**auth))
    return adapters.build("t", settings)


@responses.activate
def test_bearer_and_basic_auth():
    import adapters

    responses.post(f"{API}/cases", status=201, json={"id": "1"})
    _rest_adapter(type="bearer", token="s3cret").deliver_case(adapters.Request({}, "k1"))
    assert responses.calls[0].request.headers["Authorization"] == "Bearer s3cret"
    _rest_adapter(type="basic", username="gw", password="pw").deliver_case(adapters.Request({}, "k2"))
    assert responses.calls[1].request.headers["Authorization"] == "Basic " + base64.b64encode(b"gw:pw").decode()


@responses.activate
def test_oauth2_token_is_cached_and_renewed_after_a_401():
    import adapters

    token_url = "http://127.0.0.1:8081/oauth/token"
    responses.post(token_url, json={"access_token": "T1", "expires_in": 3600})
    responses.post(token_url, json={"access_token": "T2", "expires_in": 3600})
    responses.post(f"{API}/cases", status=201, json={"id": "1"})
    responses.post(f"{API}/cases", status=201, json={"id": "2"})
    responses.post(f"{API}/cases", status=401)
    responses.post(f"{API}/cases", status=201, json={"id": "3"})
    adapter = _rest_adapter(type="oauth2", token_url=token_url, client_id="gw", client_secret="cs")
    for key in ("k1", "k2", "k3"):
        adapter.deliver_case(adapters.Request({}, key))
    auths = [c.request.headers.get("Authorization") for c in responses.calls if c.request.url.endswith("/cases")]
    assert auths == ["Bearer T1", "Bearer T1", "Bearer T1", "Bearer T2"]
    assert sum(1 for c in responses.calls if c.request.url == token_url) == 2
    token_call = next(c for c in responses.calls if c.request.url == token_url)
    assert "grant_type=client_credentials" in token_call.request.body


def test_errors_never_carry_secrets():
    import adapters
    from errors import DeliveryError

    adapter = _rest_adapter(type="bearer", token="s3cret-token")
    with responses.RequestsMock() as mock:
        mock.post(f"{API}/cases", status=403)
        with pytest.raises(DeliveryError) as info:
            adapter.deliver_case(adapters.Request({}, "k"))
    assert info.value.permanent and "s3cret" not in str(info.value)
    assert "s3cret-token" not in repr(config_mod.AuthSection(type="bearer", token="s3cret-token"))


def test_a_dripping_provider_gets_a_total_deadline_and_cannot_hold_up_other_targets(config_data, make_case):
    """A provider that answers one byte at a time, slower than nothing: each call ends at the
    total deadline, the target never holds more than its share of the slots, the other
    target's cases go on, and /health/ready says which target holds the calls."""
    import socket

    from conftest import KLIN2
    from sandbox.providers import create_soap_provider, serve_in_thread

    stop, lock = threading.Event(), threading.Lock()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    open_calls = {"now": 0, "most": 0, "all": 0}

    def drip(conn):
        with lock:
            open_calls["now"] += 1
            open_calls["all"] += 1
            open_calls["most"] = max(open_calls["most"], open_calls["now"])
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
        while not stop.is_set():  # one byte every 0.2 s: every socket read succeeds, the answer never ends
            try:
                conn.sendall(b" ")
            except OSError:
                break
            stop.wait(0.2)
        conn.close()
        with lock:
            open_calls["now"] -= 1

    def accept():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    soap_url, stop_soap = serve_in_thread(create_soap_provider(answer_delay_s=0, question_every=0))
    data = copy.deepcopy(config_data)
    data["targets"]["demo_rest"]["base_url"] = f"http://127.0.0.1:{listener.getsockname()[1]}/api"
    data["targets"]["demo_rest"]["timeout_s"] = 1  # per read: the drip never trips it
    data["targets"]["demo_soap"]["endpoint"] = f"{soap_url}/soap"
    data["worker"].update(concurrency=4, deadline_s=1)  # per_target: half of 4
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}), start_worker=True)
    client, store = app.test_client(), app.extensions["gateway.store"]
    try:
        for n in range(4):  # to the dripping target
            client.post("/rivta", data=make_case(caseId=f"DRIP-{n}", attachment=None), headers={"Content-Type": "text/xml"})
        for n in range(3):  # to the healthy one
            client.post("/rivta", data=make_case(KLIN2, caseId=f"OK-{n}", attachment=None,
                                                 receiver={"hsaId": KLIN2, "isPatientBoard": False}),
                        headers={"Content-Type": "text/xml"})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
                store.outbox_rows(f"OK-{n}")[0]["status"] == "done" for n in range(3)):
            time.sleep(0.05)
        assert all(store.outbox_rows(f"OK-{n}")[0]["status"] == "done" for n in range(3))
        while time.monotonic() < deadline and not store.attempts_of(store.outbox_rows("DRIP-0")[0]["id"]):
            time.sleep(0.05)
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and any("demo_rest" in p and "deadline" in p for p in ready.json["problems"])
        attempts = [a for n in range(4) for a in store.attempts_of(store.outbox_rows(f"DRIP-{n}")[0]["id"])]
        assert attempts and all(a["error_code"] == "GW060" for a in attempts)
        assert open_calls["most"] <= 2  # the dripping target never held more than its share
    finally:
        stop.set()
        listener.close()
        app.extensions["gateway.worker"].stop(timeout=5)
        stop_soap()
        store.close()


# -- what came back is kept (issue 13, item 4) ------------------------------------------------------------


@responses.activate
def test_a_refused_answer_keeps_its_status_headers_and_the_first_kilobytes_masked(send, worker, dstore):
    body = json.dumps({"error": f"patient {PNR} unknown", "padding": "x" * 6000})
    responses.post(f"{API}/cases", status=422, body=body, content_type="application/problem+json",
                   headers={"X-Request-Id": "req-77", "Set-Cookie": "secret=1"})
    send()
    worker.run_until_idle()
    row = outbox(dstore)[0]
    (attempt,) = dstore.attempts_of(row["id"])
    kept = attempt["response"]
    assert attempt["error_code"] == "GW062" and kept["status"] == 422
    assert kept["headers"]["Content-Type"] == "application/problem+json" and kept["headers"]["X-Request-Id"] == "req-77"
    assert "Set-Cookie" not in kept["headers"]
    assert kept["truncated"] and len(kept["body"].encode()) <= 4096 and kept["body"].startswith('{"error": "patient 1912')
    raw = dstore.db.execute("SELECT response FROM attempts").fetchone()[0]
    assert PNR not in raw and "1912********" in raw


@responses.activate
def test_a_transient_answer_keeps_retry_after(send, worker, dstore):
    responses.post(f"{API}/cases", status=503, body="down for maintenance", headers={"Retry-After": "0"})
    send()
    worker.run_until_idle()
    attempts = dstore.attempts_of(outbox(dstore)[0]["id"])
    assert attempts[0]["error_code"] == "GW061"
    assert attempts[0]["response"]["headers"]["Retry-After"] == "0"
    assert attempts[0]["response"]["body"] == "down for maintenance"


@responses.activate
def test_an_answer_without_the_case_id_names_the_keys_that_came_back_and_is_kept(send, worker, dstore):
    responses.post(f"{API}/cases", status=201, json={"ok": True, "caseNumber": "P-1", "note": PNR})
    send()
    worker.run_until_idle()
    row = outbox(dstore)[0]
    assert row["last_error_code"] == "GW063" and "it had: ok, caseNumber, note" in row["last_error"]
    (attempt,) = dstore.attempts_of(row["id"])
    assert attempt["status_code"] == 201 and attempt["response"]["status"] == 201
    assert '"caseNumber": "P-1"' in attempt["response"]["body"] and PNR not in attempt["response"]["body"]


@responses.activate
def test_a_delivered_attempt_keeps_no_response(send, worker, dstore):
    responses.post(f"{API}/cases", status=201, json={"id": "P-1"})
    send()
    worker.run_until_idle()
    (attempt,) = dstore.attempts_of(outbox(dstore)[0]["id"])
    assert attempt["outcome"] == "delivered" and attempt["response"] is None


@responses.activate
def test_a_huge_answer_is_refused_unread_and_the_row_goes_dead(config_data, make_case):
    """A provider answering 2 MB to a target capped at 1 MB: the answer is refused (GW063)
    without being read whole, and the row is a dead letter, not a retry loop."""
    data = copy.deepcopy(config_data)
    data["targets"]["demo_rest"]["max_answer_bytes"] = 1024 * 1024
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    try:
        responses.post(f"{API}/cases", status=201, body=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                       content_type="application/json")
        app.test_client().post("/rivta", data=make_case(), headers={"Content-Type": "text/xml"})
        app.extensions["gateway.worker"].run_until_idle()
        row = app.extensions["gateway.store"].outbox_rows("1177-C-0001")[0]
        assert row["status"] == "dead" and row["last_error_code"] == "GW063" and "1048576" in row["last_error"]
    finally:
        app.extensions["gateway.store"].close()
