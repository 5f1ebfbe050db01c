"""SOAP target adapter: zeep with the provider's WSDL read from a local file.

Role: call the operation configured for each action with the body the field map built
(keyword arguments of the operation), an optional WS-Security username token, the
idempotency key as an HTTP header or a body field, and the target's timeouts and TLS.

May import: ``adapters.base``, ``errors``.

Invariants: the WSDL and everything it imports are read from disk, never fetched; a
``soap:Client`` fault or a body that does not fit the WSDL is permanent, a
``soap:Server`` fault, an HTTP 5xx or a transport error is transient.
"""

from __future__ import annotations

import threading
from typing import Any

import requests
import zeep
import zeep.exceptions
import zeep.helpers
from zeep.transports import Transport
from zeep.wsse.username import UsernameToken

from adapters.base import Adapter, Answer, Request, classify_exception, classify_status, excerpt, excerpt_of, session_for
from errors import BadTargetAnswer, ContractError, TargetFailed, TargetRefused


def call_classified(name: str, what: str, call: Any, transport: LocalOnlyTransport | None = None) -> Any:
    """Run a zeep call and turn what can go wrong into a classified ``DeliveryError``:
    a Client fault or a body that does not fit the WSDL is permanent; a Server fault,
    HTTP 408/429/5xx and transport errors are transient; unreadable XML is a bad answer.
    With ``transport`` (the one the call goes through), the error carries an excerpt of
    what came back (``DeliveryError.response``)."""
    if transport is not None:
        transport.last_response = None

    def came_back() -> dict[str, Any] | None:
        return excerpt_of(transport.last_response) if transport is not None else None

    try:
        return call()
    except zeep.exceptions.Fault as fault:
        code = str(fault.code or "")
        if code.endswith(("Client", "Sender")):
            raise TargetRefused(f"target '{name}' refused {what}: SOAP Client fault '{short(fault.message)}'.",
                                response=came_back()) from None
        raise TargetFailed(f"target '{name}' failed {what}: SOAP Server fault '{short(fault.message)}'.",
                           response=came_back()) from None
    except zeep.exceptions.TransportError as exc:
        response = came_back() or excerpt(exc.status_code, {}, exc.content)
        raise classify_status(name, exc.status_code or 500, what, response=response) from None
    except requests.RequestException as exc:
        raise classify_exception(name, exc, what) from None
    except (zeep.exceptions.ValidationError, TypeError) as exc:
        raise TargetRefused(f"target '{name}': the request for {what} does not fit the WSDL ({short(str(exc))}).") from None
    except (zeep.exceptions.XMLSyntaxError, zeep.exceptions.XMLParseError):
        raise BadTargetAnswer(f"target '{name}' answered {what} with XML that cannot be read.", response=came_back()) from None


class LocalOnlyTransport(Transport):
    """A zeep transport that reads WSDL/XSD files from disk and refuses to fetch them, and
    keeps the last HTTP response it received (one transport per thread), so a refusal can
    say what came back."""

    last_response: requests.Response | None = None

    def post(self, address: str, message: Any, headers: Any) -> requests.Response:
        response = super().post(address, message, headers)
        self.last_response = response
        return response

    def load(self, url: str) -> bytes:
        if "://" in url and not url.startswith("file://"):
            raise ContractError(f"the WSDL imports {url}; copy it next to the WSDL and import it by relative path.")
        return super().load(url)


