"""The composition root: load the config, build the Flask app, the worker and their parts.

Role: the only module that knows every other one. ``create_app(config)`` wires the
store, mappings, contracts and blueprints into a Flask app (Flask's application-factory
pattern); ``build_worker`` the worker and its adapters; ``serve`` runs gunicorn (with the
worker in each server process unless ``run_worker=False``). The library calls the
``gateway`` command (``cli.py``, a thin click layer) is made of live here too: ``check``,
``migrate``, ``open_store``, ``preview_delivery``, ``send_test_case``, ``run_retention``.

May import: everything.

Invariants: a wrong config, mapping or contract stops the start with a ``GW0xx``
message before any port is opened; ``serve`` never uses Flask's development server. A
wrong mapping file on SIGHUP stops nothing: the master checks the files before gunicorn
replaces a worker process, and keeps the mappings in force when they fail (GW073, GW074).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import sys
from importlib import metadata
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from flask import Flask

import api
import config as config_mod
import identity
import inbound
import logs
import mapping
import ops
import rivta
import rules
from clock import SYSTEM, Clock, start_of_swedish_day, swedish_date, years_before
from config import Config
from errors import ConfigError, GatewayError, MappingError
from model import (
    PERSONNUMMER_OID,
    Attachment,
    Case,
    CaseType,
    Complaint,
    PersonId,
    Receiver,
    ReplyChannel,
    ReplyPreference,
    SubjectOfCare,
)
from store import Store, ts
from worker import Worker, WorkerSettings

log = logging.getLogger("gateway")


def version() -> str:
    try:
        return metadata.version("gateway-1177")
    except metadata.PackageNotFoundError:
        return "0.0.0+local"


def _as_config(value: Config | str | os.PathLike[str] | None) -> Config:
    return value if isinstance(value, Config) else config_mod.load(value)


def ping_configuration(cfg: Config, maps: mapping.Mappings, clock: Any) -> dict[str, str]:
    """PingForConfiguration's list: what the platform asks (who answers; the database's
    state is added per call), and the internals only with ``rivta.ping_details: true``."""
    found = {"hsaId": cfg.gateway.hsa_id}
    if cfg.rivta.ping_details:
        found.update({
            "name": cfg.gateway.name,
            "contracts": ", ".join(c.name for c in rivta.CONTRACTS.values()),
            "units": str(len(maps.units)),
            "targets": ", ".join(sorted(cfg.targets)) or "none",
            "started": clock.instant().strftime("%Y-%m-%dT%H:%M:%SZ"),
            "python": sys.version.split()[0],
        })
    return found


def create_app(
    config: Config | str | os.PathLike[str] | None = None, *, start_worker: bool = False, clock: Clock = SYSTEM,
    mappings: mapping.Holder | None = None,
) -> Flask:
    """Build the gateway's WSGI app from a ``Config`` (or the path of a config file).

    The store is migrated, mappings and contracts are loaded and checked; any problem
    raises a ``GatewayError`` here, before the app can serve a request. Every part reads the
    time from ``clock`` (UTC instants, the Swedish date of the 1177 rules). The app and its
    worker use ``mappings.current`` (loaded here if no holder is given) for their whole life:
    a reload replaces the server processes (``_gunicorn_application``), never a part of one.
    """
    cfg = _as_config(config)
    logs.configure(cfg.logging.level, cfg.logging.format)
    holder = mappings or mapping.Holder(cfg.mappings.dir, cfg.targets, now=clock.instant)
    in_force = holder.pinned()
    maps = in_force.mappings
    store = store_of(cfg)
    store.migrate()
    schemas = rivta.Schemas(files=rivta.ContractFiles(cfg.rivta.contracts_dir))
    authority = identity.CertificateAuthority(cfg.server.tls.client_ca, clock.instant) if cfg.server.tls and cfg.server.tls.client_ca else None

    app = Flask(__name__)
    app.config.update(GATEWAY=cfg, MAX_CONTENT_LENGTH=None)
    app.extensions["gateway.store"] = store
    app.extensions["gateway.mappings"] = maps
    app.extensions["gateway.mappings_holder"] = holder
    inbound.init_app(
        app,
        inbound.Intake(
            store=store,
            units=maps.units,
            schemas=schemas,
            max_body_bytes=cfg.intake.max_body_bytes,
            max_attachment_bytes=cfg.intake.max_attachment_bytes,
            max_attachments=cfg.intake.max_attachments,
            receipt_types=receipt_types(cfg),
            version=version(),
            public_url=cfg.gateway.public_url,
            access=cfg.rivta,
            authority=authority,
            clock=clock,
            hsa_id=cfg.gateway.hsa_id,
            ping_configuration=ping_configuration(cfg, maps, clock),
        ),
    )
    api.init_app(
        app,
        api.Api(
            store=store,
            units=maps.units,
            codes=maps.codes,
            tokens={
                api.token_digest(t.api.token.get_secret_value()): name
                for name, t in cfg.targets.items()
                if t.api.token is not None
            },
            review_s=cfg.outbound.review_s,
            require_text=cfg.outbound.guard.require_text,
            max_attachment_bytes=cfg.outbound.max_attachment_bytes,
            max_attachments=cfg.outbound.max_attachments,
            receipt_types=receipt_types(cfg),
            version=version(),
            cert_targets={t.api.client_cert_hsa_id.upper(): n for n, t in cfg.targets.items() if t.api.client_cert_hsa_id},
            access=cfg.rivta,
            authority=authority,
            clock=clock,
        ),
    )
    import secrets

    app.secret_key = (
        cfg.ops.secret_key.get_secret_value() if cfg.ops.secret_key else store.setting("ops_secret_key", lambda: secrets.token_hex(32))
    )
    app.config.update(
        PERMANENT_SESSION_LIFETIME=dt.timedelta(minutes=cfg.ops.session_minutes),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure_cookie(cfg),
    )
    ops.init_app(
        app,
        ops.Ops(
            store=store,
            mappings=maps,
            targets=sorted(cfg.targets) + ["national"],
            users={user.name: user for user in cfg.ops.users},
            proxy_header=cfg.ops.proxy_header,
            proxy_addresses=list(cfg.ops.proxy_addresses),
            heartbeat_max_age_s=max(30.0, cfg.worker.heartbeat_s * 3),
            version=version(),
            clock=clock,
            sign_in=cfg.ops.sign_in,
            mappings_in_force=in_force,
        ),
    )
    # each request starts without a correlation id (a thread serves many); /rivta and /api
    # set their own and reset it when they are done
    app.before_request(_forget_correlation_id)
    worker = build_worker(cfg, store, maps, clock=clock)
    app.extensions["gateway.worker"] = worker
    app.extensions["gateway.ops"].wake_worker = worker.wake
    if start_worker:
        app.extensions["gateway.ops"].worker_name = worker.name
    app.extensions["gateway.intake"].on_stored = worker.wake
    app.extensions["gateway.intake"].medications = worker.fetch_medications
    app.extensions["gateway.api"].on_stored = worker.wake
    if worker.national is not None:  # refused at the API: what 1177 cannot be sent
        app.extensions["gateway.api"].carries = worker.national.carries()
    if start_worker:
        worker.start()
    return app


def receipt_types(cfg: Config) -> frozenset[str]:
    """The case types that get the automatic receipt (outbound.confirmations)."""
    conf = cfg.outbound.confirmations
    return frozenset(kind.value for kind, text in conf.texts.items() if text) if conf.enabled else frozenset()


def secure_cookie(cfg: Config) -> bool:
    """Whether the ops session cookie is ``Secure``: as configured, else whenever the
    gateway serves TLS itself or its public address is https."""
    if cfg.ops.secure_cookie is not None:
        return cfg.ops.secure_cookie
    return cfg.server.tls is not None or (cfg.gateway.public_url or "").lower().startswith("https://")


def _forget_correlation_id() -> None:
    logs.correlation_id.set(None)


def build_worker(cfg: Config, store: Store, maps: mapping.Mappings, *, clock: Clock = SYSTEM) -> Worker:
    from adapters import national
    from adapters.alerts import channels_from

    settings = WorkerSettings(
        gateway_hsa_id=cfg.gateway.hsa_id,
        gateway_name=cfg.gateway.name,
        concurrency=cfg.worker.concurrency,
        poll_s=cfg.worker.poll_s,
        lease_s=cfg.worker.lease_s,
        heartbeat_s=cfg.worker.heartbeat_s,
        per_target=cfg.worker.per_target,
        deadline_s=cfg.worker.deadline_s,
        # synchronous medication lookups may hold at most a quarter of the HTTP threads
        medication_slots=max(1, cfg.server.threads // 4),
        review_s=cfg.outbound.review_s,
        max_attachments=cfg.outbound.max_attachments,
        require_text=cfg.outbound.guard.require_text,
        retention_hour=cfg.retention.run_at_hour,
    )
    return Worker(
        store,
        clock=clock,
        settings=settings,
        mappings=maps,
        targets=cfg.targets,
        national=national.build(cfg),  # the profile of national.profile
        national_settings=cfg.national,
        confirmations=cfg.outbound.confirmations,
        alerts=cfg.alerts,
        alert_channels=channels_from(cfg.alerts),
        retention=lambda: run_retention(cfg, store, clock),
    )


def _check_targets(cfg: Config) -> None:
    """Build every target's adapter once (a SOAP target loads its WSDL) and refuse a bad one."""
    import adapters

    for name, settings in cfg.targets.items():
        adapter = adapters.build(name, settings)
        problems = adapter.problems()
        adapter.close()
        if problems:
            raise ConfigError(" ".join(problems), field=f"targets.{name}")


