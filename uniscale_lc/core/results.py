"""Plain data of one request through the core: what is asked, what was decided, what is answered.

`Completion`, `CompletionChunk` and `RouteResult` are what front-ends receive; `RequestOptions`,
`PreparedRequest` and `Outcome` carry a request from its preparation to its record.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..arms import Arm
from ..errors import ModelCallError
from ..policy import Decision
from ..strategies.execute import CallOptions, StrategyResult

__all__ = [
    "Completion",
    "CompletionChunk",
    "Outcome",
    "PreparedRequest",
    "RequestOptions",
    "RouteResult",
    "decision_record",
    "plain_usage",
]

_TOP_SCORES = 5


@dataclasses.dataclass(frozen=True)
class Completion:
    """One answer of the router: text or tool calls, what it cost, and the decision record."""

    text: str
    tool_calls: list[dict[str, Any]]
    finish_reason: str | None
    model: str
    usage: dict[str, Any]
    decision: dict[str, Any]

    @property
    def decision_id(self) -> str:
        """The key to pass to `Router.feedback` (also in `decision["decision_id"]`)."""
        return str(self.decision["decision_id"])


@dataclasses.dataclass(frozen=True)
class CompletionChunk:
    """A piece of a streamed answer; the last chunk carries the whole `Completion` (usage, decision)."""

    text: str = ""
    tool_calls: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    completion: Completion | None = None
    # The decision and the litellm model of the arm that is answering, on every chunk: a fallback happens
    # only before the first chunk, so a front-end can name the decision before the stream's body (the
    # server's x-uniscale-decision-id header).
    decision_id: str | None = None
    model: str | None = None


@dataclasses.dataclass(frozen=True)
class RouteResult:
    """The arm chosen for a request the caller runs itself; feedback on `decision_id` teaches the policy."""

    decision_id: str
    arm_id: str
    model: str
    strategy: str
    predicted_cost_usd: float
    record: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class RequestOptions:
    """Per-request options; None means the router's configured default."""

    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    slo_tpot_ms: float | None = None
    extra: Mapping[str, Any] | None = None  # passed to the provider as is
    # Routing controls for this request only; never sent to a provider.
    cost_weight: float | None = None
    budget_usd_per_request: float | None = None
    # What the application knows about the request (RouterConfig.tag_buckets; uniscale_lc/tags.py).
    tags: tuple[str, ...] = ()


@dataclasses.dataclass
class PreparedRequest:
    """Everything decided before the first model call of one request."""

    x: np.ndarray
    candidates: tuple[str, ...]
    penalties: dict[str, float]
    predicted_cost: dict[str, float]
    reference_cost_usd: float
    cost_weight: float
    prompt_tokens: int
    openai_messages: list[dict[str, Any]]
    options: CallOptions
    request_id: str | None
    slo_gate: dict[str, Any] | None = None
    breaker_blocked: list[str] = dataclasses.field(default_factory=list)
    budget_usd_per_request: float | None = None
    # `penalties` as an array aligned with `candidates`: what the policy takes while no arm has failed.
    penalty_array: np.ndarray | None = None
    started: float = dataclasses.field(default_factory=time.perf_counter)


@dataclasses.dataclass
class Outcome:
    """The arm that answered, its decision and result, and the arms that failed before it."""

    arm: Arm
    decision: Decision
    result: StrategyResult
    failures: list[tuple[str, ModelCallError]]


def plain_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Usage summed over every call of the strategy, as plain numbers."""
    input_tokens, output_tokens = int(usage["input_tokens"]), int(usage["output_tokens"])
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
        "cost_usd": float(usage["cost_usd"]),
        "calls": int(usage["calls"]),
    }


def decision_record(
    request: PreparedRequest,
    outcome: Outcome,
    decision_id: str,
    run_id: str | None,
) -> dict[str, Any]:
    """The plain-data record of one decision (UniScaleChat's response_metadata['uniscale'])."""
    arm, result = outcome.arm, outcome.result
    usage = result.usage
    return {
        "decision_id": decision_id,
        "arm": arm.id,
        "model": arm.model.model,
        "strategy": arm.strategy.label,
        "kind": arm.strategy.kind,
        "n": arm.strategy.budget,
        "cost_usd": float(usage["cost_usd"]),
        "latency_s": time.perf_counter() - request.started,
        "input_tokens": int(usage["input_tokens"]),
        "output_tokens": int(usage["output_tokens"]),
        "calls": int(usage["calls"]),
        "scores": [score.to_dict() for score in outcome.decision.scores[:_TOP_SCORES]],
        "predicted_cost_usd": request.predicted_cost.get(arm.id, 0.0),
        "reference_cost_usd": request.reference_cost_usd,
        "cost_weight": request.cost_weight,
        "budget_usd_per_request": request.budget_usd_per_request,
        "fallbacks": [
            {"arm": arm_id, "error": type(error).__name__, "message": str(error)[:300]}
            for arm_id, error in outcome.failures
        ],
        "details": result.details,
        "run_id": run_id,
        "request_id": request.request_id,
        "policy": outcome.decision.policy,
        "slo_gate": request.slo_gate,
        "breaker_blocked": request.breaker_blocked,
    }
