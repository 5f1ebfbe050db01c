"""Delivery to a SOAP provider system on loopback (the sandbox's demo SOAP service) and to the
demo REST provider, end to end through the real adapters, plus the mappings CLI."""

from __future__ import annotations

import copy

import pytest
import requests
from conftest import KLIN2, PDF, PNR, ROOT, example_data, result_of, write_config
from lxml import etree

import config as config_mod
import cli
import gateway
from errors import ConfigError
from sandbox.providers import create_rest_provider, create_soap_provider, serve_in_thread


@pytest.fixture(scope="module")
def soap_provider():
    app = create_soap_provider()
    url, stop = serve_in_thread(app)
    yield url
    stop()


@pytest.fixture(scope="module")
def rest_provider():
    app = create_rest_provider()
    url, stop = serve_in_thread(app)
    yield url
    stop()


@pytest.fixture
def providers(soap_provider, rest_provider):
    for url in (soap_provider, rest_provider):
        requests.post(f"{url}/_reset", timeout=5)
    return {"soap": soap_provider, "rest": rest_provider}


@pytest.fixture
def live(config_data, providers):
    data = copy.deepcopy(config_data)
    data["targets"]["demo_soap"]["endpoint"] = f"{providers['soap']}/soap"
    data["targets"]["demo_rest"]["base_url"] = f"{providers['rest']}/api"
    for target in data["targets"].values():
        target["retry"] = {"max_attempts": 3, "initial_s": 0.01, "multiplier": 2, "max_s": 0.05, "jitter": 0}
    cfg = config_mod.from_dict(data, base_dir=ROOT, environ={})
    app = gateway.create_app(cfg)
    yield app
    app.extensions["gateway.worker"].stop()
    app.extensions["gateway.store"].close()


def post(app, body):
    response = app.test_client().post("/rivta", data=body, headers={"Content-Type": "text/xml"})
    assert result_of(etree.fromstring(response.data))["resultCode"] == "OK"


def received(url):
    return requests.get(f"{url}/_received", timeout=5).json()


def klin2_case(make_case, **overrides):
    return make_case(KLIN2, receiver={"hsaId": KLIN2, "isPatientBoard": False}, **overrides)


def test_case_and_message_reach_the_soap_provider(live, providers, make_case, make_message):
    store = live.extensions["gateway.store"]
    post(live, klin2_case(make_case))
    post(live, make_message(KLIN2))
    live.extensions["gateway.worker"].run_until_idle()
    got = received(providers["soap"])["received"]
    case, message = got
    rows = store.outbox_rows("1177-C-0001")
    assert case["kind"] == "case" and case["idempotency_key"] == rows[0]["idempotency_key"]
    assert case["body"]["caseType"] == "10" and case["body"]["unitCode"] == "KLIN2"
    assert case["body"]["patient"]["personId"] == PNR
    assert [a["fileName"] for a in case["body"]["attachment"]] == ["intyg.pdf", "bild.png"]
    assert case["body"]["attachment"][0]["size"] == len(PDF)
    assert message["kind"] == "message" and message["body"]["caseNumber"] == case["id"]
    assert store.case_row("1177-C-0001")["provider_case_id"] == case["id"]
    assert [r["status"] for r in rows] == ["done", "done"]


def test_soap_client_fault_is_permanent(live, providers, make_case):
    requests.post(f"{providers['soap']}/_control", json={"fail_next": 1, "status": 500, "fault": "Client"}, timeout=5)
    post(live, klin2_case(make_case))
    live.extensions["gateway.worker"].run_until_idle()
    row = live.extensions["gateway.store"].outbox_rows("1177-C-0001")[0]
    assert row["status"] == "dead" and row["last_error_code"] == "GW062" and "Client fault" in row["last_error"]
    (attempt,) = live.extensions["gateway.store"].attempts_of(row["id"])
    kept = attempt["response"]  # what came back: the fault itself, kept for readers
    assert kept["status"] == 500 and "xml" in kept["headers"]["Content-Type"]
    assert "Fault" in kept["body"] and "Client" in kept["body"] and PNR not in kept["body"]


def test_soap_server_fault_is_retried_and_then_delivered_once(live, providers, make_case):
    requests.post(f"{providers['soap']}/_control", json={"fail_next": 1, "status": 503}, timeout=5)
    post(live, klin2_case(make_case))
    live.extensions["gateway.worker"].run_until_idle()
    store = live.extensions["gateway.store"]
    row = store.outbox_rows("1177-C-0001")[0]
    assert row["status"] == "done"
    assert [a["outcome"] for a in store.attempts_of(row["id"])] == ["retry", "delivered"]
    assert len(received(providers["soap"])["received"]) == 1


