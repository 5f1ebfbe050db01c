"""REST target adapter: JSON over HTTP with requests.

Role: send the body the field map built to ``base_url`` + the action's path (which may
name ``{provider_case_id}``, ``{case_id}`` or ``{unit_code}``) with the action's method
(``methods``: POST unless it says PUT or PATCH), with the idempotency key header on every
call and the configured authentication: none, basic, bearer, OAuth2 client credentials
(token cached until shortly before it expires, fetched again once on a 401) or a client
certificate.

May import: ``adapters.base``, ``errors``.

Invariants: success is a 2xx only, and only one of ``success_statuses`` when the target
lists them (another 2xx is a ``BadTargetAnswer``); other statuses and transport errors
become ``DeliveryError``s classified by ``adapters.base``; tokens and passwords never
appear in an error.
"""

from __future__ import annotations

import threading
import time
from typing import Any
from urllib.parse import quote

import requests

from adapters.base import Adapter, Answer, Request, classify_exception, classify_status, excerpt_of, session_for
from errors import BadTargetAnswer, TargetRefused


class _OAuth2Token:
    """Client-credentials token, cached until 30 s before it expires."""

    def __init__(self, target: str, session: requests.Session, auth: Any, timeout: tuple[float, float]):
        self.target, self.session, self.auth, self.timeout = target, session, auth, timeout
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def get(self) -> str:
        with self._lock:
            if self._token and time.monotonic() < self._expires:
                return self._token
            data = {"grant_type": "client_credentials"}
            if self.auth.scope:
                data["scope"] = self.auth.scope
            try:
                response = self.session.post(
                    self.auth.token_url,
                    data=data,
                    auth=(self.auth.client_id, self.auth.client_secret.get_secret_value()),
                    timeout=self.timeout,
                )
            except requests.RequestException as exc:
                raise classify_exception(self.target, exc, "the OAuth2 token request") from None
            if response.status_code != 200:
                error = classify_status(self.target, response.status_code, "the OAuth2 token request")
                raise error
            try:
                body = response.json()
                self._token = str(body["access_token"])
                lifetime = float(body.get("expires_in", 300))
            except (ValueError, KeyError, TypeError):
                raise BadTargetAnswer(f"target '{self.target}': the token endpoint's answer has no access_token.") from None
            self._expires = time.monotonic() + max(0.0, lifetime - 30)
            return self._token

    def forget(self) -> None:
        with self._lock:
            self._token = None


