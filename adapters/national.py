"""The national platform (1177 / NTjP) as the gateway calls it: AddMessage, UpdateCaseStatus,
RegisterCase, with zeep and the project's own contracts.

Role: turn a message to the citizen, a status change or a case registered outside 1177
into the contract's request, with the ``LogicalAddress`` header (``national.logical_addresses``
per contract, else ``national.logical_address``), the configured
``sourceSystem`` and the RIV-TA HTTP headers (original consumer HSA-id, correlation id),
on a ``requests.Session`` ready for client certificates; and read 1177's ``result``.

May import: ``adapters.base``, ``adapters.soap``, ``rivta``, ``model``, ``errors``.

Invariants: ``resultCode ERROR`` raises ``NationalRefused`` (permanent) with 1177's text,
its ``errorCode`` (RIV-TA's ``ErrorCodeEnum``) and ``subCode`` (1177's own code);
``INFO`` is success, its text returned in ``Answer.detail``; faults and transport errors
are classified like any SOAP target (``soap:Server``, 5xx, timeouts transient). Every
message carries its sending unit's HSA-id (the schema requires it, and so do we).
"""

from __future__ import annotations

import threading
from typing import Any

import requests
import zeep
import zeep.exceptions
import zeep.helpers

import rivta
from adapters.base import Answer, session_for
from adapters.soap import LocalOnlyTransport, _short, call_classified
from errors import BadTargetAnswer, ContractError, NationalRefused, TargetRefused
from model import WIRE_ZONE, Case, Message, StatusUpdate

NAME = "national"


def _ts(value: Any) -> str:
    return value.astimezone(WIRE_ZONE).strftime("%Y%m%d%H%M%S") if value.tzinfo else value.strftime("%Y%m%d%H%M%S")


