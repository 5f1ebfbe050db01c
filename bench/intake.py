"""Intake benchmark: how fast the real gateway accepts 1177 ProcessCase requests.

What it measures
    The whole RIV-TA intake path of a running ``gateway serve`` (gunicorn, gthread): HTTP,
    body read, hardened XML parse, XSD validation, the 1177 rules, and the SQLite commit of
    the case, its attachments and its outbox row. The delivery worker is off
    (``--no-worker``) so only intake is timed.

    - typical, concurrent: N cases of about 10 KB (6 KB of text and one 1.5 KB PDF
      attachment), sent by C client threads at once;
    - typical, sequential: 300 of the same cases from one client (single-client latency);
    - big: cases with 5 attachments of exactly 20 MiB each (the most 1177 allows), sent one
      after another; every attachment has distinct content, so each is stored as its own blob.

    It reports cases/second and p50/p95/p99/max latency per scenario, the server's peak
    memory (VmHWM of the ``gateway serve`` process and its gunicorn worker) after the typical
    runs and after the big run, and the size of the database at the end.

    Every answer must be HTTP 200 with ``resultCode`` OK; anything else counts as a failure,
    the tail of the server's log is printed and the script exits with status 1.

How to run (from the project folder)
    .venv/bin/python bench/intake.py [--cases N] [--big N] [--concurrency C]

    Defaults: --cases 2000 --big 5 --concurrency 4 (and --sequential 300).

    The server runs from a temporary folder (config, database, server log) that is deleted
    at the end; its process group is always killed. Only loopback (127.0.0.1) is used:
    the request bodies are built with zeep from the project's own WSDL, nothing is fetched.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import requests
import yaml
import zeep
from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.append(str(ROOT))  # sample_files writes its PDFs with the sandbox's writer
import sample_files  # noqa: E402 - real PDFs, as the tests build them
WSDL = ROOT / "contracts/interactions/ProcessCaseInteraction/ProcessCaseInteraction_1.0_RIVTABP21.wsdl"
KLIN1 = "SE5566778899-KLIN1"
PNR = "191212121212"  # Tolvan Tolvansson, the Skatteverket test personnummer
PNR_TYPE = "1.2.752.129.2.1.3.1"
SWEDEN = ZoneInfo("Europe/Stockholm")
HEADERS = {"Content-Type": "text/xml; charset=UTF-8"}
OK = re.compile(rb"<(?:[\w.-]+:)?resultCode(?:\s[^>]*)?>OK<")
MIB = 1024 * 1024
BIG_ATTACHMENT = 20 * MIB
BIG_ATTACHMENTS = 5
TEXT_BYTES = 6000
ATTACHMENT_BYTES = 1536

PARAGRAPH = (
    "Jag vill lämna synpunkter på mitt besök på mottagningen. Jag fick vänta länge i väntrummet "
    "och ingen kunde säga hur lång tid det skulle ta. När jag väl kom in var läkaren vänlig men "
    "hade ont om tid, och jag fick inte svar på mina frågor om medicinen och om provsvaren. "
)


# -- the machine and the server's processes -------------------------------------------------------


def machine() -> dict[str, str]:
    meminfo = Path("/proc/meminfo").read_text()
    total_kb = int(re.search(r"MemTotal:\s+(\d+) kB", meminfo).group(1))
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    return {
        "cores": str(len(os.sched_getaffinity(0))),  # what `nproc` prints
        "cpu": model.group(1).strip() if model else platform.processor() or "unknown",
        "memory": f"{total_kb / MIB:.1f} GiB",
        "python": sys.version.split()[0],
        "os": f"{platform.system()} {platform.release()}",
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }


def descendants(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/<pid>/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in children.read_text().split())
            except OSError:
                pass
    return found


def status_kb(pid: int, key: str) -> int | None:
    try:
        match = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def server_memory(pid: int) -> list[tuple[int, str, int, int]]:
    """(pid, role, VmHWM kB, VmRSS kB) for the server process and its descendants."""
    rows = []
    for index, each in enumerate(descendants(pid)):
        hwm, rss = status_kb(each, "VmHWM"), status_kb(each, "VmRSS")
        if hwm is not None:
            rows.append((each, "gunicorn arbiter (gateway serve)" if index == 0 else "gunicorn worker", hwm, rss or 0))
    return rows


def print_memory(title: str, rows: list[tuple[int, str, int, int]]) -> list[str]:
    """Print the rows; return [title, arbiter VmHWM MiB, worker VmHWM MiB, worker VmRSS MiB]."""
    print(f"  server memory {title}:")
    for pid, role, hwm, rss in rows:
        print(f"    pid {pid:<7} {role:<34} VmHWM {hwm / 1024:8.1f} MiB   VmRSS {rss / 1024:8.1f} MiB")
    arbiter = [hwm for _, role, hwm, _ in rows if role.startswith("gunicorn arbiter")]
    workers = [(hwm, rss) for _, role, hwm, rss in rows if role == "gunicorn worker"]
    return [
        title,
        f"{max(arbiter) / 1024:.0f}" if arbiter else "-",
        f"{max(h for h, _ in workers) / 1024:.0f}" if workers else "-",
        f"{max(r for _, r in workers) / 1024:.0f}" if workers else "-",
    ]


# -- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway_command() -> Path:
    for candidate in (Path(sys.executable).parent / "gateway", ROOT / ".venv/bin/gateway"):
        if candidate.exists():
            return candidate
    sys.exit("error: the 'gateway' command is not installed next to this Python; run with .venv/bin/python.")


def absolute_paths(node):
    """The example's relative file paths (e.g. a target's wsdl) made absolute: the copy
    lives in the temporary folder, and relative paths start at the config file's folder."""
    if isinstance(node, dict):
        return {key: absolute_paths(value) for key, value in node.items()}
    if isinstance(node, list):
        return [absolute_paths(value) for value in node]
    if isinstance(node, str) and "/" in node and "://" not in node and not node.startswith("/") and (ROOT / node).exists():
        return str((ROOT / node).resolve())
    return node


