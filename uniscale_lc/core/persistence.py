"""The router's learnt state as one tree for `store.save_state`, and loading it back with a report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..arms import ArmSpace
from ..costs import BudgetPacer, CostModel
from ..errors import StateError
from ..feedback import FeedbackStore
from .stats import RouterStats

__all__ = ["STATE_KEYS", "load_tree", "state_tree"]

STATE_KEYS = ("policy", "cost_model", "feedback", "pacer", "stats")


def state_tree(
    policy: Any,
    cost_model: CostModel,
    feedback: FeedbackStore,
    pacer_state: dict[str, Any] | None,
    stats: RouterStats,
    arm_space: ArmSpace,
) -> dict[str, Any]:
    return {
        "policy": policy.state_dict(),
        "cost_model": cost_model.state_dict(),
        "feedback": feedback.to_dict(),
        "pacer": pacer_state,
        "stats": stats.state_dict(),
        "arm_ids": list(arm_space.ids),
    }


def load_tree(
    tree: Mapping[str, Any],
    source: str,
    *,
    policy: Any,
    cost_model: CostModel,
    feedback: FeedbackStore,
    pacer: BudgetPacer | None,
    stats: RouterStats,
    arm_space: ArmSpace,
) -> list[str]:
    """Load every part; returns what was dropped or kept aside (arms no longer configured, expired decisions)."""
    missing = [key for key in STATE_KEYS if key not in tree]
    if missing:
        raise StateError(
            f"state file {source} lacks {missing}; it was not written by uniscale-lc. "
            "Point state_path at another file, or delete it to start afresh"
        )
    report: list[str] = []
    kept_aside = policy.load_state_dict(tree["policy"])
    if kept_aside:
        report.append(
            f"policy: kept learnt state of {len(kept_aside)} arms no longer configured: {kept_aside[:5]}"
        )
    cost_model.load_state_dict(tree["cost_model"])
    known = set(arm_space.ids)
    # A pending decision whose context is not the policy's shape could never be learnt (and a huge one
    # would allocate its outer product on feedback): dropped and reported like one of a removed arm.
    dim = getattr(policy, "context_dim", None)
    shape = None if dim is None else (int(dim),)

    def keep(pending: Any) -> bool:
        context = pending.decision.context
        return pending.arm_id in known and (shape is None or getattr(context, "shape", None) == shape)

    dropped = feedback.load_dict(tree["feedback"], keep=keep)
    if dropped:
        report.append(
            f"feedback: dropped {dropped} pending decisions (expired, unreadable or of removed arms)"
        )
    if tree.get("pacer") is not None:
        if pacer is not None:
            pacer.load_state_dict(tree["pacer"])
        else:
            report.append("pacer: saved budget pacer ignored (budget_usd_per_request is not set)")
    stats.load_state_dict(tree.get("stats") or {})
    return report
