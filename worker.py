"""The worker: the only part of the gateway that calls adapters, on a schedule or at once.

Role: run the background jobs with APScheduler (3.x). Today it keeps a heartbeat in the
store, so health checks can see the worker is alive; outbox delivery and polling hang
on the same scheduler and the same ``wake`` signal.

May import: ``store``, ``mapping``, ``adapters``, ``errors``.

Invariants: a job never lets an exception escape into the scheduler (it is logged and
the job runs again on its next tick); ``stop`` waits for running jobs to finish.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from apscheduler.schedulers.background import BackgroundScheduler

from errors import GatewayError
from store import Store

log = logging.getLogger("gateway.worker")


class Worker:
    """Background jobs of one gateway process."""

    def __init__(self, store: Store, *, heartbeat_s: int = 10):
        self.store = store
        self.heartbeat_s = heartbeat_s
        self.name = f"worker@{socket.gethostname()}:{os.getpid()}"
        self._wake = threading.Event()
        self._scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
        self._started = False

    def start(self) -> None:
        if self._started:
            return
        self._scheduler.add_job(self.heartbeat, "interval", seconds=self.heartbeat_s, id="heartbeat")
        self._scheduler.start()
        self._started = True
        self.heartbeat()
        log.info("worker started", extra={"worker": self.name})

    def stop(self) -> None:
        if self._started:
            self._scheduler.shutdown(wait=True)
            self._started = False
            log.info("worker stopped", extra={"worker": self.name})

    @property
    def running(self) -> bool:
        return self._started

    def wake(self) -> None:
        """Ask for new work to be picked up now rather than on the next tick."""
        self._wake.set()

    def heartbeat(self) -> None:
        try:
            self.store.beat(self.name)
        except GatewayError as exc:
            log.warning("heartbeat not written", extra={"error_code": exc.code, "detail": exc.message})
