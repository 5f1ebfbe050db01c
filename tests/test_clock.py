"""One clock: UTC instants, the Swedish date for every 1177 rule, whichever door a request
came in by, and at the hours where UTC and Sweden disagree (a winter and a summer evening,
the nights of DST, 29 February)."""

from __future__ import annotations

import ast
import copy
import datetime as dt
import subprocess
from pathlib import Path

import pytest
import responses
import time_machine
import yaml
import zeep
from conftest import KLIN1, PNR, ROOT, result_of
from lxml import etree

import clock
import config as config_mod
import gateway
import rivta
from model import PERSONNUMMER_OID, PersonId

pytestmark = pytest.mark.dates

UTC = dt.timezone.utc
TOKEN = "clock-test-token-0123456789"
API = "http://127.0.0.1:8081/api"


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- the clock itself -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("instant, swedish", [
    ("2026-12-15 23:30", dt.date(2026, 12, 16)),  # CET, UTC+1
    ("2026-12-15 22:59", dt.date(2026, 12, 15)),
    ("2026-06-15 22:30", dt.date(2026, 6, 16)),  # CEST, UTC+2
    ("2026-06-15 21:59", dt.date(2026, 6, 15)),
    ("2026-10-25 00:30", dt.date(2026, 10, 25)),  # the night DST ends (02:30 CEST)
    ("2026-10-25 01:30", dt.date(2026, 10, 25)),  # ... and the repeated hour (02:30 CET)
    ("2027-03-27 23:30", dt.date(2027, 3, 28)),  # the night DST begins
    ("2028-02-28 23:30", dt.date(2028, 2, 29)),
])
def test_the_swedish_date_of_an_instant(instant, swedish):
    assert clock.swedish_date(at(instant)) == swedish
    assert clock.FixedClock(at(instant)).day() == swedish


def test_the_clock_is_utc_and_follows_the_system_clock():
    with time_machine.travel(at("2026-12-01 23:30"), tick=False):
        assert clock.SYSTEM.instant() == at("2026-12-01 23:30") and clock.SYSTEM.instant().utcoffset() == dt.timedelta(0)
        assert clock.SYSTEM.day() == dt.date(2026, 12, 2)
        assert clock.SYSTEM.local_time().strftime("%Y%m%d%H%M%S") == "20261202003000"


def test_calendar_years_count_29_february_on_to_1_march():
    assert clock.years_before(dt.date(2028, 2, 29), 5) == dt.date(2023, 3, 1)
    assert clock.add_years(dt.date(2024, 2, 29), 2) == dt.date(2026, 3, 1)
    assert clock.add_years(dt.date(2024, 2, 29), 4) == dt.date(2028, 2, 29)
    assert clock.years_before(dt.date(2026, 3, 1), 2) == dt.date(2024, 3, 1)


def test_a_swedish_day_starts_at_local_midnight_either_side_of_dst():
    assert clock.start_of_swedish_day(dt.date(2026, 12, 2)) == at("2026-12-01 23:00")
    assert clock.start_of_swedish_day(dt.date(2026, 6, 16)) == at("2026-06-15 22:00")
    assert clock.start_of_swedish_day(dt.date(2026, 10, 26)) == at("2026-10-25 23:00")  # the day after DST ends


def test_two_years_of_retention_in_calendar_years(cfg):
    # a case whose last activity was on 29 February 2024 (Swedish date) is kept through 28 February 2026
    content, log = gateway.retention_cutoffs(cfg, at("2026-02-28 12:00"))
    assert content == clock.start_of_swedish_day(dt.date(2024, 2, 28)) == log
    content, _ = gateway.retention_cutoffs(cfg, at("2026-02-28 23:30"))  # already 1 March in Sweden
    assert content == clock.start_of_swedish_day(dt.date(2024, 3, 1)) == at("2024-02-29 23:00")


def test_no_product_module_reads_the_wall_clock_on_its_own():
    """``datetime.now()``, ``date.today()``, ``datetime.utcnow()`` and ``time.localtime()``
    appear only in clock.py (the sandbox included: its demo providers' today is Swedish)."""
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        if name.startswith(("tests/", "bench/")) or name == "clock.py":
            continue
        tree = ast.parse((ROOT / name).read_text(), name)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "now", "today", "utcnow", "localtime"):
                owner = ast.unparse(node.func.value)
                if owner.split(".")[-1] in ("datetime", "date", "dt", "time"):
                    offenders.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []


# -- the rules at the day boundary, through the real doors ----------------------------------------------------


def _person(born: dt.date) -> PersonId:
    from stdnum import luhn

    base = f"{born:%Y%m%d}239"
    return PersonId.parse(base + luhn.calc_check_digit(base[2:]), PERSONNUMMER_OID)


