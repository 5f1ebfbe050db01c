"""National profile ``mvk-inbox-2.0``: the legacy "Mina vårdkontakter" inbox contract.

Role: ``AddMessage`` 2.0 of ``urn:mvk:crm:casemanagement:inbox`` (the official files,
byte for byte, in ``contracts/mvk-inbox-2.0/schemas/``, laid out as in the TKB). What its
schema can carry, and so all this profile sends:

    AddMessage {subjectOfCareId, message: MessageCaseType, notify, sourceSystem}
      message/id                    the gateway's message id (a retried call names the same item)
      message/actionDate, actionTime  when the care side wrote it (Swedish local time)
      message/healthCareFacility    {hsaId, healthCareFacilityName}: the sending unit
      message/businessObjectId      1177's case id, as a reference (the inbox does not thread on it)
      message/headerText, msg       the subject and the text

and its answer is ``AddMessageResponse`` {message?, resultCode OK|INFO|ERROR, resultText?}
(no ``result`` element, no errorCode, no logId).

What it cannot carry, refused with a code and never dropped: attachments (the message
type has no attachment element: GW083), message kinds and the case thread (there is no
kind and no caseId: only INFO notices are sent, GW084 for any other kind), status changes
and cases registered outside 1177 (no UpdateCaseStatus, no RegisterCase: GW085); the
automatic receipts (kind CONFIRMATION) are refused at ``gateway check`` (GW086).

May import: ``adapters.national.base``, ``adapters.soap``, ``rivta``, ``model``, ``errors``.

Invariants: see ``adapters.national.base``. The WSDL declares no ``LogicalAddress`` header
(the MVK contract was not routed through the platform's TAK); the gateway sends one all
the same (``national.logical_address``), as every call through NTjP must carry it; it is
not ``mustUnderstand``, so a peer that does not route ignores it.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

import rivta
from adapters.national.base import ADD_MESSAGE, NationalProfile, Operation, Outcome
from adapters.soap import short
from errors import BadTargetAnswer
from model import WIRE_ZONE, Message

#: The official files, as unpacked from the contract's TKB.
SCHEMAS = rivta.CONTRACTS_DIR / "mvk-inbox-2.0" / "schemas"
RESPONDER_NS = "urn:mvk:crm:casemanagement:inbox:AddMessageResponder:2"
CORE_NS = "urn:mvk:crm:casemanagement:inbox:2"
ADD = Operation(
    "AddMessage", RESPONDER_NS,
    SCHEMAS / "interactions" / "AddMessage" / "AddMessageInteraction_2.0_RIVTABP21.wsdl",
    SCHEMAS / "interactions" / "AddMessage" / "AddMessageResponder_2.0.xsd",
)

#: The official schema's pattern of ``subjectOfCareId`` (SubjectOfCareIdType), as written.
OFFICIAL_PERSON_ID_PATTERN = "^[0-9]{8}[0-9pPtTfF][0-9]{3}$"


class MvkInbox20(NationalProfile):
    """``mvk-inbox-2.0``: AddMessage 2.0 of the legacy MVK inbox; INFO notices without files."""

    name = "mvk-inbox-2.0"
    operations = {ADD_MESSAGE: ADD}
    kinds = frozenset({"INFO"})
    max_attachments = 0
    threaded = False
    notes = (
        f"the official schema writes the subjectOfCareId pattern as '{OFFICIAL_PERSON_ID_PATTERN}'; an XSD "
        "pattern is anchored already and reads '^' and '$' as characters, so a peer that validates with the "
        "file unchanged refuses every valid personnummer (a SOAP Client fault, GW062: the row is dead). The "
        "gateway sends the 12 digits; ask the peer to validate with the pattern corrected, as the sandbox's "
        "simulator does.",
        "a message is a notice outside the citizen's case (the legacy inbox has no case thread); 1177's case "
        "id goes in businessObjectId as a reference.",
    )

    def soap_headers(self, operation: Operation) -> Any:
        header = etree.Element(f"{{{rivta.REGISTRY_NS}}}LogicalAddress", nsmap={"lr": rivta.REGISTRY_NS})
        header.text = self.settings.address_for(operation.name)
        return [header]  # the WSDL declares no header part: zeep takes the element as it is

    def add_message_body(self, *, subject_of_care_id: str, national_case_id: str, message: Message) -> dict[str, Any]:
        written = message.created_time.astimezone(WIRE_ZONE)
        return {
            "subjectOfCareId": subject_of_care_id,
            "message": {
                "id": message.message_id,
                "actionDate": written.date(),
                "actionTime": written.time().replace(microsecond=0),
                "healthCareFacility": {"hsaId": message.sender_hsa_id, "healthCareFacilityName": message.sender_name},
                "businessObjectId": national_case_id,
                "headerText": message.subject or "",
                "msg": message.text,
            },
            "notify": self.settings.notify,
            "sourceSystem": self.source_system,
        }

    def outcome(self, operation: Operation, data: Any) -> Outcome:
        """``resultCode`` and ``resultText`` directly in the response element."""
        if not isinstance(data, dict) or not data.get("resultCode"):
            raise BadTargetAnswer(f"the answer to {operation.name} ({self.name}) has no resultCode.")
        return Outcome(code=str(data["resultCode"]), text=data.get("resultText") or "")

    def detail(self, operation: Operation, outcome: Outcome) -> str | None:
        said = f"1177 INFO: {short(outcome.text)}; " if outcome.code == "INFO" else ""
        return f"{said}sent as a notice outside the case's thread ({self.name} has none)"
