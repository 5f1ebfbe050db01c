"""The sandbox keeps to itself (issue 13, item 7): the config `gateway sandbox` writes uses
its own mappings (sandbox/mappings) and the demo targets only, so a target added to
mappings/ and config.example.yaml for going live cannot break `make run`. (The whole loop
is tests/test_sandbox.py, marked slow.)"""

from __future__ import annotations

import yaml
from conftest import ROOT

import cli
import gateway
from sandbox import demo

PORTS = {"national": 18083, "rest": 18081, "soap": 18082, "gateway": 18080}


def _template_with_a_live_target(tmp_path):
    """config.example.yaml as README's "Going live" has it edited: one more target."""
    data = yaml.safe_load((ROOT / "config.example.yaml").read_text(encoding="utf-8"))
    data["targets"]["journal"] = {"kind": "rest", "base_url": "https://journal.example.org/api",
                                  "paths": {"deliver_case": "/cases", "deliver_message": "/cases/{provider_case_id}/messages"}}
    path = tmp_path / "config.example.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def test_the_sandbox_config_points_at_its_own_mappings_and_the_demo_targets_only(tmp_path):
    path = demo.write_config(tmp_path, PORTS, template=_template_with_a_live_target(tmp_path))
    written = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert written["mappings"]["dir"] == str(ROOT / "sandbox" / "mappings")
    assert list(written["targets"]) == ["demo_rest", "demo_soap"]
    assert written["targets"]["demo_rest"]["base_url"] == "http://127.0.0.1:18081/api"


def test_the_sandbox_mappings_pass_mappings_check(tmp_path, runner, monkeypatch):
    path = demo.write_config(tmp_path, PORTS, template=_template_with_a_live_target(tmp_path))
    monkeypatch.setenv("SANDBOX_API_TOKEN", "sandbox-token-for-the-check")  # as the sandbox sets it for its gateway
    result = runner.invoke(cli.cli, ["mappings", "check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "field maps for demo_rest, demo_soap" in result.output
    for name in ("units.yaml", "codes.yaml", "fieldmaps/demo_rest.yaml", "fieldmaps/demo_soap.yaml"):
        assert (ROOT / "sandbox" / "mappings" / name).is_file(), name


def test_the_sandbox_units_route_only_to_the_demo_targets():
    units = yaml.safe_load((ROOT / "sandbox" / "mappings" / "units.yaml").read_text(encoding="utf-8"))
    routed = {u["target"] for u in units["units"]} | ({units["default_route"]["target"]}
                                                    if isinstance(units.get("default_route"), dict) and "target" in units["default_route"] else set())
    assert routed <= set(demo.DEMO_TARGETS)
