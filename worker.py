"""The worker: the only part of the gateway that calls adapters.

Role: deliver the outbox. A dispatcher thread claims due rows (``Store.claim``, a
conditional update, so several worker processes never deliver the same row at once) and
hands each to a thread pool of ``worker.concurrency`` deliveries; each delivery builds
the body with the target's field map, calls the target's adapter with the row's
idempotency key, and records the attempt: delivered, retry later (exponential backoff
with jitter and a ceiling, per target) or dead. APScheduler runs the periodic jobs:
the heartbeat, the due-retry tick and lease recovery. New work is dispatched at once
(``wake``), not on the next tick.

May import: ``store``, ``mapping``, ``adapters``, ``updates``, ``model``, ``errors``.

Invariants:
- Nothing here raises into the scheduler or kills the dispatcher: every failure of a
  delivery is recorded on its row; a failure of the store is logged and retried.
- A row is finished only by the worker that holds its claim (``claimed_by``); a row
  whose worker died returns to the queue when its lease runs out.
- Order per case is the store's claim rule: a case's later row waits for its earlier
  ones; other cases go on.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from apscheduler.schedulers.background import BackgroundScheduler

import adapters
import updates
from adapters.base import DELIVER_CASE, DELIVER_MESSAGE, Answer, Request
from errors import (
    AttemptsExhausted,
    BadJson,
    BadTargetAnswer,
    ConfigError,
    ContractError,
    DeliveryError,
    Forbidden,
    InternalError,
    GatewayError,
    MappingError,
    NotFound,
    StoreError,
    TargetFailed,
    TargetUnavailable,
)
from mapping import Mappings, delivery_source
from model import Case, CaseType, Medication, Message, MessageKind, PersonId
from store import COMPLETIONS, NATIONAL_TARGET, Job, Store, parse_ts, receipt_id

if TYPE_CHECKING:  # handed in by the composition root
    from adapters.alerts import Alert
    from adapters.national.base import NationalProfile
    from clock import Clock
    from config import AlertsSection, ConfirmationsSection, NationalSection, TargetSection

log = logging.getLogger("gateway.worker")


class SyncCalls:
    """Calls a caller waits for (1177's GetMedicationList): at most ``slots`` at once, each
    given up after its total deadline. A call past its deadline keeps its slot until the
    provider lets go, so a hanging provider can hold at most ``slots`` threads; the next
    caller is told at once (GW061) instead of waiting."""

    def __init__(self, slots: int):
        self.slots = max(1, slots)
        self._free = threading.BoundedSemaphore(self.slots)
        self._pool = ThreadPoolExecutor(self.slots, thread_name_prefix="sync-call")

    def call(self, fn: Callable[[], Any], deadline_s: float, *, what: str) -> Any:
        if not self._free.acquire(blocking=False):
            raise TargetFailed(f"{what} is busy: {self.slots} call(s) to it are still waiting for an answer.",
                               hint="1177 may ask again in a moment; check that the provider system answers.")
        future = self._pool.submit(fn)
        future.add_done_callback(lambda _f: self._free.release())
        try:
            return future.result(timeout=deadline_s)
        except FutureTimeout:
            raise TargetUnavailable(f"{what} did not answer in time (within {deadline_s:g} s).") from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class TargetCalls:
    """The delivery calls of the worker, per target: at most ``per_target`` at once for one
    target (a slow target never holds every slot; the dispatcher claims nothing more for a
    target at its limit), each given up after a total deadline (connect, send, the whole
    answer), whatever the socket timeouts let a dripping peer do. A call past its deadline
    keeps its place until the peer lets go, and its row is not claimed again meanwhile."""

    def __init__(self, per_target: int, deadline_s: float):
        self.per_target = max(1, per_target)
        self.deadline_s = deadline_s
        self._lock = threading.Lock()
        self._running: dict[int, tuple[str, float]] = {}  # outbox id → (target, deadline on the monotonic clock)
        self._pool = ThreadPoolExecutor(64, thread_name_prefix="call")

    def hold(self, target: str, row_id: int) -> None:
        """A row of ``target`` is claimed: it counts against the target's share until done."""
        with self._lock:
            self._running[row_id] = (target, float("inf"))

    def release(self, row_id: int) -> None:
        """The row's delivery is over; unless its call still runs past the deadline, its place is free."""
        with self._lock:
            entry = self._running.get(row_id)
            if entry is not None and entry[1] == float("inf"):
                del self._running[row_id]

    def call(self, target: str, row_id: int, fn: Callable[[], Any]) -> Any:
        with self._lock:
            self._running[row_id] = (target, time.monotonic() + self.deadline_s)
        future = self._pool.submit(fn)
        future.add_done_callback(lambda _f: self._done(row_id))
        try:
            return future.result(timeout=self.deadline_s)
        except FutureTimeout:
            raise TargetUnavailable(
                f"target '{target}' did not answer within the total deadline of {self.deadline_s:g} s "
                "(worker.deadline_s); the call is given up and the row retried with the same key.") from None

    def _done(self, row_id: int) -> None:
        with self._lock:
            self._running.pop(row_id, None)

    def busy(self) -> tuple[dict[str, int], frozenset[int]]:
        """How many more calls each target with calls running may take, and the rows whose call
        still runs (not to be claimed again meanwhile)."""
        with self._lock:
            room: dict[str, int] = {}
            for target, _ in self._running.values():
                room[target] = room.get(target, self.per_target) - 1
            return room, frozenset(self._running)

    def stuck(self) -> dict[str, int]:
        """Per target, the calls still running past their deadline (a peer that does not let go)."""
        now = time.monotonic()
        with self._lock:
            found: dict[str, int] = {}
            for target, deadline in self._running.values():
                if deadline < now:
                    found[target] = found.get(target, 0) + 1
            return found

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class AlertChannel(Protocol):
    """Where alerts go (``adapters.alerts``: a webhook, SMTP)."""

    def send(self, alert: Alert) -> None: ...


@dataclass(frozen=True)
class WorkerSettings:
    """What the config tells the worker (``gateway.build_worker`` fills it from
    ``worker:``, ``outbound:``, ``server:``, ``retention:`` and ``gateway:``)."""

    gateway_hsa_id: str | None = None  # the sourceSystem of messages to 1177
    gateway_name: str = ""  # named in alerts
    concurrency: int = 4  # deliveries in flight at once
    poll_s: float = 2.0  # how often due retries are looked for
    lease_s: float = 300.0  # a claimed row returns to the queue after this (last resort)
    heartbeat_s: float = 10.0  # a worker silent for 3 beats is dead
    per_target: int | None = None  # calls in flight at once to one target (default: half the concurrency)
    deadline_s: float = 60.0  # the total deadline of one call
    medication_slots: int = 2  # synchronous medication lookups at once
    review_s: float = 0.0  # outbound.review_s: polled replies are held this long
    max_attachments: int = 10  # outbound.max_attachments, for polled replies
    require_text: bool = False  # outbound.guard.require_text: a PDF without text holds a polled reply
    retention_hour: int = 3  # the daily purge, at this hour (UTC)


class AlertChecks:
    """The alert job: compares every target with the thresholds (dead rows, failure rate, the
    age of the oldest undelivered row), sends an alert on each change (throttled) and a
    notice when it recovers; its state is in the store, so any process may run it."""

    def __init__(self, store: Store, *, alerts: AlertsSection | None, channels: Sequence[AlertChannel],
                 targets: Sequence[str], gateway_name: str, clock: Clock):
        self.store, self.alerts, self.alert_channels = store, alerts, list(channels)
        self.targets, self.gateway_name, self.clock = list(targets), gateway_name, clock
        self._last_alert_check = clock.instant()

    def run(self, now: dt.datetime | None = None, since: dt.datetime | None = None) -> list[Any]:
        """Compare every target with the thresholds; alert (throttled) and send recovery notices.
        ``since``: when the check last ran in any process (rows dead since then are new).
        Returns the alerts sent."""
        from adapters.alerts import Alert

        if self.alerts is None:
            return []
        now = now or self.clock.instant()
        settings = self.alerts
        sent: list[Any] = []
        try:
            queue = self.store.queue_depth()
            dead_new = self.store.dead_since(since or self._last_alert_check)
        except GatewayError as exc:
            log.warning("alert check failed", extra={"error_code": exc.code})
            return []
        self._last_alert_check = now
        dead_counts: dict[str, int] = {}
        oldest: dict[str, float] = {}
        for row in queue:
            target = row["target"] or ""
            if row["status"] == "dead":
                dead_counts[target] = row["n"]
            elif row["oldest"]:
                age = (now - parse_ts(row["oldest"])).total_seconds()
                oldest[target] = max(age, oldest.get(target, 0.0))
        new_by_target: dict[str, list[dict[str, Any]]] = {}
        for row in dead_new:
            new_by_target.setdefault(row["target"], []).append(row)
        for target in sorted(set(self.targets) | {"national"} | set(dead_counts) | set(oldest)):
            failed, attempts = self.store.failure_rate(target, now - dt.timedelta(seconds=settings.failure_window_s))
            rate = failed / attempts if attempts else 0.0
            checks = {
                "dead": (dead_counts.get(target, 0) > 0, bool(new_by_target.get(target)),
                         f"{dead_counts.get(target, 0)} dead delivery(ies) to {target}"
                         + "".join(f"; case {r['case_id']} {r['action']} {r['last_error_code'] or ''}"
                                   for r in new_by_target.get(target, [])[:5])),
                "failure_rate": (attempts >= settings.min_attempts and rate >= settings.failure_rate, False,
                                 f"{failed} of {attempts} attempts to {target} failed in the last "
                                 f"{settings.failure_window_s / 60:.0f} minutes"),
                "queue_age": (oldest.get(target, 0.0) > settings.queue_age_s, False,
                              f"the oldest undelivered row to {target} is {oldest.get(target, 0.0) / 60:.0f} minutes old"),
            }
            for kind, (active, fresh, detail) in checks.items():
                alert = self._alert_transition(Alert, kind, target, active, fresh, detail, now)
                if alert is not None:
                    sent.append(alert)
        return sent

    def _alert_transition(self, alert_cls: Any, kind: str, target: str, active: bool, fresh: bool, detail: str,
                          now: dt.datetime) -> Any:
        key = f"{kind}:{target}"
        state = self.store.alert_state(key)
        was_active = bool(state and state["active"])
        last_sent = state["last_sent_at"] if state else None
        throttle_s = self.alerts.throttle_s if self.alerts is not None else 0.0
        throttled = bool(last_sent) and (now - parse_ts(str(last_sent))).total_seconds() < throttle_s
        alert = None
        if active and (not was_active or fresh) and not throttled:
            alert = alert_cls(kind, target, f"[gateway] {kind.replace('_', ' ')}: {target}", detail + ".",
                              gateway=self.gateway_name)
        elif active and was_active and not throttled:
            alert = alert_cls(kind, target, f"[gateway] still {kind.replace('_', ' ')}: {target}", detail + ".",
                              gateway=self.gateway_name)
        elif not active and was_active and last_sent:
            alert = alert_cls(kind, target, f"[gateway] recovered: {kind.replace('_', ' ')} on {target}",
                              f"{target} is back to normal ({detail}).", recovered=True, gateway=self.gateway_name)
        if alert is not None:
            for channel in self.alert_channels:
                try:
                    channel.send(alert)
                except GatewayError as exc:
                    log.warning("alert not sent", extra={"channel": type(channel).__name__, "error_code": exc.code,
                                                         "detail": exc.message})
            log.warning("alert", extra={"kind": kind, "target": target, "recovered": alert.recovered, "detail": detail})
        if alert is not None or active != was_active:
            self.store.set_alert_state(key, kind=kind, target=target, active=active,
                                       sent=alert is not None and not alert.recovered, detail=detail, now=now)
        return alert


class Worker:
    """Background delivery and jobs of one gateway process."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        settings: WorkerSettings = WorkerSettings(),
        mappings: Mappings | None = None,
        targets: Mapping[str, TargetSection] | None = None,
        national: NationalProfile | None = None,
        national_settings: NationalSection | None = None,
        confirmations: ConfirmationsSection | None = None,
        alerts: AlertsSection | None = None,
        alert_channels: Sequence[AlertChannel] = (),
        retention: Callable[[], dict[str, int]] | None = None,
        adapter_factory: Callable[[str, Any], adapters.Adapter] = adapters.build,
        rand: Callable[[], float] = random.random,
    ):
        self.store = store
        self.settings = settings
        self.mappings = mappings
        self.targets: dict[str, TargetSection] = dict(targets or {})
        self.adapter_factory = adapter_factory
        self.national = national
        self.national_settings = national_settings
        self.confirmations = confirmations
        self.rand = rand
        self._sync_calls = SyncCalls(settings.medication_slots)
        self.calls = TargetCalls(settings.per_target or max(1, settings.concurrency // 2), settings.deadline_s)
        self.alerts = alerts
        self.alert_channels = list(alert_channels)
        self.retention = retention
        self.clock = clock  # UTC instants; the Swedish date of unit validity (Clock.day)
        self._alert_checks = AlertChecks(store, alerts=alerts, channels=self.alert_channels, targets=list(self.targets),
                                         gateway_name=settings.gateway_name, clock=clock)
        self.name = f"worker@{socket.gethostname()}:{os.getpid()}:{id(self) % 10000:04d}"
        #: a second name this worker beats under: the one ``gateway serve``'s server processes
        #: read readiness from when the worker runs as a process of its own (``gateway.run_worker``)
        self.beats_as: str | None = None
        self._adapters: dict[str, adapters.Adapter] = {}
        self._adapters_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._dispatcher: threading.Thread | None = None
        self._scheduler: BackgroundScheduler | None = None
        self._beaten_stuck: dict[str, int] = {}
        self._unlisten: Callable[[], None] | None = None

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._dispatcher is not None:
            return
        self._stopping.clear()
        self._pool = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="delivery")
        self._scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
        self._scheduler.add_job(self.heartbeat, "interval", seconds=self.settings.heartbeat_s, id="heartbeat")
        self._scheduler.add_job(self.wake, "interval", seconds=self.settings.poll_s, id="due_retries")
        # a worker without a heartbeat for 3 beats is dead: its rows come back within a beat more
        self._scheduler.add_job(self.recover_leases, "interval", seconds=self.settings.heartbeat_s, id="leases")
        # the jobs below run once across every process and instance: each run is claimed in the store
        if self.alerts is not None and self.alert_channels:
            every = self.alerts.check_s
            self._scheduler.add_job(self.once, "interval", args=["alerts", every, self._alerts_run],
                                    seconds=every, id="alerts")
        if self.retention is not None:
            self._scheduler.add_job(self.once, "cron", args=["retention", 20 * 3600, lambda _run: self.run_retention()],
                                    hour=self.settings.retention_hour, minute=17, id="retention")
        for name, settings in self.targets.items():
            poll = getattr(settings, "poll", None)
            if poll is not None:
                every = poll.interval_s
                self._scheduler.add_job(self.once, "interval", args=[f"poll:{name}", every,
                                                                    lambda _run, target=name: self.poll(target)],
                                        seconds=every, id=f"poll:{name}")
        self._scheduler.start()
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="dispatcher", daemon=True)
        self._dispatcher.start()
        # PostgreSQL: new work committed by any instance wakes this one at once (LISTEN/NOTIFY)
        self._unlisten = self.store.listen_work(self._wake.set)
        self.heartbeat()
        self.recover_leases()
        log.info("worker started", extra={"worker": self.name, "concurrency": self.settings.concurrency})

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming, let deliveries in flight finish, stop the scheduler."""
        if self._dispatcher is None:
            return
        self._stopping.set()
        self._wake.set()
        if self._unlisten is not None:
            self._unlisten()
            self._unlisten = None
        self._dispatcher.join(timeout)
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for adapter in self._adapters.values():
            adapter.close()
        if self.national is not None:
            self.national.close()
        self._dispatcher = self._pool = self._scheduler = None
        log.info("worker stopped", extra={"worker": self.name})

    @property
    def running(self) -> bool:
        return self._dispatcher is not None

    def wake(self) -> None:
        """Look for due work now (called after intake commits, and by the retry tick)."""
        self._wake.set()

    # -- periodic jobs ----------------------------------------------------------------------------

    def heartbeat(self) -> None:
        """Write this worker's beat, with what ops reads of it: deliveries in flight and the
        calls past their deadline per target (``/health/ready`` reads them from the store)."""
        stuck = self.calls.stuck()
        self._beaten_stuck = stuck
        detail = json.dumps({"in_flight": self._in_flight, "stuck": stuck}, sort_keys=True)
        try:
            self.store.beat(self.name, detail=detail)
            if self.beats_as is not None:
                self.store.beat(self.beats_as, detail=detail)
        except GatewayError as exc:
            log.warning("heartbeat not written", extra={"error_code": exc.code, "detail": exc.message})

    def take_over(self, predecessor: str) -> None:
        """The worker ``predecessor`` is known to be gone (its supervisor saw the process
        die): record its heartbeat as long stopped, so that the lease recovery of ``start``
        requeues what it held now instead of 3 heartbeats later."""
        try:
            self.store.beat(predecessor, detail=json.dumps({"gone": True, "taken_over_by": self.name}),
                            now=dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))
        except GatewayError as exc:
            log.warning("predecessor not marked gone", extra={"worker": predecessor, "error_code": exc.code})

    def once(self, job: str, every_s: float, run: Callable[[Any], object]) -> bool:
        """Run scheduled ``job`` here if this process claims its run (``Store.claim_job``); every
        process's timer asks, one runs it per interval. True when it ran here."""
        try:
            # due again a little before the next tick, so that the timers' drift never skips a run
            claimed = self.store.claim_job(job, self.name, every_s=every_s * 0.9, run_for_s=max(every_s, 300.0))
        except GatewayError as exc:
            log.warning("scheduled job not claimed", extra={"job": job, "error_code": exc.code})
            return False
        if claimed is None:
            return False
        try:
            run(claimed)
        finally:
            try:
                self.store.finish_job(claimed)
            except GatewayError as exc:
                log.warning("scheduled job not released", extra={"job": job, "error_code": exc.code})
        return True

    def _alerts_run(self, run: Any) -> None:
        self.check_alerts(since=run.previous)

    def recover_leases(self) -> int:
        """Requeue the rows of dead workers (no heartbeat for 3 beats), and those whose lease ran out."""
        try:
            count = self.store.recover_leases(stale_s=3 * self.settings.heartbeat_s)
        except GatewayError as exc:
            log.warning("lease recovery failed", extra={"error_code": exc.code, "detail": exc.message})
            return 0
        if count:
            log.warning("rows requeued after their lease ran out", extra={"count": count})
            self.wake()
        return count

    # -- dispatching ----------------------------------------------------------------------------------

    def _dispatch_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            claimed = self.dispatch_once()
            if claimed:
                continue  # there may be more due now, as long as there are free slots
            self._wake.wait(timeout=max(self.settings.poll_s, 0.05))

    def dispatch_once(self) -> int:
        """Claim what the free slots allow and start delivering it; how many were claimed."""
        with self._in_flight_lock:
            free = self.settings.concurrency - self._in_flight
        if free <= 0 or self._pool is None:
            return 0
        room, busy_rows = self.calls.busy()
        try:
            jobs = self.store.claim(self.name, limit=free, lease_s=self.settings.lease_s, skip_ids=busy_rows, room=room,
                                    room_per_target=self.calls.per_target, targets=[*self.targets, NATIONAL_TARGET])
        except GatewayError as exc:
            log.warning("claim failed", extra={"error_code": exc.code, "detail": exc.message})
            return 0
        for job in jobs:
            with self._in_flight_lock:
                self._in_flight += 1
            self.calls.hold(job.target, job.id)
            self._pool.submit(self._run, job)
        return len(jobs)

    def _run(self, job: Job) -> None:
        try:
            self.deliver(job)
        except Exception:  # the outcome could not even be recorded: the lease brings the row back
            log.error("delivery outcome not recorded", exc_info=True, extra={"outbox_id": job.id, "case_id": job.case_id})
        finally:
            self.calls.release(job.id)
            with self._in_flight_lock:
                self._in_flight -= 1
            if self.calls.stuck() != self._beaten_stuck:  # ops sees a target hold its calls at once
                self.heartbeat()
            self._wake.set()

    def run_until_idle(self, timeout: float = 10.0) -> int:
        """Deliver in this thread until nothing pending falls due within ``timeout`` seconds
        (for the CLI and tests); returns the number of attempts made."""
        deadline = time.monotonic() + timeout
        attempts = 0
        beaten = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() - beaten >= self.settings.heartbeat_s:  # a worker that claims, beats
                self.heartbeat()
                beaten = time.monotonic()
            room, busy_rows = self.calls.busy()
            jobs = self.store.claim(self.name, limit=self.settings.concurrency, lease_s=self.settings.lease_s, skip_ids=busy_rows,
                                    room=room, room_per_target=self.calls.per_target)
            for job in jobs:
                self.calls.hold(job.target, job.id)
                try:
                    self.deliver(job)
                finally:
                    self.calls.release(job.id)
            attempts += len(jobs)
            if jobs:
                continue
            due = self.store.next_due()
            if due is None:
                return attempts
            wait = (due - self.clock.instant()).total_seconds()
            if wait > deadline - time.monotonic():
                return attempts
            time.sleep(max(0.0, min(wait, 0.5)) or 0.01)
        return attempts

    # -- one delivery -------------------------------------------------------------------------------

    def adapter(self, target: str) -> adapters.Adapter:
        with self._adapters_lock:
            adapter = self._adapters.get(target)
            if adapter is None:
                settings = self.targets.get(target)
                if settings is None:
                    raise MappingError(f"target '{target}' is not in the config (targets.{target}).")
                adapter = self._adapters[target] = self.adapter_factory(target, settings)
            return adapter

    def build_request(self, job: Job) -> Request:
        """The request for ``job``: its body from the field map, its key, its path parameters."""
        if self.mappings is None:
            raise MappingError("no mappings are loaded.")
        case = self.store.load_case(job.case_id)
        message = self.store.load_message(job.ref_id) if job.action == DELIVER_MESSAGE else None
        if job.action == DELIVER_MESSAGE and not job.provider_case_id:
            expected, _ = self.mappings.fieldmap(job.target).provider_case_id(DELIVER_CASE, {})
            if expected:
                raise MappingError(f"case {job.case_id} has no provider case id, so its message cannot be addressed.")
        route = {"unit_code": job.provider_unit_code, "target": job.target, "hsa_id": job.receiver_hsa_id}
        source = delivery_source(
            case=case, message=message, route=route, provider_case_id=job.provider_case_id,
            idempotency_key=job.idempotency_key, gateway_hsa_id=self.settings.gateway_hsa_id,
        )
        body = self.mappings.fieldmap(job.target).build(job.action, source)
        params = {"case_id": job.case_id, "unit_code": job.provider_unit_code or "", "provider_case_id": job.provider_case_id}
        return Request(body=body, idempotency_key=job.idempotency_key, params={k: v for k, v in params.items() if v})

    def deliver(self, job: Job) -> None:
        """Deliver one claimed row by its action (``ACTIONS``) and record the outcome on it.
        An unexpected error (a bug) makes the row dead with GW099, so it cannot come back
        with its lease and block the case's later rows for ever; the log has the details."""
        started = self.clock.instant()
        clock = time.perf_counter()
        try:
            action = ACTIONS.get(job.action)
            if action is None:
                raise MappingError(f"outbox row {job.id} has the action '{job.action[:40]}', which this gateway does not know.")
            self._perform(action, job)
        except StoreError as exc:  # the outcome could not be written: never dead for that
            log.warning("delivery outcome not recorded; the row comes back to the queue", extra={
                "outbox_id": job.id, "case_id": job.case_id, "error_code": exc.code, "detail": exc.message})
        except MappingError as exc:
            self._failed(job, exc, started, clock, None, permanent=True)
        except Exception as exc:  # noqa: BLE001 - the last line of defence of the delivery loop
            reference = str(uuid.uuid4())
            log.error("delivery failed unexpectedly", exc_info=True,
                      extra={"outbox_id": job.id, "case_id": job.case_id, "action": job.action, "log_id": reference})
            error = InternalError(f"{job.action} failed unexpectedly ({type(exc).__name__}, reference {reference}).")
            self._failed(job, error, started, clock, None, permanent=True)

    def _perform(self, action: Action, job: Job) -> None:
        """One attempt of ``action`` for ``job``: the call, then its completion or its failure
        (transient: retried with the side's retry settings; a mapping, contract or config
        problem: dead at once)."""
        started = self.clock.instant()
        clock = time.perf_counter()
        retry = self.targets.get(job.target) if action.side == "provider" else self.national_settings
        try:
            delivered = action.call(self, job)
        except DeliveryError as exc:
            self._failed(job, exc, started, clock, retry)
            return
        except (MappingError, ContractError, ConfigError) as exc:
            self._failed(job, exc, started, clock, retry, permanent=True)
            return
        except StoreError as exc:
            log.warning("store unavailable during delivery", extra={"outbox_id": job.id, "error_code": exc.code})
            return  # the row stays claimed; its lease (or the heartbeat) brings it back
        duration = (time.perf_counter() - clock) * 1000
        follow_up = self._receipt(job, delivered.national_case_id) if action.receipt else None
        if self._recorded(lambda: self.store.complete(
                job, started=started, duration_ms=duration, status_code=delivered.status_code,
                provider_case_id=delivered.provider_case_id, national_case_id=delivered.national_case_id,
                detail=delivered.detail, follow_up=follow_up, completion=COMPLETIONS[action.completes]), job):
            log.info("delivered" if action.side == "provider" else "delivered to 1177", extra={
                "case_id": job.case_id, "action": job.action, "target": job.target, "attempt": job.attempt,
                "duration_ms": round(duration, 1), "detail": delivered.detail})
        else:
            log.warning("delivered after the lease ran out", extra={"case_id": job.case_id, "outbox_id": job.id})

    def call_provider(self, job: Job, call: Callable[[adapters.Adapter, Request], Answer]) -> Delivered:
        """The call of a provider-side action: the body from the target's field map, the
        adapter call within the target's share of the calls, and the provider's case id
        read where the field map says (a 2xx without it is ``BadTargetAnswer``)."""
        request = self.build_request(job)
        adapter = self.adapter(job.target)
        answer = self.calls.call(job.target, job.id, lambda: call(adapter, request))
        assert self.mappings is not None  # build_request refuses to run without them
        expected, provider_case_id = self.mappings.fieldmap(job.target).provider_case_id(job.action, answer.data)
        if expected and not provider_case_id:
            raise BadTargetAnswer(
                f"target '{job.target}' accepted {job.action} but its answer has no case id where the field map "
                f"reads it; {_keys_of(answer.data)}.",
                status_code=answer.status_code, response=answer.response)
        return Delivered(answer.status_code, provider_case_id=provider_case_id)

    def call_national(self, job: Job, call: Callable[[NationalProfile], Answer], *,
                      registered: bool = True) -> Answer:
        """The call of a 1177-side action, within the national platform's share of the calls.
        ``registered``: the case must already have 1177's case id (all but RegisterCase).
        Each action reads what it needs of the case before (``call`` only makes the call)."""
        if self.national is None:
            raise ConfigError("no national platform is configured (the 'national' section).")
        if registered and not job.national_case_id:
            raise MappingError(f"case {job.case_id} has no 1177 case id: it was never registered with 1177.")
        national = self.national
        return self.calls.call(NATIONAL_TARGET, job.id, lambda: call(national))

    #: How often, and after how many seconds each, the worker tries again to record a delivery
    #: that succeeded while the database was busy (a backup, a CLI command holding the lock).
    STORE_RETRIES_S = (0.5, 1.0, 2.0, 4.0)

    def _recorded(self, record: Callable[[], bool], job: Job) -> bool:
        """Write the outcome of a delivery the target has taken, trying again while the store is
        busy: the target has it, so the row must never go dead for a store error. If the
        store stays unavailable, ``StoreError`` leaves the row in flight, and the worker's
        recovery brings it back: the redelivery carries the same idempotency key."""
        for pause in (*self.STORE_RETRIES_S, None):
            try:
                return record()
            except StoreError as exc:
                if pause is None:
                    raise
                log.warning("delivered, but the outcome could not be written yet; trying again",
                            extra={"outbox_id": job.id, "case_id": job.case_id, "error_code": exc.code})
                time.sleep(pause)
        return False  # not reached

    def _receipt(self, job: Job, national_case_id: str | None = None) -> Message | None:
        """The automatic receipt to the citizen once the provider has accepted a 1177 case, or
        once 1177 has registered a case that started outside it (``national_case_id``)."""
        conf = self.confirmations
        if conf is None or not conf.enabled or not (national_case_id or job.national_case_id):
            return None
        texts: Mapping[Any, str] = conf.texts  # by CaseType, a str enum: the stored value finds it
        text = texts.get(job.case_type) if job.case_type else None
        if not text:
            return None
        unit = self.mappings.units.unit(job.receiver_hsa_id, self.clock.day()) if self.mappings else None
        return Message(
            case_id=job.case_id, message_id=receipt_id(job.case_id), created_time=self.clock.instant(), text=text, direction="out",
            kind=MessageKind.CONFIRMATION.value, subject=conf.subject, sender_hsa_id=job.receiver_hsa_id,
            sender_name=unit.name if unit else None,
        )

    # -- retention and alerts ------------------------------------------------------------------------

    def run_retention(self) -> dict[str, int]:
        """The daily purge (DESIGN.md rule 2); reports what it removed."""
        try:
            removed = self.retention() if self.retention else {}
        except GatewayError as exc:
            log.warning("retention failed", extra={"error_code": exc.code, "detail": exc.message})
            return {}
        log.info("retention ran", extra={k: v for k, v in removed.items()})
        return removed

    def check_alerts(self, now: dt.datetime | None = None, since: dt.datetime | None = None) -> list[Any]:
        """Compare every target with the alert thresholds now (``AlertChecks.run``)."""
        return self._alert_checks.run(now=now, since=since)

    # -- a synchronous read for 1177: the medication list ---------------------------------------

    def fetch_medications(self, target: str, unit_code: str, person: PersonId) -> list[Medication]:
        """The patient's medications from ``target`` (raises ``DeliveryError``: no answer is
        never turned into an empty list), for 1177, which waits: the call has a total deadline
        (``targets.<name>.medications.timeout_s``), and at most ``medication_slots`` such calls
        run at once, so a slow provider never holds the HTTP side's threads."""
        settings = getattr(self.targets.get(target), "medications", None)
        deadline = float(getattr(settings, "timeout_s", 5.0) or 5.0)
        return self._sync_calls.call(lambda: self._fetch_medications(target, unit_code, person), deadline,
                                     what=f"target '{target}' (medications)")

    def _fetch_medications(self, target: str, unit_code: str, person: PersonId) -> list[Medication]:
        adapter = self.adapter(target)
        started = time.perf_counter()
        items = adapter.medications(person.id, unit_code)
        found = []
        for index, item in enumerate(items):
            try:
                raw_date = item.get("lastPrescribedDate")
                day = raw_date if isinstance(raw_date, dt.date) else dt.date.fromisoformat(str(raw_date).strip())
                found.append(Medication(str(item["prescriptionId"]), str(item["name"]), day,
                                        str(item["strength"]) if item.get("strength") else None))
            except (KeyError, TypeError, ValueError, AttributeError):
                raise BadTargetAnswer(
                    f"target '{target}': medication {index + 1} lacks prescriptionId, name or a lastPrescribedDate (YYYY-MM-DD)."
                ) from None
        log.info("medication list fetched", extra={"target": target, "count": len(found),
                                                   "duration_ms": round((time.perf_counter() - started) * 1000, 1)})
        return found

    # -- polling ---------------------------------------------------------------------------------------

    def poll(self, target: str) -> int:
        """Ask ``target`` for updates since its stored cursor and queue them; how many were taken."""
        try:
            adapter = self.adapter(target)
            cursor = self.store.get_cursor(target)
            items, next_cursor = adapter.poll(cursor)
        except GatewayError as exc:
            log.warning("poll failed", extra={"target": target, "error_code": exc.code, "detail": exc.message})
            return 0
        taken = 0
        for index, item in enumerate(items):
            try:
                self.take_update(target, item)
                taken += 1
            except GatewayError as exc:
                self.store.log_event(direction="out", event="poll_update_refused", status="refused", target=target,
                                     error_code=exc.code, case_id=_case_ref(item),
                                     detail=f"update {index + 1} of {len(items)} from {target}: {exc.message}")
                log.warning("polled update refused", extra={"target": target, "error_code": exc.code, "detail": exc.message})
        if next_cursor is not None and next_cursor != cursor:
            self.store.set_cursor(target, str(next_cursor))
        if taken:
            self.wake()
        return taken

    def take_update(self, target: str, item: dict[str, Any]) -> None:
        """One polled update through the same path as the REST API (``updates``)."""
        if not isinstance(item, dict):
            raise BadJson("an update must be an object.")
        case_id = item.get("caseId") or item.get("providerCaseId")
        row = self.store.find_case(str(case_id), target=target) if case_id else None
        if row is None:
            raise NotFound(f"the update names no case this gateway knows ({str(case_id or item.get('providerCaseId'))[:64]}).")
        if row["target"] != target:
            raise Forbidden(f"case {case_id} is not routed to target '{target}'.")
        kind = item.get("type", "message")
        if kind == "message":
            message = updates.reply(item, case_id=row["case_id"], target=target, units=self.mappings.units,  # type: ignore[union-attr]
                                    clock=self.clock, case_unit=row["receiver_hsa_id"],
                                    citizen_started=row["origin"] == "1177", max_attachments=self.settings.max_attachments)
            guard = updates.guard(message, self.store.case_person_ids(row["case_id"]), require_text=self.settings.require_text)
            self.store.add_reply(message, hold_s=self.settings.review_s, origin="poll", reopen=updates.reopen(item), guard=guard)
        elif kind == "status":
            update = updates.status(item, case_id=row["case_id"], case_type=CaseType(row["case_type"]), target=target,
                                    codes=self.mappings.codes)  # type: ignore[union-attr]
            self.store.add_status(update, origin="poll")
        else:
            raise BadJson(f"update type '{str(kind)[:20]}' is neither 'message' nor 'status'.", field="type")

    def _failed(self, job: Job, exc: GatewayError, started: dt.datetime, clock: float, settings: Any, permanent: bool = False) -> None:
        duration = (time.perf_counter() - clock) * 1000
        permanent = permanent or getattr(exc, "permanent", True)
        status_code = getattr(exc, "status_code", None)
        retry = settings.retry if settings is not None else None
        retry_at = None
        code, reason = exc.code, exc.message
        if not permanent and retry is not None:
            if job.attempt >= retry.max_attempts:
                code = AttemptsExhausted.code
                reason = f"gave up after {job.attempt} attempt(s); the last: {exc.code} {exc.message}"
            else:
                delay = retry.delay(job.attempt, self.rand())
                after = getattr(exc, "retry_after_s", None)
                if after:
                    delay = min(max(delay, after), retry.max_s)
                retry_at = self.clock.instant() + dt.timedelta(seconds=delay)
        try:
            self.store.fail(job, started=started, duration_ms=duration, error_code=code, reason=reason,
                            status_code=status_code, retry_at=retry_at, response=getattr(exc, "response", None))
        except StoreError as store_exc:
            log.warning("failure not recorded", extra={"outbox_id": job.id, "error_code": store_exc.code})
            return
        log.warning(  # the reason may quote the provider's answer (content): only at DEBUG
            "delivery failed" + ("; will retry" if retry_at else "; row is dead"),
            extra={"case_id": job.case_id, "action": job.action, "target": job.target, "attempt": job.attempt,
                   "error_code": code, "status_code": status_code},
        )
        log.debug("delivery failed: the reason", extra={"case_id": job.case_id, "outbox_id": job.id, "detail": reason})