def test_lost_answer_redelivery_is_recognised_downstream(live, providers, make_case):
    """The provider stores the case but its answer is lost: the retry carries the same key,
    so the provider answers with the same case and stores nothing twice."""
    requests.post(f"{providers['rest']}/_control", json={"fail_next": 1, "status": 503, "after_store": True}, timeout=5)
    post(live, make_case())
    live.extensions["gateway.worker"].run_until_idle()
    got = received(providers["rest"])
    assert got["total_calls"] == 2 and len(got["received"]) == 1  # two calls, one case stored
    assert live.extensions["gateway.store"].case_row("1177-C-0001")["provider_case_id"] == got["received"][0]["id"]


def test_a_slow_target_does_not_serialise_other_cases(live, providers, make_case):
    """Four deliveries at 0.5 s each finish in about 0.5 s with four in flight, not 2 s
    (the bound leaves a second of slack for a busy CI machine)."""
    import time

    requests.post(f"{providers['rest']}/_control", json={"delay_s": 0.5}, timeout=5)
    try:
        for i in range(4):
            post(live, make_case(caseId=f"S-{i}"))
        worker = live.extensions["gateway.worker"]
        worker.start()
        started = time.monotonic()
        store = live.extensions["gateway.store"]
        while any(store.outbox_rows(f"S-{i}")[0]["status"] != "done" for i in range(4)):
            assert time.monotonic() - started < 10
            time.sleep(0.02)
        assert time.monotonic() - started < 1.5
    finally:
        requests.post(f"{providers['rest']}/_control", json={"delay_s": 0}, timeout=5)


# -- the mappings CLI ----------------------------------------------------------------------------------


