"""The composition root: load the config, build the Flask app, the worker and the CLI.

Role: the only module that knows every other one. ``create_app(config)`` wires the
store, mappings, contracts and blueprints into a Flask app (Flask's application-factory
pattern); the click group ``cli`` is the ``gateway`` command: ``serve`` (gunicorn, with
the worker in each server process unless ``--no-worker``), ``check`` and ``migrate``.

May import: everything.

Invariants: a wrong config, mapping or contract stops the start with a ``GW0xx``
message before any port is opened; ``serve`` never uses Flask's development server.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import click
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
from store import Store
from worker import Worker

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
    config: Config | str | os.PathLike[str] | None = None, *, start_worker: bool = False, clock: Clock = SYSTEM
) -> Flask:
    """Build the gateway's WSGI app from a ``Config`` (or the path of a config file).

    The store is migrated, mappings and contracts are loaded and checked; any problem
    raises a ``GatewayError`` here, before the app can serve a request. Every part reads the
    time from ``clock`` (UTC instants, the Swedish date of the 1177 rules).
    """
    cfg = _as_config(config)
    logs.configure(cfg.logging.level, cfg.logging.format)
    maps = mapping.load(cfg.mappings.dir)
    problems = maps.problems(cfg.targets)
    if problems:
        raise ConfigError("the mappings have problems: " + " ".join(problems), hint="Run 'gateway check' for the list.")
    store = Store(cfg.database.path, busy_timeout_ms=cfg.database.busy_timeout_ms)
    store.migrate()
    schemas = rivta.Schemas()
    authority = identity.CertificateAuthority(cfg.server.tls.client_ca, clock.instant) if cfg.server.tls and cfg.server.tls.client_ca else None

    app = Flask(__name__)
    app.config.update(GATEWAY=cfg, MAX_CONTENT_LENGTH=None)
    app.extensions["gateway.store"] = store
    app.extensions["gateway.mappings"] = maps
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
        GATEWAY_EXPECT_WORKER=start_worker,
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
        ),
    )
    # each request starts without a correlation id (a thread serves many); /rivta and /api
    # set their own and reset it when they are done
    app.before_request(_forget_correlation_id)
    worker = build_worker(cfg, store, maps, clock=clock)
    app.extensions["gateway.worker"] = worker
    app.extensions["gateway.intake"].on_stored = worker.wake
    app.extensions["gateway.intake"].medications = worker.fetch_medications
    app.extensions["gateway.api"].on_stored = worker.wake
    app.extensions["gateway.api"].carries = worker.national.carries()  # refused at the API: what 1177 cannot be sent
    if start_worker:
        worker.start()
    return app


def receipt_types(cfg: Config) -> frozenset[str]:
    """The case types that get the automatic receipt (outbound.confirmations)."""
    conf = cfg.outbound.confirmations
    return frozenset(kind for kind, text in conf.texts.items() if text) if conf.enabled else frozenset()


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

    return Worker(
        store,
        mappings=maps,
        targets=cfg.targets,
        gateway_hsa_id=cfg.gateway.hsa_id,
        national=national.build(cfg),  # the profile of national.profile
        national_settings=cfg.national,
        confirmations=cfg.outbound.confirmations,
        review_s=cfg.outbound.review_s,
        max_attachments=cfg.outbound.max_attachments,
        require_text=cfg.outbound.guard.require_text,
        # synchronous medication lookups may hold at most a quarter of the HTTP threads
        medication_slots=max(1, cfg.server.threads // 4),
        per_target=cfg.worker.per_target,
        deadline_s=cfg.worker.deadline_s,
        alerts=cfg.alerts,
        alert_channels=channels_from(cfg.alerts),
        retention=lambda: run_retention(cfg, store, clock),
        clock=clock,
        retention_hour=cfg.retention.run_at_hour,
        gateway_name=cfg.gateway.name,
        concurrency=cfg.worker.concurrency,
        poll_s=cfg.worker.poll_s,
        lease_s=cfg.worker.lease_s,
        heartbeat_s=cfg.worker.heartbeat_s,
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

    class GatewayThreadWorker(ThreadWorker):  # type: ignore[misc]
        def handle(self, conn: Any) -> Any:
            if not getattr(conn, "gateway_timeouts", False):
                # SO_RCVTIMEO/SO_SNDTIMEO live on the file descriptor, so gunicorn's own
                # setblocking(True) and the TLS wrapping keep them
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)
                conn.gateway_timeouts = True
            return super().handle(conn)

    return GatewayThreadWorker


def _gunicorn_application(cfg: Config, bind: str, run_worker: bool) -> Any:
    from gunicorn.app.base import BaseApplication

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

    class GatewayServer(BaseApplication):  # type: ignore[misc]
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
            return create_app(cfg, start_worker=run_worker and cfg.worker.enabled)

    return GatewayServer()


# -- the CLI ------------------------------------------------------------------------------------


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=config_mod.CONFIG_ENV,
    required=True,
    help=f"The YAML config file (default: ${config_mod.CONFIG_ENV}).",
)


def _load_or_exit(config_path: Path) -> Config:
    try:
        return config_mod.load(config_path)
    except GatewayError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@click.group()
@click.version_option(version(), prog_name="gateway")
def cli() -> None:
    """1177 integration gateway: receives 1177 cases over RIV-TA and forwards them to your own system."""


@cli.command()
@config_option
@click.option("--bind", default=None, help="HOST:PORT to listen on (default: server.bind from the config).")
@click.option("--worker/--no-worker", "run_worker", default=True, help="Run the delivery worker in the server processes.")
def serve(config_path: Path, bind: str | None, run_worker: bool) -> None:
    """Serve the gateway with gunicorn (the RIV-TA endpoint and, by default, the worker)."""
    cfg = _load_or_exit(config_path)
    logs.configure(cfg.logging.level, cfg.logging.format)
    try:
        maps = mapping.load(cfg.mappings.dir)
        problems = maps.problems(cfg.targets)
        if problems:
            raise ConfigError("the mappings have problems: " + " ".join(problems))
        rivta.check_contract_files()
        _check_targets(cfg)
        store = Store(cfg.database.path, busy_timeout_ms=cfg.database.busy_timeout_ms)
        applied = store.migrate()
        store.close()
    except GatewayError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if applied:
        log.info("database migrated", extra={"applied": ", ".join(applied)})
    address = bind or cfg.server.bind
    log.info("serving", extra={"bind": address, "worker": run_worker and cfg.worker.enabled, "version": version()})
    _gunicorn_application(cfg, address, run_worker).run()


@cli.command()
@config_option
def migrate(config_path: Path) -> None:
    """Create or upgrade the database schema."""
    cfg = _load_or_exit(config_path)
    try:
        store = Store(cfg.database.path, busy_timeout_ms=cfg.database.busy_timeout_ms)
        applied = store.migrate()
    except GatewayError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"database {cfg.database.path}: " + (f"applied {', '.join(applied)}" if applied else "up to date"))


@cli.command()
@config_option
def check(config_path: Path) -> None:
    """Validate the config, the mappings, the contracts and the database; exit 1 on any problem."""
    failures = 0

    def report(ok: bool, text: str) -> None:
        nonlocal failures
        failures += 0 if ok else 1
        click.echo(f"{'ok  ' if ok else 'FAIL'} {text}")

    try:
        cfg = config_mod.load(config_path)
        report(True, f"config {cfg.source}")
    except GatewayError as exc:
        report(False, f"config: {exc}")
        sys.exit(1)
    for warning in cfg.warnings():
        click.echo(f"WARN {warning}")
    if not cfg.gateway.public_url and not identity.is_loopback_host(identity.host_of(cfg.server.bind)):
        report(False, f"config: {ConfigError.code} config key 'gateway.public_url': server.bind {cfg.server.bind} is not "
                      "a loopback address, so the served WSDLs need the address the platform reaches the gateway at "
                      "(a caller's Host header is never written into them). Set gateway.public_url.")
    try:
        maps = mapping.load(cfg.mappings.dir)
        problems = maps.problems(cfg.targets)
        for problem in problems:
            report(False, f"mappings: {MappingError.code} {problem}")
        if not problems:
            report(True, f"mappings {cfg.mappings.dir}: {len(maps.units)} unit(s)")
    except GatewayError as exc:
        report(False, f"mappings: {exc}")
    import adapters

    for name, settings in cfg.targets.items():
        try:
            adapter = adapters.build(name, settings)
            problems = adapter.problems()
            adapter.close()
        except GatewayError as exc:
            problems = [str(exc)]
        for problem in problems:
            report(False, f"target {name}: {problem}")
        if not problems:
            where = getattr(settings, "base_url", None) or getattr(settings, "endpoint", None) or settings.wsdl
            report(True, f"target {name} ({settings.kind}): {where}")
    from adapters import national

    for level, text in national.check(cfg):  # national.profile and what it carries (GW086)
        if level == "WARN":
            click.echo(f"WARN {text}")
        else:
            report(level == "ok", text)
    try:
        rivta.check_contract_files()
        report(True, f"contracts: {', '.join(c.name for c in rivta.CONTRACTS.values())}")
    except GatewayError as exc:
        report(False, f"contracts: {exc}")
    try:
        store = Store(cfg.database.path, busy_timeout_ms=cfg.database.busy_timeout_ms)
        if cfg.database.path.exists():
            pending = store.pending_migrations()
            store.check_writable()
            report(True, f"database {cfg.database.path}: writable" + (f", {len(pending)} migration(s) pending (run 'gateway migrate')" if pending else ", schema up to date"))
        else:
            report(True, f"database {cfg.database.path}: will be created on first start")
    except GatewayError as exc:
        report(False, f"database: {exc}")
    if failures:
        click.echo(f"{failures} problem(s) found.", err=True)
        sys.exit(1)
    click.echo("all checks passed.")


@cli.group()
def target() -> None:
    """Pause or resume delivery to a target (a provider system under 'targets:')."""


def _target_store(config_path: Path, name: str) -> Store:
    cfg = _load_or_exit(config_path)
    if name not in cfg.targets:
        click.echo(f"error: there is no target '{name}' (known: {', '.join(sorted(cfg.targets))}).", err=True)
        sys.exit(2)
    store = Store(cfg.database.path, busy_timeout_ms=cfg.database.busy_timeout_ms)
    store.migrate()
    return store


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _who() -> str:
    return f"cli:{os.environ.get('USER') or os.environ.get('LOGNAME') or 'unknown'}"


def _emit(as_json: bool, data: Any, text: str) -> None:
    import json

    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str) if as_json else text)


@target.command("pause")
@config_option
@click.argument("name")
@json_option
def target_pause(config_path: Path, name: str, as_json: bool) -> None:
    """Stop delivering to target NAME (its rows wait; nothing is lost)."""
    store = _target_store(config_path, name)
    store.set_paused(name, True, by=_who())
    store.audit(_who(), "cli", "pause", f"target {name}")
    _emit(as_json, {"target": name, "paused": True},
          f"target {name} paused: its deliveries wait until 'gateway target resume {name}'.")


@target.command("resume")
@config_option
@click.argument("name")
@json_option
def target_resume(config_path: Path, name: str, as_json: bool) -> None:
    """Deliver to target NAME again."""
    store = _target_store(config_path, name)
    store.set_paused(name, False, by=_who())
    store.audit(_who(), "cli", "resume", f"target {name}")
    _emit(as_json, {"target": name, "paused": False}, f"target {name} resumed.")


def _open_store(config_path: Path) -> tuple[Config, Store]:
    cfg = _load_or_exit(config_path)
    store = Store(cfg.database.path, busy_timeout_ms=cfg.database.busy_timeout_ms)
    try:
        store.migrate()
    except GatewayError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    return cfg, store


@cli.command("log")
@config_option
@click.option("--case-id")
@click.option("--hsa-id")
@click.option("--target", "target_name")
@click.option("--direction", type=click.Choice(["in", "out"]))
@click.option("--status")
@click.option("--error-code")
@click.option("--event")
@click.option("--since", help="ISO time, e.g. 2026-11-26T08:00 (UTC)")
@click.option("--until", help="ISO time (UTC), exclusive")
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
def log_command(config_path: Path, case_id: str | None, hsa_id: str | None, target_name: str | None,
                direction: str | None, status: str | None, error_code: str | None, event: str | None,
                since: str | None, until: str | None, limit: int, as_json: bool) -> None:
    """Search the sync log, newest first (metadata only, like the ops view)."""
    _, store = _open_store(config_path)
    rows = store.search_log(case_id=case_id, hsa_id=hsa_id, target=target_name, direction=direction, status=status,
                            error_code=error_code, event=event, since=_iso(since), until=_iso(until), limit=limit)
    lines = [f"{r['at']}  {r['direction']:<3} {r['event']:<20} {r['status']:<8} {r['target'] or '-':<10} "
             f"{r['case_id'] or '-':<24} {r['error_code'] or '':<6} {r['detail'] or ''}" for r in rows]
    _emit(as_json, rows, "\n".join(lines) or "no rows match.")


def _iso(value: str | None) -> str | None:
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        click.echo(f"error: '{value}' is not an ISO date and time (e.g. 2026-11-26T08:00).", err=True)
        sys.exit(2)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@cli.group("case")
def case_group() -> None:
    """Look at one case."""


@case_group.command("show")
@config_option
@click.argument("case_id")
@click.option("--content", is_flag=True, help="Also the citizen's and the care side's texts (you must have that right).")
@json_option
def case_show(config_path: Path, case_id: str, content: bool, as_json: bool) -> None:
    """The whole timeline of CASE_ID in both directions, with every attempt."""
    _, store = _open_store(config_path)
    try:
        found = store.find_case(case_id)  # the gateway's id or 1177's
        detail = store.case_detail(found["case_id"] if found else case_id, with_content=content)
    except GatewayError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    if content:
        store.audit(_who(), "cli", "read content", f"case {case_id}")
    case = detail["case"]
    lines = [f"case {case['case_id']} ({case['origin']}, {case['case_type']}) to {case['receiver_hsa_id']} "
             f"→ target {case['target']} unit {case['provider_unit_code']}; provider case {case['provider_case_id'] or '-'}; "
             f"1177 case {case['national_case_id'] or '-'}; status {case['status']}, in 1177 {case['citizen_status'] or '-'}"]
    for row in detail["outbox"]:
        lines.append(f"  outbox {row['id']} {row['action']} → {row['target']}: {row['status']}"
                     + (f" ({row['last_error_code']} {row['last_error']})" if row["last_error_code"] else "")
                     + (f", BLOCKED behind dead row {row['blocked_by']}" if row.get("blocked_by") else ""))
        for a in row["attempts"]:
            lines.append(f"    attempt {a['attempt']} {a['started_at']} {a['duration_ms']} ms {a['outcome']}"
                         f" {a['status_code'] or ''} {a['error_code'] or ''} {a['detail'] or ''}".rstrip())
            came_back = a.get("response")
            if came_back:  # what the target answered (person ids masked); its body is content
                lines.append(f"      came back: HTTP {came_back.get('status') or '?'}"
                             + "".join(f"; {k}: {v}" for k, v in (came_back.get("headers") or {}).items()))
                body = (came_back.get("body") or "").strip()
                if body and not content:
                    came_back["body"] = None
                    lines.append(f"      | ({len(body)} characters of body: --content shows them)")
                elif body:
                    lines.extend("      | " + line for line in body.splitlines()[:60])
                    if came_back.get("truncated"):
                        lines.append("      | … (only the first 4 KB are kept)")
    for e in detail["events"]:
        lines.append(f"  {e['at']} {e['direction']} {e['event']} {e['status']} {e['detail'] or ''}".rstrip())
    if content and detail.get("content"):
        lines.append(f"  text: {detail['content'].get('text')}")
    _emit(as_json, detail, "\n".join(lines))


@cli.group("outbox")
def outbox_group() -> None:
    """List, replay or cancel deliveries (dead letters above all)."""


@outbox_group.command("list")
@config_option
@click.option("--status", default="dead", show_default=True,
              type=click.Choice(["pending", "in_flight", "done", "dead", "cancelled", "blocked", "all"]),
              help="'blocked': rows waiting behind a dead row of their case.")
@click.option("--target", "target_name")
@click.option("--limit", type=int, default=100, show_default=True)
@json_option
def outbox_list(config_path: Path, status: str, target_name: str | None, limit: int, as_json: bool) -> None:
    """Outbox rows, newest first (default: the dead ones)."""
    _, store = _open_store(config_path)
    rows = store.outbox_list(status=None if status == "all" else status, target=target_name, limit=limit)
    lines = [f"{r['id']:>6}  {r['status']:<9} {r['action']:<16} {r['target']:<10} {r['case_id']:<24} "
             f"attempts {r['attempts']}  {r['last_error_code'] or ''} {r['last_error'] or ''}"
             + (f"  BLOCKED behind dead row {r['blocked_by']}" if r.get("blocked_by") else "") for r in rows]
    _emit(as_json, rows, "\n".join(lines) or f"no {status} rows.")


def _outbox_action(config_path: Path, ids: tuple[int, ...], action: str, as_json: bool) -> None:
    _, store = _open_store(config_path)
    results = {}
    for outbox_id in ids:
        done = store.replay(outbox_id, by=_who()) if action == "replay" else store.cancel(outbox_id, by=_who())
        results[outbox_id] = done
        if done:
            store.audit(_who(), "cli", action, f"outbox {outbox_id}")
    failed = [i for i, ok in results.items() if not ok]
    past = {"replay": "replayed", "cancel": "cancelled"}[action]
    text = "\n".join(f"outbox {i}: {past if ok else 'not ' + past + ' (no such row in a state that allows it)'}"
                     for i, ok in results.items())
    _emit(as_json, [{"id": i, past: ok} for i, ok in results.items()], text)
    if failed:
        sys.exit(1)


@outbox_group.command("replay")
@config_option
@click.argument("ids", nargs=-1, type=int, required=True)
@json_option
def outbox_replay(config_path: Path, ids: tuple[int, ...], as_json: bool) -> None:
    """Put dead rows back in the queue (their attempts are kept; the replay is logged)."""
    _outbox_action(config_path, ids, "replay", as_json)


@outbox_group.command("cancel")
@config_option
@click.argument("ids", nargs=-1, type=int, required=True)
@json_option
def outbox_cancel(config_path: Path, ids: tuple[int, ...], as_json: bool) -> None:
    """Give up pending or dead rows for good."""
    _outbox_action(config_path, ids, "cancel", as_json)


@cli.group("certs")
def certs_group() -> None:
    """Certificates for development and tests."""


@certs_group.command("dev")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--consumer", "consumers", multiple=True,
              help="An HSA-id to make a client certificate for (repeatable). "
                   "Default: the platform's SE165565594230-1000 and the gateway's SE5566778899-GW01.")
def certs_dev(folder: Path, consumers: tuple[str, ...]) -> None:
    """Make a local test CA, a server certificate for localhost and client certificates whose
    SERIALNUMBER is an HSA-id, in FOLDER. For development and tests only."""
    import devcerts

    made = devcerts.create(folder, list(consumers) or [devcerts.PLATFORM_HSA_ID, devcerts.GATEWAY_HSA_ID])
    for name, issued in made.items():
        click.echo(f"{name:<22} {issued.cert}  (key {issued.key})")
    click.echo("For development only: the CA's key is next to it.")


@cli.group("ops")
def ops_group() -> None:
    """The ops view's users."""


