"""Hostile peers (issue 18): requests built to make the gateway slow or to smuggle what
can never be sent. Each test goes through the real path: the Flask app, or `gateway serve`."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess

import pytest
import requests
from conftest import example_data, free_port, result_of, write_config

import rivta
from test_server import gateway_command, stop_server, wait_until_serving


def _many_namespaces(body: bytes, count: int) -> bytes:
    """The same request with ``count`` unused namespace declarations on the Envelope."""
    declarations = b" ".join(b'xmlns:n%d="urn:x:%d"' % (i, i) for i in range(count))
    start = body.index(b"<soap-env:Envelope ") + len(b"<soap-env:Envelope ")
    return body[:start] + declarations + b" " + body[start:]


# -- 1. namespace declarations and attributes -------------------------------------------------------


def test_an_envelope_with_thousands_of_namespace_declarations_is_refused(post, make_case, store):
    status, root, _ = post(_many_namespaces(make_case(caseId="NS-1"), 5000))
    fault = result_of(root)
    assert status == 500 and fault["faultstring"].startswith("GW011"), fault
    assert "namespaces" in fault["faultstring"]
    assert store.counts()["cases"] == 0


def test_a_few_namespace_declarations_more_are_still_accepted(post, make_case, store):
    status, root, _ = post(_many_namespaces(make_case(caseId="NS-2"), 50))
    assert status == 200 and result_of(root)["resultCode"] == "OK"


def test_text_that_mentions_xmlns_is_not_counted(post, make_case, store):
    status, root, _ = post(make_case(caseId="NS-3", text="xmlns= " * 1000))
    assert status == 200 and result_of(root)["resultCode"] == "OK"


@pytest.mark.parametrize("where", [b"<soap-env:Envelope ", b"<soap-env:Body", b"<soap-env:Header", b"<ns0:LogicalAddress "])
def test_a_soap_element_with_too_many_attributes_is_refused(post, make_case, store, where):
    body = make_case(caseId="AT-1")
    attributes = b" ".join(b'a%d="1"' % i for i in range(rivta.MAX_SOAP_ATTRIBUTES + 1))
    start = body.index(where) + len(where)
    status, root, _ = post(body[:start] + b" " + attributes + b" " + body[start:])
    fault = result_of(root)
    assert status == 500 and fault["faultstring"].startswith("GW011"), fault
    assert store.counts()["cases"] == 0


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    """`gateway serve` with one process and two threads: two slow requests would hold it."""
    folder = tmp_path_factory.mktemp("hostile")
    data = example_data(folder)
    data["server"]["threads"] = 2
    data["server"]["workers"] = 1
    write_config(folder, data)
    port = free_port()
    log = open(folder / "server.log", "wb")
    process = subprocess.Popen(
        [*gateway_command(), "serve", "--config", str(folder / "config.yaml"), "--bind", f"127.0.0.1:{port}", "--no-worker"],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True,
        env={**os.environ, "GATEWAY__LOGGING__FORMAT": "json"},
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(base, process, folder / "server.log", path="/health/live")
    yield {"base": base, "folder": folder}
    stop_server(process, kill=True)  # a hostile request may still hold a thread on a broken build
    log.close()


@pytest.mark.slow
def test_200000_namespace_declarations_do_not_freeze_the_gateway(small_server, make_case):
    """A 5 MB ProcessCase with 200,000 xmlns declarations (validating it took minutes):
    refused at once, and the health probe answers while such requests arrive."""
    body = _many_namespaces(make_case(caseId="NS-BIG"), 200_000)
    assert len(body) > 4_000_000
    base = small_server["base"]

    def hostile(_: int) -> requests.Response:
        return requests.post(f"{base}/rivta", data=body, headers={"Content-Type": "text/xml; charset=UTF-8"}, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        sent = [pool.submit(hostile, i) for i in range(4)]
        live = [requests.get(f"{base}/health/live", timeout=30) for _ in range(3)]
        answers = [f.result() for f in sent]
    assert [r.status_code for r in live] == [200, 200, 200]
    for answer in answers:
        assert answer.status_code == 500 and b"<faultstring>GW011 " in answer.content, answer.content[:300]


# -- the provider API: what can never be sent, and what is too long ----------------------------------

API_TOKEN = "hostile-test-token-0123456789"
H = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def api_app(config_data):
    import copy

    from conftest import built_app

    data = copy.deepcopy(config_data)
    data["targets"]["demo_rest"]["api"] = {"token": API_TOKEN}
    with built_app(data) as app:
        yield app


@pytest.fixture
def api(api_app, make_case):
    client = api_app.test_client()
    answer = client.post("/rivta", data=make_case(caseId="API-1"), headers={"Content-Type": "text/xml"})
    assert b"<ns0:resultCode>OK" in answer.data or b">OK<" in answer.data, answer.data
    return client


def _stored(app) -> tuple[int, int]:
    store = app.extensions["gateway.store"]
    return store.counts()["messages"], store.counts()["outbox"]


def reply(**fields):
    body = {"kind": "FINAL_REPLY", "subject": "Svar", "body": "Tack för dina synpunkter.", "senderUnit": "KLIN1"}
    body.update(fields)
    return body


def attachment(name: str) -> dict:
    import base64

    from conftest import PDF

    return {"fileName": name, "mimeType": "application/pdf", "data": base64.b64encode(PDF).decode()}


@pytest.mark.parametrize("field, value, named", [
    ("body", "Tack\x00 för dina synpunkter.", "body"),
    ("body", "bell \x07", "body"),
    ("subject", "Svar\x1b[31m", "subject"),
    ("senderName", "Kliniken\x00", "senderName"),
    ("body", "a \ufffe b", "body"),
    ("attachments", [attachment("beslut\x00.pdf")], "attachments[1]/fileName"),
    ("attachments", [attachment("beslut\x0b.pdf")], "attachments[1]/fileName"),
])
def test_api_refuses_characters_xml_cannot_carry(api, api_app, field, value, named):
    before = _stored(api_app)
    response = api.post("/api/v1/cases/API-1/messages", json=reply(**{field: value}), headers=H)
    assert response.status_code == 422, response.get_json()
    error = response.get_json()
    assert error["code"] == "GW029" and error["field"] == named and "XML" in error["message"], error
    assert _stored(api_app) == before


def test_api_accepts_tabs_newlines_and_any_language(api):
    response = api.post("/api/v1/cases/API-1/messages",
                        json=reply(body="Hej!\r\n\tRad två: 日本語, العربية, 👍", subject="Svar – åäö"), headers=H)
    assert response.status_code == 202, response.get_json()


@pytest.mark.parametrize("field, length, limit", [
    ("senderName", 10 * 1024 * 1024, 255), ("senderName", 256, 255), ("subject", 256, 255), ("body", 20001, 20000),
])
def test_api_refuses_texts_over_their_maximum(api, api_app, field, length, limit):
    before = _stored(api_app)
    response = api.post("/api/v1/cases/API-1/messages", json=reply(**{field: "x" * length}), headers=H)
    error = response.get_json()
    assert response.status_code == 422 and error["code"] == "GW029" and error["field"] == field, error
    assert f"at most {limit}" in error["message"]
    assert _stored(api_app) == before


def test_api_takes_texts_at_their_maximum(api):
    response = api.post("/api/v1/cases/API-1/messages",
                        json=reply(senderName="n" * 255, subject="s" * 255, body="b" * 20000), headers=H)
    assert response.status_code == 202, response.get_json()


def external(**subject) -> dict:
    from conftest import PNR

    return {"externalCaseId": "J-1", "channel": "TELEFON", "receiverUnit": "KLIN1", "caseType": "QUESTION",
            "subjectOfCare": {"personId": {"id": PNR}, **subject}, "text": "Ett samtal."}


def test_api_refuses_an_external_case_whose_name_is_too_long(api, api_app):
    cases = api_app.extensions["gateway.store"].counts()["cases"]
    response = api.post("/api/v1/cases", json=external(name="N" * 256), headers=H)
    error = response.get_json()
    # the field is the body's own (the model's limit, rules.MAX_NAME), not intake's case/subjectOfCare/name
    assert response.status_code == 422 and error["code"] == "GW029" and error["field"] == "subjectOfCare.name", error
    assert api_app.extensions["gateway.store"].counts()["cases"] == cases


@pytest.mark.parametrize("name, why", [
    ("\u202egpj.exe", "U+202E"), ("../../etc/passwd.pdf", "path"), ("..\\boot.pdf", "path"),
    ("beslut\r\nX-Injected: 1.pdf", "U+000D"), ("beslut\u200b.pdf", "U+200B"), ("beslut\x85.pdf", "U+0085"),
])
def test_api_refuses_file_names_that_are_paths_or_hide_characters(api, api_app, name, why):
    before = _stored(api_app)
    response = api.post("/api/v1/cases/API-1/messages", json=reply(attachments=[attachment(name)]), headers=H)
    error = response.get_json()
    assert response.status_code == 422 and error["code"] == "GW029", error
    assert error["field"] == "attachments[1]/fileName" and why in error["message"], error
    assert _stored(api_app) == before


# -- the provider API: malformed calls get JSON with a code, never a 500 or HTML ----------------------


def test_deeply_nested_json_is_a_400(api):
    body = b'{"kind": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = api.post("/api/v1/cases/API-1/messages", data=body, headers={**H, "Content-Type": "application/json"})
    assert response.status_code == 400 and response.get_json()["code"] == "GW033", response.data[:200]
    body = b'{"kind": ' + b"[" * 50 + b"]" * 50 + b"}"
    response = api.post("/api/v1/cases/API-1/messages", data=body, headers={**H, "Content-Type": "application/json"})
    assert response.status_code == 400 and "nested" in response.get_json()["message"]


@pytest.mark.parametrize("raw", [
    b'{"kind": "FINAL_REPLY", "body": "x\\ud800", "senderUnit": "KLIN1"}',
    b'{"kind": "FINAL_REPLY", "body": "ok", "senderUnit": "KLIN1\\udfff"}',
    b'{"kind": "FINAL_REPLY", "body": "ok", "senderUnit": "KLIN1", "\\udc00": 1}',
])
def test_lone_surrogates_are_a_400(api, api_app, raw):
    before = _stored(api_app)
    response = api.post("/api/v1/cases/API-1/messages", data=raw, headers={**H, "Content-Type": "application/json"})
    assert response.status_code == 400 and response.get_json()["code"] == "GW033", response.data[:300]
    assert "surrogate" in response.get_json()["message"]
    assert _stored(api_app) == before


def test_an_escaped_surrogate_pair_is_a_character(api):
    raw = b'{"kind": "FINAL_REPLY", "body": "tumme \\ud83d\\udc4d", "senderUnit": "KLIN1"}'
    response = api.post("/api/v1/cases/API-1/messages", data=raw, headers={**H, "Content-Type": "application/json"})
    assert response.status_code == 202, response.get_json()


@pytest.mark.parametrize("method, path, status, code", [
    ("PUT", "/api/v1/cases/API-1/messages", 405, "GW037"),
    ("DELETE", "/api/v1/cases/API-1", 405, "GW037"),
    ("PUT", "/api/v1/cases", 405, "GW037"),
    ("GET", "/api/v1/cases/API-1/x/y", 404, "GW032"),
    ("POST", "/api/v1/cases/a/b/messages", 404, "GW032"),
    ("GET", "/api/nothing", 404, "GW032"),
])
def test_unknown_methods_and_paths_under_api_answer_json(api, method, path, status, code):
    response = api.open(path, method=method, headers=H, json={})
    assert response.status_code == status and response.mimetype == "application/json", response.data[:200]
    assert response.get_json()["code"] == code


# -- RIV-TA intake: every string has a maximum; file names are made plain ------------------------------


def _subject(**fields) -> dict:
    from conftest import PNR

    return {"personId": {"id": PNR, "type": "1.2.752.129.2.1.3.1"}, "name": "Tolvan Tolvansson",
            "contact": {"mobile": "+46701234567", "email": "tolvan@example.org", "consentToShare": True}, **fields}


@pytest.mark.parametrize("overrides, where", [
    ({"subjectOfCare": _subject(name="N" * 256)}, "subjectOfCare/name"),
    ({"subjectOfCare": _subject(contact={"mobile": "7" * 33, "consentToShare": True})}, "mobile"),
    ({"subjectOfCare": _subject(contact={"email": "e" * 255, "consentToShare": True})}, "email"),
    ({"caseType": "PRESCRIPTION_RENEWAL", "complaint": None,
      "chosenMedication": [{"prescriptionId": "RX-1", "name": "M" * 256}]}, "chosenMedication/name"),
])
def test_intake_refuses_strings_over_their_maximum(post, make_case, store, overrides, where):
    status, root, _ = post(make_case(caseId="LONG-1", **overrides))
    fault = result_of(root)
    assert status == 500 and fault["faultstring"].startswith("GW015"), fault
    assert where in fault["faultstring"]
    assert store.counts()["cases"] == 0


def test_intake_refuses_a_100_mb_name_without_storing_it(post, make_case, store):
    status, root, _ = post(make_case(caseId="LONG-2", subjectOfCare=_subject(name="N" * 5_000_000, contact=None)))
    assert status == 500 and result_of(root)["faultstring"].startswith(("GW015", "GW010"))
    assert store.counts()["cases"] == 0


def test_intake_takes_strings_at_their_maximum(post, make_case, store):
    status, root, _ = post(make_case(caseId="LONG-3", subjectOfCare=_subject(
        name="N" * 255, contact={"mobile": "7" * 32, "email": "e" * 254, "consentToShare": True})))
    assert status == 200 and result_of(root)["resultCode"] == "OK", result_of(root)


def test_the_served_wsdls_still_compile_with_their_maxima(client):
    import zeep

    rivta.check_contract_files()
    for contract in rivta.CONTRACTS.values():
        response = client.get(f"/rivta/contracts/{contract.wsdl_relpath}")
        assert response.status_code == 200
    zeep.Client(str(rivta.ADD_MESSAGE.wsdl_path))


@pytest.mark.parametrize("sent, kept", [
    ("\u202egpj.exe", "gpj.exe"),
    ("../../etc/intyg.pdf", "intyg.pdf"),
    ("C:\\Users\\tolvan\\intyg.pdf", "intyg.pdf"),
    ("intyg\r\nX-Injected: 1.pdf", "intygX-Injected: 1.pdf"),
    ("\u200bintyg\u2066.pdf", "intyg.pdf"),
    ("..", "attachment"),
])
def test_intake_makes_file_names_plain_before_storing(post, make_case, store, sent, kept):
    from conftest import PDF

    status, root, _ = post(make_case(caseId="FN-1", attachment=[{"fileName": sent, "mimeType": "application/pdf", "data": PDF}]))
    assert status == 200 and result_of(root)["resultCode"] == "OK", result_of(root)
    (attachment,) = store.attachments_of("FN-1")
    assert attachment.file_name == kept
    assert kept in store.load_case("FN-1").attachments[0].file_name


# -- 16. the correlation id is per request ------------------------------------------------------------


def test_a_later_ops_log_line_does_not_carry_an_api_calls_correlation_id(api, caplog):
    import logging

    import logs

    response = api.post("/api/v1/cases/API-1/messages", json=reply(), headers={**H, "x-correlation-id": "corr-api-77"})
    assert response.status_code == 202
    with caplog.at_level(logging.INFO):
        caplog.clear()
        api.post("/ops/login", data={"username": "nobody", "password": "x"})  # logs a line (CSRF refusal)
        api.get("/health/live")
    assert caplog.records
    assert logs.correlation_id.get() is None
    assert all(getattr(r, "correlation_id", None) != "corr-api-77" for r in caplog.records)
    filt = logs.RedactFilter()
    for record in caplog.records:
        record.__dict__.pop("correlation_id", None)
        filt.filter(record)
        assert record.correlation_id != "corr-api-77"


# -- 14. the ops view: malformed requests are a 4xx with a code, never a 500 ---------------------------


@pytest.fixture
def oapp(config_data):
    from conftest import built_app
    from test_ops import build_app, ops_config

    with built_app(ops_config(config_data), build_app) as app:
        yield app


def signed_in(app, name: str = "ada"):
    from test_ops import sign_in

    return sign_in(app, name)


@pytest.mark.parametrize("path", [
    "/ops/log?before=x|99999999999999999999999",
    "/ops/log?before=x|%C2%B2",
    "/ops/log?before=2026-01-01T00:00:00.000000Z|%D9%A3",
    "/ops/log?before=nonsense",
    "/ops/dead?before=%C2%B2",
    "/ops/dead?before=99999999999999999999999",
])
def test_bad_page_cursors_are_a_400_with_a_code(oapp, path):
    response = signed_in(oapp).get(path)
    assert response.status_code == 400, response.status_code
    assert "GW038" in response.get_data(as_text=True)


@pytest.mark.parametrize("value", ["\u00b2", "99999999999999999999999", "\u0663"])
def test_a_bad_row_id_in_a_dead_letter_form_is_a_400(oapp, value):
    from test_ops import csrf

    client = signed_in(oapp)
    response = client.post("/ops/dead/confirm", data={"action": "replay", "id": value, "csrf_token": csrf(client)})
    assert response.status_code == 400 and "GW038" in response.get_data(as_text=True)


@pytest.mark.parametrize("next_path", ["/ops/\rSet-Cookie: x=1", "/ops/log\n", "/ops/\x00"])
def test_a_control_character_in_the_return_path_is_a_400(oapp, next_path):
    from test_ops import PASSWORDS, token_of

    client = oapp.test_client()
    token = token_of(client.get("/ops/login").get_data(as_text=True))
    response = client.post("/ops/login", data={"username": "ada", "password": PASSWORDS["ada"], "csrf_token": token,
                                               "next": next_path})
    assert response.status_code == 400 and "GW038" in response.get_data(as_text=True)
    assert "Set-Cookie: x" not in str(response.headers)


def test_a_stored_file_name_with_cr_lf_downloads_under_a_plain_name(oapp, make_case):
    import hashlib

    from conftest import PDF

    client = signed_in(oapp, "rita")
    answer = oapp.test_client().post("/rivta", data=make_case(caseId="DL-1", attachment=[
        {"fileName": "intyg.pdf", "mimeType": "application/pdf", "data": PDF}]), headers={"Content-Type": "text/xml"})
    assert b"OK" in answer.data
    store = oapp.extensions["gateway.store"]
    with store.write() as db:  # as a row stored before names were made plain
        db.execute("UPDATE attachments SET file_name = ? WHERE case_id = 'DL-1'", ["in\r\ntyg\u202e.pdf"])
    response = client.get(f"/ops/cases/DL-1/files/{hashlib.sha256(PDF).hexdigest()}")
    assert response.status_code == 200 and response.data == PDF
    disposition = response.headers["Content-Disposition"]
    assert "\r" not in disposition and "\n" not in disposition and "intyg.pdf" in disposition, disposition


# -- 11. sign-in throttling ---------------------------------------------------------------------------


@pytest.fixture
def throttled(config_data, tmp_path):
    """Two gateway apps (two processes' worth) on one store, on a clock the test moves."""
    import copy
    import datetime as dt

    import config as config_mod
    import cli
    import gateway
    from clock import FixedClock
    from conftest import ROOT
    from test_ops import ops_config

    data = ops_config(config_data)
    data["ops"]["sign_in"] = {"max_failures_per_user": 5, "max_failures_per_address": 20, "window_s": 900,
                              "lockout_s": 900}
    config_path = write_config(tmp_path, data)
    clock = FixedClock(dt.datetime(2026, 12, 15, 10, 0, tzinfo=dt.timezone.utc))
    apps = [gateway.create_app(config_mod.from_dict(copy.deepcopy(data), base_dir=ROOT, environ={}), clock=clock)
            for _ in range(2)]
    for app in apps:
        app.config["TESTING"] = True
    yield {"apps": apps, "clock": clock, "config": config_path, "store": apps[0].extensions["gateway.store"]}
    for app in apps:
        app.extensions["gateway.worker"].stop()
        app.extensions["gateway.store"].close()


def try_sign_in(app, name: str, password: str, address: str = "127.0.0.1"):
    from test_ops import token_of

    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    token = token_of(client.get("/ops/login").get_data(as_text=True))
    response = client.post("/ops/login", data={"username": name, "password": password, "csrf_token": token})
    return client, response


def test_300_wrong_passwords_lock_the_user_and_the_right_one_is_then_refused(throttled):
    from test_ops import PASSWORDS

    app = throttled["apps"][0]
    statuses = [try_sign_in(app, "ada", f"guess-{n}", address=f"10.0.{n // 250}.{n % 250}")[1].status_code
                for n in range(300)]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    client, response = try_sign_in(app, "ada", PASSWORDS["ada"], address="10.9.9.9")
    assert response.status_code == 429 and "GW039" in response.get_data(as_text=True)
    assert client.get("/ops/").status_code == 302  # not signed in


def test_the_lock_is_shared_by_every_process_and_ends_after_lockout_s(throttled):
    from test_ops import PASSWORDS

    first, second = throttled["apps"]
    for n in range(5):
        assert try_sign_in(first, "ada", f"guess-{n}")[1].status_code == 401
    assert try_sign_in(second, "ada", PASSWORDS["ada"])[1].status_code == 429  # the other process knows
    assert try_sign_in(second, "rita", PASSWORDS["rita"])[1].status_code == 302  # another user is not locked
    throttled["clock"].move(seconds=899)
    assert try_sign_in(second, "ada", PASSWORDS["ada"])[1].status_code == 429
    throttled["clock"].move(seconds=2)
    client, response = try_sign_in(second, "ada", PASSWORDS["ada"])
    assert response.status_code == 302 and client.get("/ops/").status_code == 200


def test_failures_spread_over_many_names_lock_the_address(throttled):
    from test_ops import PASSWORDS

    app = throttled["apps"][0]
    for n in range(20):
        assert try_sign_in(app, f"user{n}", "guess", address="192.0.2.7")[1].status_code == 401
    assert try_sign_in(app, "ada", PASSWORDS["ada"], address="192.0.2.7")[1].status_code == 429
    assert try_sign_in(app, "ada", PASSWORDS["ada"], address="192.0.2.8")[1].status_code == 302


def test_an_admin_lifts_a_lock_and_the_audit_log_records_both(throttled, runner):
    import cli
    import gateway
    from test_ops import PASSWORDS

    app = throttled["apps"][0]
    for n in range(5):
        try_sign_in(app, "ada", f"guess-{n}")
    assert try_sign_in(app, "ada", PASSWORDS["ada"])[1].status_code == 429
    result = runner.invoke(cli.cli, ["ops", "unlock", "ada", "--config", str(throttled["config"])])
    assert result.exit_code == 0 and "lock lifted" in result.output, result.output
    assert try_sign_in(app, "ada", PASSWORDS["ada"])[1].status_code == 302
    actions = [(e["action"], e["object"]) for e in throttled["store"].audit_entries()]
    assert ("sign_in_locked", "user:ada") in actions and ("sign_in_unlocked", "user:ada") in actions


def test_a_right_password_forgets_the_earlier_failures(throttled):
    from test_ops import PASSWORDS

    app = throttled["apps"][0]
    for _ in range(3):
        for n in range(4):
            assert try_sign_in(app, "ada", f"guess-{n}", address=f"10.1.0.{n}")[1].status_code == 401
        assert try_sign_in(app, "ada", PASSWORDS["ada"])[1].status_code == 302


# -- 13. sessions end on the server -------------------------------------------------------------------


def test_a_cookie_copied_before_sign_out_no_longer_works(oapp):
    from test_ops import csrf

    client = signed_in(oapp, "mona")
    copied = client.get_cookie("session").value
    assert client.get("/ops/").status_code == 200
    thief = oapp.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/ops/").status_code == 200  # the same session, before sign-out
    assert client.post("/ops/logout", data={"csrf_token": csrf(client, "/ops/")}).status_code == 302
    thief = oapp.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/ops/").status_code == 302  # sent back to sign in


@pytest.mark.parametrize("change, secure", [
    ({}, False),
    ({"ops": {"secure_cookie": True}}, True),
    ({"gateway": {"public_url": "https://gateway.example.se"}}, True),
    ({"gateway": {"public_url": "https://gateway.example.se"}, "ops": {"secure_cookie": False}}, False),
    ({"server": "tls"}, True),
])
def test_the_session_cookie_is_secure_whenever_the_gateway_is_reached_over_tls(config_data, tmp_path, change, secure):
    import copy

    import config as config_mod
    import devcerts
    import cli
    import gateway
    from conftest import ROOT
    from test_ops import ops_config

    data = ops_config(config_data)
    for section, values in change.items():
        if values == "tls":
            issued = devcerts.create(tmp_path / "certs", [])["server"]
            data["server"]["tls"] = {"cert": str(issued.cert), "key": str(issued.key)}
        else:
            data[section].update(values)
    app = gateway.create_app(config_mod.from_dict(copy.deepcopy(data), base_dir=ROOT, environ={}))
    app.config["TESTING"] = True
    try:
        _, response = try_sign_in(app, "mona", "monitor-pw")
        assert response.status_code == 302
        assert ("; Secure" in response.headers["Set-Cookie"]) is secure, response.headers["Set-Cookie"]
    finally:
        app.extensions["gateway.worker"].stop()
        app.extensions["gateway.store"].close()


# -- 17. a personnummer inside an id is masked for a monitor --------------------------------------------


def test_a_monitor_never_sees_a_personnummer_inside_a_case_id(oapp, make_case):
    from conftest import PNR

    case_id = f"C{PNR}"  # 1177's id that happens to hold 12 digits forming a valid personnummer
    answer = oapp.test_client().post("/rivta", data=make_case(caseId=case_id), headers={"Content-Type": "text/xml"})
    assert b"OK" in answer.data, answer.data
    mona = signed_in(oapp, "mona")
    pages = {path: mona.get(path) for path in ("/ops/", "/ops/log", "/ops/log?case_id=" + case_id)}
    log_page = pages["/ops/log"].get_data(as_text=True)
    assert "C1912********" in log_page
    from lxml import html

    link = next(a.get("href") for a in html.fromstring(log_page).iter("a") if a.text == "C1912********")
    pages[link] = mona.get(link)
    pages["find"] = mona.get(f"/ops/case?case_id={case_id}", follow_redirects=True)
    for path, response in pages.items():
        assert response.status_code == 200, path
        text = response.get_data(as_text=True)
        if path != "/ops/log?case_id=" + case_id:  # (the search form shows what the monitor typed)
            assert PNR not in text, path
    assert PNR not in link and "C1912********" in pages[link].get_data(as_text=True)
    rita = signed_in(oapp, "rita")  # a reader sees content, and the id as it is
    assert case_id in rita.get(f"/ops/cases/{case_id}").get_data(as_text=True)
    assert mona.get("/ops/cases/~not-a-token").status_code == 400
