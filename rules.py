"""The 1177 business rules (DESIGN.md section 6) as pure functions.

Role: decide whether a case or message may be accepted, whatever door it came in by
(RIV-TA intake, the provider REST API). No I/O, no clock of its own: callers pass
``today``, the **Swedish** date of the instant (``clock.Clock.day``), so the rules are
testable on their boundaries and agree whichever door a case came in by.

May import: ``model``, ``errors``, ``clock`` (calendar arithmetic, never the time); of
libraries, pypdf and Pillow, which read an attachment's bytes in memory (rule 1: a file is
what it claims to be, all the way through; the wrong-patient guard reads a PDF's text).

Invariants: a function either returns normally or raises a ``RuleViolation`` subclass
whose message names the field and never contains a person id in clear. Every text that
reaches the store is checked by ``check_text``: at most its field's length (the same
maxima as the XSDs in ``contracts/``), and only characters XML 1.0 can carry (so that it
can always be sent to 1177 and to a provider). An attachment passes only when its whole
content is the type it claims (``content_problem``), in both directions.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
from collections.abc import Iterable, Sequence
from math import isqrt
from typing import Any

import pypdf
from PIL import Image, ImageSequence
from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject

import clock
from errors import (
    AttachmentTooLarge,
    ClosingCodesMissing,
    AttachmentTypeRefused,
    EventDateInvalid,
    InvalidValue,
    LocationMissing,
    RenewalWithoutList,
    SenderMayNotAttach,
    TooManyAttachments,
)
from model import (
    BUSINESS_AREA_CODE_SYSTEM,
    PROBLEM_CODE_SYSTEM,
    Attachment,
    Case,
    CaseStatus,
    Medication,
    PersonId,
    CaseType,
    GuardFinding,
    GuardOutcome,
    Message,
    StatusUpdate,
    file_name_problem,
    hsa_id,
    person_ids_in,
    redact_person_ids,
)

MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024
MAX_CITIZEN_ATTACHMENTS = 5
MAX_CARE_ATTACHMENTS = 10

#: The longest text of each kind (characters): the same in contracts/ and in the API.
MAX_TEXT = 20000  # a case's or a message's text
MAX_SUBJECT = 255
MAX_NAME = 255  # a person's, unit's or medication's name
MAX_MOBILE = 32
MAX_EMAIL = 254  # RFC 5321
MAX_ID = 64  # caseId, messageId, prescriptionId, externalCaseId
MAX_LOCATION = 1000  # a complaint's eventLocationText
MAX_FILE_NAME = 255
MAX_MIME_TYPE = 100
MAX_CODE = 64  # a code and its code system's OID (CVType)
MAX_HSA_ID = 31  # HsaIdType

# anything XML 1.0 cannot carry: C0 controls but tab, LF and CR; lone surrogates; U+FFFE/U+FFFF
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def check_text(value: str | None, field: str, max_length: int) -> None:
    """A text that can be stored and sent: at most ``max_length`` characters, and only
    characters XML 1.0 can carry (no NUL or other control characters, no lone surrogates)."""
    if value is None:
        return
    if len(value) > max_length:
        raise InvalidValue(f"{field} is {len(value)} characters; at most {max_length} are allowed.", field=field)
    bad = _NOT_XML.search(value)
    if bad is not None:
        raise InvalidValue(
            f"{field} contains the character U+{ord(bad.group()):04X} (at position {bad.start() + 1}), which XML "
            "cannot carry to 1177 or to a provider; remove it.", field=field)

# Content signatures of the four file types 1177 accepts (rule 1): checked by content.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
)
#: The MIME types 1177 accepts for an attachment (rule 1), as an attachment declares them.
ATTACHMENT_TYPES = tuple(dict.fromkeys(mime for _, mime in _SIGNATURES))
_MIME_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "application/x-pdf": "application/pdf"}


def sniff_mime_type(data: bytes) -> str | None:
    """The accepted MIME type that ``data`` really is, or ``None``."""
    for signature, mime in _SIGNATURES:
        if data.startswith(signature):
            return mime
    return None


def check_attachments(
    attachments: Sequence[Attachment],
    *,
    max_count: int,
    max_bytes: int = MAX_ATTACHMENT_BYTES,
    field: str = "attachment",
) -> None:
    """Rule 1: count, size and type (by content, and the declared type must agree)."""
    if len(attachments) > max_count:
        raise TooManyAttachments(
            f"{field}: {len(attachments)} attachments, at most {max_count} are allowed.", field=field
        )
    for index, attachment in enumerate(attachments, start=1):
        where = f"{field}[{index}]"
        if not attachment.file_name:
            raise InvalidValue(f"{where}: a file name is 1 to {MAX_FILE_NAME} characters.", field=where)
        check_text(attachment.file_name, f"{where}/fileName", MAX_FILE_NAME)
        problem = file_name_problem(attachment.file_name)
        if problem is not None:
            raise InvalidValue(f"{where}/fileName {problem}; send the file's name alone, in plain characters.",
                               field=f"{where}/fileName")
        check_text(attachment.mime_type, f"{where}/mimeType", MAX_MIME_TYPE)
        name = redact_person_ids(attachment.file_name)  # a name may hold a personnummer: never in a message
        if attachment.size > max_bytes:
            raise AttachmentTooLarge(
                f"{where} '{name}' is {attachment.size} bytes, the limit is {max_bytes}.",
                field=where,
            )
        actual = sniff_mime_type(attachment.data)
        if actual is None:
            raise AttachmentTypeRefused(
                f"{where} '{name}' is not a PDF, GIF, JPEG or PNG file.", field=where
            )
        declared = _MIME_ALIASES.get(attachment.mime_type.strip().lower(), attachment.mime_type.strip().lower())
        if declared != actual:
            raise AttachmentTypeRefused(
                f"{where} '{name}' is declared as '{redact_person_ids(attachment.mime_type)}' but its content is {actual}.",
                field=where,
            )
        refused = content_problem(attachment.data, actual)
        if refused is not None:
            reason, hint = refused
            raise AttachmentTypeRefused(f"{where} '{name}': {reason}.", field=where, hint=hint)


# -- a file is what it claims to be, all the way through (rule 1) ---------------------------------------

#: The most pixels a GIF, JPEG or PNG attachment may have (about 8000 × 8000: a 48-megapixel
#: phone photo passes). Decoding allocates its pixels, so a larger claim (a decompression
#: bomb: a few kilobytes that claim to be gigapixels) is refused before anything is decoded.
MAX_IMAGE_PIXELS = 64_000_000
#: The most pixels decoded over all the frames of an animated GIF.
MAX_GIF_PIXELS = 4 * MAX_IMAGE_PIXELS

_DAMAGED_HINT = "Send the file again, whole: it may have been cut off or damaged on the way, or be another kind of file."
_ACTIVE_HINT = ("Send the document as a plain PDF without scripts, actions or files inside it "
                "(for example, print it to a new PDF) and try again.")
_PILLOW_FORMATS = {"image/gif": "GIF", "image/jpeg": "JPEG", "image/png": "PNG"}

#: PDF keys whose values are page content, resources (fonts, pictures, colour spaces, forms
#: drawn on the page), appearances or the structure tree: large, and never an action a viewer
#: runs. The search for active content does not read them, so it costs little time and memory
#: however big they are. ``/Parent`` only leads back up; ``/JS`` and ``/EF`` are found already.
_PDF_PASSIVE_KEYS = frozenset({"/Contents", "/Resources", "/XObject", "/Font", "/FontFile", "/FontFile2", "/FontFile3",
                               "/Metadata", "/Thumb", "/AP", "/StructTreeRoot", "/Parent", "/Length", "/JS", "/EF"})
#: Action types that run or open something outside the document.
_PDF_ACTIONS = {"/JavaScript": "the PDF carries JavaScript", "/Launch": "the PDF carries a launch action "
                "(it can start a program or open a file)", "/ImportData": "the PDF carries an import-data action",
                "/GoToE": "the PDF carries an action that opens an embedded file"}


def content_problem(data: bytes, mime_type: str) -> tuple[str, str] | None:
    """Why ``data``, whose first bytes say it is ``mime_type`` (``sniff_mime_type``), is not
    a sound file of that type, with what to do about it; None when it is. A PDF must parse
    (pypdf), have a page and carry no JavaScript, launch or import actions, embedded files or
    file-attachment annotations, and no XFA form; a GIF, JPEG or PNG must decode whole
    (Pillow) and have at most ``MAX_IMAGE_PIXELS`` pixels. Reads ``data`` in place (no copy)."""
    if mime_type == "application/pdf":
        return _pdf_problem(data)
    return _picture_problem(data, mime_type)


def _pdf_problem(data: bytes) -> tuple[str, str] | None:
    try:
        reader = _pdf_reader(data)
        if reader.is_encrypted and not _opens_without_password(reader):
            return ("the PDF is protected by a password, so its content cannot be checked",
                    "Send the PDF without a password.")
        root = reader.trailer["/Root"].get_object()
        pages = _pdf_value(root, "/Pages") if isinstance(root, DictionaryObject) else None
        if (not isinstance(pages, DictionaryObject) or not _pdf_value(pages, "/Kids")
                or int(_pdf_value(pages, "/Count") or 0) < 1):
            return "the file does not parse as a PDF document with pages", _DAMAGED_HINT
        active = _pdf_active_content(root) if isinstance(root, DictionaryObject) else None
    except Exception:  # noqa: BLE001 - whatever pypdf cannot read is not a PDF 1177 can show
        return "the file does not parse as a PDF (it is damaged, or another kind of file that starts like one)", _DAMAGED_HINT
    return (active, _ACTIVE_HINT) if active is not None else None


def _pdf_reader(data: bytes) -> pypdf.PdfReader:
    """pypdf's reader over ``data`` in place. (Handed a ``BytesIO``, pypdf asks for its buffer,
    which makes the ``BytesIO`` copy the whole file; a ``BufferedReader`` over it has none.)"""
    return pypdf.PdfReader(io.BufferedReader(io.BytesIO(data)), strict=False)


def _opens_without_password(reader: pypdf.PdfReader) -> bool:
    """An encrypted PDF that opens with the empty password (only an owner password, which
    restricts printing or copying) can still be read, and so checked."""
    try:
        return bool(reader.decrypt(""))
    except Exception:  # noqa: BLE001 - an encryption pypdf cannot open is one we cannot check
        return False


def _pdf_active_content(root: DictionaryObject) -> str | None:
    """What in the document could act on the reader's machine, or None: every dictionary
    reachable from the catalog (its names tree, open action, additional actions of the
    document, pages, annotations and form fields, outlines, chains of ``/Next`` actions) is
    visited once; streams of content, fonts and pictures are not read."""
    seen: set[tuple[int, int]] = set()
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, IndirectObject):
            key = (node.idnum, node.generation)
            if key in seen:
                continue
            seen.add(key)
            node = node.get_object()
        if isinstance(node, DictionaryObject):
            found = _pdf_dictionary_problem(node)
            if found is not None:
                return found
            stack.extend(value for name, value in node.items() if name not in _PDF_PASSIVE_KEYS)
        elif isinstance(node, ArrayObject):
            stack.extend(node)
    return None


def _pdf_value(node: DictionaryObject, key: str) -> Any:
    """``node[key]`` resolved (a value may be an indirect object, e.g. ``/S 12 0 R``), or None."""
    value = node.get(key)
    return value.get_object() if isinstance(value, IndirectObject) else value


def _pdf_dictionary_problem(node: DictionaryObject) -> str | None:
    action = _pdf_value(node, "/S")
    if action in _PDF_ACTIONS:
        return _PDF_ACTIONS[str(action)]
    if "/JS" in node or "/JavaScript" in node:
        return "the PDF carries JavaScript"
    if "/EmbeddedFiles" in node or "/EF" in node or _pdf_value(node, "/Type") == "/EmbeddedFile":
        return "the PDF carries an embedded file"
    if _pdf_value(node, "/Subtype") == "/FileAttachment":
        return "the PDF carries an attached file (a file-attachment annotation)"
    if "/XFA" in node:
        return "the PDF carries an XFA form, which can run scripts"
    return None


def _picture_problem(data: bytes, mime_type: str) -> tuple[str, str] | None:
    kind = _PILLOW_FORMATS[mime_type]
    formats = [kind]
    limit = f"{MAX_IMAGE_PIXELS:,}".replace(",", " ")
    too_big = (f"the {kind} picture has more than {limit} pixels, more than the gateway decodes",
               f"Send a smaller picture (at most {limit} pixels, about {isqrt(MAX_IMAGE_PIXELS)} × "
               f"{isqrt(MAX_IMAGE_PIXELS)}).")
    try:
        with Image.open(io.BytesIO(data), formats=formats) as picture:  # reads the header only
            width, height = picture.size
            if width * height > MAX_IMAGE_PIXELS:
                return too_big
            picture.verify()  # the structure: PNG chunks and their checksums to IEND
        with Image.open(io.BytesIO(data), formats=formats) as picture:
            if mime_type == "image/jpeg":  # decode every byte, at an eighth of the size (1/64 of the memory)
                picture.draft(picture.mode, (max(1, width // 8), max(1, height // 8)))
                picture.load()
            elif mime_type == "image/gif":
                decoded = 0
                for frame in ImageSequence.Iterator(picture):
                    decoded += width * height
                    if decoded > MAX_GIF_PIXELS:
                        return (f"the GIF animation has more frames than the gateway decodes (over "
                                f"{MAX_GIF_PIXELS:,} pixels in all)".replace(",", " "), "Send a still picture.")
                    frame.load()
            else:
                picture.load()
    except Image.DecompressionBombError:
        return too_big
    except Exception:  # noqa: BLE001 - whatever Pillow cannot decode is not a picture 1177 can show
        return f"the file does not decode as a {kind} picture (it is truncated or damaged)", _DAMAGED_HINT
    return None


def check_case(
    case: Case,
    *,
    today: dt.date,
    max_attachments: int = MAX_CITIZEN_ATTACHMENTS,
    max_attachment_bytes: int = MAX_ATTACHMENT_BYTES,
) -> None:
    """All intake rules for a new case from a citizen.

    Person ids are already checked when the ``Case`` is built (``PersonId.parse``), so a
    case without a valid personnummer/samordningsnummer never reaches here (rule 4).
    """
    hsa_id(case.receiver.hsa_id, field="case/receiver/hsaId")
    if not case.case_id.strip():
        raise InvalidValue("case/caseId is empty.", field="case/caseId")
    check_text(case.case_id, "case/caseId", MAX_ID)
    if not case.text.strip():
        raise InvalidValue("case/text is empty: a case needs the citizen's text.", field="case/text")
    check_text(case.text, "case/text", MAX_TEXT)
    check_text(case.subject, "case/subject", MAX_SUBJECT)
    subject = case.subject_of_care
    check_text(subject.name, "case/subjectOfCare/name", MAX_NAME)
    if subject.contact is not None:
        check_text(subject.contact.mobile, "case/subjectOfCare/contact/mobile", MAX_MOBILE)
        check_text(subject.contact.email, "case/subjectOfCare/contact/email", MAX_EMAIL)
    if case.representative is not None:
        check_text(case.representative.name, "case/representative/name", MAX_NAME)
    if case.complaint is not None:
        check_text(case.complaint.event_location_text, "case/complaint/eventLocationText", MAX_LOCATION)
    for index, medication in enumerate(case.medications, start=1):
        check_text(medication.prescription_id, f"case/chosenMedication[{index}]/prescriptionId", MAX_ID)
        check_text(medication.name, f"case/chosenMedication[{index}]/name", MAX_NAME)
    if not 1900 <= case.created_time.year <= 2099:
        raise InvalidValue("case/createdTime is not a date 1177 can take (1900-2099).", field="case/createdTime")
    if case.case_type is CaseType.PRESCRIPTION_RENEWAL:
        # rule 9: where no list could be shown (under 16, a guardian as proxy for a child),
        # nothing can have been chosen from it; otherwise the renewal names what it renews
        representative = case.representative
        no_list = medication_list_refusal(subject=case.subject_of_care.person_id,
                                          representative=representative.person_id if representative else None,
                                          is_proxy=bool(representative and representative.is_proxy), today=today)
        if no_list is not None and case.medications:
            raise RenewalWithoutList(f"case/chosenMedication: {no_list}", field="case/chosenMedication")
        if no_list is None and not case.medications:
            raise InvalidValue("case/chosenMedication: a prescription renewal names at least one medication.",
                               field="case/chosenMedication")
    if case.medications and case.case_type is not CaseType.PRESCRIPTION_RENEWAL:
        raise InvalidValue(f"case/chosenMedication is only for PRESCRIPTION_RENEWAL, not {case.case_type.value}.",
                           field="case/chosenMedication")
    if case.case_type is CaseType.COMPLAINT:
        check_complaint(case, today=today)
    elif case.complaint is not None:
        raise InvalidValue(
            f"case/complaint is only allowed for caseType COMPLAINT, not {case.case_type.value}.",
            field="case/complaint",
        )
    check_attachments(case.attachments, max_count=max_attachments, max_bytes=max_attachment_bytes, field="case/attachment")


def check_complaint(case: Case, *, today: dt.date) -> None:
    """Rules 4–6 for complaints: event date present and not in the future, and a place."""
    complaint = case.complaint
    if complaint is None or complaint.event_date is None:
        raise EventDateInvalid(
            "case/complaint/eventDate is missing: a complaint needs the date of the event.",
            field="case/complaint/eventDate",
        )
    if complaint.event_date.year < 1900:
        raise EventDateInvalid("case/complaint/eventDate is before 1900.", field="case/complaint/eventDate")
    if complaint.event_date > today:
        raise EventDateInvalid(
            f"case/complaint/eventDate {complaint.event_date.isoformat()} is in the future.",
            field="case/complaint/eventDate",
        )
    if complaint.care_unit_hsa_id:
        hsa_id(complaint.care_unit_hsa_id, field="case/complaint/careUnitHsaId")
    elif case.receiver.is_patient_board and not (complaint.event_location_text or "").strip():
        raise LocationMissing(
            "case/complaint: a complaint to the patient board without careUnitHsaId needs eventLocationText.",
            field="case/complaint/eventLocationText",
        )


def check_citizen_message(
    message: Message,
    *,
    max_attachments: int = MAX_CITIZEN_ATTACHMENTS,
    max_attachment_bytes: int = MAX_ATTACHMENT_BYTES,
) -> None:
    """Rules for a citizen's follow-up message."""
    if not message.message_id.strip():
        raise InvalidValue("messageId is empty.", field="messageId")
    check_text(message.message_id, "messageId", MAX_ID)
    if not message.text.strip() and not message.attachments:
        raise InvalidValue("text is empty and there is no attachment.", field="text")
    check_text(message.text, "text", MAX_TEXT)
    check_attachments(message.attachments, max_count=max_attachments, max_bytes=max_attachment_bytes)