# -- gunicorn ---------------------------------------------------------------------------------


def _worker_class(read_timeout_s: float) -> type:
    """gunicorn's gthread worker with a kernel-level read and write timeout on every client
    socket: a client that sends part of a request (or of a TLS handshake) and stalls gets
    its thread back after ``read_timeout_s`` instead of holding it for ever (slow loris)."""
    import socket
    import struct

    from gunicorn.workers.gthread import ThreadWorker

    seconds = int(read_timeout_s)
    interval = struct.pack("ll", seconds, int((read_timeout_s - seconds) * 1_000_000))

    class GatewayThreadWorker(ThreadWorker):
        def handle(self, conn: Any) -> Any:
            if not getattr(conn, "gateway_timeouts", False):
                # SO_RCVTIMEO/SO_SNDTIMEO live on the file descriptor, so gunicorn's own
                # setblocking(True) and the TLS wrapping keep them
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)
                conn.gateway_timeouts = True
            return super().handle(conn)

    return GatewayThreadWorker


def serving_mappings(cfg: Config) -> mapping.Holder:
    """The mappings ``gateway serve`` starts with, loaded and checked in the gunicorn master
    (a ``GatewayError`` if they are not sound): every server process is forked with them."""
    return mapping.Holder(cfg.mappings.dir, cfg.targets, now=SYSTEM.instant)