@ops_group.command("hash-password")
@click.password_option()
def ops_hash_password(password: str) -> None:
    """Print the hash to put in ops.users[].password_hash (the password itself is never stored)."""
    from werkzeug.security import generate_password_hash

    click.echo(generate_password_hash(password))


@ops_group.command("unlock")
@config_option
@click.argument("user")
@click.option("--address", help="Lift the lock on this address instead (an address that failed too often).")
def ops_unlock(config_path: Path, user: str, address: str | None) -> None:
    """Lift the sign-in lock of USER (after too many failed sign-ins); audited."""
    import ops.auth

    _, store = _open_store(config_path)
    user_key, address_key = ops.auth.sign_in_keys(user, address)
    key = address_key if address else user_key
    lifted = store.clear_sign_in_failures(key)
    store.audit(_who(), "cli", "sign_in_unlocked", key, "lock lifted" if lifted else "nothing to lift")
    click.echo(f"{key}: {'lock lifted, failures forgotten' if lifted else 'was not locked (no failed sign-ins)'}.")


@cli.command("retention")
@config_option
@json_option
def retention_command(config_path: Path, as_json: bool) -> None:
    """Purge old case content, files and sync-log detail now (as the daily job does)."""
    cfg, store = _open_store(config_path)
    removed = run_retention(cfg, store, SYSTEM)
    _emit(as_json, removed, ", ".join(f"{k} {v}" for k, v in removed.items()))


