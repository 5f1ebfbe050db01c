"""`gateway sandbox`: the demo cases complete their loop, and Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest
from conftest import ROOT
from test_server import gateway_command

pytestmark = pytest.mark.slow


def test_sandbox_once_completes_every_demo_case(tmp_path):
    # a token that starts with '-' (1 random token in 64 did): it must never be read as an option
    env = {**os.environ, "SANDBOX_API_TOKEN": "-dash-first_" + "x" * 20}
    result = subprocess.run(
        [*gateway_command(), "sandbox", "--once", "--free-ports", "--data", str(tmp_path), "--timeout", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=150, env=env,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert out.count("completed its loop") == 3
    for step in ("received by the gateway (OK)", "delivered to demo_rest", "delivered to demo_soap", "receipt in the inbox",
                 "counter-question in the inbox", "the citizen answered the question (OK)", "final answer in the inbox",
                 "closed in 1177", "nothing left running"):
        assert step in out, step
    assert "Traceback" not in out + result.stderr


def test_random_tokens_never_look_like_an_option():
    from sandbox.demo import new_token

    assert not any(new_token().startswith("-") for _ in range(2000))


def _ports_of(log: str) -> list[int]:
    import re

    return [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", log)]


def test_ctrl_c_stops_everything_and_frees_the_ports(tmp_path):
    process = subprocess.Popen(
        [*gateway_command(), "sandbox", "--free-ports", "--data", str(tmp_path), "--timeout", "60"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if "Ctrl-C stops everything" in line or not line:
            break
    output = "".join(lines)
    assert "Ctrl-C stops everything" in output, output
    ports = set(_ports_of(output))
    children = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert children, "the sandbox's processes should be running"
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    rest = process.communicate(timeout=30)[0]
    assert process.returncode == 0 and "nothing left running" in rest
    time.sleep(0.2)
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert left == [], f"processes left behind: {left}"
    for port in ports:
        with socket.socket() as s:
            # SO_REUSEADDR lets the bind pass over connections in TIME_WAIT, never over a listener
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()


def test_sandbox_tls_once_completes_the_loop_over_mutual_tls(tmp_path):
    result = subprocess.run(
        [*gateway_command(), "sandbox", "--once", "--tls", "--free-ports", "--data", str(tmp_path), "--timeout", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("completed its loop") == 3 and "mutual TLS" in result.stdout
    log = (tmp_path / "gateway.log").read_text()
    assert '"caller_hsa_id": "SE165565594230-1000"' in log  # the platform's certificate, read from TLS


def test_sandbox_once_on_the_legacy_inbox_profile_completes_what_it_carries(tmp_path):
    result = subprocess.run(
        [*gateway_command(), "sandbox", "--once", "--national-profile", "mvk-inbox-2.0", "--free-ports",
         "--data", str(tmp_path), "--timeout", "60"],
        cwd=ROOT, capture_output=True, text=True, timeout=150,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "national profile mvk-inbox-2.0" in out and out.count("completed its loop") == 3
    assert out.count("notice in the inbox") == 3
    assert "a final answer with a file refused by the gateway (422 GW083)" in out
    assert "status IN_PROGRESS refused by the gateway (422 GW085)" in out
    for absent in ("receipt in the inbox", "final answer in the inbox", "closed in 1177", "NOT refused", "Traceback"):
        assert absent not in out + result.stderr, absent
    national_log = (tmp_path / "national.log").read_text()
    assert "schema corrected: mvk-inbox-2.0" in national_log  # the simulator says it validates with the fix
    config = (tmp_path / "config.yaml").read_text()
    assert "profile: mvk-inbox-2.0" in config
    import sqlite3

    with sqlite3.connect(tmp_path / "gateway.db") as db:
        rows = db.execute("SELECT target, action, status FROM outbox WHERE target = 'national'").fetchall()
    assert sorted(rows) == [("national", "add_message", "done")] * 3  # nothing dead, nothing stuck
