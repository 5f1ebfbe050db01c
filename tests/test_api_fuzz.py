"""Hostile input, systematically: property-based tests of the provider REST API, generated
by schemathesis from the OpenAPI document the gateway serves at ``/api/openapi.json``.

Every operation of the document gets schema-valid and schema-invalid requests (positive and
negative generation), sent through the WSGI app with a target's bearer token (now and then
another target's token, a wrong one or none). Path parameters are mostly the ids of real
data (a case received through ``/rivta``, a message posted through the API) so that the
calls get past the look-ups, and otherwise generated. For every answer:

- no 5xx at all (a 5xx would have to carry ``{code: GW0xx}``, and even then it is reported);
- every 4xx is JSON with a ``code`` matching ``^GW0\\d\\d$`` and a ``message``;
- the answer conforms to the document where schemathesis can tell (status code, content
  type, response schema), and schema-invalid requests are refused;
- a refused call (4xx) has written nothing (``store.counts()`` and the outbox unchanged);
- no person id, token or traceback in any answer.

``API_FUZZ_EXAMPLES`` sets the examples per operation and generation mode (default 100).
Run with ``pytest -s`` to see how many requests ran.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import os
import re
import time
from collections import Counter

import pytest
import schemathesis
from conftest import KLIN2, PDF, PNR, ROOT, built_app, result_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

import clock
import config as config_mod
import gateway

REST_TOKEN = "rest-token-0123456789"
SOAP_TOKEN = "soap-token-0123456789"
EXAMPLES = int(os.environ.get("API_FUZZ_EXAMPLES", "100"))
GW_CODE = re.compile(r"^GW0\d\d$")
CASE_ID = "1177-C-0001"  # routed to demo_rest (KLIN1): the token's own case
OTHER_CASE_ID = "1177-C-0002"  # routed to demo_soap (KLIN2): another target's case
MESSAGE_ID = "API-M-1"  # a held message of CASE_ID, so that cancel finds one
#: every generated request, by operation, generation mode and status code
RAN: Counter = Counter()
#: Bugs these tests find are listed here while open (each pinned by a strict xfail test): name → (operationId,
#: schemathesis failure code, pattern of the negated part). Failures they explain are
#: counted, not failed on; delete an entry when its bug is fixed.
KNOWN_BUGS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {}  # all found so far are fixed


@pytest.fixture
def api_app(config_data):
    data = copy.deepcopy(config_data)
    data["targets"]["demo_rest"]["api"] = {"token": REST_TOKEN}
    data["targets"]["demo_soap"]["api"] = {"token": SOAP_TOKEN}
    data["outbound"]["review_s"] = 3600  # messages wait in the review window: cancel has work to do
    with built_app(data) as app:
        yield app


@pytest.fixture
def real_data(api_app, make_case):
    """A case per target received through /rivta, and a held message on the first one."""
    client = api_app.test_client()
    other = make_case(KLIN2, caseId=OTHER_CASE_ID, receiver={"hsaId": KLIN2, "isPatientBoard": False})
    for body in (make_case(caseId=CASE_ID), other):
        response = client.post("/rivta", data=body, headers={"Content-Type": "text/xml; charset=UTF-8"})
        assert result_of(etree.fromstring(response.data))["resultCode"] == "OK", response.data
    held = client.post(f"/api/v1/cases/{CASE_ID}/messages", headers={"Authorization": f"Bearer {REST_TOKEN}"},
                       json={"kind": "INFO", "body": "Hej", "senderUnit": "KLIN1", "messageId": MESSAGE_ID})
    assert held.status_code == 202, held.json
    return api_app


@pytest.fixture
def api_schema(real_data):
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", real_data)
    # authentication is varied by the test itself (TOKENS), not by negating the security scheme
    schema.config.generation.update(database="none", with_security_parameters=False)
    return schema


#: the operations answering JSON (the ones answering a file's bytes are left out)
OPERATIONS = ["registerCase", "getCase", "postMessage", "getMessage", "cancelMessage", "releaseMessage", "postStatus"]

#: who calls: mostly the case's own target, sometimes another target, a wrong token or none
TOKENS = st.sampled_from([REST_TOKEN] * 6 + [SOAP_TOKEN, "guess-0123456789", None])


def _case_ids() -> st.SearchStrategy[dict]:
    """Path parameters: real ids most of the time, otherwise left to schemathesis."""
    return st.sampled_from([
        {"caseId": CASE_ID, "messageId": MESSAGE_ID}, {"caseId": CASE_ID}, {"caseId": CASE_ID},
        {"caseId": OTHER_CASE_ID}, {},
    ])


def _overlays(operation_id: str) -> list[dict]:
    """Valid values for the fields the gateway's rules look up (a unit, a person id, a
    code), laid over some of the examples so that they get past the look-ups and reach the
    store or the deeper checks; the other fields stay as generated. ``{}``: as generated."""
    pdf = base64.b64encode(PDF).decode()
    event_day = (clock.SYSTEM.day() - dt.timedelta(days=10)).isoformat()
    if operation_id == "registerCase":
        core = {"channel": "TELEFON", "receiverUnit": "KLIN1", "caseType": "QUESTION",
                "subjectOfCare": {"personId": {"id": PNR}}, "text": "Ring mig, tack."}
        complaint = {**core, "caseType": "COMPLAINT", "complaint": {"eventDate": event_day, "isCareProcess": False,
                                                                   "eventLocationText": "Mottagningen"}}
        with_file = {**core, "attachments": [{"fileName": "a.pdf", "mimeType": "application/pdf", "data": pdf}]}
    elif operation_id == "postMessage":
        core = {"kind": "INFO", "senderUnit": "KLIN1", "body": "Hej, vi har läst ditt ärende."}
        complaint = {**core, "senderUnit": "SE5566778899-KLIN1", "kind": "FINAL_REPLY"}
        with_file = {**core, "attachments": [{"fileName": "svar.pdf", "mimeType": "application/pdf", "data": pdf}]}
    elif operation_id == "postStatus":
        core = {"status": "IN_PROGRESS"}
        complaint = {"status": "CLOSED", "problems": ["1.1"], "businessArea": {"code": "10", "displayName": "Vård"}}
        with_file = {"status": "PAGAR", "careUnitHsaId": "SE5566778899-KLIN1"}
    else:
        return [{}]
    partial = [{k: v for k, v in core.items() if k != key} for key in core]  # one field left as generated
    return [{}, {}, core, core, complaint, with_file, *partial]


def _negated_paths(case) -> list[tuple] | None:
    """Where in the body a negative example was made invalid (None: the whole body)."""
    data = getattr(getattr(case.meta, "phase", None), "data", None)
    paths = [tuple(m.path) for m in getattr(data, "mutations", None) or ()
             if getattr(m.parameter_location, "value", m.parameter_location) == "body"]
    return None if any(not p for p in paths) else paths


def _lay_over(body: dict, overlay: dict, negated: list[tuple], prefix: tuple = ()) -> None:
    for key, value in overlay.items():
        path = (*prefix, key)
        if any(n[: len(path)] == path for n in negated):  # the invalid part is here or below: keep it
            if isinstance(value, dict) and isinstance(body.get(key), dict) and path not in negated:
                _lay_over(body[key], value, negated, path)
            continue
        body[key] = copy.deepcopy(value)


def _overlaid(case, overlay: dict):
    """Valid values over the fields that the example did not make invalid (for a negative
    example: everywhere except where schemathesis broke the schema), so that it gets past
    the look-ups and the invalid part is what the gateway has to deal with."""
    if not overlay or not isinstance(case.body, dict):
        return case
    negated = _negated_paths(case) if case.meta is not None and case.meta.generation.mode.is_negative else []
    if negated is None:
        return case
    body = copy.deepcopy(case.body)
    _lay_over(body, overlay, negated)
    case.body = body
    return case


def _answer_problems(response, body_text: str) -> list[str]:
    """The gateway's own rules for every answer, beyond what the document says."""
    problems = []
    status = response.status_code
    if status >= 500:
        problems.append(f"HTTP {status}: {body_text[:300]}")
    if 400 <= status < 500:
        try:
            payload = json.loads(body_text)
        except ValueError:
            return problems + [f"HTTP {status} without a JSON body: {body_text[:200]!r}"]
        if not isinstance(payload, dict) or not GW_CODE.match(str(payload.get("code"))):
            problems.append(f"HTTP {status} without a GW0xx code: {body_text[:200]}")
        elif not isinstance(payload.get("message"), str) or not payload["message"].strip():
            problems.append(f"HTTP {status} without a message: {body_text[:200]}")
    for secret in (PNR, REST_TOKEN, SOAP_TOKEN):
        if secret in body_text:
            problems.append(f"{secret[:6]}… in the answer")
    if "Traceback" in body_text:
        problems.append("a traceback in the answer")
    return problems


