"""What knowing each question's task buys a two-model router (aim 3 of issue 9; docs/features.md, 'Request tags').

A *per-task router* sends every question of a task to the same model. Ranking the tasks by how much the strong
model beats the weak one (mean quality difference) and sending the first k to the weak model traces its
quality-cost curve, k = 0 .. all; RouteLLM's cost reduction at 95% of the strong arm's accuracy is read off it
as the replay reads it off a learner's (`metrics.cost_at_fraction_of_best`, on the hull). *In hindsight*
(ranked and scored on every question) bounds any router that knows only the task; *held out* (ranked on the
warm start's labelled 30%, scored on the other 70%) is what such a router fitted offline would get.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import cost_at_fraction_of_best
from .runner import ReplayEnvironment
from .warm import warm_split

__all__ = ["TwoModelTable", "cost_reduction", "task_advantage", "task_router_bounds", "two_model_table"]


@dataclass(frozen=True)
class TwoModelTable:
    """Per-question quality and cost of the strong (more accurate) and the weak arm, and each question's task."""

    strong_quality: np.ndarray
    weak_quality: np.ndarray
    strong_cost: np.ndarray
    weak_cost: np.ndarray
    task: np.ndarray  # int index per question

    def select(self, questions: np.ndarray) -> TwoModelTable:
        return TwoModelTable(
            self.strong_quality[questions],
            self.weak_quality[questions],
            self.strong_cost[questions],
            self.weak_cost[questions],
            self.task[questions],
        )


def two_model_table(env: ReplayEnvironment) -> TwoModelTable:
    """The environment's two arms as strong/weak columns; an error unless it has exactly two, fully recorded."""
    outcomes = env.outcomes
    if len(outcomes.arms) != 2:
        raise ValueError(f"{outcomes.dataset}: {len(outcomes.arms)} arms; this bound is for two-model tables")
    if np.isnan(outcomes.quality).any() or np.isnan(outcomes.cost_usd).any():
        raise ValueError(f"{outcomes.dataset}: some questions lack an arm's outcome; the bound needs both")
    strong = int(np.argmax(outcomes.mean_quality()))
    weak = 1 - strong
    if outcomes.mean_cost_usd()[strong] <= outcomes.mean_cost_usd()[weak]:
        raise ValueError(
            f"{outcomes.dataset}: the more accurate arm is not the dearer one, so always calling it is best "
            "and a cost reduction at 95% of it does not apply"
        )
    _, task = np.unique(np.asarray(outcomes.tasks, dtype=object), return_inverse=True)
    return TwoModelTable(
        outcomes.quality[:, strong],
        outcomes.quality[:, weak],
        outcomes.cost_usd[:, strong],
        outcomes.cost_usd[:, weak],
        task.astype(np.int64),
    )


def task_advantage(table: TwoModelTable, n_tasks: int) -> np.ndarray:
    """Each task's mean strong-minus-weak quality; a task with no question ranks last (kept on the strong)."""
    counts = np.bincount(table.task, minlength=n_tasks)
    totals = np.bincount(table.task, weights=table.strong_quality - table.weak_quality, minlength=n_tasks)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, totals / counts, np.inf)


def cost_reduction(table: TwoModelTable, question_rank: np.ndarray) -> float | None:
    """Cost reduction at 95% of the strong arm's accuracy, moving questions to the weak arm in rank order.

    Questions of equal rank (one task) move together: the curve's points are the rank boundaries.
    """
    n = table.task.size
    order = np.argsort(question_rank, kind="stable")
    ranks = question_rank[order]
    moved_quality = np.cumsum(table.weak_quality[order] - table.strong_quality[order])
    moved_cost = np.cumsum(table.weak_cost[order] - table.strong_cost[order])
    boundaries = np.flatnonzero(np.r_[ranks[1:] != ranks[:-1], True])
    strong_accuracy = float(table.strong_quality.mean())
    strong_cost = float(table.strong_cost.mean())
    accuracies = [strong_accuracy, *(strong_accuracy + moved_quality[boundaries] / n)]
    costs = [strong_cost, *(strong_cost + moved_cost[boundaries] / n)]
    fraction = cost_at_fraction_of_best(costs, accuracies, strong_cost, strong_accuracy)
    return None if fraction is None else 1.0 - fraction


def task_router_bounds(env: ReplayEnvironment) -> dict[str, float | None]:
    """Per-task router in hindsight and held out, and the per-question oracle, as cost reductions."""
    table = two_model_table(env)
    n_tasks = int(table.task.max()) + 1
    labelled, heldout = warm_split(env)
    scored = table.select(heldout)
    # The oracle moves first the questions the weak arm answers at least as well (quality difference <= 0).
    oracle_rank = table.strong_quality - table.weak_quality
    return {
        "task_router_hindsight": cost_reduction(table, task_advantage(table, n_tasks)[table.task]),
        "task_router_heldout": cost_reduction(
            scored, task_advantage(table.select(labelled), n_tasks)[scored.task]
        ),
        "question_oracle": cost_reduction(table, oracle_rank),
    }
