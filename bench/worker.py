"""Worker benchmark: the CPU the gateway's worker spends per case, in-process (issue 16).

Role
    Measures what one case costs the worker end to end: its delivery to the provider by
    REST (``deliver_case``) and the automatic receipt to the citizen through 1177
    (``add_message``, the national profile's SOAP call), each claimed, called and completed
    by the real ``Worker`` (``gateway.build_worker``: its dispatcher, its thread pool, its
    adapters) against the sandbox's peers on loopback, started as bench/limit.py's
    end-to-end mode starts them (``python -m sandbox.providers --delay 0 --answer-delay 0``,
    ``python -m sandbox.national``; ``--fast-peers``: bench/peers.py's fast stubs instead,
    as bench/limit.py --end-to-end uses by default).

    One run (a child process, ``--one``): ``--cases`` new cases (bench/limit.py's 10.4 KB
    ProcessCase, a new caseId and PDF each) are stored through the gateway's own WSGI app
    (``gateway.create_app``, called directly, no worker); then the worker starts and drains
    them, and the run prints, per case: the worker's CPU (this process's CPU over the drain,
    user + system, less the main thread, which only waits; the peers run in processes of
    their own), the wall time of the drain, the SQL statements and write transactions the
    store ran (``sqlite_utils.Database.execute`` counted), the peers' CPU, and as the
    yardsticks of the same run the intake CPU per case and bench/limit.py's bare app's CPU
    per request (thread time). Then, unless ``--no-profile``, a second batch of new cases
    drained under a sampling profiler: every ~1 ms a thread reads each other thread's CPU
    clock (``pthread_getcpuclockid``) and gives what it used since the last sample to the
    area of the stack it is on (its innermost frame that has one, ``area_of``): zeep,
    requests/urllib3 (with http.client, socket, ssl), store (store/, sqlite_utils, sqlite3),
    json, logging, mapping, model, worker/adapters (worker.py, adapters/), other.

    The default (parent) runs ``--rounds`` such runs and prints each figure's median and
    (min-max) spread; ``--compare DIR`` interleaves runs of another checkout of the project
    (e.g. a ``git worktree`` of main: this script is copied into it and run there with the
    same Python), alternating which goes first, and prints the ratio this/DIR per round.

How to run (from the project folder)
    .venv/bin/python bench/worker.py                          # 3 rounds of 1000 cases
    .venv/bin/python bench/worker.py --compare /tmp/base      # against another checkout

May import: bench/limit.py (bodies, bare app, the peers' start-up, the end-to-end config),
bench/intake.py, bench/delivery.py, the gateway's own modules, the standard library.
Product code never imports this.

Invariants: loopback only; every case id is new; the temporary folder is deleted and
every process started is stopped at the end; a run whose cases are not all delivered and
receipted (or any dead row) is a failure, never a figure.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import json
import os
import pstats
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import limit  # noqa: E402  (bench/limit.py: bodies, bare app, peers, configs; fixes sys.path)

common, delivery = limit.common, limit.delivery
ROOT = BENCH.parent

AREAS = ("zeep", "requests/urllib3", "store", "json", "logging", "mapping", "model", "worker/adapters", "other")
STDLIB_NET = ("/http/", "/socket.py", "/ssl.py", "/email/", "/urllib/", "/selectors.py")


def area_of(filename: str) -> str | None:
    """The area of a frame's file; None for a generic one (threading, concurrent, functools...)."""
    f = filename.replace("\\", "/")
    if "/zeep/" in f or "/lxml/" in f or "/isodate/" in f:
        return "zeep"
    if "/requests/" in f or "/urllib3/" in f or "/idna/" in f or "/charset_normalizer/" in f or \
            "/certifi/" in f or any(s in f for s in STDLIB_NET):
        return "requests/urllib3"
    if "/sqlite_utils/" in f or "/sqlite3/" in f:
        return "store"
    if "/json/" in f:
        return "json"
    if "/logging/" in f:
        return "logging"
    try:
        rel = Path(f).resolve().relative_to(ROOT).as_posix()
    except (ValueError, OSError):
        return None
    if rel.startswith("store/"):
        return "store"
    if rel == "logs.py":
        return "logging"
    if rel == "mapping.py":
        return "mapping"
    if rel in ("model.py", "clock.py", "errors.py"):
        return "model"
    if rel in ("worker.py", "rivta.py") or rel.startswith("adapters/"):
        return "worker/adapters"
    return None


