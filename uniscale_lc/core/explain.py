"""`explain`: how every arm would score for one context now; nothing is learnt or called."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..costs import CostModel, cost_penalty

__all__ = ["explain_rows"]


def explain_rows(
    policy: Any,
    cost_model: CostModel,
    x: np.ndarray,
    arm_ids: Sequence[str],
    prompt_tokens: int,
    cost_weight: float,
) -> list[dict[str, Any]]:
    """Predicted quality, bonus, bound, cost, penalty and score per arm, sorted best first.

    `predicted_quality` is clipped to [0, 1], the range of a quality: a linear model may extrapolate past
    it. `bound` and `score` are the policy's own, unclipped numbers (what it ranks arms by).
    """
    ids = list(arm_ids)
    prediction = cost_model.predict(prompt_tokens, ids)
    penalty, _ = cost_penalty(prediction.cost_usd, cost_weight)
    scorer = getattr(policy, "score", None)
    if callable(scorer):
        ids, mean, bonus, penalty = scorer(x, ids, penalty)
    else:  # baselines: their recorded scores for a (discarded) decision
        decision = policy.select(x, ids, penalty)
        by_id = {score.arm_id: score for score in decision.scores}
        mean = np.array([by_id[i].mean if i in by_id else math.nan for i in ids])
        bonus = np.array([by_id[i].bonus if i in by_id else math.nan for i in ids])
    rows: list[dict[str, Any]] = [
        {
            "arm": arm_id,
            "predicted_quality": min(1.0, max(0.0, float(mean[index]))),
            "bonus": float(bonus[index]),
            "bound": float(mean[index] + bonus[index]),
            "predicted_cost_usd": float(prediction.cost_usd[index]),
            "penalty": float(penalty[index]),
            "score": float(mean[index] + bonus[index] - penalty[index]),
        }
        for index, arm_id in enumerate(ids)
    ]
    rows.sort(key=lambda row: -row["score"] if math.isfinite(row["score"]) else math.inf)
    return rows