def check_care_message(
    message: Message,
    *,
    max_attachments: int = MAX_CARE_ATTACHMENTS,
    max_attachment_bytes: int = MAX_ATTACHMENT_BYTES,
) -> None:
    """Rules for a message from the care side to the citizen (rules 1 and 11)."""
    if not message.sender_hsa_id:
        raise InvalidValue("senderUnit: every message to a citizen names its sending unit.", field="senderUnit")
    hsa_id(message.sender_hsa_id, field="senderUnit")
    check_text(message.message_id, "messageId", MAX_ID)
    if not message.text.strip():
        raise InvalidValue("body is empty: a message to the citizen needs a text.", field="body")
    check_text(message.text, "body", MAX_TEXT)
    check_text(message.subject, "subject", MAX_SUBJECT)
    check_text(message.sender_name, "senderName", MAX_NAME)
    check_attachments(message.attachments, max_count=max_attachments, max_bytes=max_attachment_bytes, field="attachments")


def pdf_page_texts(data: bytes) -> list[str] | None:
    """The text of each page of a PDF, or None when there is none to read: a scan (only
    images), a file encrypted with a password, or one pypdf cannot parse. (One encrypted with
    only an owner password opens with the empty one, and is read.)"""
    try:
        reader = _pdf_reader(data)
        if reader.is_encrypted and not _opens_without_password(reader):
            return None
        pages = [page.extract_text() or "" for page in reader.pages]
    except Exception:  # noqa: BLE001 - any file pypdf cannot read is "not checked", never a crash
        return None
    return pages if any(text.strip() for text in pages) else None


