"""Request, pull, failure, feedback and cost counters of a router; thread-safe and persisted with it."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["RouterStats"]


def _new_arm() -> dict[str, Any]:
    return {"pulls": 0, "failures": 0, "feedback": 0, "quality_sum": 0.0, "reward_sum": 0.0, "cost_usd": 0.0}


class RouterStats:
    """Counters only; what they mean for learning lives in the policy and the cost model."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.requests = 0
        self.failed_requests = 0
        self.routes = 0
        self.side_observations = 0  # implied-arm updates (side_observations.py) beyond the scored arms
        self.warm_start_records = 0  # labelled outcomes taught by `fit` (not requests: no pulls, no cost)
        self.arms: dict[str, dict[str, Any]] = {}

    def _arm(self, arm_id: str) -> dict[str, Any]:
        return self.arms.setdefault(arm_id, _new_arm())

    def answered(self, arm_id: str, cost_usd: float) -> None:
        with self._lock:
            self.requests += 1
            arm = self._arm(arm_id)
            arm["pulls"] += 1
            arm["cost_usd"] += cost_usd

    def routed(self) -> None:
        with self._lock:
            self.routes += 1

    def arm_failed(self, arm_id: str, *, request_failed: bool = False) -> None:
        with self._lock:
            self._arm(arm_id)["failures"] += 1
            if request_failed:
                self.failed_requests += 1

    def request_failed(self) -> None:
        with self._lock:
            self.failed_requests += 1

    def warm_started(self, records: int) -> None:
        with self._lock:
            self.warm_start_records += records

    def scored(self, arm_id: str, quality: float, reward: float) -> None:
        with self._lock:
            arm = self._arm(arm_id)
            arm["feedback"] += 1
            arm["quality_sum"] += quality
            arm["reward_sum"] += reward

    def side_observed(self, count: int = 1) -> None:
        with self._lock:
            self.side_observations += count

    def summary(self) -> dict[str, Any]:
        """Per-arm pulls, failures, feedback count, mean quality, mean reward and total cost."""
        with self._lock:
            arms: dict[str, Any] = {}
            for arm_id, raw in self.arms.items():
                count = raw["feedback"]
                arms[arm_id] = {
                    "pulls": raw["pulls"],
                    "failures": raw["failures"],
                    "feedback": count,
                    "mean_quality": raw["quality_sum"] / count if count else None,
                    "mean_reward": raw["reward_sum"] / count if count else None,
                    "total_cost_usd": raw["cost_usd"],
                }
            return {
                "requests": self.requests,
                "failed_requests": self.failed_requests,
                "routes": self.routes,
                "side_observations": self.side_observations,
                "warm_start_records": self.warm_start_records,
                "total_cost_usd": sum(raw["cost_usd"] for raw in self.arms.values()),
                "arms": arms,
            }

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "failed_requests": self.failed_requests,
                "routes": self.routes,
                "side_observations": self.side_observations,
                "warm_start_records": self.warm_start_records,
                "arms": {arm_id: dict(values) for arm_id, values in self.arms.items()},
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        with self._lock:
            self.requests = int(state.get("requests", 0))
            self.failed_requests = int(state.get("failed_requests", 0))
            self.routes = int(state.get("routes", 0))
            self.side_observations = int(state.get("side_observations", 0))
            self.warm_start_records = int(state.get("warm_start_records", 0))
            self.arms = {str(k): dict(v) for k, v in dict(state.get("arms", {})).items()}
