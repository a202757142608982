"""Drift scenarios of the replay: a task-blocked order, a price change, an outage (docs/replay.md, "Drift").

Each scenario replays the learner that kept learning through the change beside one restarted at it, over a
window after each change; the events themselves are `runner.DriftEvent`s that `run_learner` applies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from .runner import (
    DRIFT_SCENARIOS,
    DriftEvent,
    ReplayConfig,
    ReplayEnvironment,
    question_order,
    run_learner,
)

__all__ = ["drift_events", "run_drift"]


def drift_events(
    env: ReplayEnvironment,
    scenario: str,
    order: np.ndarray,
    pre_change_arms: np.ndarray | None,
    config: ReplayConfig,
    seed: int = 0,
) -> tuple[np.ndarray, list[DriftEvent]]:
    """The question order and events of a drift scenario (see docs/replay.md).

    The model hit by a price change or an outage is the one the learner used most before the change
    (from `pre_change_arms`, the arm columns of an undisturbed run), so the change always matters.
    """
    steps = len(order)
    if scenario == "task_blocks":
        tasks = np.asarray(env.outcomes.tasks, dtype=object)
        names = sorted(set(tasks.tolist()))
        rng = np.random.default_rng(seed)
        block_order = [names[i] for i in rng.permutation(len(names))]
        position = {name: i for i, name in enumerate(block_order)}
        keys = np.array([position[tasks[q]] for q in order])
        blocked = order[np.argsort(keys, kind="stable")]
        return blocked, []
    if pre_change_arms is None:
        raise ConfigError(f"drift {scenario!r} needs the undisturbed run's arm choices")
    if scenario == "price_change":
        change = steps // 2
        model = _most_used_model(env, pre_change_arms[:change])
        return order, [DriftEvent(change, "price", model, config.price_factor)]
    if scenario == "outage":
        start, end = steps // 3, (2 * steps) // 3
        model = _most_used_model(env, pre_change_arms[:start])
        if all(m == model for m in env.arm_models):
            raise ConfigError(
                "drift 'outage': the dataset has one model; an outage needs another to fall back on"
            )
        return order, [DriftEvent(start, "remove", model), DriftEvent(end, "add", model)]
    raise ConfigError(f"unknown drift scenario {scenario!r}; choose from {list(DRIFT_SCENARIOS)}")


def _most_used_model(env: ReplayEnvironment, arm_columns: np.ndarray) -> str:
    counts: dict[str, int] = {}
    for column in arm_columns.tolist():
        model = env.arm_models[column]
        counts[model] = counts.get(model, 0) + 1
    return min(counts, key=lambda model: (-counts[model], model))


def run_drift(
    env: ReplayEnvironment, scenario: str, seed: int, config: ReplayConfig, learner: str = "uniscale"
) -> list[dict[str, Any]]:
    """Reward in a window after each change: the continuing learner vs one restarted at the change."""
    weight = config.cost_weight
    order = question_order(env.n_questions, seed)
    baseline = None
    if scenario != "task_blocks":
        baseline = run_learner(env, learner, seed, weight, order, config).arm
    order, events = drift_events(env, scenario, order, baseline, config, seed)
    continuing = run_learner(env, learner, seed, weight, order, config, events=events)
    if scenario == "task_blocks":
        tasks = [env.outcomes.tasks[q] for q in order]
        changes = [step for step in range(1, len(tasks)) if tasks[step] != tasks[step - 1]]
        change_points = [(step, f"task -> {tasks[step]}") for step in changes]
    else:
        change_points = [
            (
                event.step,
                f"{event.kind} {event.model}" + (f" x{event.factor:g}" if event.kind == "price" else ""),
            )
            for event in events
        ]
    results = []
    for index, (step, label) in enumerate(change_points):
        next_change = change_points[index + 1][0] if index + 1 < len(change_points) else len(order)
        end = min(step + config.drift_window, next_change)
        if end - step < 1:
            continue
        # State of the world at the change: every event up to and including it has happened.
        factors: dict[str, float] = {}
        removed: set[str] = set()
        for event in events:
            if event.step > step:
                continue
            if event.kind == "price":
                factors[event.model] = factors.get(event.model, 1.0) * event.factor
            elif event.kind == "remove":
                removed.add(event.model)
            elif event.kind == "add":
                removed.discard(event.model)
        restarted = run_learner(
            env,
            learner,
            seed,
            weight,
            order[step:end],
            config,
            initial_price_factors=factors,
            initially_removed=removed,
        )
        results.append(
            {
                "step": step,
                "change": label,
                "window": end - step,
                "continuing_reward": float(continuing.reward[step:end].mean()),
                "restarted_reward": float(restarted.reward.mean()),
                "continuing_accuracy": float(continuing.quality[step:end].mean()),
                "restarted_accuracy": float(restarted.quality.mean()),
                "continuing_cost_usd_per_query": float(continuing.cost_usd[step:end].mean()),
                "restarted_cost_usd_per_query": float(restarted.cost_usd.mean()),
            }
        )
    return results