def wrong_patient_guard(message: Message, own_ids: Iterable[str], *, require_text: bool = False) -> GuardOutcome:
    """Rule 14, the wrong-patient guard: search the subject, the body and the text of every
    PDF attachment for personnummer and samordningsnummer (``model.person_ids_in``). A valid
    id that is none of ``own_ids`` (the citizen's and their representative's) holds the
    message until someone confirms it. A PDF whose text cannot be read is ``not_checked``;
    with ``require_text`` that holds the message too. The outcome names places, never ids."""
    own = {re.sub(r"\D", "", i)[-10:] for i in own_ids if i}
    findings: list[GuardFinding] = []

    def search(text: str | None, where: str, *, page: int | None = None, index: int | None = None) -> None:
        foreign = [i for i in person_ids_in(text or "") if i not in own]
        if foreign:
            findings.append(GuardFinding(where, "foreign_id", page=page, attachment=index, count=len(foreign)))

    search(message.subject, "subject")
    search(message.text, "body")
    for index, attachment in enumerate(message.attachments):
        if not attachment.data.startswith(b"%PDF"):
            continue  # pictures carry no text to search
        pages = pdf_page_texts(attachment.data)
        if pages is None:
            findings.append(GuardFinding(attachment.file_name, "not_checked", attachment=index))
            continue
        for number, text in enumerate(pages, start=1):
            search(text, attachment.file_name, page=number, index=index)
    held = any(f.kind == "foreign_id" for f in findings) or (
        require_text and any(f.kind == "not_checked" for f in findings))
    return GuardOutcome(held, tuple(findings))


logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings about odd files would name nothing useful


#: Who at the care side may send a message to the citizen (rule 13).
SENDER_ROLES = ("RECEIVER", "HANDLER")


def check_sender_rights(message: Message, *, citizen_started: bool) -> None:
    """Rule 13, for a message that says who sends it (``sent_by_role``): a case receiver
    (ärendemottagare) attaches files only to a partial answer, when the case is handed on; a
    case handler (ärendehanterare) attaches files when answering or asking a counter-question;
    a counter-question goes only in a case a citizen started in 1177."""
    role = message.sent_by_role
    if role is None:
        return
    if role not in SENDER_ROLES:
        raise InvalidValue(f"sentBy.role must be one of {', '.join(SENDER_ROLES)}.", field="sentBy.role")
    if message.kind == "QUESTION" and not citizen_started:
        raise SenderMayNotAttach("kind QUESTION: a counter-question goes only in a case a citizen started in 1177.",
                                 field="kind")
    if message.attachments:
        allowed = ("PARTIAL_REPLY",) if role == "RECEIVER" else ("PARTIAL_REPLY", "FINAL_REPLY", "QUESTION")
        if message.kind not in allowed:
            who = "a case receiver" if role == "RECEIVER" else "a case handler"
            raise SenderMayNotAttach(f"attachments: {who} may attach files only to {' or '.join(allowed)}, "
                                     f"not to {message.kind}.", field="attachments")


