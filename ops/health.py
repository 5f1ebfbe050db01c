"""Health and metrics: ``/health/live``, ``/health/ready`` and ``/metrics`` (Prometheus).

Role: what probes and Prometheus read. Liveness is the process answering; readiness is
the store writable, the worker's heartbeat fresh and the mappings loaded (503 with the
reasons otherwise), with the mappings in force (when loaded, their digest) and the last
reload's outcome beside: a refused reload leaves the old mappings working, so it is
shown but does not make the process unready. Metrics come from the store at scrape time
through a custom collector, so every gateway process reports the same totals: received,
delivered, failed and dead per target and direction, the intake-to-delivery latency
histogram, the queue depth and the age of the oldest undelivered row.

May import: ``store``, ``errors``. No login (keep these on an internal port or behind
the proxy); nothing here shows a case's content.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from errors import GatewayError
from store import LATENCY_BUCKETS, Store, parse_ts

bp = Blueprint("health", __name__)


def init_app(app: Any) -> None:
    app.register_blueprint(bp)


def _ops() -> Any:
    return current_app.extensions["gateway.ops"]


@bp.get("/health/live")
def live() -> Response:
    return jsonify({"status": "live", "version": _ops().version})


@bp.get("/health/ready")
def ready() -> tuple[Response, int]:
    ops = _ops()
    problems: list[str] = []
    try:
        ops.store.check_writable()
    except GatewayError as exc:
        problems.append(f"store not writable: {exc.code} {exc.message}")
    if ops.worker_name is not None:  # this process runs a worker: its beat is in the store
        beat = ops.store.beat_of(ops.worker_name)
        age = (ops.instant() - parse_ts(beat["at"])).total_seconds() if beat else None
        if age is None or age > ops.heartbeat_max_age_s:
            problems.append("worker heartbeat is stale" + (f" ({age:.0f} s old)" if age is not None else " (none yet)"))
        for target, count in sorted(_stuck(beat).items()):
            problems.append(f"{count} call(s) to {target} still running past the deadline (worker.deadline_s): "
                            "the target holds its connections without answering")
    if ops.mappings is None or not len(ops.mappings.units):
        problems.append("no units mapped (mappings/units.yaml)")
    body: dict[str, Any] = {"status": "ready" if not problems else "not ready", "problems": problems}
    if ops.mappings_in_force is not None:
        # a refused reload leaves the process ready (its mappings are sound) but shows why
        body["mappings"] = ops.mappings_in_force.details()
    return jsonify(body), (200 if not problems else 503)


def _stuck(beat: dict[str, Any] | None) -> dict[str, int]:
    """The calls past their deadline, per target, that a worker's beat reports."""
    try:
        detail = json.loads((beat or {}).get("detail") or "{}")
    except ValueError:
        return {}
    stuck = detail.get("stuck") if isinstance(detail, dict) else None
    return {str(k): int(v) for k, v in stuck.items()} if isinstance(stuck, dict) else {}


class StoreCollector:
    """Reads the gateway's counters, histogram and queue from the store at each scrape."""

    def __init__(self, store: Store, instant: Callable[[], dt.datetime]):
        self.store = store
        self.instant = instant

    def collect(self) -> Iterator[Any]:
        names = {"received": "Cases, messages and status changes taken in",
                 "delivered": "Deliveries that succeeded", "failed": "Delivery attempts that failed",
                 "dead": "Deliveries given up (dead letters)"}
        families = {n: CounterMetricFamily(f"gateway_{n}", text, labels=["target", "direction"]) for n, text in names.items()}
        for row in self.store.metric_counters():
            if row["name"] in families:
                families[row["name"]].add_metric([row["target"], row["direction"]], row["value"])
        yield from families.values()
        buckets, sums = self.store.metric_latency()
        histogram = HistogramMetricFamily(
            "gateway_delivery_latency_seconds", "Time from intake to successful delivery", labels=["target", "direction"]
        )
        series: dict[tuple[str, str], dict[str, int]] = {}
        for row in buckets:
            series.setdefault((row["target"], row["direction"]), {})[row["le"]] = row["count"]
        totals = {(r["target"], r["direction"]): r["total_s"] for r in sums}
        for key, counts in series.items():
            running, cumulative = 0, []
            for le in LATENCY_BUCKETS:
                running += counts.get(le, 0)
                cumulative.append((le, running))
            histogram.add_metric(list(key), cumulative, totals.get(key, 0.0))
        yield histogram
        depth = GaugeMetricFamily("gateway_queue_depth", "Rows waiting, in flight or dead", labels=["target", "status"])
        oldest = GaugeMetricFamily("gateway_oldest_pending_age_seconds", "Age of the oldest undelivered row", labels=["target"])
        now = self.instant()
        ages: dict[str, float] = {}
        for row in self.store.queue_depth():
            depth.add_metric([row["target"] or "", row["status"]], row["n"])
            if row["status"] in ("pending", "in_flight") and row["oldest"]:
                age = (now - parse_ts(row["oldest"])).total_seconds()
                ages[row["target"] or ""] = max(age, ages.get(row["target"] or "", 0.0))
        for target, age in ages.items():
            oldest.add_metric([target], age)
        blocked = GaugeMetricFamily("gateway_blocked_rows", "Rows waiting behind a dead row of their case", labels=["target"])
        for row in self.store.blocked_counts():
            blocked.add_metric([row["target"] or ""], row["n"])
        yield depth
        yield oldest
        yield blocked


@bp.get("/metrics")
def metrics() -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(_ops().store, _ops().instant))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
