"""Turn replay runs into the JSON report: frontiers, AIQ, cost at 95 % of the best arm, regret, curves.

The report is plain JSON-ready data (see docs/replay.md for every field). Hindsight comparators
(`best_fixed_arm`, `oracle`) are computed exactly from the arm matrix; learners are averaged over seeds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..progress import progress_bar
from .drift import run_drift
from .metrics import (
    aiq,
    apgr,
    arm_share,
    best_fixed_arm,
    cost_at_fraction_of_best,
    cpt,
    cumulative_regret,
    last_fraction_mean,
    learning_curve,
    steps_until_ahead,
    task_best_arms,
)
from .runner import (
    ReplayConfig,
    ReplayEnvironment,
    RunTrace,
    hindsight_choice,
    reward_matrix,
)
from .sweep import run_sweep
from .threads import one_blas_thread
from .warm import WARM_LEARNERS, heldout_environment, labelled_environment

__all__ = [
    "POLICY_KEYS",
    "build_report",
    "format_table",
    "hindsight_frontier",
    "learner_frontier",
    "replay_dataset",
    "two_model_summary",
]

POLICY_KEYS: tuple[str, ...] = (
    "uniscale",
    "routing_only",
    "tts_only",
    "random",
    "epsilon_greedy",
    "uniscale_warm",
    "offline_router",
    "full_info_leader",
    "full_info_router",
    "best_fixed_arm",
    "best_fixed_arm_heldout",
    "best_fixed_arm_labelled",
    "oracle",
)
REPORT_VERSION = 1


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def hindsight_frontier(
    env: ReplayEnvironment,
    weights: Sequence[float],
    per_question: bool,
    chosen_on: ReplayEnvironment | None = None,
) -> list[dict[str, Any]]:
    """Per weight, the arm(s) best in hindsight, scored on `env`. `chosen_on`: pick the fixed arm on these
    questions instead (the same arms, other questions) and score it on `env`'s."""
    rows = np.arange(env.n_questions)
    frontier = []
    for weight in weights:
        choice = hindsight_choice(env if chosen_on is None else chosen_on, weight, per_question)
        if per_question:
            quality = env.outcomes.quality[rows, choice]
            cost = env.outcomes.cost_usd[rows, choice]
            reward = reward_matrix(env, weight)[rows, choice]
            arm = None
        else:
            quality = env.outcomes.quality[:, choice[0]]
            cost = env.outcomes.cost_usd[:, choice[0]]
            reward = reward_matrix(env, weight)[:, choice[0]]
            arm = env.outcomes.arm_ids[int(choice[0])]
        point: dict[str, Any] = {
            "cost_weight": weight,
            "accuracy": float(quality.mean()),
            "cost_usd_per_query": float(cost.mean()),
            "reward": float(reward.mean()),
        }
        if arm is not None:
            point["arm"] = arm
        frontier.append(point)
    return frontier


def learner_frontier(
    traces: dict[tuple[str, int, float], RunTrace], learner: str, config: ReplayConfig
) -> list[dict[str, Any]]:
    """Per cost weight, a learner's mean accuracy, cost and reward over seeds (with their spreads)."""
    frontier = []
    for weight in config.cost_weights:
        runs = [traces[(learner, seed, weight)] for seed in range(config.seeds)]
        accuracy, accuracy_std = _mean_std([run.accuracy for run in runs])
        cost, cost_std = _mean_std([run.cost_usd_per_query for run in runs])
        reward, reward_std = _mean_std([float(run.reward.mean()) for run in runs])
        frontier.append(
            {
                "cost_weight": weight,
                "accuracy": accuracy,
                "accuracy_std": accuracy_std,
                "cost_usd_per_query": cost,
                "cost_usd_per_query_std": cost_std,
                "reward": reward,
                "reward_std": reward_std,
            }
        )
    return frontier


def _at(frontier: list[dict[str, Any]], weight: float) -> dict[str, Any]:
    return next(point for point in frontier if point["cost_weight"] == weight)


