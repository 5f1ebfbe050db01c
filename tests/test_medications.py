"""Prescription renewal: GetMedicationList under 1177's rule 9, on its boundaries, and the
renewal case carrying the chosen medications."""

from __future__ import annotations

import copy
import datetime as dt
import json

import pytest
import requests
import responses
import zeep
from conftest import KLIN1, PNR, ROOT, result_of
from lxml import etree

import config as config_mod
import gateway
import rivta
import rules
from model import PERSONNUMMER_OID, SAMORDNINGSNUMMER_OID, Medication, PersonId

#: about Swedish dates: `make test` also runs these at set instants (conftest --clock)
pytestmark = pytest.mark.dates

API = "http://127.0.0.1:8081/api"
TODAY = dt.date(2026, 11, 26)


def person(born: dt.date, serial: str = "239", coordination: bool = False) -> PersonId:
    """A valid personnummer (or samordningsnummer) for someone born on ``born``."""
    from stdnum import luhn

    day = born.day + (60 if coordination else 0)
    base = f"{born:%Y%m}{day:02d}{serial}"
    return PersonId.parse(base + luhn.calc_check_digit(base[2:]), SAMORDNINGSNUMMER_OID if coordination else PERSONNUMMER_OID)


# -- the rules, on their boundaries -------------------------------------------------------------------------


@pytest.mark.parametrize("coordination", [False, True], ids=["personnummer", "samordningsnummer"])
def test_sixteenth_birthday(coordination):
    teen = person(dt.date(2010, 11, 26), coordination=coordination)
    assert rules.medication_list_refusal(subject=teen, representative=None, is_proxy=False, today=TODAY) is None
    day_before = TODAY - dt.timedelta(days=1)
    why = rules.medication_list_refusal(subject=teen, representative=None, is_proxy=False, today=day_before)
    assert why and "under 16" in why


def test_leap_day_birthday():
    leap = person(dt.date(2008, 2, 29))
    assert rules.medication_list_refusal(subject=leap, representative=None, is_proxy=False, today=dt.date(2024, 2, 28))
    assert rules.medication_list_refusal(subject=leap, representative=None, is_proxy=False, today=dt.date(2024, 2, 29)) is None


def test_proxy_for_a_child_and_for_an_adult():
    guardian = person(dt.date(1980, 5, 5))
    child = person(dt.date(2009, 1, 1))  # 17: old enough for an own list, still a child
    adult = person(dt.date(1950, 3, 3))
    assert "proxy" in rules.medication_list_refusal(subject=child, representative=guardian, is_proxy=True, today=TODAY)
    assert rules.medication_list_refusal(subject=child, representative=None, is_proxy=False, today=TODAY) is None
    assert rules.medication_list_refusal(subject=adult, representative=guardian, is_proxy=True, today=TODAY) is None


def test_five_years_exactly_is_listed_a_day_older_is_not():
    five = Medication("RX-1", "Omeprazol", dt.date(2021, 11, 26))
    older = Medication("RX-2", "Kåvepenin", dt.date(2021, 11, 25))
    recent = Medication("RX-3", "Alvedon", dt.date(2026, 10, 1))
    listed, why = rules.recent_medications([older, five, recent], today=TODAY)
    assert [m.prescription_id for m in listed] == ["RX-3", "RX-1"] and why is None
    none, why = rules.recent_medications([older], today=TODAY)
    assert none == [] and "5 years" in why
    assert rules.recent_medications([], today=TODAY) == ([], None)
    leap_day = rules.years_before(dt.date(2028, 2, 29), 5)
    assert leap_day == dt.date(2023, 3, 1)  # calendar years: 29 February counts on to 1 March


# -- over RIV-TA -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def medication_client():
    return zeep.Client(str(rivta.GET_MEDICATION_LIST.wsdl_path))


@pytest.fixture
def ask(client, medication_client):
    def call(pid: str = PNR, type_oid: str = PERSONNUMMER_OID, representative=None, unit=KLIN1):
        body = {"receiver": {"hsaId": unit}, "subjectOfCare": {"personId": {"id": pid, "type": type_oid}}}
        if representative:
            body["representative"] = representative
        envelope = medication_client.create_message(
            medication_client.service, "GetMedicationList", _soapheaders={"LogicalAddress": unit}, **body
        )
        response = client.post("/rivta", data=etree.tostring(envelope), headers={"Content-Type": "text/xml"})
        root = etree.fromstring(response.data)
        return response.status_code, root

    return call


