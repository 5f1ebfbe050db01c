"""The base contract every target adapter implements.

Role: ``Adapter`` (deliver a case, deliver a message), what goes in (``Request``) and
what comes back (``Answer``), and the shared helpers for TLS and error classification.

May import: ``errors``, ``config``.

Invariants: see the package docstring: success returns an ``Answer``, failure raises a
``DeliveryError`` with ``permanent`` set; no payload or secret in any message.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
import requests.utils

from errors import BadTargetAnswer, DeliveryError, TargetFailed, TargetRefused, TargetUnavailable, redact_person_ids

DELIVER_CASE = "deliver_case"
DELIVER_MESSAGE = "deliver_message"


@dataclass(frozen=True)
class Request:
    """One delivery: the body built by the field map and what identifies it downstream."""

    body: dict[str, Any] = field(repr=False)
    idempotency_key: str
    params: dict[str, str] = field(default_factory=dict)  # e.g. provider_case_id for URL paths


@dataclass(frozen=True)
class Answer:
    """A successful call: the status code (HTTP) and the answer's data, if any."""

    status_code: int | None
    data: dict[str, Any] | None = field(default=None, repr=False)
    detail: str | None = None  # what the target said besides OK (e.g. 1177's INFO text)
    response: dict[str, Any] | None = field(default=None, repr=False)  # ``excerpt`` of what came back


class Adapter(abc.ABC):
    """A target system the worker delivers to."""

    kind: ClassVar[str]

    def __init__(self, name: str, settings: Any):
        self.name = name
        self.settings = settings

    def deliver_case(self, request: Request) -> Answer:
        """Hand a new case to the target."""
        return self.send(DELIVER_CASE, request)

    def deliver_message(self, request: Request) -> Answer:
        """Hand a citizen's follow-up message for a case the target already has."""
        return self.send(DELIVER_MESSAGE, request)

    @abc.abstractmethod
    def send(self, action: str, request: Request) -> Answer:
        """Perform ``action``; return an ``Answer`` or raise ``DeliveryError``."""

    def poll(self, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """Updates since ``cursor`` (messages, status changes) and the cursor to ask with next.

        Each update is ``{"type": "message"|"status", "caseId" or "providerCaseId", …}``
        with the fields of the matching REST API call."""
        raise TargetRefused(f"target '{self.name}' ({self.kind}) cannot be polled.")

    def medications(self, person_id: str, unit_code: str) -> list[dict[str, Any]]:
        """The patient's medications as the target lists them: ``[{prescriptionId, name,
        strength?, lastPrescribedDate}]``, within ``medications.timeout_s``."""
        raise TargetRefused(f"target '{self.name}' ({self.kind}) lists no medications (targets.{self.name}.medications).")

    def problems(self) -> list[str]:
        """What is wrong with the target's configuration, found without calling it."""
        return []

    @abc.abstractmethod
    def preview(self, action: str, request: Request) -> str:
        """Exactly what ``send`` would put on the wire, as text, without sending it."""

    def close(self) -> None:
        """Release connections."""


#: The largest answer a target may give (a medication list, a delivery's receipt, a poll):
#: beyond it the answer is refused, read no further, so a huge answer never bloats the worker.
MAX_ANSWER_BYTES = 10 * 1024 * 1024


class AnswerTooLarge(requests.RequestException):
    """A target's answer is over ``TargetSession.max_answer_bytes`` (a ``BadTargetAnswer``)."""


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """No authentication (what ``~/.netrc`` gave for a host that it does not list)."""
    return request


class TargetSession(requests.Session):
    """A session whose configured CA bundle wins over ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``
    in the environment (plain requests lets the environment override ``session.verify``), and
    whose answers are read with a size cap (``max_answer_bytes``).

    What the environment says of a host (its proxies and ``NO_PROXY``, the CA bundle of
    ``REQUESTS_CA_BUNDLE``, its ``~/.netrc`` entry) is read at the session's first call to
    it and kept: plain requests reads it again on every call (the whole of ``os.environ``
    twice, and the netrc files), which was a quarter of the worker's CPU per delivery."""

    max_answer_bytes = MAX_ANSWER_BYTES

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[str, str, str | None], tuple[dict[str, str], str | None]] = {}
        self._netrc: dict[tuple[str, str], Any] = {}

    def environment_of(self, url: str, no_proxy: str | None = None) -> tuple[dict[str, str], str | None]:
        """(the proxies, the CA bundle) the environment gives ``url``'s host, read once per host."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, no_proxy)
        found = self._environment.get(key)
        if found is None:
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None
            found = self._environment[key] = (requests.utils.get_environ_proxies(url, no_proxy=no_proxy), bundle)
        return found

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        if self.trust_env and not request.auth and not self.auth:
            parts = urlsplit(request.url)
            key = (parts.scheme, parts.netloc)
            auth = self._netrc.get(key)
            if auth is None:
                auth = self._netrc[key] = requests.utils.get_netrc_auth(request.url) or _no_auth
            request.auth = auth
        return super().prepare_request(request)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        streamed = kwargs.get("stream", False)
        kwargs["stream"] = True
        response = super().send(request, **kwargs)
        if streamed:
            return response
        limit = self.max_answer_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            response.close()
            raise AnswerTooLarge(f"the answer declares {declared} bytes; at most {limit} are read.", response=response)
        chunks, size = [], 0
        for chunk in response.iter_content(64 * 1024):
            size += len(chunk)
            if size > limit:
                response.close()
                raise AnswerTooLarge(f"the answer is over {limit} bytes; it was not read further.", response=response)
            chunks.append(chunk)
        response._content = b"".join(chunks)  # what reading it whole would have given
        setattr(response, "_content_consumed", True)  # noqa: B010 - requests' own flag, not in its stubs
        return response

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any) -> Any:
        # requests.Session.merge_environment_settings, with the environment read once per host
        given = verify
        if self.trust_env:
            env_proxies, bundle = self.environment_of(url, proxies.get("no_proxy") if proxies is not None else None)
            if proxies is not None:
                for key, value in env_proxies.items():
                    proxies.setdefault(key, value)
            if verify is True or verify is None:
                verify = bundle or verify
        # merge_setting, without its isinstance checks against typing Protocols (slow on 3.11)
        merged = dict(self.proxies or {})
        merged.update(proxies or {})
        settings = {"proxies": {k: v for k, v in merged.items() if v is not None},
                    "stream": self.stream if stream is None else stream,
                    "verify": self.verify if verify is None else verify,
                    "cert": self.cert if cert is None else cert}
        if given is None and self.verify is not True:
            settings["verify"] = self.verify
        return settings


def session_for(settings: Any) -> requests.Session:
    """A ``requests.Session`` with the target's TLS settings (verification is never off)."""
    session = TargetSession()
    session.max_answer_bytes = int(getattr(settings, "max_answer_bytes", MAX_ANSWER_BYTES))
    tls = settings.tls
    if tls.ca_bundle:
        session.verify = str(tls.ca_bundle)
    if not tls.verify:  # only with tls.insecure: true (config refuses it otherwise)
        session.verify = False
    if tls.client_cert:
        session.cert = (str(tls.client_cert), str(tls.client_key)) if tls.client_key else str(tls.client_cert)
    return session