def build_report(
    env: ReplayEnvironment,
    config: ReplayConfig,
    traces: dict[tuple[str, int, float], RunTrace],
    drift: dict[str, Any] | None = None,
    elapsed_s: float | None = None,
) -> dict[str, Any]:
    """Assemble the JSON report from sweep traces (see docs/replay.md for the format)."""
    outcomes = env.outcomes
    mean_quality = outcomes.mean_quality()
    mean_cost = outcomes.mean_cost_usd()
    best_index = best_fixed_arm(mean_quality, mean_cost)
    best_accuracy, best_cost = float(mean_quality[best_index]), float(mean_cost[best_index])
    weight = config.cost_weight

    frontiers: dict[str, list[dict[str, Any]]] = {}
    for learner in config.learners:
        frontiers[learner] = learner_frontier(traces, learner, config)
    frontiers["best_fixed_arm"] = hindsight_frontier(env, config.cost_weights, per_question=False)
    frontiers["oracle"] = hindsight_frontier(env, config.cost_weights, per_question=True)
    if any(learner in WARM_LEARNERS for learner in config.learners):
        # The warm learners are scored on the held-out questions only: so is their fixed-arm comparator.
        heldout = heldout_environment(env)
        frontiers["best_fixed_arm_heldout"] = hindsight_frontier(
            heldout, config.cost_weights, per_question=False
        )
        # What a user without a router deploys after an eval: the arm best on the labelled part. The held-out
        # comparator above picks among every arm on the very questions it is scored on, so where many arms
        # are near-tied it is an optimistic bar (winner's curse); this one is not.
        frontiers["best_fixed_arm_labelled"] = hindsight_frontier(
            heldout, config.cost_weights, per_question=False, chosen_on=labelled_environment(env)
        )

    # One cost range for every policy of this dataset, so their AIQs compare (RouterBench).
    # Per-seed points are included because each seed's AIQ is computed too (for its spread).
    all_costs = [point["cost_usd_per_query"] for frontier in frontiers.values() for point in frontier]
    all_costs += [trace.cost_usd_per_query for trace in traces.values()]
    cost_range = (min(all_costs), max(all_costs))

    def frontier_aiq(frontier: list[dict[str, Any]]) -> float:
        return aiq([p["cost_usd_per_query"] for p in frontier], [p["accuracy"] for p in frontier], cost_range)

    def frontier_cost_at_95(frontier: list[dict[str, Any]]) -> float | None:
        return cost_at_fraction_of_best(
            [p["cost_usd_per_query"] for p in frontier],
            [p["accuracy"] for p in frontier],
            best_cost,
            best_accuracy,
        )

    rewards = reward_matrix(env, weight)
    window = max(20, env.n_questions // 20)
    most_accurate = int(np.argmax(mean_quality))
    task_best = task_best_arms(outcomes.quality, outcomes.tasks)
    policies: dict[str, Any] = {}
    for key, frontier in frontiers.items():
        headline = _at(frontier, weight)
        entry: dict[str, Any] = {
            "aiq": frontier_aiq(frontier),
            "cost_at_95pct_best": frontier_cost_at_95(frontier),
            "accuracy": headline["accuracy"],
            "cost_usd_per_query": headline["cost_usd_per_query"],
            "reward": headline["reward"],
            "frontier": frontier,
        }
        if key in config.learners:
            entry["n_arms"] = len(env.learner_columns(key))
            entry["accuracy_std"] = headline["accuracy_std"]
            entry["cost_usd_per_query_std"] = headline["cost_usd_per_query_std"]
            per_seed_aiq = []
            regrets, curves, accuracy_curves, regret_curves, until_ahead = [], [], [], [], []
            for seed in range(config.seeds):
                seed_points = [traces[(key, seed, w)] for w in config.cost_weights]
                per_seed_aiq.append(
                    aiq(
                        [t.cost_usd_per_query for t in seed_points],
                        [t.accuracy for t in seed_points],
                        cost_range,
                    )
                )
                trace = traces[(key, seed, weight)]
                regret, _ = cumulative_regret(trace.reward, rewards[trace.order])
                regrets.append(float(regret[-1]))
                until_ahead.append(steps_until_ahead(regret))
                steps, reward_curve = learning_curve(trace.reward, window, config.curve_points)
                _, accuracy_curve = learning_curve(trace.quality, window, config.curve_points)
                curves.append(reward_curve)
                accuracy_curves.append(accuracy_curve)
                regret_curves.append(regret[steps - 1])
            entry["aiq_std"] = _mean_std(per_seed_aiq)[1]
            # Per seed: requests until its cumulative reward stays ahead of the best fixed arm's (None: never).
            entry["requests_until_ahead_of_best_fixed"] = until_ahead
            if 0.0 in config.cost_weights:
                # Ignoring cost, does it converge to the most accurate arm? (issue 9, aim 5)
                cost_blind = [traces[(key, seed, 0.0)] for seed in range(config.seeds)]
                entry["best_arm_share_last_quarter_w0"] = float(
                    np.mean([arm_share(trace.arm, most_accurate) for trace in cost_blind])
                )
                # ... or, where tasks differ, to each task's most accurate arm (what context should buy)?
                entry["task_best_arm_share_last_quarter_w0"] = float(
                    np.mean([arm_share(trace.arm, task_best[trace.order]) for trace in cost_blind])
                )
                # ... and did spreading its picks pay? Its last-quarter accuracy against the most accurate
                # arm's on the same questions.
                entry["last_quarter_accuracy_w0"] = float(
                    np.mean([last_fraction_mean(trace.quality) for trace in cost_blind])
                )
                entry["most_accurate_arm_last_quarter_accuracy_w0"] = float(
                    np.mean(
                        [
                            last_fraction_mean(outcomes.quality[trace.order, most_accurate])
                            for trace in cost_blind
                        ]
                    )
                )
            entry["cumulative_regret"], entry["cumulative_regret_std"] = _mean_std(regrets)
            entry["learning_curve"] = {
                "window": window,
                "step": steps.tolist(),
                "reward": np.mean(curves, axis=0).tolist(),
                "accuracy": np.mean(accuracy_curves, axis=0).tolist(),
                "cumulative_regret": np.mean(regret_curves, axis=0).tolist(),
            }
            if key == "tts_only":
                entry["model"] = env.tts_model()
        elif key in ("best_fixed_arm", "best_fixed_arm_heldout", "best_fixed_arm_labelled"):
            entry["arm"] = headline["arm"]
        policies[key] = entry

    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "dataset": env.name,
        "n_questions": env.n_questions,
        "n_arms": len(outcomes.arms),
        "settings": {
            "seeds": config.seeds,
            "cost_weights": list(config.cost_weights),
            "cost_weight": weight,
            "learners": list(config.learners),
            "arms": config.arms,
            "min_coverage": config.min_coverage,
            "vote_ladder": list(config.vote_ladder),
            "max_questions": config.max_questions,
            "linucb_alpha": config.linucb_alpha,
            "linucb_per_arm": config.linucb_per_arm,
            "epsilon": config.epsilon,
            "featurizer": env.featurizer_config,
            "tag_buckets": config.tag_buckets,
        },
        "most_accurate_arm": {
            "arm": outcomes.arm_ids[most_accurate],
            "accuracy": float(mean_quality[most_accurate]),
            # Its lead over the runner-up: convergence to it is only expected when this is clear.
            "margin": float(mean_quality[most_accurate] - np.partition(mean_quality, -2)[-2])
            if len(mean_quality) > 1
            else None,
            # Share of the questions whose task's most accurate arm is this arm, and the accuracy of
            # routing each task to its own most accurate arm (hindsight): when these differ from 1 and from
            # its accuracy, converging to this one arm is not what a contextual learner should do.
            "task_best_share": float(np.mean(task_best == most_accurate)),
            "per_task_best_accuracy": float(outcomes.quality[np.arange(env.n_questions), task_best].mean()),
            "n_tasks": len(set(outcomes.tasks)),
        },
        "best_arm_by_accuracy": {
            "arm": outcomes.arm_ids[best_index],
            "accuracy": best_accuracy,
            "cost_usd_per_query": best_cost,
        },
        "aiq_cost_range": list(cost_range),
        "policies": policies,
        "fixed_arms": [
            {
                "arm": arm.arm_id,
                "kind": arm.kind,
                "accuracy": float(mean_quality[index]),
                "cost_usd_per_query": float(mean_cost[index]),
            }
            for index, arm in enumerate(outcomes.arms)
        ],
        "notes": list(outcomes.notes),
    }
    two_model = two_model_summary(env, config, traces)
    if two_model is not None:
        report["two_model"] = two_model
    if drift:
        report["drift"] = drift
    if elapsed_s is not None:
        report["elapsed_s"] = elapsed_s
    return report