def meds(root) -> list[tuple[str, str]]:
    ns = {"r": rivta.GET_MEDICATION_LIST.responder_ns, "c": rivta.CORE_NS}
    return [(m.findtext("c:prescriptionId", namespaces=ns), m.findtext("c:lastPrescribedDate", namespaces=ns))
            for m in root.iterfind(".//r:medication", namespaces=ns)]


def _provider_list(today: dt.date) -> dict:
    five = rules.years_before(today, 5)
    return {"medications": [
        {"prescriptionId": "RX-1", "name": "Alvedon 500 mg", "strength": "500 mg", "lastPrescribedDate": (today - dt.timedelta(days=60)).isoformat()},
        {"prescriptionId": "RX-2", "name": "Omeprazol 20 mg", "lastPrescribedDate": five.isoformat()},
        {"prescriptionId": "RX-3", "name": "Kåvepenin 1 g", "lastPrescribedDate": (five - dt.timedelta(days=1)).isoformat()},
    ]}


def test_the_list_from_the_provider_filtered_to_five_years(ask, app):
    today = __import__("clock").SYSTEM.day()
    with responses.RequestsMock() as mock:
        mock.get(f"{API}/patients/{PNR}/medications", json=_provider_list(today))
        status, root = ask()
    assert status == 200 and result_of(root)["resultCode"] == "OK"
    assert [m[0] for m in meds(root)] == ["RX-1", "RX-2"]  # exactly five years: listed; a day older: not
    rivta.load_schema(rivta.GET_MEDICATION_LIST.xsd_path).assertValid(root.find(f"{{{rivta.SOAP11_NS}}}Body")[0])


def test_a_child_gets_no_list_and_the_provider_is_not_asked(ask):
    child = person(dt.date(2015, 6, 1))
    with responses.RequestsMock() as mock:  # any call to the provider would fail the test
        status, root = ask(child.id)
        assert len(mock.calls) == 0
    result = result_of(root)
    assert status == 200 and result["resultCode"] == "INFO" and "under 16" in result["message"] and meds(root) == []


def test_guardian_proxy_for_a_child_gets_no_list_but_an_adults_proxy_does(ask):
    from clock import SYSTEM, years_before

    teen = person(years_before(SYSTEM.day(), 17))  # 17 (a list of their own, still a child) whenever the suite runs
    proxy = {"personId": {"id": PNR, "type": PERSONNUMMER_OID}, "isProxy": True}
    _, root = ask(teen.id, representative=proxy)
    assert result_of(root)["resultCode"] == "INFO" and "proxy" in result_of(root)["message"]
    adult = person(dt.date(1950, 3, 3))
    with responses.RequestsMock() as mock:
        mock.get(f"{API}/patients/{adult.id}/medications", json={"medications": []})
        _, root = ask(adult.id, representative=proxy)
    assert result_of(root)["resultCode"] == "OK"


def test_all_older_than_five_years_is_info_with_the_reason(ask):
    with responses.RequestsMock() as mock:
        mock.get(f"{API}/patients/{PNR}/medications",
                 json={"medications": [{"prescriptionId": "RX-9", "name": "Gammal", "lastPrescribedDate": "2001-01-01"}]})
        _, root = ask()
    assert result_of(root)["resultCode"] == "INFO" and "5 years" in result_of(root)["message"]


@pytest.mark.parametrize(
    "failure, code",
    [
        (dict(body=requests.Timeout("slow")), "GW060"),
        (dict(body=requests.ConnectionError("down")), "GW060"),
        (dict(status=500), "GW061"),
        (dict(status=403), "GW062"),
        (dict(json={"medicines": []}), "GW063"),
        (dict(json={"medications": [{"name": "utan id"}]}), "GW063"),
    ],
    ids=["timeout", "unreachable", "5xx", "refused", "no list", "bad item"],
)
def test_a_provider_that_does_not_answer_properly_is_a_technical_fault_never_an_empty_list(ask, failure, code):
    with responses.RequestsMock() as mock:
        mock.get(f"{API}/patients/{PNR}/medications", **failure)
        status, root = ask()
    fault = result_of(root)
    assert status == 500 and fault["fault"] == "soap:Server" and fault["faultstring"].startswith(code), fault
    assert PNR not in fault["faultstring"]


