"""Pure metrics over cost-accuracy points and reward sequences; the definitions the literature uses.

- Frontier and AIQ follow RouterBench (Hu et al. 2024, withmartian/routerbench `evaluation/AIQ.py`): a router
  that can run two operating points can mix them at random, so everything under the *non-decreasing convex
  hull* of its (cost, accuracy) points is achievable, and AIQ = 1/(c_max - c_min) * integral over
  [c_min, c_max] of that hull, extended flat to c_max (zero left of the router's cheapest point).
- APGR and CPT follow RouteLLM (Ong et al. 2024, lm-sys/RouteLLM `routellm/evals/evaluate.py`): the x axis
  is the percentage of calls to the strong model, APGR = (AUC - weak) / (strong - weak) with the AUC a
  trapezoid over x in [0, 1], and CPT(p) is the strong-call percentage at which accuracy first reaches
  weak + p * (strong - weak), linearly interpolated.

Every function takes plain arrays and returns floats or arrays; nothing here knows about policies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "aiq",
    "apgr",
    "arm_share",
    "best_fixed_arm",
    "cost_at_fraction_of_best",
    "cost_to_reach",
    "cpt",
    "cumulative_regret",
    "last_fraction_mean",
    "learning_curve",
    "non_decreasing_convex_hull",
    "pareto_frontier",
    "samples_to_separate",
    "steps_until_ahead",
    "task_best_arms",
]

ArrayLike = Sequence[float] | np.ndarray


def _points(costs: ArrayLike, accuracies: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    cost = np.asarray(costs, dtype=np.float64).ravel()
    accuracy = np.asarray(accuracies, dtype=np.float64).ravel()
    if cost.shape != accuracy.shape:
        raise ValueError(f"costs and accuracies differ in length: {cost.size} vs {accuracy.size}")
    if cost.size == 0:
        raise ValueError("need at least one (cost, accuracy) point")
    if not (np.isfinite(cost).all() and np.isfinite(accuracy).all()):
        raise ValueError("costs and accuracies must be finite")
    return cost, accuracy


def pareto_frontier(costs: ArrayLike, accuracies: ArrayLike) -> np.ndarray:
    """Indices of the non-dominated points, by increasing cost (and strictly increasing accuracy).

    A point is dominated when another costs no more and is at least as accurate, better in one of the two;
    of exact duplicates the first is kept.
    """
    cost, accuracy = _points(costs, accuracies)
    order = np.lexsort((np.arange(cost.size), -accuracy, cost))
    frontier: list[int] = []
    best = -np.inf
    for index in order:
        if accuracy[index] > best:
            frontier.append(int(index))
            best = accuracy[index]
    return np.asarray(frontier, dtype=np.int64)


def non_decreasing_convex_hull(costs: ArrayLike, accuracies: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The upper concave hull from the cheapest point to the cheapest most-accurate point (RouterBench's NDCH).

    Past the most accurate point the upper hull would fall, and a router never needs to pay more for less,
    so the hull stops there; callers extend it flat. Returns (hull costs, hull accuracies), increasing.
    """
    cost, accuracy = _points(costs, accuracies)
    frontier = pareto_frontier(cost, accuracy)
    xs, ys = cost[frontier], accuracy[frontier]
    # Andrew's monotone chain, upper part, over the Pareto points (already sorted by cost).
    hull: list[int] = []
    for index in range(xs.size):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            cross = (xs[b] - xs[a]) * (ys[index] - ys[a]) - (ys[b] - ys[a]) * (xs[index] - xs[a])
            if cross >= 0:  # b lies on or below the chord a -> index
                hull.pop()
            else:
                break
        hull.append(index)
    return xs[hull], ys[hull]


