"""Reference learners with full information: after each question they see every arm's outcome.

A bandit sees only the arm it chose, so it pays to explore. These learners see every arm's quality and
cost after each question (what a user gets by sending every request to every arm), so they need no
exploration at all, and they still learn online, prequentially: each question is decided from the
questions before it. Beside the bandit they split the gap to the best fixed arm in hindsight in two:

* bandit learner -> full information: what bandit feedback (exploration) costs;
* full information -> best fixed arm: what learning online costs whatever the feedback. The fixed arm is
  chosen knowing the whole stream; where arms are near-tied no online learner can tell them apart.

Two learners, both on the replay's reward (quality minus the cost penalty at the run's weight):

* `full_info_leader`: follow the leader, context-free: the arm with the largest reward summed so far.
* `full_info_router`: one ridge regression of reward on `[1, x]` per arm, with the library's default
  priors (`ridge` on the intercept, `CONTEXT_RIDGE_RATIO x ridge` on each prompt weight), refitted after
  every question; the arm of largest predicted reward. Every arm sees every prompt, so the arms share one
  Gram matrix and one Sherman-Morrison update per question serves them all.

Ties (the first question, exact equalities) go to the seeded generator, as the bandit's do.
"""

from __future__ import annotations

import numpy as np

from ..policy.base import argmax_tiebreak
from ..policy.linucb import CONTEXT_RIDGE_RATIO, DEFAULT_RIDGE
from .runner import ReplayEnvironment, RunTrace, reward_matrix

__all__ = [
    "FULL_INFORMATION_LEARNERS",
    "leader_choices",
    "ridge_router_choices",
    "run_full_information",
]

FULL_INFORMATION_LEARNERS: tuple[str, ...] = ("full_info_leader", "full_info_router")


def _matrix(values: np.ndarray, name: str) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise ValueError(f"{name}: got shape {matrix.shape}; pass a (steps, columns) array with columns >= 1")
    return matrix


def leader_choices(rewards: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Follow the leader: at step t, the column with the largest reward summed over steps 0..t-1.

    rewards: (steps, arms), every arm's reward at each step in stream order.
    """
    rewards = _matrix(rewards, "rewards")
    totals = np.zeros(rewards.shape[1])
    choices = np.empty(rewards.shape[0], dtype=np.int64)
    for step, row in enumerate(rewards):
        choices[step] = argmax_tiebreak(totals, rng)
        totals += row
    return choices


def ridge_router_choices(
    contexts: np.ndarray,
    rewards: np.ndarray,
    rng: np.random.Generator,
    ridge: float = DEFAULT_RIDGE,
    context_ridge: float | None = None,
) -> np.ndarray:
    """Online per-arm ridge of reward on [1, x], each step decided before that step's outcomes are learnt.

    contexts: (steps, d) prompt features in stream order; rewards: (steps, arms). Prior precision `ridge`
    on every arm's intercept and `context_ridge` (default `CONTEXT_RIDGE_RATIO x ridge`) on its prompt
    weights, as LinUCB's defaults.
    """
    contexts, rewards = _matrix(contexts, "contexts"), _matrix(rewards, "rewards")
    if contexts.shape[0] != rewards.shape[0]:
        raise ValueError(f"contexts and rewards differ in steps: {contexts.shape[0]} vs {rewards.shape[0]}")
    prior = np.full(
        contexts.shape[1] + 1, CONTEXT_RIDGE_RATIO * ridge if context_ridge is None else context_ridge
    )
    prior[0] = ridge
    inverse = np.diag(1.0 / prior)  # of the Gram matrix every arm shares (full information)
    weights = np.zeros((prior.size, rewards.shape[1]))  # one column per arm
    choices = np.empty(rewards.shape[0], dtype=np.int64)
    for step in range(rewards.shape[0]):
        x_aug = np.concatenate(([1.0], contexts[step]))
        choices[step] = argmax_tiebreak(x_aug @ weights, rng)
        # Recursive least squares: the new inverse applied to x_aug, then every arm's weights at once.
        u = inverse @ x_aug
        gain = u / (1.0 + x_aug @ u)
        inverse -= np.outer(gain, u)
        weights += np.outer(gain, rewards[step] - x_aug @ weights)
    return choices


def run_full_information(
    env: ReplayEnvironment, learner: str, seed: int, cost_weight: float, order: np.ndarray
) -> RunTrace:
    """One full-information reference run over `order`, as a RunTrace like the bandit learners'."""
    if learner not in FULL_INFORMATION_LEARNERS:
        raise ValueError(f"not a full-information learner: {learner!r}; one of {FULL_INFORMATION_LEARNERS}")
    order = np.asarray(order)
    columns = np.asarray(env.learner_columns(learner))
    rows = np.ix_(order, columns)
    quality, cost = env.outcomes.quality[rows], env.outcomes.cost_usd[rows]
    reward = reward_matrix(env, cost_weight)[rows]
    rng = np.random.default_rng(seed)
    if learner == "full_info_leader":
        picks = leader_choices(reward, rng)
    else:
        picks = ridge_router_choices(env.features[order], reward, rng)
    steps = np.arange(order.size)
    return RunTrace(
        learner,
        seed,
        cost_weight,
        order,
        columns[picks],
        quality[steps, picks],
        cost[steps, picks],
        reward[steps, picks],
    )
