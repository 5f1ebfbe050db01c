"""The composition root: load the config, build the Flask app, the worker and their parts.

Role: the only module that knows every other one. ``create_app(config)`` wires the
store, mappings, contracts and blueprints into a Flask app (Flask's application-factory
pattern); ``build_worker`` the worker and its adapters; ``run_worker`` runs the worker
alone, as a process (``gateway worker``); ``serve`` runs gunicorn, whose master also keeps
``worker.processes`` worker processes running beside the server processes (a
``WorkerProcess`` each; none with ``run_worker=False``). The library calls the ``gateway``
command (``cli.py``, a thin click layer) is made of live here too: ``check``, ``migrate``,
``open_store``, ``preview_delivery``, ``send_test_case``, ``run_retention``.

May import: everything.

Invariants: a wrong config, mapping or contract stops the start with a ``GW0xx``
message before any port is opened; ``serve`` never uses Flask's development server. A
wrong mapping file on SIGHUP stops nothing: the master checks the files before gunicorn
replaces a worker process, and keeps the mappings in force when they fail (GW073, GW074).
The worker processes are forked by the master only after the config and mappings are
loaded; one that dies unasked is logged (GW055) and replaced, and its successor takes
over what it held at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import signal
import socket
import sys
import time
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
from errors import ConfigError, GatewayError, MappingError, WorkerProcessDied
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
    mappings: mapping.Holder | None = None, worker_name: str | None = None,
) -> Flask:
    """Build the gateway's WSGI app from a ``Config`` (or the path of a config file).

    The store is migrated, mappings and contracts are loaded and checked; any problem
    raises a ``GatewayError`` here, before the app can serve a request. Every part reads the
    time from ``clock`` (UTC instants, the Swedish date of the 1177 rules). The app and its
    worker use ``mappings.current`` (loaded here if no holder is given) for their whole life:
    a reload replaces the server processes (``_gunicorn_application``), never a part of one.

    ``start_worker``: run the worker's threads in this process (tests, one-process use);
    intake then wakes it directly. Otherwise the worker runs in a process of its own
    (``run_worker``): intake wakes it through the store (``Store.notify_work``), and
    ``worker_name``, when given, is the name that worker beats under, which readiness
    (``/health/ready``) checks.
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
    # built here even when it runs elsewhere: its adapters serve GetMedicationList, which 1177 waits for
    worker = build_worker(cfg, store, maps, clock=clock)
    app.extensions["gateway.worker"] = worker
    view = app.extensions["gateway.ops"]
    if start_worker:
        wake = view.wake_worker = worker.wake
        view.worker_name = worker.name
    else:
        # PostgreSQL: the intake transaction's NOTIFY already woke every instance at its commit
        wake = store.notify_work if store.pg is None else _nothing
        view.wake_worker, view.worker_name = store.notify_work, worker_name
    app.extensions["gateway.intake"].on_stored = wake
    app.extensions["gateway.intake"].medications = worker.fetch_medications
    app.extensions["gateway.api"].on_stored = wake
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