def _keys_of(data: Any) -> str:
    """The top-level keys of a target's JSON answer, for a message that says what did come back."""
    keys = [str(k)[:40] for k in data] if isinstance(data, dict) else []
    if not keys:
        return "the answer had no fields"
    shown = ", ".join(keys[:20]) + (f" and {len(keys) - 20} more" if len(keys) > 20 else "")
    return f"it had: {shown}"


def _case_ref(item: Any) -> str | None:
    if isinstance(item, dict):
        value = item.get("caseId") or item.get("providerCaseId")
        return str(value)[:64] if value else None
    return None


# -- the registry of actions -------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    """What a target's answer gave a delivery, for its completion."""

    status_code: int | None
    provider_case_id: str | None = None
    national_case_id: str | None = None
    detail: str | None = None  # what the target said besides OK (1177's INFO text)


@dataclass(frozen=True)
class Action:
    """One kind of outbox row, in one place: ``call`` builds its request and makes the
    adapter call (``Worker.call_provider`` / ``Worker.call_national``); ``completes`` names
    what delivering it writes (``store.COMPLETIONS``); ``side`` says whose retry settings
    apply (the target's or the national platform's); ``receipt``: the automatic receipt to
    the citizen follows it, in the place kept for it at intake."""

    name: str
    side: Literal["provider", "national"]
    call: Callable[[Worker, Job], Delivered]
    completes: str
    receipt: bool = False


