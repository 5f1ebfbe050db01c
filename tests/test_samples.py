"""The sample cases under mappings/samples: valid against the contract's XSD, one per kind of
case an integration engineer wants to try, and `gateway mappings try` without a file."""

from __future__ import annotations

import pytest
from conftest import PNG, ROOT, example_data, write_config
from lxml import etree

import cli
import gateway
import inbound
import rivta
import rules
from clock import SYSTEM

#: the samples are dated in the past of any clock the suite runs at
pytestmark = pytest.mark.dates

SAMPLES = ROOT / "mappings" / "samples"


def test_there_is_a_sample_file_for_each_sample_the_command_offers():
    assert sorted(p.stem for p in SAMPLES.glob("*.xml")) == sorted(gateway.SAMPLES)


@pytest.mark.parametrize("name", sorted(gateway.SAMPLES))
def test_each_sample_validates_against_the_contract_xsd_and_passes_1177s_rules(name):
    root = etree.parse(str(SAMPLES / f"{name}.xml")).getroot()
    body = root.find(f"{{{rivta.SOAP11_NS}}}Body")[0]
    assert etree.QName(body) == etree.QName(rivta.PROCESS_CASE.responder_ns, "ProcessCase")
    schema = rivta.load_schema(rivta.PROCESS_CASE.xsd_path)
    assert schema.validate(body), schema.error_log
    case = inbound.case_from_xml((SAMPLES / f"{name}.xml").read_bytes(), rivta.Schemas())
    rules.check_case(case, today=SYSTEM.day())


def test_the_samples_are_the_four_kinds_of_case():
    read = {name: inbound.case_from_xml((SAMPLES / f"{name}.xml").read_bytes(), rivta.Schemas()) for name in gateway.SAMPLES}
    complaint, board, question, renewal = read["complaint"], read["board"], read["question"], read["renewal"]
    assert complaint.case_type.value == "COMPLAINT" and not complaint.receiver.is_patient_board
    assert complaint.complaint.care_unit_hsa_id == complaint.receiver.hsa_id
    assert board.case_type.value == "COMPLAINT" and board.receiver.is_patient_board
    assert board.complaint.care_unit_hsa_id is None and board.complaint.event_location_text  # only a free-text place
    assert question.case_type.value == "QUESTION" and [a.data for a in question.attachments] == [PNG]
    assert renewal.case_type.value == "PRESCRIPTION_RENEWAL" and [m.prescription_id for m in renewal.medications] == ["RX-1001", "RX-1002"]


@pytest.fixture
def config(tmp_path) -> str:
    return str(write_config(tmp_path, example_data(tmp_path)))


def test_mappings_try_needs_no_file(runner, config):
    result = runner.invoke(cli.cli, ["mappings", "try", "--target", "demo_rest", "--config", config])
    assert result.exit_code == 0, result.output
    assert "sample 'complaint'" in result.stderr and "COMPLAINT to SE5566778899-KLIN1" in result.stderr
    assert result.stdout.startswith("POST http://127.0.0.1:8081/api/cases\n")
    assert '"externalId": "SAMPLE-COMPLAINT-1"' in result.stdout and '"type": "SYNPUNKT"' in result.stdout


@pytest.mark.parametrize("sample, target, shows", [
    ("board", "demo_rest", ['"unit": "PN01"', '"patientBoard": true', '"location": "Länssjukhuset, avdelning 7 och akuten"']),
    ("question", "demo_soap", ["<ns0:caseType>20</ns0:caseType>", "<ns0:unitCode>KLIN2</ns0:unitCode>",
                               "<ns0:fileName>utslag.png</ns0:fileName>"]),
    ("renewal", "demo_rest", ['"type": "RECEPTFORNYELSE"', '"prescriptionId": "RX-1002"']),
])
def test_mappings_try_each_sample_goes_to_a_unit_of_the_target(runner, config, sample, target, shows):
    result = runner.invoke(cli.cli, ["mappings", "try", "--sample", sample, "--target", target, "--config", config])
    assert result.exit_code == 0, result.output
    for text in shows:
        assert text in result.stdout


def test_mappings_try_says_when_no_unit_fits_the_sample(runner, config):
    result = runner.invoke(cli.cli, ["mappings", "try", "--sample", "board", "--target", "demo_soap", "--config", config])
    assert result.exit_code == 0 and "note: no patient board unit routes to 'demo_soap'" in result.stderr


def test_mappings_try_with_your_own_file(runner, config, tmp_path, make_case):
    case = tmp_path / "case.xml"
    case.write_bytes(make_case(caseId="MY-1"))
    result = runner.invoke(cli.cli, ["mappings", "try", "--file", str(case), "--target", "demo_rest", "--config", config])
    assert result.exit_code == 0 and '"externalId": "MY-1"' in result.stdout and "sample" not in result.stderr


def test_mappings_try_refusals(runner, config, tmp_path, make_case):
    case = tmp_path / "case.xml"
    case.write_bytes(make_case())
    both = runner.invoke(cli.cli, ["mappings", "try", "--sample", "board", "--file", str(case), "--target", "demo_rest",
                                       "--config", config])
    assert both.exit_code == 2 and "give one case" in both.stderr
    unknown = runner.invoke(cli.cli, ["mappings", "try", "--sample", "booking", "--target", "demo_rest", "--config", config])
    assert unknown.exit_code == 2 and "'booking' is not one of" in unknown.stderr
    not_a_case = tmp_path / "other.xml"
    not_a_case.write_text("<hello/>")
    wrong = runner.invoke(cli.cli, ["mappings", "try", "--file", str(not_a_case), "--target", "demo_rest", "--config", config])
    assert wrong.exit_code == 1 and "does not hold a ProcessCase request" in wrong.stderr


def test_mappings_try_a_target_no_unit_routes_to(runner, tmp_path):
    import shutil

    data = example_data(tmp_path)
    data["targets"]["spare"] = dict(data["targets"]["demo_rest"])
    maps = tmp_path / "maps"
    shutil.copytree(ROOT / "mappings", maps)
    shutil.copy(maps / "fieldmaps" / "demo_rest.yaml", maps / "fieldmaps" / "spare.yaml")
    data["mappings"]["dir"] = str(maps)
    result = runner.invoke(cli.cli, ["mappings", "try", "--target", "spare", "--config", str(write_config(tmp_path, data))])
    assert result.exit_code == 1 and "no unit in units.yaml routes to 'spare'" in result.stderr


def test_a_sample_in_your_own_mappings_folder_wins(runner, tmp_path):
    import shutil

    maps = tmp_path / "maps"
    shutil.copytree(ROOT / "mappings", maps)
    own = (maps / "samples" / "question.xml").read_text().replace("SAMPLE-QUESTION-1", "OUR-OWN-QUESTION")
    (maps / "samples" / "question.xml").write_text(own)
    data = example_data(tmp_path)
    data["mappings"]["dir"] = str(maps)
    result = runner.invoke(cli.cli, ["mappings", "try", "--sample", "question", "--target", "demo_rest",
                                         "--config", str(write_config(tmp_path, data))])
    assert result.exit_code == 0 and '"externalId": "OUR-OWN-QUESTION"' in result.stdout
