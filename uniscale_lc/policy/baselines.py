"""Baseline policies behind the same protocol: a fixed arm, uniform random, epsilon-greedy.

They ignore the context (that is what makes them baselines) but honour the arm subset and penalties,
so the replay compares learners under exactly the same protocol.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..arms import ArmSpace
from ..errors import ConfigError, StateError
from .base import Decision, argmax_tiebreak, check_context, check_reward, penalty_vector, top_scores

__all__ = ["EpsilonGreedy", "FixedArm", "UniformRandom"]


class _ContextFreePolicy:
    """Shared plumbing: binding, candidate checks, per-arm running means, persistence."""

    name = "baseline"

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._lock = threading.RLock()
        self._arm_space: ArmSpace | None = None
        self.context_dim = 0
        self.pulls: dict[str, int] = {}
        self.reward_sums: dict[str, float] = {}

    def bind(self, arm_space: ArmSpace, context_dim: int) -> None:
        if not isinstance(context_dim, int) or context_dim < 1:
            raise ConfigError(
                f"{type(self).__name__}.bind.context_dim: got {context_dim!r}; use the featurizer's dim"
            )
        self._arm_space = arm_space
        self.context_dim = context_dim

    def _candidates(self, arms: Sequence[str] | None) -> tuple[str, ...]:
        if self._arm_space is None:
            raise ConfigError(
                f"{type(self).__name__}: not bound; call policy.bind(arm_space, featurizer.dim) first"
            )
        return self._arm_space.ids if arms is None else self._arm_space.check_ids(arms)

    def _means(self, ids: Sequence[str]) -> np.ndarray:
        return np.array(
            [self.reward_sums.get(i, 0.0) / self.pulls[i] if self.pulls.get(i) else 0.0 for i in ids]
        )

    def select(
        self,
        x: np.ndarray,
        arms: Sequence[str] | None = None,
        penalty: Mapping[str, float] | np.ndarray | None = None,
    ) -> Decision:
        """Choose among the candidates by the subclass's rule; the record holds running means."""
        with self._lock:
            ids = self._candidates(arms)
            check_context(x, self.context_dim)
            cost_penalty = penalty_vector(penalty, ids)
            mean = self._means(ids)
            chosen = self._choose(ids, mean, cost_penalty)
            return Decision(
                arm_id=ids[chosen],
                context=np.array(x, dtype=np.float64),
                scores=top_scores(ids, mean, np.zeros(len(ids)), cost_penalty),
                policy=self.name,
            )

    def _choose(self, ids: tuple[str, ...], mean: np.ndarray, penalty: np.ndarray) -> int:
        raise NotImplementedError

    def update(self, decision: Decision, reward: float) -> None:
        value = check_reward(reward)
        with self._lock:
            check_context(decision.context, self.context_dim, owner="decision.context")
            self.pulls[decision.arm_id] = self.pulls.get(decision.arm_id, 0) + 1
            self.reward_sums[decision.arm_id] = self.reward_sums.get(decision.arm_id, 0.0) + value

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "kind": self.name,
                "context_dim": self.context_dim,
                "pulls": dict(self.pulls),
                "reward_sums": dict(self.reward_sums),
                "rng": self._rng.bit_generator.state,
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> list[str]:
        if state.get("kind") != self.name:
            raise StateError(f"policy.kind: state is for {state.get('kind')!r}, this policy is {self.name!r}")
        pulls = {str(k): int(v) for k, v in dict(state.get("pulls", {})).items()}
        sums = {str(k): float(v) for k, v in dict(state.get("reward_sums", {})).items()}
        if any(v < 0 for v in pulls.values()) or not all(math.isfinite(v) for v in sums.values()):
            raise StateError(
                "policy.pulls/reward_sums: negative counts or non-finite sums; the file was edited or corrupt"
            )
        with self._lock:
            self.pulls, self.reward_sums = pulls, sums
            if isinstance(state.get("rng"), Mapping):
                self._rng.bit_generator.state = dict(state["rng"])
            known = set(self._arm_space.ids) if self._arm_space else set()
            return sorted(arm_id for arm_id in pulls if arm_id not in known)


class FixedArm(_ContextFreePolicy):
    """Always the same arm (when it is a candidate; else the first candidate, and the record says so)."""

    name = "fixed"

    def __init__(self, arm_id: str, seed: int = 0):
        super().__init__(seed)
        self.arm_id = arm_id

    def bind(self, arm_space: ArmSpace, context_dim: int) -> None:
        if self.arm_id not in arm_space:
            raise ConfigError(
                f"FixedArm.arm_id: {self.arm_id!r} is not in the arm space; known: {arm_space.ids[:8]}"
            )
        super().bind(arm_space, context_dim)

    def _choose(self, ids: tuple[str, ...], mean: np.ndarray, penalty: np.ndarray) -> int:
        return ids.index(self.arm_id) if self.arm_id in ids else 0


class UniformRandom(_ContextFreePolicy):
    """Each candidate arm with equal probability: the floor any learner must beat."""

    name = "random"

    def _choose(self, ids: tuple[str, ...], mean: np.ndarray, penalty: np.ndarray) -> int:
        return int(self._rng.integers(len(ids)))


class EpsilonGreedy(_ContextFreePolicy):
    """Explore uniformly with probability epsilon, else the best running mean minus penalty.

    Untried arms are tried first (optimistic start), so no arm is never sampled.
    """

    name = "epsilon_greedy"

    def __init__(self, epsilon: float = 0.1, seed: int = 0):
        if not (isinstance(epsilon, (int, float)) and 0.0 <= epsilon <= 1.0):
            raise ConfigError(
                f"EpsilonGreedy.epsilon: got {epsilon!r}; use a probability in [0, 1], e.g. 0.1"
            )
        super().__init__(seed)
        self.epsilon = float(epsilon)

    def _choose(self, ids: tuple[str, ...], mean: np.ndarray, penalty: np.ndarray) -> int:
        untried = [index for index, arm_id in enumerate(ids) if not self.pulls.get(arm_id)]
        if untried:
            return untried[int(self._rng.integers(len(untried)))]
        if self._rng.random() < self.epsilon:
            return int(self._rng.integers(len(ids)))
        return argmax_tiebreak(mean - penalty, self._rng)