#: Every action the worker can deliver, by the outbox row's ``action``. Adding one is a
#: function below (and, when it writes something new on completion, a ``store.COMPLETIONS`` entry).
ACTIONS: dict[str, Action] = {}


def action(name: str, *, side: Literal["provider", "national"], completes: str | None = None,
           receipt: bool = False) -> Callable[[Callable[[Worker, Job], Delivered]], Callable[[Worker, Job], Delivered]]:
    """Register the decorated function as the call of action ``name``."""
    def register(call: Callable[[Worker, Job], Delivered]) -> Callable[[Worker, Job], Delivered]:
        written = completes or name
        if written not in COMPLETIONS:
            raise ConfigError(f"action {name}: store.COMPLETIONS has no completion '{written}'.")
        ACTIONS[name] = Action(name, side, call, written, receipt)
        return call
    return register


@action(DELIVER_CASE, side="provider", receipt=True)
def deliver_case(worker: Worker, job: Job) -> Delivered:
    """A case from 1177 to the provider's system (then the receipt to the citizen)."""
    return worker.call_provider(job, lambda adapter, request: adapter.deliver_case(request))


@action(DELIVER_MESSAGE, side="provider")
def deliver_message(worker: Worker, job: Job) -> Delivered:
    """A citizen's follow-up message to the provider's system, in the provider's case."""
    return worker.call_provider(job, lambda adapter, request: adapter.deliver_message(request))