def aiq(costs: ArrayLike, accuracies: ArrayLike, cost_range: tuple[float, float] | None = None) -> float:
    """RouterBench's Average Improvement in Quality: mean height of the NDCH over the cost range.

    `cost_range` = (c_min, c_max) must be shared by all routers compared on one dataset (default: the range
    of these points). RouterBench's reference code uses c_min = 0; pass (0, c_max) to reproduce it.
    """
    cost, accuracy = _points(costs, accuracies)
    low, high = (float(cost.min()), float(cost.max())) if cost_range is None else map(float, cost_range)
    if high < low:
        raise ValueError(f"cost_range: got ({low}, {high}); c_min must not exceed c_max")
    if cost.min() < low - 1e-12 or cost.max() > high + 1e-12:
        raise ValueError(
            f"cost_range ({low}, {high}) does not contain every point ({cost.min()}..{cost.max()})"
        )
    hull_x, hull_y = non_decreasing_convex_hull(cost, accuracy)
    if high == low:
        return float(hull_y[-1])
    xs = np.append(hull_x, high)
    ys = np.append(hull_y, hull_y[-1])
    area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))
    return area / (high - low)


def cost_to_reach(costs: ArrayLike, accuracies: ArrayLike, target_accuracy: float) -> float | None:
    """Least cost at which the NDCH reaches `target_accuracy` (linear between hull points); None if never."""
    hull_x, hull_y = non_decreasing_convex_hull(costs, accuracies)
    if hull_y[-1] < target_accuracy:
        return None
    if hull_y[0] >= target_accuracy:
        return float(hull_x[0])
    upper = int(np.argmax(hull_y >= target_accuracy))
    x0, x1, y0, y1 = hull_x[upper - 1], hull_x[upper], hull_y[upper - 1], hull_y[upper]
    return float(x0 + (target_accuracy - y0) * (x1 - x0) / (y1 - y0))


def cost_at_fraction_of_best(
    costs: ArrayLike,
    accuracies: ArrayLike,
    best_cost: float,
    best_accuracy: float,
    fraction: float = 0.95,
) -> float | None:
    """Cost to reach `fraction` of the best fixed arm's accuracy, as a fraction of that arm's cost.

    Interpolated on the NDCH of the given points; None when the points never reach the target.
    """
    if best_cost <= 0:
        raise ValueError(f"best_cost: got {best_cost}; the best fixed arm must have a positive cost")
    needed = cost_to_reach(costs, accuracies, fraction * best_accuracy)
    return None if needed is None else needed / best_cost


def best_fixed_arm(mean_quality: ArrayLike, mean_cost: ArrayLike) -> int:
    """Index of the most accurate arm; ties go to the cheaper arm, then to the earlier one."""
    quality, cost = _points(mean_cost, mean_quality)[::-1]
    return int(np.lexsort((np.arange(quality.size), cost, -quality))[0])


def _curve(strong_call_pct: ArrayLike, accuracies: ArrayLike, weak: float, strong: float, anchor: bool):
    x, y = _points(strong_call_pct, accuracies)
    if anchor:
        x = np.concatenate(([0.0], x, [100.0]))
        y = np.concatenate(([weak], y, [strong]))
    if x.min() < 0 or x.max() > 100:
        raise ValueError("strong_call_pct must be percentages in [0, 100]")
    if strong == weak:
        raise ValueError("strong and weak accuracies are equal: the performance gap is zero")
    order = np.lexsort((y, x))
    return x[order], y[order]


