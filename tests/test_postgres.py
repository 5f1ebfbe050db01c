"""PostgreSQL as the store: the same schema as SQLite's, the dialect's translation, a database
that is down (GW050, then recovery by itself), new work waking another instance at once
(LISTEN/NOTIFY), and ``gateway migrate --from-sqlite``. Skipped, with the reason, without
``GATEWAY_TEST_POSTGRES_URL``."""

from __future__ import annotations

import socket
import threading
import time

import pytest

import cli
from conftest import NO_POSTGRES, POSTGRES_URL, ROOT, postgres_schema, write_config
from errors import StoreError
from store import Store
from store.dialect import to_postgres

needs_postgres = pytest.mark.skipif(not POSTGRES_URL, reason=NO_POSTGRES)


def test_the_dialect_translates_placeholders_and_leaves_quoted_text_alone():
    assert to_postgres("SELECT a FROM t WHERE b = ? AND c = :now AND d = '50% ?' AND e LIKE ?") == (
        "SELECT a FROM t WHERE b = %s AND c = %(now)s AND d = '50%% ?' AND e ILIKE %s")
    assert to_postgres("INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)") == (
        "INSERT INTO settings (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING")
    assert to_postgres('SELECT "user" FROM ops_sessions WHERE x % 2 = 0') == 'SELECT "user" FROM ops_sessions WHERE x %% 2 = 0'


def _sqlite_schema(store: Store) -> dict:
    tables = {}
    for (name,) in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                                    "AND name <> '_sqlite_migrations'"):
        columns = {r["name"]: (r["type"].upper(), bool(r["notnull"]) or bool(r["pk"]) and r["type"] != "INTEGER")
                   for r in store.db.execute(f'PRAGMA table_info("{name}")')}
        indexes = {}
        for index in store.db.execute(f'PRAGMA index_list("{name}")'):
            if index["origin"] == "pk":
                continue
            cols = tuple(r["name"] for r in store.db.execute(f'PRAGMA index_info("{index["name"]}")'))
            indexes[index["name"]] = (cols, bool(index["unique"]))
        tables[name] = (columns, indexes)
    return tables


PG_TYPES = {"text": "TEXT", "bigint": "INTEGER", "double precision": "REAL", "bytea": "BLOB"}


def _pg_schema(store: Store) -> dict:
    tables = {}
    for (name,) in store.db.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                                    "AND table_name <> '_pg_migrations'"):
        columns = {r["column_name"]: (PG_TYPES[r["data_type"]], r["is_nullable"] == "NO" and not r["is_identity"] == "YES")
                   for r in store.db.execute(
                       "SELECT column_name, data_type, is_nullable, is_identity FROM information_schema.columns "
                       "WHERE table_schema = current_schema() AND table_name = ?", [name])}
        indexes = {}
        for r in store.db.execute(
                """SELECT i.relname AS index, ix.indisunique AS unique,
                          array(SELECT a.attname FROM unnest(ix.indkey) WITH ORDINALITY k(n, o)
                                JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.n ORDER BY k.o) AS cols
                   FROM pg_index ix JOIN pg_class i ON i.oid = ix.indexrelid JOIN pg_class t ON t.oid = ix.indrelid
                   WHERE t.relname = ? AND t.relnamespace = current_schema()::regnamespace AND NOT ix.indisprimary""",
                [name]):
            indexes[r["index"]] = (tuple(r["cols"]), r["unique"])
        tables[name] = (columns, indexes)
    return tables


@needs_postgres
def test_postgresql_migrations_give_the_schema_sqlites_give(tmp_path):
    lite = Store(tmp_path / "gateway.db")
    lite.migrate()
    with postgres_schema() as url:
        pg = Store(url)
        try:
            assert pg.migrate() == ["p001_schema_of_m001_to_m014", "p002_claim_per_target"] and pg.migrate() == [] and not pg.pending_migrations()
            ours, theirs = _sqlite_schema(lite), _pg_schema(pg)
        finally:
            pg.close()
    lite.close()
    assert sorted(ours) == sorted(theirs)
    for table in ours:
        assert ours[table][0] == theirs[table][0], f"columns of {table}"
        assert ours[table][1] == theirs[table][1], f"indexes of {table}"
    print(f"{len(ours)} tables, {sum(len(c) for c, _ in ours.values())} columns, "
          f"{sum(len(i) for _, i in ours.values())} indexes: the same on both")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_postgres
def test_a_database_that_is_down_is_gw050_and_the_store_recovers_by_itself():
    """A TCP relay stands between the store and PostgreSQL; cutting it is the database going
    down (or failing over), restoring it is the database coming back."""
    from urllib.parse import urlsplit

    real = urlsplit(POSTGRES_URL)
    relay = _Relay(real.hostname or "127.0.0.1", real.port or 5432)
    with postgres_schema() as url:
        through = url.replace(f"{real.hostname}:{real.port or 5432}", f"127.0.0.1:{relay.port}")
        store = Store(through, busy_timeout_ms=1000, pool_size=2)
        try:
            store.migrate()
            store.beat("w1", "before")
            relay.cut()
            with pytest.raises(StoreError) as refused:
                store.beat("w1", "while down")
            assert refused.value.code == "GW050" and "nothing was stored" in refused.value.message
            with pytest.raises(StoreError):
                store.check_writable()
            relay.restore()
            deadline = time.monotonic() + 15
            while True:  # the pool replaces the broken connections by itself
                try:
                    store.beat("w1", "after")
                    break
                except StoreError:
                    assert time.monotonic() < deadline, "the store did not reconnect"
                    time.sleep(0.2)
            assert store.beat_of("w1")["detail"] == "after"
        finally:
            store.close()
            relay.close()


