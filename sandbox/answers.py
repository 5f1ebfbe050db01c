"""What the demo clinic says back about a case: the update items, their Swedish texts, a PDF.

Role: pure functions that turn a case a demo provider system received into the updates a
clinic produces (status IN_PROGRESS, a counter-question, the final reply, status CLOSED;
or, for the legacy inbox, one INFO notice),
in the shape the gateway takes from a provider (``updates.py``: the REST API bodies and
the polled items). Used by ``sandbox.clinic``; no threads, no I/O.

Update items (JSON-style dicts; absent values are left out, never None):

    {"type": "status",  "caseId", "providerCaseId", "status", "problems"?, "businessArea"?}
    {"type": "message", "caseId", "providerCaseId", "messageId", "kind", "subject", "body",
                        "senderUnit", "attachments"?: [{"fileName", "mimeType", "data"}]}

``caseId`` is the gateway's (1177's) case id from the delivered body (``externalId`` on
REST, ``externalCaseId`` on SOAP), ``providerCaseId`` the id the demo system gave the case
(P-000001 / S-000001), ``senderUnit`` the unit code the case was delivered to (``unit`` /
``unitCode``), ``data`` base64 text. ``messageId`` is a fresh UUID per message, so a push
retried after a lost answer is recognised by the gateway as the same message.

A prescription renewal's final reply names the medications renewed when the delivered
body lists them (REST ``medications: [{prescriptionId, name}]``, SOAP ``medication``
elements), e.g. "Vi har förnyat: Alvedon 500 mg tablett." (the name sent, completed with
the strength from the patient's record in ``sandbox.patients``).

May import: the standard library, ``sandbox.patients``. Never imported by the product.

Invariants: every message has a non-empty body and subject; a closed complaint carries a
problem code and a business-area code (1177 refuses to close a complaint without them);
the complaint's final reply carries ``beslut.pdf``, a valid one-page PDF.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import clock
from . import patients

# The provider systems' case-type codes (mappings/codes.yaml) -> 1177's case type.
CASE_TYPES = {
    "SYNPUNKT": "COMPLAINT", "10": "COMPLAINT",
    "FRAGA": "QUESTION", "20": "QUESTION",
    "RECEPTFORNYELSE": "PRESCRIPTION_RENEWAL", "30": "PRESCRIPTION_RENEWAL",
    "TIDBOKNING": "BOOKING", "40": "BOOKING",
    "OVRIGT": "OTHER", "90": "OTHER",
}

QUESTION = ("Fråga om ditt ärende", "Vi behöver veta mer: när började besvären?")

FINAL_REPLIES = {
    "COMPLAINT": (
        "Svar på dina synpunkter",
        "Tack för att du hörde av dig med dina synpunkter. Vi har gått igenom det som hände och "
        "pratat med berörd personal. Vårt svar och beslut finns i den bifogade filen. Vi beklagar "
        "att det inte blev som du förväntade dig.",
    ),
    "QUESTION": (
        "Svar på din fråga",
        "Tack för din fråga. Utifrån det du beskriver rekommenderar vi att du bokar en tid hos "
        "din läkare om besvären inte har gått över inom en vecka. Hör av dig igen om du blir sämre.",
    ),
    "PRESCRIPTION_RENEWAL": (
        "Ditt recept är förnyat",
        "Ditt recept är förnyat och finns nu att hämta ut på apoteket. Det gäller i ett år.",
    ),
    "BOOKING": (
        "Din tid är bokad",
        "Du har fått en tid på mottagningen tisdag klockan 10.15. Välkommen! "
        "Om du inte kan komma, avboka senast 24 timmar innan.",
    ),
    "OTHER": (
        "Svar på ditt ärende",
        "Tack för ditt meddelande. Vi har tagit del av det och ärendet är nu avslutat.",
    ),
}

# Closing codes of a complaint: huvud- och delproblem (OID 1.2.752.129.5.1.22) and
# verksamhetsområde (OID 1.2.752.129.5.1.21).
COMPLAINT_PROBLEMS = ["2.3"]
COMPLAINT_BUSINESS_AREA = "10"


@dataclass(frozen=True)
class Facts:
    """What the clinic needs to know about one received case."""

    provider_case_id: str  # P-000001 / S-000001
    case_id: str | None  # the gateway's case id (externalId / externalCaseId)
    case_type: str  # 1177's: COMPLAINT, QUESTION, PRESCRIPTION_RENEWAL, BOOKING, OTHER
    unit: str | None  # the provider's unit code the case was delivered to
    medications: tuple[str, ...] = ()  # a prescription renewal: the medications asked for, named


def facts(provider_case_id: str, body: dict[str, Any], *, today: dt.date | None = None) -> Facts:
    """The facts of a case body as the REST or the SOAP demo system stored it."""
    code = str(body.get("type") or body.get("caseType") or "").strip().upper()
    case_id = body.get("externalId") or body.get("externalCaseId")
    unit = body.get("unit") or body.get("unitCode")
    return Facts(provider_case_id, str(case_id) if case_id else None, CASE_TYPES.get(code, "OTHER"),
                 str(unit) if unit else None, _medications(body, today or clock.SYSTEM.day()))


def _medications(body: dict[str, Any], today: dt.date) -> tuple[str, ...]:
    """The names of the medications a case body lists (REST ``medications``, SOAP ``medication``)."""
    listed = body.get("medications")
    if listed is None:
        listed = body.get("medication")
    if isinstance(listed, dict):  # one item not in a list
        listed = [listed]
    if not isinstance(listed, list):
        return ()
    patient = body.get("patient") if isinstance(body.get("patient"), dict) else {}
    person_id = patient.get("personnummer") or patient.get("personId")
    names: list[str] = []
    for item in listed:
        if isinstance(item, dict):
            prescription_id, name = item.get("prescriptionId"), item.get("name")
        else:
            prescription_id, name = None, item
        text = patients.label(str(prescription_id) if prescription_id else None, str(name) if name else None,
                              str(person_id) if person_id else None, today)
        if text and text not in names:
            names.append(text)
    return tuple(names)


def _enumerate(names: tuple[str, ...]) -> str:
    """"A", "A och B", "A, B och C"."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " och " + names[-1]


