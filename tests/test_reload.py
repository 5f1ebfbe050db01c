"""Reloading the mappings without downtime (issue 13, item 6): the mapping files are read once
into a snapshot whose digest names them; a reload loads and checks new files first and keeps
the old mappings when they are broken; `gateway serve` does that on SIGHUP."""

from __future__ import annotations

import copy
import datetime as dt
import multiprocessing
import shutil
from pathlib import Path

import pytest
from conftest import ROOT

import mapping
from errors import ConfigError, MappingError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of the shipped mappings that a test may edit."""
    return Path(shutil.copytree(ROOT / "mappings", tmp_path / "mappings"))


def test_the_digest_names_the_bytes_the_mappings_were_parsed_from(folder):
    files = mapping.read_files(folder)
    assert sorted(files.content) == ["codes.yaml", "fieldmaps/demo_rest.yaml", "fieldmaps/demo_soap.yaml", "units.yaml"]
    maps = mapping.load_files(files)
    assert maps.digest == files.digest == mapping.load(folder).digest and len(maps.digest) == 64
    (folder / "units.yaml").write_text((folder / "units.yaml").read_text() + "\n# a comment\n")
    assert mapping.load(folder).digest != maps.digest  # any byte counts: what is in force is exactly these files
    (folder / "samples" / "complaint.xml").write_text("<not a mapping/>")
    assert mapping.read_files(folder).digest == mapping.load(folder).digest  # samples are not mappings


def test_a_mapping_file_that_is_not_utf8_is_a_mapping_error(folder):
    (folder / "fieldmaps" / "demo_rest.yaml").write_bytes(b"deliver_case:\n  body: {text: case.text}  # \xff\n")
    with pytest.raises(MappingError, match=r"fieldmaps/demo_rest.yaml is not UTF-8 text"):
        mapping.load(folder)


# -- the holder: swap or keep the old ------------------------------------------------------------------

TARGETS = ["demo_rest", "demo_soap"]


class Ticks:
    """A clock for the holder: 2026-11-26T08:00Z, one minute later at each reading."""

    def __init__(self) -> None:
        self.at = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        self.at += dt.timedelta(minutes=1)
        return self.at


def _add_unit(folder: Path, hsa: str = "SE5566778899-KLIN3", code: str = "KLIN3") -> None:
    with (folder / "units.yaml").open("a") as out:
        out.write(f"\n  - hsa_id: {hsa}\n    code: {code}\n    target: demo_rest\n    name: Ny mottagning\n")


def _default_route_last(folder: Path) -> None:
    """units.yaml ends with `default_route: null`; move it up so that rows can be appended."""
    text = (folder / "units.yaml").read_text().replace("default_route: null\n", "")
    (folder / "units.yaml").write_text("default_route: null\n" + text)


@pytest.fixture
def holder(folder):
    _default_route_last(folder)
    return mapping.Holder(folder, TARGETS, now=Ticks())


def test_a_sound_reload_puts_the_new_files_in_force(holder, folder):
    before, loaded_at = holder.current, holder.loaded_at
    assert holder.last_reload is None and not holder.current.units.knows("SE5566778899-KLIN3", dt.date(2026, 11, 26))
    _add_unit(folder)
    outcome = holder.reload()
    assert outcome.ok and outcome.error is None and outcome.digest == mapping.read_files(folder).digest
    assert holder.current is not before and holder.current.digest == outcome.digest
    assert holder.current.units.route("SE5566778899-KLIN3", dt.date(2026, 11, 26)).unit.code == "KLIN3"
    assert holder.loaded_at > loaded_at
    details = holder.details()
    assert details == {"loaded_at": holder.loaded_at.strftime("%Y-%m-%dT%H:%M:%SZ"), "digest": outcome.digest, "units": 4,
                       "last_reload": {"ok": True, "at": outcome.at, "digest": outcome.digest, "error": None}}


@pytest.mark.parametrize("breakage, expected", [
    (lambda f: (f / "units.yaml").write_text((f / "units.yaml").read_text() + "\n  - [broken\n"),
     "mapping file units.yaml is not valid YAML at line"),
    (lambda f: (f / "fieldmaps" / "demo_rest.yaml").write_text(
        (f / "fieldmaps" / "demo_rest.yaml").read_text().replace("text: case.text", "text: case.txt", 1)),
     "fieldmaps/demo_rest.yaml:40: deliver_case.body.text: unknown source 'case.txt': did you mean 'case.text'?"),
    (lambda f: (f / "codes.yaml").write_text((f / "codes.yaml").read_text().replace("    BOOKING: TIDBOKNING\n", "")),
     "case_types.demo_rest has no code for BOOKING"),
    (lambda f: _add_unit(f, code="KLIN1"), "code 'KLIN1' on target 'demo_rest' is also used by units[3]"),
    (lambda f: (f / "units.yaml").unlink(), "cannot read mapping file"),
], ids=["yaml", "vocabulary", "code-table", "unit-code-twice", "missing"])
def test_a_broken_reload_keeps_the_mappings_in_force_and_says_why(holder, folder, breakage, expected):
    before, loaded_at, digest = holder.current, holder.loaded_at, holder.current.digest
    breakage(folder)
    outcome = holder.reload()
    assert not outcome.ok and outcome.code == "GW073"
    assert expected in outcome.error and outcome.error.startswith("GW073 the mapping files in ")
    assert f"the mappings loaded at {loaded_at:%Y-%m-%dT%H:%M:%SZ} (digest {digest[:12]}) stay in force" in outcome.error
    assert "gateway mappings check" in outcome.error  # what to do
    assert holder.current is before and holder.loaded_at == loaded_at
    assert holder.details()["digest"] == digest and holder.details()["last_reload"]["error"] == outcome.error
    assert holder.on_disk() != digest


def test_many_problems_are_counted_not_all_shown(holder, folder):
    text = (folder / "fieldmaps" / "demo_rest.yaml").read_text()
    (folder / "fieldmaps" / "demo_rest.yaml").write_text(text.replace("case.", "kase."))
    outcome = holder.reload()
    assert outcome.code == "GW073" and "more problem(s))" in outcome.error
    assert outcome.error.count("must start with one of") == mapping.RELOAD_PROBLEMS_SHOWN


def test_files_that_change_while_they_are_read_are_not_put_in_force(holder, folder, monkeypatch):
    before = holder.current
    parse = mapping.load_files

    def parse_while_a_copy_goes_on(files):
        parsed = parse(files)
        _add_unit(folder, "SE5566778899-KLIN4", "KLIN4")  # the copy goes on after the files were read
        return parsed

    _add_unit(folder)
    monkeypatch.setattr(mapping, "load_files", parse_while_a_copy_goes_on)
    outcome = holder.reload()
    assert not outcome.ok and outcome.code == "GW074" and "changed while they were read" in outcome.error
    assert holder.current is before
    monkeypatch.setattr(mapping, "load_files", parse)
    assert holder.reload().ok and len(holder.current.units) == 5  # once the copy is done, the next reload takes it


def test_the_files_must_pass_at_start(folder):
    (folder / "codes.yaml").write_text((folder / "codes.yaml").read_text().replace("    BOOKING: TIDBOKNING\n", ""))
    with pytest.raises(ConfigError, match="case_types.demo_rest has no code for BOOKING"):
        mapping.Holder(folder, TARGETS, now=Ticks())


def test_the_outcome_reaches_processes_forked_before_the_reload(holder, folder):
    """What gunicorn's worker processes see: they were forked before the master reloaded."""
    context = multiprocessing.get_context("fork")
    reloaded, answers = context.Event(), context.Queue()

    def child() -> None:
        reloaded.wait(10)
        last = holder.last_reload
        answers.put((last.code, last.error, holder.current.digest) if last else None)

    process = context.Process(target=child)
    process.start()
    try:
        (folder / "units.yaml").write_text("units: [")
        outcome = holder.reload()
        reloaded.set()
        code, error, digest = answers.get(timeout=10)
    finally:
        process.join(10)
    assert code == "GW073" and error == outcome.error and digest == holder.current.digest