class SoapAdapter(Adapter):
    kind = "soap"

    def __init__(self, name: str, settings: Any):
        super().__init__(name, settings)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._service()  # load the WSDL now: a broken one fails at start, not at the first delivery

    def _service(self) -> Any:
        """This thread's zeep service (zeep's per-call HTTP headers live on shared settings)."""
        service = getattr(self._local, "service", None)
        if service is not None:
            return service
        settings = self.settings
        session = session_for(settings)
        with self._lock:
            self._sessions.append(session)
        transport = LocalOnlyTransport(
            session=session, timeout=settings.connect_timeout_s, operation_timeout=settings.timeout_s
        )
        wsse = UsernameToken(settings.wsse.username, settings.wsse.password.get_secret_value()) if settings.wsse else None
        zeep_settings = zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True)
        try:
            client = zeep.Client(str(settings.wsdl), transport=transport, wsse=wsse, settings=zeep_settings)
            if settings.binding or settings.endpoint:
                binding = settings.binding or next(iter(client.wsdl.bindings))
                service = client.create_service(binding, settings.endpoint or _address(client))
            else:
                service = client.service
        except ContractError:
            raise
        except Exception as exc:  # zeep raises many kinds for a bad WSDL
            raise ContractError(f"target '{self.name}': the WSDL {settings.wsdl.name} cannot be used ({type(exc).__name__}: {exc}).") from None
        self._local.client, self._local.service = client, service
        return service

    def _operation(self, service: Any, operation: str) -> Any:
        try:
            return getattr(service, operation)
        except AttributeError:
            raise TargetRefused(f"target '{self.name}': the WSDL has no operation '{operation}'.") from None

    def send(self, action: str, request: Request) -> Answer:
        operation = self.settings.operations.get(action)
        if operation is None:
            raise TargetRefused(f"target '{self.name}' has no operation for {action} (targets.{self.name}.operations).")
        service = self._service()
        client = self._local.client
        body = dict(request.body)
        idempotency = self.settings.idempotency
        if idempotency.field:
            body[idempotency.field] = request.idempotency_key
        headers = {idempotency.http_header: request.idempotency_key} if idempotency.http_header else {}
        what = f"{action} ({operation})"
        method = self._operation(service, operation)
        def call() -> Any:
            with client.settings(extra_http_headers=headers):
                return method(**body)

        transport = client.transport
        result = call_classified(self.name, what, call, transport)
        data = zeep.helpers.serialize_object(result, target_cls=dict)
        if data is not None and not isinstance(data, dict):
            # zeep hands back a response's only child unwrapped: wrap it in its name again,
            # so a field map reads e.g. 'caseNumber' whatever the response's shape
            data = {_only_output_element(service, operation) or "value": data}
        return Answer(200, data, response=excerpt_of(transport.last_response))

    def poll(self, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        poll = self.settings.poll
        if poll is None or not poll.operation:
            raise TargetRefused(f"target '{self.name}' has no poll.operation.")
        service = self._service()
        what = f"the poll ({poll.operation})"
        method = self._operation(service, poll.operation)
        result = call_classified(self.name, what, lambda: method(**({poll.cursor_param: cursor} if cursor else {})))
        data = zeep.helpers.serialize_object(result, target_cls=dict) or {}
        if not isinstance(data, dict):
            raise BadTargetAnswer(f"target '{self.name}' answered {what} without updates and cursor.")
        items = data.get("update") or data.get("updates") or []
        return [dict(i) for i in items], (str(data["cursor"]) if data.get("cursor") is not None else cursor)

    def medications(self, person_id: str, unit_code: str) -> list[dict[str, Any]]:
        settings = self.settings.medications
        if settings is None or not settings.operation:
            return super().medications(person_id, unit_code)
        service = self._service()
        client = self._local.client
        what = f"the medication list ({settings.operation})"
        method = self._operation(service, settings.operation)

        def call() -> Any:
            with client.transport.settings(timeout=settings.timeout_s):
                return method(personId=person_id, unitCode=unit_code)

        result = call_classified(self.name, what, call)
        data = zeep.helpers.serialize_object(result, target_cls=dict)
        if isinstance(data, list):
            return [dict(i) for i in data]
        if isinstance(data, dict):
            return [dict(i) for i in data.get("medication") or []]
        return []

    def problems(self) -> list[str]:
        found = []
        service = self._service()
        for action in ("deliver_case", "deliver_message"):
            operation = self.settings.operations.get(action)
            if operation is None:
                found.append(f"targets.{self.name}.operations has no operation for {action}.")
            elif operation not in service._binding._operations:
                known = ", ".join(sorted(service._binding._operations))
                found.append(f"targets.{self.name}.operations.{action}: the WSDL has no operation '{operation}' ({known}).")
        return found

    def preview(self, action: str, request: Request) -> str:
        from lxml import etree

        operation = self.settings.operations.get(action)
        if operation is None:
            raise TargetRefused(f"target '{self.name}' has no operation for {action} (targets.{self.name}.operations).")
        service = self._service()
        body = dict(request.body)
        idempotency = self.settings.idempotency
        if idempotency.field:
            body[idempotency.field] = request.idempotency_key
        try:
            envelope = self._local.client.create_message(service, operation, **body)
        except (zeep.exceptions.ValidationError, TypeError) as exc:
            raise TargetRefused(f"target '{self.name}': the body for {operation} does not fit the WSDL ({short(str(exc))}).") from None
        header = f"{idempotency.http_header}: {request.idempotency_key}\n" if idempotency.http_header else ""
        xml = etree.tostring(envelope, pretty_print=True, encoding="unicode")
        if self.settings.wsse is not None:
            xml = xml.replace(self.settings.wsse.password.get_secret_value(), "***")
        return f"POST {self.settings.endpoint or _address(self._local.client)} ({operation})\n{header}\n{xml}"

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()


def _address(client: zeep.Client) -> str:
    for service in client.wsdl.services.values():
        for port in service.ports.values():
            return port.binding_options["address"]
    raise ContractError("the WSDL names no service address; set 'endpoint' for the target.")


def _only_output_element(service: Any, operation: str) -> str | None:
    try:
        elements = service._binding._operations[operation].output.body.type.elements
    except (AttributeError, KeyError):
        return None
    return elements[0][0] if len(elements) == 1 else None


def short(text: str) -> str:
    """``text`` on one line, at most 200 characters (a fault's text in a message)."""
    return " ".join(str(text).split())[:200]