@action("add_message", side="national")
def add_message(worker: Worker, job: Job) -> Delivered:
    """A message to the citizen's 1177 inbox (AddMessage), threaded by 1177's case id."""
    message = worker.store.load_message(job.ref_id)
    person = worker.store.subject_of_care_id(job.case_id)  # not the whole case: its files are not sent
    answer = worker.call_national(job, lambda national: national.add_message(
        subject_of_care_id=person, national_case_id=str(job.national_case_id),
        message=message, correlation_id=job.correlation_id))
    return Delivered(answer.status_code, detail=answer.detail)


@action("update_status", side="national")
def update_status(worker: Worker, job: Job) -> Delivered:
    """A status change of the case to 1177 (UpdateCaseStatus)."""
    update = worker.store.load_status(int(job.ref_id))
    answer = worker.call_national(job, lambda national: national.update_status(
        national_case_id=str(job.national_case_id), update=update, correlation_id=job.correlation_id))
    return Delivered(answer.status_code, detail=answer.detail)


@action("register_case", side="national", receipt=True)
def register_case(worker: Worker, job: Job) -> Delivered:
    """A case that started outside 1177 registered with it (RegisterCase): 1177's case id
    comes back (then the receipt to the citizen)."""
    row = worker.store.case_row(job.case_id) or {}
    case = worker.store.load_case(job.case_id)
    answer = worker.call_national(job, lambda national: national.register_case(
        case=case, external_case_id=row.get("provider_case_id") or job.case_id,
        channel=row.get("channel") or "OTHER", correlation_id=job.correlation_id), registered=False)
    data = answer.data if isinstance(answer.data, dict) else {}
    if not data.get("caseId"):
        raise BadTargetAnswer("1177 registered the case but its answer has no caseId.", status_code=answer.status_code)
    return Delivered(answer.status_code, national_case_id=str(data["caseId"]), detail=answer.detail)
