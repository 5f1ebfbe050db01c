"""The provider API has one source of truth (issue 13, item 9): its OpenAPI 3.1 document is
generated from the pydantic models that validate every request body (``updates``) and build
every JSON answer (``api``), and its limits are the rules' constants.

Shown here as a provider's system sees it: every call of the main flows answers what the
served document says (checked by an independent JSON Schema validator, ``tests/contract.py``;
conftest checks every other test's API answers the same way), ``getCase`` returns exactly
the fields of ``CaseView``, a field the document does not name is refused rather than
dropped, and a polled update is read by the same models as the API call."""

from __future__ import annotations

import base64
import re

import pytest
from conftest import PDF, PNR_2
from contract import Document, served
from test_way_back import (  # noqa: F401 - fixtures
    REST_TOKEN,
    SOAP_TOKEN,
    app,
    auth,
    client,
    external,
    intake,
    make_app,
    national_url,
    peers,
    reply,
    rest_url,
    store,
)

import api
import rules
import updates
from errors import BadJson

pytestmark = pytest.mark.dates  # the flows register and close cases on today's Swedish date

CASE = "1177-C-0001"


def pdf_file(name: str = "svar.pdf") -> dict:
    return {"fileName": name, "mimeType": "application/pdf", "data": base64.b64encode(PDF).decode()}


@pytest.fixture
def reviewed(config_data, peers):
    """The app with a review window, so that messages wait and can be cancelled."""
    app = make_app(config_data, peers, review_s=3600)
    yield app
    app.extensions["gateway.worker"].stop()
    app.extensions["gateway.store"].close()


def test_every_call_of_the_main_flows_answers_as_the_served_document_says(reviewed, make_case):
    client = reviewed.test_client()
    document = served(client.get)
    problems: list[str] = []

    def call(method: str, path: str, token: str | None = REST_TOKEN, **kwargs):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = client.open(path, method=method, headers={**headers, **kwargs.pop("headers", {})}, **kwargs)
        problems.extend(document.problems(method, path, response.status_code, response.content_type or "",
                                          response.get_data() if response.mimetype == "application/json" else b""))
        return response

    intake(reviewed, make_case)  # a complaint with two attachments, routed to demo_rest
    reviewed.extensions["gateway.worker"].run_until_idle()
    messages = f"/api/v1/cases/{CASE}/messages"

    assert call("GET", f"/api/v1/cases/{CASE}").status_code == 200
    assert call("GET", f"/api/v1/cases/{CASE}/attachments/1").status_code == 200
    assert call("GET", f"/api/v1/cases/{CASE}/attachments/9").status_code == 404
    assert call("POST", messages, json=reply(messageId="M-1", attachments=[pdf_file()])).status_code == 202
    assert call("POST", messages, json=reply(messageId="M-1", attachments=[pdf_file()])).json["created"] is False
    held = call("POST", messages, json=reply(messageId="M-2", body=f"Gäller {PNR_2}."))
    assert held.status_code == 202 and held.json["code"] == "GW047"
    assert call("GET", f"{messages}/M-2").status_code == 200
    assert call("GET", f"{messages}/M-1/attachments/0").status_code == 200
    assert call("GET", f"{messages}/M-1/attachments/5").status_code == 404
    assert call("POST", f"{messages}/M-2/release").status_code == 200
    assert call("POST", f"{messages}/M-1/release").status_code == 409  # not held by the guard
    assert call("POST", f"{messages}/M-1/cancel").status_code == 200
    assert call("POST", f"/api/v1/cases/{CASE}/status", json={"status": "IN_PROGRESS"}).status_code == 202
    assert call("POST", f"/api/v1/cases/{CASE}/status", json={"status": "CLOSED"}).status_code == 422
    assert call("POST", "/api/v1/cases", json=external()).status_code == 201
    assert call("POST", "/api/v1/cases", json=external()).status_code == 200
    assert call("POST", "/api/v1/cases", json=external(text="Annat")).status_code == 409
    # refusals
    assert call("POST", messages, token=None, json=reply()).status_code == 401
    assert call("POST", messages, token=SOAP_TOKEN, json=reply()).status_code == 403
    assert call("GET", "/api/v1/cases/NOPE").status_code == 404
    assert call("POST", messages, data="{nope", headers={"Content-Type": "application/json"}).status_code == 400
    assert call("POST", messages, json=reply(subjet="Svar")).status_code == 400
    assert call("POST", messages, json=reply(body="x" * (rules.MAX_TEXT + 1))).status_code == 422

    assert problems == []
    operations = {op["operationId"] for path in document.document["paths"].values() for op in path.values()}
    assert {operation for operation, _ in document.seen} == operations  # every operation was called
    assert {status for _, status in document.seen} >= {200, 201, 202, 400, 401, 403, 404, 409, 422}


