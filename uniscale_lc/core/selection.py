"""Which arms a request may use: the model it pins, tools, the SLO gate. Pure functions over the arm space."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..arms import ArmSpace
from ..errors import ConfigError
from ..serving.load import slo_gate
from ..strategies.config import Single

__all__ = ["candidate_arms", "slo_gated", "tool_arms", "within_budget"]


def tool_arms(arm_space: ArmSpace, arm_ids: Sequence[str]) -> list[str]:
    """The arms among `arm_ids` that can carry tool calls (Single strategy, supports_tools model)."""
    return [
        arm_id
        for arm_id in arm_ids
        if (arm := arm_space.get(arm_id)) is not None
        and arm.model.supports_tools
        and isinstance(arm.strategy, Single)
    ]


def candidate_arms(
    arm_space: ArmSpace,
    tools: bool,
    model: str | None,
    *,
    response_format: bool = False,
    unavailable: Mapping[str, str] | None = None,
) -> tuple[str, ...]:
    """The arms a request may use: those of `model` if given, those that take tools if tools are given,
    those whose model takes `response_format` if it is set; never a model in `unavailable` (display name
    -> why, e.g. its key variable is not set)."""
    ids: Sequence[str] = arm_space.ids
    if unavailable:
        if model is not None:
            for arm_id in ids:
                spec = arm_space[arm_id].model
                if spec.display_name in unavailable and model in (spec.model, spec.display_name):
                    raise ConfigError(f"model: {model!r} is left out: {unavailable[spec.display_name]}")
        ids = [arm_id for arm_id in ids if arm_space[arm_id].model.display_name not in unavailable]
    if model is not None:
        ids = [
            arm_id
            for arm_id in ids
            if model in (arm_space[arm_id].model.model, arm_space[arm_id].model.display_name)
        ]
        if not ids:
            known = sorted({m.display_name for m in arm_space.models})
            raise ConfigError(f"model: got {model!r}, which no arm runs; use one of {known} or leave it out")
    if tools:
        ids = tool_arms(arm_space, ids)
        if not ids:
            raise ConfigError(
                "tools: no candidate arm can take tools; tools need a Single() strategy on a ModelSpec "
                "with supports_tools=True"
            )
    if response_format:
        ids = [arm_id for arm_id in ids if arm_space[arm_id].model.supports_response_format]
        if not ids:
            raise ConfigError(
                "response_format: no candidate arm takes it; give a ModelSpec supports_response_format=True, "
                "or use with_structured_output(method='function_calling')"
            )
    return tuple(ids)


def within_budget(costs: np.ndarray, budget_usd: float) -> np.ndarray:
    """Which arms are predicted to cost at most `budget_usd`; the cheapest when none is (never none)."""
    keep = costs <= budget_usd
    if not keep.any():
        keep = costs <= costs.min()
    return keep


def slo_gated(
    arm_space: ArmSpace,
    candidates: tuple[str, ...],
    predicted: Mapping[str, float | None],
    slo_tpot_ms: float,
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Drop arms whose server is predicted to break the TPOT SLO (never all of them), and say what acted."""
    api_bases = {arm_id: arm_space[arm_id].model.api_base for arm_id in candidates}
    allowed, gated = slo_gate(api_bases, predicted, slo_tpot_ms)
    record = {
        "slo_tpot_ms": slo_tpot_ms,
        "acted": bool(gated),
        "gated_arms": list(gated),
        "predicted_tpot_ms": {
            base: (None if value is None else float(value))
            for base, value in predicted.items()
            if value is None or math.isfinite(value)
        },
    }
    return tuple(allowed), record