def func_area(filename: str, name: str) -> str | None:
    """The area of a profiled function's own time (None: its callers')."""
    if filename == "~":  # a C function
        if "sqlite3" in name:
            return "store"
        if "_json" in name:
            return "json"
        if "lxml" in name:
            return "zeep"
        if "socket" in name or "_ssl" in name or "select" in name or "poll" in name:
            return "requests/urllib3"
        return None
    return area_of(filename)


def by_area(stats: pstats.Stats) -> dict[str, float]:
    """Own time (seconds) per area, split as bench/limit.py's profile does (``limit.by_area``)."""
    return limit.by_area(stats, func_area, AREAS)


class ThreadProfiles:
    """cProfile in every thread started while it is on (timed by each thread's own CPU
    clock): the worker's dispatcher, its delivery and call pools, and with ``--sync`` the
    thread that drains. A thread's first event turns its own profiler on
    (``threading.setprofile``). Under the profiler the own time of the pools' waits
    (``SimpleQueue.get``) is large (40-70 %), far more than taking those waits away saves
    unprofiled (a few %): read the other areas against each other, not that row."""

    def __init__(self) -> None:
        self.profilers: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _hook(self, *_: Any) -> None:
        sys.setprofile(None)
        profiler = cProfile.Profile(time.thread_time_ns, 1e-9)
        with self._lock:
            self.profilers.append(profiler)
        profiler.enable()

    def start(self, this_thread: bool = False) -> None:
        """``this_thread``: profile the calling thread too (``--sync`` drains in it)."""
        threading.setprofile(self._hook)
        if this_thread:
            self._hook()


    def stop(self) -> None:
        threading.setprofile(None)  # type: ignore[arg-type]
        for profiler in self.profilers:
            profiler.disable()

    def stats(self) -> pstats.Stats:
        profilers = [p for p in self.profilers if p.getstats()]
        stats = pstats.Stats(profilers[0], stream=io.StringIO())
        for profiler in profilers[1:]:
            stats.add(profiler)
        return stats


class Counted:
    """Counts the statements and the write transactions the store runs (``Database.execute``)."""

    def __init__(self, keep: bool = False) -> None:
        from sqlite_utils import Database

        self.statements = 0
        self.transactions = 0
        self.log: list[str] | None = [] if keep else None
        original = Database.execute
        counter = self

        def execute(db: Any, sql: str, parameters: Any = None) -> Any:
            if sql.startswith("PRAGMA"):  # the store's per-transaction settings, not work
                return original(db, sql, parameters)
            counter.statements += 1
            if counter.log is not None:
                counter.log.append(" ".join(sql.split())[:110])
            if sql.startswith("BEGIN"):
                counter.transactions += 1
            return original(db, sql, parameters)

        Database.execute = execute  # type: ignore[method-assign]


