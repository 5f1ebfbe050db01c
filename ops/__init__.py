"""The operations side: the ops web view (``ops.view``) and health and metrics (``ops.health``).

Role: what the people who run the gateway use. The view is server-rendered Flask
templates under ``/ops`` (login, roles, CSRF on every POST, an audit log of admin
actions); ``/health/*`` and ``/metrics`` are for probes and Prometheus.

May import: ``store`` (reads, and the operator actions it offers: replay, cancel, pause),
``errors``, ``model`` (masking). Never an adapter: ops does not send anything itself.

Invariants: only the store is read (and written for the audit log, sign-in failures and
sessions); a ``monitor`` never sees citizen text, files or a personnummer; every POST
carries a CSRF token; every admin action, and every lock of a sign-in, is audited.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from store import Store

if TYPE_CHECKING:  # the clock is handed in by the composition root
    from clock import Clock


@dataclass
class Ops:
    """What the ops view and the health endpoints need, built by ``gateway.create_app``."""

    store: Store
    mappings: Any  # mapping.Mappings: units, codes (for the mapping view)
    targets: list[str]
    users: dict[str, Any]  # name → config.OpsUser
    proxy_header: str | None = None
    proxy_addresses: list[str] = field(default_factory=list)
    heartbeat_max_age_s: float = 60.0
    #: the name of this process's worker, whose heartbeat (in the store) readiness checks;
    #: None when this process runs no worker
    worker_name: str | None = None
    #: asks this process's worker to look for due work now (after a replay), if it runs one
    wake_worker: Callable[[], None] | None = None
    version: str = "0"
    #: the gateway's clock (``clock.SYSTEM``): UTC instants, the Swedish date of unit validity
    clock: "Clock | None" = None
    #: config ``ops.sign_in``: failures that lock a user name or an address, and for how long
    sign_in: Any = None
    #: ``mapping.InForce``: when and from which files ``mappings`` were loaded, the last reload's
    #: outcome (``details()``) and the digest of the files on disk now (``on_disk()``)
    mappings_in_force: Any = None

    def instant(self) -> dt.datetime:
        """The current UTC instant, from the injected clock."""
        if self.clock is None:
            raise RuntimeError("ops.Ops needs the gateway's clock (gateway.create_app hands it in)")
        return self.clock.instant()

    def day(self) -> dt.date:
        """Today's date in Sweden (the date unit validity is about)."""
        if self.clock is None:
            raise RuntimeError("ops.Ops needs the gateway's clock (gateway.create_app hands it in)")
        return self.clock.day()


def init_app(app: Any, ops: Ops) -> None:
    from ops import health, view

    app.extensions["gateway.ops"] = ops
    view.init_app(app)
    health.init_app(app)