def _state(store) -> tuple:
    outbox = store.db.execute("SELECT id, status FROM outbox ORDER BY id").fetchall()
    return store.counts(), tuple(map(tuple, outbox))


def _negation(case) -> str:
    data = getattr(getattr(case.meta, "phase", None), "data", None)
    return getattr(data, "description", "") or ""


def _only_nulls(case) -> bool:
    """True when the example's only violations are ``null`` for optional properties: the
    gateway reads ``null`` as "not given" there, which is lenient, not wrong."""
    lines = [line for line in _negation(case).splitlines() if line.strip()]
    return bool(lines) and all("became null" in line for line in lines)


def _is_known(operation_id: str, code: str, case) -> str | None:
    """The name of the known bug (``KNOWN_BUGS``) that explains a failure, if any."""
    negation = _negation(case)
    for name, (operations, codes, pattern) in KNOWN_BUGS.items():
        if operation_id in operations and code in codes and re.search(pattern, negation):
            return name
    return None


def _explore(operation_id: str, mode: GenerationMode, strategy: st.SearchStrategy, store, checks: list,
             found: dict[str, str], known: Counter) -> None:
    """Run ``EXAMPLES`` generated requests of one operation and mode; note every problem."""

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy, token=TOKENS)
    def run(case, token):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        before = _state(store)
        response = case.call(headers=headers)
        text = response.text
        RAN[(operation_id, mode.value, response.status_code)] += 1
        problems = _answer_problems(response, text)
        if response.status_code >= 500 and _is_known(operation_id, "5xx", case):
            known[_is_known(operation_id, "5xx", case)] += 1
            problems = [p for p in problems if not p.startswith(f"HTTP {response.status_code}")]
        if 400 <= response.status_code < 500 and _state(store) != before:
            problems.append(f"HTTP {response.status_code} but the store changed")
        try:
            case.validate_response(response, checks=checks, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                bug = _is_known(operation_id, failure.code, case)
                if bug:
                    known[bug] += 1
                elif failure.code == "ST201" and _only_nulls(case):
                    known["null taken as absent"] += 1  # a policy, not a bug: see _only_nulls
                else:
                    problems.append(f"{failure.code} {failure.title}: {_negation(case)[:200]} → HTTP {response.status_code}")
        for problem in problems:
            key = re.sub(r"\(was .*?\)|[0-9a-f-]{36}", "", problem)[:160]  # one entry per kind and place
            found.setdefault(key, f"{problem}\n    {mode.value}: {case.as_curl_command(headers=headers)[:1500]}\n"
                                  f"    answer: {text[:300]}")

    run()


@pytest.mark.parametrize("operation_id", OPERATIONS)
def test_generated_requests_get_documented_gw_answers_and_refusals_write_nothing(api_schema, real_data, operation_id):
    store = real_data.extensions["gateway.store"]
    operation = api_schema.find_operation_by_id(operation_id)
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
              negative_data_rejection]
    names = {parameter.name for parameter in operation.path_parameters}

    def strategy(mode: GenerationMode) -> st.SearchStrategy:
        return st.tuples(_case_ids(), st.sampled_from(_overlays(operation_id))).flatmap(
            lambda chosen: operation.as_strategy(
                generation_mode=mode, path_parameters={k: v for k, v in chosen[0].items() if k in names}
            ).map(lambda case: _overlaid(case, chosen[1]))
        )

    found: dict[str, str] = {}  # every distinct problem once, with the request that showed it
    known: Counter = Counter()
    started = time.perf_counter()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        _explore(operation_id, mode, strategy(mode), store, checks, found, known)
    ran = {k: v for k, v in RAN.items() if k[0] == operation_id}
    statuses: Counter = Counter()
    for (_, _, status), count in ran.items():
        statuses[status] += count
    print(f"\napi fuzz {operation_id}: {sum(ran.values())} generated requests in {time.perf_counter() - started:.1f} s; "
          f"status codes {dict(sorted(statuses.items()))}; explained by known bugs and policies: {dict(known) or 'none'}")
    assert not found, f"{len(found)} distinct problems:\n\n" + "\n\n".join(found.values())


