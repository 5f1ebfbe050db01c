"""What every national profile shares: the calls the worker makes, zeep over local contract
files, the RIV-TA HTTP headers, and how an answer becomes an ``Answer`` or an error.

Role: ``NationalProfile`` is the base of one profile (one version of 1177's contracts on the
consumer side, ``adapters/national/<profile>.py``). The worker calls ``add_message``,
``update_status`` and ``register_case``, the same for every profile; a profile says
which contracts it calls (``operations``), builds each request's body from the model
(``*_body``), reads each answer's result (``outcome``), and may add SOAP headers of its
own (``soap_headers``).

May import: ``adapters.base``, ``adapters.soap``, ``rivta``, ``model``, ``errors``.

Invariants: every call carries ``x-rivta-original-serviceconsumer-hsaid`` (the gateway's
own HSA-id, also the ``sourceSystem``) and the exchange's ``x-skltp-correlation-id``, on a
``requests.Session`` with the platform's TLS settings; WSDLs and XSDs are read from disk,
never fetched; a broken contract file fails when the profile is built, not at the first
call. ``resultCode ERROR`` raises ``NationalRefused`` (permanent) with 1177's text and codes;
``INFO`` is success, its text in ``Answer.detail``; faults and transport errors are
classified like any SOAP target (``soap:Server``, 5xx, timeouts transient).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import requests
import zeep
import zeep.helpers

import rivta
from adapters.base import Answer, session_for
from adapters.soap import LocalOnlyTransport, _short, call_classified
from errors import BadTargetAnswer, ContractError, NationalRefused, TargetRefused
from model import WIRE_ZONE, Case, Message, StatusUpdate

NAME = "national"

#: The outbox actions towards 1177 (``store.OUTBOUND_ACTIONS``), one call each.
ADD_MESSAGE = "add_message"
UPDATE_STATUS = "update_status"
REGISTER_CASE = "register_case"
ACTIONS = (ADD_MESSAGE, UPDATE_STATUS, REGISTER_CASE)


def wire_time(value: Any) -> str:
    """An instant as 1177's timestamps are written: Swedish local time, ``YYYYMMDDhhmmss``."""
    return value.astimezone(WIRE_ZONE).strftime("%Y%m%d%H%M%S") if value.tzinfo else value.strftime("%Y%m%d%H%M%S")


@dataclass(frozen=True)
class Operation:
    """One contract a profile calls: the operation, its responder namespace and its local files."""

    name: str  # e.g. AddMessage
    responder_ns: str
    wsdl_path: Path
    xsd_path: Path

    @classmethod
    def of(cls, contract: rivta.Contract) -> Operation:
        """The operation of one of the project's own contracts in ``contracts/``."""
        return cls(contract.name, contract.responder_ns, contract.wsdl_path, contract.xsd_path)

    @property
    def relpath(self) -> str:
        """The WSDL's path under ``contracts/`` (for messages)."""
        try:
            return self.wsdl_path.relative_to(rivta.CONTRACTS_DIR).as_posix()
        except ValueError:
            return self.wsdl_path.name


@dataclass(frozen=True)
class Outcome:
    """An answer's result as a profile reads it."""

    code: str  # OK | INFO | ERROR
    text: str = ""
    log_id: str = ""
    error_code: str | None = None  # e.g. RIV-TA's ErrorCodeEnum value
    sub_code: str | None = None  # 1177's own code