def _nothing() -> None:
    pass


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
    one with ``mappings.current``, and (``run_worker``) the delivery worker in
    ``worker.processes`` more processes, which the master supervises (``WorkerProcess``).
    On SIGHUP the master reloads the mappings first
    (``reload_mappings``) and only when they are sound does gunicorn replace its workers
    (new ones start, old ones finish what they took): without that, a broken file would
    make every new worker fail to boot, and gunicorn would stop the whole gateway."""
    from gunicorn.app.base import BaseApplication
    from gunicorn.arbiter import Arbiter

    with_worker = run_worker and cfg.worker.enabled
    # the name the worker process beats under for readiness, whichever process it is now
    beats_as = f"serve@{socket.gethostname()}:{os.getpid()}" if with_worker else None

    class GatewayArbiter(Arbiter):
        """gunicorn's master, which also keeps the delivery worker running: ``worker.processes``
        processes of its own (``run_worker``; one ``WorkerProcess`` each), forked from the
        master after the config and mappings are loaded, each restarted (logged as an error,
        GW055) when it dies, replaced on a mappings reload and stopped with the server."""

        def __init__(self, app: Any):
            super().__init__(app)
            self.deliveries = [WorkerProcess(cfg, mappings, beats_as, self._child_setup)
                               for _ in range(cfg.worker.processes if with_worker else 0)]

        def _child_setup(self) -> None:
            # the forked worker is no server: give back what it inherited of the master
            for listener in self.LISTENERS:
                listener.close()
            for sibling in self.WORKERS.values():
                sibling.tmp.close()

        def handle_hup(self) -> None:
            if reload_mappings(mappings):
                super().handle_hup()
                for delivery in self.deliveries:
                    delivery.replace()

        def manage_workers(self) -> None:
            super().manage_workers()
            for delivery in self.deliveries:
                delivery.keep_running()

        def reap_workers(self) -> None:
            for delivery in self.deliveries:  # first, by pid: gunicorn's waitpid(-1) would take it as unknown
                delivery.reap()
            super().reap_workers()

        def stop(self, graceful: bool = True) -> None:
            for delivery in self.deliveries:
                delivery.signal_stop()
            super().stop(graceful)
            for delivery in self.deliveries:
                delivery.wait_stopped(self.cfg.graceful_timeout)

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
            app.extensions["gateway.worker"].stop()  # its adapters (GetMedicationList) are closed
            app.extensions["gateway.store"].close()

    class GatewayServer(BaseApplication):
        """gunicorn running ``create_app``; the app is built in each server process."""

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
            return create_app(cfg, mappings=mappings, worker_name=beats_as)

        def run(self) -> None:  # BaseApplication.run with the arbiter that checks before a reload
            try:
                GatewayArbiter(self).run()
            except RuntimeError as exc:
                print(f"\nError: {exc}\n", file=sys.stderr)
                sys.stderr.flush()
                sys.exit(1)

    return GatewayServer()


def _exit_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exit code {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else f"status {status}"


class WorkerProcess:
    """The delivery worker as a child of ``gateway serve``'s master (``GatewayArbiter``).

    The child is forked from the master (so it has the master's mappings in force) and
    runs ``run_worker``, named ``worker@<host>:<its pid>:process`` and beating also as
    ``beats_as``, the name the server processes' readiness reads. A child that dies
    unasked is logged (GW055) and a new one started; the new one first marks the dead
    one's heartbeat as gone, so what it held is requeued at once (``Worker.take_over``).
    A child that dies again and again within a few seconds of its start is restarted
    after a growing pause (up to 30 s), not in a tight loop. ``replace`` (a mappings
    reload) starts a new child and lets the old one finish what it holds."""

    QUICK_DEATH_S = 5.0

    def __init__(self, cfg: Config, mappings: mapping.Holder, beats_as: str | None, child_setup: Any):
        self.cfg = cfg
        self.mappings = mappings
        self.beats_as = beats_as
        self.child_setup = child_setup
        self.pid = 0
        self.started = 0.0
        self.retiring: set[int] = set()
        self.stopping = False
        self.gone: str | None = None  # the name of a child that died unasked, for its successor
        self.quick_deaths = 0
        self.not_before = 0.0
        self.master_pid = os.getpid()

    @staticmethod
    def name_of(pid: int) -> str:
        return f"worker@{socket.gethostname()}:{pid}:process"

    def keep_running(self) -> None:
        """Start the child if there is none (and it is not stopping, or pausing after deaths)."""
        if self.pid or self.stopping or time.monotonic() < self.not_before:
            return
        self.spawn()

    def spawn(self) -> None:
        predecessor, self.gone = self.gone, None
        pid = os.fork()
        if pid:
            self.pid, self.started = pid, time.monotonic()
            log.info("worker process started", extra={"worker_pid": pid, "worker": self.name_of(pid),
                                                       "takes_over": predecessor})
            return
        status = 0
        try:  # the child: never returns into gunicorn's master loop
            for number in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGCHLD,
                           signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH):
                signal.signal(number, signal.SIG_DFL)
            self.child_setup()
            run_worker(self.cfg, self.mappings, name=self.name_of(os.getpid()), beats_as=self.beats_as,
                       predecessor=predecessor, parent_pid=self.master_pid)
        except BaseException:
            log.exception("worker process failed")
            status = 1
        finally:
            logging.shutdown()
            os._exit(status)

    def reap(self) -> None:
        """Collect children that ended: the current one (restarted by ``keep_running``) and
        retired ones (their end was asked for)."""
        for pid in self._children():
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # already collected by gunicorn's waitpid(-1): how is unknown
                done, status = pid, -1
            if not done:
                continue
            how = _exit_status(status) if status != -1 else "ended"
            if pid in self.retiring:
                self.retiring.discard(pid)
                log.info("worker process ended", extra={"worker_pid": pid, "how": how})
                continue
            self.pid = 0
            if self.stopping:
                log.info("worker process ended", extra={"worker_pid": pid, "how": how})
                continue
            lived = time.monotonic() - self.started
            self.quick_deaths = self.quick_deaths + 1 if lived < self.QUICK_DEATH_S else 0
            pause = min(30.0, 2.0 ** (self.quick_deaths - 1)) if self.quick_deaths > 1 else 0.0
            self.not_before = time.monotonic() + pause
            self.gone = self.name_of(pid)
            log.error("the worker process died; starting a new one, which takes over what it held",
                      extra={"error_code": WorkerProcessDied.code, "worker_pid": pid, "how": how,
                             "lived_s": round(lived, 1), "restart_in_s": pause})

    def replace(self) -> None:
        """A new child with the mappings now in force; the old one stops gracefully."""
        if self.stopping:
            return
        if self.pid:
            old, self.pid = self.pid, 0
            self.retiring.add(old)
            self._kill(old, signal.SIGTERM)
        self.not_before = 0.0
        self.spawn()

    def signal_stop(self) -> None:
        self.stopping = True
        for pid in self._children():
            self._kill(pid, signal.SIGTERM)

    def wait_stopped(self, timeout_s: float) -> None:
        """Wait for every child to end, SIGKILL after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while (self.pid or self.retiring) and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.05)
        for pid in self._children():
            log.error("worker process did not stop in time: killed", extra={"worker_pid": pid})
            self._kill(pid, signal.SIGKILL)
        self.reap()

    def _children(self) -> list[int]:
        """The current child (if any) and the retiring ones."""
        return [self.pid, *self.retiring] if self.pid else list(self.retiring)

    @staticmethod
    def _kill(pid: int, number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, number)


