"""Load signals for the router: context features from live servers, predicted TPOT, and an SLO gate."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from typing import TypeVar

import numpy as np

from ..errors import field_error
from .monitor import ServerMonitor
from .vllm_metrics import ServerLoad

ArmId = TypeVar("ArmId", bound=Hashable)
TpotModel = Callable[[int], float]
"""Predicted TPOT in ms at a given number of running requests (e.g. from a SpecServe profile and plan)."""

FEATURE_NAMES = (
    "running_mean_norm",
    "running_max_norm",
    "waiting_mean_log_norm",
    "kv_cache_usage_max",
    "tpot_mean_norm",
    "unavailable_fraction",
)


def normalise_api_base(api_base: str) -> str:
    """One spelling per server: no trailing slash."""
    return api_base.rstrip("/")


class LoadSignals:
    """Live load of one or more local servers, keyed by the `api_base` their `ModelSpec`s use.

    Reads only `ServerMonitor.latest`, so calling it per request costs no I/O; start the monitors (or call
    `scrape()` on them) for the numbers to move.
    """

    feature_dim = len(FEATURE_NAMES)

    def __init__(
        self,
        monitors: Mapping[str, ServerMonitor],
        *,
        max_running: float = 256.0,
        max_waiting: float = 256.0,
        tpot_scale_ms: float = 100.0,
        tpot_models: Mapping[str, TpotModel] | None = None,
    ) -> None:
        for name, value in (("max_running", max_running), ("max_waiting", max_waiting),
                            ("tpot_scale_ms", tpot_scale_ms)):
            if value <= 0:
                raise field_error("LoadSignals", name, value, "give a positive scale")
        self.monitors = {normalise_api_base(k): m for k, m in monitors.items()}
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.tpot_scale_ms = tpot_scale_ms
        self.tpot_models = {normalise_api_base(k): f for k, f in (tpot_models or {}).items()}
        self._last_tpot_ms: dict[str, float] = {}

    def load(self, api_base: str) -> ServerLoad | None:
        monitor = self.monitors.get(normalise_api_base(api_base))
        return monitor.latest if monitor else None

    def predicted_tpot_ms(self, api_base: str) -> float | None:
        """TPOT a new request would see now; None if unknown (not monitored, no data yet); inf if down.

        With a TPOT model (a profile) it is the model at running + waiting + 1. Otherwise the last measured
        TPOT, scaled by (running + waiting) / running when requests queue: TPOT grows about linearly with the
        batch once the server is busy, so queued requests are a warning the interval average does not give.
        """
        key = normalise_api_base(api_base)
        load = self.load(key)
        if load is None:
            return None
        if not load.ok:
            return math.inf
        running = load.running or 0.0
        waiting = load.waiting or 0.0
        model = self.tpot_models.get(key)
        if model is not None:
            return float(model(int(running + waiting) + 1))
        if load.tpot_ms is not None:
            self._last_tpot_ms[key] = load.tpot_ms
        tpot = self._last_tpot_ms.get(key)
        if tpot is None:
            return None
        if waiting > 0:
            tpot *= (running + waiting) / max(running, 1.0)
        return tpot

    def context_features(self) -> np.ndarray:
        """A fixed-size vector (see FEATURE_NAMES), each in [0, 1]; zeros when nothing is monitored."""
        features = np.zeros(self.feature_dim, dtype=np.float64)
        if not self.monitors:
            return features
        running, waiting, kv, tpot = [], [], [], []
        unavailable = 0
        for key, monitor in self.monitors.items():
            load = monitor.latest
            if load is None or not load.ok:
                unavailable += 1
                continue
            running.append(min(1.0, (load.running or 0.0) / self.max_running))
            waiting.append(min(1.0, math.log1p(load.waiting or 0.0) / math.log1p(self.max_waiting)))
            kv.append(min(1.0, max(0.0, load.kv_cache_usage or 0.0)))
            predicted = self.predicted_tpot_ms(key)
            if predicted is not None:
                tpot.append(min(1.0, predicted / self.tpot_scale_ms))
        if running:
            features[0] = float(np.mean(running))
            features[1] = float(np.max(running))
            features[2] = float(np.mean(waiting))
            features[3] = float(np.max(kv))
        if tpot:
            features[4] = float(np.mean(tpot))
        features[5] = unavailable / len(self.monitors)
        return features

    def predicted_tpot_by_api_base(self) -> dict[str, float | None]:
        """`predicted_tpot_ms` of every monitored server, ready for `slo_gate`."""
        return {key: self.predicted_tpot_ms(key) for key in self.monitors}


def slo_gate(
    arm_api_bases: Mapping[ArmId, str | None],
    predicted_tpot_ms: Mapping[str, float | None],
    slo_tpot_ms: float,
) -> tuple[list[ArmId], list[ArmId]]:
    """Split arms into (allowed, gated): an arm is gated when its server's predicted TPOT exceeds the SLO.

    Arms with no api_base (hosted APIs) or no prediction (no data yet) are allowed: the gate only acts on
    evidence. If every arm would be gated, those with the lowest predicted TPOT stay allowed, so the router
    always has a choice and degrades to "least loaded" instead of failing.
    """
    if not slo_tpot_ms > 0:
        raise field_error("slo_gate", "slo_tpot_ms", slo_tpot_ms, "give a positive TPOT target in ms")
    predicted = {normalise_api_base(k): v for k, v in predicted_tpot_ms.items()}
    allowed: list[ArmId] = []
    gated: list[ArmId] = []
    tpot_of: dict[ArmId, float] = {}
    for arm_id, api_base in arm_api_bases.items():
        tpot = predicted.get(normalise_api_base(api_base)) if api_base else None
        if tpot is not None and tpot > slo_tpot_ms:
            gated.append(arm_id)
            tpot_of[arm_id] = tpot
        else:
            allowed.append(arm_id)
    if not allowed and gated:
        best = min(tpot_of.values())
        allowed = [a for a in gated if tpot_of[a] == best]
        gated = [a for a in gated if tpot_of[a] != best]
    return allowed, gated