def reload_mappings(holder: mapping.Holder) -> bool:
    """SIGHUP in the gunicorn master: read and check the mapping files. True when they are in
    force; gunicorn then starts new server processes (forked with them) and lets the old ones
    finish their requests. False (logged with its code) when the old ones stay."""
    outcome = holder.reload()
    if outcome.ok:
        log.info("mappings reloaded", extra={"digest": outcome.digest, "units": len(holder.current.units),
                                             "mappings_dir": str(holder.directory)})
    else:
        log.error("mappings not reloaded: the ones in force stay", extra={
            "error_code": outcome.code, "detail": outcome.message, "digest": outcome.digest,
            "in_force": holder.current.digest})
    return outcome.ok


def _gunicorn_application(cfg: Config, bind: str, run_worker: bool, mappings: mapping.Holder) -> Any:
    """gunicorn serving ``create_app`` in ``server.workers`` processes, each forked from this
    one with ``mappings.current``. On SIGHUP the master reloads the mappings first
    (``reload_mappings``) and only when they are sound does gunicorn replace its workers
    (new ones start, old ones finish what they took): without that, a broken file would
    make every new worker fail to boot, and gunicorn would stop the whole gateway."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter

    class GatewayArbiter(Arbiter):
        def handle_hup(self) -> None:
            if reload_mappings(mappings):
                super().handle_hup()

    def pre_request(worker: Any, req: Any) -> None:
        # a body the app will refuse unread (GW010) cannot be drained: close the connection
        # after the answer, so that the client does not reuse a broken one
        headers = {name.upper(): value for name, value in req.headers}
        length = headers.get("CONTENT-LENGTH", "")
        if (length.isdigit() and int(length) > cfg.intake.max_body_bytes) or "CHUNKED" in headers.get("TRANSFER-ENCODING", "").upper():
            req.must_close = True

    def worker_exit(server: Any, gunicorn_worker: Any) -> None:
        app = getattr(gunicorn_worker, "wsgi", None)
        if isinstance(app, Flask):
            app.extensions["gateway.worker"].stop()
            app.extensions["gateway.store"].close()

    class GatewayServer(BaseApplication):
        """gunicorn running ``create_app``; the app (and its worker) is built in each process."""

        def load_config(self) -> None:
            options = {
                "bind": [bind],
                "workers": cfg.server.workers,
                "threads": cfg.server.threads,
                "worker_class": _worker_class(cfg.server.read_timeout_s),
                "pre_request": pre_request,
                "timeout": cfg.server.timeout_s,
                "graceful_timeout": 20,
                "worker_exit": worker_exit,
                "proc_name": "gateway-1177",
                "accesslog": None,
                "control_socket_disable": True,
                "loglevel": cfg.logging.level.lower(),
            }
            tls = cfg.server.tls
            if tls is not None:
                import ssl

                options.update(certfile=str(tls.cert), keyfile=str(tls.key))
                if tls.client_ca is not None:
                    # asked of every client and verified; required on /rivta by the app
                    options.update(ca_certs=str(tls.client_ca), cert_reqs=ssl.CERT_OPTIONAL)
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Flask:
            return create_app(cfg, start_worker=run_worker and cfg.worker.enabled, mappings=mappings)

        def run(self) -> None:  # BaseApplication.run with the arbiter that checks before a reload
            try:
                GatewayArbiter(self).run()
            except RuntimeError as exc:
                print(f"\nError: {exc}\n", file=sys.stderr)
                sys.stderr.flush()
                sys.exit(1)

    return GatewayServer()


# -- the library the CLI is a thin layer over ---------------------------------------------------


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """The config at ``path`` (or ``$GATEWAY_CONFIG``), checked; raises ``ConfigError``."""
    return config_mod.load(path)


CONFIG_ENV = config_mod.CONFIG_ENV


def store_of(cfg: Config) -> Store:
    """The store ``cfg.database`` names: PostgreSQL at ``url``, else the SQLite file at ``path``."""
    db = cfg.database
    if db.url is not None:
        return Store(db.url, busy_timeout_ms=db.busy_timeout_ms, pool_size=db.pool_size,
                     password=db.password.get_secret_value() if db.password else None)
    return Store(db.path, busy_timeout_ms=db.busy_timeout_ms)


def open_store(cfg: Config, *, migrate: bool = True) -> Store:
    """The store ``cfg`` names, with its schema brought up to date (unless ``migrate=False``)."""
    store = store_of(cfg)
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store


def migrate(cfg: Config) -> list[str]:
    """Create or upgrade the schema; the names of the migrations applied."""
    store = store_of(cfg)
    try:
        return store.migrate()
    finally:
        store.close()


def migrate_from_sqlite(cfg: Config, source: Path) -> dict[str, int]:
    """Copy the SQLite store at ``source`` into the empty PostgreSQL database of ``cfg``
    (``database.url``), history and all; the rows copied per table."""
    store = store_of(cfg)
    try:
        return store.copy_from_sqlite(source)
    finally:
        store.close()


def load_mappings(cfg: Config) -> tuple[mapping.Mappings, list[str]]:
    """The mappings of ``cfg`` and their problems against its targets (empty: all good);
    raises ``MappingError`` for a file that cannot be read at all."""
    maps = mapping.load(cfg.mappings.dir)
    return maps, maps.problems(cfg.targets)


def timestamp(moment: dt.datetime) -> str:
    """An instant in the store's format (what the sync log's times are compared with)."""
    return ts(moment)


def configure_logging(cfg: Config) -> None:
    """Structured logging as ``logging:`` in the config asks."""
    logs.configure(cfg.logging.level, cfg.logging.format)


def prepare_serve(cfg: Config) -> mapping.Holder:
    """Everything ``serve`` checks before it opens a port: the mappings, the contract
    files, every target's adapter, and the schema (migrated). The mappings to serve with,
    loaded and checked once, here; raises a ``GatewayError`` that says what to fix."""
    holder = serving_mappings(cfg)
    rivta.check_contract_files(files=rivta.ContractFiles(cfg.rivta.contracts_dir))
    _check_targets(cfg)
    applied = migrate(cfg)
    if applied:
        log.info("database migrated", extra={"applied": ", ".join(applied)})
    return holder


def serve(cfg: Config, bind: str | None = None, run_worker: bool = True, mappings: mapping.Holder | None = None) -> None:
    """Serve the gateway with gunicorn until it is stopped, on the ``mappings`` that
    ``prepare_serve`` gave (loaded here if none). SIGHUP reloads them (``reload_mappings``)."""
    address = bind or cfg.server.bind
    holder = mappings or serving_mappings(cfg)
    log.info("serving", extra={"bind": address, "worker": run_worker and cfg.worker.enabled, "version": version()})
    _gunicorn_application(cfg, address, run_worker, holder).run()


@dataclasses.dataclass(frozen=True)
class Finding:
    """One line of ``gateway check``: ``ok``, ``FAIL`` or ``WARN``, and what was found."""

    status: str
    text: str


def check(config_path: str | os.PathLike[str] | None) -> Iterator[Finding]:
    """Validate the config, the mappings, the targets, the contracts and the database, one
    finding at a time (``gateway check``); stops after a config that cannot be loaded."""
    try:
        cfg = config_mod.load(config_path)
    except GatewayError as exc:
        yield Finding("FAIL", f"config: {exc}")
        return
    yield Finding("ok", f"config {cfg.source}")
    for warning in cfg.warnings():
        yield Finding("WARN", warning)
    if not cfg.gateway.public_url and not identity.is_loopback_host(identity.host_of(cfg.server.bind)):
        yield Finding("FAIL", f"config: {ConfigError.code} config key 'gateway.public_url': server.bind {cfg.server.bind} is not "
                              "a loopback address, so the served WSDLs need the address the platform reaches the gateway at "
                              "(a caller's Host header is never written into them). Set gateway.public_url.")
    try:
        maps, problems = load_mappings(cfg)
        for problem in problems:
            yield Finding("FAIL", f"mappings: {MappingError.code} {problem}")
        if not problems:
            yield Finding("ok", f"mappings {cfg.mappings.dir}: {len(maps.units)} unit(s)")
    except GatewayError as exc:
        yield Finding("FAIL", f"mappings: {exc}")
    import adapters

    for name, settings in cfg.targets.items():
        try:
            adapter = adapters.build(name, settings)
            problems = adapter.problems()
            adapter.close()
        except GatewayError as exc:
            problems = [str(exc)]
        for problem in problems:
            yield Finding("FAIL", f"target {name}: {problem}")
        if not problems:
            where = getattr(settings, "base_url", None) or getattr(settings, "endpoint", None) or getattr(settings, "wsdl", None)
            yield Finding("ok", f"target {name} ({settings.kind}): {where}")
    from adapters import national

    for level, text in national.check(cfg):  # national.profile and what it carries (GW086)
        yield Finding(level, text)
    for passed, line in rivta.check_report(cfg.rivta.contracts_dir):
        yield Finding("ok" if passed else "FAIL", line)
    try:
        store = store_of(cfg)
        if store.pg is not None or cfg.database.path.exists():
            pending = store.pending_migrations()
            store.check_writable()
            yield Finding("ok", f"database {store.where}: writable" + (
                f", {len(pending)} migration(s) pending (run 'gateway migrate')" if pending else ", schema up to date"))
        else:
            yield Finding("ok", f"database {cfg.database.path}: will be created on first start")
        store.close()
    except GatewayError as exc:
        yield Finding("FAIL", f"database: {exc}")


def field_vocabulary() -> list[dict[str, Any]]:
    """The fields a field map can use (``gateway mappings fields``), from the model."""
    return [{"path": f.path, "type": f.type, "example": _example(f.example), "when": f.when,
             **({"values": list(f.values)} if f.values else {})} for f in mapping.vocabulary()]


def _example(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def hash_password(password: str) -> str:
    """The hash to put in ``ops.users[].password_hash`` (the password itself is never stored)."""
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password)


def unlock_sign_in(store: Store, user: str, address: str | None, *, by: str) -> tuple[str, bool]:
    """Lift the sign-in lock of ``user`` (or of ``address``), audited: the key and whether
    there was a lock to lift."""
    import ops.auth

    user_key, address_key = ops.auth.sign_in_keys(user, address)
    key = address_key if address else user_key
    lifted = store.clear_sign_in_failures(key)
    store.audit(by, "cli", "sign_in_unlocked", key, "lock lifted" if lifted else "nothing to lift")
    return key, lifted


def retention_cutoffs(cfg: Config, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The instants before which case content and sync-log detail are purged: the start
    of the Swedish day ``content_years`` (``log_detail_years``) calendar years before
    today's Swedish date (so 29 February counts on to 1 March)."""
    today = swedish_date(now)
    return (start_of_swedish_day(years_before(today, cfg.retention.content_years)),
            start_of_swedish_day(years_before(today, cfg.retention.log_detail_years)))