def retention_cutoffs(cfg: Config, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The instants before which case content and sync-log detail are purged: the start
    of the Swedish day ``content_years`` (``log_detail_years``) calendar years before
    today's Swedish date (so 29 February counts on to 1 March)."""
    today = swedish_date(now)
    return (start_of_swedish_day(years_before(today, cfg.retention.content_years)),
            start_of_swedish_day(years_before(today, cfg.retention.log_detail_years)))


def run_retention(cfg: Config, store: Store, clock: Clock = SYSTEM) -> dict[str, int]:
    now = clock.instant()
    content_before, log_before = retention_cutoffs(cfg, now)
    return store.purge(content_before=content_before, log_before=log_before, now=now)


@cli.group()
def message() -> None:
    """Messages to citizens: cancel one during its review window."""


@message.command("cancel")
@config_option
@click.argument("message_id")
def message_cancel(config_path: Path, message_id: str) -> None:
    """Cancel MESSAGE_ID before it is sent (a message in the citizen's inbox cannot be recalled)."""
    cfg = _load_or_exit(config_path)
    store = Store(cfg.database.path, busy_timeout_ms=cfg.database.busy_timeout_ms)
    try:
        store.migrate()
        store.cancel_message(message_id, by=f"cli:{os.environ.get('USER', 'unknown')}")
    except GatewayError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"message {message_id} cancelled; it will not be sent.")


