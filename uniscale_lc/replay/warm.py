"""Replay learners that see labelled data first: `uniscale_warm` (fit, then bandit) and `offline_router`.

Protocol: one seeded split (`WARM_SEED`, `WARM_FRACTION` of the questions labelled) shared by every seed
and learner. `uniscale_warm` is the library's LinUCB and cost model, fitted on the labelled questions with
full information (every arm's recorded outcome) through `warm_start.fit_outcomes` (what `Router.fit` calls),
then learning online with bandit feedback on the held-out questions in the seed's order.
`offline_router` is `OfflineRidgeRouter` fitted on the same questions and never updated. Both are scored
only on the held-out questions; `best_fixed_arm_heldout` (report.py) is the fixed-arm comparator there, and
`best_fixed_arm_labelled` the arm a user would deploy from the labelled part alone (best there, scored there).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..costs import CostModel
from ..errors import ConfigError
from ..policy.base import Policy
from ..policy.offline import OfflineRidgeRouter
from ..warm_start import LabelledOutcome, fit_outcomes, labelled_split
from .data import load_outcome_table
from .recorded_arms import ArmOutcomes, build_recorded_arms
from .runner import ReplayConfig, ReplayEnvironment, RunTrace, question_order, run_learner

__all__ = [
    "WARM_FRACTION",
    "WARM_LEARNERS",
    "WARM_SEED",
    "directory_records",
    "heldout_environment",
    "labelled_environment",
    "outcome_records",
    "run_warm_learner",
    "warm_split",
]

WARM_LEARNERS: tuple[str, ...] = ("uniscale_warm", "offline_router")
WARM_SEED = 20_241_202
WARM_FRACTION = 0.3


def warm_split(env: ReplayEnvironment) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, held-out) question indices of the environment: the same for every seed and learner."""
    return labelled_split(env.n_questions, WARM_FRACTION, WARM_SEED)


def outcome_records(
    outcomes: ArmOutcomes,
    questions: Sequence[int] | np.ndarray | None = None,
    columns: Sequence[int] | None = None,
    *,
    task_tags: bool = False,
) -> list[LabelledOutcome]:
    """Full-information records: every arm's recorded outcome (quality, cost, tokens, calls) per question.

    Question-major (all arms of a question, then the next), in the order given; arms missing a
    question are skipped. `task_tags`: each record carries its question's task as its tag, as the replay
    passes it (`ReplayConfig.tag_buckets`: none when the table has one task).
    """
    rows = np.arange(outcomes.n_questions) if questions is None else np.asarray(questions, dtype=np.int64)
    cols = list(range(len(outcomes.arms))) if columns is None else list(columns)
    ids = [outcomes.arms[column].arm_id for column in cols]
    tagged = task_tags and len(set(outcomes.tasks)) > 1
    records = []
    for question in rows.tolist():
        prompt = outcomes.prompts[question]
        tags = (outcomes.tasks[question],) if tagged else ()
        quality = outcomes.quality[question]
        for column, arm_id in zip(cols, ids, strict=True):
            value = quality[column]
            if np.isnan(value):
                continue
            records.append(
                LabelledOutcome(
                    prompt=prompt,
                    arm_id=arm_id,
                    quality=float(value),
                    cost_usd=_maybe(outcomes.cost_usd[question, column]),
                    input_tokens=_maybe(outcomes.input_tokens[question, column]),
                    output_tokens=_maybe(outcomes.output_tokens[question, column]),
                    calls=_maybe(outcomes.calls[question, column]),
                    tags=tags,
                )
            )
    return records


