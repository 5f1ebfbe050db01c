"""Limit benchmark: the gateway against the physical limit of its machine, as ratios.

Role
    Measures how close the gateway comes to the fastest a server could take in 1177 cases
    on the same machine, with the same settings, in the same run (issue 16). A shared,
    noisy machine makes absolute rates meaningless from one run to the next; a ratio of
    two servers measured side by side, interleaved, is what counts.

    The yardstick ("bare") is a minimal WSGI app that reads the request body and does one
    SQLite INSERT + COMMIT of it per request (WAL, ``synchronous=FULL``, one connection per
    thread and one writer at a time per process; the gateway's store groups the commits of
    requests that write at the same moment, the yardstick does not), answering a small
    200 with ``resultCode`` OK. It is served by the gateway's own gunicorn application
    (``gateway._gunicorn_application``, built from the same config file as the gateway: the
    same worker class, ``server.workers``, ``server.threads``, timeouts and hooks) with only
    the WSGI app swapped, so the two servers' settings cannot drift apart.

    Every request carries a NEW ProcessCase of about 10.4 KB (6 KB of text, one 1.5 KB
    PDF), built once by zeep from the project's WSDL (bench/intake.py's ``Builder``); each
    request fills in a unique caseId and 12 unique bytes of the PDF, so no two cases or
    attachment blobs are alike. The bare app gets the same bodies.

Modes
    (default) intake: ``gateway serve --no-worker`` against bare. Closed loop with 1, 4 and
    16 clients (``--clients``), ``--seconds`` per run, ``--rounds`` rounds, the two servers
    interleaved (the order alternates per round). Per client count: rate, p50 and p99 of
    each and the ratio gateway/bare of each as the median over the rounds with its spread
    (min-max), and the servers' CPU per request. Then (``--big 5``, 0 to skip) the peak
    memory of a fresh ``gateway serve --no-worker`` taking 5 cases of 5 x 20 MiB one after
    another, as a multiple of one request's body.

    ``--end-to-end``: ``gateway serve`` WITH its worker (as it runs by default) delivering
    by REST to the demo provider and sending the automatic receipt (``outbound.confirmations``)
    to 1177, so each case is a delivery plus a receipt. The peers are bench/peers.py's fast
    stubs (``--peers stub``, the default: the same answers on the wire as the sandbox's,
    HTTP/1.1 keep-alive, a fraction of their CPU, since the sandbox's servers use ~2-3 ms
    CPU per request each, which on 2 cores alone would cap the rate measured) or the
    sandbox's servers (``--peers sandbox``: ``python -m sandbox.providers --delay 0
    --answer-delay 0`` and ``python -m sandbox.national``). Per round: a fresh gateway and database; first ``--idle``
    cases one at a time to the idle gateway (intake -> provider latency from the outbox:
    ``delivered_at - created_at``); then a closed-loop load (``--clients``, default 4) for
    ``--seconds`` (30 for the issue's figure) while the outbox is sampled every second. It
    reports the sustained end-to-end rate (cases acknowledged AND delivered AND receipted
    per second over the run), the backlog (cases stored but not yet through) per second and
    its least-squares slope (flat or growing), each as a ratio to the bare app's rate with
    the same clients in the same round. ``--pace F`` offers load at F x the bare rate of the
    round instead of a closed loop (Python client), to check that a given rate is sustained.

    ``--profile``: in-process, no network: ``--cases`` (default 1000) new cases through the
    gateway's WSGI app (``gateway.create_app``, called directly with prepared environs) and
    through the bare app: the CPU per case (thread time) of each. Then where the gateway's
    CPU goes, by area (werkzeug/flask and endpoint glue, store, model/base64, hashing/json,
    parse, XSD, rules): 3 x ``--cases`` new cases under a statistical profiler (SIGPROF on
    the process's CPU time, each sample's CPU to the area of the innermost frame that has
    one), and once more under cProfile timed by thread CPU for the top functions (its own
    area split too, a generic function's time going to its callers' areas; cProfile's
    per-call overhead inflates areas with many small calls, so the sampled column is the
    one to compare). The grouping rules are ``area_of`` below.

    Every mode ends with the issue's targets next to the measured figures, PASS or FAIL
    (a target not measured by the mode says which mode measures it).

Load generator
    wrk (Debian's ``wrk`` package) when it is on the PATH (``--client auto``, the default),
    with a Lua script that fills in the unique ids per request and checks every answer
    (HTTP 200 and resultCode OK); otherwise, or with ``--client python`` or ``--pace``, a
    Python client: one thread and one keep-alive ``http.client`` connection per client.
    The client runs on the same machine as the servers.

How to run (from the project folder)
    .venv/bin/python bench/limit.py                             # intake, 1/4/16 clients, 3 x 5 s, big 5
    .venv/bin/python bench/limit.py --end-to-end --seconds 30   # worker on, REST + receipt
    .venv/bin/python bench/limit.py --profile                   # 1000 cases in-process

    Everything runs from a temporary folder (configs, databases, logs) that is deleted at the
    end; every process group started is killed. Only loopback (127.0.0.1) is used. Exit
    status 1 if any request was not answered OK or a run failed (a target FAIL is not an
    error: it is a figure).

May import: bench/intake.py and bench/delivery.py (the server helpers and the bodies),
bench/peers.py (run as a child process), the
gateway's own modules (``gateway`` for its gunicorn application and app factory), the
project's dependencies and the standard library. Product code never imports this.

Invariants: both servers of a ratio run from one config file, on the same machine, in the
same run; every request carries a case id never sent before; a ratio is only printed from
runs in which every answer was OK.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import datetime as dt
import functools
import http.client
import io
import json
import os
import pstats
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import delivery  # noqa: E402  (bench/delivery.py: the gateway with its worker, CPU time, the outbox)
import intake as common  # noqa: E402  (bench/intake.py: the machine, the server helpers, the bodies)

# bench/ off the path again, the project's folder first: bench/ops.py must not stand in for
# the product's ops package when the gateway is imported (serve-bare, --profile)
sys.path[:] = [str(BENCH.parent)] + [p for p in sys.path if Path(p or ".").resolve() not in (BENCH, BENCH.parent)]

ROOT = common.ROOT
HEADERS = common.HEADERS
UID_LEN = 16  # the unique part of a case id, also spliced into the attachment's base64
TARGETS = {
    "intake": "intake (no worker) >= 0.5x bare at 4 clients",
    "e2e": "end to end (worker: REST + receipt) >= 0.3x bare, backlog flat over the run",
    "idle": "idle p50 intake -> provider < 10 ms",
    "memory": "5 x 20 MB peak memory < 5x the payload",
}


# -- the bodies ------------------------------------------------------------------------------------


def uid(tag: str, thread: int, n: int) -> str:
    """The unique 16 characters of one request: a 5-character tag (role, round, clients),
    the client thread and a counter. Letters and digits only: valid base64 as they are."""
    value = f"{tag}{thread:02d}{n:09d}"
    assert len(value) == UID_LEN, value
    return value


class Template:
    """One zeep-built ProcessCase split around two places for the unique id: the caseId's
    end and 16 base64 characters of the PDF: 12 bytes of its picture's raw data (a real PDF,
    which the gateway's content check parses; the bytes start at a multiple of 3, so their
    base64 is independent of the bytes around them, and any bytes are a valid picture)."""

    MARKER = "Z" * UID_LEN

    def __init__(self, builder: common.Builder, run: str) -> None:
        self.prefix = f"LIM{run}-"
        placeholder = base64.b64decode(self.MARKER)
        pdf = bytearray(common.sample_files.pdf(size=common.ATTACHMENT_BYTES, seed=os.urandom(64), width=64))
        picture = pdf.index(b"stream\n", pdf.index(b"/Subtype /Image")) + len(b"stream\n")
        at = picture + (-picture) % 3
        pdf[at:at + len(placeholder)] = placeholder
        attachment = {"fileName": "underlag.pdf", "mimeType": "application/pdf", "data": bytes(pdf)}
        body = builder.body(builder.case(self.prefix + self.MARKER, builder.text, [attachment]))
        marker = self.MARKER.encode()
        case_at = body.index(b">" + self.prefix.encode() + marker + b"<") + 1 + len(self.prefix)
        encoded = base64.b64encode(bytes(pdf))
        file_at = body.index(encoded) + at * 4 // 3
        assert body[file_at:file_at + UID_LEN] == marker
        assert case_at < file_at
        self.parts = (body[:case_at], body[case_at + UID_LEN:file_at], body[file_at + UID_LEN:])
        self.size = len(body)

    def body(self, unique: str) -> bytes:
        value = unique.encode()
        return self.parts[0] + value + self.parts[1] + value + self.parts[2]

    def case_id(self, unique: str) -> str:
        return self.prefix + unique


# -- the bare app ------------------------------------------------------------------------------------


class BareApp:
    """WSGI: read the body, INSERT it with one SQLite transaction, answer a small 200."""

    ANSWER = (b'<?xml version="1.0" encoding="UTF-8"?>\n<bare><resultCode>OK</resultCode></bare>')

    def __init__(self, path: Path, busy_timeout_ms: int = 5000) -> None:
        self.path, self.busy_timeout_ms = path, busy_timeout_ms
        self._local = threading.local()
        self._write_lock = threading.Lock()  # one writer at a time per process; one COMMIT per request (the yardstick of issue 16; the store groups its commits)
        with self._connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS bodies (id INTEGER PRIMARY KEY, received_at REAL, body BLOB)")

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ["REQUEST_METHOD"] == "POST":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connect()
            with self._write_lock:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute("INSERT INTO bodies (received_at, body) VALUES (?, ?)", [time.time(), body])
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        start_response("200 OK", [("Content-Type", "text/xml; charset=UTF-8"),
                                  ("Content-Length", str(len(self.ANSWER)))])
        return [self.ANSWER]


def serve_bare(config: Path, bind: str, database: Path) -> None:
    """The bare app under the gateway's own gunicorn application (this script's
    ``serve-bare`` subcommand, run as a child process)."""
    import gateway

    cfg = gateway.load_config(config)
    server = gateway._gunicorn_application(cfg, bind, False, gateway.serving_mappings(cfg))
    server.load = lambda: BareApp(database, cfg.database.busy_timeout_ms)  # the app swapped, nothing else
    server.run()


# -- the processes -----------------------------------------------------------------------------------


def wait_ready(process: subprocess.Popen, base: str, what: str) -> None:
    import requests

    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{base}/rivta", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            common.stop_server(process)
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.1)


def start_bare(folder: Path, config: Path, log: Any) -> tuple[subprocess.Popen, str]:
    port = common.free_port()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "serve-bare", str(config), f"127.0.0.1:{port}",
         str(folder / "bare.db")],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=folder, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(process, base, "the bare app")
    return process, base


def start_sandbox(folder: Path, module: str, *args: str) -> tuple[subprocess.Popen, dict[str, str]]:
    """``python -m sandbox.<module>`` on free ports; (process, {name: base URL}) from the
    "<name> <URL>" lines it prints once it listens."""
    return _start_peer(folder, module, [sys.executable, "-m", f"sandbox.{module}", *args, "--quiet"],
                       f"sandbox.{module}")


def start_stub(folder: Path, kind: str) -> tuple[subprocess.Popen, dict[str, str]]:
    """bench/peers.py's fast stub of the sandbox's ``providers`` or ``national`` on a free
    port; (process, {name: base URL}) as ``start_sandbox``."""
    return _start_peer(folder, kind, [sys.executable, str(BENCH / "peers.py"), kind], f"bench/peers.py {kind}")


def _start_peer(folder: Path, kind: str, argv: list[str], what: str) -> tuple[subprocess.Popen, dict[str, str]]:
    expected = {"providers": 2, "national": 1}[kind]
    process = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=open(folder / f"{kind}.log", "wb"), stdin=subprocess.DEVNULL,
        text=True, start_new_session=True,
    )
    urls: dict[str, str] = {}
    while len(urls) < expected:
        line = process.stdout.readline() if process.stdout else ""
        if not line:
            common.stop_server(process)
            raise RuntimeError(f"{what} did not start:\n" + common.log_tail(folder / f"{kind}.log"))
        name, url = line.split()[:2]
        urls[name] = url
    return process, urls


def start_peers(folder: Path, kind: str) -> tuple[subprocess.Popen, dict[str, str], subprocess.Popen, dict[str, str]]:
    """The end-to-end peers: bench/peers.py's fast stubs (``stub``, the default: the
    sandbox's own servers use ~2-3 ms CPU per request each, which on 2 cores would cap the
    rate measured) or the sandbox's servers (``sandbox``)."""
    if kind == "stub":
        providers, urls = start_stub(folder, "providers")
        national, nurls = start_stub(folder, "national")
    else:
        providers, urls = start_sandbox(folder, "providers", "--rest-port", "0", "--soap-port", "0", "--delay", "0",
                                        "--answer-delay", "0")
        national, nurls = start_sandbox(folder, "national", "--port", "0")
    return providers, urls, national, nurls