def check_status_update(update: StatusUpdate, case_type: CaseType) -> None:
    """A closed complaint needs problem codes and a business area; codes are in 1177's systems."""
    if update.care_unit_hsa_id:
        hsa_id(update.care_unit_hsa_id, field="careUnitHsaId")
    for index, problem in enumerate(update.problems):
        if problem.code_system != PROBLEM_CODE_SYSTEM or not problem.code.strip():
            raise InvalidValue(f"problems[{index}] is not a code of {PROBLEM_CODE_SYSTEM}.", field=f"problems[{index}]")
    if update.business_area is not None and (
        update.business_area.code_system != BUSINESS_AREA_CODE_SYSTEM or not update.business_area.code.strip()
    ):
        raise InvalidValue(f"businessArea is not a code of {BUSINESS_AREA_CODE_SYSTEM}.", field="businessArea")
    if case_type is CaseType.COMPLAINT and update.status is CaseStatus.CLOSED:
        if not update.problems:
            raise ClosingCodesMissing("problems: closing a complaint needs at least one problem code.", field="problems")
        if update.business_area is None:
            raise ClosingCodesMissing("businessArea: closing a complaint needs a business-area code.", field="businessArea")


# -- prescription renewal (rule 9) -----------------------------------------------------------------------

MEDICATION_YEARS = 5
MIN_AGE_FOR_LIST = 16
ADULT_AGE = 18