def two_model_summary(
    env: ReplayEnvironment, config: ReplayConfig, traces: dict[tuple[str, int, float], RunTrace]
) -> dict[str, Any] | None:
    """RouteLLM's metrics when the arm set is two single models: APGR, CPT(50 %), CPT(80 %) per learner.

    The strong arm is the more accurate one. Also the cost reduction at 95 % of the strong arm's accuracy,
    by strong-model calls (RouteLLM's measure) and by dollars, against always calling the strong arm.
    """
    outcomes = env.outcomes
    if len(outcomes.arms) != 2 or any(arm.kind != "single" for arm in outcomes.arms):
        return None
    quality, cost = outcomes.mean_quality(), outcomes.mean_cost_usd()
    strong = int(np.argmax(quality))
    weak = 1 - strong
    strong_accuracy, weak_accuracy = float(quality[strong]), float(quality[weak])
    if strong_accuracy == weak_accuracy or cost[strong] <= cost[weak]:
        return None  # RouteLLM's setting is a dearer strong model; otherwise always-strong dominates
    target_gap = (0.95 * strong_accuracy - weak_accuracy) / (strong_accuracy - weak_accuracy)
    learners: dict[str, Any] = {}
    heldout = (
        heldout_environment(env).outcomes if any(name in WARM_LEARNERS for name in config.learners) else None
    )
    for learner in config.learners:
        # The warm learners are scored on the held-out questions: so are their anchors (always weak/strong).
        scored = heldout if heldout is not None and learner in WARM_LEARNERS else outcomes
        own_quality, own_cost = scored.mean_quality(), scored.mean_cost_usd()
        strong_acc, weak_acc = float(own_quality[strong]), float(own_quality[weak])
        if strong_acc <= weak_acc:
            continue  # on this part the strong arm is not stronger: RouteLLM's measures do not apply
        gap = (0.95 * strong_acc - weak_acc) / (strong_acc - weak_acc)
        pct, accuracy, spend = [], [], []
        for weight in config.cost_weights:
            runs = [traces[(learner, seed, weight)] for seed in range(config.seeds)]
            pct.append(float(np.mean([(run.arm == strong).mean() * 100.0 for run in runs])))
            accuracy.append(float(np.mean([run.accuracy for run in runs])))
            spend.append(float(np.mean([run.cost_usd_per_query for run in runs])))
        calls_at_95 = cpt(pct, accuracy, weak_acc, strong_acc, gap) if gap > 0 else 0.0
        # Like the call-share curve, the dollar curve includes always-weak and always-strong (anchors).
        cost_fraction = cost_at_fraction_of_best(
            [float(own_cost[weak]), *spend, float(own_cost[strong])],
            [weak_acc, *accuracy, strong_acc],
            float(own_cost[strong]),
            strong_acc,
        )
        learners[learner] = {
            "apgr": apgr(pct, accuracy, weak_acc, strong_acc),
            "cpt50_pct": cpt(pct, accuracy, weak_acc, strong_acc, 0.5),
            "cpt80_pct": cpt(pct, accuracy, weak_acc, strong_acc, 0.8),
            "strong_calls_pct_at_95pct_strong": calls_at_95,
            "call_reduction_at_95pct_strong": None if calls_at_95 is None else 1.0 - calls_at_95 / 100.0,
            "cost_reduction_at_95pct_strong": None if cost_fraction is None else 1.0 - cost_fraction,
            "sweep": [
                {"cost_weight": w, "strong_calls_pct": p, "accuracy": a, "cost_usd_per_query": c}
                for w, p, a, c in zip(config.cost_weights, pct, accuracy, spend, strict=True)
            ],
        }
    return {
        "strong_arm": outcomes.arm_ids[strong],
        "weak_arm": outcomes.arm_ids[weak],
        "strong_accuracy": strong_accuracy,
        "weak_accuracy": weak_accuracy,
        "strong_cost_usd_per_query": float(cost[strong]),
        "weak_cost_usd_per_query": float(cost[weak]),
        "gap_recovered_at_95pct_strong": target_gap,
        "learners": learners,
    }


