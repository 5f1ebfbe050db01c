"""What every national profile shares: the calls the worker makes, zeep over local contract
files, the RIV-TA HTTP headers, and how an answer becomes an ``Answer`` or an error.

Role: ``NationalProfile`` is the base of one profile (one version of 1177's contracts on the
consumer side, ``adapters/national/<profile>.py``). The worker calls ``add_message``,
``update_status`` and ``register_case``, the same for every profile; a profile says
which contracts it calls (``operations``) and what a message can carry (``kinds``,
``max_attachments``, ``threaded``), builds each request's body from the model
(``*_body``), reads each answer's result (``outcome``), and may add SOAP headers of its
own (``soap_headers``). ``Carries`` is that description as plain data: the provider API
refuses with it what the profile cannot carry, before anything is stored, and ``gateway
check`` refuses a config that turns on what it cannot carry (``problems``).

May import: ``adapters.base``, ``adapters.soap``, ``rivta``, ``model``, ``errors``.

Invariants: every call carries ``x-rivta-original-serviceconsumer-hsaid`` (the gateway's
own HSA-id, also the ``sourceSystem``) and the exchange's ``x-skltp-correlation-id``, on a
``requests.Session`` with the platform's TLS settings; WSDLs and XSDs are read from disk,
never fetched; a broken contract file fails when the profile is built, not at the first
call. What the profile cannot carry is refused with its code (GW083-GW085: a rule refusal
and a permanent delivery error), never sent in part or dropped. ``resultCode ERROR`` raises ``NationalRefused`` (permanent) with 1177's text and codes;
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
from adapters.soap import LocalOnlyTransport, short, call_classified
from errors import (
    ActionNotCarried,
    AttachmentsNotCarried,
    BadTargetAnswer,
    ContractError,
    KindNotCarried,
    NationalRefused,
    ProfileConfigError,
    TargetRefused,
)
from model import WIRE_ZONE, Case, Message, MessageKind, StatusUpdate

NAME = "national"

#: The outbox actions towards 1177 (``store.OUTBOUND_ACTIONS``), one call each.
ADD_MESSAGE = "add_message"
UPDATE_STATUS = "update_status"
REGISTER_CASE = "register_case"
ACTIONS = (ADD_MESSAGE, UPDATE_STATUS, REGISTER_CASE)
_WHAT = {ADD_MESSAGE: "a message to the citizen", UPDATE_STATUS: "a status change",
         REGISTER_CASE: "a case registered outside 1177"}
_FIELD = {UPDATE_STATUS: "status", REGISTER_CASE: None, ADD_MESSAGE: None}


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


@dataclass(frozen=True)
class Carries:
    """What one profile can carry to 1177, as plain data (the provider API holds one).

    ``actions``: the outbox actions it has a contract for (``calls``: those contracts'
    names); ``kinds``: the message kinds it carries; ``max_attachments``: the files a
    message may have (0: none); ``threaded``: whether a message is placed in 1177's case."""

    profile: str
    actions: frozenset[str]
    calls: tuple[str, ...]
    kinds: frozenset[str]
    max_attachments: int
    threaded: bool

    def refuse(self, action: str, item: Any = None) -> None:
        """Raise GW083-GW085 for what this profile cannot carry: an ``action`` it has
        no contract for, or (``add_message``, ``item`` a ``Message``) a message's files or kind."""
        if action not in self.actions:
            raise ActionNotCarried(
                f"national profile '{self.profile}' has no contract for {_WHAT.get(action, action)} "
                f"(it calls {', '.join(self.calls) or 'nothing'} only): 1177 cannot be told this.", field=_FIELD.get(action))
        if action != ADD_MESSAGE or item is None:
            return
        files = len(item.attachments)
        if files > self.max_attachments:
            limit = "no files" if self.max_attachments == 0 else f"at most {self.max_attachments} files"
            raise AttachmentsNotCarried(f"national profile '{self.profile}' carries {limit} on a message to the "
                                        f"citizen; this one has {files}.", field="attachments")
        if item.kind not in self.kinds:
            why = "" if self.threaded else (": it has no message kinds and no case thread, so the message would reach "
                                            "the citizen as a notice outside their case")
            raise KindNotCarried(f"national profile '{self.profile}' cannot carry a message of kind {item.kind} "
                                 f"(it carries {', '.join(sorted(self.kinds))} only){why}.", field="kind")


def _log_id(outcome: Outcome) -> str:
    return f" (logId {short(outcome.log_id)})" if outcome.log_id else ""