#: The same date ``years`` earlier, in calendar years (29 February becomes 1 March).
years_before = clock.years_before


def medication_list_refusal(
    *, subject: PersonId, representative: PersonId | None, is_proxy: bool, today: dt.date
) -> str | None:
    """Rule 9, before anything is fetched: why no list may be shown, or None.

    A citizen under 16 (on ``today``; age from the personnummer or samordningsnummer) gets
    no list, from the 16th birthday they see their own; a guardian acting as proxy for a
    child (under 18) gets no list.
    """
    age = subject.age_on(today)
    if age < MIN_AGE_FOR_LIST:
        return f"No list is shown for a patient under {MIN_AGE_FOR_LIST}; the form can be used without it."
    if representative is not None and is_proxy and age < ADULT_AGE:
        return "A guardian acting as proxy does not see the child's list of medications."
    return None


def recent_medications(medications: Sequence[Medication], *, today: dt.date) -> tuple[list[Medication], str | None]:
    """Rule 9: only medications last prescribed within the last 5 years (on or after the same
    date five years before ``today``); the reason when that leaves none of several."""
    since = years_before(today, MEDICATION_YEARS)
    listed = [m for m in medications if since <= m.last_prescribed <= today]
    if medications and not listed:
        return [], f"No medication was prescribed within the last {MEDICATION_YEARS} years."
    return sorted(listed, key=lambda m: (m.name.lower(), m.prescription_id)), None