def run_retention(cfg: Config, store: Store, clock: Clock = SYSTEM) -> dict[str, int]:
    """Purge old case content, files and sync-log detail now: what was removed, by kind."""
    now = clock.instant()
    content_before, log_before = retention_cutoffs(cfg, now)
    return store.purge(content_before=content_before, log_before=log_before, now=now)


#: The built-in sample cases of ``gateway mappings try --sample``: name → what it is.
SAMPLES = {
    "complaint": "a complaint to a clinic",
    "board": "a complaint to the patient board naming only a free-text place",
    "question": "a question with a picture attached",
    "renewal": "a prescription renewal naming two medications",
}
SAMPLES_DIR = "samples"


def sample_file(cfg: Config, name: str) -> Path:
    """The sample case ``name``: ``samples/<name>.xml`` in the config's mappings folder if it
    has one, else the one shipped in the gateway's own ``mappings/samples``."""
    for folder in (cfg.mappings.dir / SAMPLES_DIR, Path(__file__).resolve().parent / "mappings" / SAMPLES_DIR):
        if (folder / f"{name}.xml").is_file():
            return folder / f"{name}.xml"
    raise MappingError(f"the sample case '{name}' is not in {cfg.mappings.dir / SAMPLES_DIR} nor shipped with the gateway.",
                       hint="Give your own with --file CASE.xml.")