def example() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "config.example.yaml").read_text())


def intake_config(folder: Path) -> Path:
    """bench/intake.py's config with the shipped server section (workers, threads, timeouts)."""
    path = common.write_config(folder)
    data = yaml.safe_load(path.read_text())
    data["server"] = {**example()["server"], "bind": data["server"]["bind"]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def e2e_config(folder: Path, providers: dict[str, str], national: str) -> Path:
    """bench/delivery.py's config (worker on, the demo providers) with the shipped worker
    concurrency and server section, the receipt on and the 1177 simulator as the national side."""
    shipped = example()
    path = delivery.write_config(folder, providers, shipped["worker"]["concurrency"])
    data = yaml.safe_load(path.read_text())
    data["server"] = {**shipped["server"], "bind": data["server"]["bind"]}
    data["national"]["endpoint"] = f"{national}/rivta"
    data["outbound"]["confirmations"]["enabled"] = True
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# -- the load ------------------------------------------------------------------------------------------


@dataclass
class Load:
    """One closed-loop run against one server."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    bad: int = 0
    problem: str = ""
    cpu_s: float | None = None  # the server's CPU time over the run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms(self) -> float | None:
        return 1000 * self.cpu_s / self.requests if self.cpu_s is not None and self.requests else None


WRK_SCRIPT = r"""
-- bench/limit.py: a new ProcessCase per request (unique caseId and attachment bytes),
-- every answer checked for HTTP 200 and resultCode OK.
local threads = {}
local count = 0

function setup(thread)
  count = count + 1
  thread:set("tid", count)
  table.insert(threads, thread)
end

function init(args)
  local function slurp(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
  end
  tag, p0, p1, p2 = args[1], slurp(args[2]), slurp(args[3]), slurp(args[4])
  n, bad, first_bad = 0, 0, ""
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "text/xml; charset=UTF-8"
end

function request()
  n = n + 1
  local u = string.format("%s%02d%09d", tag, tid, n)
  return wrk.format("POST", "/rivta", nil, p0 .. u .. p1 .. u .. p2)
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, "resultCode[^>]*>OK<") then
    bad = bad + 1
    if first_bad == "" then first_bad = tostring(status) .. " " .. string.sub(body, 1, 300) end
  end
end

function done(summary, latency, requests)
  local total_bad, sample = 0, ""
  for _, t in ipairs(threads) do
    total_bad = total_bad + t:get("bad")
    if sample == "" then sample = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    'LIMIT-JSON {"requests": %.0f, "duration_us": %.0f, "p50_us": %.0f, "p99_us": %.0f, "bad": %.0f, ' ..
    '"errors": %.0f}\n', summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    total_bad, e.connect + e.read + e.write + e.status + e.timeout))
  if sample ~= "" then io.write("LIMIT-BAD " .. string.gsub(sample, "\n", " ") .. "\n") end