class RestAdapter(Adapter):
    kind = "rest"

    def __init__(self, name: str, settings: Any):
        super().__init__(name, settings)
        self.session = session_for(settings)
        self.timeout = (settings.connect_timeout_s, settings.timeout_s)
        auth = settings.auth
        self._oauth = _OAuth2Token(name, self.session, auth, self.timeout) if auth.type == "oauth2" else None
        if auth.type == "basic":
            self.session.auth = (auth.username, auth.password.get_secret_value())

    def url(self, action: str, params: dict[str, str]) -> str:
        template = self.settings.paths.get(action)
        if template is None:
            raise TargetRefused(f"target '{self.name}' has no path for {action} (targets.{self.name}.paths).")
        try:
            path = template.format(**{k: quote(str(v), safe="") for k, v in params.items() if v is not None})
        except KeyError as exc:
            raise TargetRefused(f"target '{self.name}': path '{template}' needs {exc.args[0]}, which is not known yet.") from None
        return self.settings.base_url + path

    def _headers(self, request: Request) -> dict[str, str]:
        headers = {self.settings.idempotency_header: request.idempotency_key, "Accept": "application/json"}
        auth = self.settings.auth
        if auth.type == "bearer":
            headers["Authorization"] = f"Bearer {auth.token.get_secret_value()}"
        elif self._oauth is not None:
            headers["Authorization"] = f"Bearer {self._oauth.get()}"
        return headers

    def send(self, action: str, request: Request) -> Answer:
        url = self.url(action, request.params)
        method = self.settings.method(action)
        what = f"{action} ({method} {self.settings.paths[action]})"
        for round_ in (1, 2):
            try:
                response = self.session.request(method, url, json=request.body, headers=self._headers(request),
                                                timeout=self.timeout)
            except requests.RequestException as exc:
                raise classify_exception(self.name, exc, what) from None
            if response.status_code == 401 and self._oauth is not None and round_ == 1:
                self._oauth.forget()  # the token may have been revoked early: fetch a new one once
                continue
            break
        if not 200 <= response.status_code < 300:
            raise classify_status(self.name, response.status_code, what, response.headers.get("Retry-After"),
                                  response=excerpt_of(response))
        expected = self.settings.success_statuses
        if expected and response.status_code not in expected:
            raise BadTargetAnswer(
                f"target '{self.name}' answered {what} with HTTP {response.status_code}, which is not one of its "
                f"success_statuses ({', '.join(map(str, expected))}); the delivery is not counted as taken.",
                status_code=response.status_code, response=excerpt_of(response),
                hint=f"Ask the provider what HTTP {response.status_code} means, or add it to "
                     f"targets.{self.name}.success_statuses, then replay the dead row.",
            )
        data = None
        if response.content:
            try:
                parsed = response.json()
                data = parsed if isinstance(parsed, dict) else {"value": parsed}
            except ValueError:
                data = None
        return Answer(response.status_code, data, response=excerpt_of(response))

    def poll(self, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        poll = self.settings.poll
        if poll is None or not poll.path:
            raise TargetRefused(f"target '{self.name}' has no poll.path.")
        headers = {"Accept": "application/json"}
        auth = self.settings.auth
        if auth.type == "bearer":
            headers["Authorization"] = f"Bearer {auth.token.get_secret_value()}"
        elif self._oauth is not None:
            headers["Authorization"] = f"Bearer {self._oauth.get()}"
        params = {poll.cursor_param: cursor} if cursor else {}
        what = f"the poll (GET {poll.path})"
        try:
            response = self.session.get(self.settings.base_url + poll.path, params=params, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise classify_exception(self.name, exc, what) from None
        if response.status_code != 200:
            raise classify_status(self.name, response.status_code, what, response.headers.get("Retry-After"))
        try:
            data = response.json()
            items = data.get("updates") or []
            next_cursor = data.get("cursor")
        except (ValueError, AttributeError):
            raise BadTargetAnswer(f"target '{self.name}' answered {what} with something other than {{updates, cursor}}.") from None
        if not isinstance(items, list):
            raise BadTargetAnswer(f"target '{self.name}': 'updates' in the poll answer is not a list.")
        return items, (str(next_cursor) if next_cursor is not None else cursor)

    def _auth_headers(self) -> dict[str, str]:
        auth = self.settings.auth
        if auth.type == "bearer":
            return {"Authorization": f"Bearer {auth.token.get_secret_value()}"}
        if self._oauth is not None:
            return {"Authorization": f"Bearer {self._oauth.get()}"}
        return {}

    def medications(self, person_id: str, unit_code: str) -> list[dict[str, Any]]:
        settings = self.settings.medications
        if settings is None or not settings.path:
            return super().medications(person_id, unit_code)
        path = settings.path.format(person_id=quote(person_id, safe=""), unit_code=quote(unit_code, safe=""))
        what = f"the medication list (GET {settings.path})"
        try:
            response = self.session.get(self.settings.base_url + path, headers={"Accept": "application/json", **self._auth_headers()},
                                        timeout=(self.settings.connect_timeout_s, settings.timeout_s))
        except requests.RequestException as exc:
            raise classify_exception(self.name, exc, what) from None
        if response.status_code == 404:
            return []  # the provider's system does not know the patient: no medications
        if response.status_code != 200:
            raise classify_status(self.name, response.status_code, what)
        try:
            items = response.json().get("medications")
        except (ValueError, AttributeError):
            items = None
        if not isinstance(items, list):
            raise BadTargetAnswer(f"target '{self.name}' answered {what} without a 'medications' list.")
        return items

    def problems(self) -> list[str]:
        return [
            f"targets.{self.name}.paths has no path for {action}."
            for action in ("deliver_case", "deliver_message")
            if action not in self.settings.paths
        ]

    def preview(self, action: str, request: Request) -> str:
        import json

        headers = {self.settings.idempotency_header: request.idempotency_key, "Accept": "application/json",
                   "Content-Type": "application/json"}
        auth = self.settings.auth.type
        if auth in ("bearer", "oauth2"):
            headers["Authorization"] = "Bearer ***"
        elif auth == "basic":
            headers["Authorization"] = "Basic ***"
        lines = [f"{self.settings.method(action)} {self.url(action, request.params)}"] + [f"{k}: {v}" for k, v in headers.items()]
        return "\n".join(lines) + "\n\n" + json.dumps(request.body, ensure_ascii=False, indent=2)

    def close(self) -> None:
        self.session.close()


