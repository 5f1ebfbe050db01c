"""What a reload of the mappings (SIGHUP) costs the cases that arrive meanwhile (issue 13, item 6).

Starts `gateway serve` of this checkout (2 processes × 4 threads, each with its worker,
delivering to a stub provider on loopback) on a copy of the shipped mappings, keeps four
clients sending ProcessCase over kept-alive connections, and in each round sends SIGHUP:
"good" rounds change KLIN1's unit code (gunicorn replaces both processes), "broken" rounds
break units.yaml (GW073: nothing is replaced). For the cases sent in the 2 s before and
the 2 s after each SIGHUP it prints the count, the failures (anything but HTTP 200 with
resultCode OK) and the answer times; then the median and spread (min–max) over the rounds.

    .venv/bin/python bench/reload.py                 # = --rounds 5
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import requests  # noqa: E402
from conftest import case_dict, example_data, free_port, soap_bytes, write_config  # noqa: E402

WINDOW_S = 2.0


class Provider(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        data = json.dumps({"id": f"P-{body['externalId']}"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5, help="good and broken rounds each")
    args = parser.parse_args()
    import zeep

    import rivta

    clients = {name: zeep.Client(str(c.wsdl_path)) for name, c in (("ProcessCase", rivta.PROCESS_CASE),)}
    folder = Path(tempfile.mkdtemp(prefix="bench-reload-"))
    provider = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    threading.Thread(target=provider.serve_forever, daemon=True).start()
    mappings = Path(shutil.copytree(ROOT / "mappings", folder / "mappings"))
    units = mappings / "units.yaml"
    good = units.read_text()
    data = example_data(folder)
    data["mappings"]["dir"] = str(mappings)
    data["server"].update(workers=2, threads=4)
    data["targets"]["demo_rest"]["base_url"] = f"http://127.0.0.1:{provider.server_address[1]}/api"
    data["outbound"]["confirmations"]["enabled"] = False
    data["logging"]["level"] = "WARNING"
    write_config(folder, data)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen([sys.executable, "-c", "import cli; cli.main()", "serve", "--config",
                                str(folder / "config.yaml"), "--bind", f"127.0.0.1:{port}"], cwd=ROOT,
                               stdout=open(folder / "server.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    answers: list[tuple[float, float, bool]] = []  # sent, answered, ok
    stop, lock, count = threading.Event(), threading.Lock(), itertools.count(1)

    def send() -> None:
        session = requests.Session()
        while not stop.is_set():
            with lock:
                body = soap_bytes(clients, "ProcessCase", case=case_dict(caseId=f"B-{next(count):06d}"))
            sent = time.monotonic()
            try:
                answer = session.post(f"{base}/rivta", data=body, headers={"Content-Type": "text/xml"}, timeout=30)
                ok = answer.status_code == 200 and b">OK<" in answer.content
            except requests.RequestException:
                ok = False
            answers.append((sent, time.monotonic(), ok))

    try:
        for _ in range(300):
            try:
                if requests.get(f"{base}/health/live", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        threads = [threading.Thread(target=send, daemon=True) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(3)  # warm-up
        hups: list[tuple[str, float]] = []
        for n in range(args.rounds):
            for kind in ("good", "broken"):
                if kind == "good":
                    units.write_text(good.replace("code: KLIN1\n", f"code: KLIN1-{n}\n"))
                else:
                    units.write_text(units.read_text() + "\n  - [broken\n")
                time.sleep(WINDOW_S + 0.5)
                hups.append((kind, time.monotonic()))
                os.kill(process.pid, signal.SIGHUP)
                time.sleep(WINDOW_S + 1.5)
        stop.set()
        for thread in threads:
            thread.join(30)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        provider.shutdown()
    log = (folder / "server.log").read_text(errors="replace")
    import sqlite3

    with sqlite3.connect(folder / "gateway.db") as conn:
        codes = [code for (code,) in conn.execute("SELECT DISTINCT provider_unit_code FROM cases ORDER BY 1")]
    print(f"{len(answers)} cases, {sum(not ok for *_, ok in answers)} failed; stored with the unit codes "
          f"{', '.join(codes)} (one per good reload); {log.count('GW073')} reloads refused (GW073) in the log")
    print(f"{'round':<8} {'window':<16} {'cases':>5} {'failed':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    figures: dict[tuple[str, str], list[tuple[int, int, float, float, float]]] = {}
    for kind, at in hups:
        for window, lo, hi in (("2 s before", at - WINDOW_S, at), ("2 s after HUP", at, at + WINDOW_S)):
            taken = [(answered - sent) * 1000 for sent, answered, _ in answers if lo <= sent < hi]
            failed = sum(not ok for sent, _, ok in answers if lo <= sent < hi)
            taken.sort()
            row = (len(taken), failed, statistics.median(taken), taken[int(len(taken) * 0.99)], taken[-1])
            figures.setdefault((kind, window), []).append(row)
            print(f"{kind:<8} {window:<16} {row[0]:>5} {row[1]:>6} {row[2]:>7.1f} {row[3]:>7.1f} {row[4]:>7.1f}")
    print("\nover the rounds: median (min–max)")
    print(f"{'round':<8} {'window':<16} {'cases':>12} {'failed':>8} {'p50 ms':>18} {'p99 ms':>20} {'max ms':>20}")
    for (kind, window), rows in figures.items():
        cells = []
        for i, width in ((0, 12), (1, 8), (2, 18), (3, 20), (4, 20)):
            values = [r[i] for r in rows]
            fmt = "{:.0f}" if i < 2 else "{:.1f}"
            cells.append(f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"
                         .rjust(width))
        print(f"{kind:<8} {window:<16} " + " ".join(cells))
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
