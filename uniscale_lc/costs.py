"""Cost maths: predict each arm's cost before it runs, normalise it scale-free, turn it into reward.

Design: the policy learns *quality*; cost is predicted by this module and subtracted at selection time
(`penalty = cost_weight * predicted_cost / reference`). A price change or a new cost weight therefore
takes effect at once, without relearning. The reward reported for a decision is
`quality - cost_weight * realised_cost / reference`, where `reference` is the largest predicted cost
among the candidate arms for that request. Dividing by a cost of the same request makes the weight
scale-free: multiplying every price by 100 changes nothing, so prices of $0.10 and $10 per million
tokens need no retuning, and `cost_weight = 0.2` reads "running the most expensive arm must buy at
least 0.2 more quality than a free one".
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .arms import ArmSpace
from .errors import ConfigError, StateError

__all__ = [
    "COST_REFERENCES",
    "BudgetPacer",
    "CostModel",
    "CostPrediction",
    "cost_penalty",
    "estimate_tokens",
    "reward_from",
]

CHARS_PER_TOKEN = 4.0


def estimate_tokens(text: str) -> int:
    """Prompt tokens before the call: about four characters a token (at least 1)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def _check_cost_weight(cost_weight: float, owner: str) -> None:
    if not (math.isfinite(cost_weight) and cost_weight >= 0.0):
        raise ConfigError(f"{owner}: got {cost_weight!r}; use a finite weight >= 0 (e.g. 0.2)")


# How the reference cost of a request is taken from its candidates' predicted costs. "max" (the default):
# the dearest candidate, so cost_weight reads "the dearest arm must buy cost_weight more quality than a
# free one". "geomean": their geometric mean, which the dearest outlier does not dominate. Replayed on all
# five shared data sets (docs/results.md, "Variants"), the geometric mean lost on three and tied on two.
COST_REFERENCES = ("max", "geomean")


def cost_penalty(
    predicted_cost_usd: np.ndarray, cost_weight: float, reference: str = "max"
) -> tuple[np.ndarray, float]:
    """(penalty per arm, reference cost): `cost_weight * cost / reference cost`; zeros when all are free."""
    costs = np.asarray(predicted_cost_usd, dtype=np.float64)
    if not (np.isfinite(costs).all() and (costs >= 0).all()):
        raise ConfigError(
            "cost_penalty.predicted_cost_usd: got NaN, infinite or negative costs; pass costs >= 0"
        )
    _check_cost_weight(cost_weight, "cost_penalty.cost_weight")
    if reference not in COST_REFERENCES:
        raise ConfigError(f"cost_penalty.reference: got {reference!r}; choose from {list(COST_REFERENCES)}")
    positive = costs[costs > 0.0]
    if positive.size == 0:
        return np.zeros_like(costs), 0.0
    scale = float(positive.max()) if reference == "max" else float(np.exp(np.log(positive).mean()))
    if cost_weight == 0.0:
        return np.zeros_like(costs), scale
    return cost_weight * costs / scale, scale


def reward_from(quality: float, cost_usd: float, reference_usd: float, cost_weight: float) -> float:
    """`quality - cost_weight * cost_usd / reference_usd` (no cost term when the reference is 0)."""
    if not (0.0 <= quality <= 1.0) or not math.isfinite(quality):
        raise ConfigError(f"quality: got {quality!r}; scores must be finite and in [0, 1]")
    for name, value in (("cost_usd", cost_usd), ("reference_usd", reference_usd)):
        if not (math.isfinite(value) and value >= 0.0):
            raise ConfigError(f"reward_from.{name}: got {value!r}; pass a finite cost >= 0")
    _check_cost_weight(cost_weight, "reward_from.cost_weight")
    if reference_usd <= 0.0:
        return quality
    return quality - cost_weight * cost_usd / reference_usd