end
"""


class Client:
    """Runs one closed-loop load: wrk with WRK_SCRIPT, or Python threads."""

    def __init__(self, kind: str, template: Template, folder: Path) -> None:
        self.kind, self.template, self.folder = kind, template, folder
        if kind == "wrk":
            for index, part in enumerate(template.parts):
                (folder / f"part{index}").write_bytes(part)
            (folder / "limit.lua").write_text(WRK_SCRIPT)

    def run(self, base: str, tag: str, clients: int, seconds: float, *, pace: float | None = None) -> Load:
        if self.kind == "wrk" and pace is None:
            return self._wrk(base, tag, clients, seconds)
        return self._python(base, tag, clients, seconds, pace)

    def _wrk(self, base: str, tag: str, clients: int, seconds: float) -> Load:
        threads = min(clients, len(os.sched_getaffinity(0)))
        command = ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{max(1, round(seconds))}s",
                   "--timeout", "60s", "-s", str(self.folder / "limit.lua"), f"{base}/rivta", "--", tag,
                   *(str(self.folder / f"part{i}") for i in range(3))]
        done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
        found = [line for line in done.stdout.splitlines() if line.startswith("LIMIT-JSON ")]
        if done.returncode != 0 or not found:
            raise RuntimeError(f"wrk failed (exit {done.returncode}): {done.stderr.strip() or done.stdout[-500:]}")
        figures = json.loads(found[-1].removeprefix("LIMIT-JSON "))
        problem = next((line.removeprefix("LIMIT-BAD ") for line in done.stdout.splitlines()
                        if line.startswith("LIMIT-BAD ")), "")
        bad = int(figures["bad"]) + int(figures["errors"])
        if figures["errors"] and not problem:
            problem = f"{figures['errors']:.0f} socket errors or timeouts (wrk)"
        return Load(int(figures["requests"]), figures["duration_us"] / 1e6, figures["p50_us"] / 1000,
                    figures["p99_us"] / 1000, bad, problem)

    def _python(self, base: str, tag: str, clients: int, seconds: float, pace: float | None) -> Load:
        host, port = base.removeprefix("http://").split(":")
        latencies: list[list[float]] = [[] for _ in range(clients)]
        bad: list[str] = []
        start = threading.Barrier(clients + 1)
        clock: dict[str, float] = {}
        interval = clients / pace if pace else 0.0

        def one(index: int) -> None:
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            mine = latencies[index]
            n = 0
            start.wait()
            began, deadline = clock["began"], clock["deadline"]
            due = began + interval * index / clients
            while True:
                now = time.perf_counter()
                if interval:
                    if due > now:
                        time.sleep(due - now)
                    due += interval
                if time.perf_counter() >= deadline:
                    break
                n += 1
                body = self.template.body(uid(tag, index + 1, n))
                sent = time.perf_counter()
                try:
                    conn.request("POST", "/rivta", body, HEADERS)
                    response = conn.getresponse()
                    answer = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = http.client.HTTPConnection(host, int(port), timeout=60)
                    bad.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = time.perf_counter() - sent
                if time.perf_counter() > deadline:
                    break  # as wrk: only what completed within the run
                mine.append(elapsed)
                if response.status != 200 or not common.OK.search(answer):
                    bad.append(f"HTTP {response.status}: {answer[:300]!r}")
            conn.close()

        workers = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(clients)]
        for worker in workers:
            worker.start()
        clock["began"] = time.perf_counter()
        clock["deadline"] = clock["began"] + seconds
        start.wait()
        for worker in workers:
            worker.join(seconds + 120)
        elapsed = time.perf_counter() - clock["began"]
        ms = [x * 1000 for each in latencies for x in each] or [float("nan")]
        return Load(sum(len(x) for x in latencies), min(elapsed, seconds), common.percentile(ms, 50),
                    common.percentile(ms, 99), len(bad), bad[0] if bad else "")


def measured(client: Client, pid: int, base: str, tag: str, clients: int, seconds: float,
             pace: float | None = None) -> Load:
    """A load with the server's CPU time (its process group) over it."""
    before = delivery.cpu_seconds(pid)
    load = client.run(base, tag, clients, seconds, pace=pace)
    load.cpu_s = delivery.cpu_seconds(pid) - before
    return load


def warm_up(client: Client, base: str, tag: str) -> None:
    load = client._python(base, tag, 1, 1.0, None)
    if load.bad:
        raise RuntimeError(f"warm-up not answered OK: {load.problem}")


# -- figures -------------------------------------------------------------------------------------------


def spread(values: list[float], digits: int = 2) -> str:
    """Median (min-max)."""
    clean = [v for v in values if v == v]
    if not clean:
        return "-"
    med = statistics.median(clean)
    if len(clean) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({min(clean):.{digits}f}–{max(clean):.{digits}f})"


def median(values: list[float]) -> float:
    clean = [v for v in values if v == v]
    return statistics.median(clean) if clean else float("nan")


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y)."""
    if len(points) < 2:
        return 0.0
    mt = sum(t for t, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    den = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / den if den else 0.0


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "FAIL")


def print_targets(rows: Mapping[str, tuple[str, bool | None]]) -> None:
    """The issue's targets, each with its figure or the mode that measures it."""
    elsewhere = {"intake": "not measured in this mode: bench/limit.py",
                 "e2e": "not measured in this mode: bench/limit.py --end-to-end --seconds 30",
                 "idle": "not measured in this mode: bench/limit.py --end-to-end",
                 "memory": "not measured in this mode: bench/limit.py (--big 5)"}
    print("targets of issue 16 (median over the rounds)")
    print()
    table = [[TARGETS[key], *(rows.get(key) and (rows[key][0], verdict(rows[key][1])) or (elsewhere[key], "-"))]
             for key in TARGETS]
    print(common.markdown(["target", "measured", "verdict"], table))
    print()


