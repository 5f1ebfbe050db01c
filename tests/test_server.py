"""Conformance over real HTTP: `gateway serve` (gunicorn) on loopback, called by zeep clients
built from the real PingForConfiguration WSDL and from the gateway's own WSDLs."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import zeep
from conftest import KLIN1, PNG, PNR, REFERENCE, case_dict, example_data, free_port, write_config
from lxml import etree

import rivta

pytestmark = pytest.mark.slow

PING_WSDL = (
    REFERENCE
    / "itintegration-monitoring-PingForConfiguration-1.0/schemas/interactions/PingForConfigurationInteraction"
    / "PingForConfigurationInteraction_1.0_RIVTABP21.wsdl"
)


def gateway_command() -> list[str]:
    script = Path(sys.executable).parent / "gateway"
    return [str(script)] if script.exists() else [sys.executable, "-c", "import cli; cli.main()"]


def wait_until_serving(base: str, process: subprocess.Popen, log: Path, timeout: float = 30, path: str = "/rivta") -> None:
    """Wait until a ``gateway serve`` process answers on ``base``; its log if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{base}{path}", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(log.read_text())
        time.sleep(0.1)


def stop_server(process: subprocess.Popen, timeout: float = 15, *, kill: bool = False) -> None:
    """Stop a ``gateway serve`` process group: SIGTERM (SIGKILL with ``kill``), SIGKILL if it lingers."""
    os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    data = example_data(folder)
    data["server"]["threads"] = 4
    write_config(folder, data)
    port = free_port()
    log = open(folder / "server.log", "wb")
    process = subprocess.Popen(
        [*gateway_command(), "serve", "--config", str(folder / "config.yaml"), "--bind", f"127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=folder,
        env={**os.environ, "GATEWAY__LOGGING__FORMAT": "json"},
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(base, process, folder / "server.log")
    yield {"base": base, "folder": folder, "process": process}
    stop_server(process)
    log.close()


def test_real_ping_for_configuration_wsdl_calls_the_running_gateway(server):
    client = zeep.Client(str(PING_WSDL))
    service = client.create_service(
        "{urn:riv:itintegration:monitoring:PingForConfiguration:1:rivtabp21}PingForConfigurationResponderBinding",
        f"{server['base']}/rivta",
    )
    answer = service.PingForConfiguration(
        serviceContractNamespace="urn:riv-application:supportprocess:logistics:complaintsandfeedback:ProcessCaseResponder:1",
        logicalAddress="SE5566778899-GW01",
        _soapheaders={"LogicalAddress": "SE5566778899-GW01"},  # the gateway's own system HSA-id
    )
    assert answer.version and len(answer.pingDateTime) == 14
    settings = {c.name: c.value for c in answer.configuration}
    assert settings["hsaId"] == "SE5566778899-GW01" and settings["database"] == "writable"


def test_zeep_client_from_the_served_process_case_wsdl_sends_a_complaint(server):
    client = zeep.Client(f"{server['base']}/rivta/ProcessCase?wsdl")  # address filled in by the gateway
    answer = client.service.ProcessCase(
        case=case_dict(caseId="CONF-1"),
        _soapheaders={"LogicalAddress": KLIN1},
    )
    assert answer.result.resultCode == "OK" and answer.result.logId
    store_db = server["folder"] / "gateway.db"
    import sqlite3

    with sqlite3.connect(store_db) as conn:
        (count,) = conn.execute("select count(*) from attachments where case_id = 'CONF-1'").fetchone()
    assert count == 2


def test_raw_http_contract_details(server):
    body = etree.tostring(
        zeep.Client(str(rivta.PROCESS_CASE.wsdl_path)).create_message(
            zeep.Client(str(rivta.PROCESS_CASE.wsdl_path)).service,
            "ProcessCase",
            case=case_dict(caseId="RAW-1"),
            _soapheaders={"LogicalAddress": KLIN1},
        )
    )
    response = requests.post(
        f"{server['base']}/rivta",
        data=body,
        headers={
            "Content-Type": "text/xml; charset=UTF-8",
            "SOAPAction": f'"{rivta.PROCESS_CASE.soap_action}"',
            "x-skltp-correlation-id": "corr-raw-1",
            "x-rivta-original-serviceconsumer-hsaid": "SE165565594230-1000",
        },
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/xml; charset=UTF-8"
    assert response.headers["x-skltp-correlation-id"] == "corr-raw-1"
    log = (server["folder"] / "server.log").read_text()
    assert "corr-raw-1" in log and PNR not in log


def test_concurrent_retries_store_each_case_once(server):
    client = zeep.Client(f"{server['base']}/rivta/ProcessCase?wsdl")
    # a retry repeats the request exactly (same createdTime), as 1177 and NTjP do
    cases = [case_dict(caseId=f"PAR-{i}", attachment=[{"fileName": "a.png", "mimeType": "image/png", "data": PNG}])
             for i in range(10)]

    def send(i: int) -> str:
        return client.service.ProcessCase(case=cases[i % 10], _soapheaders={"LogicalAddress": KLIN1}).result.resultCode

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(send, range(40)))
    assert codes == ["OK"] * 40
    import sqlite3

    with sqlite3.connect(server["folder"] / "gateway.db") as conn:
        cases = conn.execute("select count(*) from cases where case_id like 'PAR-%'").fetchone()[0]
        outbox = conn.execute(  # the deliveries (a receipt's place may be kept beside each)
            "select count(*) from outbox where case_id like 'PAR-%' and action = 'deliver_case'").fetchone()[0]
    assert cases == 10 and outbox == 10


def test_server_stops_cleanly_on_sigterm(tmp_path):
    write_config(tmp_path, example_data(tmp_path), "c.yaml")
    port = free_port()
    process = subprocess.Popen(
        [*gateway_command(), "serve", "--config", str(tmp_path / "c.yaml"), "--bind", f"127.0.0.1:{port}", "--no-worker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/rivta", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=20)[0].decode()
    assert process.returncode == 0, output
    assert '"worker started"' not in output  # --no-worker
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # the port is free again
