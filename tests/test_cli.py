"""The `gateway` command: check, migrate, and the errors a wrong config gives."""

from __future__ import annotations

import pytest
import yaml
from conftest import ROOT, example_data, write_config

import cli
import gateway


def _config(tmp_path, **changes) -> str:
    data = example_data(tmp_path)
    for section, values in changes.items():
        data[section].update(values)
    return str(write_config(tmp_path, data))


def test_check_passes_on_the_shipped_example(runner):
    result = runner.invoke(cli.cli, ["check", "--config", str(ROOT / "config.example.yaml")], env={})
    assert result.exit_code == 0, result.output
    assert "all checks passed" in result.output and "3 unit(s)" in result.output


def test_check_reports_a_wrong_key_with_its_path(runner, tmp_path):
    result = runner.invoke(cli.cli, ["check", "--config", _config(tmp_path, server={"threads": "lots"})])
    assert result.exit_code == 1
    assert "GW001" in result.output and "'server.threads'" in result.output


def test_check_reports_mapping_problems(runner, tmp_path):
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "units.yaml").write_text(
        yaml.safe_dump({"units": [{"hsa_id": "SE5566778899-A", "code": "A", "target": "unknown_target"}]})
    )
    result = runner.invoke(cli.cli, ["check", "--config", _config(tmp_path, mappings={"dir": str(maps)})])
    assert result.exit_code == 1 and "target 'unknown_target'" in result.output


def test_check_refuses_a_rest_path_that_is_not_a_path(runner, tmp_path):
    data = example_data(tmp_path)
    data["targets"]["demo_rest"]["paths"]["deliver_case"] = "PUT /v2/cases"
    result = runner.invoke(cli.cli, ["check", "--config", str(write_config(tmp_path, data))])
    assert result.exit_code == 1
    assert ("FAIL config: GW001 config key 'targets.demo_rest.paths.deliver_case': 'PUT /v2/cases' is not a path: "
            "the HTTP method goes under 'methods'") in result.output


def test_config_from_environment_and_migrate(runner, tmp_path):
    path = _config(tmp_path)
    result = runner.invoke(cli.cli, ["migrate"], env={"GATEWAY_CONFIG": path})
    assert result.exit_code == 0 and "applied m001_intake" in result.output
    again = runner.invoke(cli.cli, ["migrate", "--config", path])
    assert "up to date" in again.output
    checked = runner.invoke(cli.cli, ["check", "--config", path])
    assert checked.exit_code == 0 and "schema up to date" in checked.output


def test_env_override_reaches_the_cli(runner, tmp_path):
    path = _config(tmp_path)
    result = runner.invoke(cli.cli, ["check", "--config", path], env={"GATEWAY__SERVER__BIND": "nonsense"})
    assert result.exit_code == 1 and "'server.bind'" in result.output


def test_serve_refuses_a_bad_config_before_opening_a_port(runner, tmp_path):
    result = runner.invoke(cli.cli, ["serve", "--config", _config(tmp_path, gateway={"hsa_id": "nope"})])
    assert result.exit_code == 2 and "GW001" in result.output and "'gateway.hsa_id'" in result.output


def test_missing_config_says_what_to_do(runner):
    result = runner.invoke(cli.cli, ["check"], env={"GATEWAY_CONFIG": None})
    assert result.exit_code != 0 and "--config" in result.output


def test_check_and_serve_refuse_an_operation_the_wsdl_does_not_have(runner, tmp_path):
    data = example_data(tmp_path)
    data["targets"]["demo_soap"]["operations"]["deliver_case"] = "CreateCase"
    path = str(write_config(tmp_path, data))
    result = runner.invoke(cli.cli, ["check", "--config", path])
    assert result.exit_code == 1
    assert "targets.demo_soap.operations.deliver_case: the WSDL has no operation 'CreateCase'" in result.output
    served = runner.invoke(cli.cli, ["serve", "--config", path])
    assert served.exit_code == 2 and "CreateCase" in served.output


