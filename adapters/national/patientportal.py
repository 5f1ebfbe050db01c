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
from model import Case, Message, StatusUpdate


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
        def cv(code: Any) -> dict[str, Any]:
            return {"code": code.code, "codeSystem": code.code_system, "displayName": code.display_name}

        return {
            "caseId": national_case_id,
            "status": update.status.value,
            "careUnitHsaId": update.care_unit_hsa_id,
            "problem": [cv(p) for p in update.problems],
            "businessArea": cv(update.business_area) if update.business_area else None,
        }

    def register_case_body(self, *, case: Case, external_case_id: str, channel: str) -> dict[str, Any]:
        complaint = case.complaint
        return {
            "externalCaseId": external_case_id,
            "channel": channel,
            "receiver": {"hsaId": case.receiver.hsa_id, "isPatientBoard": case.receiver.is_patient_board},
            "subjectOfCare": {
                "personId": {"id": case.subject_of_care.person_id.id, "type": case.subject_of_care.person_id.type},
                "name": case.subject_of_care.name,
            },
            "caseType": case.case_type.value,
            "createdTime": wire_time(case.created_time),
            "subject": case.subject,
            "text": case.text,
            "complaint": (
                {
                    "eventDate": complaint.event_date.strftime("%Y%m%d") if complaint.event_date else None,
                    "isCareProcess": complaint.is_care_process,
                    "eventLocationText": complaint.event_location_text,
                    "careUnitHsaId": complaint.care_unit_hsa_id,
                }
                if complaint
                else None
            ),
        }

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