class NationalProfile:
    """Calls 1177's inbox and case services on the national platform, in one version of
    their contracts. Subclasses set ``name`` and ``operations`` and build the bodies."""

    #: The profile's name, the value of ``national.profile``.
    name: ClassVar[str]
    #: The contract each action calls (an action without one has no contract in this profile).
    operations: ClassVar[dict[str, Operation]]

    def __init__(self, settings: Any, *, source_system: str):
        self.settings = settings
        self.source_system = source_system
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        for operation in self.operations.values():
            self._service(operation)  # a broken contract fails at start, not at the first call

    # -- what the worker calls ----------------------------------------------------------------

    def add_message(self, *, subject_of_care_id: str, national_case_id: str, message: Message,
                    correlation_id: str | None = None) -> Answer:
        """Put a message in the citizen's 1177 inbox."""
        if not message.sender_hsa_id:
            raise TargetRefused("a message to the citizen must name its sending unit's HSA-id.")
        body = self.add_message_body(subject_of_care_id=subject_of_care_id, national_case_id=national_case_id,
                                     message=message)
        return self._call(ADD_MESSAGE, correlation_id, body)

    def update_status(self, *, national_case_id: str, update: StatusUpdate, correlation_id: str | None = None) -> Answer:
        """Tell 1177 the case's new status."""
        return self._call(UPDATE_STATUS, correlation_id, self.update_status_body(national_case_id=national_case_id, update=update))

    def register_case(self, *, case: Case, external_case_id: str, channel: str, correlation_id: str | None = None) -> Answer:
        """Register a case that started outside 1177; ``Answer.data['caseId']`` is 1177's id."""
        body = self.register_case_body(case=case, external_case_id=external_case_id, channel=channel)
        answer = self._call(REGISTER_CASE, correlation_id, body)
        if not (answer.data or {}).get("caseId"):
            raise BadTargetAnswer("1177 accepted RegisterCase but returned no caseId.")
        return answer

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()

    # -- what a profile defines -----------------------------------------------------------------

    def add_message_body(self, *, subject_of_care_id: str, national_case_id: str, message: Message) -> dict[str, Any]:
        raise NotImplementedError

    def update_status_body(self, *, national_case_id: str, update: StatusUpdate) -> dict[str, Any]:
        raise NotImplementedError

    def register_case_body(self, *, case: Case, external_case_id: str, channel: str) -> dict[str, Any]:
        raise NotImplementedError

    def outcome(self, operation: Operation, data: Any) -> Outcome:
        """The result of an answer (``data``: zeep's answer as plain dicts)."""
        raise NotImplementedError

    def soap_headers(self, operation: Operation) -> Any:
        """zeep's ``_soapheaders`` of a call: the ``LogicalAddress`` its WSDL declares."""
        return {"LogicalAddress": self.settings.address_for(operation.name)}

    def detail(self, operation: Operation, outcome: Outcome) -> str | None:
        """What is kept on the attempt besides OK: 1177's INFO text."""
        if outcome.code != "INFO":
            return None
        remark = f" {outcome.sub_code}" if outcome.sub_code else ""
        return f"1177 INFO{remark}: {_short(outcome.text)} (logId {_short(outcome.log_id)})"

    # -- the plumbing ---------------------------------------------------------------------------

    def operation(self, action: str) -> Operation:
        found = self.operations.get(action)
        if found is None:
            raise TargetRefused(f"national profile {self.name} has no contract for {action}.")
        return found

    def request(self, action: str, body: dict[str, Any]) -> Any:
        """The request element (the Body's first child) a call of ``action`` with ``body``
        puts on the wire, built by zeep without sending it (for tests and previews)."""
        operation = self.operation(action)
        client, service = self._service(operation)
        envelope = client.create_message(service, operation.name, _soapheaders=self.soap_headers(operation), **body)
        return envelope.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")[0]

    def _service(self, operation: Operation) -> Any:
        services = getattr(self._local, "services", None)
        if services is None:
            session = session_for(self.settings)
            with self._lock:
                self._sessions.append(session)
            self._local.transport = LocalOnlyTransport(
                session=session, timeout=self.settings.connect_timeout_s, operation_timeout=self.settings.timeout_s
            )
            services = self._local.services = {}
        if operation.name not in services:
            try:
                client = zeep.Client(
                    str(operation.wsdl_path),
                    transport=self._local.transport,
                    settings=zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True),
                )
                binding = next(iter(client.wsdl.bindings))
                services[operation.name] = (client, client.create_service(binding, self.settings.endpoint))
            except Exception as exc:  # zeep raises many kinds for a bad WSDL
                raise ContractError(f"the contract {operation.relpath} cannot be used ({type(exc).__name__}).") from None
        return services[operation.name]

    def _call(self, action: str, correlation_id: str | None, body: dict[str, Any]) -> Answer:
        operation = self.operation(action)
        client, service = self._service(operation)
        headers = {"x-rivta-original-serviceconsumer-hsaid": self.source_system}
        if correlation_id:
            headers["x-skltp-correlation-id"] = correlation_id
        what = operation.name

        def call() -> Any:
            with client.settings(extra_http_headers=headers):
                return getattr(service, operation.name)(_soapheaders=self.soap_headers(operation), **body)

        result = call_classified(NAME, what, call, self._local.transport)
        data = zeep.helpers.serialize_object(result, target_cls=dict)
        outcome = self.outcome(operation, data)
        if outcome.code == "ERROR":
            error = "/".join(str(c) for c in (outcome.error_code, outcome.sub_code) if c) or "?"
            raise NationalRefused(f"1177 answered {what} with ERROR {error}: {_short(outcome.text)} "
                                  f"(logId {_short(outcome.log_id)}).")
        if outcome.code not in ("OK", "INFO"):
            raise BadTargetAnswer(f"1177's answer to {what} has resultCode '{_short(str(outcome.code))}'.")
        return Answer(200, data if isinstance(data, dict) else None, self.detail(operation, outcome))
