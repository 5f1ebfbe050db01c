"""PostgreSQL against SQLite: intake and end-to-end throughput, one and two instances.

For each round and each setup (SQLite with one instance, PostgreSQL with one, PostgreSQL
with two on one database) a fresh database gets ``--cases`` typical complaints (10 KB,
one PDF; bench/intake.py's builder) over RIV-TA from 4 client threads, spread over the
instances; each ``gateway serve`` runs 1 process × 8 threads with its worker, delivering
to the sandbox's demo_rest (no delay). Measured: intake (cases acknowledged per second)
and end to end (cases the provider holds per second, from the first request to the last
delivery). Prints every round, then the median and spread per setup and the ratios to
SQLite of the same rounds.

    .venv/bin/python bench/postgres.py [--cases 600] [--rounds 3] [--url postgresql://postgres@127.0.0.1:5432/test]

The PostgreSQL database of each run is created (``CREATE DATABASE gw_bench_…``) and dropped.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from delivery import start_gateway  # noqa: E402 - gateway serve with its worker, until it answers
from intake import ROOT, Builder, log_tail, stop_server, write_config  # noqa: E402


def start_providers() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "sandbox.providers", "--rest-port", "0", "--soap-port", "0",
                                "--quiet", "--answer-delay", "0"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    while not line.startswith("demo_rest"):
        if not line:
            raise RuntimeError("the demo providers did not start")
        line = process.stdout.readline()
    return process, line.split()[1]


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def run(setup: str, instances: int, bodies: list[bytes], provider: str, admin_url: str) -> tuple[float, float]:
    requests.post(f"{provider}/_reset", timeout=5)
    with tempfile.TemporaryDirectory(prefix="gw-bench-pg-") as tmp:
        folder = Path(tmp)
        config = write_config(folder)
        data = yaml.safe_load(config.read_text())
        data["targets"]["demo_rest"]["base_url"] = f"{provider}/api"
        data["outbound"]["confirmations"]["enabled"] = False
        data["worker"].update(poll_s=1, concurrency=4)
        database = None
        if setup == "postgresql":
            database = f"gw_bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{database}"')
            data["database"] = {"url": with_database(admin_url, database), "pool_size": 10}
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        log = open(folder / "server.log", "ab")
        servers = [start_gateway(folder, config, log) for _ in range(instances)]
        try:
            acknowledged = 0
            lock = threading.Lock()

            def client(index: int) -> None:
                nonlocal acknowledged
                session = requests.Session()
                for n, body in enumerate(bodies[index::4]):
                    base = servers[(n + index) % len(servers)][1]
                    answer = session.post(f"{base}/rivta", data=body, headers={"Content-Type": "text/xml; charset=UTF-8"},
                                          timeout=30)
                    if answer.status_code == 200 and b">OK<" in answer.content:
                        with lock:
                            acknowledged += 1

            started = time.monotonic()
            threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            intake_s = time.monotonic() - started
            if acknowledged != len(bodies):
                raise RuntimeError(f"{setup}: {len(bodies) - acknowledged} case(s) not acknowledged")
            deadline = time.monotonic() + 300
            while len(requests.get(f"{provider}/_received", timeout=10).json()["received"]) < len(bodies):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{setup}: not everything was delivered\n" + log_tail(folder / "server.log"))
                time.sleep(0.05)
            end_to_end_s = time.monotonic() - started
            return len(bodies) / intake_s, len(bodies) / end_to_end_s
        finally:
            for process, _ in servers:
                stop_server(process)
            log.close()
            if database:
                with psycopg.connect(admin_url, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="a PostgreSQL database to connect to for CREATE/DROP DATABASE")
    args = parser.parse_args()
    builder = Builder()
    setups = [("SQLite, 1 instance", "sqlite", 1), ("PostgreSQL, 1 instance", "postgresql", 1),
              ("PostgreSQL, 2 instances", "postgresql", 2)]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in setups}
    providers, provider = start_providers()
    try:
        for round_ in range(1, args.rounds + 1):
            for name, setup, instances in setups:
                bodies = [builder.typical(f"B{round_}-{setup}-{instances}-{i:05d}") for i in range(args.cases)]
                intake_rate, e2e_rate = run(setup, instances, bodies, provider, args.url)
                results[name].append((intake_rate, e2e_rate))
                print(f"round {round_}: {name:<24} intake {intake_rate:7.1f} cases/s   end to end {e2e_rate:7.1f} cases/s",
                      flush=True)
    finally:
        stop_server(providers)
    base_intake = [r[0] for r in results["SQLite, 1 instance"]]
    base_e2e = [r[1] for r in results["SQLite, 1 instance"]]
    print(f"\n{args.cases} cases x {args.rounds} rounds, 4 clients; median (min-max); ratio to SQLite of the same rounds (median)\n")
    print("| setup | intake cases/s | end to end cases/s | intake ratio | end-to-end ratio |")
    print("|---|---|---|---|---|")
    for name, _, _ in setups:
        intake_rates = [r[0] for r in results[name]]
        e2e_rates = [r[1] for r in results[name]]
        ri = statistics.median(a / b for a, b in zip(intake_rates, base_intake))
        re = statistics.median(a / b for a, b in zip(e2e_rates, base_e2e))
        print(f"| {name} | {statistics.median(intake_rates):.1f} ({min(intake_rates):.1f}-{max(intake_rates):.1f}) "
              f"| {statistics.median(e2e_rates):.1f} ({min(e2e_rates):.1f}-{max(e2e_rates):.1f}) | {ri:.2f} | {re:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