def test_refusals(ask):
    status, root = ask("191212121213")
    assert status == 200 and result_of(root)["subCode"] == "GW020"
    status, root = ask(unit="SE5566778899-NOPE")
    assert status == 500 and result_of(root)["faultstring"].startswith("GW016")


def test_a_target_without_a_medication_lookup(config_data, make_case, medication_client):
    data = copy.deepcopy(config_data)
    data["targets"]["demo_rest"]["medications"] = None
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    try:
        envelope = medication_client.create_message(
            medication_client.service, "GetMedicationList", _soapheaders={"LogicalAddress": KLIN1},
            receiver={"hsaId": KLIN1}, subjectOfCare={"personId": {"id": PNR, "type": PERSONNUMMER_OID}})
        response = app.test_client().post("/rivta", data=etree.tostring(envelope), headers={"Content-Type": "text/xml"})
        fault = result_of(etree.fromstring(response.data))
        assert response.status_code == 500 and fault["faultstring"].startswith("GW062") and "medications" in fault["faultstring"]
    finally:
        app.extensions["gateway.store"].close()


# -- the renewal case -----------------------------------------------------------------------------------------------


@responses.activate
def test_a_renewal_case_carries_the_chosen_medications(post, make_case, app, store):
    responses.post(f"{API}/cases", status=201, json={"id": "P-1"})
    chosen = [{"prescriptionId": "RX-1", "name": "Alvedon 500 mg"}, {"prescriptionId": "RX-2"}]
    status, root, _ = post(make_case(caseType="PRESCRIPTION_RENEWAL", complaint=None, chosenMedication=chosen))
    assert result_of(root)["resultCode"] == "OK"
    app.extensions["gateway.worker"].run_until_idle()
    body = json.loads(responses.calls[0].request.body)
    assert body["type"] == "RECEPTFORNYELSE"
    assert body["medications"] == [{"prescriptionId": "RX-1", "name": "Alvedon 500 mg"}, {"prescriptionId": "RX-2"}]


def test_a_renewal_without_medications_or_medications_elsewhere_are_refused(post, make_case, store):
    _, root, _ = post(make_case(caseType="PRESCRIPTION_RENEWAL", complaint=None))
    assert result_of(root)["subCode"] == "GW029" and "chosenMedication" in result_of(root)["message"]
    _, root, _ = post(make_case(chosenMedication=[{"prescriptionId": "RX-1"}]))
    assert result_of(root)["subCode"] == "GW029"
    assert store.counts()["cases"] == 0


# -- against the demo provider systems (REST and SOAP) on loopback ----------------------------------------------


@pytest.fixture(scope="module")
def demo_systems():
    from sandbox.providers import create_rest_provider, create_soap_provider, serve_in_thread

    rest_url, stop_rest = serve_in_thread(create_rest_provider())
    soap_url, stop_soap = serve_in_thread(create_soap_provider())
    yield {"rest": rest_url, "soap": soap_url}
    stop_rest()
    stop_soap()


@pytest.fixture
def demo_app(config_data, demo_systems):
    data = copy.deepcopy(config_data)
    data["targets"]["demo_rest"]["base_url"] = f"{demo_systems['rest']}/api"
    data["targets"]["demo_soap"]["endpoint"] = f"{demo_systems['soap']}/soap"
    for url in demo_systems.values():
        requests.post(f"{url}/_reset", timeout=5)
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    yield app
    app.extensions["gateway.store"].close()


@pytest.mark.parametrize("unit", [KLIN1, "SE5566778899-KLIN2"], ids=["REST", "SOAP"])
def test_demo_patients_lists_over_rest_and_soap(demo_app, medication_client, unit):
    from sandbox import patients

    def ask(pid, type_oid=PERSONNUMMER_OID):
        envelope = medication_client.create_message(
            medication_client.service, "GetMedicationList", _soapheaders={"LogicalAddress": unit},
            receiver={"hsaId": unit}, subjectOfCare={"personId": {"id": pid, "type": type_oid}})
        response = demo_app.test_client().post("/rivta", data=etree.tostring(envelope), headers={"Content-Type": "text/xml"})
        return etree.fromstring(response.data)

    root = ask(patients.TOLVAN)
    assert result_of(root)["resultCode"] == "OK"
    assert sorted(m[0] for m in meds(root)) == ["RX-1001", "RX-1002", "RX-1003"]  # not the ones older than 5 years
    assert result_of(ask(patients.CHILD))["resultCode"] == "INFO"
    assert result_of(ask(patients.TEEN_16))["resultCode"] in ("OK", "INFO")
    root = ask(patients.SAMORDNING, SAMORDNINGSNUMMER_OID)
    assert result_of(root)["resultCode"] == "OK" and [m[0] for m in meds(root)] == ["RX-5001"]