def print_header(args: argparse.Namespace, mode: str, client: str) -> dict[str, str]:
    info = common.machine()
    print(f"# limit benchmark (bench/limit.py), {mode}")
    print(f"date     {info['date']}")
    print(f"machine  {info['cores']} cores (nproc), {info['cpu']}; {info['memory']} RAM; {info['os']}; "
          f"load average now {os.getloadavg()[0]:.1f} (a shared machine: only in-run ratios count)")
    print(f"python   {info['python']} ({sys.executable})")
    print(f"run      {' '.join(sys.argv[1:]) or '(defaults)'}")
    server = example()["server"]
    print(f"servers  the gateway's gunicorn application (gthread) for both: {server['workers']} process(es) x "
          f"{server['threads']} threads, from config.example.yaml; client {client}; loopback only")
    print()
    return info


def client_kind(args: argparse.Namespace) -> str:
    if args.client == "wrk" or (args.client == "auto" and shutil.which("wrk")):
        if not shutil.which("wrk"):
            sys.exit("error: --client wrk, but wrk is not on the PATH (apt-get install wrk)")
        return "python" if args.pace else "wrk"
    return "python"


# -- intake ----------------------------------------------------------------------------------------------


def run_intake(args: argparse.Namespace, levels: list[int]) -> int:
    kind = client_kind(args)
    print_header(args, "intake: gateway serve --no-worker against the bare app", kind)
    run = dt.datetime.now().strftime("%H%M%S")
    folder = Path(tempfile.mkdtemp(prefix="gateway-bench-limit-"))
    processes: list[subprocess.Popen] = []
    failures: list[str] = []
    results: dict[int, list[tuple[Load, Load]]] = {c: [] for c in levels}
    memory: tuple[float, float, float] | None = None
    try:
        builder = common.Builder()
        template = Template(builder, run)
        client = Client(kind, template, folder)
        config = intake_config(folder)
        print(f"bodies   {template.size} bytes each (text {len(builder.text.encode())} bytes, one PDF of "
              f"{common.ATTACHMENT_BYTES} bytes); a new caseId and PDF per request")
        with open(folder / "gateway.log", "wb") as glog, open(folder / "bare.log", "wb") as blog:
            gateway, gbase = common.start_server(folder, config, glog)
            processes.append(gateway)
            bare, bbase = start_bare(folder, config, blog)
            processes.append(bare)
            servers = {"bare": (bare, bbase), "gateway": (gateway, gbase)}
            for name, (_, base) in servers.items():
                warm_up(client, base, f"W{name[0].upper()}000")
            print(f"servers  gateway pid {gateway.pid} at {gbase}; bare pid {bare.pid} at {bbase}; "
                  f"warmed up 1 s each")
            print()
            for rnd in range(1, args.rounds + 1):
                order = ["bare", "gateway"] if rnd % 2 else ["gateway", "bare"]
                for clients in levels:
                    got: dict[str, Load] = {}
                    for name in order:
                        process, base = servers[name]
                        tag = f"{name[0].upper()}{rnd:02d}{clients:02d}"
                        got[name] = load = measured(client, process.pid, base, tag, clients, args.seconds)
                        if load.bad:
                            failures.append(f"round {rnd}, {clients} clients, {name}: {load.bad} not OK, "
                                            f"e.g. {load.problem}")
                    b, g = got["bare"], got["gateway"]
                    results[clients].append((b, g))
                    print(f"round {rnd} {clients:>2} clients ({' then '.join(order)}): "
                          f"bare {b.rate:7.1f}/s p50 {b.p50_ms:6.2f} p99 {b.p99_ms:6.2f} ms cpu {b.cpu_ms or 0:.2f} ms/req | "
                          f"gateway {g.rate:7.1f}/s p50 {g.p50_ms:6.2f} p99 {g.p99_ms:6.2f} ms cpu {g.cpu_ms or 0:.2f} ms/req"
                          f" | ratio {g.rate / b.rate if b.rate else 0:.2f}", flush=True)
            counts = common.stored(folder / "gateway.db")
            sent_ok = sum(g.requests - g.bad for pairs in results.values() for _, g in pairs)
            print(f"stored   {counts['cases']} cases in the gateway ({sent_ok} counted OK in the runs, "
                  f"+ warm-up and requests cut off at the end of a run)")
            if counts["cases"] < sent_ok:
                failures.append(f"{sent_ok} cases answered OK but only {counts['cases']} stored")
        for process in processes:
            common.stop_server(process)
        processes.clear()
        if args.big:
            memory = big_memory(args, folder, builder, run, failures)
    except Exception as exc:  # noqa: BLE001 (reported as a failure, with the logs)
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        for process in processes:
            common.stop_server(process)

    print()
    print("## results")
    print()
    print(f"closed loop, {args.seconds:g} s per run, {args.rounds} rounds, median (min–max) over the rounds; "
          "ratio = gateway / bare in the same round")
    print()
    header = ["clients", "bare /s", "gateway /s", "rate ratio", "bare p50 ms", "gateway p50 ms", "p50 ratio",
              "bare p99 ms", "gateway p99 ms", "p99 ratio", "CPU ms/req bare", "gateway"]
    rows = []
    for clients, pairs in results.items():
        if not pairs:
            continue
        bs, gs = [b for b, _ in pairs], [g for _, g in pairs]
        rows.append([
            str(clients), spread([b.rate for b in bs], 0), spread([g.rate for g in gs], 0),
            spread([g.rate / b.rate for b, g in pairs if b.rate]),
            spread([b.p50_ms for b in bs]), spread([g.p50_ms for g in gs]),
            spread([g.p50_ms / b.p50_ms for b, g in pairs if b.p50_ms]),
            spread([b.p99_ms for b in bs]), spread([g.p99_ms for g in gs]),
            spread([g.p99_ms / b.p99_ms for b, g in pairs if b.p99_ms]),
            spread([b.cpu_ms or float("nan") for b in bs]), spread([g.cpu_ms or float("nan") for g in gs]),
        ])
    print(common.markdown(header, rows))
    print()
    if memory:
        body, baseline, peak = memory
        print(f"big cases: {args.big} x ({common.BIG_ATTACHMENTS} x 20 MiB) one after another, body "
              f"{body / common.MIB:.1f} MiB; gunicorn worker VmHWM {baseline / common.MIB:.0f} MiB before, "
              f"{peak / common.MIB:.0f} MiB peak = {peak / body:.2f}x the body")
        print()
    targets: dict[str, tuple[str, bool | None]] = {}
    if 4 in results and results[4]:
        ratios = [g.rate / b.rate for b, g in results[4] if b.rate]
        targets["intake"] = (f"{spread(ratios)}x", median(ratios) >= 0.5)
    else:
        targets["intake"] = ("not measured: --clients without 4", None)
    if memory:
        targets["memory"] = (f"{memory[2] / memory[0]:.2f}x ({memory[2] / common.MIB:.0f} MiB / "
                             f"{memory[0] / common.MIB:.0f} MiB)", memory[2] / memory[0] < 5)
    print_targets(targets)
    return finish(failures, folder)