@dataclass(frozen=True)
class CostPrediction:
    """Predicted cost, tokens, calls and latency of every candidate arm for one request."""

    arm_ids: tuple[str, ...]
    cost_usd: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    calls: np.ndarray
    latency_s: np.ndarray

    def for_arm(self, arm_id: str) -> dict[str, float]:
        index = self.arm_ids.index(arm_id)
        return {
            "cost_usd": float(self.cost_usd[index]),
            "input_tokens": float(self.input_tokens[index]),
            "output_tokens": float(self.output_tokens[index]),
            "calls": float(self.calls[index]),
            "latency_s": float(self.latency_s[index]),
        }


class _RunningMeans:
    """Means of a few quantities with a bounded memory (an EMA once `window` observations are in)."""

    __slots__ = ("count", "means")

    def __init__(self, keys: Sequence[str]):
        self.count = 0.0
        self.means = dict.fromkeys(keys, 0.0)

    def add(self, values: Mapping[str, float], window: int) -> None:
        self.count = min(self.count + 1.0, float(window))
        for key, value in values.items():
            self.means[key] += (value - self.means[key]) / self.count

    def state(self) -> dict[str, float]:
        return {"count": self.count, **self.means}

    def load(self, state: Mapping[str, Any]) -> None:
        count = float(state["count"])
        values = {key: float(state[key]) for key in self.means}
        if count < 0 or not all(math.isfinite(v) for v in (count, *values.values())):
            raise StateError(
                "cost_model: negative count or non-finite mean; the state file was edited or corrupt"
            )
        self.count, self.means = count, values


_PER_CALL = ("calls", "input_overhead", "output_tokens", "latency_s")


