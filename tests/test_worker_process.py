"""The worker as a process of its own: ``gateway worker``, the wake-up across processes on
SQLite (``store.wake``), readiness reading a worker that runs elsewhere, and ``gateway
serve``'s master keeping its worker process alive (SIGKILL it: a new one takes over what
the dead one held, and every case is delivered once)."""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests
from conftest import KLIN1, KLIN2, ROOT, case_dict, example_data, free_port, soap_bytes, write_config
from test_crash import start_gateway, start_providers
from test_server import gateway_command, stop_server

import config as config_mod
import gateway
from store import Store
from store.wake import Bell, folder_for


def _wait(condition, timeout: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def _received(urls: dict[str, str]) -> dict[str, list[str]]:
    """The cases each provider took, by case id: the idempotency key of every call."""
    calls: dict[str, list[str]] = {}
    for name, field in (("demo_rest", "externalId"), ("demo_soap", "externalCaseId")):
        for item in requests.get(f"{urls[name]}/_received", timeout=5).json()["received"]:
            calls.setdefault(item["body"][field], []).append(item["idempotency_key"])
    return calls


def _config(tmp_path: Path, urls: dict[str, str], **worker) -> dict:
    data = example_data(tmp_path)
    data["targets"]["demo_rest"]["base_url"] = f"{urls['demo_rest']}/api"
    data["targets"]["demo_soap"]["endpoint"] = f"{urls['demo_soap']}/soap"
    data["outbound"]["confirmations"]["enabled"] = False
    data["logging"]["format"] = "json"
    data["worker"].update(worker)
    return data


# -- the wake socket ------------------------------------------------------------------------------


def test_a_ring_reaches_every_listener_and_removes_the_socket_of_one_that_is_gone(tmp_path):
    database = tmp_path / "gateway.db"
    bell = Bell(database)
    bell.ring()  # nobody has listened yet: nothing to do, nothing raised
    import threading

    woken = threading.Event()
    stop = bell.listen(woken.set)
    assert stop is not None
    # a listener killed with SIGKILL leaves its socket file behind
    dead = folder_for(database) / "999999-dead00.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as gone:
        gone.bind(str(dead))
    assert dead.exists()
    bell.ring()
    assert woken.wait(10), "the listener was not woken"
    assert not dead.exists(), "the stale socket file was not cleaned up"
    stop()
    assert list(folder_for(database).glob("*.sock")) == [], "a stopped listener left its socket"
    bell.ring()  # nobody listens any more: still nothing raised


def test_a_database_path_too_long_for_a_socket_address_wakes_through_a_private_folder(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    folder = folder_for(deep / "gateway.db")
    assert len(str(folder)) < 90 and not str(folder).startswith(str(deep))
    import threading

    woken = threading.Event()
    stop = Bell(deep / "gateway.db").listen(woken.set)
    assert stop is not None
    try:
        assert folder.stat().st_mode & 0o777 == 0o700
        Bell(deep / "gateway.db").ring()
        assert woken.wait(10)
    finally:
        stop()


def test_readiness_reads_the_heartbeat_of_a_worker_that_runs_in_another_process(tmp_path):
    data = example_data(tmp_path)
    app = gateway.create_app(config_mod.from_dict(copy.deepcopy(data), base_dir=ROOT, environ={}),
                             worker_name="serve@test:1")
    try:
        client = app.test_client()
        answer = client.get("/health/ready")
        assert answer.status_code == 503 and "worker heartbeat is stale (none yet)" in answer.json["problems"]
        app.extensions["gateway.store"].beat("serve@test:1", detail="{}")  # what the worker process writes
        assert client.get("/health/ready").status_code == 200
    finally:
        app.extensions["gateway.worker"].stop()
        app.extensions["gateway.store"].close()


# -- gateway worker ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_stored_case_wakes_a_worker_in_another_process_at_once(tmp_path):
    """The worker process polls only once an hour here: the case reaches the provider
    because intake's commit rang the worker's wake socket, not because a tick came."""
    providers, urls = start_providers(delay=0.0)
    worker = None
    try:
        data = _config(tmp_path, urls, poll_s=3600)
        config = write_config(tmp_path, data)
        log = open(tmp_path / "worker.log", "wb")
        worker = subprocess.Popen([*gateway_command(), "worker", "--config", str(config)], stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        folder = folder_for(tmp_path / "gateway.db")
        _wait(lambda: list(folder.glob("*.sock")) or worker.poll() is not None, 30, "the worker listens")
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()

        app = gateway.create_app(config_mod.from_dict(copy.deepcopy(data), base_dir=ROOT, environ={}))
        try:
            import zeep

            import rivta

            client = zeep.Client(str(rivta.PROCESS_CASE.wsdl_path))
            body = soap_bytes({"ProcessCase": client}, "ProcessCase", KLIN1, case=case_dict(caseId="WAKE-1", attachment=None))
            answer = app.test_client().post("/rivta", data=body, headers={"Content-Type": "text/xml; charset=UTF-8"})
            assert answer.status_code == 200 and b">OK<" in answer.data
        finally:
            app.extensions["gateway.worker"].stop()
            app.extensions["gateway.store"].close()
        calls = _wait(lambda: _received(urls).get("WAKE-1"), 30, "the case reaches its provider")
        assert len(calls) == 1

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert list(folder.glob("*.sock")) == [], "the stopped worker left its wake socket"
        lines = [json.loads(line) for line in (tmp_path / "worker.log").read_text().splitlines() if line.startswith("{")]
        assert any(line.get("event") == "worker stopped" for line in lines)
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        os.killpg(providers.pid, signal.SIGTERM)
        providers.wait(15)


def test_gateway_worker_refuses_a_config_it_cannot_load(tmp_path, runner):
    import cli

    (tmp_path / "bad.yaml").write_text("worker: {concurrency: 0}\n")
    result = runner.invoke(cli.cli, ["worker", "--config", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2 and "GW001" in result.output


# -- gateway serve's worker process -----------------------------------------------------------------


def _log_lines(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
    return lines


def _worker_pids(path: Path) -> list[int]:
    return [line["worker_pid"] for line in _log_lines(path) if line.get("event") == "worker process started"]


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_serve_restarts_a_worker_process_killed_mid_delivery_and_it_takes_over_what_it_held(tmp_path, processes):
    """Lease and heartbeat are an hour here: only the new worker's take-over of the dead
    one can bring its rows back while the test waits. With ``worker.processes: 2`` serve
    keeps two worker processes; the one killed is replaced, the other one goes on."""
    providers, urls = start_providers(delay=1.0)  # so that deliveries are in flight at the kill
    gateway_process = None
    try:
        data = _config(tmp_path, urls, poll_s=0.5, concurrency=4, lease_s=3600, heartbeat_s=3600, processes=processes)
        config = write_config(tmp_path, data)
        port = free_port()
        log_path = tmp_path / "gateway.log"
        gateway_process = start_gateway(config, port, open(log_path, "ab"))
        initial = _wait(lambda: len(_worker_pids(log_path)) >= processes and _worker_pids(log_path), 30,
                        "the worker processes start")
        assert len(set(initial)) == processes and gateway_process.pid not in initial

        import zeep

        import rivta

        client = zeep.Client(str(rivta.PROCESS_CASE.wsdl_path))
        session = requests.Session()
        case_ids = [f"KILL-{i:02d}" for i in range(40)]
        for i, case_id in enumerate(case_ids):
            unit = KLIN1 if i % 2 else KLIN2
            body = soap_bytes({"ProcessCase": client}, "ProcessCase", unit,
                              case=case_dict(caseId=case_id, receiver={"hsaId": unit, "isPatientBoard": False}, attachment=None))
            answer = session.post(f"http://127.0.0.1:{port}/rivta", data=body,
                                  headers={"Content-Type": "text/xml; charset=UTF-8"}, timeout=10)
            assert answer.status_code == 200 and b">OK<" in answer.content

        def held() -> int:
            with sqlite3.connect(f"file:{tmp_path / 'gateway.db'}?mode=ro", uri=True, timeout=5) as db:
                return db.execute("select count(*) from outbox where status = 'in_flight'").fetchone()[0]

        _wait(held, 30, "a delivery in flight", every=0.002)
        first = initial[0]
        os.kill(first, signal.SIGKILL)

        second = _wait(lambda: [pid for pid in _worker_pids(log_path) if pid not in initial], 30, "a new worker process")[0]
        lines = _log_lines(log_path)
        died = [line for line in lines if line.get("error_code") == "GW055"]
        assert died and died[0]["worker_pid"] == first and died[0]["how"] == "killed by SIGKILL" and died[0]["level"] == "ERROR"
        started = [line for line in lines if line.get("event") == "worker process started" and line["worker_pid"] == second]
        assert started[0]["takes_over"] == f"worker@{socket.gethostname()}:{first}:process"

        def all_done() -> bool:
            with sqlite3.connect(f"file:{tmp_path / 'gateway.db'}?mode=ro", uri=True, timeout=5) as db:
                return db.execute("select count(*) from outbox where status <> 'done'").fetchone()[0] == 0

        _wait(all_done, 60, "every row delivered after the restart")
        calls = _received(urls)
        assert set(case_ids) <= set(calls)
        with sqlite3.connect(tmp_path / "gateway.db") as db:
            keys = dict(db.execute("select case_id, idempotency_key from outbox where action = 'deliver_case'"))
            requeued = db.execute("select detail from sync_log where event = 'worker_dead'").fetchall()
            beats = {name for (name,) in db.execute("select name from heartbeats")}
        # delivered once: every call to a provider for a case carried its one key (a call the
        # killed worker made before it could record the answer is repeated with the same key)
        assert all(set(calls[case_id]) == {keys[case_id]} for case_id in case_ids)
        assert requeued and all(f":{first}:process is gone" in detail for (detail,) in requeued)
        # readiness in the server processes reads the beat the worker process writes for them
        assert f"serve@{socket.gethostname()}:{gateway_process.pid}" in beats
        assert requests.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).status_code == 200
    finally:
        if gateway_process is not None and gateway_process.poll() is None:
            stop_server(gateway_process)
        os.killpg(providers.pid, signal.SIGTERM)
        providers.wait(15)
    # a SIGTERM to serve stops its worker process too, and nothing is left running
    lines = _log_lines(log_path)
    running = [second, *initial[1:]]
    assert all(any(line.get("event") == "worker process ended" and line.get("worker_pid") == pid for line in lines)
               for pid in running)
    for pid in running:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