@pytest.fixture(scope="module", autouse=True)
def _print_total():
    yield
    if RAN:
        by_mode = Counter()
        for (_, mode, _), count in RAN.items():
            by_mode[mode] += count
        print(f"\napi fuzz: {sum(RAN.values())} generated requests in all ({dict(by_mode)}), "
              f"{EXAMPLES} examples per operation and generation mode")


# -- the bugs it found, fixed: kept as regression tests ------------------------------------------------------


def _registration(**changes) -> dict:
    body = {"externalCaseId": "EXT-1", "channel": "TELEFON", "receiverUnit": "KLIN1", "caseType": "COMPLAINT",
            "subjectOfCare": {"personId": {"id": PNR}}, "text": "Ringde om sitt besök.",
            "complaint": {"eventDate": (clock.SYSTEM.day() - dt.timedelta(days=10)).isoformat(), "isCareProcess": False,
                          "eventLocationText": "Mottagningen"}}
    for key, value in changes.items():
        *parents, last = key.split(".")
        target = body
        for parent in parents:
            target = target[parent]
        target[last] = value
    return body


def _refused_cleanly(app, method_path: str, body: dict) -> None:
    store = app.extensions["gateway.store"]
    before = _state(store)
    response = app.test_client().post(method_path, json=body, headers={"Authorization": f"Bearer {REST_TOKEN}"})
    text = response.get_data(as_text=True)
    assert 400 <= response.status_code < 500, f"HTTP {response.status_code}: {text[:300]}"
    assert not _answer_problems(response, text)
    assert _state(store) == before