def big_memory(args: argparse.Namespace, folder: Path, builder: common.Builder, run: str,
               failures: list[str]) -> tuple[float, float, float] | None:
    """A fresh ``gateway serve --no-worker``: the worker process's peak RSS over ``--big``
    cases of 5 x 20 MiB sent one after another; (body bytes, VmHWM before, VmHWM after)."""
    work = folder / "big"
    work.mkdir()
    config = intake_config(work)
    with open(work / "gateway.log", "wb") as log:
        process, base = common.start_server(work, config, log)
        try:
            ok, _, problem = common.post(base, builder.typical(f"LIM{run}-BIGWARM"), 60)
            if not ok:
                failures.append(f"big: warm-up not OK: {problem}")
                return None
            baseline = max((hwm for _, role, hwm, _ in common.server_memory(process.pid) if role == "gunicorn worker"),
                           default=0) * 1024
            sizes = []
            for i in range(args.big):
                body = builder.big(f"LIM{run}-BIG{i:03d}")
                sizes.append(len(body))
                ok, seconds, problem = common.post(base, body, 600)
                del body
                print(f"big case {i + 1}: {sizes[-1] / common.MIB:.1f} MiB, {seconds * 1000:.0f} ms, "
                      f"{'OK' if ok else 'FAILED: ' + problem}", flush=True)
                if not ok:
                    failures.append(f"big case {i + 1}: {problem}")
            peak = max((hwm for _, role, hwm, _ in common.server_memory(process.pid) if role == "gunicorn worker"),
                       default=0) * 1024
            return sum(sizes) / len(sizes), baseline, peak
        finally:
            common.stop_server(process)


def finish(failures: list[str], folder: Path) -> int:
    try:
        if failures:
            print(f"FAILED ({len(failures)}):")
            for failure in failures:
                print(f"  - {failure}")
            for log in sorted(folder.rglob("*.log")):
                tail = common.log_tail(log, 15)
                if tail.strip():
                    print(f"--- {log.relative_to(folder)} ends with:\n{tail}")
            return 1
        print("every request answered OK")
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- end to end ------------------------------------------------------------------------------------------


IDLE_SPACING_S = 0.15
OUTBOX_NOW = """
SELECT (SELECT count(*) FROM cases),
       (SELECT count(*) FROM outbox WHERE action = 'deliver_case' AND status = 'done'),
       (SELECT count(*) FROM outbox WHERE action = 'add_message' AND status = 'done'),
       (SELECT count(*) FROM outbox WHERE status NOT IN ('done', 'dead', 'cancelled')),
       (SELECT count(*) FROM outbox WHERE status = 'dead')
"""


@dataclass
class Sample:
    t: float  # seconds since the load started
    stored: int  # cases acknowledged (committed before the answer)
    delivered: int  # deliver_case rows done
    through: int  # receipts done: the case is delivered and the citizen told
    undelivered: int  # outbox rows not done (pending, in flight, reserved receipts)
    dead: int

    @property
    def backlog(self) -> int:
        return self.stored - self.through


def sample(database: Path, t: float) -> Sample:
    db = delivery.read_only(database)
    try:
        return Sample(t, *db.execute(OUTBOX_NOW).fetchone())
    finally:
        db.close()


@dataclass
class EndToEnd:
    bare: Load
    load: Load
    samples: list[Sample] = field(default_factory=list)
    idle_ms: list[float] = field(default_factory=list)  # intake -> provider answered
    idle_receipt_ms: list[float] = field(default_factory=list)  # intake -> 1177 answered the receipt
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.samples[-1].t - self.samples[0].t

    @property
    def through_rate(self) -> float:
        return (self.samples[-1].through - self.samples[0].through) / self.seconds

    @property
    def delivered_rate(self) -> float:
        return (self.samples[-1].delivered - self.samples[0].delivered) / self.seconds

    @property
    def slope(self) -> float:
        """Backlog growth in cases/s, fitted from the 3rd second on (the queue's first fill excluded)."""
        points = [(s.t, float(s.backlog)) for s in self.samples if s.t >= 3.0]
        return slope(points if len(points) >= 3 else [(s.t, float(s.backlog)) for s in self.samples])

    @property
    def flat(self) -> bool:
        return self.slope <= max(1.0, 0.05 * self.through_rate)