def _readdressed(case: Case, maps: mapping.Mappings, target_name: str, today: dt.date) -> tuple[Case, str | None]:
    """A sample case sent to a unit that routes to ``target_name`` (a patient board one for
    a case to the board), and a note when none fits as well as the sample wants."""
    units = [u for u in maps.units.rows if u.target == target_name and u.valid_on(today)]
    if not units:
        raise MappingError(f"no unit in {mapping.UNITS_FILE} routes to '{target_name}' today, so no case can reach it.",
                           hint=f"Route a unit to '{target_name}' in {mapping.UNITS_FILE}, or give --file.")
    fitting = [u for u in units if u.patient_board == case.receiver.is_patient_board]
    unit = (fitting or units)[0]
    note = None
    if not fitting:
        kind = "patient board" if case.receiver.is_patient_board else "clinic (not a patient board)"
        note = f"no {kind} unit routes to '{target_name}'; the sample goes to {unit.hsa_id} ({unit.code})."
    return dataclasses.replace(case, receiver=Receiver(unit.hsa_id, unit.patient_board)), note


@dataclasses.dataclass(frozen=True)
class Preview:
    """What ``gateway mappings try`` shows: the call, and notes on how the case was chosen."""

    text: str
    notes: tuple[str, ...]


def preview_delivery(cfg: Config, target_name: str, *, case_file: Path | None = None,
                     sample: str | None = None, full: bool = False) -> Preview:
    """Exactly what delivering a case to ``target_name`` would send, without sending it:
    ``case_file`` (a ProcessCase request) or the built-in ``sample`` (default complaint),
    readdressed to a unit of the target. Raises a ``GatewayError`` that says what to fix."""
    import adapters
    from mapping import delivery_source

    maps = mapping.load(cfg.mappings.dir)
    if target_name not in cfg.targets:
        raise ConfigError(f"there is no target '{target_name}' under 'targets'.", field=f"targets.{target_name}")
    today = SYSTEM.day()
    notes: list[str] = []
    path = case_file or sample_file(cfg, sample or "complaint")
    case = inbound.case_from_xml(path.read_bytes(), rivta.Schemas(files=rivta.ContractFiles(cfg.rivta.contracts_dir)))
    if case_file is None:
        case, note = _readdressed(case, maps, target_name, today)
        notes.append(f"sample '{sample or 'complaint'}' ({path}): {SAMPLES[sample or 'complaint']}, "
                     f"{case.case_type.value} to {case.receiver.hsa_id}")
        if note:
            notes.append(f"note: {note}")
    route = maps.units.route(case.receiver.hsa_id, today)
    if route is None:
        raise GatewayError(f"no unit in {mapping.UNITS_FILE} routes {case.receiver.hsa_id} on {today}.")
    if route.target != target_name:
        notes.append(f"note: {mapping.UNITS_FILE} routes {case.receiver.hsa_id} to '{route.target}', not '{target_name}'.")
    source = delivery_source(
        case=case, route={"unit_code": route.unit.code, "target": target_name, "hsa_id": route.unit.hsa_id},
        provider_case_id=None, idempotency_key="<idempotency-key>", gateway_hsa_id=cfg.gateway.hsa_id,
    )
    body = maps.fieldmap(target_name).build("deliver_case", source)
    if not full:
        body = _shorten(body)
    adapter = adapters.build(target_name, cfg.targets[target_name])
    request = adapters.Request(body=body, idempotency_key="<idempotency-key>",
                               params={"case_id": case.case_id, "unit_code": route.unit.code})
    return Preview(adapter.preview("deliver_case", request), tuple(notes))


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of ``gateway send-test-case``."""

    ok: bool
    text: str


def send_test_case(cfg: Config, target_name: str, case_file: Path | None = None) -> Iterator[Step]:
    """Send one test case to ``target_name`` through the real delivery path on a throw-away
    store, step by step; the last step says whether the target took it (``ok``).

    Nothing is written to the gateway's own database."""
    import tempfile

    try:
        maps = mapping.load(cfg.mappings.dir)
        if target_name not in cfg.targets:
            raise ConfigError(f"there is no target '{target_name}' under 'targets'.", field=f"targets.{target_name}")
        yield Step(True, f"config {cfg.source}, target {target_name} ({cfg.targets[target_name].kind})")
        today = SYSTEM.day()
        if case_file is not None:
            case = inbound.case_from_xml(case_file.read_bytes(), rivta.Schemas(files=rivta.ContractFiles(cfg.rivta.contracts_dir)))
            yield Step(True, f"case {case.case_id} read from {case_file}")
        else:
            unit = next((u for u in maps.units.rows if u.target == target_name and u.valid_on(today)), None)
            if unit is None:
                raise GatewayError(f"no unit in {mapping.UNITS_FILE} is routed to '{target_name}'; give --file.")
            case = _test_case(unit.hsa_id, unit.patient_board)
            yield Step(True, f"built-in test case {case.case_id}: a complaint to {unit.hsa_id} ({unit.code})")
        rules.check_case(case, today=today)
        route = maps.units.route(case.receiver.hsa_id, today)
        if route is None:
            raise GatewayError(f"no unit in {mapping.UNITS_FILE} routes {case.receiver.hsa_id}.")
        yield Step(True, f"1177's rules passed; routed to unit code {route.unit.code}" + (" (default route)" if route.by_default else ""))
        with tempfile.TemporaryDirectory(prefix="gateway-test-case-") as folder:
            store = Store(Path(folder) / "test.db")
            store.migrate()
            store.accept_case(case, target=target_name, provider_unit_code=route.unit.code, correlation_id="send-test-case")
            worker = Worker(store, clock=SYSTEM, settings=WorkerSettings(gateway_hsa_id=cfg.gateway.hsa_id),
                            mappings=maps, targets={target_name: cfg.targets[target_name]})
            job = store.claim("send-test-case", limit=1, lease_s=600)[0]
            body = worker.build_request(job).body
            yield Step(True, f"field map {mapping.FIELDMAPS_DIR}/{target_name}.yaml built the body ({len(body)} top-level fields)")
            worker.deliver(job)
            row = store.outbox_rows(case.case_id)[0]
            attempt = store.attempts_of(row["id"])[-1]
            case_row = store.case_row(case.case_id) or {}
            store.close()
    except GatewayError as exc:
        yield Step(False, str(exc))
        return
    if row["status"] == "done":
        yield Step(True, f"delivered in {attempt['duration_ms']:.0f} ms, status {attempt['status_code']}"
                   + (f", the provider's case id {case_row.get('provider_case_id')}" if case_row.get("provider_case_id") else ""))
        return
    later = "retried later" if row["status"] == "pending" else "a dead letter"
    yield Step(False, f"NOT delivered: {attempt['error_code']} {attempt['detail']} (a real case would be {later})")


