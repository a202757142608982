"""LinUCB over joint (context x arm-feature) features, with optional per-arm terms and forgetting.

Model: reward(x, a) ~ theta . vec(x_s (x) f(a)) + beta_a . x, where x_s is the context reduced to
`shared_context_dim` dims, f(a) the arm's descriptor (`arms.arm_features`) and beta_a an optional
per-arm term. The shared term is what transfers between arms that share a model, a strategy or a
budget scale; the per-arm term captures what is particular to one arm. This is the hybrid model of
Li et al. (2010) fitted in two stages: the per-arm terms regress the shared model's residual and the
cross-covariance blocks are dropped, which keeps a decision O(D^2 + K d^2) instead of O(K d D).

Numerics: float64; inverses maintained by Sherman-Morrison rank-one updates (symmetric by
construction) and replaced by an exact inverse of the exactly accumulated Gram matrix every
`refresh_every` updates, or at once if a denominator is ever non-finite or non-positive.
Forgetting (gamma < 1) discounts old evidence as in discounted LinUCB: A <- gamma A + phi phi^T +
(1 - gamma) ridge I; between refreshes the (1 - gamma) ridge I term is left out of the incremental
inverse, which only widens the confidence bound slightly.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..arms import ARM_FEATURE_DIM, ARM_FEATURE_NAMES, ArmSpace
from ..errors import ConfigError, StateError
from .base import Decision, argmax_tiebreak, check_context, check_reward, penalty_vector, top_scores

__all__ = ["LinUCB", "RidgeStats"]


class RidgeStats:
    """Sufficient statistics of one ridge regression with an incrementally maintained inverse.

    Hot-path costs per update: two D x D in-place passes (the rank-one downdate) and O(D) for the
    weights, using preallocated buffers (allocating a D x D temporary costs more than the maths).
    The exact Gram matrix is assembled lazily from the buffered feature rows at each refresh.
    """

    def __init__(self, dim: int, ridge: float, forgetting: float, refresh_every: int):
        self.dim = dim
        self.ridge = ridge
        self.forgetting = forgetting
        self.refresh_every = refresh_every
        self._gram = ridge * np.eye(dim)  # exact, up to the rows still pending
        self._pending_rows = np.zeros((refresh_every, dim))
        self._pending = 0
        self._inverse = np.eye(dim) / ridge  # true inverse = _inverse * _scale
        self._scale = 1.0
        self.target = np.zeros(dim)
        self.weights = np.zeros(dim)
        self.updates = 0
        self._buffer = np.empty((dim, dim))

    @property
    def inverse(self) -> np.ndarray:
        """The current inverse Gram matrix (a copy only when a forgetting scale is pending)."""
        return self._inverse if self._scale == 1.0 else self._inverse * self._scale

    @property
    def gram(self) -> np.ndarray:
        self._flush()
        return self._gram

    def add(self, features: np.ndarray, value: float) -> None:
        """Learn one (features, value) pair."""
        gamma = self.forgetting
        if gamma < 1.0:
            self._scale /= gamma
            self.target *= gamma
        self._pending_rows[self._pending] = features
        self._pending += 1
        self.target += value * features
        projected = (self._inverse @ features) * self._scale
        denominator = 1.0 + float(features @ projected)
        self.updates += 1
        if (
            not math.isfinite(denominator)
            or denominator <= 0.0
            or self._pending >= self.refresh_every
            or self._scale > 1e6
        ):
            self.refresh()
            return
        # Rank-one downdate with v v^T (v = u / sqrt(den)): symmetric to the last bit by construction.
        shared = projected / math.sqrt(denominator * self._scale)
        np.multiply(shared[:, None], shared[None, :], out=self._buffer)
        self._inverse -= self._buffer
        # theta' = theta + u (r - phi.theta) / den: the closed form of A'^-1 b', with or without forgetting.
        self.weights = self.weights + projected * ((value - float(features @ self.weights)) / denominator)

    def _flush(self) -> None:
        """Fold the pending rows (with their forgetting weights) into the exact Gram matrix."""
        count = self._pending
        if count == 0:
            return
        gamma = self.forgetting
        if gamma < 1.0:
            decay = gamma ** np.arange(count - 1, -1, -1, dtype=np.float64)
            total = gamma**count
            self._gram *= total
            self._gram[np.diag_indices(self.dim)] += (1.0 - total) * self.ridge
        else:
            decay = np.ones(count)
        rows = self._pending_rows[:count]
        self._gram += (rows * decay[:, None]).T @ rows
        self._pending = 0

    def refresh(self) -> None:
        """Exact inverse of the accumulated Gram matrix (Cholesky), symmetrised."""
        self._flush()
        self._gram = 0.5 * (self._gram + self._gram.T)
        factor = np.linalg.cholesky(self._gram)
        lower_inverse = np.linalg.solve(factor, np.eye(self.dim))
        self._inverse = lower_inverse.T @ lower_inverse
        self._scale = 1.0
        self.weights = self._inverse @ self.target

    def state(self) -> dict[str, Any]:
        return {
            "gram": self.gram.copy(),
            "inverse": self.inverse.copy(),
            "target": self.target.copy(),
            "updates": self.updates,
        }

    def load(self, state: Mapping[str, Any], owner: str) -> None:
        arrays = {}
        for key in ("gram", "inverse", "target"):
            array = np.array(state[key], dtype=np.float64)
            expected = (self.dim,) if key == "target" else (self.dim, self.dim)
            if array.shape != expected or not np.isfinite(array).all():
                raise StateError(
                    f"{owner}.{key}: shape {array.shape} or non-finite values; expected {expected}"
                )
            arrays[key] = array
        self._gram, self._inverse, self.target = arrays["gram"], arrays["inverse"], arrays["target"]
        self._scale = 1.0
        self._pending = 0
        self.weights = self._inverse @ self.target
        self.updates = int(state.get("updates", 0))


class LinUCB:
    """Contextual bandit with upper confidence bounds over joint context x arm features.

    alpha: width of the confidence bonus (exploration). ridge: prior precision. forgetting: gamma in
    (0, 1], 1 keeps all evidence; 0.999 halves an observation's weight after ~700 updates. per_arm:
    add per-arm terms (hybrid model). shared: use the joint model (turn off for classic disjoint LinUCB).
    """

    name = "linucb"

    def __init__(
        self,
        alpha: float = 1.0,
        ridge: float = 1.0,
        forgetting: float = 1.0,
        *,
        shared: bool = True,
        per_arm: bool = True,
        shared_context_dim: int = 8,
        refresh_every: int = 1000,
        seed: int = 0,
        record_top: int = 5,
    ):
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
            raise ConfigError(f"LinUCB.alpha: got {alpha!r}; use a finite number >= 0 (e.g. 0.5 to 2)")
        if not (isinstance(ridge, (int, float)) and math.isfinite(ridge) and ridge > 0):
            raise ConfigError(f"LinUCB.ridge: got {ridge!r}; use a finite number > 0 (e.g. 1.0)")
        if not (isinstance(forgetting, (int, float)) and 0 < forgetting <= 1):
            raise ConfigError(f"LinUCB.forgetting: got {forgetting!r}; use a number in (0, 1], e.g. 0.999")
        if not (shared or per_arm):
            raise ConfigError("LinUCB: shared and per_arm are both False; enable at least one model")
        if shared_context_dim < 1 or refresh_every < 1:
            raise ConfigError("LinUCB.shared_context_dim and refresh_every must be >= 1")
        self.alpha = float(alpha)
        self.ridge = float(ridge)
        self.forgetting = float(forgetting)
        self.shared = shared
        self.per_arm = per_arm
        self.shared_context_dim = int(shared_context_dim)
        self.refresh_every = int(refresh_every)
        self.seed = seed
        self.record_top = record_top
        self._rng = np.random.default_rng(seed)
        self._lock = threading.RLock()
        self._arm_space: ArmSpace | None = None
        self.context_dim = 0

    # ------------------------------------------------------------------ binding

    def config(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "ridge": self.ridge,
            "forgetting": self.forgetting,
            "shared": self.shared,
            "per_arm": self.per_arm,
            "shared_context_dim": self.shared_context_dim,
            "refresh_every": self.refresh_every,
            "seed": self.seed,
        }

    def bind(self, arm_space: ArmSpace, context_dim: int) -> None:
        """Attach to an arm space and a context size; must precede `select`. Re-binding keeps nothing."""
        if not isinstance(context_dim, int) or context_dim < 1:
            raise ConfigError(
                f"LinUCB.bind.context_dim: got {context_dim!r}; use the featurizer's dim (>= 1)"
            )
        with self._lock:
            self._arm_space = arm_space
            self.context_dim = context_dim
            augmented = context_dim + 1
            if augmented <= self.shared_context_dim:
                self._projection = np.eye(augmented)
            else:
                # Keep the bias exactly; reduce the rest with a seeded Gaussian projection.
                rng = np.random.default_rng(self.seed + 7919)
                reduced = self.shared_context_dim - 1
                self._projection = np.zeros((self.shared_context_dim, augmented))
                self._projection[0, 0] = 1.0
                self._projection[1:, 1:] = rng.standard_normal((reduced, context_dim)) / math.sqrt(reduced)
            self._shared_dim = self._projection.shape[0] * ARM_FEATURE_DIM
            self._shared_stats = RidgeStats(self._shared_dim, self.ridge, self.forgetting, self.refresh_every)
            self._arm_stats: dict[str, RidgeStats] = {}
            # Stacked copies of the per-arm inverses and weights for vectorised scoring.
            self._slot_of: dict[str, int] = {}
            self._slot_cache: dict[tuple[str, ...], np.ndarray] = {}
            self._stacked_inverse = np.zeros((0, augmented, augmented))
            self._stacked_weights = np.zeros((0, augmented))

    @property
    def bound(self) -> bool:
        return self._arm_space is not None

    def _space(self) -> ArmSpace:
        if self._arm_space is None:
            raise ConfigError("LinUCB: not bound; call policy.bind(arm_space, featurizer.dim) first")
        return self._arm_space

    def _slot(self, arm_id: str) -> int:
        slot = self._slot_of.get(arm_id)
        if slot is None:
            augmented = self.context_dim + 1
            slot = len(self._slot_of)
            self._slot_of[arm_id] = slot
            self._arm_stats[arm_id] = RidgeStats(augmented, self.ridge, self.forgetting, self.refresh_every)
            self._stacked_inverse = np.concatenate(
                [self._stacked_inverse, (np.eye(augmented) / self.ridge)[None]]
            )
            self._stacked_weights = np.concatenate([self._stacked_weights, np.zeros((1, augmented))])
        return slot

    def _slots(self, ids: tuple[str, ...]) -> np.ndarray:
        """Row of each arm in the stacked per-arm arrays; cached per candidate subset."""
        cached = self._slot_cache.get(ids)
        if cached is None:
            cached = np.fromiter((self._slot(arm_id) for arm_id in ids), dtype=np.intp, count=len(ids))
            if len(self._slot_cache) > 256:
                self._slot_cache.clear()
            self._slot_cache[ids] = cached
        return cached

    # ------------------------------------------------------------------ scoring

    def _reduced(self, x_aug: np.ndarray) -> np.ndarray:
        return self._projection @ x_aug

    def score(
        self,
        x: np.ndarray,
        arms: Sequence[str] | None = None,
        penalty: Mapping[str, float] | np.ndarray | None = None,
    ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
        """(arm ids, predicted mean, exploration bonus, penalty) for every candidate arm."""
        with self._lock:
            space = self._space()
            ids = space.ids if arms is None else space.check_ids(arms)
            vector = check_context(x, self.context_dim)
            x_aug = np.concatenate(([1.0], vector))
            features = space.features(ids)
            mean = np.zeros(len(ids))
            variance = np.zeros(len(ids))
            if self.shared:
                reduced = self._projection @ x_aug
                p, m = reduced.shape[0], ARM_FEATURE_DIM
                mean += features @ np.dot(reduced, self._shared_stats.weights.reshape(p, m))
                inverse = self._shared_stats.inverse
                partial = np.dot(reduced, inverse.reshape(p, m * p * m)).reshape(m, p, m)
                arm_gram = np.einsum("j,mjn->mn", reduced, partial)
                variance += ((features @ arm_gram) * features).sum(axis=1)
            if self.per_arm:
                slots = self._slots(ids)
                augmented = x_aug.shape[0]
                per_arm_variance = (self._stacked_inverse.reshape(-1, augmented) @ x_aug).reshape(
                    -1, augmented
                ) @ x_aug
                variance += per_arm_variance[slots]
                mean += (self._stacked_weights @ x_aug)[slots]
            bonus = self.alpha * np.sqrt(np.maximum(variance, 0.0))
            return ids, mean, bonus, penalty_vector(penalty, ids)

    def select(
        self,
        x: np.ndarray,
        arms: Sequence[str] | None = None,
        penalty: Mapping[str, float] | np.ndarray | None = None,
    ) -> Decision:
        """Pick the arm with the highest mean + bonus - penalty; exact ties broken by the seeded generator."""
        with self._lock:
            ids, mean, bonus, cost_penalty = self.score(x, arms, penalty)
            chosen = argmax_tiebreak(mean + bonus - cost_penalty, self._rng)
            return Decision(
                arm_id=ids[chosen],
                context=np.array(x, dtype=np.float64),
                scores=top_scores(ids, mean, bonus, cost_penalty, self.record_top),
                policy=self.name,
            )

    def select_batch(
        self, xs: np.ndarray, arms: Sequence[str] | None = None, penalties: np.ndarray | None = None
    ) -> list[Decision]:
        """Decisions for many contexts at once against the current model (no learning in between)."""
        with self._lock:
            space = self._space()
            ids = space.ids if arms is None else space.check_ids(arms)
            matrix = np.asarray(xs, dtype=np.float64)
            if matrix.ndim != 2 or matrix.shape[1] != self.context_dim:
                raise ConfigError(f"xs: got shape {matrix.shape}; expected (n, {self.context_dim})")
            if not np.isfinite(matrix).all():
                raise ConfigError("xs: contains NaN or infinity; the featurizer must return finite values")
            rows = matrix.shape[0]
            cost_penalty = (
                np.zeros((rows, len(ids))) if penalties is None else np.asarray(penalties, dtype=np.float64)
            )
            if cost_penalty.shape == (len(ids),):
                cost_penalty = np.broadcast_to(cost_penalty, (rows, len(ids)))
            if cost_penalty.shape != (rows, len(ids)):
                raise ConfigError(f"penalties: got shape {cost_penalty.shape}; expected ({rows}, {len(ids)})")
            x_aug = np.hstack([np.ones((rows, 1)), matrix])
            features = space.features(ids)
            mean = np.zeros((rows, len(ids)))
            variance = np.zeros((rows, len(ids)))
            if self.shared:
                reduced = x_aug @ self._projection.T  # (n, p)
                p, m = reduced.shape[1], ARM_FEATURE_DIM
                mean += (reduced @ self._shared_stats.weights.reshape(p, m)) @ features.T
                inverse = self._shared_stats.inverse.reshape(p, m, p, m)
                arm_grams = np.einsum("ni,imjl,nj->nml", reduced, inverse, reduced, optimize=True)
                variance += np.einsum("km,nml,kl->nk", features, arm_grams, features, optimize=True)
            if self.per_arm:
                slots = self._slots(ids)
                stacked = self._stacked_inverse[slots]
                variance += np.einsum("nd,kde,ne->nk", x_aug, stacked, x_aug, optimize=True)
                mean += x_aug @ self._stacked_weights[slots].T
            bonus = self.alpha * np.sqrt(np.maximum(variance, 0.0))
            decisions = []
            for row in range(rows):
                chosen = argmax_tiebreak(mean[row] + bonus[row] - cost_penalty[row], self._rng)
                decisions.append(
                    Decision(
                        arm_id=ids[chosen],
                        context=matrix[row].copy(),
                        scores=top_scores(ids, mean[row], bonus[row], cost_penalty[row], self.record_top),
                        policy=self.name,
                    )
                )
            return decisions

    # ------------------------------------------------------------------ learning

    def update(self, decision: Decision, reward: float) -> None:
        """Learn from the reward of a decision; also for an arm removed since (its state is kept)."""
        value = check_reward(reward)
        with self._lock:
            space = self._space()
            vector = check_context(decision.context, self.context_dim, owner="decision.context")
            arm_id = decision.arm_id
            if arm_id in space:
                arm_vector = space.features((arm_id,))[0]
            elif arm_id in self._removed_features:
                arm_vector = self._removed_features[arm_id]
            else:
                raise ConfigError(
                    f"decision.arm_id: unknown {arm_id!r}; it was never in this policy's arm space"
                )
            self._learn(vector, arm_id, arm_vector, value)

    @property
    def _removed_features(self) -> dict[str, np.ndarray]:
        cache: dict[str, np.ndarray] = self.__dict__.setdefault("_features_of_known_arms", {})
        return cache

    def _learn(self, vector: np.ndarray, arm_id: str, arm_vector: np.ndarray, value: float) -> None:
        self._removed_features[arm_id] = arm_vector
        x_aug = np.concatenate(([1.0], vector))
        residual = value
        if self.shared:
            joint = np.outer(self._reduced(x_aug), arm_vector).ravel()
            prediction = float(self._shared_stats.weights @ joint)
            self._shared_stats.add(joint, value)
            residual = value - prediction
        if self.per_arm:
            slot = self._slot(arm_id)
            stats = self._arm_stats[arm_id]
            stats.add(x_aug, residual)
            self._stacked_inverse[slot] = stats.inverse
            self._stacked_weights[slot] = stats.weights

    def warm_start(self, logged: Iterable[tuple[np.ndarray, str, float]]) -> int:
        """Learn from logged (context, arm id, reward) triples, e.g. a previous deployment; returns count."""
        count = 0
        with self._lock:
            space = self._space()
            for index, (x, arm_id, reward) in enumerate(logged):
                vector = check_context(x, self.context_dim, owner=f"logged[{index}].x")
                if arm_id not in space and arm_id not in self._removed_features:
                    raise ConfigError(
                        f"logged[{index}].arm_id: unknown {arm_id!r}; add the arm to the arm space first"
                    )
                arm_vector = (
                    space.features((arm_id,))[0] if arm_id in space else self._removed_features[arm_id]
                )
                self._learn(vector, arm_id, arm_vector, check_reward(reward))
                count += 1
            self.refresh()
        return count

    def refresh(self) -> None:
        """Replace every incremental inverse by an exact one."""
        with self._lock:
            if self.shared:
                self._shared_stats.refresh()
            for arm_id, stats in self._arm_stats.items():
                stats.refresh()
                slot = self._slot_of[arm_id]
                self._stacked_inverse[slot] = stats.inverse
                self._stacked_weights[slot] = stats.weights

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict[str, Any]:
        """Everything learnt, as plain data and numpy arrays (see `store`)."""
        with self._lock:
            self._space()
            return {
                "kind": self.name,
                "config": self.config(),
                "context_dim": self.context_dim,
                "arm_feature_names": list(ARM_FEATURE_NAMES),
                "projection": self._projection.copy(),
                "shared": self._shared_stats.state() if self.shared else None,
                "per_arm": {arm_id: stats.state() for arm_id, stats in self._arm_stats.items()},
                "arm_features": {arm_id: vec.copy() for arm_id, vec in self._removed_features.items()},
                "rng": self._rng.bit_generator.state,
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> list[str]:
        """Restore learnt state into the bound arm space; returns the arm ids whose state was dropped.

        Per-arm state of arms no longer in the space is kept (an arm may return) but reported.
        """
        with self._lock:
            self._space()
            if state.get("kind") != self.name:
                raise StateError(
                    f"policy.kind: state is for {state.get('kind')!r}, this policy is {self.name!r}"
                )
            if int(state.get("context_dim", -1)) != self.context_dim:
                raise StateError(
                    f"policy.context_dim: state has {state.get('context_dim')}, the featurizer gives "
                    f"{self.context_dim}; use the featurizer the state was learnt with"
                )
            if list(state.get("arm_feature_names", [])) != list(ARM_FEATURE_NAMES):
                raise StateError(
                    "policy.arm_feature_names: the arm feature layout changed; the state cannot be reused"
                )
            projection = np.asarray(state["projection"], dtype=np.float64)
            if projection.shape != self._projection.shape:
                raise StateError(
                    "policy.projection: shape differs; shared_context_dim changed since the save"
                )
            fresh = LinUCB(
                **{
                    **self.config(),
                    **{k: v for k, v in state.get("config", {}).items() if k in self.config()},
                }
            )
            fresh.bind(self._space(), self.context_dim)
            fresh._projection = projection
            if self.shared and state.get("shared") is not None:
                fresh._shared_stats.load(state["shared"], "policy.shared")
            for arm_id, arm_state in dict(state.get("per_arm", {})).items():
                fresh._slot(arm_id)
                fresh._arm_stats[arm_id].load(arm_state, f"policy.per_arm[{arm_id!r}]")
                slot = fresh._slot_of[arm_id]
                fresh._stacked_inverse[slot] = fresh._arm_stats[arm_id].inverse
                fresh._stacked_weights[slot] = fresh._arm_stats[arm_id].weights
            for arm_id, vec in dict(state.get("arm_features", {})).items():
                fresh._removed_features[arm_id] = np.asarray(vec, dtype=np.float64)
            if isinstance(state.get("rng"), Mapping):
                fresh._rng.bit_generator.state = dict(state["rng"])
            # Adopt the restored state only once everything parsed: a bad file changes nothing.
            for key in (
                "alpha",
                "ridge",
                "forgetting",
                "shared",
                "per_arm",
                "shared_context_dim",
                "refresh_every",
                "seed",
            ):
                setattr(self, key, getattr(fresh, key))
            self._projection = fresh._projection
            self._shared_dim = fresh._shared_dim
            self._shared_stats = fresh._shared_stats
            self._arm_stats = fresh._arm_stats
            self._slot_of = fresh._slot_of
            self._slot_cache = {}
            self._stacked_inverse = fresh._stacked_inverse
            self._stacked_weights = fresh._stacked_weights
            self.__dict__["_features_of_known_arms"] = fresh._removed_features
            self._rng = fresh._rng
            space_ids = set(self._space().ids)
            return sorted(arm_id for arm_id in self._arm_stats if arm_id not in space_ids)