@cli.group()
def mappings() -> None:
    """Check the mapping files and try them on a case, without sending anything."""


@mappings.command("check")
@config_option
def mappings_check(config_path: Path) -> None:
    """Validate every mapping file against the config; exit 1 on any problem."""
    cfg = _load_or_exit(config_path)
    try:
        maps = mapping.load(cfg.mappings.dir)
    except GatewayError as exc:
        click.echo(f"FAIL {exc}")
        sys.exit(1)
    problems = maps.problems(cfg.targets)
    for problem in problems:
        click.echo(f"FAIL {MappingError.code} {problem}")
    if problems:
        click.echo(f"{len(problems)} problem(s) in {cfg.mappings.dir}.", err=True)
        sys.exit(1)
    click.echo(
        f"ok   {cfg.mappings.dir}: {len(maps.units)} unit(s), code tables for "
        f"{len(set(maps.codes.case_types) | set(maps.codes.statuses))} target(s), field maps for {', '.join(sorted(maps.fieldmaps))}"
    )


@mappings.command("fields")
@json_option
def mappings_fields(as_json: bool) -> None:
    """The fields a field map can use: path, type, an example, and when it is present.

    Derived from the gateway's own model of a case (never a list kept by hand). The items
    of a list are written ``case.attachments[].file_name``: inside ``each: case.attachments``
    a field map reads them as ``item.file_name``."""
    import json

    rows = [{"path": f.path, "type": f.type, "example": _example(f.example), "when": f.when,
             **({"values": list(f.values)} if f.values else {})} for f in mapping.vocabulary()]
    shown = [(r["path"], r["type"], "" if r["example"] is None else
              (r["example"] if isinstance(r["example"], str) else json.dumps(r["example"])),
              (r["when"] or "always") + (f" (one of {', '.join(r['values'])})" if r.get("values") else "")) for r in rows]
    shown = [(p, t, e if len(e) <= 40 else e[:39] + "…", w) for p, t, e, w in shown]
    widths = [max(len(row[i]) for row in [("path", "type", "example", ""), *shown]) for i in range(3)]
    lines = [f"{'path':<{widths[0]}}  {'type':<{widths[1]}}  {'example':<{widths[2]}}  when present"]
    lines += [f"{p:<{widths[0]}}  {t:<{widths[1]}}  {e:<{widths[2]}}  {w}" for p, t, e, w in shown]
    lines.append("Inside 'each: case.attachments' (any list), a field map reads the items' fields as item.file_name, …")
    _emit(as_json, rows, "\n".join(lines))