def test_mappings_check_and_try(runner, tmp_path, make_case):
    path = write_config(tmp_path, example_data(tmp_path))
    result = runner.invoke(cli.cli, ["mappings", "check", "--config", str(path)])
    assert result.exit_code == 0 and "field maps for demo_rest, demo_soap" in result.output
    case = tmp_path / "case.xml"
    case.write_bytes(make_case())
    result = runner.invoke(cli.cli, ["mappings", "try", str(case), "--target", "demo_rest", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "POST http://127.0.0.1:8081/api/cases" in result.output and '"type": "SYNPUNKT"' in result.output
    result = runner.invoke(cli.cli, ["mappings", "try", str(case), "--target", "demo_soap", "--config", str(path)])
    assert "<ns0:RegisterCase" in result.output and "<ns0:caseType>10</ns0:caseType>" in result.output


def test_mappings_check_names_file_key_and_value(runner, tmp_path):
    import shutil

    maps = tmp_path / "maps"
    shutil.copytree(ROOT / "mappings", maps)
    text = (maps / "fieldmaps" / "demo_rest.yaml").read_text()
    (maps / "fieldmaps" / "demo_rest.yaml").write_text(
        text.replace("transform: datetime", "transform: yyyymmdd").replace("text: case.text", "text: citizen.text")
    )
    (maps / "codes.yaml").write_text((maps / "codes.yaml").read_text().replace("AVSLUTAD: CLOSED", "AVSLUTAD: DONE"))
    data = example_data(tmp_path)
    data["mappings"]["dir"] = str(maps)
    result = runner.invoke(cli.cli, ["mappings", "check", "--config", str(write_config(tmp_path, data))])
    assert result.exit_code == 1
    line = _line_of(text, "    createdAt:")
    assert f"fieldmaps/demo_rest.yaml:{line}: deliver_case.body.createdAt: unknown transform 'yyyymmdd'" in result.output
    line = _line_of(text, "    text: case.text")
    assert f"fieldmaps/demo_rest.yaml:{line}: deliver_case.body.text: source 'citizen.text' must start with" in result.output
    assert "codes.yaml: statuses.demo_rest.AVSLUTAD: 'DONE' is not a 1177 status" in result.output


def _line_of(text: str, start: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if line.startswith(start))


def _edited_mappings(tmp_path, fieldmap: str, old: str, new: str) -> str:
    """A config whose mappings are the shipped ones with ``old`` replaced by ``new`` in a field map."""
    import shutil

    maps = tmp_path / "maps"
    shutil.copytree(ROOT / "mappings", maps)
    path = maps / "fieldmaps" / f"{fieldmap}.yaml"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    data = example_data(tmp_path)
    data["mappings"]["dir"] = str(maps)
    return str(write_config(tmp_path, data))


def test_a_typo_in_a_source_path_fails_check_with_file_line_and_the_nearest_field(runner, tmp_path):
    config = _edited_mappings(tmp_path, "demo_rest", "    text: case.text", "    text: case.txt")
    line = _line_of((ROOT / "mappings/fieldmaps/demo_rest.yaml").read_text(), "    text: case.text")
    expected = f"fieldmaps/demo_rest.yaml:{line}: deliver_case.body.text: unknown source 'case.txt': did you mean 'case.text'?"
    for command in (["check"], ["mappings", "check"]):
        result = runner.invoke(cli.cli, [*command, "--config", config])
        assert result.exit_code == 1, result.output
        assert expected in result.output
    served = runner.invoke(cli.cli, ["serve", "--config", config])
    assert served.exit_code == 2 and "case.txt" in served.output  # the start refuses it too
    cfg = config_mod.load(config, environ={})
    with pytest.raises(ConfigError, match="did you mean 'case.text'"):
        gateway.create_app(cfg)


@pytest.mark.parametrize("fieldmap, old, new, says", [
    ("demo_rest", "fileName: item.file_name", "fileName: item.filename", "unknown source 'item.filename': did you mean 'item.file_name'?"),
    ("demo_rest", "each: case.attachments", "each: case.attachment", "unknown source 'case.attachment': did you mean 'case.attachments'?"),
    ("demo_soap", "careUnit: case.complaint.care_unit_hsa_id", "careUnit: case.complaint.unit",
     "deliver_case.body.complaint.careUnit: unknown source 'case.complaint.unit'"),
    ("demo_soap", "unitCode: {from: route.unit_code", "unitCode: {from: route.unitcode",
     "deliver_case.body.unitCode.from: unknown source 'route.unitcode': did you mean 'route.unit_code'?"),
    ("demo_rest", "mobile: contact.mobile", "mobile: case.subject_of_care.contact.mobile", "use 'contact.…'"),
    ("demo_rest", "externalCaseId: case.case_id", "externalCaseId: item.case_id", "source 'item.case_id' must start with"),
])
def test_every_source_path_is_checked_against_the_case_vocabulary(runner, tmp_path, fieldmap, old, new, says):
    result = runner.invoke(cli.cli, ["mappings", "check", "--config", _edited_mappings(tmp_path, fieldmap, old, new)])
    assert result.exit_code == 1 and says in result.output, result.output
    assert result.output.count("FAIL") == 1  # the items of a wrong 'each' are not reported again


def test_ws_security_username_token_is_sent_and_the_password_never_shown(providers, config_data):
    import adapters

    data = copy.deepcopy(config_data)
    data["targets"]["demo_soap"]["endpoint"] = f"{providers['soap']}/soap"
    data["targets"]["demo_soap"]["wsse"] = {"username": "gateway", "password": "pw-s3cret"}
    cfg = config_mod.from_dict(data, base_dir=ROOT, environ={})
    adapter = adapters.build("demo_soap", cfg.targets["demo_soap"])
    body = {"caseNumber": "S-1", "externalMessageId": "M-1", "sentAt": "2026-11-26T10:00:00+01:00", "text": "hej"}
    preview = adapter.preview("deliver_message", adapters.Request(body, "key-1"))
    assert "UsernameToken" in preview and "<wsse:Username>gateway</wsse:Username>" in preview
    assert "pw-s3cret" not in preview and "***" in preview
    from errors import TargetRefused

    with pytest.raises(TargetRefused) as info:  # the provider does not know case S-1: a Client fault
        adapter.deliver_message(adapters.Request(body, "key-1"))
    assert "pw-s3cret" not in str(info.value)


def test_send_test_case_reports_each_step(runner, tmp_path, providers, make_case):
    data = example_data(tmp_path)
    data["targets"]["demo_rest"]["base_url"] = f"{providers['rest']}/api"
    data["targets"]["demo_soap"]["endpoint"] = f"{providers['soap']}/soap"
    path = str(write_config(tmp_path, data))
    result = runner.invoke(cli.cli, ["send-test-case", "--target", "demo_soap", "--config", path])
    assert result.exit_code == 0, result.output
    assert "built-in test case" in result.output and "the provider's case id S-" in result.output
    case = tmp_path / "case.xml"
    case.write_bytes(make_case())
    result = runner.invoke(cli.cli, ["send-test-case", "--target", "demo_rest", "--file", str(case), "--config", path])
    assert result.exit_code == 0 and "case 1177-C-0001 read from" in result.output and "P-" in result.output
    assert not (tmp_path / "gateway.db").exists()  # nothing written to the gateway's own database
    requests.post(f"{providers['rest']}/_control", json={"fail_next": 1, "status": 422}, timeout=5)
    failed = runner.invoke(cli.cli, ["send-test-case", "--target", "demo_rest", "--config", path])
    assert failed.exit_code == 1 and "NOT delivered: GW062" in failed.output and "dead letter" in failed.output