class CostModel:
    """Predicts per-arm cost from prompt tokens, learnt output tokens, calls, prices and latency.

    What is learnt per arm is shrunk toward what is known about its model (`prior_strength`
    pseudo-observations), so a new budget of a known model starts from that model's output lengths.
    """

    def __init__(
        self,
        arm_space: ArmSpace,
        *,
        default_output_tokens: float = 256.0,
        default_latency_s_per_call: float = 2.0,
        prior_strength: float = 3.0,
        window: int = 1000,
    ):
        if default_output_tokens <= 0 or default_latency_s_per_call <= 0 or prior_strength < 0 or window < 1:
            raise ConfigError(
                "CostModel: default_output_tokens and default_latency_s_per_call must be > 0, "
                "prior_strength >= 0 and window >= 1"
            )
        self.arm_space = arm_space
        self.default_output_tokens = float(default_output_tokens)
        self.default_latency_s_per_call = float(default_latency_s_per_call)
        self.prior_strength = float(prior_strength)
        self.window = int(window)
        self._lock = threading.RLock()
        self._per_arm: dict[str, _RunningMeans] = {}
        self._per_model: dict[str, _RunningMeans] = {}
        self._cache: dict[str, tuple[float, float, float, float, float, float, float]] = {}
        self._cache_version = -1

    def observe(
        self,
        arm_id: str,
        prompt_tokens: float,
        *,
        input_tokens: float,
        output_tokens: float,
        calls: float,
        latency_s: float,
    ) -> None:
        """Learn from one finished request's usage (totals over all the strategy's calls)."""
        values = {
            "prompt_tokens": prompt_tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "calls": calls,
            "latency_s": latency_s,
        }
        for key, value in values.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"CostModel.observe.{key}: got {value!r}; pass a finite number >= 0")
        if calls < 1:
            return  # nothing was called (e.g. every call failed before usage); nothing to learn
        with self._lock:
            arm = self.arm_space.get(arm_id)
            per_call = {
                "calls": float(calls),
                "input_overhead": max(0.0, input_tokens / calls - prompt_tokens),
                "output_tokens": output_tokens / calls,
                "latency_s": latency_s / calls,
            }
            self._per_arm.setdefault(arm_id, _RunningMeans(_PER_CALL)).add(per_call, self.window)
            self._invalidate_model(arm.model.display_name if arm is not None else None, arm_id)
            if arm is not None:
                self._per_model.setdefault(arm.model.display_name, _RunningMeans(_PER_CALL)).add(
                    per_call, self.window
                )

    def _shrunk(self, own: _RunningMeans | None, key: str, prior: float) -> float:
        if own is None or own.count == 0:
            return prior
        weight = self.prior_strength
        return (own.count * own.means[key] + weight * prior) / (own.count + weight)

    def _coefficients(self, arm_id: str) -> tuple[float, float, float, float, float, float, float]:
        """Per-arm terms of the prediction, which is affine in the prompt's token count:

        cost = cost0 + cost1 * prompt, input tokens = in0 + in1 * prompt; then output tokens, calls, latency.
        """
        arm = self.arm_space[arm_id]
        model_stats = self._per_model.get(arm.model.display_name)
        own = self._per_arm.get(arm_id)
        model_output = self._shrunk(model_stats, "output_tokens", self.default_output_tokens)
        model_overhead = self._shrunk(model_stats, "input_overhead", 0.0)
        model_latency = self._shrunk(model_stats, "latency_s", self.default_latency_s_per_call)
        n_calls = self._shrunk(own, "calls", arm.strategy.expected_calls)
        output_per_call = self._shrunk(own, "output_tokens", model_output)
        overhead_per_call = self._shrunk(own, "input_overhead", model_overhead)
        latency_per_call = self._shrunk(own, "latency_s", model_latency)
        spec = arm.model
        input_price = float(spec.input_usd_per_mtok or 0.0) / 1e6
        output_price = float(spec.output_usd_per_mtok or 0.0) / 1e6
        gpu_cost = latency_per_call * float(spec.gpu_usd_per_hour or 0.0) / 3600.0
        return (
            n_calls * (overhead_per_call * input_price + output_per_call * output_price + gpu_cost),
            n_calls * input_price,
            n_calls * overhead_per_call,
            n_calls * output_per_call,
            n_calls,
            latency_per_call * _sequential_calls(arm.strategy.kind, n_calls),
            n_calls,  # input tokens grow by n_calls per prompt token
        )

    def predict(self, prompt_tokens: float, arm_ids: Sequence[str] | None = None) -> CostPrediction:
        """Predicted cost of each arm for a prompt of `prompt_tokens` tokens.

        Per-arm coefficients are cached until that arm's model learns something or the arm space changes,
        so a request costs O(K) numpy work rather than K Python-level predictions.
        """
        if not (
            isinstance(prompt_tokens, (int, float)) and math.isfinite(prompt_tokens) and prompt_tokens >= 0
        ):
            raise ConfigError(f"CostModel.predict.prompt_tokens: got {prompt_tokens!r}; pass a count >= 0")
        ids = self.arm_space.ids if arm_ids is None else tuple(arm_ids)
        with self._lock:
            if self._cache_version != self.arm_space.version:
                self._cache.clear()
                self._cache_version = self.arm_space.version
            rows = []
            for arm_id in ids:
                row = self._cache.get(arm_id)
                if row is None:
                    row = self._cache[arm_id] = self._coefficients(arm_id)
                rows.append(row)
        table = np.array(rows, dtype=np.float64).reshape(len(ids), 7)
        tokens = float(prompt_tokens)
        return CostPrediction(
            ids,
            table[:, 0] + table[:, 1] * tokens,
            table[:, 2] + table[:, 6] * tokens,
            table[:, 3].copy(),
            table[:, 4].copy(),
            table[:, 5].copy(),
        )

    def _invalidate_model(self, model_name: str | None, arm_id: str) -> None:
        """Drop cached coefficients of `arm_id` and of every arm on the same model (they share its stats)."""
        self._cache.pop(arm_id, None)
        if model_name is not None:
            for other in self.arm_space.ids_of_model(model_name):
                self._cache.pop(other, None)

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "per_arm": {arm_id: stats.state() for arm_id, stats in self._per_arm.items()},
                "per_model": {name: stats.state() for name, stats in self._per_model.items()},
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        per_arm: dict[str, _RunningMeans] = {}
        per_model: dict[str, _RunningMeans] = {}
        for target, key in ((per_arm, "per_arm"), (per_model, "per_model")):
            for name, stats_state in dict(state.get(key, {})).items():
                stats = _RunningMeans(_PER_CALL)
                try:
                    stats.load(stats_state)
                except (KeyError, TypeError, ValueError) as error:
                    raise StateError(
                        f"cost_model.{key}[{name!r}]: {error}; the state file was edited or corrupt"
                    ) from None
                target[str(name)] = stats
        with self._lock:
            self._per_arm, self._per_model = per_arm, per_model
            self._cache.clear()