def _example(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


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
    import dataclasses

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


@mappings.command("try")
@config_option
@click.argument("case_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target", "target_name", required=True, help="The target (under 'targets:') to build the call for.")
@click.option("--sample", type=click.Choice(list(SAMPLES)), default=None,
              help="A built-in sample case: " + "; ".join(f"{k}: {v}" for k, v in SAMPLES.items())
              + " (default: complaint). It is sent to a unit of the target.")
@click.option("--file", "file_option", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your own case: a ProcessCase request (a whole SOAP envelope or just the element).")
@click.option("--full", is_flag=True, help="Print long values (attachments) in full.")
def mappings_try(config_path: Path, case_file: Path | None, target_name: str, sample: str | None,
                 file_option: Path | None, full: bool) -> None:
    """Print exactly what delivering a case to a target would send, without sending it.

    The case is a built-in sample (--sample, default complaint) or your own file (--file
    CASE.xml, or CASE_FILE)."""
    import adapters
    from mapping import delivery_source

    cfg = _load_or_exit(config_path)
    given = [x for x in (case_file, file_option, sample) if x is not None]
    if len(given) > 1:
        click.echo("error: give one case: --sample NAME, --file CASE.xml or CASE_FILE.", err=True)
        sys.exit(2)
    try:
        maps = mapping.load(cfg.mappings.dir)
        if target_name not in cfg.targets:
            raise ConfigError(f"there is no target '{target_name}' under 'targets'.", field=f"targets.{target_name}")
        today = SYSTEM.day()
        own = case_file or file_option
        path = own or sample_file(cfg, sample or "complaint")
        case = inbound.case_from_xml(path.read_bytes(), rivta.Schemas())
        if own is None:
            case, note = _readdressed(case, maps, target_name, today)
            click.echo(f"sample '{sample or 'complaint'}' ({path}): {SAMPLES[sample or 'complaint']}, "
                       f"{case.case_type.value} to {case.receiver.hsa_id}", err=True)
            if note:
                click.echo(f"note: {note}", err=True)
        route = maps.units.route(case.receiver.hsa_id, today)
        if route is None:
            raise GatewayError(f"no unit in {mapping.UNITS_FILE} routes {case.receiver.hsa_id} on {today}.")
        if route.target != target_name:
            click.echo(f"note: {mapping.UNITS_FILE} routes {case.receiver.hsa_id} to '{route.target}', not '{target_name}'.", err=True)
        source = delivery_source(
            case=case, route={"unit_code": route.unit.code, "target": target_name, "hsa_id": route.unit.hsa_id},
            provider_case_id=None, idempotency_key="<idempotency-key>", gateway_hsa_id=cfg.gateway.hsa_id,
        )
        body = maps.fieldmap(target_name).build("deliver_case", source)
        if not full:
            body = _shorten(body)
        adapter = adapters.build(target_name, cfg.targets[target_name])
        request = adapters.Request(body=body, idempotency_key="<idempotency-key>", params={"case_id": case.case_id, "unit_code": route.unit.code})
        click.echo(adapter.preview("deliver_case", request))
    except GatewayError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@cli.command()
@click.option("--once", is_flag=True, help="Exit when the demo cases are done: 0 if every one completed its loop.")
@click.option("--port-base", type=int, default=8080, show_default=True,
              help="The gateway on N, demo_rest on N+1, demo_soap on N+2, the 1177 simulator on N+3.")
@click.option("--free-ports", is_flag=True, help="Use any free ports instead.")
@click.option("--timeout", type=float, default=90, show_default=True, help="Seconds the demo cases may take.")
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the sandbox's config, database and logs (default: data/sandbox).")
@click.option("--tls", is_flag=True, help="Mutual TLS between the 1177 side and the gateway, both ways.")
@click.option("--national-profile", default=None, help="The version of 1177's contracts (national.profile), e.g. mvk-inbox-2.0.")
def sandbox(once: bool, port_base: int, free_ports: bool, timeout: float, data: Path | None, tls: bool,
            national_profile: str | None) -> None:
    """Run the gateway with a 1177 simulator and demo provider systems on loopback, and
    show demo cases going the whole way round (Ctrl-C stops everything)."""
    root = Path(__file__).resolve().parent
    if not (root / "sandbox" / "demo.py").is_file():
        click.echo("error: the sandbox is not part of this installation (it ships with the source).", err=True)
        sys.exit(2)
    argv = [sys.executable, "-m", "sandbox.demo", "--port-base", str(port_base), "--timeout", str(timeout)]
    argv += ["--once"] if once else []
    argv += ["--free-ports"] if free_ports else []
    argv += ["--data", str(data.resolve())] if data else []
    argv += ["--tls"] if tls else []
    argv += ["--national-profile", national_profile] if national_profile else []
    os.chdir(root)
    os.execv(sys.executable, argv)  # the sandbox is a program of its own, never imported here


@cli.command("send-test-case")
@config_option
@click.option("--target", "target_name", required=True, help="The target (under 'targets:') to send the test case to.")
@click.option("--file", "case_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A ProcessCase request to send (default: a built-in test complaint for a unit of the target).")
def send_test_case(config_path: Path, target_name: str, case_file: Path | None) -> None:
    """Send one test case to a target through the real delivery path, and report each step.

    Nothing is written to the gateway's database: the case goes through a worker on a
    throw-away store, so an integration engineer can check a configuration before going live.
    """
    import tempfile

    cfg = _load_or_exit(config_path)
    step = _stepper()
    try:
        maps = mapping.load(cfg.mappings.dir)
        if target_name not in cfg.targets:
            raise ConfigError(f"there is no target '{target_name}' under 'targets'.", field=f"targets.{target_name}")
        step(f"config {cfg.source}, target {target_name} ({cfg.targets[target_name].kind})")
        today = SYSTEM.day()
        if case_file is not None:
            case = inbound.case_from_xml(case_file.read_bytes(), rivta.Schemas())
            step(f"case {case.case_id} read from {case_file}")
        else:
            unit = next((u for u in maps.units.rows if u.target == target_name and u.valid_on(today)), None)
            if unit is None:
                raise GatewayError(f"no unit in {mapping.UNITS_FILE} is routed to '{target_name}'; give --file.")
            case = _test_case(unit.hsa_id, unit.patient_board)
            step(f"built-in test case {case.case_id}: a complaint to {unit.hsa_id} ({unit.code})")
        rules.check_case(case, today=today)
        route = maps.units.route(case.receiver.hsa_id, today)
        if route is None:
            raise GatewayError(f"no unit in {mapping.UNITS_FILE} routes {case.receiver.hsa_id}.")
        step(f"1177's rules passed; routed to unit code {route.unit.code}" + (" (default route)" if route.by_default else ""))
        with tempfile.TemporaryDirectory(prefix="gateway-test-case-") as folder:
            store = Store(Path(folder) / "test.db")
            store.migrate()
            store.accept_case(case, target=target_name, provider_unit_code=route.unit.code, correlation_id="send-test-case")
            worker = Worker(store, mappings=maps, targets={target_name: cfg.targets[target_name]},
                            gateway_hsa_id=cfg.gateway.hsa_id, clock=SYSTEM)
            job = store.claim("send-test-case", limit=1, lease_s=600)[0]
            body = worker.build_request(job).body
            step(f"field map {mapping.FIELDMAPS_DIR}/{target_name}.yaml built the body ({len(body)} top-level fields)")
            worker.deliver(job)
            row = store.outbox_rows(case.case_id)[0]
            attempt = store.attempts_of(row["id"])[-1]
            case_row = store.case_row(case.case_id) or {}
            store.close()
        if row["status"] == "done":
            step(f"delivered in {attempt['duration_ms']:.0f} ms, status {attempt['status_code']}"
                 + (f", the provider's case id {case_row.get('provider_case_id')}" if case_row.get("provider_case_id") else ""))
            click.echo("the target took the test case.")
            return
        step(f"NOT delivered: {attempt['error_code']} {attempt['detail']}", ok=False)
        click.echo("a real case would be " + ("retried later." if row["status"] == "pending" else "a dead letter."), err=True)
        sys.exit(1)
    except GatewayError as exc:
        step(str(exc), ok=False)
        sys.exit(1)


def _stepper() -> Any:
    counter = iter(range(1, 100))

    def step(text: str, ok: bool = True) -> None:
        click.echo(f"{next(counter)}. {'ok  ' if ok else 'FAIL'} {text}")

    return step


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
        attachments=(Attachment("test.pdf", "application/pdf", b"%PDF-1.4\n%test\n%%EOF\n"),),
    )


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


def main() -> None:
    cli(auto_envvar_prefix=None)


if __name__ == "__main__":
    main()