def test_target_pause_and_resume(runner, tmp_path):
    from store import Store

    path = _config(tmp_path)
    result = runner.invoke(cli.cli, ["target", "pause", "demo_rest", "--config", path])
    assert result.exit_code == 0 and "paused" in result.output
    store = Store(tmp_path / "gateway.db")
    assert store.paused_targets() == {"demo_rest"}
    runner.invoke(cli.cli, ["target", "resume", "demo_rest", "--config", path])
    assert store.paused_targets() == set()
    unknown = runner.invoke(cli.cli, ["target", "pause", "nope", "--config", path])
    assert unknown.exit_code == 2 and "no target 'nope'" in unknown.output


def _codes_config(tmp_path, edit) -> str:
    import shutil

    maps = tmp_path / "maps"
    shutil.copytree(ROOT / "mappings", maps)
    codes = yaml.safe_load((maps / "codes.yaml").read_text())
    edit(codes)
    (maps / "codes.yaml").write_text(yaml.safe_dump(codes))
    data = example_data(tmp_path)
    data["mappings"]["dir"] = str(maps)
    return str(write_config(tmp_path, data))


def test_check_refuses_a_target_without_a_code_for_a_case_type_it_can_receive(runner, tmp_path):
    path = _codes_config(tmp_path, lambda codes: codes["case_types"]["demo_rest"].pop("BOOKING"))
    result = runner.invoke(cli.cli, ["check", "--config", path])
    assert result.exit_code == 1
    assert ("FAIL mappings: GW002 codes.yaml: case_types.demo_rest has no code for BOOKING: target 'demo_rest' serves "
            "SE5566778899-KLIN1, SE2321000016-PN01 (units.yaml)") in result.output
    assert "add 'BOOKING: <your code>'" in result.output and result.output.count("FAIL") == 1
    assert runner.invoke(cli.cli, ["mappings", "check", "--config", path]).exit_code == 1
    served = runner.invoke(cli.cli, ["serve", "--config", path])
    assert served.exit_code == 2 and "no code for BOOKING" in served.output  # the start refuses it too
    import config as config_mod
    from errors import ConfigError

    with pytest.raises(ConfigError, match="case_types.demo_rest has no code for BOOKING"):
        gateway.create_app(config_mod.load(path, environ={}))


def test_check_refuses_a_field_map_that_looks_up_case_types_without_a_table(runner, tmp_path):
    path = _codes_config(tmp_path, lambda codes: codes["case_types"].pop("demo_soap"))
    result = runner.invoke(cli.cli, ["check", "--config", path])
    assert result.exit_code == 1
    assert ("codes.yaml: case_types has no section for target 'demo_soap', which serves SE5566778899-KLIN2 (units.yaml) "
            "and whose fieldmaps/demo_soap.yaml looks case types up") in result.output


def test_check_refuses_a_statuses_table_without_a_code_for_each_1177_status(runner, tmp_path):
    path = _codes_config(tmp_path, lambda codes: codes["statuses"]["demo_soap"].pop("9"))
    result = runner.invoke(cli.cli, ["check", "--config", path])
    assert result.exit_code == 1
    assert "codes.yaml: statuses.demo_soap has no code for CLOSED: target 'demo_soap' sends its own status codes" in result.output


def test_codes_are_needed_only_where_they_are_used(runner, tmp_path):
    import shutil

    maps = tmp_path / "maps"
    shutil.copytree(ROOT / "mappings", maps)
    # demo_soap sends 1177's own case type codes (no lookup, no table) and 1177's own statuses
    fieldmap = maps / "fieldmaps" / "demo_soap.yaml"
    fieldmap.write_text(fieldmap.read_text().replace("caseType: {from: case.case_type, lookup: case_types}", "caseType: case.case_type"))
    codes = yaml.safe_load((maps / "codes.yaml").read_text())
    del codes["case_types"]["demo_soap"], codes["statuses"]["demo_soap"]
    (maps / "codes.yaml").write_text(yaml.safe_dump(codes))
    data = example_data(tmp_path)
    data["mappings"]["dir"] = str(maps)
    # and a target no unit is routed to needs no codes at all
    data["targets"]["spare"] = {**data["targets"]["demo_rest"], "description": "not routed yet"}
    shutil.copy(maps / "fieldmaps" / "demo_rest.yaml", maps / "fieldmaps" / "spare.yaml")
    result = runner.invoke(cli.cli, ["check", "--config", str(write_config(tmp_path, data))])
    assert result.exit_code == 0, result.output
