"""Identifiers and the 1177 intake rules, on their boundaries."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import EXE, GIF, JPEG, PDF, PNG, PNR, SAMORDNING

import rules
from errors import (
    AttachmentTooLarge,
    AttachmentTypeRefused,
    EventDateInvalid,
    InvalidHsaId,
    InvalidPersonId,
    InvalidValue,
    LocationMissing,
    TooManyAttachments,
)
from model import (
    PERSONNUMMER_OID,
    SAMORDNINGSNUMMER_OID,
    Attachment,
    Case,
    CaseType,
    Complaint,
    PersonId,
    Receiver,
    SubjectOfCare,
    hsa_id,
    mask_person_id,
    redact_person_ids,
)

#: about Swedish dates: `make test` also runs these at set instants (conftest --clock)
pytestmark = pytest.mark.dates

NOW = dt.datetime(2026, 11, 26, 12, 0)


class TestPersonId:
    def test_personnummer(self):
        pid = PersonId.parse(PNR, PERSONNUMMER_OID)
        assert pid.birth_date == dt.date(1912, 12, 12) and not pid.is_samordningsnummer

    def test_samordningsnummer_day_plus_60(self):
        pid = PersonId.parse(SAMORDNING, SAMORDNINGSNUMMER_OID)
        assert pid.birth_date == dt.date(1970, 10, 3) and pid.is_samordningsnummer

    @pytest.mark.parametrize(
        "number, oid, why",
        [
            ("191212121213", PERSONNUMMER_OID, "check digit"),
            ("19121212121", PERSONNUMMER_OID, "12 digits"),
            ("1912121212AB", PERSONNUMMER_OID, "12 digits"),
            ("191302301212", PERSONNUMMER_OID, "no valid date"),
            (SAMORDNING, PERSONNUMMER_OID, "samordningsnummer"),
            (PNR, SAMORDNINGSNUMMER_OID, "personnummer"),
            (PNR, "1.2.3", "neither"),
            ("", PERSONNUMMER_OID, "12 digits"),
        ],
    )
    def test_refused(self, number, oid, why):
        with pytest.raises(InvalidPersonId) as info:
            PersonId.parse(number, oid)
        assert why in info.value.message
        assert PNR not in str(info.value) and SAMORDNING not in str(info.value)

    def test_never_shown_in_clear(self):
        pid = PersonId.parse(PNR, PERSONNUMMER_OID)
        assert PNR not in repr(pid) and pid.masked == "1912********"
        assert mask_person_id("19121212-1212") == "1912********"
        assert redact_person_ids(f"case for {PNR} and 19121212-1212") == "case for 1912******** and 1912********"


class TestHsaId:
    @pytest.mark.parametrize("value", ["SE5566778899-KLIN1", "se5566778899-klin1", "SE2321000016-PN01", "SE2321000016-1"])
    def test_valid_and_canonical(self, value):
        assert hsa_id(value) == value.upper()

    @pytest.mark.parametrize(
        "value",
        ["SE5566778898-KLIN1", "SE556677889-KLIN1", "5566778899-KLIN1", "SE5566778899", "SE5566778899-", "SE5566778899-A B",
         "SE5566778899-" + "A" * 19, ""],
    )
    def test_invalid(self, value):
        with pytest.raises(InvalidHsaId):
            hsa_id(value)


def _case(case_type=CaseType.COMPLAINT, complaint=None, board=False, attachments=()) -> Case:
    return Case(
        case_id="C1",
        case_type=case_type,
        receiver=Receiver("SE2321000016-PN01" if board else "SE5566778899-KLIN1", board),
        subject_of_care=SubjectOfCare(PersonId.parse(PNR, PERSONNUMMER_OID)),
        created_time=NOW,
        text="text",
        complaint=complaint,
        attachments=tuple(attachments),
    )


class TestComplaintRules:
    def test_event_date_today_is_accepted(self):
        rules.check_case(_case(complaint=Complaint(NOW.date(), False)), today=NOW.date())

    def test_event_date_tomorrow_is_refused(self):
        with pytest.raises(EventDateInvalid, match="in the future"):
            rules.check_case(_case(complaint=Complaint(NOW.date() + dt.timedelta(days=1), False)), today=NOW.date())

    def test_complaint_without_event_date(self):
        with pytest.raises(EventDateInvalid, match="missing"):
            rules.check_case(_case(complaint=Complaint(None, True)), today=NOW.date())
        with pytest.raises(EventDateInvalid):
            rules.check_case(_case(complaint=None), today=NOW.date())

    def test_patient_board_needs_unit_or_place(self):
        with pytest.raises(LocationMissing):
            rules.check_case(_case(board=True, complaint=Complaint(NOW.date(), False, "  ")), today=NOW.date())
        rules.check_case(_case(board=True, complaint=Complaint(NOW.date(), False, "Akuten")), today=NOW.date())
        rules.check_case(_case(board=True, complaint=Complaint(NOW.date(), False, None, "SE5566778899-KLIN2")), today=NOW.date())

    def test_care_unit_must_be_an_hsa_id(self):
        with pytest.raises(InvalidHsaId):
            rules.check_case(_case(complaint=Complaint(NOW.date(), False, None, "KLIN2")), today=NOW.date())

    def test_complaint_block_only_on_complaints(self):
        with pytest.raises(InvalidValue):
            rules.check_case(_case(CaseType.QUESTION, complaint=Complaint(NOW.date(), False)), today=NOW.date())
        rules.check_case(_case(CaseType.QUESTION), today=NOW.date())


class TestAttachments:
    @pytest.mark.parametrize("data, mime", [(PDF, "application/pdf"), (PNG, "image/png"), (GIF, "image/gif"), (JPEG, "image/jpeg"), (JPEG, "image/jpg")])
    def test_accepted_types(self, data, mime):
        rules.check_attachments([Attachment("f", mime, data)], max_count=5)

    def test_type_is_checked_by_content_not_name(self):
        with pytest.raises(AttachmentTypeRefused, match="not a PDF"):
            rules.check_attachments([Attachment("intyg.pdf", "application/pdf", EXE)], max_count=5)

    def test_declared_type_must_match_content(self):
        with pytest.raises(AttachmentTypeRefused, match="declared as 'image/png'"):
            rules.check_attachments([Attachment("bild.png", "image/png", PDF)], max_count=5)

    def test_size_limit_boundary(self):
        limit = 1000
        rules.check_attachments([Attachment("a.pdf", "application/pdf", PDF.ljust(limit, b" "))], max_count=5, max_bytes=limit)
        with pytest.raises(AttachmentTooLarge):
            rules.check_attachments([Attachment("a.pdf", "application/pdf", PDF.ljust(limit + 1, b" "))], max_count=5, max_bytes=limit)

    def test_count_limits_citizen_5_care_10(self):
        files = [Attachment(f"{i}.pdf", "application/pdf", PDF) for i in range(11)]
        rules.check_attachments(files[:5], max_count=rules.MAX_CITIZEN_ATTACHMENTS)
        with pytest.raises(TooManyAttachments):
            rules.check_attachments(files[:6], max_count=rules.MAX_CITIZEN_ATTACHMENTS)
        rules.check_attachments(files[:10], max_count=rules.MAX_CARE_ATTACHMENTS)
        with pytest.raises(TooManyAttachments):
            rules.check_attachments(files, max_count=rules.MAX_CARE_ATTACHMENTS)


def test_every_error_code_is_used_by_one_error_only():
    import errors

    leaves = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.GatewayError)
              and c not in (errors.GatewayError, errors.RequestRefused, errors.RuleViolation, errors.DeliveryError,
                            errors.ApiError, errors.OpsRefused, errors.RecordError)]
    codes = [c.code for c in leaves]
    assert len(codes) == len(set(codes)), sorted(c for c in codes if codes.count(c) > 1)
    assert all(c.startswith("GW0") and len(c) == 5 for c in codes)
    assert all(c.__doc__ for c in leaves)  # each class says when it is raised


@pytest.mark.parametrize("wire", ["20261202134500", " 20260329023000 ", "20261025023000", "20280229235959"])
def test_a_wire_time_reads_as_strptime_would_in_swedish_time(wire: str) -> None:
    import inbound

    expected = dt.datetime.strptime(wire.strip(), "%Y%m%d%H%M%S").replace(tzinfo=inbound.WIRE_ZONE)
    assert inbound._timestamp(wire, "case/createdTime") == expected


@pytest.mark.parametrize("wire", ["2026120213450", "202612021345000", "20261302134500", "20270229120000",
                                  "2026120213450a", "２０２６1202134500", "2026-12-02T13:45"])
def test_a_wire_time_that_is_not_fourteen_digits_of_a_real_time_is_refused(wire: str) -> None:
    import inbound

    with pytest.raises(InvalidValue, match="is not a valid date and time") as caught:
        inbound._timestamp(wire, "case/createdTime")
    assert caught.value.field == "case/createdTime"


def test_a_stored_instant_reads_back_as_it_was_written() -> None:
    from store import parse_ts, ts

    instant = dt.datetime(2026, 12, 2, 13, 45, 0, 123456, tzinfo=dt.timezone.utc)
    assert parse_ts(ts(instant)) == instant
    assert parse_ts("2026-12-02T13:45:00.000001Z") == instant.replace(microsecond=1)
    for bad in ("2026-13-02T13:45:00.123456Z", "2026-12-02T13:45:00.12345xZ", "2026-12-02 13:45:00"):
        with pytest.raises(ValueError):
            parse_ts(bad)
