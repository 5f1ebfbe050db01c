"""Group commit on SQLite: the write blocks of threads writing at the same time share one
COMMIT, and none of them returns before its work is committed. A block that fails undoes
only its own work; a COMMIT that fails fails every block it held, so nothing is taken for
stored that is not."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from errors import StoreError
from store import Store


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "gateway.db")
    s.migrate()
    yield s
    s.close()


def _events(store: Store) -> list[str]:
    return [row["event"] for row in store.db.execute("SELECT event FROM sync_log ORDER BY id")]


def _log(store: Store, event: str) -> None:
    store.log_event(direction="in", event=event, status="ok")


def _in_one_group(store: Store, first: Callable[..., None], second: Callable[[], None]) -> dict[str, BaseException | None]:
    """Run ``first`` (given the open write connection) in a write block that ends only once
    another thread is waiting for the write lock, so that ``second``'s write joins the same
    group; the outcome of each thread (None when it returned)."""
    outcome: dict[str, BaseException | None] = {}
    joined = threading.Event()

    def one() -> None:
        try:
            with store.write() as db:
                first(db)
                threading.Thread(target=two, daemon=True).start()
                while store._write_waiters == 0:  # the other thread now waits for this block's lock
                    threading.Event().wait(0.001)
                joined.set()
            outcome["first"] = None
        except BaseException as exc:  # noqa: BLE001 - the outcome is what the test checks
            outcome["first"] = exc

    def two() -> None:
        try:
            second()
            outcome["second"] = None
        except BaseException as exc:  # noqa: BLE001
            outcome["second"] = exc

    worker = threading.Thread(target=one)
    worker.start()
    worker.join(30)
    assert joined.is_set()
    for _ in range(3000):
        if "second" in outcome:
            break
        threading.Event().wait(0.01)
    return outcome


def test_writes_of_many_threads_are_all_committed_with_fewer_commits(store: Store) -> None:
    commits: list[str] = []
    store._writer.conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    start = threading.Barrier(8)

    def writer(n: int) -> None:
        start.wait()
        for i in range(50):
            _log(store, f"e{n}-{i}")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = _events(store)
    assert sorted(events) == sorted(f"e{n}-{i}" for n in range(8) for i in range(50))
    # every write was committed, and groups of them shared a COMMIT
    assert 0 < len(commits) < 400


def test_a_failing_block_undoes_only_its_own_work(store: Store) -> None:
    def first(db) -> None:
        db.execute("INSERT INTO sync_log (at, direction, event, status) VALUES ('2026-12-02T00:00:00.000000Z', 'in', 'first', 'ok')")

    def second() -> None:
        with store.write() as db:
            db.execute("INSERT INTO sync_log (at, direction, event, status) VALUES ('2026-12-02T00:00:00.000000Z', 'in', 'second', 'ok')")
            raise ValueError("the block fails")

    outcome = _in_one_group(store, first, second)
    assert outcome["first"] is None
    assert isinstance(outcome["second"], ValueError)
    assert _events(store) == ["first"]
    _log(store, "after")  # the store writes on
    assert _events(store) == ["first", "after"]


def test_a_failing_first_block_undoes_its_work_and_frees_the_turn_for_the_next(store: Store, tmp_path: Path) -> None:
    """The first block of a group runs without a savepoint (its undo is the ROLLBACK of the
    whole transaction): when it fails, nothing of it stays, the next block opens a group of
    its own, and another process gets its turn to write."""
    _log(store, "before")
    with pytest.raises(ValueError):
        with store.write() as db:
            db.execute("INSERT INTO sync_log (at, direction, event, status) VALUES ('2026-12-02T00:00:00.000000Z', 'in', 'lost', 'ok')")
            raise ValueError("the block fails")
    assert store._group is None
    assert not store._writer.conn.in_transaction
    _log(store, "after")
    assert _events(store) == ["before", "after"]
    other = Store(tmp_path / "gateway.db", busy_timeout_ms=2000)  # the turn is free: it writes at once
    try:
        with pytest.raises(ValueError):
            with other.write() as db:
                raise ValueError("fails first, in the other store")
        _log(other, "other")
    finally:
        other.close()
    assert _events(store) == ["before", "after", "other"]


def test_a_failed_commit_fails_every_block_of_its_group_and_stores_nothing(store: Store) -> None:
    # a deferred foreign key is checked only at COMMIT: the second block's row makes it fail
    with store.write() as db:
        db.execute("CREATE TABLE t_parent (id INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE t_child (parent INTEGER REFERENCES t_parent (id) DEFERRABLE INITIALLY DEFERRED)")

    def first(db) -> None:
        db.execute("INSERT INTO sync_log (at, direction, event, status) VALUES ('2026-12-02T00:00:00.000000Z', 'in', 'first', 'ok')")

    def second() -> None:
        with store.write() as db:
            db.execute("INSERT INTO t_child (parent) VALUES (42)")

    outcome = _in_one_group(store, first, second)
    assert isinstance(outcome["first"], StoreError) and outcome["first"].code == "GW050"
    assert isinstance(outcome["second"], StoreError)
    assert "FOREIGN KEY" in str(outcome["second"])
    assert _events(store) == []  # neither block's work was committed
    assert store.last_write_failure is not None
    _log(store, "after")  # and the store writes on, the failure cleared
    assert _events(store) == ["after"] and store.last_write_failure is None


def test_a_block_reads_what_it_wrote_through_the_store(store: Store) -> None:
    with store.write():
        _events_inside = None
        store.db.execute("INSERT INTO sync_log (at, direction, event, status) VALUES ('2026-12-02T00:00:00.000000Z', 'in', 'inside', 'ok')")
        _events_inside = _events(store)  # store.db inside the block is the block's own connection
    assert _events_inside == ["inside"]


def test_a_forked_process_writes_through_a_connection_of_its_own(store: Store) -> None:
    _log(store, "parent-before")
    parent_writer = store._writer
    pid = os.fork()
    if pid == 0:  # the child: gunicorn forks its server and worker processes so
        code = 1
        try:
            _log(store, "child")
            code = 0 if store._writer is not parent_writer else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    _log(store, "parent-after")
    assert _events(store) == ["parent-before", "child", "parent-after"]
    assert store._writer is parent_writer


def test_processes_take_turns_to_write_and_a_killed_holder_frees_its_turn(store: Store, tmp_path: Path) -> None:
    """The write turn (``<database>.write-turn``): while another process is inside a write,
    this one waits (and after its busy timeout gets GW050, nothing written); once that
    process is SIGKILLed mid-write, its turn and SQLite's lock are freed by the kernel and
    the next write goes through at once. The dead process's write is undone."""
    import signal
    import time

    _log(store, "before")
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: enters a write and stays in it until killed
        try:
            with store.write() as db:
                db.execute("INSERT INTO sync_log (direction, event, status, at) VALUES ('in', 'child', 'ok', 'x')")
                os.write(ready_w, b"1")
                time.sleep(60)
        finally:
            os._exit(1)
    try:
        assert os.read(ready_r, 1) == b"1"
        assert (tmp_path / "gateway.db.write-turn").exists()
        impatient = Store(store.location, busy_timeout_ms=300)
        started = time.monotonic()
        with pytest.raises(StoreError) as refused:
            _log(impatient, "refused")
        assert refused.value.code == "GW050" and time.monotonic() - started >= 0.3
        impatient.close()
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    _log(store, "after")
    assert _events(store) == ["before", "after"]