def _test_case(receiver: str, patient_board: bool) -> Case:
    now = SYSTEM.local_time().replace(microsecond=0)
    return Case(
        case_id=f"TEST-{now:%Y%m%d%H%M%S}",
        case_type=CaseType.COMPLAINT,
        receiver=Receiver(receiver, patient_board),
        subject_of_care=SubjectOfCare(PersonId.parse("191212121212", PERSONNUMMER_OID), "Tolvan Tolvansson (test)"),
        created_time=now,
        text="Testärende från gateway send-test-case. Kan tas bort.",
        subject="Testärende",
        reply_preference=ReplyPreference(True, ReplyChannel.INKORG),
        complaint=Complaint(now.date(), False, "Testmottagningen"),
        attachments=(Attachment("test.pdf", "application/pdf", _test_pdf()),),
    )


def _test_pdf() -> bytes:
    """A one-page PDF (pypdf writes it), which 1177's rules take as the test case's file."""
    import io

    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def _shorten(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _shorten(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v) for v in value]
    if isinstance(value, str) and len(value) > 120:
        return f"{value[:60]}…({len(value)} characters; --full shows all)"
    if isinstance(value, bytes) and len(value) > 90:
        return value[:45] + f"…({len(value)} bytes; --full shows all)".encode()
    return value


def sandbox_argv(*, once: bool, port_base: int, free_ports: bool, timeout: float, data: Path | None,
                 tls: bool, national_profile: str | None = None) -> tuple[Path, list[str]]:
    """The folder and the command line of the sandbox (a program of its own, never
    imported by the product); raises ``ConfigError`` when it is not installed."""
    root = Path(__file__).resolve().parent
    if not (root / "sandbox" / "demo.py").is_file():
        raise ConfigError("the sandbox is not part of this installation (it ships with the source).")
    argv = [sys.executable, "-m", "sandbox.demo", "--port-base", str(port_base), "--timeout", str(timeout)]
    argv += ["--once"] if once else []
    argv += ["--free-ports"] if free_ports else []
    argv += ["--data", str(data.resolve())] if data else []
    argv += ["--tls"] if tls else []
    argv += ["--national-profile", national_profile] if national_profile else []
    return root, argv
