"""Scheduled jobs run once across processes: with ``server.workers: 2`` each process runs a
worker, but a polled target is polled once per interval and an alert is sent once."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from conftest import example_data, free_port, write_config
from test_server import gateway_command, stop_server, wait_until_serving

from store import Store

pytestmark = pytest.mark.slow


class _Peer(BaseHTTPRequestHandler):
    """A provider whose updates feed is empty and which refuses every case; and a webhook."""

    seen: list[tuple[float, str, str]] = []

    def log_message(self, *args):  # quiet
        pass

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self.seen.append((time.monotonic(), "GET", self.path))
        self._answer(200, {"updates": [], "cursor": "0"})

    def do_POST(self):  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        self.seen.append((time.monotonic(), "POST", self.path + " " + body[:200].decode(errors="replace")))
        self._answer(400 if self.path.startswith("/api/cases") else 200, {"error": "refused"})


@pytest.fixture
def peer():
    _Peer.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Peer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_two_processes_poll_once_per_interval_and_alert_once(tmp_path, peer, make_case, postgres_url):
    data = example_data(tmp_path)
    if postgres_url:  # the PostgreSQL variant: both processes on one PostgreSQL database
        data["database"]["url"] = postgres_url
    data["server"]["workers"] = 2
    data["targets"]["demo_rest"]["base_url"] = f"{peer}/api"
    data["targets"]["demo_rest"]["poll"] = {"interval_s": 1, "path": "/updates"}
    data["targets"]["demo_rest"]["retry"] = {"max_attempts": 1, "initial_s": 0.01, "multiplier": 2, "max_s": 0.02,
                                             "jitter": 0}
    data["alerts"].update(webhook_url=f"{peer}/hook", check_s=1, throttle_s=3600)
    data["outbound"]["confirmations"]["enabled"] = False
    write_config(tmp_path, data)
    port = free_port()
    log = open(tmp_path / "server.log", "wb")
    process = subprocess.Popen(
        [*gateway_command(), "serve", "--config", str(tmp_path / "config.yaml"), "--bind", f"127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", process, tmp_path / "server.log")
        store = Store(postgres_url or tmp_path / "gateway.db")
        deadline = time.monotonic() + 30  # both processes' workers beat
        while len([b for b in store.db.query("SELECT * FROM heartbeats")]) < 2:
            assert time.monotonic() < deadline, "the two worker processes did not start"
            time.sleep(0.1)
        # a case the provider refuses: its row goes dead, which is alerted
        answer = requests.post(f"http://127.0.0.1:{port}/rivta", data=make_case(), headers={"Content-Type": "text/xml"},
                               timeout=10)
        assert b">OK<" in answer.content
        time.sleep(6)  # the polls and alert checks of both processes run on their own timers meanwhile
        polls = [at for at, method, path in _Peer.seen if method == "GET" and path.startswith("/api/updates")]
        hooks = [text for _, method, text in _Peer.seen if method == "POST" and text.startswith("/hook")]
        gaps = [b - a for a, b in zip(polls, polls[1:])]
        assert len(polls) >= 3 and min(gaps) > 0.5, f"polls at {polls}: two processes polled in one interval"
        assert len(polls) <= 8, f"{len(polls)} polls in about 6 s at an interval of 1 s: more than one process polls"
        assert len(hooks) == 1 and "dead" in hooks[0], hooks
        runs = {r["name"]: r for r in store.job_leases()}
        assert {"poll:demo_rest", "alerts"} <= set(runs)
        owners = {r["owner"] for r in store.db.query("SELECT owner FROM job_leases")}
        print(f"2 processes, 6 s: {len(polls)} polls (smallest gap {min(gaps):.2f} s), {len(hooks)} alert; "
              f"job owners {sorted(owners)}")
        store.close()
    finally:
        stop_server(process)
        log.close()
