"""The REST demo system's push of the clinic's updates to the gateway's provider REST API.

Role: the ``deliver`` callable of the REST demo system's ``Clinic`` when it is given a
gateway URL. Each update becomes one call of the gateway's API (``api.py``):

    POST {gateway_url}/api/v1/cases/{caseId}/messages   {kind, subject, body, senderUnit,
                                                          messageId, attachments?}
    POST {gateway_url}/api/v1/cases/{caseId}/status     {status, problems?, businessArea?,
                                                          careUnitHsaId?}

with ``Authorization: Bearer {api_token}``. Connection errors, timeouts, 429 and 5xx are
retried a few times with a doubling pause (the gateway may still be starting); any other
answer is final. Failures are logged to stderr, one line each.

May import: requests, the standard library. Never imported by the product.

Invariants: never raises for a network or HTTP failure (the outcome says what happened);
gives up at once when ``cancelled()`` turns true (a reset or stop of the provider); a
retried message keeps its ``messageId``, so the gateway stores it once.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests

MESSAGE_FIELDS = ("messageId", "kind", "subject", "body", "senderUnit", "attachments")
STATUS_FIELDS = ("status", "problems", "businessArea", "careUnitHsaId")


class GatewayPusher:
    """Pushes updates to one gateway; used by one clinic thread at a time."""

    def __init__(self, gateway_url: str, api_token: str | None, *, attempts: int = 5,
                 first_pause_s: float = 0.5, timeout_s: float = 10.0, name: str = "demo_rest") -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.api_token = api_token
        self.attempts = max(1, attempts)
        self.first_pause_s = first_pause_s
        self.timeout_s = timeout_s
        self.name = name
        self.session = requests.Session()

    def request(self, update: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The URL and JSON body of the API call for ``update``; ``ValueError`` without a caseId."""
        case_id = update.get("caseId")
        if not case_id:
            raise ValueError("the update has no caseId (the case was delivered without its external id)")
        kind = "messages" if update.get("type") == "message" else "status"
        fields = MESSAGE_FIELDS if kind == "messages" else STATUS_FIELDS
        url = f"{self.gateway_url}/api/v1/cases/{quote(str(case_id), safe='')}/{kind}"
        return url, {key: update[key] for key in fields if key in update}

    def __call__(self, update: dict[str, Any], cancelled: Callable[[], bool]) -> dict[str, Any]:
        """Push one update; ``{"url", "status" (HTTP status or None), "attempts", "error"?}``."""
        try:
            url, body = self.request(update)
        except ValueError as exc:
            self._log(f"not pushed: {exc}")
            return {"url": None, "status": None, "attempts": 0, "error": str(exc)}
        headers = {"Accept": "application/json"}
        if self.api_token:
            headers["Authorization"] = f"Bearer {self.api_token}"
        status: int | None = None
        error: str | None = None
        attempt = 0
        for attempt in range(1, self.attempts + 1):
            try:
                response = self.session.post(url, json=body, headers=headers, timeout=(3.0, self.timeout_s))
            except requests.RequestException as exc:
                status, error = None, f"{type(exc).__name__}: {str(exc)[:200]}"
            else:
                status, error = response.status_code, None
                if status < 300:
                    return {"url": url, "status": status, "attempts": attempt}
                error = response.text[:300]
                if status != 429 and status < 500:
                    break  # the gateway refused it: retrying will not help
            if attempt == self.attempts or not self._pause(self.first_pause_s * 2 ** (attempt - 1), cancelled):
                break
        self._log(f"push of {update.get('type')} {update.get('kind') or update.get('status')} to {url} failed "
                  f"after {attempt} attempt(s): {status or 'no answer'} {error or ''}".rstrip())
        return {"url": url, "status": status, "attempts": attempt, "error": error}

    @staticmethod
    def _pause(seconds: float, cancelled: Callable[[], bool]) -> bool:
        """Sleep ``seconds`` unless cancelled first; True when the retry should go ahead."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if cancelled():
                return False
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return not cancelled()

    def _log(self, text: str) -> None:
        print(f"sandbox {self.name}: {text}", file=sys.stderr, flush=True)