def directory_records(
    data_dir: str | Path, arm_ids: Sequence[str], *, task_tags: bool = False
) -> list[LabelledOutcome]:
    """Full-information records of an outcome-table directory for the arms among `arm_ids` (`Router.fit`).

    The table's arms are rebuilt as the replay rebuilds them (ids `model:method|strategy`); arms of the
    table the router does not have are skipped, and a table sharing no arm with the router is an error.
    `task_tags`: tag each record with its task (for a router with `tag_buckets`).
    """
    outcomes = build_recorded_arms(load_outcome_table(data_dir))
    wanted = set(arm_ids)
    columns = [index for index, arm in enumerate(outcomes.arms) if arm.arm_id in wanted]
    if not columns:
        raise ConfigError(
            f"fit: the table {str(data_dir)!r} has no arm this router is configured with; its arm ids look "
            f"like {list(outcomes.arm_ids)[:3]}, the router's like {list(arm_ids)[:3]}. Build the router "
            "with `recorded_arm_space(DATA_DIR)` (uniscale_lc.replay.fit_cli) to use the table's arms"
        )
    return outcome_records(outcomes, None, columns, task_tags=task_tags)


def _maybe(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def heldout_environment(env: ReplayEnvironment) -> ReplayEnvironment:
    """The environment restricted to the held-out questions (what the warm learners are scored on)."""
    return _restricted(env, warm_split(env)[1])


def labelled_environment(env: ReplayEnvironment) -> ReplayEnvironment:
    """The environment restricted to the labelled questions (what the warm learners are fitted on)."""
    return _restricted(env, warm_split(env)[0])


def _restricted(env: ReplayEnvironment, questions: np.ndarray) -> ReplayEnvironment:
    return replace(
        env,
        outcomes=env.outcomes.select_questions(questions),
        features=env.features[questions],
        prompt_tokens=env.prompt_tokens[questions],
        reference_cost=env.reference_cost[questions],
    )


# Fitted states per environment, then (seed, arm columns): the fit does not depend on the cost weight, so
# a worker fits once per seed and every weight starts from a copy (the same numbers as refitting). Weak
# keys: an environment's fits go with it (an id could be reused by the next environment).
_FITTED: weakref.WeakKeyDictionary[ReplayEnvironment, dict[Any, tuple[dict[str, Any], dict[str, Any]]]] = (
    weakref.WeakKeyDictionary()
)


def _fitter(env: ReplayEnvironment, seed: int, labelled: np.ndarray):
    columns = env.learner_columns("uniscale_warm")
    fits = _FITTED.setdefault(env, {})
    key = (seed, columns)

    def prepare(policy: Policy, cost_model: CostModel) -> None:
        cached = fits.get(key)
        if cached is not None:
            policy.load_state_dict(cached[0])
            cost_model.load_state_dict(cached[1])
            return
        row_of = {env.outcomes.prompts[q]: q for q in labelled.tolist()}
        fit_outcomes(
            policy,
            cost_model,
            lambda prompt, tags: env.features[row_of[prompt]],
            outcome_records(env.outcomes, labelled, columns),
        )
        fits[key] = (policy.state_dict(), cost_model.state_dict())

    return prepare


def run_warm_learner(
    env: ReplayEnvironment, learner: str, seed: int, cost_weight: float, config: ReplayConfig
) -> RunTrace:
    """One run of a warm learner on the held-out questions in the seed's order."""
    labelled, heldout = warm_split(env)
    order = heldout[question_order(heldout.size, seed)]
    if learner == "uniscale_warm":
        trace = run_learner(
            env, learner, seed, cost_weight, order, config, prepare=_fitter(env, seed, labelled)
        )
        return trace
    if learner != "offline_router":
        raise ValueError(f"not a warm learner: {learner!r}")
    outcomes = env.outcomes
    router = OfflineRidgeRouter(seed=WARM_SEED).fit(
        env.features[labelled],
        outcomes.quality[labelled],
        outcomes.cost_usd[labelled],
        outcomes.arm_ids,
    )
    chosen = router.select_batch(env.features[order], cost_weight)
    quality = outcomes.quality[order, chosen]
    cost = outcomes.cost_usd[order, chosen]
    reference = env.reference_cost[order]
    reward = quality - np.where(
        reference > 0, cost_weight * cost / np.where(reference > 0, reference, 1.0), 0.0
    )
    return RunTrace(learner, seed, cost_weight, order, chosen.astype(np.int64), quality, cost, reward)