def write_config(folder: Path) -> Path:
    data = absolute_paths(yaml.safe_load((ROOT / "config.example.yaml").read_text()))
    data["database"]["path"] = str(folder / "gateway.db")
    data["mappings"]["dir"] = str((ROOT / "mappings").resolve())
    data["server"]["threads"] = 8
    data["logging"]["level"] = "WARNING"
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def start_server(folder: Path, config: Path, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [str(gateway_command()), "serve", "--config", str(config), "--bind", f"127.0.0.1:{port}", "--no-worker"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=folder,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{base}/rivta", timeout=2).status_code == 200:
                return process, base
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.1)


def stop_server(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # the group may still hold a worker after the arbiter exited
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stored(database: Path) -> dict[str, int]:
    """Row counts of the tables intake writes (read-only, while the server runs)."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("cases", "attachments", "attachment_blobs", "outbox")}
    finally:
        db.close()


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no server log: {exc})"


# -- the requests ---------------------------------------------------------------------------------


class Builder:
    """ProcessCase SOAP bodies made by zeep from the project's own WSDL."""

    def __init__(self) -> None:
        self.client = zeep.Client(str(WSDL))
        now = dt.datetime.now(SWEDEN)
        self.created = now.strftime("%Y%m%d%H%M%S")
        self.event_date = (now.date() - dt.timedelta(days=10)).strftime("%Y%m%d")
        text = PARAGRAPH * (TEXT_BYTES // len(PARAGRAPH.encode()) + 1)
        self.text = text.encode()[:TEXT_BYTES].decode(errors="ignore")

    def case(self, case_id: str, text: str, attachments: list[dict]) -> dict:
        return {
            "caseId": case_id,
            "caseType": "COMPLAINT",
            "receiver": {"hsaId": KLIN1, "isPatientBoard": False},
            "subjectOfCare": {
                "personId": {"id": PNR, "type": PNR_TYPE},
                "name": "Tolvan Tolvansson",
                "contact": {"mobile": "+46701234567", "email": "tolvan@example.org", "consentToShare": True},
            },
            "createdTime": self.created,
            "subject": "Bemötande vid besök",
            "text": text,
            "replyPreference": {"wantsReply": True, "channel": "INKORG"},
            "complaint": {"eventDate": self.event_date, "isCareProcess": False, "eventLocationText": "Mottagningen, plan 2"},
            "attachment": attachments,
        }

    def body(self, case: dict) -> bytes:
        envelope = self.client.create_message(
            self.client.service, "ProcessCase", case=case, _soapheaders={"LogicalAddress": KLIN1}
        )
        return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")

    def typical(self, case_id: str) -> bytes:
        """About 10 KB: 6 KB of text and a small PDF (1.5 KB) with content of its own."""
        head = f"Underlag {case_id} "  # a real PDF of ATTACHMENT_BYTES whose text is its own
        filler = os.urandom(ATTACHMENT_BYTES).hex()
        room = ATTACHMENT_BYTES - len(sample_files.pdf(head))
        pdf = sample_files.pdf(head + filler[:room])
        room -= len(pdf) - ATTACHMENT_BYTES  # the lengths written in the file grew by a digit or two
        pdf = sample_files.pdf(head + filler[:room])
        attachment = {"fileName": "underlag.pdf", "mimeType": "application/pdf", "data": pdf}
        return self.body(self.case(case_id, self.text, [attachment]))

    def big(self, case_id: str) -> bytes:
        """5 attachments of exactly 20 MiB, each with distinct content (5 blobs per case)."""
        attachments = []
        for index in range(BIG_ATTACHMENTS):
            # a real PDF (the gateway parses every one): a page with a picture of random bytes
            data = sample_files.pdf(f"{case_id}/{index}", size=BIG_ATTACHMENT, seed=os.urandom(1 << 16))
            attachments.append({"fileName": f"journal-{index + 1}.pdf", "mimeType": "application/pdf", "data": data})
        case = self.case(case_id, "Bifogar mina journalkopior.", attachments)
        del attachments, data
        return self.body(case)


_local = threading.local()


def post(base: str, body: bytes, timeout: float) -> tuple[bool, float, str]:
    """POST one body; (ok, seconds, what went wrong)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    started = time.perf_counter()
    try:
        response = session.post(f"{base}/rivta", data=body, headers=HEADERS, timeout=timeout)
        content = response.content
    except requests.RequestException as exc:
        return False, time.perf_counter() - started, f"{type(exc).__name__}: {exc}"[:300]
    elapsed = time.perf_counter() - started
    if response.status_code == 200 and OK.search(content):
        return True, elapsed, ""
    return False, elapsed, f"HTTP {response.status_code}: {content[:400]!r}"


# -- figures ---------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


class Scenario:
    def __init__(self, name: str, body_bytes: str, concurrency: int):
        self.name, self.body_bytes, self.concurrency = name, body_bytes, concurrency
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.wall = 0.0

    def add(self, result: tuple[bool, float, str]) -> None:
        ok, seconds, problem = result
        self.latencies.append(seconds)
        if not ok:
            self.failures.append(problem)

    @property
    def count(self) -> int:
        return len(self.latencies)

    def row(self) -> list[str]:
        ms = [x * 1000 for x in self.latencies] or [float("nan")]
        return [
            self.name, self.body_bytes, str(self.concurrency), str(self.count), str(len(self.failures)),
            f"{self.count / self.wall:.1f}" if self.wall else "-",
            *(f"{percentile(ms, p):.1f}" for p in (50, 95, 99)), f"{max(ms):.1f}",
        ]

    def report(self) -> None:
        cells = self.row()
        print(f"  {self.name}: {self.count} cases in {self.wall:.2f} s = {cells[5]} cases/s; "
              f"latency ms p50 {cells[6]}  p95 {cells[7]}  p99 {cells[8]}  max {cells[9]}; failures {len(self.failures)}")
        for problem in self.failures[:3]:
            print(f"    failure: {problem}")


def run_parallel(scenario: Scenario, base: str, bodies: list[bytes], concurrency: int) -> None:
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        for result in pool.map(lambda body: post(base, body, 60), bodies):
            scenario.add(result)
        scenario.wall = time.perf_counter() - started


def run_sequential(scenario: Scenario, base: str, bodies: list[bytes]) -> None:
    started = time.perf_counter()
    for body in bodies:
        scenario.add(post(base, body, 60))
    scenario.wall = time.perf_counter() - started


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(size)


def markdown(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


# -- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=2000, help="typical cases sent concurrently (default 2000)")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads for the typical run (default 4)")
    parser.add_argument("--sequential", type=int, default=300, help="typical cases sent by one client (default 300)")
    parser.add_argument("--big", type=int, default=5, help="cases with 5 x 20 MiB attachments (default 5)")
    args = parser.parse_args()

    info = machine()
    print("# gateway intake benchmark (bench/intake.py)")
    print(f"date     {info['date']}")
    print(f"machine  {info['cores']} cores (nproc), {info['cpu']}; {info['memory']} RAM; {info['os']}")
    print(f"python   {info['python']} ({sys.executable})")
    print(f"run      --cases {args.cases} --concurrency {args.concurrency} --sequential {args.sequential} --big {args.big}")
    print("server   gateway serve --no-worker, gunicorn gthread, 1 worker process x 8 threads, SQLite WAL, loopback only")
    print()

    run = dt.datetime.now().strftime("%H%M%S")
    folder = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    log_path = folder / "server.log"
    process = None
    failed = False
    scenarios: list[Scenario] = []
    try:
        config = write_config(folder)
        with open(log_path, "wb") as log:
            try:
                process, base = start_server(folder, config, log)
            except RuntimeError:
                print("the server did not start; its log ends with:\n" + log_tail(log_path))
                return 1
            print(f"server   pid {process.pid} at {base}")

            builder = Builder()
            started = time.perf_counter()
            warmup = [builder.typical(f"BENCH-{run}-W{i:04d}") for i in range(20)]
            parallel = [builder.typical(f"BENCH-{run}-P{i:06d}") for i in range(args.cases)]
            sequential = [builder.typical(f"BENCH-{run}-S{i:06d}") for i in range(args.sequential)]
            sizes = [len(b) for b in parallel + sequential] or [0]
            typical_size = f"{human(sum(sizes) / len(sizes))}"
            print(f"built    {len(warmup) + len(parallel) + len(sequential)} typical bodies in "
                  f"{time.perf_counter() - started:.1f} s; body size {min(sizes)}-{max(sizes)} bytes "
                  f"(text {len(builder.text.encode())} bytes, one PDF of {ATTACHMENT_BYTES} bytes)")
            print()

            print("typical cases")
            warm = Scenario("warm-up", typical_size, 1)
            run_sequential(warm, base, warmup)
            if warm.failures:
                warm.report()
                failed = True
            else:
                print(f"  warm-up: {warm.count} cases, not counted")
                concurrent_run = Scenario(f"typical, {args.concurrency} clients", typical_size, args.concurrency)
                run_parallel(concurrent_run, base, parallel, args.concurrency)
                concurrent_run.report()
                single = Scenario("typical, 1 client", typical_size, 1)
                run_sequential(single, base, sequential)
                single.report()
                scenarios += [concurrent_run, single]
            del warmup, parallel, sequential
            hwm_typical = print_memory("after the typical runs", server_memory(process.pid))
            print()

            hwm_big = None
            if args.big > 0:
                print(f"big cases ({BIG_ATTACHMENTS} attachments x {BIG_ATTACHMENT} bytes each, one case at a time)")
                big = Scenario("big, 1 client", "?", 1)
                build_s = 0.0
                big_sizes = []
                started = time.perf_counter()
                for i in range(args.big):
                    t0 = time.perf_counter()
                    body = builder.big(f"BENCH-{run}-B{i:03d}")
                    build_s += time.perf_counter() - t0
                    big_sizes.append(len(body))
                    result = post(base, body, 600)
                    del body
                    big.add(result)
                    print(f"  case {i + 1}: body {big_sizes[-1]} bytes, {result[1] * 1000:.0f} ms, "
                          f"{'OK' if result[0] else 'FAILED'}")
                big.wall = time.perf_counter() - started - build_s
                big.body_bytes = human(sum(big_sizes) / len(big_sizes))
                big.report()
                print(f"  (building the bodies with zeep took {build_s:.1f} s on the client, not counted; "
                      f"upload rate {sum(big_sizes) / big.wall / 1e6:.0f} MB/s of SOAP)")
                scenarios.append(big)
                hwm_big = print_memory("after the big run", server_memory(process.pid))
                print(f"  client VmHWM {status_kb(os.getpid(), 'VmHWM') / 1024:.1f} MiB")
                print()

            counts = stored(folder / "gateway.db")
            print("stored   " + ", ".join(f"{n} {table}" for table, n in counts.items())
                  + f"; server log {len(log_path.read_bytes().splitlines())} lines at level WARNING")
            expected = sum(s.count - len(s.failures) for s in [*scenarios, warm])
            if counts["cases"] != expected:
                print(f"FAILED: {expected} cases were answered OK but {counts['cases']} are stored")
                failed = True

        failed = failed or any(s.failures for s in scenarios)
        db_files = {p.name: p.stat().st_size for p in sorted(folder.glob("gateway.db*"))}
        print("database " + ", ".join(f"{name} {size / MIB:.1f} MiB" for name, size in db_files.items())
              + f"; total {sum(db_files.values()) / MIB:.1f} MiB")
        print()

        print("## results")
        print()
        header = ["scenario", "body", "clients", "cases", "failures", "cases/s", "p50 ms", "p95 ms", "p99 ms", "max ms"]
        print(markdown(header, [s.row() for s in scenarios]))
        print()
        memory = [hwm_typical] + ([hwm_big] if hwm_big is not None else [])
        print(markdown(["server memory, MiB", "arbiter VmHWM", "worker VmHWM (peak)", "worker VmRSS (now)"], memory))
        print()
        print(markdown(["database at the end", "MiB"],
                       [[name, f"{size / MIB:.1f}"] for name, size in db_files.items()]
                       + [["total", f"{sum(db_files.values()) / MIB:.1f}"]]))
        print()
        if failed:
            print("FAILED: some requests were not answered OK. The server log ends with:")
            print(log_tail(log_path))
            return 1
        print("all requests answered OK")
        return 0
    finally:
        if process is not None:
            stop_server(process)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