def test_a_write_that_may_be_lost_to_a_power_cut_does_not_wait_for_the_disk_nor_make_a_durable_one_wait_less(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite commits without waiting for the disk (synchronous=NORMAL); a group with a
    durable block in it then syncs the WAL, after the processes' write turn is free again
    and before any of its blocks returns; a group of writes that may be lost is not synced."""
    statements: list[str] = []
    store._writer.conn.set_trace_callback(
        lambda sql: statements.append(sql) if sql.startswith(("PRAGMA synchronous", "BEGIN", "COMMIT")) else None)
    assert store._writer.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    statements.clear()
    turn = os.open(f"{store.path}.write-turn", os.O_RDWR)
    real_sync = os.fdatasync

    def sync(fd: int) -> None:
        fcntl.flock(turn, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if the turn were still held
        fcntl.flock(turn, fcntl.LOCK_UN)
        statements.append("fdatasync")
        real_sync(fd)

    monkeypatch.setattr(os, "fdatasync", sync)

    def claim(db) -> None:  # a write that may be lost (durable=False) ...
        db.execute("INSERT INTO sync_log (at, direction, event, status) VALUES ('2026-12-02T00:00:00.000000Z', 'out', 'claim', 'ok')")

    def may_be_lost() -> None:
        with store.write(durable=False) as db:
            claim(db)

    may_be_lost()
    assert statements == ["BEGIN IMMEDIATE", "COMMIT"]  # not synced
    statements.clear()

    # an intake, which is answered only once it is on disk, joins an open group of claims:
    # the whole group is synced once, and the intake returns after that
    returned: list[str] = []

    def intake() -> None:
        _log(store, "intake")
        returned.append(statements[-1])

    outcome = _in_one_group(store, claim, intake)
    assert outcome == {"first": None, "second": None}
    assert statements == ["BEGIN IMMEDIATE", "COMMIT", "fdatasync"]
    assert returned == ["fdatasync"]
    statements.clear()

    # a block that may be lost joins an open durable group as it is: it waits for the disk with it
    outcome = _in_one_group(store, lambda db: db.execute(
        "INSERT INTO sync_log (at, direction, event, status) VALUES ('2026-12-02T00:00:00.000000Z', 'in', 'intake2', 'ok')"),
        may_be_lost)
    assert outcome == {"first": None, "second": None}
    assert statements == ["BEGIN IMMEDIATE", "COMMIT", "fdatasync"]
    assert _events(store) == ["claim", "claim", "intake", "intake2", "claim"]
    os.close(turn)


def test_a_write_whose_wal_cannot_be_synced_is_not_acknowledged(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The COMMIT went through but the disk refused the sync: the block gets the StoreError
    (nothing is answered as stored), health shows why, and the next write syncs again."""
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    _log(store, "before")
    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(StoreError, match="could not make the write durable"):
        _log(store, "unsynced")
    assert "could not be synced" in (store.last_write_failure or "")
    monkeypatch.undo()
    _log(store, "after")
    assert store.last_write_failure is None
    assert _events(store) == ["before", "unsynced", "after"]  # committed, only its answer was withheld


def test_a_new_database_syncs_the_wal_its_writes_go_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first process of a new database opens its WAL for syncing too (SQLite makes the
    file at the first read), and what it syncs is the file SQLite writes."""
    store = Store(tmp_path / "new.db")
    synced: list[int] = []
    real_sync = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(os.fstat(fd).st_ino), real_sync(fd)))
    try:
        store.migrate()
        _log(store, "first")
        assert synced and set(synced) == {os.stat(tmp_path / "new.db-wal").st_ino}
    finally:
        store.close()
