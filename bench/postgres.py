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

``--big N`` (0 to skip; default 0) then sends N cases of 5 attachments of 20 MiB each
(bench/intake.py's ``Builder.big``) one after another to a fresh ``gateway serve`` with its
worker, on SQLite and on PostgreSQL, waits until the provider holds each, and prints the
peak RSS (VmHWM) of every process of the server against the body's size (target: the
gunicorn worker under 5x the body).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from delivery import start_gateway  # noqa: E402 - gateway serve with its worker, until it answers
import intake as common  # noqa: E402
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


@contextlib.contextmanager
def prepared(setup: str, provider: str, admin_url: str, prefix: str) -> Iterator[tuple[Path, Path, Any]]:
    """A gateway config in a folder of its own (deleted after): demo_rest at ``provider``
    (reset first), no receipts, the worker polling every second with 4 slots, on SQLite or
    (``setup`` "postgresql") a new PostgreSQL database, dropped after; (folder, config, the
    open server log)."""
    requests.post(f"{provider}/_reset", timeout=5)
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
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
        try:
            yield folder, config, log
        finally:
            log.close()
            if database:
                with psycopg.connect(admin_url, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def run(setup: str, instances: int, bodies: list[bytes], provider: str, admin_url: str) -> tuple[float, float]:
    with prepared(setup, provider, admin_url, "gw-bench-pg-") as (folder, config, log):
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


def big(setup: str, count: int, builder: Builder, provider: str, admin_url: str) -> None:
    """``count`` cases of 5 x 20 MiB in through ``gateway serve`` and out to demo_rest; prints VmHWM per process."""
    with prepared(setup, provider, admin_url, "gw-bench-pg-big-") as (folder, config, log):
        # in alone first: gateway serve --no-worker, the cases only stored (the peak of intake)
        process, base = common.start_server(folder, config, log)
        try:
            ok, _, problem = common.post(base, builder.typical(f"BIGWARM-IN-{setup}"), 60)
            assert ok, problem
            before_in = max(hwm for _, role, hwm, _ in common.server_memory(process.pid) if role == "gunicorn worker")
            in_sizes = []
            for i in range(count):
                body = builder.big(f"BIGIN-{setup}-{i:03d}")
                in_sizes.append(len(body))
                ok, seconds, problem = common.post(base, body, 600)
                del body
                assert ok, problem
            peak_in = max(hwm for _, role, hwm, _ in common.server_memory(process.pid) if role == "gunicorn worker")
            body_size = sum(in_sizes) / len(in_sizes)
            print(f"{setup}: in only (--no-worker), {count} big case(s): gunicorn worker VmHWM {before_in / 1024:.0f} MiB "
                  f"before, {peak_in / 1024:.0f} MiB peak = {peak_in * 1024 / body_size:.2f}x the body "
                  f"({body_size / common.MIB:.1f} MiB)", flush=True)
        finally:
            stop_server(process)
        # then in and out: gateway serve with its worker, which first delivers the stored ones
        process, base = start_gateway(folder, config, log)
        try:
            deadline = time.monotonic() + 600
            while len(requests.get(f"{provider}/_received", timeout=30).json()["received"]) < count + 1:
                assert time.monotonic() < deadline, "the stored big cases were not delivered"
                time.sleep(0.2)
            peak_out = max(hwm for _, role, hwm, _ in common.server_memory(process.pid) if role == "gunicorn worker")
            print(f"{setup}: out only (the worker delivering the {count} stored big case(s)): gunicorn worker VmHWM "
                  f"{peak_out / 1024:.0f} MiB peak = {peak_out * 1024 / body_size:.2f}x the body", flush=True)
        finally:
            stop_server(process)
        requests.post(f"{provider}/_reset", timeout=5)
        process, base = start_gateway(folder, config, log)
        try:
            ok, _, problem = common.post(base, builder.typical(f"BIGWARM-{setup}"), 60)
            assert ok, problem
            deadline = time.monotonic() + 60
            while len(requests.get(f"{provider}/_received", timeout=10).json()["received"]) < 1:
                assert time.monotonic() < deadline, "the warm-up case was not delivered"
                time.sleep(0.1)
            before = {pid: (role, hwm) for pid, role, hwm, _ in common.server_memory(process.pid)}
            sizes = []
            for i in range(count):
                body = builder.big(f"BIG-{setup}-{i:03d}")
                sizes.append(len(body))
                ok, seconds, problem = common.post(base, body, 600)
                del body
                started = time.monotonic()
                while len(requests.get(f"{provider}/_received", timeout=30).json()["received"]) < i + 2:
                    if time.monotonic() > started + 600:
                        raise RuntimeError(f"{setup}: big case {i + 1} not delivered\n" + log_tail(folder / "server.log"))
                    time.sleep(0.2)
                print(f"{setup}: big case {i + 1}: {sizes[-1] / common.MIB:.1f} MiB, in {seconds * 1000:.0f} ms "
                      f"({'OK' if ok else 'FAILED: ' + problem}), delivered {time.monotonic() - started:.1f} s later",
                      flush=True)
            body_size = sum(sizes) / len(sizes)
            for pid, role, hwm, rss in common.server_memory(process.pid):
                was = before.get(pid, (role, 0))[1]
                print(f"{setup}:   pid {pid:<7} {role:<28} VmHWM {was / 1024:7.0f} MiB before, {hwm / 1024:7.0f} MiB "
                      f"peak = {hwm * 1024 / body_size:.2f}x the body ({body_size / common.MIB:.1f} MiB); "
                      f"VmRSS now {rss / 1024:.0f} MiB", flush=True)
        finally:
            stop_server(process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="a PostgreSQL database to connect to for CREATE/DROP DATABASE")
    parser.add_argument("--big", type=int, default=0,
                        help="after the rounds, N cases of 5 x 20 MiB in and out on SQLite and PostgreSQL (peak RSS)")
    args = parser.parse_args()
    builder = Builder()
    if args.rounds == 0 and args.big:
        providers, provider = start_providers()
        try:
            for setup in ("sqlite", "postgresql"):
                big(setup, args.big, builder, provider, args.url)
        finally:
            stop_server(providers)
        return 0
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
        for setup in ("sqlite", "postgresql") if args.big else ():
            big(setup, args.big, builder, provider, args.url)
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