#: The response headers kept with a refused answer (lower case): what says what came back
#: and what lets the provider find the call in its own logs.
KEPT_HEADERS = ("content-type", "content-length", "retry-after", "date", "server", "x-request-id", "request-id",
                "x-correlation-id", "x-skltp-correlation-id", "traceparent", "www-authenticate")
#: How much of a refused answer's body is kept.
EXCERPT_BYTES = 4096


def excerpt(status: int | None, headers: Any, content: bytes | str | None) -> dict[str, Any]:
    """What came back, small enough to keep on an attempt: the HTTP status, the headers of
    ``KEPT_HEADERS`` and the first ``EXCERPT_BYTES`` of the body as text, person ids masked
    everywhere. Readers see it (it may quote the case), monitors never."""
    kept: dict[str, str] = {}
    for name, value in dict(headers or {}).items():
        if str(name).lower() in KEPT_HEADERS:
            kept[str(name)] = redact_person_ids(str(value)[:200])
    raw = content.encode("utf-8", "replace") if isinstance(content, str) else (content or b"")
    body = raw[:EXCERPT_BYTES].decode("utf-8", "replace")
    if len(raw) > EXCERPT_BYTES and body.endswith("\ufffd"):
        body = body[:-1]  # a character cut in two at the limit
    return {"status": status, "headers": kept, "body": redact_person_ids(body), "truncated": len(raw) > EXCERPT_BYTES}


def excerpt_of(response: requests.Response | None) -> dict[str, Any] | None:
    """``excerpt`` of a requests response (None when there is none)."""
    if response is None:
        return None
    return excerpt(response.status_code, response.headers, response.content)


def classify_status(target: str, status: int, what: str, retry_after: str | None = None,
                    response: dict[str, Any] | None = None) -> DeliveryError:
    """The error for a non-2xx HTTP status: 408/429/5xx transient, other 4xx permanent;
    ``response`` (an ``excerpt``) goes with it."""
    if status in (408, 429) or status >= 500:
        seconds = None
        if retry_after and retry_after.strip().isdigit():
            seconds = float(retry_after.strip())
        return TargetFailed(f"target '{target}' answered HTTP {status} to {what}.", status_code=status,
                            retry_after_s=seconds, response=response)
    return TargetRefused(f"target '{target}' refused {what} with HTTP {status}.", status_code=status, response=response)


def classify_exception(target: str, exc: requests.RequestException, what: str) -> DeliveryError:
    """The error for a transport failure (transient, but for an answer too large to read)."""
    if isinstance(exc, AnswerTooLarge):
        return BadTargetAnswer(f"target '{target}' answered {what} with more than it may: {exc}")
    if isinstance(exc, requests.Timeout):
        return TargetUnavailable(f"target '{target}' did not answer {what} in time.")
    if isinstance(exc, requests.exceptions.SSLError):
        return TargetUnavailable(f"TLS with target '{target}' failed for {what}.")
    return TargetUnavailable(f"target '{target}' could not be reached for {what} ({type(exc).__name__}).")
