"""Config loading (overrides, secrets, relative paths, errors) and the units mapping."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from conftest import BOARD, KLIN1, ROOT, example_data

import config as config_mod
import mapping
from errors import ConfigError, MappingError

#: about Swedish dates: `make test` also runs these at set instants (conftest --clock)
pytestmark = pytest.mark.dates


def write(tmp_path: Path, data: dict, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def example(tmp_path) -> dict:
    return example_data(tmp_path)


def test_example_config_loads_and_resolves_relative_paths():
    cfg = config_mod.load(ROOT / "config.example.yaml", environ={})
    assert cfg.database.path == ROOT / "data" / "gateway.db"
    assert cfg.mappings.dir == ROOT / "mappings"
    assert cfg.gateway.hsa_id == "SE5566778899-GW01"
    assert set(cfg.targets) == {"demo_rest", "demo_soap"}


def test_relative_paths_start_at_the_config_files_folder(tmp_path, example):
    (tmp_path / "etc").mkdir()
    example["database"]["path"] = "data/gateway.db"
    path = write(tmp_path / "etc", example)
    cfg = config_mod.load(path, environ={})
    assert cfg.database.path == tmp_path / "etc" / "data" / "gateway.db"
    assert cfg.targets["demo_soap"].wsdl == ROOT / "sandbox" / "wsdl" / "DemoCaseService_1.0.wsdl"


def test_environment_overrides_any_key(tmp_path, example):
    path = write(tmp_path, example)
    cfg = config_mod.load(
        path,
        environ={
            "GATEWAY__DATABASE__PATH": "other/gw.db",
            "GATEWAY__SERVER__THREADS": "3",
            "GATEWAY__WORKER__ENABLED": "false",
            "GATEWAY__TARGETS__DEMO_REST__BASE_URL": "http://127.0.0.1:9/x",
        },
    )
    assert cfg.database.path == tmp_path / "other" / "gw.db"
    assert cfg.server.threads == 3 and cfg.worker.enabled is False
    assert cfg.targets["demo_rest"].base_url == "http://127.0.0.1:9/x"


def test_environment_override_is_text_converted_by_the_keys_own_type(tmp_path, example):
    path = write(tmp_path, example)
    cfg = config_mod.load(path, environ={
        "GATEWAY__GATEWAY__NAME": "1177",  # a name of digits stays text
        "GATEWAY__TARGETS__DEMO_REST__DESCRIPTION": "no",  # text, not a boolean
        "GATEWAY__WORKER__ENABLED": "no",  # a boolean key takes yes/no, on/off
        "GATEWAY__SERVER__THREADS": "12",
        "GATEWAY__NATIONAL__NOTIFY": "off",
        "GATEWAY__TARGETS__DEMO_SOAP__TIMEOUT_S": "7.5",
        "GATEWAY__LOGGING__LEVEL": "WARNING",
        "GATEWAY__GATEWAY__PUBLIC_URL": "null",  # a key that may be null
        "GATEWAY__RIVTA__ALLOWED_CONSUMERS": '["SE165565594230-1000"]',  # a list, as JSON
    })
    assert cfg.gateway.name == "1177" and cfg.targets["demo_rest"].description == "no"
    assert cfg.worker.enabled is False and cfg.national.notify is False
    assert cfg.server.threads == 12 and cfg.targets["demo_soap"].timeout_s == 7.5
    assert cfg.logging.level == "WARNING" and cfg.gateway.public_url is None
    assert cfg.rivta.allowed_consumers == ["SE165565594230-1000"]
    on = config_mod.load(path, environ={"GATEWAY__GATEWAY__NAME": "on", "GATEWAY__RIVTA__REQUIRE_CLIENT_CERT": "off"})
    assert on.gateway.name == "on" and on.rivta.require_client_cert is False


@pytest.mark.parametrize("variable, value, key, says", [
    ("GATEWAY__SERVER__THREADS", "many", "server.threads", "valid integer"),
    ("GATEWAY__WORKER__ENABLED", "maybe", "worker.enabled", "valid boolean"),
    ("GATEWAY__LOGGING__LEVEL", "LOUD", "logging.level", "'DEBUG', 'INFO'"),
    ("GATEWAY__SERVER__THREADZ", "4", "server.threadz", "unknown key"),
    ("GATEWAY__RIVTA__ALLOWED_CONSUMERS", "a,b", "rivta.allowed_consumers", "not JSON"),
])
def test_a_bad_environment_override_names_the_key_and_the_variable(tmp_path, example, variable, value, key, says):
    with pytest.raises(ConfigError) as info:
        config_mod.load(write(tmp_path, example), environ={variable: value})
    text = str(info.value)
    assert text.startswith("GW001") and f"'{key}'" in text and variable in text and says in text


def test_config_from_environment_variable(tmp_path, example):
    path = write(tmp_path, example)
    assert config_mod.load(None, environ={"GATEWAY_CONFIG": str(path)}).source == path


def test_secrets_from_env_and_file(tmp_path, example):
    (tmp_path / "name.txt").write_text("from a file\n")
    example["gateway"]["name"] = {"$file": "name.txt"}
    example["targets"]["demo_rest"]["description"] = {"$env": "DESC"}
    cfg = config_mod.load(write(tmp_path, example), environ={"DESC": "from env"})
    assert cfg.gateway.name == "from a file"
    assert cfg.targets["demo_rest"].description == "from env"


def test_missing_secret_names_the_key(tmp_path, example):
    example["targets"]["demo_rest"]["description"] = {"$env": "NOT_SET_ANYWHERE"}
    with pytest.raises(ConfigError) as info:
        config_mod.load(write(tmp_path, example), environ={})
    assert "targets.demo_rest.description" in str(info.value) and "NOT_SET_ANYWHERE" in str(info.value)


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda d: d["server"].update(threads="many"), "server.threads"),
        (lambda d: d["server"].update(bind="8080"), "server.bind"),
        (lambda d: d["database"].update(pathh="x"), "database.pathh"),
        (lambda d: d["gateway"].update(hsa_id="GW01"), "gateway.hsa_id"),
        (lambda d: d["targets"]["demo_rest"].update(kind="ftp"), "targets.demo_rest.kind"),
        (lambda d: d.pop("gateway"), "gateway"),
        (lambda d: d["intake"].update(max_attachments=6), "intake.max_attachments"),
        (lambda d: d["targets"]["demo_rest"]["paths"].update(deliver_case="PUT /v2/x"), "targets.demo_rest.paths.deliver_case"),
        (lambda d: d["targets"]["demo_rest"]["paths"].update(deliver_message="https://j.example.se/m"),
         "targets.demo_rest.paths.deliver_message"),
        (lambda d: d["targets"]["demo_rest"]["paths"].update(deliver_case="/cases/{caseid}"), "targets.demo_rest.paths.deliver_case"),
        (lambda d: d["targets"]["demo_rest"].update(methods={"deliver_case": "GET"}), "targets.demo_rest.methods.deliver_case"),
        (lambda d: d["targets"]["demo_rest"].update(methods={"deliver_cases": "PUT"}), "targets.demo_rest.methods.deliver_cases"),
        (lambda d: d["targets"]["demo_rest"].update(success_statuses=[200, 404]), "targets.demo_rest.success_statuses.1"),
        (lambda d: d["targets"]["demo_rest"]["medications"].update(path="GET /meds"), "targets.demo_rest.medications.path"),
    ],
)
def test_wrong_config_names_the_dotted_key(tmp_path, example, change, key):
    change(example)
    with pytest.raises(ConfigError) as info:
        config_mod.load(write(tmp_path, example), environ={})
    assert f"'{key}'" in str(info.value)
    assert str(info.value).startswith("GW001")


def test_not_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        config_mod.load(bad, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        config_mod.load(tmp_path / "nope.yaml", environ={})
    with pytest.raises(ConfigError, match="no config file"):
        config_mod.load(None, environ={})


# -- mappings -------------------------------------------------------------------------------


def test_shipped_units_route_the_demo_units():
    maps = mapping.load(ROOT / "mappings")
    today = dt.date(2026, 11, 26)
    assert maps.units.route(KLIN1.lower(), today).target == "demo_rest"
    assert maps.units.route("SE5566778899-KLIN2", today).target == "demo_soap"
    assert maps.units.route(BOARD, today).unit.patient_board
    assert maps.units.route("SE5566778899-OTHER", today) is None
    assert maps.units.by_code("demo_rest", "KLIN1", today).hsa_id == KLIN1
    with pytest.raises(MappingError, match="no unit with code 'NOPE'"):
        maps.units.by_code("demo_rest", "NOPE", today)
    assert maps.problems(["demo_rest", "demo_soap"]) == []


def _units(tmp_path: Path, data: dict) -> mapping.Mappings:
    (tmp_path / "units.yaml").write_text(yaml.safe_dump(data))
    return mapping.load(tmp_path)


def test_validity_dates_and_default_route(tmp_path):
    maps = _units(
        tmp_path,
        {
            "units": [
                {"hsa_id": KLIN1, "code": "OLD", "target": "t", "valid_to": dt.date(2025, 12, 31)},
                {"hsa_id": KLIN1, "code": "NEW", "target": "t", "valid_from": dt.date(2026, 1, 1)},
                {"hsa_id": BOARD, "code": "PN", "target": "t", "patient_board": True},
            ],
            "default_route": {"hsa_id": BOARD},
        },
    )
    assert maps.units.route(KLIN1, dt.date(2025, 12, 31)).unit.code == "OLD"
    assert maps.units.route(KLIN1, dt.date(2026, 1, 1)).unit.code == "NEW"
    fallback = maps.units.route("SE5566778899-ELSE", dt.date(2026, 1, 1))
    assert fallback.by_default and fallback.unit.hsa_id == BOARD
    assert not maps.units.knows("SE5566778899-ELSE", dt.date(2026, 1, 1))
    assert maps.units.problems(["t"]) == []


def test_problems_are_listed_with_file_and_row(tmp_path):
    maps = _units(
        tmp_path,
        {
            "units": [
                {"hsa_id": KLIN1, "code": "A", "target": "t"},
                {"hsa_id": KLIN1.lower(), "code": "B", "target": "t", "valid_from": dt.date(2026, 1, 1)},
                {"hsa_id": BOARD, "code": "A", "target": "t"},
                {"hsa_id": "SE5566778899-X", "code": "X", "target": "nowhere"},
            ],
            "default_route": {"hsa_id": "SE5566778899-GONE"},
        },
    )
    problems = maps.problems(["t"])
    assert any("units[0]" in p and "overlaps units[1]" in p for p in problems)
    assert any("code 'A'" in p and "units[2]" in p for p in problems)
    assert any("target 'nowhere'" in p for p in problems)
    assert any("default_route" in p for p in problems)


def test_bad_mapping_file_names_file_and_key(tmp_path):
    with pytest.raises(MappingError) as info:
        _units(tmp_path, {"units": [{"hsa_id": "KLIN1", "code": "A", "target": "t"}]})
    assert "units.yaml: units[0].hsa_id" in str(info.value)
    with pytest.raises(MappingError, match="unknown key"):
        _units(tmp_path, {"units": [{"hsa_id": KLIN1, "code": "A", "target": "t", "colour": "red"}]})
    with pytest.raises(MappingError, match="does not exist"):
        mapping.load(tmp_path / "missing")


# -- the fields a field map can use -----------------------------------------------------------------


def _paths(node, prefix=""):
    """Every path into plain data, ``[]`` for the items of a list (as the vocabulary writes them)."""
    if prefix and not prefix.endswith("[]"):
        yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(node, list):
        for value in node[:1]:
            yield from _paths(value, f"{prefix}[]")


def _everything_case():
    from model import (PERSONNUMMER_OID, Attachment, Case, CaseType, ChosenMedication, Complaint, Contact, Message,
                       PersonId, Receiver, ReplyChannel, ReplyPreference, Representative, SubjectOfCare)

    when = dt.datetime(2026, 11, 26, 10, 15, tzinfo=dt.timezone.utc)
    person = PersonId.parse("191212121212", PERSONNUMMER_OID)
    files = (Attachment("a.pdf", "application/pdf", b"%PDF-1.4"),)
    case = Case("C-1", CaseType.COMPLAINT, Receiver(KLIN1), SubjectOfCare(person, "T", Contact("+4670", "t@x.se", True)),
                when, "text", "subject", Representative(person, "R", True), ReplyPreference(True, ReplyChannel.INKORG),
                Complaint(dt.date(2026, 11, 1), False, "place", KLIN1), files, (ChosenMedication("RX-1", "med"),))
    message = Message("C-1", "M-1", when, "text", subject="s", attachments=files, sender_hsa_id=KLIN1, sender_name="n")
    return case, message


def test_the_vocabulary_is_exactly_what_a_field_map_is_given():
    case, message = _everything_case()
    source = mapping.delivery_source(case=case, message=message, route={"unit_code": "K", "target": "t", "hsa_id": KLIN1},
                                     provider_case_id="P-1", idempotency_key="key", gateway_hsa_id="SE5566778899-GW01")
    assert set(_paths(source)) == set(mapping.VOCABULARY)
    assert not [p for p in mapping.VOCABULARY if p.startswith("case.subject_of_care.contact")]  # only as contact.…
    leaves = [f for f in mapping.vocabulary() if f.type not in ("object", "list")]
    assert [f.path for f in leaves if f.example is None] == []  # every field shows an example
    assert mapping.VOCABULARY["case.case_type"].values == ("COMPLAINT", "QUESTION", "PRESCRIPTION_RENEWAL", "BOOKING", "OTHER")
    assert mapping.VOCABULARY["contact.mobile"].type == "text" and "consented" in mapping.VOCABULARY["contact"].when


def test_mappings_fields_prints_the_vocabulary(runner):
    import json

    import cli
    import gateway

    result = runner.invoke(cli.cli, ["mappings", "fields"])
    assert result.exit_code == 0
    line = next(line for line in result.output.splitlines() if line.startswith("case.text "))
    assert line.split()[1] == "text" and "always" in line
    assert any(line.startswith("case.complaint.event_date ") and "COMPLAINT cases only" in line for line in result.output.splitlines())
    rows = json.loads(runner.invoke(cli.cli, ["mappings", "fields", "--json"]).output)
    assert [r["path"] for r in rows] == list(mapping.VOCABULARY)
    assert {"path": "case.attachments[].file_name", "type": "text", "example": "intyg.pdf",
            "when": "when the citizen attached files (at most 5)"} in rows


def test_the_readme_lists_every_field_a_field_map_can_use():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### The fields a field map can use"):]
    missing = [path for path in mapping.VOCABULARY if f"`{path}`" not in section]
    assert missing == []
