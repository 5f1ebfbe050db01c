"""Delivery benchmark: how fast and how soon the real gateway delivers 1177 cases to providers.

What it measures
    End-to-end delivery through a running ``gateway serve`` WITH its worker: ProcessCase
    requests in over RIV-TA (built with zeep from the project's own WSDL), stored and
    acknowledged by intake, then claimed by the worker and delivered to the demo provider
    systems (``python -m sandbox.providers --delay 0.05``: every provider call takes 50 ms).
    Half the cases go to SE5566778899-KLIN1 (target demo_rest, JSON over HTTP), half to
    SE5566778899-KLIN2 (target demo_soap, SOAP). A typical case is about 8 KB (4 KB of text
    and one 1.5 KB PDF attachment).

    For each worker concurrency asked for (``--concurrency 4,8,16``), with a fresh gateway,
    database and providers each time:

    - throughput: N cases sent as fast as C client threads can (default 1000 by 4). It
      reports the intake rate (cases/s until the last acknowledgement), the end-to-end rate
      (N / time from the first send to the last delivery), the ceiling the provider delay
      allows (concurrency / 0.05 s), and the per-case intake -> delivery latency
      (outbox.delivered_at - outbox.created_at) p50/p95/p99/max. To explain the rate it
      also reports the delivery rate while intake was still storing cases and after it,
      the share of time the delivery slots spent in a provider call, the longest time with
      no delivery in flight, and the CPU time of the gateway, the providers and this client;
    - idle latency: with nothing queued, M cases (default 50) one at a time, about 0.2 s
      apart; per case the intake -> delivery latency from the database, the wall-clock
      time from the client's send to the provider's received_at, the wait before the worker
      started the call (attempts.started_at - outbox.created_at) and the call's duration.
      With the worker woken by intake's commit this is about 50 ms plus overhead; were it
      waiting for the 2 s poll tick it would be about a second on average.

    Checks (any failure prints the tail of the gateway's log and exits with status 1):
    every request answered HTTP 200 with resultCode OK; every outbox row 'done'; no attempt
    with an outcome other than 'delivered'; every case received by its provider exactly
    once (each externalId / externalCaseId once, no idempotent replays, provider call
    count = cases).

How to run (from the project folder)
    .venv/bin/python bench/delivery.py [--cases N] [--idle M] [--concurrency 4,8,16] [--clients C]

    Defaults: --cases 1000 --idle 50 --concurrency 4 --clients 4 (about 40 s per concurrency).

    Everything runs from a temporary folder (config, database, logs) that is deleted at the
    end; the gateway's and the providers' process groups are always killed. Only loopback
    (127.0.0.1) is used.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import intake as common  # noqa: E402  (bench/intake.py: the machine, the server helpers, the bodies)

ROOT = common.ROOT
KLIN1, KLIN2 = "SE5566778899-KLIN1", "SE5566778899-KLIN2"
TARGET = {KLIN1: "demo_rest", KLIN2: "demo_soap"}
ID_FIELD = {"demo_rest": "externalId", "demo_soap": "externalCaseId"}
TEXT_BYTES = 4000
UTC = dt.timezone.utc


# -- the processes ---------------------------------------------------------------------------------


def start_providers(folder: Path, delay: float) -> tuple[subprocess.Popen, dict[str, str]]:
    """``python -m sandbox.providers`` on free ports; (process, {target: base URL})."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.providers", "--rest-port", "0", "--soap-port", "0", "--quiet",
         "--delay", str(delay)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=open(folder / "providers.log", "wb"), stdin=subprocess.DEVNULL,
        text=True, start_new_session=True,
    )
    urls: dict[str, str] = {}
    while len(urls) < 2:
        line = process.stdout.readline()
        if not line:
            common.stop_server(process)
            raise RuntimeError("the demo providers did not start:\n" + common.log_tail(folder / "providers.log"))
        name, url = line.split()[:2]
        urls[name] = url
    return process, urls


