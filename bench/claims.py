"""Claim benchmark: what one claim costs while a target at its limit has a long backlog (issue 16).

Role
    The worker claims due outbox rows for the targets that have room. With one target at
    its ``per_target`` limit and ``--backlog`` rows pending for it, a claim for another
    target must not walk that backlog. This fills a migrated SQLite store with
    ``--backlog`` due rows of target A and 10 of target B (later, so that in time order
    they come after all of A's), then times ``Store.claim`` for one row with A full
    (``room={"A": 0}``) ``--runs`` times and prints the median, min and max in ms.
    Every claim must return a row of B: a claim that returns nothing or A's row is a
    failure (exit status 1), never a figure.

How to run (from the project folder)
    .venv/bin/python bench/claims.py                   # 20,000 rows of A, 9 claims
    .venv/bin/python bench/claims.py --backlog 100000

May import: the gateway's store and clock, the standard library. Product code never imports this.

Invariants: everything in a temporary folder, deleted at the end; no network.
"""

from __future__ import annotations

import argparse
import datetime as dt
import inspect
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clock import instant  # noqa: E402
from store import Store  # noqa: E402
from store.base import idempotency_key, ts  # noqa: E402

CASE = ("INSERT INTO cases (case_id, origin, case_type, receiver_hsa_id, status, received_at, content_hash) "
        "VALUES (?, '1177', 'COMPLAINT', 'SE5566778899-KLIN1', 'received', ?, 'h')")
ROW = ("INSERT INTO outbox (case_id, action, ref_id, target, status, attempts, not_before, idempotency_key, "
       "created_at, updated_at) VALUES (?, 'deliver_case', ?, ?, 'pending', 0, ?, ?, ?, ?)")


def fill(store: Store, backlog: int, now: dt.datetime) -> None:
    with store.write() as db:
        for target, count, due in (("A", backlog, now), ("B", 10, now + dt.timedelta(seconds=1))):
            for i in range(count):
                case_id = f"{target}-{i}"
                db.execute(CASE, [case_id, ts(now)])
                db.execute(ROW, [case_id, case_id, target, ts(due), idempotency_key(now), ts(now), ts(now)])
    store.db.execute("ANALYZE")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=20_000, help="due rows of the full target A (default 20000)")
    parser.add_argument("--runs", type=int, default=9, help="claims timed (default 9)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gateway-bench-claims-"))
    try:
        store = Store(folder / "gateway.db")
        store.migrate()
        now = instant()
        fill(store, args.backlog, now)
        options: dict = {"room": {"A": 0}, "room_per_target": 2}
        if "targets" in inspect.signature(store.claim).parameters:  # (an older checkout has no such argument)
            options["targets"] = ["A", "B"]
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            jobs = store.claim("bench", limit=1, lease_s=30, now=now + dt.timedelta(seconds=5), **options)
            times.append(1000 * (time.perf_counter() - started))
            if len(jobs) != 1 or jobs[0].target != "B":
                print(f"error: the claim returned {[(j.target, j.case_id) for j in jobs]}, not one row of B")
                return 1
        store.close()
        print(f"claim for B while A (at its limit) has {args.backlog} due rows: median {statistics.median(times):.2f} ms "
              f"(min {min(times):.2f}, max {max(times):.2f}) over {args.runs} claims")
        return 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