def apgr(
    strong_call_pct: ArrayLike,
    accuracies: ArrayLike,
    weak_accuracy: float,
    strong_accuracy: float,
    *,
    anchor: bool = True,
) -> float:
    """RouteLLM's Average Performance Gap Recovered over a router's (strong-call %, accuracy) sweep.

    With `anchor` the points (0 %, weak) and (100 %, strong) are added, as RouteLLM's threshold sweep always
    contains them. (AUC - weak * span) / ((strong - weak) * span) with span the x range covered.
    """
    x, y = _curve(strong_call_pct, accuracies, weak_accuracy, strong_accuracy, anchor)
    fraction = x / 100.0
    span = fraction[-1] - fraction[0]
    if span <= 0:
        raise ValueError("the sweep covers a single strong-call percentage; APGR needs a range")
    auc = float(np.sum((fraction[1:] - fraction[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return (auc - weak_accuracy * span) / ((strong_accuracy - weak_accuracy) * span)


def cpt(
    strong_call_pct: ArrayLike,
    accuracies: ArrayLike,
    weak_accuracy: float,
    strong_accuracy: float,
    gap_recovered: float,
    *,
    anchor: bool = True,
) -> float | None:
    """RouteLLM's Call-Performance Threshold: strong-call % needed to recover `gap_recovered` of the gap.

    The first crossing of the piecewise-linear curve (sorted by strong-call %) is returned, which equals
    RouteLLM's `np.interp` whenever accuracy rises with strong calls; None if the target is never reached.
    """
    x, y = _curve(strong_call_pct, accuracies, weak_accuracy, strong_accuracy, anchor)
    target = weak_accuracy + gap_recovered * (strong_accuracy - weak_accuracy)
    if y[0] >= target:
        return float(x[0])
    reached = np.flatnonzero(y >= target)
    if reached.size == 0:
        return None
    upper = int(reached[0])
    x0, x1, y0, y1 = x[upper - 1], x[upper], y[upper - 1], y[upper]
    return float(x0 + (target - y0) * (x1 - x0) / (y1 - y0))


def cumulative_regret(learner_rewards: ArrayLike, arm_rewards: np.ndarray) -> tuple[np.ndarray, int]:
    """Cumulative regret against the best fixed arm in hindsight, and that arm's column.

    `arm_rewards` is (steps, arms): the reward each arm would have earned at each step (NaN where the arm
    was unavailable; such arms cannot be the fixed comparator). Regret may go negative: a contextual
    learner can beat every fixed arm.
    """
    rewards = np.asarray(learner_rewards, dtype=np.float64).ravel()
    matrix = np.asarray(arm_rewards, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != rewards.size:
        raise ValueError(f"arm_rewards must be (steps={rewards.size}, arms); got {matrix.shape}")
    always = ~np.isnan(matrix).any(axis=0)
    if not always.any():
        raise ValueError("no arm is available at every step, so no fixed arm can be the comparator")
    totals = np.where(always, np.nan_to_num(matrix).sum(axis=0), -np.inf)
    best = int(np.argmax(totals))
    return np.cumsum(matrix[:, best] - rewards), best


def learning_curve(
    values: ArrayLike, window: int, n_points: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Trailing-window mean of a per-step sequence: (step numbers 1..T, mean of the last `window` values).

    Early steps average over what exists so far. `n_points` thins the curve evenly for reports (the last
    step is always kept).
    """
    series = np.asarray(values, dtype=np.float64).ravel()
    if window < 1:
        raise ValueError(f"window: got {window}; use >= 1")
    if series.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    cumulative = np.concatenate(([0.0], np.cumsum(series)))
    steps = np.arange(1, series.size + 1)
    start = np.maximum(steps - window, 0)
    means = (cumulative[steps] - cumulative[start]) / (steps - start)
    if n_points is not None and n_points < series.size:
        keep = np.unique(np.linspace(0, series.size - 1, max(n_points, 2)).round().astype(np.int64))
        return steps[keep], means[keep]
    return steps, means


def steps_until_ahead(regret: ArrayLike) -> int | None:
    """Requests after which the learner's cumulative reward stays at or above the comparator's for good.

    `regret` is cumulative regret per step (`cumulative_regret`). None when the learner ends behind.
    """
    series = np.asarray(regret, dtype=np.float64).ravel()
    if series.size == 0 or series[-1] > 0:
        return None
    behind = np.flatnonzero(series > 0)
    return 0 if behind.size == 0 else int(behind[-1]) + 1


def arm_share(chosen: ArrayLike, column: int | np.ndarray, last_fraction: float = 0.25) -> float:
    """Share of the last `last_fraction` of the steps spent on arm `column` (convergence to one arm).

    `column` may be one column per step (e.g. each step's per-task best arm, `task_best_arms`).
    """
    picks = np.asarray(chosen).ravel()
    target = np.asarray(column).ravel()
    if target.size not in (1, picks.size):
        raise ValueError(
            f"arm_share.column: got {target.size} columns for {picks.size} steps; give one or one per step"
        )
    if picks.size == 0:
        raise ValueError("arm_share: no steps")
    if not 0 < last_fraction <= 1:
        raise ValueError(f"arm_share.last_fraction: got {last_fraction}; use a fraction in (0, 1]")
    start = picks.size - max(1, math.ceil(picks.size * last_fraction))
    return float(np.mean(picks[start:] == (target if target.size == 1 else target[start:])))


def last_fraction_mean(values: ArrayLike, last_fraction: float = 0.25) -> float:
    """Mean of the last `last_fraction` of a per-step series (the same steps `arm_share` counts).

    Beside `arm_share`: a learner that spreads its picks over several arms has converged to something
    better than one arm only if its quality over those steps beats that arm's on the same questions.
    """
    series = np.asarray(values, dtype=np.float64).ravel()
    if series.size == 0:
        raise ValueError("last_fraction_mean: no steps")
    if not 0 < last_fraction <= 1:
        raise ValueError(f"last_fraction_mean.last_fraction: got {last_fraction}; use a fraction in (0, 1]")
    start = series.size - max(1, math.ceil(series.size * last_fraction))
    return float(series[start:].mean())


def task_best_arms(quality: np.ndarray, tasks: Sequence[str]) -> np.ndarray:
    """Per question, the arm column most accurate in hindsight on that question's task (ties: lowest column).

    With a context that tells tasks apart, converging to one arm is wrong wherever another arm is better on a
    task; this is what a cost-blind contextual learner should converge to instead (issue 9, aim 5).
    """
    matrix = np.asarray(quality, dtype=np.float64)
    labels = np.asarray(tasks, dtype=object)
    if matrix.ndim != 2 or labels.shape != (matrix.shape[0],):
        raise ValueError(
            f"task_best_arms: got quality {matrix.shape} and {labels.shape} tasks; one task per row"
        )
    best = np.empty(matrix.shape[0], dtype=np.int64)
    for task in dict.fromkeys(labels.tolist()):
        rows = labels == task
        best[rows] = int(np.argmax(matrix[rows].mean(axis=0)))
    return best


def samples_to_separate(rewards: np.ndarray, z: float = 1.96) -> np.ndarray:
    """Per arm, the paired samples a learner would need to tell it from the best arm in hindsight.

    `rewards` is (questions, arms). For arm a with mean gap g_a below the best arm and paired differences of
    standard deviation s_a, n_a = (z s_a / g_a)^2: the questions at which a z-sigma confidence interval on the
    mean difference first excludes 0. Paired samples are the optimistic case (a bandit sees each question's
    reward for one arm only), so an n_a above the stream length means no learner can tell the two apart from
    the stream itself. The best arm gets inf; an arm with the same rewards on every question gets inf too.
    """
    matrix = np.asarray(rewards, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] < 2 or matrix.shape[1] < 1:
        raise ValueError(f"samples_to_separate: got rewards of shape {matrix.shape}; need (>= 2 questions, arms)")
    best = int(np.argmax(matrix.mean(axis=0)))
    differences = matrix[:, [best]] - matrix
    gap = differences.mean(axis=0)
    spread = differences.std(axis=0, ddof=1)
    needed = np.full(matrix.shape[1], np.inf)
    separable = gap > 0
    needed[separable] = (z * spread[separable] / gap[separable]) ** 2
    return needed
