"""The demo provider system with a JSON API (the demo config's target ``demo_rest``).

Role: a small, well-behaved stand-in for a care provider's own case system that takes
cases over REST. Tests run it in a thread, the demo as ``python -m sandbox.providers``.

    POST /api/cases                 JSON object        -> 201 {"id": "P-000001"}
    POST /api/cases/<id>/messages   JSON object        -> 201 {"id": "M-000001"}
    GET  /api/updates?since=N                          -> 200 {"updates": [...], "cursor": "N"}
    GET  /api/patients/<person_id>/medications[?unit=U] -> 200 {"medications": [...]}

Every delivery call needs an ``Idempotency-Key`` header (else 400). The same key again
answers 200 with the same id and stores nothing new (``Idempotent-Replayed: true``); the
key used for another kind of item or another case is 422. A message on an unknown case is
404. With ``token`` set, ``Authorization: Bearer <token>`` is required (else 401), on
``GET /api/updates`` too. Errors are JSON ``{"error": <code>, "message": <text>}``. Plus
the control routes of ``sandbox.state``.

With ``answer_delay_s`` > 0 the system's clinic (``sandbox.clinic``) answers each new
case. Its updates are always served by ``GET /api/updates`` (the gateway's REST poll:
updates numbered above ``since``, at most 100, items as in ``sandbox.answers``,
attachments ``[{fileName, mimeType, data}]`` with ``data`` base64; a ``since`` that is not
a number is 400). With ``gateway_url`` they are also pushed to the gateway's provider API
(``sandbox.push``), so a gateway should either take the pushes or poll, not both.
Polls are not delivery calls: they neither count in ``total_calls`` nor take an injected
failure or delay.

``GET /api/patients/<person_id>/medications`` lists the patient's prescriptions from
``sandbox.patients`` (dates relative to today): ``{"medications": [{"prescriptionId",
"name", "strength"?, "lastPrescribedDate": "YYYY-MM-DD"}]}``, an empty list for a person
the system does not know; any ``unit`` query parameter is ignored. It needs the bearer
token like the other API routes (no Idempotency-Key: it stores nothing), and unlike a
poll it counts in ``total_calls`` and takes the injected failures and delay, so tests
can make it slow or failing (``after_store``: the list is read, then the failure answered).

May import: flask, ``sandbox.state``, ``sandbox.clinic``, ``sandbox.push``,
``sandbox.patients``. Never imported by the product.

Invariants: the JSON body is stored as sent; nothing is stored for a refused call or a
failure injected before storing.
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
from collections.abc import Callable

from flask import Flask, Response, jsonify, request

import clock
from . import patients
from .clinic import Clinic
from .push import GatewayPusher
from .state import Call, Failure, KeyConflict, ProviderState, UnknownCase, add_control_routes

IDEMPOTENCY_HEADER = "Idempotency-Key"


def _error(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify(error=code, message=message), status


def _failure(failure: Failure) -> tuple[Response, int]:
    return _error(failure.status, "injected_failure", "failure injected by /_control")


def create_rest_provider(
    *,
    delay_s: float = 0.0,
    token: str | None = None,
    answer_delay_s: float = 0.0,
    question_every: int = 3,
    gateway_url: str | None = None,
    api_token: str | None = None,
    today: Callable[[], dt.date] | None = None,
    notices_only: bool = False,
) -> Flask:
    """The REST demo provider; its ``ProviderState`` is ``app.config["PROVIDER_STATE"]``.

    ``token``: the bearer token callers must send. ``answer_delay_s`` > 0 turns the clinic
    on (``question_every``: a counter-question for every Nth case, 0 never);
    ``gateway_url`` (e.g. ``http://127.0.0.1:8080``) and ``api_token`` (the gateway's
    ``targets.demo_rest.api.token``): push the clinic's updates to the gateway;
    ``notices_only``: the clinic answers with one INFO notice per case. ``today``:
    the date the medication lists are relative to (default: today's Swedish date, ``clock.SYSTEM.day``, as the gateway's rules count)."""
    app = Flask("sandbox.demo_rest")
    state = ProviderState(case_prefix="P", message_prefix="M", delay_s=delay_s)
    pusher = GatewayPusher(gateway_url, api_token, name="demo_rest") if gateway_url else None
    state.clinic = Clinic(answer_delay_s=answer_delay_s, question_every=question_every, deliver=pusher,
                          name="demo_rest", notices_only=notices_only)
    app.config["PROVIDER_STATE"] = state
    add_control_routes(app, state)

    def unauthorized() -> tuple[Response, int] | None:
        if token is None:
            return None
        sent = request.headers.get("Authorization", "")
        if hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return None
        response, status = _error(401, "unauthorized", "send Authorization: Bearer <token>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="demo_rest"'
        return response, status

    def begin() -> tuple[Call, tuple[Response, int] | None]:
        """The checks every delivery call passes, in order; (call, refusal or None)."""
        call = state.begin_call()
        if call.delay_s:
            time.sleep(call.delay_s)
        if call.failure and not call.failure.after_store:
            return call, _failure(call.failure)
        refusal = unauthorized()
        if refusal:
            return call, refusal
        if not request.headers.get(IDEMPOTENCY_HEADER, "").strip():
            return call, _error(400, "missing_idempotency_key", f"send an {IDEMPOTENCY_HEADER} header")
        if not request.is_json:
            return call, _error(415, "unsupported_media_type", "send Content-Type: application/json")
        if not isinstance(request.get_json(silent=True), dict):
            return call, _error(400, "invalid_json", "the body must be a JSON object")
        return call, None

    def answer(call: Call, item_id: str, created: bool) -> tuple[Response, int]:
        if call.failure:  # after_store: stored, but the caller never hears it
            return _failure(call.failure)
        response = jsonify(id=item_id)
        if not created:
            response.headers["Idempotent-Replayed"] = "true"
        return response, 201 if created else 200

    @app.post("/api/cases")
    def post_case():  # type: ignore[no-untyped-def]
        call, refusal = begin()
        if refusal:
            return refusal
        key = request.headers[IDEMPOTENCY_HEADER].strip()
        try:
            item, created = state.add_case(key, request.get_json())
        except KeyConflict:
            return _error(422, "idempotency_key_reused", "this Idempotency-Key was used for another request")
        return answer(call, item.id, created)

    @app.post("/api/cases/<case_id>/messages")
    def post_message(case_id: str):  # type: ignore[no-untyped-def]
        call, refusal = begin()
        if refusal:
            return refusal
        key = request.headers[IDEMPOTENCY_HEADER].strip()
        try:
            item, created = state.add_message(key, case_id, request.get_json())
        except UnknownCase:
            return _error(404, "unknown_case", f"no case {case_id}")
        except KeyConflict:
            return _error(422, "idempotency_key_reused", "this Idempotency-Key was used for another request")
        return answer(call, item.id, created)

    @app.get("/api/updates")
    def get_updates():  # type: ignore[no-untyped-def]
        refusal = unauthorized()
        if refusal:
            return refusal
        try:
            items, cursor = state.clinic.updates_since(request.args.get("since"))  # type: ignore[union-attr]
        except ValueError as exc:
            return _error(400, "invalid_cursor", str(exc))
        return jsonify(updates=items, cursor=cursor)

    @app.get("/api/patients/<person_id>/medications")
    def get_medications(person_id: str):  # type: ignore[no-untyped-def]
        call = state.begin_call()
        if call.delay_s:
            time.sleep(call.delay_s)
        if call.failure and not call.failure.after_store:
            return _failure(call.failure)
        refusal = unauthorized()
        if refusal:
            return refusal
        items = patients.medications_for(person_id, (today or clock.SYSTEM.day)())
        if call.failure:  # after_store: read, but the caller never hears it
            return _failure(call.failure)
        for item in items:
            item["lastPrescribedDate"] = item["lastPrescribedDate"].isoformat()
        return jsonify(medications=items), 200

    return app
