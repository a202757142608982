"""Prometheus text for GET /metrics: the server's HTTP counters and latency histogram, plus the router's
per-arm stats (pulls, failures, feedback, cost), which the router persists, so they survive restarts.

Hand-written exposition (a few dozen lines) instead of prometheus_client: no global registry to reset
between tests, and no dependency for what is string formatting.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Seconds; from a cached single call to a slow multi-sample strategy on a large model.
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One metric family: its samples are (name suffix, labels, value)."""

    name: str
    type: str
    help: str
    samples: list[tuple[str, Labels, float]] = field(default_factory=list)

    def add(self, value: float, suffix: str = "", **labels: str) -> Family:
        self.samples.append((suffix, tuple(labels.items()), float(value)))
        return self


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def render(families: Iterable[Family]) -> str:
    """The text exposition format (version 0.0.4) of `families`."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for suffix, labels, value in family.samples:
            shown = ",".join(f'{key}="{_escape(text)}"' for key, text in labels)
            lines.append(
                f"{family.name}{suffix}{{{shown}}} {_value(value)}"
                if shown
                else f"{family.name}{suffix} {_value(value)}"
            )
    return "\n".join(lines) + "\n"


def router_families(stats: Mapping[str, Any]) -> list[Family]:
    """Families from `router.stats()`: totals, and per arm pulls, failures, feedback, cost, mean quality."""
    arms: Mapping[str, Mapping[str, Any]] = stats.get("arms") or {}
    pulls = Family("uniscale_arm_pulls_total", "counter", "Requests answered by each arm.")
    failures = Family(
        "uniscale_arm_failures_total", "counter", "Failed attempts of each arm (taught as quality 0)."
    )
    feedback = Family("uniscale_arm_feedback_total", "counter", "Feedback scores learnt for each arm.")
    cost = Family("uniscale_arm_cost_usd_total", "counter", "Spend of each arm in USD.")
    quality = Family(
        "uniscale_arm_mean_quality", "gauge", "Mean feedback score of each arm (arms with feedback)."
    )
    for arm_id in sorted(arms):
        row = arms[arm_id]
        pulls.add(row.get("pulls", 0), arm=arm_id)
        failures.add(row.get("failures", 0), arm=arm_id)
        feedback.add(row.get("feedback", 0), arm=arm_id)
        cost.add(row.get("total_cost_usd", 0.0), arm=arm_id)
        if row.get("mean_quality") is not None:
            quality.add(row["mean_quality"], arm=arm_id)
    breakers = Family("uniscale_breaker_open", "gauge", "1 while a model's circuit breaker is open.")
    for model, state in sorted((stats.get("breakers") or {}).items()):
        breakers.add(1.0 if state.get("open") else 0.0, model=model)
    return [
        Family(
            "uniscale_routed_requests_total",
            "counter",
            "Requests the router answered (kept across restarts).",
        ).add(stats.get("requests", 0)),
        Family("uniscale_failed_requests_total", "counter", "Requests on which every arm tried failed.").add(
            stats.get("failed_requests", 0)
        ),
        Family("uniscale_route_decisions_total", "counter", "Route-only decisions (POST /v1/route).").add(
            stats.get("routes", 0)
        ),
        Family("uniscale_pending_decisions", "gauge", "Decisions waiting for feedback.").add(
            stats.get("pending", 0)
        ),
        Family("uniscale_cost_usd_total", "counter", "Spend of all arms in USD.").add(
            stats.get("total_cost_usd", 0.0)
        ),
        Family(
            "uniscale_cost_weight",
            "gauge",
            "Quality given up for the most expensive arm (adapted under a budget).",
        ).add(stats.get("cost_weight", 0.0)),
        pulls,
        failures,
        feedback,
        cost,
        quality,
        breakers,
    ]


class _Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
        self.total += 1
        self.sum += value


class ServerMetrics:
    """Counters the HTTP layer keeps (per process, from start): requests by endpoint and status, feedback
    outcomes, and the end-to-end latency of chat completions by the arm that answered."""

    def __init__(self, buckets: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        self._lock = threading.Lock()
        self._buckets = tuple(buckets)
        self._requests: Counter[tuple[str, int]] = Counter()
        self._feedback: Counter[str] = Counter()
        self._latency: dict[str, _Histogram] = {}

    def observe_request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self._requests[(endpoint, status)] += 1

    def observe_feedback(self, outcome: str) -> None:
        """`outcome`: applied, duplicate, unknown or invalid."""
        with self._lock:
            self._feedback[outcome] += 1

    def observe_latency(self, arm_id: str, seconds: float) -> None:
        with self._lock:
            histogram = self._latency.get(arm_id)
            if histogram is None:
                histogram = self._latency[arm_id] = _Histogram(self._buckets)
            histogram.observe(seconds)

    def families(self) -> list[Family]:
        requests = Family(
            "uniscale_requests_total", "counter", "HTTP requests served, by endpoint and status."
        )
        feedback = Family("uniscale_feedback_total", "counter", "POST /v1/feedback calls, by outcome.")
        latency = Family(
            "uniscale_request_latency_seconds",
            "histogram",
            "End-to-end chat completion latency, by the arm that answered.",
        )
        with self._lock:
            for (endpoint, status), count in sorted(self._requests.items()):
                requests.add(count, endpoint=endpoint, status=str(status))
            for outcome, count in sorted(self._feedback.items()):
                feedback.add(count, outcome=outcome)
            for arm_id, histogram in sorted(self._latency.items()):
                for bound, count in zip(histogram.buckets, histogram.counts, strict=True):
                    latency.add(count, "_bucket", arm=arm_id, le=_value(bound))
                latency.add(histogram.total, "_bucket", arm=arm_id, le="+Inf")
                latency.add(histogram.sum, "_sum", arm=arm_id)
                latency.add(histogram.total, "_count", arm=arm_id)
        return [requests, feedback, latency]

    def render(self, router_stats: Mapping[str, Any]) -> str:
        return render([*self.families(), *router_families(router_stats)])