def test_a_shared_outcome_is_never_read_half_written():
    shared = mapping.SharedOutcome()
    assert shared.read() is None
    for n in range(50):
        shared.write({"n": n, "text": "å" * n})
        assert shared.read() == {"n": n, "text": "å" * n}
    with pytest.raises(ValueError):
        shared.write({"text": "x" * mapping.SharedOutcome.CAPACITY})
    assert shared.read()["n"] == 49  # a value too big changes nothing


# -- what a process shows: /health/ready -------------------------------------------------------------


@pytest.fixture
def reload_app(config_data, folder):
    """The app on its own copy of the mappings (the holder is ``gateway.mappings_holder``)."""
    from conftest import built_app

    _default_route_last(folder)
    data = copy.deepcopy(config_data)
    data["mappings"]["dir"] = str(folder)
    with built_app(data) as app:
        yield app


def test_ready_stays_ready_after_a_refused_reload_and_shows_why(reload_app, folder):
    client, holder = reload_app.test_client(), reload_app.extensions["gateway.mappings_holder"]
    before = client.get("/health/ready").json["mappings"]
    assert before["last_reload"] is None and before["digest"] == holder.current.digest
    (folder / "codes.yaml").write_text((folder / "codes.yaml").read_text().replace("    BOOKING: TIDBOKNING\n", ""))
    outcome = holder.reload()
    ready = client.get("/health/ready")
    assert ready.status_code == 200 and ready.json["status"] == "ready" and ready.json["problems"] == []
    shown = ready.json["mappings"]
    assert shown["digest"] == before["digest"] and shown["loaded_at"] == before["loaded_at"]
    assert shown["last_reload"] == {"ok": False, "at": outcome.at, "digest": mapping.read_files(folder).digest,
                                    "error": outcome.error}
    assert shown["last_reload"]["error"].startswith("GW073 ") and "case_types.demo_rest has no code for BOOKING" in outcome.error


def test_a_process_keeps_its_mappings_for_life_and_shows_which(reload_app, folder):
    """A sound reload puts new files in force for the processes started after it (gunicorn
    replaces them); one that is still running goes on with, and shows, the set it took."""
    client, holder = reload_app.test_client(), reload_app.extensions["gateway.mappings_holder"]
    before = client.get("/health/ready").json["mappings"]
    _add_unit(folder)
    assert holder.reload().ok
    shown = client.get("/health/ready").json["mappings"]
    assert shown["digest"] == before["digest"] == reload_app.extensions["gateway.mappings"].digest
    assert shown["last_reload"]["ok"] and shown["last_reload"]["digest"] == holder.current.digest != before["digest"]
    assert reload_app.extensions["gateway.worker"].mappings is reload_app.extensions["gateway.mappings"]