@pytest.mark.parametrize("changes", [
    {"subjectOfCare.personId.type": 5},
    {"subjectOfCare.personId.type": True},
    {"subjectOfCare.personId.type": {"oid": "1.2.752.129.2.1.3.1"}},
    {"complaint.careUnitHsaId": 5},
    {"receiverUnit": "PN01", "complaint.eventLocationText": 5},
], ids=["type 5", "type true", "type object", "careUnitHsaId 5", "eventLocationText 5"])
def test_registration_with_wrongly_typed_fields_is_refused_not_crashed(real_data, changes):
    _refused_cleanly(real_data, "/api/v1/cases", _registration(**changes))


@pytest.mark.parametrize("path, body", [
    ("/api/v1/cases", _registration(**{"complaint.isCareProcess": "no"})),
    (f"/api/v1/cases/{CASE_ID}/status", {"status": "IN_PROGRESS", "businessArea": {"code": "1", "displayName": ["x"]}}),
    (f"/api/v1/cases/{CASE_ID}/status", {"status": "IN_PROGRESS", "businessArea": {"code": "1", "displayName": {"sv": "x"}}}),
    (f"/api/v1/cases/{CASE_ID}/status", {"status": "IN_PROGRESS", "problems": "1.1"}),
], ids=["isCareProcess 'no' taken as true", "displayName list (crashes the worker)",
        "displayName object (crashes the worker)", "problems not an array"])
def test_schema_violations_are_refused_not_coerced(real_data, path, body):
    _refused_cleanly(real_data, path, body)


def _reply(**changes) -> dict:
    attachment = {"fileName": "svar.pdf", "mimeType": "application/pdf", "data": base64.b64encode(PDF).decode()}
    attachment.update(changes)
    return {"kind": "FINAL_REPLY", "body": "Svar på ditt ärende.", "senderUnit": "KLIN1", "attachments": [attachment]}