def test_a_slow_provider_is_a_fault_not_an_empty_list(demo_app, demo_systems, medication_client, config_data):
    requests.post(f"{demo_systems['rest']}/_control", json={"delay_s": 1.5}, timeout=5)
    try:
        demo_app.extensions["gateway.worker"].targets["demo_rest"] = demo_app.extensions["gateway.worker"].targets[
            "demo_rest"].model_copy(update={"medications": config_mod.MedicationsSection(
                path="/patients/{person_id}/medications", timeout_s=0.5)})
        envelope = medication_client.create_message(
            medication_client.service, "GetMedicationList", _soapheaders={"LogicalAddress": KLIN1},
            receiver={"hsaId": KLIN1}, subjectOfCare={"personId": {"id": PNR, "type": PERSONNUMMER_OID}})
        response = demo_app.test_client().post("/rivta", data=etree.tostring(envelope), headers={"Content-Type": "text/xml"})
        fault = result_of(etree.fromstring(response.data))
        assert response.status_code == 500 and fault["faultstring"].startswith("GW060") and "in time" in fault["faultstring"]
    finally:
        requests.post(f"{demo_systems['rest']}/_control", json={"delay_s": 0}, timeout=5)


def test_renewal_through_the_soap_target_names_the_medications(demo_app, demo_systems, make_case):
    from conftest import KLIN2

    body = make_case(KLIN2, receiver={"hsaId": KLIN2, "isPatientBoard": False}, caseType="PRESCRIPTION_RENEWAL",
                     complaint=None, chosenMedication=[{"prescriptionId": "RX-1001", "name": "Alvedon"}])
    response = demo_app.test_client().post("/rivta", data=body, headers={"Content-Type": "text/xml"})
    assert result_of(etree.fromstring(response.data))["resultCode"] == "OK"
    demo_app.extensions["gateway.worker"].run_until_idle()
    got = requests.get(f"{demo_systems['soap']}/_received", timeout=5).json()["received"][0]
    assert got["body"]["caseType"] == "30" and got["body"]["medication"] == [{"prescriptionId": "RX-1001", "name": "Alvedon"}]


def test_a_hanging_provider_holds_at_most_a_share_of_the_threads_and_each_call_has_a_deadline(
        config_data, medication_client):
    """Eight GetMedicationList calls to a provider that never answers in time: the first
    ones get GW060 at the deadline, the rest GW061 at once, and Ping answers throughout."""
    import concurrent.futures
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    release = threading.Event()

    class Hanging(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            release.wait(20)
            self.send_response(200)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hanging)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    data = copy.deepcopy(config_data)
    data["server"]["threads"] = 8  # a quarter: 2 medication calls at once
    data["targets"]["demo_rest"]["base_url"] = f"http://127.0.0.1:{server.server_address[1]}/api"
    data["targets"]["demo_rest"]["medications"] = {"path": "/patients/{person_id}/medications", "timeout_s": 1}
    app = gateway.create_app(config_mod.from_dict(data, base_dir=ROOT, environ={}))
    envelope = etree.tostring(medication_client.create_message(
        medication_client.service, "GetMedicationList", _soapheaders={"LogicalAddress": KLIN1},
        receiver={"hsaId": KLIN1}, subjectOfCare={"personId": {"id": PNR, "type": PERSONNUMMER_OID}}))

    def ask(_):
        answer = app.test_client().post("/rivta", data=envelope, headers={"Content-Type": "text/xml"})
        return result_of(etree.fromstring(answer.data))["faultstring"][:5]

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(ask, range(8)))
            assert app.test_client().get("/health/live").status_code == 200
        assert sorted(codes) == ["GW060"] * 2 + ["GW061"] * 6, codes
    finally:
        release.set()
        server.shutdown()
        app.extensions["gateway.store"].close()