def test_get_case_returns_exactly_the_fields_of_case_view(app, client, make_case):
    intake(app, make_case)
    app.extensions["gateway.worker"].run_until_idle()
    assert client.post(f"/api/v1/cases/{CASE}/messages", json=reply(), headers=auth()).status_code == 202
    assert client.post(f"/api/v1/cases/{CASE}/status", json={"status": "IN_PROGRESS"}, headers=auth()).status_code == 202
    view = client.get(f"/api/v1/cases/{CASE}", headers=auth()).json
    schemas = client.get("/api/openapi.json").json["components"]["schemas"]

    def fields(model) -> set[str]:
        return {info.alias for info in model.model_fields.values()}

    # the ones the old hand-written document lacked are there: receiverHsaId, unitCode, receivedAt
    assert set(view) == fields(api.CaseView) == set(schemas["CaseView"]["properties"])
    assert set(schemas["CaseView"]["required"]) == set(view)
    for key, model in (("attachments", api.CaseAttachment), ("messages", api.CaseMessage),
                       ("statuses", api.CaseStatusChange), ("timeline", api.TimelineEvent)):
        assert view[key], key
        assert all(set(item) == fields(model) == set(schemas[model.__name__]["properties"]) for item in view[key]), key


def test_the_document_describes_every_route_of_the_api(app, client):
    document = client.get("/api/openapi.json").json
    assert document["openapi"] == "3.1.0"
    documented = {(path, method.upper()) for path, operations in document["paths"].items() for method in operations}
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = rule.rule.removeprefix("/api").replace("<", "{").replace(">", "}")
            routes |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}

    def shape(calls: set[tuple[str, str]]) -> set[tuple[str, str]]:  # Flask names the parameters its own way (case_id)
        return {(re.sub(r"\{[^}]+\}", "{}", path), method) for path, method in calls}

    assert shape(routes) == shape(documented)


@pytest.mark.parametrize("schema, keyword, value", [
    ("Reply.body", "maxLength", rules.MAX_TEXT),
    ("Reply.subject", "maxLength", rules.MAX_SUBJECT),
    ("Reply.senderName", "maxLength", rules.MAX_NAME),
    ("Reply.messageId", "maxLength", rules.MAX_ID),
    ("Reply.attachments", "maxItems", rules.MAX_CARE_ATTACHMENTS),
    ("Upload.fileName", "maxLength", rules.MAX_FILE_NAME),
    ("Upload.data", "maxLength", updates.encoded_length(rules.MAX_ATTACHMENT_BYTES)),
    ("ExternalCase.text", "maxLength", rules.MAX_TEXT),
    ("ExternalCase.externalCaseId", "maxLength", rules.MAX_ID),
    ("ExternalCase.attachments", "maxItems", 0),
    ("ComplaintDetails.eventLocationText", "maxLength", rules.MAX_LOCATION),
    ("Citizen.name", "maxLength", rules.MAX_NAME),
    ("Status.careUnitHsaId", "maxLength", rules.MAX_HSA_ID),
    ("CodeValue.code", "maxLength", rules.MAX_CODE),
])
def test_the_limits_in_the_document_are_the_rules_constants(client, schema, keyword, value):
    model, field = schema.split(".")
    prop = client.get("/api/openapi.json").json["components"]["schemas"][model]["properties"][field]
    found = [p[keyword] for p in (prop, *prop.get("anyOf", ())) if keyword in p]
    assert found == [value]