def replay_dataset(
    data_dir: str | Path,
    config: ReplayConfig | None = None,
    *,
    progress: bool = False,
    env: ReplayEnvironment | None = None,
) -> dict[str, Any]:
    """Load a dataset, run every learner over seeds x cost weights (and drift if asked), return the report."""
    config = config or ReplayConfig()
    started = time.perf_counter()
    env = env or ReplayEnvironment.from_directory(data_dir, config)
    drift_jobs = [(scenario, seed) for scenario in config.drift for seed in range(config.seeds)]
    total = len(config.learners) * config.seeds * len(config.cost_weights) + len(drift_jobs)
    bar = _progress_bar(total, env.name) if progress else None
    update: Callable[[int], None] | None = bar.update if bar is not None else None
    try:
        traces = run_sweep(env, config, update)  # limits its own BLAS threads
        with one_blas_thread():  # drift runs in this process (replay/threads.py)
            drift = _run_drift_scenarios(env, config, drift_jobs, update) if drift_jobs else None
    finally:
        if bar is not None:
            bar.close()
    return build_report(env, config, traces, drift, elapsed_s=time.perf_counter() - started)


def _progress_bar(total: int, name: str) -> Any:
    return progress_bar(total, f"replay {name}", unit="run")


def _run_drift_scenarios(
    env: ReplayEnvironment,
    config: ReplayConfig,
    jobs: list[tuple[str, int]],
    update: Callable[[int], None] | None,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for scenario in config.drift:
        if scenario == "task_blocks" and len(set(env.outcomes.tasks)) < 2:
            results[scenario] = {"skipped": "the dataset has a single task, so there are no task blocks"}
            if update:
                update(config.seeds)
            continue
        per_seed = []
        for seed in range(config.seeds):
            try:
                per_seed.append(run_drift(env, scenario, seed, config))
            except ConfigError as error:  # a scenario that cannot apply (one model) is reported, not fatal
                results[scenario] = {"skipped": str(error)}
                break
            finally:
                if update:
                    update(1)
        if scenario in results:
            continue
        flat = [change for seed_changes in per_seed for change in seed_changes]
        keys = ("continuing_reward", "restarted_reward", "continuing_accuracy", "restarted_accuracy")
        summary = {key: _mean_std([change[key] for change in flat]) for key in keys}
        results[scenario] = {
            "learner": "uniscale",
            "cost_weight": config.cost_weight,
            "window": config.drift_window,
            "changes_per_seed": len(per_seed[0]) if per_seed else 0,
            "mean": {key: value[0] for key, value in summary.items()},
            "std": {key: value[1] for key, value in summary.items()},
            "advantage_of_continuing": float(
                np.mean([c["continuing_reward"] - c["restarted_reward"] for c in flat])
            )
            if flat
            else None,
            "changes": per_seed[0] if len(per_seed[0]) <= 12 else per_seed[0][:12],
        }
    return results


def format_table(report: dict[str, Any]) -> str:
    """A fixed-width table of the policies for the terminal."""
    lines = [
        f"dataset {report['dataset']}: {report['n_questions']} questions, {report['n_arms']} arms, "
        f"cost weight {report['settings']['cost_weight']}, {report['settings']['seeds']} seed(s)",
        f"best arm by accuracy: {report['best_arm_by_accuracy']['arm']} "
        f"({report['best_arm_by_accuracy']['accuracy']:.4f} at ${report['best_arm_by_accuracy']['cost_usd_per_query']:.6f}/query)",
        f"{'policy':<24}{'AIQ':>8}{'accuracy':>10}{'$/query':>12}{'reward':>9}{'cost@95%best':>14}"
        f"{'ahead of fixed':>16}",
    ]
    for key in POLICY_KEYS:
        entry = report["policies"].get(key)
        if entry is None:
            continue
        reach = entry["cost_at_95pct_best"]
        lines.append(
            f"{key:<24}{entry['aiq']:>8.4f}{entry['accuracy']:>10.4f}{entry['cost_usd_per_query']:>12.6f}"
            f"{entry['reward']:>9.4f}{('not reached' if reach is None else f'{reach:.3f}'):>14}"
            f"{_ahead(entry.get('requests_until_ahead_of_best_fixed')):>16}"
        )
    two_model = report.get("two_model")
    if two_model:
        lines.append(f"two models: strong {two_model['strong_arm']}, weak {two_model['weak_arm']}")
        for learner, values in two_model["learners"].items():
            cpt50, cpt80 = values["cpt50_pct"], values["cpt80_pct"]
            reduction = values["cost_reduction_at_95pct_strong"]
            lines.append(
                f"  {learner:<16} APGR {values['apgr']:.3f}  CPT(50%) {_pct(cpt50)}  CPT(80%) {_pct(cpt80)}  "
                f"cost reduction at 95% strong: {'not reached' if reduction is None else f'{reduction:.1%}'}"
            )
    for scenario, values in (report.get("drift") or {}).items():
        if "skipped" in values:
            lines.append(f"drift {scenario}: skipped ({values['skipped']})")
            continue
        mean = values["mean"]
        lines.append(
            f"drift {scenario}: reward in {values['window']} steps after a change: continuing "
            f"{mean['continuing_reward']:.4f} vs restarted {mean['restarted_reward']:.4f}"
        )
    return "\n".join(lines)


def _ahead(per_seed: list[int | None] | None) -> str:
    """'after N' (the latest seed) when every seed ends ahead of the best fixed arm, else 'k/n seeds'."""
    if not per_seed:
        return ""
    reached = [value for value in per_seed if value is not None]
    if len(reached) == len(per_seed):
        return f"after {max(reached)}"
    return f"{len(reached)}/{len(per_seed)} seeds"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"