def _mappings_with_dated_units(tmp_path: Path) -> Path:
    """The shipped mappings plus a unit that opens on 2 December 2026 and one that closed on
    1 December 2026, both routed to demo_rest."""
    import shutil

    folder = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", folder)
    units = yaml.safe_load((folder / "units.yaml").read_text())
    units["units"] += [
        {"hsa_id": "SE5566778899-NEW1", "code": "NEW1", "target": "demo_rest", "name": "Öppnar 2 december",
         "valid_from": dt.date(2026, 12, 2)},
        {"hsa_id": "SE5566778899-OLD1", "code": "OLD1", "target": "demo_rest", "name": "Stängde 1 december",
         "valid_from": dt.date(2020, 1, 1), "valid_to": dt.date(2026, 12, 1)},
    ]
    (folder / "units.yaml").write_text(yaml.safe_dump(units, allow_unicode=True))
    return folder


@pytest.fixture
def dated_app(config_data, tmp_path):
    data = copy.deepcopy(config_data)
    data["mappings"]["dir"] = str(_mappings_with_dated_units(tmp_path))
    data["targets"]["demo_rest"]["api"] = {"token": TOKEN}
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    yield app
    app.extensions["gateway.store"].close()


def _external(unit: str, **extra) -> dict:
    return {"externalCaseId": f"TEL-{unit}", "channel": "TELEFON", "receiverUnit": unit, "caseType": "QUESTION",
            "subjectOfCare": {"personId": {"id": PNR}}, "text": "Ringde om sin behandling.", **extra}


@pytest.mark.parametrize("instant", ["2026-12-15 23:30", "2026-06-15 22:30"], ids=["winter evening", "summer night"])
def test_an_external_complaint_about_today_in_sweden_is_registered(dated_app, instant):
    with time_machine.travel(at(instant), tick=False):
        today = clock.SYSTEM.day()
        assert today != at(instant).date()  # already tomorrow in Sweden
        response = dated_app.test_client().post("/api/v1/cases", headers={"Authorization": f"Bearer {TOKEN}"}, json=_external(
            "KLIN1", caseType="COMPLAINT", complaint={"eventDate": today.isoformat(), "eventLocationText": "Akuten"}))
        assert response.status_code == 201, response.json
        tomorrow = (today + dt.timedelta(days=1)).isoformat()
        response = dated_app.test_client().post("/api/v1/cases", headers={"Authorization": f"Bearer {TOKEN}"}, json=_external(
            "KLIN1", externalCaseId="TEL-2", caseType="COMPLAINT", complaint={"eventDate": tomorrow}))
        assert response.status_code == 422 and response.json["code"] == "GW025"


@responses.activate
def test_the_16th_birthday_is_the_swedish_date(dated_app):
    client = zeep.Client(str(rivta.GET_MEDICATION_LIST.wsdl_path))

    def ask(person: PersonId) -> dict:
        envelope = client.create_message(
            client.service, "GetMedicationList", _soapheaders={"LogicalAddress": KLIN1},
            receiver={"hsaId": KLIN1}, subjectOfCare={"personId": {"id": person.id, "type": PERSONNUMMER_OID}})
        answer = dated_app.test_client().post("/rivta", data=etree.tostring(envelope), headers={"Content-Type": "text/xml"})
        return result_of(etree.fromstring(answer.data))

    birthday, tomorrow = _person(dt.date(2010, 12, 2)), _person(dt.date(2010, 12, 3))
    responses.get(f"{API}/patients/{birthday.id}/medications",
                  json={"medications": [{"prescriptionId": "RX-1", "name": "Alvedon", "lastPrescribedDate": "2026-11-01"}]})
    with time_machine.travel(at("2026-12-01 23:30"), tick=False):  # 2 December in Sweden
        assert ask(birthday)["resultCode"] == "OK"
        refused = ask(tomorrow)
        assert refused["resultCode"] == "INFO" and "under 16" in refused["message"]
    assert len(responses.calls) == 1  # the younger one's provider was never asked


def test_unit_validity_is_the_swedish_date_at_intake_and_in_the_api(dated_app, make_case):
    client = dated_app.test_client()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with time_machine.travel(at("2026-12-01 23:30"), tick=False):  # 2 December in Sweden
        opened = make_case("SE5566778899-NEW1", caseId="C-NEW", receiver={"hsaId": "SE5566778899-NEW1", "isPatientBoard": False})
        answer = client.post("/rivta", data=opened, headers={"Content-Type": "text/xml"})
        assert result_of(etree.fromstring(answer.data))["resultCode"] == "OK"
        assert client.post("/api/v1/cases", headers=headers, json=_external("NEW1")).status_code == 201
        closed = make_case("SE5566778899-OLD1", caseId="C-OLD", receiver={"hsaId": "SE5566778899-OLD1", "isPatientBoard": False})
        answer = client.post("/rivta", data=closed, headers={"Content-Type": "text/xml"})
        assert result_of(etree.fromstring(answer.data))["faultstring"].startswith("GW016")
        refused = client.post("/api/v1/cases", headers=headers, json=_external("OLD1"))
        assert refused.status_code == 422 and refused.json["code"] == "GW035"
        store = dated_app.extensions["gateway.store"]
        assert store.case_row("C-NEW") is not None and store.case_row("C-OLD") is None