def idle_probe(client: Client, base: str, database: Path, tag: str, count: int) -> tuple[list[float], list[float]]:
    """``count`` cases one at a time to the idle gateway; per case (ms) intake -> delivered
    and intake -> receipt answered, from the outbox (the gateway's own clock)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    ids = []
    try:
        for n in range(1, count + 1):
            unique = uid(tag, 0, n)
            conn.request("POST", "/rivta", client.template.body(unique), HEADERS)
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200 or not common.OK.search(answer):
                raise RuntimeError(f"idle case not answered OK: HTTP {response.status} {answer[:300]!r}")
            case_id = client.template.case_id(unique)
            ids.append(case_id)
            time.sleep(IDLE_SPACING_S)  # delivery and receipt take a few ms: no polling while they run
            deadline = time.monotonic() + 30
            while through(database, case_id) < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"idle case {case_id} not delivered and receipted within 30 s")
                time.sleep(0.05)
    finally:
        conn.close()
    db = delivery.read_only(database)
    try:
        rows = db.execute(
            f"""SELECT c.case_id, c.received_at, d.delivered_at, r.delivered_at FROM cases c
                JOIN outbox d ON d.case_id = c.case_id AND d.action = 'deliver_case'
                JOIN outbox r ON r.case_id = c.case_id AND r.action = 'add_message'
                WHERE c.case_id IN ({','.join('?' * len(ids))})""", ids).fetchall()
    finally:
        db.close()
    out = [(delivery.seconds(delivery.parse_ts(a), delivery.parse_ts(d)) * 1000,
            delivery.seconds(delivery.parse_ts(a), delivery.parse_ts(r)) * 1000) for _, a, d, r in rows]
    return [d for d, _ in out], [r for _, r in out]


def through(database: Path, case_id: str) -> int:
    db = delivery.read_only(database)
    try:
        return db.execute("SELECT count(*) FROM outbox WHERE case_id = ? AND status = 'done'", [case_id]).fetchone()[0]
    finally:
        db.close()


def run_e2e(args: argparse.Namespace, clients: int) -> int:
    kind = client_kind(args)
    print_header(args, "end to end: gateway serve with its worker (REST delivery + 1177 receipt) "
                       "against the bare app", kind)
    run = dt.datetime.now().strftime("%H%M%S")
    folder = Path(tempfile.mkdtemp(prefix="gateway-bench-limit-e2e-"))
    processes: list[subprocess.Popen] = []
    failures: list[str] = []
    results: list[EndToEnd] = []
    try:
        builder = common.Builder()
        template = Template(builder, run)
        client = Client(kind, template, folder)
        providers, urls, national, nurls = start_peers(folder, args.peers)
        processes += [providers, national]
        config = e2e_config(folder, urls, nurls["national"])
        cfg = yaml.safe_load(config.read_text())
        print(f"bodies   {template.size} bytes each, to SE5566778899-KLIN1 (demo_rest); a new caseId and PDF per "
              f"request")
        print(f"gateway  worker.concurrency {cfg['worker']['concurrency']}, poll_s {cfg['worker']['poll_s']}; "
              f"receipt to 1177 {'on' if cfg['outbound']['confirmations']['enabled'] else 'OFF'}; peers "
              f"{'bench/peers.py fast stubs' if args.peers == 'stub' else 'the sandbox servers'}: provider "
              f"{urls['demo_rest']} (no delay), 1177 {nurls['national']}")
        blog = open(folder / "bare.log", "wb")
        bare, bbase = start_bare(folder, config, blog)
        processes.append(bare)
        warm_up(client, bbase, "WB000")
        print()
        for rnd in range(1, args.rounds + 1):
            work = folder / f"round{rnd}"
            work.mkdir()
            round_config = work / "config.yaml"
            data = dict(cfg, database={**cfg["database"], "path": str(work / "gateway.db")})
            round_config.write_text(yaml.safe_dump(data, sort_keys=False))
            order = ["bare", "gateway"] if rnd % 2 else ["gateway", "bare"]
            got: dict[str, Any] = {}
            with open(work / "gateway.log", "wb") as glog:
                gateway, gbase = delivery.start_gateway(work, round_config, glog)
                try:
                    database = work / "gateway.db"
                    idle_d, idle_r = idle_probe(client, gbase, database, f"I{rnd:02d}00", args.idle) \
                        if args.idle else ([], [])
                    for name in order:
                        if name == "bare":
                            got["bare"] = measured(client, bare.pid, bbase, f"B{rnd:02d}{clients:02d}", clients,
                                                   args.seconds)
                        else:
                            pace = args.pace * got["bare"].rate if args.pace and "bare" in got else None
                            if args.pace and pace is None:  # gateway first this round: pace from the last bare
                                pace = args.pace * results[-1].bare.rate if results else None
                            got["gateway"] = e2e_load(client, gateway.pid, gbase, database, clients, args.seconds,
                                                      f"E{rnd:02d}{clients:02d}", pace,
                                                      {"providers": providers.pid, "national": national.pid})
                finally:
                    common.stop_server(gateway)
            load, samples, cpu = got["gateway"]
            result = EndToEnd(got["bare"], load, samples, idle_d, idle_r, cpu)
            results.append(result)
            for name, each in (("bare", result.bare), ("gateway", result.load)):
                if each.bad:
                    failures.append(f"round {rnd}, {name}: {each.bad} not OK, e.g. {each.problem}")
            if samples[-1].dead:
                failures.append(f"round {rnd}: {samples[-1].dead} outbox rows dead")
            if samples[-1].through == samples[0].through and samples[-1].stored > samples[0].stored:
                failures.append(f"round {rnd}: no case went all the way through (receipt done); "
                                f"is the national side reached?")
            last = samples[-1]
            print(f"round {rnd} ({' then '.join(order)}): bare {result.bare.rate:.1f}/s | gateway acknowledged "
                  f"{result.load.rate:.1f}/s, delivered {result.delivered_rate:.1f}/s, delivered + receipt "
                  f"{result.through_rate:.1f}/s = {result.through_rate / result.bare.rate:.3f}x bare; backlog at the "
                  f"end {last.backlog} cases ({last.undelivered} outbox rows undelivered), slope "
                  f"{result.slope:+.1f} cases/s ({'flat' if result.flat else 'growing'}); idle p50 intake -> "
                  f"provider {spread([median(idle_d)], 1)} ms", flush=True)
            print("  backlog per second (cases stored, not yet delivered + receipted): "
                  + " ".join(str(s.backlog) for s in samples[1:]))
            print("  CPU over the run, % of one core: " + ", ".join(
                f"{k} {100 * v / result.seconds:.0f}" for k, v in cpu.items())
                + f"; gateway CPU per acknowledged case {1000 * cpu['gateway'] / max(1, result.load.requests):.2f} ms")
    except Exception as exc:  # noqa: BLE001 (reported as a failure, with the logs)
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        for process in processes:
            common.stop_server(process)

    print()
    print("## results")
    print()
    if results:
        print(f"{clients} clients, {'offered ' + format(args.pace, 'g') + 'x the bare rate' if args.pace else 'closed loop'}"
              f", {args.seconds:g} s per run, {len(results)} rounds, median (min–max) over the rounds; ratios to the "
              f"bare app's rate in the same round")
        print()
        header = ["bare /s", "acknowledged /s", "ratio", "delivered /s", "delivered + receipt /s", "ratio",
                  "backlog at end", "backlog slope /s", "backlog", "idle p50 ms", "idle receipt p50 ms"]
        print(common.markdown(header, [[
            spread([r.bare.rate for r in results], 0), spread([r.load.rate for r in results], 0),
            spread([r.load.rate / r.bare.rate for r in results], 3),
            spread([r.delivered_rate for r in results], 0), spread([r.through_rate for r in results], 0),
            spread([r.through_rate / r.bare.rate for r in results], 3),
            spread([r.samples[-1].backlog for r in results], 0), spread([r.slope for r in results], 1),
            "flat" if all(r.flat for r in results) else
            f"growing in {sum(not r.flat for r in results)} of {len(results)}",
            spread([median(r.idle_ms) for r in results], 1), spread([median(r.idle_receipt_ms) for r in results], 1),
        ]]))
        print()
        ratios = [r.through_rate / r.bare.rate for r in results]
        idle = [median(r.idle_ms) for r in results if r.idle_ms]
        targets = {"e2e": (f"{spread(ratios, 3)}x, backlog "
                           f"{'flat' if all(r.flat for r in results) else 'growing'} "
                           f"(slope {spread([r.slope for r in results], 1)} cases/s)",
                           median(ratios) >= 0.3 and all(r.flat for r in results))}
        if idle:
            targets["idle"] = (f"{spread(idle, 1)} ms", median(idle) < 10)
        print_targets(targets)
    return finish(failures, folder)


def e2e_load(client: Client, pid: int, base: str, database: Path, clients: int, seconds: float, tag: str,
             pace: float | None, others: dict[str, int]) -> tuple[Load, list[Sample], dict[str, float]]:
    """The load on the gateway with the outbox sampled every second."""
    samples = [sample(database, 0.0)]
    stop = threading.Event()
    began = time.monotonic()

    def sampler() -> None:
        tick = 1
        while not stop.wait(max(0.0, began + tick - time.monotonic())):
            samples.append(sample(database, time.monotonic() - began))
            tick += 1

    cpu0 = {"gateway": delivery.cpu_seconds(pid), **{k: delivery.cpu_seconds(v) for k, v in others.items()}}
    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    load = client.run(base, tag, clients, seconds, pace=pace)
    stop.set()
    thread.join()
    samples.append(sample(database, time.monotonic() - began))
    cpu = {"gateway": delivery.cpu_seconds(pid) - cpu0["gateway"],
           **{k: delivery.cpu_seconds(v) - cpu0[k] for k, v in others.items()}}
    return load, samples, cpu


# -- profile -----------------------------------------------------------------------------------------------


SAMPLED_BATCHES = 3
AREAS = ("werkzeug/flask + glue", "store", "model/base64", "hashing/json", "parse", "XSD", "rules", "file content (pypdf, Pillow)", "other")
PARSE = {"parse", "check_prolog", "check_declarations", "read_envelope", "check_must_understand", "check_soap_action",
         "_read_body"}
XSD = {"validate", "_clean_schema_message", "_element_path"}
MODEL = {"_case_from", "_message_from", "_attachments", "_person", "_timestamp", "_date", "case_from_xml", "child",
         "children", "text", "required", "flag", "safe_file_name"}


@functools.lru_cache(maxsize=None)
def area_of(filename: str, name: str) -> str | None:
    """The area a function's own time belongs to; None: a generic function, whose time goes
    to the areas of its callers."""
    if filename == "~":  # a C function
        if "sqlite3" in name:
            return "store"
        if "_hashlib" in name or "sha256" in name or "openssl" in name or "_json" in name:
            return "hashing/json"
        if "binascii" in name:
            return "model/base64"
        if "lxml.etree" in name:
            if "XMLSchema" in name or "_Validator" in name:
                return "XSD"
            if "fromstring" in name or "XMLParser" in name:
                return "parse"
        return None
    path = Path(filename)
    try:
        rel = path.resolve().relative_to(ROOT).as_posix()
    except (ValueError, OSError):
        rel = ""
    f = filename.replace("\\", "/")
    if rel.startswith("store/"):
        return "hashing/json" if ("hash" in name or "json" in name) else "store"
    if "/sqlite_utils/" in f or "/sqlite3/" in f:
        return "store"
    if rel == "model.py" or f.endswith("/base64.py"):
        return "model/base64"
    if "/json/" in f or f.endswith("/hashlib.py"):
        return "hashing/json"
    if "/pypdf/" in f or "/PIL/" in f or (rel == "rules.py" and ("pdf" in name or "picture" in name or name == "content_problem")):
        return "file content (pypdf, Pillow)"
    if rel in ("rules.py", "mapping.py") or "/stdnum/" in f:
        return "rules"
    if rel == "rivta.py":
        return "parse" if name in PARSE else "XSD" if name in XSD else "werkzeug/flask + glue"
    if rel == "inbound.py":
        return "model/base64" if name in MODEL else "parse" if name in PARSE else "werkzeug/flask + glue"
    if rel or "/flask/" in f or "/werkzeug/" in f or "/logging/" in f:
        return "werkzeug/flask + glue"  # the rest of the project: identity, logs, errors, gateway
    return None


def by_area(stats: pstats.Stats, area_of: Callable[[str, str], str | None] = area_of,
            areas_named: tuple[str, ...] = AREAS) -> dict[str, float]:
    """Self time (seconds) per area (``area_of(filename, function)``, None for a generic
    function); a generic function's split over its callers by the time it spent called
    from each (recursively). bench/worker.py uses it with its own areas."""
    table = stats.stats  # type: ignore[attr-defined]
    memo: dict[Any, dict[str, float]] = {}

    def resolve(func: Any, depth: int) -> dict[str, float]:
        own = area_of(func[0], func[2])
        if own:
            return {own: 1.0}
        if func in memo:
            return memo[func]
        callers = table[func][4] if func in table else {}
        weights = {caller: edge[2] or edge[3] for caller, edge in callers.items()}
        total = sum(weights.values())
        if depth > 25 or not callers or total <= 0:
            return {"other": 1.0}
        memo[func] = {"other": 1.0}  # a recursion back here counts as other
        mix: dict[str, float] = {}
        for caller, weight in weights.items():
            for area, share in resolve(caller, depth + 1).items():
                mix[area] = mix.get(area, 0.0) + share * weight / total
        memo[func] = mix
        return mix

    areas = dict.fromkeys(areas_named, 0.0)
    for func, (_, _, tt, _, _) in table.items():
        for area, share in resolve(func, 0).items():
            areas[area] += tt * share
    return areas


def environ_for(body: bytes) -> dict[str, Any]:
    from werkzeug.test import EnvironBuilder

    builder = EnvironBuilder(path="/rivta", method="POST", data=body, headers=list(HEADERS.items()),
                             base_url="http://127.0.0.1:8080", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    try:
        return builder.get_environ()
    finally:
        builder.close()


def call(app: Callable[..., Any], environ: dict[str, Any]) -> bytes:
    status: list[str] = []
    chunks = app(environ, lambda s, h, exc_info=None: status.append(s))
    try:
        answer = b"".join(chunks)
    finally:
        if hasattr(chunks, "close"):
            chunks.close()
    if not status or not status[0].startswith("200") or not common.OK.search(answer):
        raise RuntimeError(f"not answered OK: {status} {answer[:300]!r}")
    return answer


def per_case(app: Callable[..., Any], environs: list[dict[str, Any]]) -> tuple[float, float]:
    """(thread CPU ms, wall ms) per case, no profiler."""
    cpu, wall = time.thread_time(), time.perf_counter()
    for environ in environs:
        call(app, environ)
    return 1000 * (time.thread_time() - cpu) / len(environs), 1000 * (time.perf_counter() - wall) / len(environs)


def profiled(app: Callable[..., Any], environs: list[dict[str, Any]], timer: str) -> pstats.Stats:
    """The cases through ``app`` under cProfile, timed by thread CPU time or the wall clock."""
    profiler = cProfile.Profile(time.thread_time_ns, 1e-9) if timer == "cpu" else cProfile.Profile()
    profiler.enable()
    for environ in environs:
        call(app, environ)
    profiler.disable()
    return pstats.Stats(profiler, stream=io.StringIO())


def frame_area(frame: Any) -> str:
    """The area of a sampled stack: its innermost frame that has one."""
    while frame is not None:
        area = area_of(frame.f_code.co_filename, frame.f_code.co_name)
        if area:
            return area
        frame = frame.f_back
    return "other"


def sampled(app: Callable[..., Any], environs: list[dict[str, Any]], interval: float = 0.0005) -> tuple[dict[str, float], int]:
    """The cases through ``app`` with a statistical profiler: SIGPROF every ``interval`` s
    of this process's CPU time (``ITIMER_PROF``; the kernel fires it at its tick, so
    samples are 1-4 ms apart), each giving the CPU used since the previous one to the area
    of the stack it lands on. A C call's time goes to the Python code that called it; a
    thread waiting (an fsync) is not sampled. Little overhead and no bias towards functions
    called often, unlike a deterministic profiler. Only this thread runs here."""
    areas = dict.fromkeys(AREAS, 0.0)
    count = [0]
    last = [time.process_time()]

    def on_tick(signum: int, frame: Any) -> None:
        now = time.process_time()
        areas[frame_area(frame)] += now - last[0]
        last[0] = now
        count[0] += 1

    previous = signal.signal(signal.SIGPROF, on_tick)
    signal.setitimer(signal.ITIMER_PROF, interval, interval)
    try:
        for environ in environs:
            call(app, environ)
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, previous)
    return areas, count[0]


def run_profile(args: argparse.Namespace) -> int:
    print_header(args, f"profile: {args.cases} cases in-process (direct WSGI calls, no network)", "none")
    import gateway

    run = dt.datetime.now().strftime("%H%M%S")
    folder = Path(tempfile.mkdtemp(prefix="gateway-bench-limit-profile-"))
    failures: list[str] = []
    try:
        config = intake_config(folder)
        cfg = gateway.load_config(config)
        app = gateway.create_app(cfg, start_worker=False)
        bare = BareApp(folder / "bare.db")
        template = Template(common.Builder(), run)

        def environs(tag: str, count: int) -> list[dict[str, Any]]:
            return [environ_for(template.body(uid(tag, 0, n))) for n in range(1, count + 1)]

        for each in (app, bare):
            for environ in environs("W0000" if each is app else "WB000", 50):
                call(each, environ)
        n = args.cases
        plain = {"gateway": per_case(app, environs("T0000", n)), "bare": per_case(bare, environs("TB000", n))}
        (gcpu, gwall), (bcpu, bwall) = plain["gateway"], plain["bare"]
        print(f"per case, no profiler, {n} cases each: gateway {gcpu:.3f} ms CPU ({gwall:.3f} ms wall), "
              f"bare {bcpu:.3f} ms CPU ({bwall:.3f} ms wall); CPU ratio {gcpu / bcpu:.1f}x")
        print("(wall time includes the fsync of each COMMIT, synchronous=FULL; CPU time is what limits the rate)")
        print()
        areas = dict.fromkeys(AREAS, 0.0)
        samples = 0
        for batch in range(SAMPLED_BATCHES):  # new cases each time; the kernel's tick limits samples per case
            got, count = sampled(app, environs(f"PS{batch:03d}", n))
            areas = {a: areas[a] + got[a] for a in AREAS}
            samples += count
        cpu = profiled(app, environs("PC000", n), "cpu")
        profile_areas = by_area(cpu)
        total_s, total_p = sum(areas.values()), sum(profile_areas.values())
        print(f"## where the gateway's CPU goes ({SAMPLED_BATCHES} x {n} new cases in one thread, sampled on SIGPROF "
              f"(ITIMER_PROF): {samples} samples; ms per case scaled to the unprofiled {gcpu:.3f} ms)")
        print()
        print("area of a sample: its innermost frame's module (rules: area_of in bench/limit.py); cProfile "
              "column: the same cases under cProfile timed by thread CPU (its per-call overhead inflates "
              "areas with many small calls)")
        print()
        rows = [[area, f"{100 * areas[area] / total_s:.1f}", f"{gcpu * areas[area] / total_s:.3f}",
                 f"{100 * profile_areas[area] / total_p:.1f}"]
                for area in sorted(AREAS, key=lambda a: -areas[a])]
        print(common.markdown(["area", "CPU %", "CPU ms/case", "cProfile CPU %"], rows))
        print()
        totals = {"cpu": total_p}
        print(f"top {args.top} functions by own CPU time")
        print()
        table = cpu.stats  # type: ignore[attr-defined]
        total = totals["cpu"]
        top = sorted(table.items(), key=lambda kv: -kv[1][2])[:args.top]
        rows = []
        for (filename, line, name), (_, calls, tt, ct, _) in top:
            where = filename if filename == "~" else f"{short(filename)}:{line}"
            rows.append([f"{name[:70]}", where[:60], area_of(filename, name) or "(its callers')", str(calls),
                         f"{100 * tt / total:.1f}", f"{100 * ct / total:.1f}"])
        print(common.markdown(["function", "where", "area", "calls", "own CPU %", "cumulative %"], rows))
        print()
        print_targets({})
    except Exception as exc:  # noqa: BLE001 (reported as a failure)
        failures.append(f"{type(exc).__name__}: {exc}")
    return finish(failures, folder)


def short(filename: str) -> str:
    """A function's file as the table shows it: relative to site-packages, the standard
    library or the project."""
    f = filename.replace("\\", "/")
    if "/site-packages/" in f:
        return f.split("/site-packages/", 1)[1]
    stdlib = re.search(r"/lib/python3\.\d+/(.+)$", f)
    if stdlib:
        return stdlib.group(1)
    try:
        return Path(filename).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return f


# -- main ---------------------------------------------------------------------------------------------


def main() -> int:
    if sys.argv[1:2] == ["serve-bare"]:
        if len(sys.argv) != 5:
            sys.exit("usage: limit.py serve-bare CONFIG HOST:PORT DATABASE")
        serve_bare(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--end-to-end", action="store_true", help="the gateway with its worker, REST provider and receipt")
    mode.add_argument("--profile", action="store_true", help="in-process, cProfile grouped by area")
    parser.add_argument("--clients", default=None,
                        help="client counts, comma-separated (default 1,4,16; --end-to-end: 4)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per run (default 5; the issue's "
                        "end-to-end figure: 30)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator (default auto: wrk when on the PATH)")
    parser.add_argument("--big", type=int, default=5, help="intake: 5 x 20 MiB cases for the memory figure (0: skip)")
    parser.add_argument("--idle", type=int, default=20, help="--end-to-end: cases one at a time first (default 20)")
    parser.add_argument("--pace", type=float, default=None, metavar="F",
                        help="--end-to-end: offer F x the bare rate of the round instead of a closed loop")
    parser.add_argument("--peers", choices=("stub", "sandbox"), default="stub",
                        help="--end-to-end: the provider and 1177 as bench/peers.py's fast stubs (default) or the "
                             "sandbox's servers (python -m sandbox.providers / sandbox.national)")
    parser.add_argument("--cases", type=int, default=1000, help="--profile: cases (default 1000)")
    parser.add_argument("--top", type=int, default=25, help="--profile: functions listed (default 25)")
    args = parser.parse_args()
    try:
        levels = [int(v) for v in (args.clients or ("4" if args.end_to_end else "1,4,16")).split(",") if v.strip()]
    except ValueError:
        parser.error("--clients takes integers separated by commas, e.g. 1,4,16")
    if not levels or min(levels) < 1 or max(levels) > 99 or args.rounds < 1 or args.rounds > 99 or args.seconds <= 0:
        parser.error("--clients must be 1-99, --rounds 1-99, --seconds > 0")
    if args.pace is not None and (not args.end_to_end or args.pace <= 0):
        parser.error("--pace is for --end-to-end, and must be > 0")
    if args.profile:
        return run_profile(args)
    if args.end_to_end:
        if len(levels) != 1:
            parser.error("--end-to-end takes one client count")
        return run_e2e(args, levels[0])
    return run_intake(args, levels)


if __name__ == "__main__":
    sys.exit(main())