class NationalAdapter:
    """Calls 1177's inbox and case services on the national platform."""

    def __init__(self, settings: Any, *, source_system: str):
        self.settings = settings
        self.source_system = source_system
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        for contract in (rivta.ADD_MESSAGE, rivta.UPDATE_CASE_STATUS, rivta.REGISTER_CASE):
            self._service(contract)  # a broken contract fails at start, not at the first call

    def _service(self, contract: rivta.Contract) -> Any:
        services = getattr(self._local, "services", None)
        if services is None:
            session = session_for(self.settings)
            with self._lock:
                self._sessions.append(session)
            self._local.transport = LocalOnlyTransport(
                session=session, timeout=self.settings.connect_timeout_s, operation_timeout=self.settings.timeout_s
            )
            services = self._local.services = {}
        if contract.name not in services:
            try:
                client = zeep.Client(
                    str(contract.wsdl_path),
                    transport=self._local.transport,
                    settings=zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True),
                )
                binding = next(iter(client.wsdl.bindings))
                services[contract.name] = (client, client.create_service(binding, self.settings.endpoint))
            except Exception as exc:  # zeep raises many kinds for a bad WSDL
                raise ContractError(f"the contract {contract.wsdl_relpath} cannot be used ({type(exc).__name__}).") from None
        return services[contract.name]

    def _call(self, contract: rivta.Contract, correlation_id: str | None, **body: Any) -> Answer:
        client, service = self._service(contract)
        headers = {"x-rivta-original-serviceconsumer-hsaid": self.source_system}
        if correlation_id:
            headers["x-skltp-correlation-id"] = correlation_id
        what = contract.name
        def call() -> Any:
            with client.settings(extra_http_headers=headers):
                return getattr(service, contract.name)(_soapheaders={"LogicalAddress": self.settings.address_for(contract.name)}, **body)

        result = call_classified(NAME, what, call, self._local.transport)
        data = zeep.helpers.serialize_object(result, target_cls=dict)
        if not isinstance(data, dict) or not isinstance(data.get("result"), dict):
            data = {"result": data} if isinstance(data, dict) and "resultCode" in data else data
        outcome = (data or {}).get("result") if isinstance(data, dict) else None
        if not isinstance(outcome, dict) or "resultCode" not in outcome:
            raise BadTargetAnswer(f"1177's answer to {what} has no result.")
        code, text = outcome.get("resultCode"), outcome.get("message") or ""
        log_id = outcome.get("logId") or ""
        # ResultType as RIV-TA domains use it: errorCode is the ErrorCodeEnum kind,
        # subCode 1177's own code; logId any string
        kind, sub = outcome.get("errorCode"), outcome.get("subCode")
        if code == "ERROR":
            error = "/".join(str(c) for c in (kind, sub) if c) or "?"
            raise NationalRefused(f"1177 answered {what} with ERROR {error}: {_short(text)} (logId {_short(str(log_id))}).")
        remark = f" {sub}" if sub else ""
        detail = f"1177 INFO{remark}: {_short(text)} (logId {_short(str(log_id))})" if code == "INFO" else None
        return Answer(200, data, detail)

    def add_message(self, *, subject_of_care_id: str, national_case_id: str, message: Message,
                    correlation_id: str | None = None) -> Answer:
        """Put a message in the citizen's 1177 inbox, threaded by 1177's case id."""
        if not message.sender_hsa_id:
            raise TargetRefused("a message to the citizen must name its sending unit's HSA-id.")
        return self._call(
            rivta.ADD_MESSAGE,
            correlation_id,
            subjectOfCareId=subject_of_care_id,
            message={
                "caseId": national_case_id,
                "messageId": message.message_id,
                "kind": message.kind,
                "senderHsaId": message.sender_hsa_id,
                "senderName": message.sender_name,
                "subject": message.subject or "",
                "body": message.text,
                "attachment": [{"fileName": a.file_name, "mimeType": a.mime_type, "data": a.data} for a in message.attachments],
            },
            notify=self.settings.notify,
            sourceSystem=self.source_system,
        )

    def update_status(self, *, national_case_id: str, update: StatusUpdate, correlation_id: str | None = None) -> Answer:
        """Tell 1177 the case's new status (with closing codes, or a patient board's unit correction)."""
        def cv(code: Any) -> dict[str, Any]:
            return {"code": code.code, "codeSystem": code.code_system, "displayName": code.display_name}

        return self._call(
            rivta.UPDATE_CASE_STATUS,
            correlation_id,
            caseId=national_case_id,
            status=update.status.value,
            careUnitHsaId=update.care_unit_hsa_id,
            problem=[cv(p) for p in update.problems],
            businessArea=cv(update.business_area) if update.business_area else None,
        )

    def register_case(self, *, case: Case, external_case_id: str, channel: str, correlation_id: str | None = None) -> Answer:
        """Register a case that started outside 1177; ``Answer.data['caseId']`` is 1177's id."""
        complaint = case.complaint
        answer = self._call(
            rivta.REGISTER_CASE,
            correlation_id,
            externalCaseId=external_case_id,
            channel=channel,
            receiver={"hsaId": case.receiver.hsa_id, "isPatientBoard": case.receiver.is_patient_board},
            subjectOfCare={
                "personId": {"id": case.subject_of_care.person_id.id, "type": case.subject_of_care.person_id.type},
                "name": case.subject_of_care.name,
            },
            caseType=case.case_type.value,
            createdTime=_ts(case.created_time),
            subject=case.subject,
            text=case.text,
            complaint=(
                {
                    "eventDate": complaint.event_date.strftime("%Y%m%d") if complaint.event_date else None,
                    "isCareProcess": complaint.is_care_process,
                    "eventLocationText": complaint.event_location_text,
                    "careUnitHsaId": complaint.care_unit_hsa_id,
                }
                if complaint
                else None
            ),
        )
        if not (answer.data or {}).get("caseId"):
            raise BadTargetAnswer("1177 accepted RegisterCase but returned no caseId.")
        return answer

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