def prepare_worker(cfg: Config) -> mapping.Holder:
    """Everything ``gateway worker`` checks before it starts: the mappings, every target's
    adapter and the schema (migrated); the mappings to deliver with. Raises a
    ``GatewayError`` that says what to fix."""
    holder = serving_mappings(cfg)
    _check_targets(cfg)
    applied = migrate(cfg)
    if applied:
        log.info("database migrated", extra={"applied": ", ".join(applied)})
    return holder


def run_worker(cfg: Config, mappings: mapping.Holder | None = None, *, name: str | None = None,
               beats_as: str | None = None, predecessor: str | None = None, parent_pid: int | None = None,
               clock: Clock = SYSTEM) -> None:
    """Run the worker alone (no HTTP) until SIGTERM or SIGINT: claims and deliveries, the
    heartbeat, scheduled jobs (polls, alerts, retention) and lease recovery. Stopping is
    graceful: no more claims, deliveries in flight finish (``Worker.stop``).

    ``gateway worker`` runs it in the foreground (SIGHUP: the mappings are reloaded and,
    when sound, a new worker takes over from the old one inside the process); ``gateway
    serve``'s master runs it in a child process (``WorkerProcess``), with ``name`` (its
    own, by pid), ``beats_as`` (the name readiness reads), ``predecessor`` (a worker that
    died, whose rows to take over now) and ``parent_pid`` (it stops when the master is gone).
    Must be called from the main thread (it installs the signal handlers)."""
    import threading

    logs.configure(cfg.logging.level, cfg.logging.format)
    holder = mappings or serving_mappings(cfg)
    received: list[int] = []
    signalled = threading.Event()

    def on_signal(number: int, _frame: Any) -> None:
        received.append(number)
        signalled.set()

    handled = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGHUP] if parent_pid is None else [])
    previous = {number: signal.signal(number, on_signal) for number in handled}
    if parent_pid is not None:  # the master replaces this process on a reload: nothing to do here
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    store = store_of(cfg)

    def started(predecessor: str | None) -> Worker:
        worker = build_worker(cfg, store, holder.current, clock=clock)
        if name is not None:
            worker.name = name
        worker.beats_as = beats_as
        if predecessor is not None:
            worker.take_over(predecessor)
        worker.start()
        log.info("worker running", extra={"worker": worker.name, "pid": os.getpid(), "database": store.where,
                                          "mappings": holder.current.digest})
        return worker

    worker: Worker | None = None
    try:
        store.migrate()
        worker = started(predecessor)
        while True:
            signalled.wait(1.0)
            if parent_pid is not None and os.getppid() != parent_pid:
                log.error("the gateway serve process is gone: the worker stops", extra={"worker": worker.name})
                return
            if not received:
                continue
            stop = any(number != signal.SIGHUP for number in received)
            received.clear()
            signalled.clear()
            if stop:
                return
            if reload_mappings(holder):  # else the mappings in force stay, and so does the worker
                worker.stop()
                worker = None
                worker = started(None)
    finally:
        if worker is not None:
            worker.stop()
        store.close()
        for number, handler in previous.items():
            signal.signal(number, handler)


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
    ``prepare_serve`` gave (loaded here if none), with the worker as a process of its own
    beside the server processes (unless ``run_worker`` is False or ``worker.enabled`` is
    off). SIGHUP reloads the mappings (``reload_mappings``) and replaces both kinds of process."""
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