class _Relay:
    """A loopback TCP relay that can drop every connection and refuse new ones."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.up = True
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.up = False
        with self.lock:
            for pair in self.pairs:
                for s in pair:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    s.close()
            self.pairs.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.server.close()


@needs_postgres
def test_new_work_wakes_another_instance_at_once_through_notify():
    with postgres_schema() as url:
        ours, theirs = Store(url), Store(url)
        ours.migrate()
        woken = threading.Event()
        stop = theirs.listen_work(woken.set)
        assert stop is not None
        try:
            time.sleep(0.5)  # the listener is connected (it wakes once when it starts listening)
            woken.clear()
            assert not woken.wait(0.7), "woken without new work"
            ours.log_event(direction="in", event="noise", status="ok")  # a write that is not new work
            assert not woken.wait(0.7), "woken by a write that queued nothing"
            with ours.write() as db:
                ours._enqueue(db, "C-1", "deliver_case", "C-1", "demo_rest", _now())
            assert woken.wait(2), "the other instance was not woken by the NOTIFY of the commit"
        finally:
            stop()
            ours.close()
            theirs.close()


def _now():
    from clock import instant

    return instant()


@needs_postgres
def test_migrate_from_sqlite_copies_the_history_and_refuses_a_database_with_rows(app, client, make_case, config_data,
                                                                                  runner, tmp_path):
    """The app here runs on SQLite (this module's tests run on it by default): its store is copied."""
    answer = client.post("/rivta", data=make_case(), headers={"Content-Type": "text/xml"})
    assert b">OK<" in answer.data
    source = app.extensions["gateway.store"]
    source.beat("worker@old", "before the move")
    before = {t: source.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("cases", "outbox", "sync_log")}
    ids = [r["id"] for r in source.db.execute("SELECT id FROM outbox ORDER BY id")]
    with postgres_schema() as url:
        data = dict(config_data, database={"url": url})
        path = write_config(tmp_path, data, "pg.yaml")
        moved = runner.invoke(cli.cli, ["migrate", "--from-sqlite", str(tmp_path / "gateway.db"), "--config", str(path)])
        assert moved.exit_code == 0, moved.output
        assert f"cases {before['cases']}" in moved.output and "sync_log" in moved.output
        target = Store(url)
        try:
            after = {t: target.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in before}
            assert after == before
            assert [r["id"] for r in target.db.execute("SELECT id FROM outbox ORDER BY id")] == ids
            case = target.load_case("1177-C-0001")  # content and files (by hash) came over
            assert case == source.load_case("1177-C-0001") and case.attachments
            assert target.beat_of("worker@old")["detail"] == "before the move"
            # the sequences go on past the copied ids
            target.log_event(direction="in", event="after_move", status="ok")
            newest = target.db.execute("SELECT max(id) FROM sync_log").fetchone()[0]
            assert newest == max(r["id"] for r in source.db.execute("SELECT id FROM sync_log")) + 1
        finally:
            target.close()
        again = runner.invoke(cli.cli, ["migrate", "--from-sqlite", str(tmp_path / "gateway.db"), "--config", str(path)])
        assert again.exit_code == 2 and "GW051" in again.output and "already holds rows" in again.output


def test_migrate_from_sqlite_needs_a_postgresql_url(app, runner, config_data, tmp_path):
    path = write_config(tmp_path, config_data)
    refused = runner.invoke(cli.cli, ["migrate", "--from-sqlite", str(tmp_path / "gateway.db"), "--config", str(path)])
    assert refused.exit_code == 2 and "GW050" in refused.output and "database.url" in refused.output


@needs_postgres
def test_retention_on_postgresql_purges_and_vacuums_outside_a_transaction():
    import datetime as dt

    from clock import instant

    with postgres_schema() as url:
        store = Store(url)
        try:
            store.migrate()
            old = instant() - dt.timedelta(days=800)
            with store.write() as db:
                db.execute("INSERT INTO cases (case_id, origin, case_type, receiver_hsa_id, status, received_at, "
                           "content_hash, content, last_activity_at) VALUES ('OLD', '1177', 'complaint', 'SE1-X', "
                           "'delivered', ?, 'h', '{}', ?)", [_ts(old), _ts(old)])
            removed = store.purge(content_before=instant() - dt.timedelta(days=730),
                                  log_before=instant() - dt.timedelta(days=730))
            assert removed["cases"] == 1 and removed["bytes_freed"] >= 0
            assert store.case_row("OLD")["content"] is None and store.case_row("OLD")["purged_at"]
        finally:
            store.close()


def _ts(moment):
    from store import ts

    return ts(moment)


@pytest.mark.parametrize("url, says", [
    ("postgresql://gw:hemligt@db:5432/gateway", "database.password"),
    ("mysql://gw@db/gateway", "must be a PostgreSQL URL"),
])
def test_a_database_url_with_a_password_or_of_another_engine_is_refused(config_data, url, says):
    import copy

    import config as config_mod
    from errors import ConfigError

    data = copy.deepcopy(config_data)
    data["database"]["url"] = url
    with pytest.raises(ConfigError) as refused:
        config_mod.from_dict(data, base_dir=ROOT, environ={})
    assert "database.url" in refused.value.message and says in refused.value.message
    assert "hemligt" not in refused.value.message
