"""Reloading the mappings without downtime (issue 13, item 6): the mapping files are read once
into a snapshot whose digest names them; a reload loads and checks new files first and keeps
the old mappings when they are broken; `gateway serve` does that on SIGHUP."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from conftest import KLIN1, ROOT, example_data, free_port, write_config
from test_server import gateway_command, stop_server, wait_until_serving

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


# -- `gateway serve` and SIGHUP, while 1177 sends cases --------------------------------------------------

KLIN3 = "SE5566778899-KLIN3"


class _Provider(BaseHTTPRequestHandler):
    """The provider system of target demo_rest: takes every case (201, its own id)."""

    cases: dict[str, dict] = {}

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        _Provider.cases[body["externalId"]] = body
        data = json.dumps({"id": f"P-{body['externalId']}"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def serving(tmp_path, folder):
    """`gateway serve` (two server processes and its worker process) on a copy of the mappings,
    delivering to a provider stub: {base, process, log, folder, db}."""
    _Provider.cases = {}
    provider = ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    threading.Thread(target=provider.serve_forever, daemon=True).start()
    _default_route_last(folder)
    data = example_data(tmp_path)
    data["mappings"]["dir"] = str(folder)
    data["server"].update(workers=2, threads=4)
    data["targets"]["demo_rest"]["base_url"] = f"http://127.0.0.1:{provider.server_address[1]}/api"
    data["outbound"]["confirmations"]["enabled"] = False
    data["logging"]["format"] = "json"
    write_config(tmp_path, data)
    port, log_path = free_port(), tmp_path / "server.log"
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [*gateway_command(), "serve", "--config", str(tmp_path / "config.yaml"), "--bind", f"127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base, process, log_path)
        yield {"base": base, "process": process, "log": log_path, "folder": folder, "db": tmp_path / "gateway.db"}
    finally:
        stop_server(process)
        log.close()
        provider.shutdown()


class Senders:
    """Threads that send 1177 cases to KLIN1 over RIV-TA one after the other (each on its own
    kept-alive connection, as the platform does) until stopped; every answer is kept."""

    def __init__(self, base: str, make_case, threads: int = 3):
        self.base, self.make_case = base, make_case
        self.answers: list[tuple[str, float, float, int, bytes]] = []  # case id, sent, answered, status, body
        self._stop, self._lock, self._count = threading.Event(), threading.Lock(), itertools.count(1)
        self._threads = [threading.Thread(target=self._send, daemon=True) for _ in range(threads)]

    def _send(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            with self._lock:  # one zeep client builds the requests
                case_id = f"HUP-{next(self._count):04d}"
                body = self.make_case(caseId=case_id)
            sent = time.monotonic()
            try:
                answer = session.post(f"{self.base}/rivta", data=body, headers={"Content-Type": "text/xml; charset=UTF-8"},
                                      timeout=30)
                status, content = answer.status_code, answer.content
            except requests.RequestException as exc:  # a refused or dropped connection: what must not happen
                status, content = 0, repr(exc).encode()
            self.answers.append((case_id, sent, time.monotonic(), status, content))

    def __enter__(self) -> Senders:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answers) < count:
            assert time.monotonic() < deadline, f"only {len(self.answers)} answers"
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def refused(self) -> list[tuple[str, int, bytes]]:
        return [(case_id, status, body[:300]) for case_id, _, _, status, body in self.answers
                if status != 200 or b">OK<" not in body]


def _log_line(log: Path, event: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{") and json.loads(line).get("event") == event:
                return json.loads(line)
        assert time.monotonic() < deadline, f"no '{event}' in the log:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def _wait_for_log(log: Path, matches, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{") and matches(json.loads(line)):
                return json.loads(line)
        assert time.monotonic() < deadline, f"no such line in the log:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def _ready_everywhere(base: str, digest: str, timeout: float = 20) -> list[dict]:
    """/health/ready, on fresh connections, until eight answers in a row (both processes,
    whichever takes each connection) show the mappings ``digest`` in force."""
    deadline, seen = time.monotonic() + timeout, []
    while len(seen) < 8:
        answer = requests.get(f"{base}/health/ready", headers={"Connection": "close"}, timeout=10)
        seen = [*seen, answer.json()] if answer.json().get("mappings", {}).get("digest") == digest else []
        assert answer.status_code == 200, answer.text
        assert time.monotonic() < deadline, f"the processes do not all show {digest[:12]}: {answer.json()}"
    return seen


def _routes(db: Path, prefix: str) -> dict[str, tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return {case_id: (target, code) for case_id, target, code in
                conn.execute("SELECT case_id, target, provider_unit_code FROM cases WHERE case_id LIKE ?", (prefix + "%",))}


def _delivered(case_ids: set[str], timeout: float = 60) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while not case_ids <= set(_Provider.cases):
        assert time.monotonic() < deadline, f"not delivered: {sorted(case_ids - set(_Provider.cases))[:10]}"
        time.sleep(0.1)
    return {case_id: _Provider.cases[case_id] for case_id in case_ids}


@pytest.mark.slow
def test_sighup_with_a_broken_file_while_cases_arrive_keeps_the_old_mappings(serving, make_case):
    folder, base = serving["folder"], serving["base"]
    in_force = mapping.read_files(folder).digest
    fieldmap = folder / "fieldmaps" / "demo_rest.yaml"
    with Senders(base, make_case) as senders:
        senders.wait_for(20)
        fieldmap.write_text(fieldmap.read_text().replace("text: case.text", "text: case.txt", 1))
        hup_at = time.monotonic()
        os.kill(serving["process"].pid, signal.SIGHUP)
        line = _log_line(serving["log"], "mappings not reloaded: the ones in force stay")
        after = len(senders.answers)
        senders.wait_for(after + 30)  # cases go on arriving after the refused reload
    assert senders.refused() == []  # nothing refused that would have been accepted
    assert any(sent < hup_at for _, sent, _, _, _ in senders.answers) and any(sent > hup_at for _, sent, _, _, _ in senders.answers)
    assert line["level"] == "ERROR" and line["error_code"] == "GW073" and line["in_force"] == in_force
    assert "fieldmaps/demo_rest.yaml:40: deliver_case.body.text: unknown source 'case.txt': did you mean 'case.text'?" in line["detail"]
    assert serving["process"].poll() is None  # the gateway goes on
    for ready in _ready_everywhere(base, in_force):  # every process: ready, with the old set, and why the new one is not
        assert ready["status"] == "ready" and ready["problems"] == []
        last = ready["mappings"]["last_reload"]
        assert not last["ok"] and last["digest"] == mapping.read_files(folder).digest
        assert last["error"].startswith("GW073 the mapping files in ") and "did you mean 'case.text'?" in last["error"]
    # the old mappings still route, and deliver with the old field map
    sent = {case_id for case_id, *_ in senders.answers}
    assert _routes(serving["db"], "HUP-") == {case_id: ("demo_rest", "KLIN1") for case_id in sent}
    delivered = _delivered(sent)
    assert all(body["unit"] == "KLIN1" and body["text"].startswith("Jag vill lämna synpunkter") for body in delivered.values())


@pytest.mark.slow
def test_sighup_with_a_good_file_routes_the_next_case_by_it(serving, make_case):
    folder, base = serving["folder"], serving["base"]
    refused = requests.post(f"{base}/rivta", data=make_case(KLIN3, caseId="NEXT-3", receiver={"hsaId": KLIN3, "isPatientBoard": False}),
                            headers={"Content-Type": "text/xml"}, timeout=10)
    assert refused.status_code == 500 and b"GW016" in refused.content  # KLIN3 is not a unit yet
    units = folder / "units.yaml"
    with Senders(base, make_case) as senders:
        senders.wait_for(20)
        units.write_text(units.read_text().replace("code: KLIN1\n", "code: KLIN1-NY\n"))
        _add_unit(folder)
        new = mapping.read_files(folder).digest
        hup_at = time.monotonic()
        os.kill(serving["process"].pid, signal.SIGHUP)
        line = _log_line(serving["log"], "mappings reloaded")
        for ready in _ready_everywhere(base, new):  # the old processes are gone: every one has the new set
            assert ready["status"] == "ready" and ready["mappings"]["units"] == 4
            assert ready["mappings"]["last_reload"] == {"ok": True, "at": ready["mappings"]["last_reload"]["at"],
                                                        "digest": new, "error": None}
        everywhere_at = time.monotonic()
        senders.wait_for(len(senders.answers) + 20)
    assert line["digest"] == new and line["units"] == 4
    assert senders.refused() == []  # nothing refused while gunicorn replaced its processes
    # the worker process is replaced too: the new one delivers with the new set
    _wait_for_log(serving["log"], lambda entry: entry.get("event") == "worker running" and entry.get("mappings") == new)
    for case_id, code in (("NEXT-1", "KLIN1-NY"), ("NEXT-3", "KLIN3")):
        hsa = KLIN3 if case_id == "NEXT-3" else KLIN1
        answer = requests.post(f"{base}/rivta", data=make_case(hsa, caseId=case_id, receiver={"hsaId": hsa, "isPatientBoard": False}),
                               headers={"Content-Type": "text/xml"}, timeout=10)
        assert b">OK<" in answer.content, answer.content[:300]
    assert _routes(serving["db"], "NEXT-") == {"NEXT-1": ("demo_rest", "KLIN1-NY"), "NEXT-3": ("demo_rest", "KLIN3")}
    # each case by one set: stored and delivered with the same unit code, the old one or the new one
    routes = _routes(serving["db"], "HUP-")
    delivered = _delivered(set(routes) | {"NEXT-1", "NEXT-3"})
    assert delivered["NEXT-1"]["unit"] == "KLIN1-NY" and delivered["NEXT-3"]["unit"] == "KLIN3"
    assert all(delivered[case_id]["unit"] == code and code in ("KLIN1", "KLIN1-NY") for case_id, (_, code) in routes.items())
    assert all(code == "KLIN1" for case_id, sent, *_ in senders.answers if sent < hup_at for code in [routes[case_id][1]])
    assert all(routes[case_id][1] == "KLIN1-NY" for case_id, sent, *_ in senders.answers if sent > everywhere_at)
    assert serving["process"].poll() is None
    during = [answered - sent for _, sent, answered, _, _ in senders.answers if answered > hup_at and sent < everywhere_at]
    print(f"{len(senders.answers)} cases, {len(during)} answered during the reload ({everywhere_at - hup_at:.2f} s "
          f"until every process had the new set), the slowest of them in {max(during):.2f} s")