def write_config(folder: Path, urls: dict[str, str], concurrency: int) -> Path:
    data = common.absolute_paths(yaml.safe_load((ROOT / "config.example.yaml").read_text()))
    data["database"]["path"] = str(folder / "gateway.db")
    data["mappings"]["dir"] = str((ROOT / "mappings").resolve())
    data["logging"]["level"] = "WARNING"
    data["worker"]["enabled"] = True
    data["worker"]["concurrency"] = concurrency  # poll_s and lease_s stay at their defaults
    data["targets"]["demo_rest"]["base_url"] = f"{urls['demo_rest']}/api"
    data["targets"]["demo_soap"]["endpoint"] = f"{urls['demo_soap']}/soap"
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def start_gateway(folder: Path, config: Path, log) -> tuple[subprocess.Popen, str]:
    """``gateway serve`` with its worker (no --no-worker); (process, base URL)."""
    port = common.free_port()
    process = subprocess.Popen(
        [str(common.gateway_command()), "serve", "--config", str(config), "--bind", f"127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=folder, start_new_session=True,
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
            common.stop_server(process)
            raise RuntimeError("the gateway did not start")
        time.sleep(0.1)


# -- the requests ----------------------------------------------------------------------------------


class Builder(common.Builder):
    """bench/intake.py's bodies, addressed to KLIN1 or KLIN2, with 4 KB of text."""

    def __init__(self) -> None:
        super().__init__()
        self.text = self.text.encode()[:TEXT_BYTES].decode(errors="ignore")

    def for_unit(self, case_id: str, unit: str) -> bytes:
        pdf = common.PDF_HEAD + case_id.encode() + b"\n" + os.urandom(
            common.ATTACHMENT_BYTES - len(common.PDF_HEAD) - len(case_id) - 1)
        case = self.case(case_id, self.text, [{"fileName": "underlag.pdf", "mimeType": "application/pdf", "data": pdf}])
        case["receiver"] = {"hsaId": unit, "isPatientBoard": False}
        envelope = self.client.create_message(
            self.client.service, "ProcessCase", case=case, _soapheaders={"LogicalAddress": unit})
        return common.etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def send(base: str, body: bytes) -> tuple[bool, float, str, dt.datetime]:
    """POST one body; (ok, seconds, what went wrong, UTC time of the send)."""
    sent = dt.datetime.now(UTC)
    ok, seconds, problem = common.post(base, body, 60)
    return ok, seconds, problem, sent


# -- the database ------------------------------------------------------------------------------------


def parse_ts(value: str) -> dt.datetime:
    """The store's 'YYYY-MM-DDTHH:MM:SS.ffffffZ' or the providers' isoformat()."""
    if value.endswith("Z"):
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return dt.datetime.fromisoformat(value)


def read_only(database: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)


def done_count(database: Path, prefix: str) -> int:
    db = read_only(database)
    try:
        return db.execute("SELECT count(*) FROM outbox WHERE status = 'done' AND case_id LIKE ?",
                          [prefix + "%"]).fetchone()[0]
    finally:
        db.close()


def outbox_rows(database: Path, prefix: str) -> dict[str, dict]:
    """case_id -> the case's deliver_case row, with its first attempt's start and duration."""
    db = read_only(database)
    try:
        rows = db.execute(
            """SELECT o.case_id, o.target, o.status, o.attempts, o.created_at, o.delivered_at,
                      (SELECT min(a.started_at) FROM attempts a WHERE a.outbox_id = o.id),
                      (SELECT sum(a.duration_ms) FROM attempts a WHERE a.outbox_id = o.id)
               FROM outbox o WHERE o.case_id LIKE ? AND o.action = 'deliver_case'""",
            [prefix + "%"],
        ).fetchall()
    finally:
        db.close()
    out = {}
    for case_id, target, status, attempts, created, delivered, started, duration in rows:
        out[case_id] = {
            "target": target, "status": status, "attempts": attempts,
            "created": parse_ts(created), "delivered": parse_ts(delivered) if delivered else None,
            "started": parse_ts(started) if started else None, "duration_ms": duration,
        }
    return out


def bad_attempts(database: Path) -> list[tuple]:
    db = read_only(database)
    try:
        return db.execute("SELECT outcome, error_code, count(*) FROM attempts WHERE outcome != 'delivered' "
                          "GROUP BY outcome, error_code").fetchall()
    finally:
        db.close()


def status_counts(database: Path) -> dict[str, int]:
    db = read_only(database)
    try:
        return dict(db.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall())
    finally:
        db.close()


def wait_delivered(database: Path, prefix: str, count: int, timeout: float, stall: float = 30.0) -> float | None:
    """Poll the outbox every 0.1 s until ``count`` rows of ``prefix`` are done; the
    monotonic time it saw them all, or None on timeout or when nothing moved for ``stall`` s."""
    deadline = time.monotonic() + timeout
    last, moved = -1, time.monotonic()
    while True:
        done = done_count(database, prefix)
        now = time.monotonic()
        if done >= count:
            return now
        if done != last:
            last, moved = done, now
        if now > deadline or now - moved > stall:
            print(f"  only {done} of {count} delivered after {timeout if now > deadline else stall:.0f} s "
                  f"({'timeout' if now > deadline else 'no progress'}); outbox by status: {status_counts(database)}")
            return None
        time.sleep(0.1)


# -- the providers' side ------------------------------------------------------------------------------


def received(urls: dict[str, str]) -> tuple[dict[str, list[dict]], dict[str, int]]:
    """externalId -> what the providers stored under it; and each provider's call count."""
    by_id: dict[str, list[dict]] = {}
    calls = {}
    for target, url in urls.items():
        snapshot = requests.get(f"{url}/_received", timeout=30).json()
        calls[target] = snapshot["total_calls"]
        for item in snapshot["received"]:
            if item["kind"] == "case":
                by_id.setdefault(item["body"][ID_FIELD[target]], []).append({**item, "target": target})
    return by_id, calls


def check_received(by_id: dict[str, list[dict]], expected: dict[str, str]) -> list[str]:
    """Problems: a case missing, at the wrong provider, stored twice, or replayed."""
    problems = []
    for case_id, target in expected.items():
        items = by_id.get(case_id, [])
        if not items:
            problems.append(f"{case_id}: never received")
        elif len(items) > 1:
            problems.append(f"{case_id}: received {len(items)} times ({[i['idempotency_key'] for i in items]})")
        elif items[0]["target"] != target:
            problems.append(f"{case_id}: received by {items[0]['target']}, expected {target}")
        elif items[0]["calls"] != 1:
            problems.append(f"{case_id}: delivered {items[0]['calls']} times under one key (replays)")
    extra = set(by_id) - set(expected)
    if extra:
        problems.append(f"{len(extra)} case(s) received that were never sent: {sorted(extra)[:3]}")
    return problems


# -- figures -----------------------------------------------------------------------------------------


def ms(values: list[float]) -> list[float]:
    return [v * 1000 for v in values]


def stats(values: list[float], points=(50, 95, 99)) -> list[str]:
    if not values:
        return ["-"] * (len(points) + 1)
    return [f"{common.percentile(values, p):.1f}" for p in points] + [f"{max(values):.1f}"]


def seconds(a: dt.datetime, b: dt.datetime) -> float:
    return (b - a).total_seconds()


def longest_idle_gap(spans: list[tuple[dt.datetime, dt.datetime]]) -> float:
    """The longest time, in seconds, between the first start and the last end of ``spans``
    (attempt started_at .. delivered_at) when no span was open: no delivery in flight."""
    longest, reach = 0.0, None
    for start, end in sorted(spans):
        if reach is not None and start > reach:
            longest = max(longest, seconds(reach, start))
        reach = end if reach is None else max(reach, end)
    return longest


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its live descendants (from /proc/<pid>/stat)."""
    total = 0
    for each in common.descendants(pid):
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / TICKS


def info_cores() -> int:
    return len(os.sched_getaffinity(0))


# -- one run -----------------------------------------------------------------------------------------


def run_one(args, concurrency: int, builder: Builder, run: str, folder: Path) -> dict:
    """Fresh providers, config, database and gateway for one worker concurrency."""
    result: dict = {"concurrency": concurrency, "failures": []}
    failures = result["failures"]
    work = folder / f"c{concurrency}"
    work.mkdir()
    log_path = work / "gateway.log"
    database = work / "gateway.db"
    providers = gateway = None
    print(f"## worker.concurrency {concurrency}")
    try:
        providers, urls = start_providers(work, args.delay)
        config = write_config(work, urls, concurrency)
        with open(log_path, "wb") as log:
            gateway, base = start_gateway(work, config, log)
            print(f"  providers pid {providers.pid} ({urls['demo_rest']}, {urls['demo_soap']}), delay {args.delay} s")
            print(f"  gateway   pid {gateway.pid} at {base}, worker.concurrency {concurrency}, poll_s 2 (default)")

            prefix = f"DLV-{run}-C{concurrency}-"
            units = [KLIN1, KLIN2]
            started = time.perf_counter()
            thru_ids = [f"{prefix}T{i:05d}" for i in range(args.cases)]
            thru = [builder.for_unit(case_id, units[i % 2]) for i, case_id in enumerate(thru_ids)]
            idle_ids = [f"{prefix}I{i:03d}" for i in range(args.idle)]
            idle = [builder.for_unit(case_id, units[i % 2]) for i, case_id in enumerate(idle_ids)]
            sizes = [len(b) for b in thru + idle] or [0]
            result["body"] = common.human(sum(sizes) / len(sizes))
            print(f"  built     {len(sizes)} bodies in {time.perf_counter() - started:.1f} s, "
                  f"{min(sizes)}-{max(sizes)} bytes each")

            # -- 1. throughput ----------------------------------------------------------------------
            answers = []
            cpu0 = {"gateway": cpu_seconds(gateway.pid), "providers": cpu_seconds(providers.pid),
                    "client": time.process_time()}
            t0 = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
                for answer in pool.map(lambda body: send(base, body), thru):
                    answers.append(answer)
            intake_s = time.monotonic() - t0
            first_send = min((a[3] for a in answers), default=dt.datetime.now(UTC))
            bad = [a[2] for a in answers if not a[0]]
            if bad:
                failures.append(f"throughput: {len(bad)} request(s) not answered OK, e.g. {bad[0]}")
            ack_ms = ms([a[1] for a in answers])
            print(f"  throughput: {len(thru)} cases acknowledged in {intake_s:.2f} s = {len(thru) / intake_s:.1f} cases/s "
                  f"by {args.clients} clients (ack p50 {stats(ack_ms)[0]} ms, max {stats(ack_ms)[3]} ms); "
                  f"{len(bad)} not OK")
            expected_n = len(thru) - len(bad)
            ceiling = concurrency / args.delay if args.delay else float("inf")
            seen = wait_delivered(database, prefix + "T", expected_n, timeout=max(60.0, 5 * expected_n / ceiling))
            seen_s = (seen - t0) if seen is not None else None
            busy_s = time.monotonic() - t0
            cpu = {"gateway": cpu_seconds(gateway.pid) - cpu0["gateway"],
                   "providers": cpu_seconds(providers.pid) - cpu0["providers"],
                   "client": time.process_time() - cpu0["client"]}
            rows = outbox_rows(database, prefix + "T")
            done = [r for r in rows.values() if r["status"] == "done"]
            if seen is None or len(done) != expected_n:
                failures.append(f"throughput: {len(done)} of {expected_n} acknowledged cases delivered; "
                                f"outbox by status {status_counts(database)}")
            latencies = [seconds(r["created"], r["delivered"]) for r in done]
            last = max((r["delivered"] for r in done), default=first_send)
            first_delivered = min((r["delivered"] for r in done), default=first_send)
            e2e_s = seconds(first_send, last)
            e2e_rate = len(done) / e2e_s if e2e_s > 0 else 0.0
            drain_rate = (len(done) - 1) / seconds(first_delivered, last) if len(done) > 1 else 0.0
            result.update(
                cases=len(thru), intake_rate=len(thru) / intake_s, e2e_s=e2e_s, e2e_rate=e2e_rate,
                drain_rate=drain_rate, ceiling=ceiling, latency=latencies, not_ok=len(bad),
            )
            print(f"  delivered: {len(done)} of {expected_n} (seen by polling {seen_s:.2f} s after the first send); "
                  f"first send -> last delivered_at {e2e_s:.2f} s = {e2e_rate:.1f} cases/s end to end; "
                  f"first -> last delivery {drain_rate:.1f} cases/s (ceiling {concurrency} x 1/{args.delay} s = "
                  f"{ceiling:.0f}/s, {100 * drain_rate / ceiling:.0f}%)" if seen_s is not None else
                  f"  delivered: {len(done)} of {expected_n}")
            lat_ms = ms(latencies)
            print(f"  intake -> delivery latency ms (delivered_at - created_at): p50 {stats(lat_ms)[0]}  "
                  f"p95 {stats(lat_ms)[1]}  p99 {stats(lat_ms)[2]}  max {stats(lat_ms)[3]}")
            calls_ms = [r["duration_ms"] for r in done if r["duration_ms"] is not None]
            first_started = min((r["started"] for r in done if r["started"]), default=first_send)
            window = seconds(first_started, last)
            busy = sum(calls_ms) / 1000 / (concurrency * window) if window > 0 else 0.0
            intake_end = max((r["created"] for r in done), default=first_send)
            before = sum(1 for r in done if r["delivered"] <= intake_end)
            rate_during = before / seconds(first_started, intake_end) if seconds(first_started, intake_end) > 0 else 0.0
            rate_after = (len(done) - before) / seconds(intake_end, last) if seconds(intake_end, last) > 0 else 0.0
            gap = longest_idle_gap([(r["started"], r["delivered"]) for r in done if r["started"]])
            result.update(call_ms=calls_ms, busy=busy, cpu=cpu, cpu_window=busy_s, rate_during=rate_during,
                          rate_after=rate_after, gap=gap)
            print(f"  delivery rate while intake ran {rate_during:.1f} cases/s, after the last case was stored "
                  f"{rate_after:.1f} cases/s; longest time with no delivery in flight {gap * 1000:.0f} ms")
            print(f"  provider call under load (attempts.duration_ms): p50 {stats(calls_ms)[0]}  p95 {stats(calls_ms)[1]}  "
                  f"max {stats(calls_ms)[3]} ms; delivery slots busy in a call {100 * busy:.0f}% of the time "
                  f"from the first call to the last delivery")
            print(f"  CPU seconds over those {busy_s:.1f} s ({info_cores()} cores): gateway {cpu['gateway']:.1f}, "
                  f"providers {cpu['providers']:.1f}, this client {cpu['client']:.1f} "
                  f"= {100 * sum(cpu.values()) / (busy_s * info_cores()):.0f}% of the machine")
            per_target = {t: sum(1 for r in done if r["target"] == t) for t in ("demo_rest", "demo_soap")}
            retried = sum(1 for r in rows.values() if r["attempts"] != 1)
            print(f"  per target: {per_target}; rows with more than one attempt: {retried}")

            # -- 2. idle latency ---------------------------------------------------------------------
            time.sleep(1.0)
            queued = {k: v for k, v in status_counts(database).items() if k in ("pending", "in_flight")}
            if queued:
                failures.append(f"idle: the outbox was not idle before the run: {queued}")
            idle_answers = {}
            late = 0
            for case_id, body in zip(idle_ids, idle):
                ok, secs, problem, sent = send(base, body)
                idle_answers[case_id] = (ok, secs, problem, sent)
                if not ok:
                    failures.append(f"idle: {case_id} not answered OK: {problem}")
                    continue
                time.sleep(args.spacing)
                # make sure it is out before the next one, so every case finds the worker idle
                if done_count(database, case_id) < 1:
                    late += 1
                    if wait_delivered(database, case_id, 1, timeout=30) is None:
                        failures.append(f"idle: {case_id} not delivered within 30 s")
                        break
            if late:
                print(f"  idle: {late} case(s) were not delivered within the {args.spacing} s spacing")
            idle_rows = outbox_rows(database, prefix + "I")
            idle_done = {k: r for k, r in idle_rows.items() if r["status"] == "done"}
            db_ms = ms([seconds(r["created"], r["delivered"]) for r in idle_done.values()])
            wait_ms = ms([seconds(r["created"], r["started"]) for r in idle_done.values() if r["started"]])
            call_ms = [r["duration_ms"] for r in idle_done.values() if r["duration_ms"] is not None]
            ack_idle = ms([a[1] for a in idle_answers.values() if a[0]])

            # -- checks on the providers' side -------------------------------------------------------
            by_id, calls = received(urls)
            sent_ok = {cid: TARGET[units[i % 2]] for i, cid in enumerate(thru_ids) if answers[i][0]}
            sent_ok.update({cid: TARGET[units[i % 2]] for i, cid in enumerate(idle_ids)
                            if idle_answers.get(cid, (False,))[0]})
            problems = check_received(by_id, sent_ok)
            if sum(calls.values()) != len(sent_ok):
                problems.append(f"providers counted {sum(calls.values())} delivery calls for {len(sent_ok)} cases: {calls}")
            if problems:
                failures.append(f"providers: {len(problems)} problem(s), e.g. {problems[:3]}")
            wall_ms = []
            for cid, (ok, _, _, sent) in idle_answers.items():
                items = by_id.get(cid)
                if ok and items:
                    wall_ms.append(seconds(sent, parse_ts(items[0]["received_at"])) * 1000)
            result.update(idle=len(idle_done), idle_db=db_ms, idle_wall=wall_ms, idle_wait=wait_ms,
                          idle_call=call_ms, idle_ack=ack_idle)
            print(f"  idle: {len(idle_done)} of {len(idle_ids)} cases one at a time, {args.spacing} s apart; ms "
                  f"p50/p95/max")
            for name, values in (("intake ack (client)", ack_idle),
                                 ("wait before the call (started_at - created_at)", wait_ms),
                                 ("provider call (attempts.duration_ms)", call_ms),
                                 ("intake -> delivery (delivered_at - created_at)", db_ms),
                                 ("send -> provider received_at (wall clock)", wall_ms)):
                cells = stats(values, (50, 95))
                print(f"    {name:<48} {cells[0]:>7} {cells[1]:>7} {cells[2]:>7}")
            if len(idle_done) != sum(1 for a in idle_answers.values() if a[0]):
                failures.append(f"idle: {len(idle_done)} of {len(idle_answers)} delivered; outbox {status_counts(database)}")

            # -- whole-run checks ----------------------------------------------------------------------
            wrong = bad_attempts(database)
            result["bad_attempts"] = sum(n for *_, n in wrong)
            result["duplicates"] = sum(1 for p in problems if "times" in p)
            if wrong:
                failures.append(f"attempts with an outcome other than 'delivered': {wrong}")
            counts = status_counts(database)
            print(f"  checks: outbox by status {counts}; attempts not 'delivered': {result['bad_attempts']}; "
                  f"provider calls {calls}; cases received twice or replayed: {result['duplicates']}; "
                  f"provider problems: {len(problems)}")
            if set(counts) != {"done"}:
                failures.append(f"rows not done at the end: {counts}")
            result["log_lines"] = len(log_path.read_bytes().splitlines())
    except Exception as exc:  # noqa: BLE001 (reported as a failure of this run, with the gateway's log)
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        if gateway is not None:
            common.stop_server(gateway)
        if providers is not None:
            common.stop_server(providers)
    if failures:
        print(f"  FAILED ({len(failures)}):")
        for failure in failures:
            print(f"    - {failure}")
        tail = common.log_tail(log_path)
        print("  the gateway log ends with:\n" + tail if tail.strip() else "  the gateway log is empty (level WARNING)")
        tail = common.log_tail(work / "providers.log", 10)
        if tail.strip():
            print("  the providers' log ends with:\n" + tail)
    else:
        print(f"  all checks passed; gateway log {result.get('log_lines', 0)} lines at level WARNING")
    print()
    return result


# -- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000, help="cases in the throughput scenario (default 1000)")
    parser.add_argument("--idle", type=int, default=50, help="cases sent one at a time to the idle gateway (default 50)")
    parser.add_argument("--concurrency", default="4",
                        help="worker.concurrency, or several separated by commas: one fresh run each (default 4)")
    parser.add_argument("--clients", type=int, default=4, help="client threads in the throughput scenario (default 4)")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds each provider call takes (default 0.05)")
    parser.add_argument("--spacing", type=float, default=0.2, help="seconds between idle cases (default 0.2)")
    args = parser.parse_args()
    try:
        levels = [int(v) for v in args.concurrency.split(",") if v.strip()]
    except ValueError:
        parser.error("--concurrency takes integers separated by commas, e.g. 4,8,16")
    if not levels or min(levels) < 1 or args.cases < 1 or args.idle < 0 or args.clients < 1:
        parser.error("--concurrency, --cases and --clients must be at least 1")

    info = common.machine()
    print("# gateway delivery benchmark (bench/delivery.py)")
    print(f"date     {info['date']}")
    print(f"machine  {info['cores']} cores (nproc), {info['cpu']}; {info['memory']} RAM; {info['os']}")
    print(f"python   {info['python']} ({sys.executable})")
    print(f"run      --cases {args.cases} --idle {args.idle} --concurrency {','.join(map(str, levels))} "
          f"--clients {args.clients} --delay {args.delay} --spacing {args.spacing}")
    print("gateway  gateway serve with its worker, gunicorn gthread 1 process x 8 threads, SQLite WAL, "
          "worker.poll_s 2, lease_s 300; providers: python -m sandbox.providers --delay; loopback only")
    print()

    run = dt.datetime.now().strftime("%H%M%S")
    folder = Path(tempfile.mkdtemp(prefix="gateway-bench-delivery-"))
    began = time.monotonic()
    results = []
    try:
        builder = Builder()
        for level in levels:
            results.append(run_one(args, level, builder, run, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print("## results")
    print()
    done = [r for r in results if "gap" in r]
    print("throughput: delivery rates (cases/s; the ceiling is concurrency / provider delay)")
    print()
    header = ["worker concurrency", "cases", "intake", "end to end", "during intake", "after intake", "ceiling",
              "slots in a call", "longest stall ms", "CPU % of machine"]
    print(common.markdown(header, [[
        str(r["concurrency"]), str(r["cases"]), f"{r['intake_rate']:.1f}", f"{r['e2e_rate']:.1f}",
        f"{r['rate_during']:.1f}", f"{r['rate_after']:.1f}", f"{r['ceiling']:.0f}", f"{100 * r['busy']:.0f}%",
        f"{r['gap'] * 1000:.0f}", f"{100 * sum(r['cpu'].values()) / (r['cpu_window'] * info_cores()):.0f}",
    ] for r in done]))
    print()
    print("throughput: intake -> delivery latency per case (outbox.delivered_at - created_at) and checks")
    print()
    header = ["worker concurrency", "call p50 ms", "p50 s", "p95 s", "p99 s", "max s", "not OK", "failed attempts",
              "received twice"]
    print(common.markdown(header, [[
        str(r["concurrency"]), stats(r["call_ms"])[0],
        *([f"{common.percentile(r['latency'], p):.2f}" for p in (50, 95, 99)] + [f"{max(r['latency']):.2f}"]
          if r["latency"] else ["-"] * 4),
        str(r["not_ok"]), str(r.get("bad_attempts", "-")), str(r.get("duplicates", "-")),
    ] for r in done]))
    print()
    print("idle: one case at a time, milliseconds")
    print()
    header = ["worker concurrency", "cases", "ack p50", "wait p50", "call p50", "intake->delivery p50", "p95", "max",
              "send->received p50", "p95", "max"]
    rows = []
    for r in results:
        if "idle_db" not in r:
            continue
        db, wall = stats(r["idle_db"], (50, 95)), stats(r["idle_wall"], (50, 95))
        rows.append([
            str(r["concurrency"]), str(r["idle"]), stats(r["idle_ack"])[0], stats(r["idle_wait"])[0],
            stats(r["idle_call"])[0], *db, *wall,
        ])
    print(common.markdown(header, rows))
    print()
    failed = [r for r in results if r["failures"]]
    print(f"total time {time.monotonic() - began:.0f} s")
    if failed:
        print(f"FAILED: {sum(len(r['failures']) for r in failed)} failure(s) at worker.concurrency "
              f"{', '.join(str(r['concurrency']) for r in failed)} (see above)")
        return 1
    print("all cases delivered once, 0 failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