def _sequential_calls(kind: str, calls: float) -> float:
    """Calls on the critical path: samples run in parallel; reflection's rounds run one after another."""
    if kind == "reflection":
        return calls
    if kind == "best_of_n":
        return 2.0 if calls > 1 else 1.0  # samples in parallel, then judges in parallel
    return 1.0


class BudgetPacer:
    """Adapts the cost weight online so that average spend per request tracks a target.

    Multiplicative control on an exponential moving average of spend:
    `weight <- weight * exp(gain * clip((ema - target) / target, -1, 1))`. Measured with the defaults
    (tests/test_costs.py: six arms costing 0.2 to 25 thousandths of a dollar, noisy qualities, start
    weight 0.5): spend averaged over blocks of 200 requests is within 10% of the target after 400
    requests when the right weight is 7x the start (target $0.001), at once when it is 2x below
    (target $0.008), and the long-run mean is within 1% of the target.
    """

    def __init__(
        self,
        target_usd_per_request: float,
        *,
        initial_cost_weight: float = 0.5,
        gain: float = 0.05,
        window: int = 50,
        min_weight: float = 1e-4,
        max_weight: float = 1e4,
    ):
        if not (math.isfinite(target_usd_per_request) and target_usd_per_request > 0):
            raise ConfigError(
                f"BudgetPacer.target_usd_per_request: got {target_usd_per_request!r}; use a price > 0"
            )
        if not (0 < gain <= 1) or window < 1 or not (0 < min_weight <= initial_cost_weight <= max_weight):
            raise ConfigError(
                "BudgetPacer: need 0 < gain <= 1, window >= 1, min_weight <= initial_cost_weight <= max_weight"
            )
        self.target = float(target_usd_per_request)
        self.gain = gain
        self.window = window
        self.min_weight = min_weight
        self.max_weight = max_weight
        self.cost_weight = float(initial_cost_weight)
        self.spend_ema: float | None = None
        self.requests = 0

    def observe(self, cost_usd: float) -> float:
        """Record one request's spend; returns the cost weight to use from now on."""
        if not (math.isfinite(cost_usd) and cost_usd >= 0):
            raise ConfigError(f"BudgetPacer.observe.cost_usd: got {cost_usd!r}; pass a finite cost >= 0")
        self.requests += 1
        smoothing = 1.0 / min(self.requests, self.window)
        self.spend_ema = (
            cost_usd if self.spend_ema is None else self.spend_ema + smoothing * (cost_usd - self.spend_ema)
        )
        error = max(-1.0, min(1.0, (self.spend_ema - self.target) / self.target))
        self.cost_weight = min(
            self.max_weight, max(self.min_weight, self.cost_weight * math.exp(self.gain * error))
        )
        return self.cost_weight

    def state_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "cost_weight": self.cost_weight,
            "spend_ema": self.spend_ema,
            "requests": self.requests,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        weight = float(state["cost_weight"])
        if not (math.isfinite(weight) and weight > 0):
            raise StateError(f"budget.cost_weight: got {weight!r}; the state file was edited or corrupt")
        spend_ema = None if state.get("spend_ema") is None else float(state["spend_ema"])
        if spend_ema is not None and not (math.isfinite(spend_ema) and spend_ema >= 0):
            raise StateError(f"budget.spend_ema: got {spend_ema!r}; the state file was edited or corrupt")
        requests = int(state.get("requests", 0))
        if requests < 0:
            raise StateError(f"budget.requests: got {requests!r}; the state file was edited or corrupt")
        self.cost_weight = min(self.max_weight, max(self.min_weight, weight))
        self.spend_ema = spend_ema
        self.requests = requests
