"""What a large action space costs the learner: UniScale on every arm against UniScale on the few that matter.

Issue 9 asked whether the unified space "costs exploration instead of giving synergy: the more arms, the
further behind". This module measures it directly. The *pool* is the arms that a hindsight look at the
whole stream says matter: every arm that is the best fixed arm at some cost weight of the sweep (so the
best-fixed-arm frontier is the same with and without the other arms), plus the `top_k` most accurate. The
same learner, seeds and question orders then run on the full space and on the pool, and both frontiers are
scored on the full space's cost range, so the two AIQs compare. Handing a learner the pool is a peek no real
deployment has: it bounds what shrinking the action space could buy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from .metrics import aiq
from .report import hindsight_frontier, learner_frontier
from .runner import ReplayConfig, ReplayEnvironment, hindsight_choice
from .sweep import run_sweep

__all__ = ["POOL_TABLE_HEADER", "arms_that_matter", "compare_with_pool", "pool_environment", "pool_table_row"]

# The Markdown table that scripts/arm_pool.py prints and docs/results.md holds (one row per dataset).
POOL_TABLE_HEADER = (
    "| dataset | arms | pool | UniScale, every arm | UniScale, pool | best fixed arm |",
    "|---|---:|---:|---:|---:|---:|",
)


def arms_that_matter(env: ReplayEnvironment, cost_weights: tuple[float, ...], top_k: int) -> tuple[str, ...]:
    """Arm ids, in column order: the best fixed arm of each cost weight, and the `top_k` most accurate."""
    if top_k < 0:
        raise ValueError(f"top_k: got {top_k}; use >= 0")
    keep = {int(hindsight_choice(env, weight, per_question=False)[0]) for weight in cost_weights}
    quality = env.outcomes.mean_quality()
    # Most accurate first; ties to the earlier column, as the fixed-arm choice breaks them.
    by_accuracy = np.lexsort((np.arange(quality.size), -quality))
    keep.update(int(column) for column in by_accuracy[:top_k])
    return tuple(env.outcomes.arm_ids[column] for column in sorted(keep))


def pool_environment(env: ReplayEnvironment, arm_ids: tuple[str, ...]) -> ReplayEnvironment:
    """The same questions, features and prices with only the named arms (the dearest-arm reference too)."""
    outcomes = env.outcomes.select_arms(arm_ids)
    return dataclasses.replace(
        env,
        outcomes=outcomes,
        arm_models=tuple(arm.model for arm in outcomes.arms),
        reference_cost=np.nanmax(outcomes.cost_usd, axis=1),
    )


def compare_with_pool(
    env: ReplayEnvironment,
    config: ReplayConfig,
    top_k: int = 3,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """AIQ of each of `config.learners` on every arm and on the pool, and of the best fixed arm, on one range."""
    pool_ids = arms_that_matter(env, config.cost_weights, top_k)
    pool = pool_environment(env, pool_ids)
    full_traces = run_sweep(env, config, progress)
    pool_traces = run_sweep(pool, config, progress)
    fixed = hindsight_frontier(env, config.cost_weights, per_question=False)
    frontiers = {"best_fixed_arm": fixed}
    for learner in config.learners:
        frontiers[f"{learner}_all_arms"] = learner_frontier(full_traces, learner, config)
        frontiers[f"{learner}_pool"] = learner_frontier(pool_traces, learner, config)
    costs = [point["cost_usd_per_query"] for frontier in frontiers.values() for point in frontier]
    costs += [trace.cost_usd_per_query for trace in (*full_traces.values(), *pool_traces.values())]
    cost_range = (min(costs), max(costs))

    def score(frontier: list[dict[str, Any]]) -> float:
        return aiq([p["cost_usd_per_query"] for p in frontier], [p["accuracy"] for p in frontier], cost_range)

    return {
        "dataset": env.name,
        "n_questions": env.n_questions,
        "n_arms": len(env.outcomes.arms),
        "pool": list(pool_ids),
        "top_k": top_k,
        "seeds": config.seeds,
        "cost_range": list(cost_range),
        "aiq": {name: score(frontier) for name, frontier in frontiers.items()},
    }


def pool_table_row(name: str, result: dict[str, Any]) -> str:
    """One dataset's row of `POOL_TABLE_HEADER` from `compare_with_pool`'s result (the `uniscale` learner)."""
    scores = result["aiq"]
    return (
        f"| {name} | {result['n_arms']} | {len(result['pool'])} | {scores['uniscale_all_arms']:.4f} "
        f"| {scores['uniscale_pool']:.4f} | {scores['best_fixed_arm']:.4f} |"
    )