@pytest.mark.parametrize("path, body", [
    ("/api/v1/cases", _registration(createdTime="0001-01-01T00:00:00+14:00")),
    ("/api/v1/cases", _registration(createdTime="9999-12-31T23:59:59-12:00")),
    ("/api/v1/cases", _registration(createdTime="1850-06-01T12:00:00+01:00")),
    ("/api/v1/cases", _registration(**{"complaint.eventDate": "0001-01-01"})),
    ("/api/v1/cases", _registration(subject="s" * 256)),
    ("/api/v1/cases", _registration(text="t" * 20_001)),
    (f"/api/v1/cases/{CASE_ID}/messages", _reply(fileName="a" * 252 + ".pdf")),
    (f"/api/v1/cases/{CASE_ID}/messages", _reply(fileName="")),
], ids=["createdTime year 1 (worker crash)", "createdTime year 9999 (worker crash)", "createdTime 1850 (dead)",
        "eventDate year 1 (dead)", "subject 256 chars (dead)", "text 20001 chars (dead)",
        "reply fileName 256 chars (dead)", "reply fileName empty (dead)"])
def test_what_1177_cannot_carry_is_refused_up_front(real_data, path, body):
    _refused_cleanly(real_data, path, body)


@pytest.fixture
def delivering_app(config_data):
    """The app with the loopback 1177 simulator and the demo REST system, so the worker can deliver."""
    from sandbox.national import create_national_stub
    from sandbox.providers import create_rest_provider, serve_in_thread

    national_url, stop_national = serve_in_thread(create_national_stub())
    rest_url, stop_rest = serve_in_thread(create_rest_provider())
    data = copy.deepcopy(config_data)
    data["national"]["endpoint"] = f"{national_url}/rivta"
    data["targets"]["demo_rest"]["base_url"] = f"{rest_url}/api"
    data["targets"]["demo_rest"]["api"] = {"token": REST_TOKEN}
    fast = {"max_attempts": 2, "initial_s": 0.01, "multiplier": 2, "max_s": 0.05, "jitter": 0}
    data["national"]["retry"] = fast
    for target in data["targets"].values():
        target["retry"] = fast
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    yield app
    app.extensions["gateway.worker"].stop()
    app.extensions["gateway.store"].close()
    stop_national()
    stop_rest()


@pytest.mark.parametrize("call", [
    ("status", {"status": "IN_PROGRESS", "businessArea": {"code": "1", "displayName": ["x"]}}),
    ("register", _registration(**{"createdTime": "0001-01-01T00:00:00+14:00", "externalCaseId": "EXT-OVERFLOW"})),
], ids=["status with a list as displayName", "registration in year 1"])
def test_what_the_api_accepts_is_delivered_or_dead_never_stuck(delivering_app, make_case, call):
    client, worker = delivering_app.test_client(), delivering_app.extensions["gateway.worker"]
    store = delivering_app.extensions["gateway.store"]
    response = client.post("/rivta", data=make_case(), headers={"Content-Type": "text/xml; charset=UTF-8"})
    assert result_of(etree.fromstring(response.data))["resultCode"] == "OK"
    worker.run_until_idle()
    auth = {"Authorization": f"Bearer {REST_TOKEN}"}
    kind, body = call
    path = f"/api/v1/cases/{CASE_ID}/status" if kind == "status" else "/api/v1/cases"
    answer = client.post(path, json=body, headers=auth)
    if answer.status_code >= 400:  # refused up front: nothing to deliver
        assert GW_CODE.match(answer.json["code"])
        return
    reply = client.post(f"/api/v1/cases/{CASE_ID}/messages", headers=auth,
                        json={"kind": "FINAL_REPLY", "body": "Svar på ditt ärende.", "senderUnit": "KLIN1"})
    assert reply.status_code == 202
    worker.run_until_idle()  # must not raise
    rows = list(store.db.query("SELECT action, status FROM outbox ORDER BY id"))
    assert not [r for r in rows if r["status"] == "in_flight"], rows
    assert [r["status"] for r in rows if r["action"] == "add_message"] == ["done"], rows
