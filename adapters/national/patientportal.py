"""National profile ``patientportal-2.0``: the current 1177 inbox and case services (the default).

Role: the consumer side as the project's own contracts in ``contracts/`` model it:
``AddMessage`` 2.0 (``urn:riv-application:infrastructure:eservicesupply:patientportal``,
the message threaded in 1177's case by ``caseId``, with its ``kind`` and up to 10
attachments), ``UpdateCaseStatus`` 1.0 and ``RegisterCase`` 1.0 (domain
``supportprocess:logistics:complaintsandfeedback``). Every answer carries RIV-TA's
``ResultType`` in ``result``: ``resultCode``, ``errorCode`` (``ErrorCodeEnum``),
``subCode`` (1177's own code), ``logId`` (any string), ``message``.

May import: ``adapters.national.base``, ``rivta``, ``model``, ``errors``.

Invariants: see ``adapters.national.base``. Every message carries its sending unit's
HSA-id (the schema requires it, and so do we); ``notify`` is ``national.notify``;
``sourceSystem`` is the gateway's HSA-id.
"""

from __future__ import annotations

from typing import Any

import rivta
from adapters.national.base import (
    ADD_MESSAGE,
    REGISTER_CASE,
    UPDATE_STATUS,
    NationalProfile,
    Operation,
    Outcome,
    wire_time,
)
from errors import BadTargetAnswer
from model import Case, Message, StatusUpdate, to_wire


class PatientPortal20(NationalProfile):
    """``patientportal-2.0``: AddMessage 2.0, UpdateCaseStatus 1.0, RegisterCase 1.0."""

    name = "patientportal-2.0"
    operations = {
        ADD_MESSAGE: Operation.of(rivta.ADD_MESSAGE),
        UPDATE_STATUS: Operation.of(rivta.UPDATE_CASE_STATUS),
        REGISTER_CASE: Operation.of(rivta.REGISTER_CASE),
    }

    def add_message_body(self, *, subject_of_care_id: str, national_case_id: str, message: Message) -> dict[str, Any]:
        return {
            "subjectOfCareId": subject_of_care_id,
            "message": {
                "caseId": national_case_id,
                "messageId": message.message_id,
                "kind": message.kind,
                "senderHsaId": message.sender_hsa_id,
                "senderName": message.sender_name,
                "subject": message.subject or "",
                "body": message.text,
                "attachment": [{"fileName": a.file_name, "mimeType": a.mime_type, "data": a.data} for a in message.attachments],
            },
            "notify": self.settings.notify,
            "sourceSystem": self.source_system,
        }

    def update_status_body(self, *, national_case_id: str, update: StatusUpdate) -> dict[str, Any]:
        """UpdateCaseStatus: the status update as the model names it on the wire, in 1177's case."""
        return {"caseId": national_case_id, **to_wire(update, day=_wire_date, instant=wire_time, omit=frozenset({"case_id"}))}

    #: What RegisterCase does not carry of a case: 1177 gives the id; contact details, a
    #: representative, reply preferences, files and medications are not part of it.
    NOT_REGISTERED = frozenset({"case_id", "subject_of_care.contact", "representative", "reply_preference",
                                "attachments", "medications"})

    def register_case_body(self, *, case: Case, external_case_id: str, channel: str) -> dict[str, Any]:
        """RegisterCase: the case as the model names it on the wire (``model.to_wire``)."""
        return {"externalCaseId": external_case_id, "channel": channel,
                **to_wire(case, day=_wire_date, instant=wire_time, omit=self.NOT_REGISTERED)}

    def outcome(self, operation: Operation, data: Any) -> Outcome:
        """``result`` as RIV-TA domains use it: errorCode is the ErrorCodeEnum kind, subCode
        1177's own code, logId any string."""
        if isinstance(data, dict) and not isinstance(data.get("result"), dict) and "resultCode" in data:
            data = {"result": data}  # zeep unwraps a response whose only child is result
        result = data.get("result") if isinstance(data, dict) else None
        if not isinstance(result, dict) or "resultCode" not in result:
            raise BadTargetAnswer(f"1177's answer to {operation.name} has no result.")
        return Outcome(code=str(result.get("resultCode")), text=result.get("message") or "",
                       log_id=str(result.get("logId") or ""), error_code=result.get("errorCode"),
                       sub_code=result.get("subCode"))


def _wire_date(day: Any) -> str:
    """A date as 1177's DateType writes it (``YYYYMMDD``)."""
    return str(day.strftime("%Y%m%d"))