class NationalProfile:
    """Calls 1177's inbox and case services on the national platform, in one version of
    their contracts. Subclasses set ``name`` and ``operations`` and build the bodies."""

    #: The profile's name, the value of ``national.profile``.
    name: ClassVar[str]
    #: The contract each action calls (an action without one has no contract in this profile).
    operations: ClassVar[dict[str, Operation]]
    #: The message kinds a message to the citizen may have.
    kinds: ClassVar[frozenset[str]] = frozenset(k.value for k in MessageKind)
    #: The files a message to the citizen may carry (0: none).
    max_attachments: ClassVar[int] = 10
    #: Whether a message is placed in 1177's case (threaded by its caseId).
    threaded: ClassVar[bool] = True
    #: What an operator must know about this profile's contract (``gateway check`` shows each).
    notes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def carries(cls) -> Carries:
        """What this profile can carry, as plain data."""
        return Carries(cls.name, frozenset(cls.operations), tuple(op.name for op in cls.operations.values()),
                       frozenset(cls.kinds), cls.max_attachments, cls.threaded)

    @classmethod
    def problems(cls, cfg: Any) -> list[ProfileConfigError]:
        """What in the whole config ``cfg`` (``config.Config``) asks for what this profile
        cannot carry: each would make every such row dead, so ``gateway check`` and start-up
        refuse it."""
        found = []
        carries = cls.carries()
        receipts = cfg.outbound.confirmations
        if receipts.enabled and MessageKind.CONFIRMATION.value not in carries.kinds:
            found.append(ProfileConfigError(
                f"config key 'outbound.confirmations.enabled': the automatic receipts are messages of kind "
                f"CONFIRMATION, which national profile '{cls.name}' cannot carry (each would be refused, GW084); "
                "set it to false.", field="outbound.confirmations.enabled"))
        for contract in cfg.national.logical_addresses:
            if contract not in carries.calls:
                found.append(ProfileConfigError(
                    f"config key 'national.logical_addresses.{contract}': national profile '{cls.name}' has no "
                    f"{contract} contract (it calls {', '.join(carries.calls)} only); remove the key.",
                    field=f"national.logical_addresses.{contract}"))
        return found

    @classmethod
    def warnings(cls, cfg: Any) -> list[str]:
        """What works but will refuse some messages, and the profile's ``notes``."""
        found = []
        if cfg.outbound.max_attachments > cls.max_attachments:
            limit = "no files" if cls.max_attachments == 0 else f"at most {cls.max_attachments} files"
            found.append(f"outbound.max_attachments is {cfg.outbound.max_attachments}, but national profile "
                         f"'{cls.name}' carries {limit} on a message: a message with more is refused (GW083).")
        return found + [f"national profile '{cls.name}': {note}" for note in cls.notes]

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
        self.carries().refuse(ADD_MESSAGE, message)
        if not message.sender_hsa_id:
            raise TargetRefused("a message to the citizen must name its sending unit's HSA-id.")
        body = self.add_message_body(subject_of_care_id=subject_of_care_id, national_case_id=national_case_id,
                                     message=message)
        return self._call(ADD_MESSAGE, correlation_id, body)

    def update_status(self, *, national_case_id: str, update: StatusUpdate, correlation_id: str | None = None) -> Answer:
        """Tell 1177 the case's new status."""
        self.carries().refuse(UPDATE_STATUS, update)
        return self._call(UPDATE_STATUS, correlation_id, self.update_status_body(national_case_id=national_case_id, update=update))

    def register_case(self, *, case: Case, external_case_id: str, channel: str, correlation_id: str | None = None) -> Answer:
        """Register a case that started outside 1177; ``Answer.data['caseId']`` is 1177's id."""
        self.carries().refuse(REGISTER_CASE, case)
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
        return f"1177 INFO{remark}: {short(outcome.text)}{_log_id(outcome)}"

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
            codes = "/".join(str(c) for c in (outcome.error_code, outcome.sub_code) if c)
            said = short(outcome.text).rstrip(".") or "no text"
            raise NationalRefused(f"1177 answered {what} with ERROR{' ' + codes if codes else ''}: {said}{_log_id(outcome)}.")
        if outcome.code not in ("OK", "INFO"):
            raise BadTargetAnswer(f"1177's answer to {what} has resultCode '{short(str(outcome.code))}'.")
        return Answer(200, data if isinstance(data, dict) else None, self.detail(operation, outcome))
