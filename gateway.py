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
import inbound
import logs
import mapping
import ops
import rivta
import rules
from config import Config
from errors import ConfigError, GatewayError
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


def create_app(config: Config | str | os.PathLike[str] | None = None, *, start_worker: bool = False) -> Flask:
    """Build the gateway's WSGI app from a ``Config`` (or the path of a config file).

    The store is migrated, mappings and contracts are loaded and checked; any problem
    raises a ``GatewayError`` here, before the app can serve a request.
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
            version=version(),
            public_url=cfg.gateway.public_url,
            ping_configuration={
                "name": cfg.gateway.name,
                "hsaId": cfg.gateway.hsa_id,
                "contracts": ", ".join(c.name for c in rivta.CONTRACTS.values()),
                "units": str(len(maps.units)),
                "targets": ", ".join(sorted(cfg.targets)) or "none",
                "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "python": sys.version.split()[0],
            },
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
            max_attachment_bytes=cfg.outbound.max_attachment_bytes,
            version=version(),
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
        ),
    )
    worker = build_worker(cfg, store, maps)
    app.extensions["gateway.worker"] = worker
    app.extensions["gateway.intake"].on_stored = worker.wake
    app.extensions["gateway.intake"].medications = worker.fetch_medications
    app.extensions["gateway.api"].on_stored = worker.wake
    if start_worker:
        worker.start()
    return app


def build_worker(cfg: Config, store: Store, maps: mapping.Mappings) -> Worker:
    from adapters.national import NationalAdapter

    return Worker(
        store,
        mappings=maps,
        targets=cfg.targets,
        gateway_hsa_id=cfg.gateway.hsa_id,
        national=NationalAdapter(cfg.national, source_system=cfg.gateway.hsa_id),
        national_settings=cfg.national,
        confirmations=cfg.outbound.confirmations,
        review_s=cfg.outbound.review_s,
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


def _gunicorn_application(cfg: Config, bind: str, run_worker: bool) -> Any:
    from gunicorn.app.base import BaseApplication

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
                "worker_class": "gthread",
                "timeout": cfg.server.timeout_s,
                "graceful_timeout": 20,
                "worker_exit": worker_exit,
                "proc_name": "gateway-1177",
                "accesslog": None,
                "control_socket_disable": True,
                "loglevel": cfg.logging.level.lower(),
            }
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
    try:
        maps = mapping.load(cfg.mappings.dir)
        problems = maps.problems(cfg.targets)
        for problem in problems:
            report(False, f"mappings: {problem}")
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


@target.command("pause")
@config_option
@click.argument("name")
def target_pause(config_path: Path, name: str) -> None:
    """Stop delivering to target NAME (its rows wait; nothing is lost)."""
    _target_store(config_path, name).set_paused(name, True, by=f"cli:{os.environ.get('USER', 'unknown')}")
    click.echo(f"target {name} paused: its deliveries wait until 'gateway target resume {name}'.")


@target.command("resume")
@config_option
@click.argument("name")
def target_resume(config_path: Path, name: str) -> None:
    """Deliver to target NAME again."""
    _target_store(config_path, name).set_paused(name, False, by=f"cli:{os.environ.get('USER', 'unknown')}")
    click.echo(f"target {name} resumed.")


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
        click.echo(f"FAIL {problem}")
    if problems:
        click.echo(f"{len(problems)} problem(s) in {cfg.mappings.dir}.", err=True)
        sys.exit(1)
    click.echo(
        f"ok   {cfg.mappings.dir}: {len(maps.units)} unit(s), code tables for "
        f"{len(set(maps.codes.case_types) | set(maps.codes.statuses))} target(s), field maps for {', '.join(sorted(maps.fieldmaps))}"
    )


@mappings.command("try")
@config_option
@click.argument("case_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target", "target_name", required=True, help="The target (under 'targets:') to build the call for.")
@click.option("--full", is_flag=True, help="Print long values (attachments) in full.")
def mappings_try(config_path: Path, case_file: Path, target_name: str, full: bool) -> None:
    """Print exactly what delivering CASE_FILE (a ProcessCase request) to a target would send."""
    import adapters
    from mapping import delivery_source

    cfg = _load_or_exit(config_path)
    try:
        maps = mapping.load(cfg.mappings.dir)
        if target_name not in cfg.targets:
            raise ConfigError(f"there is no target '{target_name}' under 'targets'.", field=f"targets.{target_name}")
        case = inbound.case_from_xml(case_file.read_bytes(), rivta.Schemas())
        today = dt.date.today()
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
def sandbox(once: bool, port_base: int, free_ports: bool, timeout: float, data: Path | None) -> None:
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
        today = dt.date.today()
        if case_file is not None:
            case = inbound.case_from_xml(case_file.read_bytes(), rivta.Schemas())
            step(f"case {case.case_id} read from {case_file}")
        else:
            unit = next((u for u in maps.units.rows if u.target == target_name and u.valid_on(today)), None)
            if unit is None:
                raise GatewayError(f"no unit in {mapping.UNITS_FILE} is routed to '{target_name}'; give --file.")
            case = _test_case(unit.hsa_id, unit.patient_board)
            step(f"built-in test case {case.case_id}: a complaint to {unit.hsa_id} ({unit.code})")
        rules.check_case(case, now=dt.datetime.now(inbound.SWEDEN))
        route = maps.units.route(case.receiver.hsa_id, today)
        if route is None:
            raise GatewayError(f"no unit in {mapping.UNITS_FILE} routes {case.receiver.hsa_id}.")
        step(f"1177's rules passed; routed to unit code {route.unit.code}" + (" (default route)" if route.by_default else ""))
        with tempfile.TemporaryDirectory(prefix="gateway-test-case-") as folder:
            store = Store(Path(folder) / "test.db")
            store.migrate()
            store.accept_case(case, target=target_name, provider_unit_code=route.unit.code, correlation_id="send-test-case")
            worker = Worker(store, mappings=maps, targets={target_name: cfg.targets[target_name]},
                            gateway_hsa_id=cfg.gateway.hsa_id)
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
    now = dt.datetime.now(inbound.SWEDEN).replace(microsecond=0)
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