def test_a_field_the_document_does_not_name_is_refused_not_dropped(app, client, store, make_case):
    """A typo in an optional field would otherwise lose what it carried: the subject here."""
    intake(app, make_case)
    before = store.counts()
    typo = client.post(f"/api/v1/cases/{CASE}/messages", json=reply(subjet="Svar"), headers=auth())
    assert typo.status_code == 400 and typo.json["code"] == "GW033" and typo.json["field"] == "subjet", typo.json
    nested = client.post("/api/v1/cases", json=external(complaint={"eventDate": "2026-01-01", "place": "x"}),
                         headers=auth())
    assert nested.status_code == 400 and nested.json["field"] == "complaint.place", nested.json
    assert store.counts() == before


@pytest.mark.parametrize("body, status, code, field", [
    (reply(reopen="yes"), 400, "GW033", "reopen"),
    (reply(kind=5), 400, "GW033", "kind"),
    (reply(attachments=[pdf_file("a" * (rules.MAX_FILE_NAME + 1))]), 422, "GW029", "attachments[0].fileName"),
    (reply(attachments=[{**pdf_file(), "data": "JVBERi0=\n"}]), 400, "GW033", "attachments[0].data"),
    (reply(sentBy={"role": "RECEIVER", "name": 5}), 400, "GW033", "sentBy.name"),
], ids=["reopen text", "kind a number", "file name too long", "base64 with a line break", "sentBy.name a number"])
def test_a_body_is_checked_strictly_with_the_field_named(app, client, store, make_case, body, status, code, field):
    intake(app, make_case)
    before = store.counts()
    answer = client.post(f"/api/v1/cases/{CASE}/messages", json=body, headers=auth())
    assert (answer.status_code, answer.json["code"], answer.json["field"]) == (status, code, field), answer.json
    assert store.counts() == before


def test_a_polled_update_is_read_by_the_same_models(app, store, make_case):
    """Polling takes the API call's fields: a SOAP-shaped update (the other kind's fields
    empty, the file's bytes decoded) is taken, an unknown field refused as by the API."""
    intake(app, make_case)
    worker = app.extensions["gateway.worker"]
    soap_like = {"type": "message", "caseId": CASE, "providerCaseId": None, "messageId": "POLL-1", "kind": "INFO",
                 "subject": None, "body": "Hej från kliniken.", "senderUnit": "KLIN1", "status": None, "problems": [],
                 "businessArea": None, "careUnitHsaId": None,
                 "attachment": [{"fileName": "svar.pdf", "mimeType": "application/pdf", "data": PDF}]}
    worker.take_update("demo_rest", soap_like)
    taken = store.outgoing_message(CASE, "POLL-1")
    assert taken["content"]["text"] == "Hej från kliniken." and [a["file_name"] for a in taken["attachments"]] == ["svar.pdf"]
    with pytest.raises(BadJson) as refused:
        worker.take_update("demo_rest", {"type": "message", "caseId": CASE, "kind": "INFO", "body": "x",
                                         "senderUnit": "KLIN1", "subjet": "Svar"})
    assert refused.value.field == "subjet"
    with pytest.raises(BadJson):
        worker.take_update("demo_rest", {"type": "status", "caseId": CASE, "status": "CLOSED", "problems": "1.1"})


def test_the_check_of_the_answers_can_fail():
    """The checker the suite relies on refuses what the document does not say."""
    document = Document(api.openapi_document("test"))
    path, ok = "/api/v1/cases/X/messages/M/cancel", b'{"messageId": "M", "status": "cancelled"}'
    assert document.problems("POST", path, 200, "application/json", ok) == []
    assert document.problems("POST", path, 200, "application/json", b'{"messageId": "M", "status": "gone"}')
    assert document.problems("POST", path, 200, "application/json", b'{"messageId": "M", "status": "cancelled", "x": 1}')
    assert document.problems("POST", path, 201, "application/json", ok)
    assert document.problems("POST", path, 200, "text/html", b"<p>")
    assert document.problems("GET", "/api/v1/cases/X", 200, "application/json", b'{"caseId": "X"}')
    assert document.problems("PUT", path, 405, "application/json", b"{}") == []  # no such call: not the document's