def _base(case: Facts, kind: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind}
    if case.case_id:
        out["caseId"] = case.case_id
    out["providerCaseId"] = case.provider_case_id
    return out


def status(case: Facts, value: str) -> dict[str, Any]:
    """A status change; CLOSED on a complaint carries its closing codes."""
    out = _base(case, "status")
    out["status"] = value
    if value == "CLOSED" and case.case_type == "COMPLAINT":
        out["problems"] = list(COMPLAINT_PROBLEMS)
        out["businessArea"] = COMPLAINT_BUSINESS_AREA
    return out


def _message(case: Facts, kind: str, subject: str, body: str) -> dict[str, Any]:
    out = _base(case, "message")
    out.update(messageId=str(uuid.uuid4()), kind=kind, subject=subject, body=body)
    if case.unit:
        out["senderUnit"] = case.unit
    return out


def question(case: Facts) -> dict[str, Any]:
    """The counter-question (motfråga)."""
    return _message(case, "QUESTION", *QUESTION)


def final_reply(case: Facts) -> dict[str, Any]:
    """The final answer, fitting the case type; a complaint's carries ``beslut.pdf``; a
    prescription renewal's names the medications renewed, when the case listed them."""
    subject, body = FINAL_REPLIES[case.case_type]
    if case.case_type == "PRESCRIPTION_RENEWAL" and case.medications:
        rest = ("Receptet finns nu att hämta ut på apoteket. Det gäller i ett år." if len(case.medications) == 1
                else "Recepten finns nu att hämta ut på apoteket. De gäller i ett år.")
        body = f"Vi har förnyat: {_enumerate(case.medications)}. {rest}"
    out = _message(case, "FINAL_REPLY", subject, body)
    if case.case_type == "COMPLAINT":
        data = base64.b64encode(pdf("Beslut i ditt klagomålsärende " + case.provider_case_id)).decode("ascii")
        out["attachments"] = [{"fileName": "beslut.pdf", "mimeType": "application/pdf", "data": data}]
    return out


#: A complaint's answer as a notice without files (the decision goes by post).
NOTICE_COMPLAINT = (
    "Svar på dina synpunkter",
    "Tack för att du hörde av dig med dina synpunkter. Vi har gått igenom det som hände och "
    "pratat med berörd personal. Vårt svar och beslut skickas till dig med post.",
)


def notice(case: Facts) -> dict[str, Any]:
    """The answer as one INFO notice without files (what the legacy inbox, national profile
    mvk-inbox-2.0, carries): the final reply's text, a complaint's decision sent by post."""
    subject, body = NOTICE_COMPLAINT if case.case_type == "COMPLAINT" else FINAL_REPLIES[case.case_type]
    return _message(case, "INFO", subject, body)


def pdf(text: str) -> bytes:
    """A valid one-page PDF 1.4 showing ``text`` (Latin-1) in Helvetica, with a correct xref."""
    line = text.encode("latin-1", "replace").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    stream = b"BT /F1 14 Tf 72 770 Td (" + line + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    return pdf_file(objects)


def pdf_file(objects: list[bytes], header: bytes = b"%PDF-1.4\n") -> bytes:
    """A PDF of ``objects`` (numbered from 1; object 1 the catalog) with a correct xref."""
    out = bytearray(header)
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