def outbox_state(path: Path, prefix: str) -> tuple[int, int, int]:
    """(rows done, rows dead, rows of the cases) of the cases whose id starts with ``prefix``."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute(
            "SELECT sum(status = 'done'), sum(status = 'dead'), count(*) FROM outbox WHERE case_id LIKE ? "
            "AND action IN ('deliver_case', 'add_message')", [prefix + "%"]).fetchone()
    finally:
        db.close()


def drain(worker: Any, path: Path, prefix: str, count: int, timeout_s: float = 300.0, *, sync: bool = False) -> float:
    """Start the worker, wait until the ``count`` cases are delivered and receipted, stop it;
    the wall seconds. ``sync``: ``Worker.run_until_idle`` in this thread instead (the same
    claim, deliver and complete without the dispatcher and the delivery pool)."""
    began = time.perf_counter()
    if sync:
        worker.run_until_idle(timeout_s)
        done, dead, _rows = outbox_state(path, prefix)
        if dead or (done or 0) < 2 * count:
            raise RuntimeError(f"run_until_idle left {2 * count - (done or 0)} rows undone, {dead} dead")
        return time.perf_counter() - began
    worker.start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            done, dead, _rows = outbox_state(path, prefix)
            if dead:
                raise RuntimeError(f"{dead} outbox rows dead (see the worker's log)")
            if (done or 0) >= 2 * count:
                return time.perf_counter() - began
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {2 * count} rows done within {timeout_s:g} s")
            time.sleep(0.05)
    finally:
        worker.stop()


def one(args: argparse.Namespace) -> dict[str, Any]:
    """One run in this process; its figures as a dict."""
    import gateway
    import worker as worker_module

    counted = Counted(keep=args.sql)
    folder = Path(tempfile.mkdtemp(prefix="gateway-bench-worker-"))
    try:
        urls = json.loads(args.peers)
        config = limit.e2e_config(folder, {k: urls[k] for k in ("demo_rest", "demo_soap")}, urls["national"])
        if args.concurrency:
            import yaml

            data = yaml.safe_load(config.read_text())
            data["worker"]["concurrency"] = args.concurrency
            config.write_text(yaml.safe_dump(data, sort_keys=False))
        cfg = gateway.load_config(config)
        app = gateway.create_app(cfg, start_worker=False)
        store = app.extensions["gateway.store"]
        maps = app.extensions["gateway.mappings"]
        run = f"{os.getpid() % 100000:05d}"
        template = limit.Template(common.Builder(), run)
        bare = limit.BareApp(folder / "bare.db")

        def environs(tag: str, n: int) -> list[dict[str, Any]]:
            return [limit.environ_for(template.body(limit.uid(tag, 0, i))) for i in range(1, n + 1)]

        def batch(tag: str, n: int, sampler: ThreadProfiles | None = None) -> dict[str, float]:
            intake_cpu, _ = limit.per_case(app, environs(tag, n))
            work = gateway.build_worker(cfg, store, maps)
            peers0 = {k: delivery.cpu_seconds(p) for k, p in pids.items()}
            main0, proc0, usage0 = time.thread_time(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
            s0, t0 = counted.statements, counted.transactions
            if sampler is not None:
                sampler.start(this_thread=args.sync)
            wall = drain(work, Path(cfg.database.path), template.case_id(tag), n, sync=args.sync)
            if sampler is not None:
                sampler.stop()
            cpu = (time.process_time() - proc0) - (0.0 if args.sync else time.thread_time() - main0)
            usage = resource.getrusage(resource.RUSAGE_SELF)
            peers = {k: delivery.cpu_seconds(p) - peers0[k] for k, p in pids.items()}
            return {"worker_cpu_ms": 1000 * cpu / n, "wall_ms": 1000 * wall / n, "intake_cpu_ms": intake_cpu,
                    "system_share": (usage.ru_stime - usage0.ru_stime) / max(1e-9, (usage.ru_utime - usage0.ru_utime)
                                                                              + (usage.ru_stime - usage0.ru_stime)),
                    "switches": (usage.ru_nvcsw - usage0.ru_nvcsw + usage.ru_nivcsw - usage0.ru_nivcsw) / n,
                    "statements": (counted.statements - s0) / n, "transactions": (counted.transactions - t0) / n,
                    **{f"{k}_cpu_ms": 1000 * v / n for k, v in peers.items()}}

        pids = {k: int(v) for k, v in json.loads(args.pids).items()}
        for each in environs("WB000", 50):  # warm both apps and the worker's clients
            limit.call(bare, each)
        batch("W0000", 50)
        bare_cpu, _ = limit.per_case(bare, environs("TB000", args.cases))
        start = len(counted.log or [])
        figures = batch("T0000", args.cases)
        figures["bare_cpu_ms"] = bare_cpu
        if counted.log is not None:
            figures["sql"] = [[n / args.cases, sql] for sql, n in collections.Counter(counted.log[start:]).most_common()]
        figures["ratio_to_bare"] = figures["worker_cpu_ms"] / bare_cpu
        figures["worker_module"] = worker_module.__file__
        if args.profile:
            sampler = ThreadProfiles()
            profiled = batch("P0000", args.cases, sampler)
            stats = sampler.stats()
            areas = by_area(stats)
            total = sum(areas.values()) or 1.0
            table = stats.stats  # type: ignore[attr-defined]
            top = sorted(table.items(), key=lambda kv: -kv[1][2])[:args.top]
            figures["profile"] = {
                "threads": len(sampler.profilers), "cpu_ms": profiled["worker_cpu_ms"],
                "areas": {a: v / total for a, v in areas.items()},
                "functions": [[f"{limit.short(fn) if fn != '~' else '~'}", str(line), name, calls, tt / total, ct / total,
                               func_area(fn, name) or "(callers')"]
                              for (fn, line, name), (_, calls, tt, ct, _) in top],
            }
        if args.dump and args.profile:
            stats.dump_stats(args.dump)
        store.close()
        return figures
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def spread(values: list[float], digits: int = 2) -> str:
    return limit.spread(values, digits)


def start_peers(folder: Path, fast: bool) -> tuple[list[subprocess.Popen], dict[str, str], dict[str, int]]:
    providers, urls, national, nurls = limit.start_peers(folder, "stub" if fast else "sandbox")
    return [providers, national], {**urls, **nurls}, {"providers": providers.pid, "national": national.pid}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare", type=Path, help="another checkout of the project to interleave with")
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--fast-peers", action="store_true", help="bench/peers.py's fast stubs (bench/limit.py "
                        "--end-to-end's default) instead of the sandbox's servers")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--sync", action="store_true", help="drain with Worker.run_until_idle in one thread (the "
                        "calls still go through the call pool) instead of the started worker's threads")
    parser.add_argument("--concurrency", type=int, help="worker.concurrency (default: config.example.yaml's)")
    parser.add_argument("--sql", action="store_true", help="list the statements per case (intake + drain) of round 1")
    parser.add_argument("--dump", help="--one: write the profile (pstats) to this file")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--peers", help=argparse.SUPPRESS)
    parser.add_argument("--pids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args)))
        return 0

    info = common.machine()
    print("# worker benchmark (bench/worker.py)")
    print(f"date     {info['date']}")
    print(f"machine  {info['cores']} cores, {info['cpu']}; load average now {os.getloadavg()[0]:.1f}")
    print(f"run      {' '.join(sys.argv[1:]) or '(defaults)'}")
    folder = Path(tempfile.mkdtemp(prefix="gateway-bench-worker-peers-"))
    processes: list[subprocess.Popen] = []
    variants = {"this": ROOT}
    if args.compare:
        base = args.compare.resolve()
        shutil.copy(Path(__file__), base / "bench" / "worker.py")
        for name in ("limit.py", "peers.py"):  # the peers' start-up (fast stubs) of this checkout
            shutil.copy(BENCH / name, base / "bench" / name)
        variants["base"] = base
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    failures = []
    try:
        processes, urls, pids = start_peers(folder, args.fast_peers)
        print(f"peers    {'fast stubs (bench/peers.py)' if args.fast_peers else 'sandbox.providers + sandbox.national'}"
              f": {urls['demo_rest']}, {urls['national']}")
        print(f"cases    {args.cases} per run (+50 warm-up), worker.concurrency from config.example.yaml")
        print()
        for rnd in range(1, args.rounds + 1):
            order = list(variants) if rnd % 2 else list(reversed(variants))
            for name in order:
                command = [sys.executable, str(variants[name] / "bench" / "worker.py"), "--one", "--cases",
                           str(args.cases), "--peers", json.dumps(urls), "--pids", json.dumps(pids), "--top",
                           str(args.top)] + (["--concurrency", str(args.concurrency)] if args.concurrency else []) \
                    + (["--sync"] if args.sync else []) + ([] if args.profile and rnd == 1 else ["--no-profile"]) \
                    + (["--sql"] if args.sql and rnd == 1 else [])
                done = subprocess.run(command, cwd=variants[name], capture_output=True, text=True)
                if done.returncode != 0:
                    failures.append(f"round {rnd} {name}: {done.stderr[-2000:]}")
                    continue
                got = json.loads(done.stdout.strip().splitlines()[-1])
                results[name].append(got)
                print(f"round {rnd} {name:>4}: worker {got['worker_cpu_ms']:.3f} ms CPU/case "
                      f"({got['ratio_to_bare']:.1f}x bare {got['bare_cpu_ms']:.3f}), wall {got['wall_ms']:.2f} ms/case, "
                      f"{got['statements']:.1f} statements / {got['transactions']:.1f} transactions per case; "
                      f"{got['switches']:.0f} context switches/case, {100 * got['system_share']:.0f}% system; peers "
                      f"providers {got['providers_cpu_ms']:.2f} national {got['national_cpu_ms']:.2f} ms CPU/case; "
                      f"intake {got['intake_cpu_ms']:.3f} ms", flush=True)
    finally:
        for process in processes:
            common.stop_server(process)
        shutil.rmtree(folder, ignore_errors=True)

    print()
    print("## results (median (min–max) over the rounds)")
    print()
    keys = [("worker_cpu_ms", "worker CPU ms/case", 3), ("ratio_to_bare", "worker / bare CPU", 2),
            ("intake_cpu_ms", "intake CPU ms/case", 3), ("bare_cpu_ms", "bare CPU ms/req", 3),
            ("wall_ms", "drain wall ms/case", 2), ("statements", "statements/case", 1),
            ("transactions", "transactions/case", 1), ("switches", "context switches/case", 0),
            ("system_share", "system CPU share", 2), ("providers_cpu_ms", "provider peer CPU ms/case", 2),
            ("national_cpu_ms", "1177 peer CPU ms/case", 2)]
    rows = [[label, *(spread([r[key] for r in results[v]], digits) for v in variants)] for key, label, digits in keys]
    if args.compare and results["this"] and results["base"]:
        pairs = list(zip(results["this"], results["base"]))
        rows.append(["worker CPU this/base (per round)", spread([a["worker_cpu_ms"] / b["worker_cpu_ms"] for a, b in pairs]),
                     ""])
    print(common.markdown(["figure", *variants], rows))
    print()
    for name in variants:
        listed = next((r["sql"] for r in results[name] if "sql" in r), None)
        if listed:
            print(f"## statements per case ({name}; the intake's and the drain's)")
            print()
            print(common.markdown(["per case", "statement"], [[f"{n:.2f}", sql] for n, sql in listed]))
            print()
        profiled = next((r["profile"] for r in results[name] if "profile" in r), None)
        if not profiled:
            continue
        print(f"## where the worker's CPU goes ({name}: cProfile in each of its {profiled['threads']} threads, timed by "
              f"thread CPU; ms/case scaled to the unprofiled run's {results[name][0]['worker_cpu_ms']:.3f} ms; "
              f"profiled {profiled['cpu_ms']:.3f} ms)")
        print()
        areas = profiled["areas"]
        scale = results[name][0]["worker_cpu_ms"]
        print(common.markdown(["area", "CPU %", "ms/case"], [
            [a, f"{100 * areas[a]:.1f}", f"{scale * areas[a]:.3f}"] for a in sorted(areas, key=lambda a: -areas[a])]))
        print()
        print(common.markdown(["function", "where", "area", "calls/case", "own CPU %", "cumulative %"], [
            [f[2][:60], f"{f[0]}:{f[1]}"[:60], f[6], f"{f[3] / args.cases:.1f}", f"{100 * f[4]:.1f}",
             f"{100 * f[5]:.1f}"] for f in profiled["functions"]]))
        print()
    if failures:
        print(f"FAILED ({len(failures)}):")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
