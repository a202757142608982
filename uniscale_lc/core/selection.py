"""Which arms a request may use: the model it pins, tools, the SLO gate. Pure functions over the arm space."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..arms import ArmSpace
from ..errors import ConfigError
from ..serving.load import slo_gate
from ..strategies.config import Single

__all__ = ["candidate_arms", "slo_gated", "tool_arms"]


def tool_arms(arm_space: ArmSpace, arm_ids: Sequence[str]) -> list[str]:
    """The arms among `arm_ids` that can carry tool calls (Single strategy, supports_tools model)."""
    return [
        arm_id
        for arm_id in arm_ids
        if (arm := arm_space.get(arm_id)) is not None
        and arm.model.supports_tools
        and isinstance(arm.strategy, Single)
    ]


def candidate_arms(arm_space: ArmSpace, tools: bool, model: str | None) -> tuple[str, ...]:
    """The arms a request may use: those of `model` if given, those that take tools if tools are given."""
    ids: list[str] = list(arm_space.ids)
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
    return tuple(ids)


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
