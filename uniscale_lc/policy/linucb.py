"""LinUCB over joint (context x arm-feature) features, with optional per-arm terms and forgetting.

Model: reward(x, a) ~ theta . vec(x_s (x) f(a)) + beta_a . x, where x_s is the context reduced to
`shared_context_dim` dims, f(a) the arm's descriptor (`arms.arm_features`) and beta_a an optional
per-arm term. The shared term is what transfers between arms that share a model, a strategy or a
budget scale; the per-arm term captures what is particular to one arm. This is the hybrid model of
Li et al. (2010) fitted in two stages: the per-arm terms regress the shared model's residual and the
cross-covariance blocks are dropped, which keeps a decision O(D^2 + K d^2) instead of O(K d D).

Numerics: float64; inverses maintained by Sherman-Morrison rank-one updates (symmetric by
construction) and replaced by an exact inverse of the exactly accumulated Gram matrix every
`refresh_every` updates, or at once if a denominator is ever non-finite or non-positive (Cholesky,
with an eigendecomposition floored at `ridge` when rounding defeats Cholesky). Contexts are checked
finite and of magnitude <= 1e6 (`policy.base.MAX_ABS_FEATURE`) before anything is learnt.
Forgetting (gamma < 1) discounts old evidence as in discounted LinUCB: A <- gamma A + phi phi^T +
(1 - gamma) diag(prior); between refreshes the (1 - gamma) diag(prior) term is left out of the incremental
inverse, which only widens the confidence bound slightly (by at most (1 - gamma^refresh_every) prior
in the Gram matrix; tests/test_linucb.py checks both bounds).

Speed and memory: scoring reads candidate arms' d x d inverses (that read bounds a decision's time), so
each per-arm inverse is stored only in the float32 form scoring reads (policy/arm_inverses.py): prior minus
one low-rank row per observation for an arm with up to 32 observations (blocks that grow with them), else the
packed upper triangle (off-diagonal doubled, forgetting folded in). Updates work in float64 and round once;
the exact Gram matrix is kept in float64 and re-inverted every `refresh_every` updates, so float32 rounding
never accumulates past that (policy/packed.py). An arm holds at most about 32 KB at d = 64. The shared statistic stays exact
float64 (policy/ridge.py). At scale, `select` does not read every inverse: it first reads cheap upper bounds
on each arm's variance (policy/bounds.py) and scores exactly only the arms whose bound can still reach the
top, with the same choice as scoring all (tests/test_policy_two_pass.py). See docs/performance.md.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..arms import ARM_FEATURE_DIM, ARM_FEATURE_NAMES, ArmSpace
from ..errors import ConfigError, StateError
from .arm_inverses import ArmInverses
from .base import Decision, argmax_tiebreak, check_context, check_reward, penalty_vector, top_scores
from .bounds import pruned_totals
from .packed import PackedRidgeStats
from .ridge import MAX_RIDGE, MIN_RIDGE, RidgeStats

__all__ = ["ARM_RIDGE_RATIO", "CONTEXT_RIDGE_RATIO", "DEFAULT_RIDGE", "LinUCB", "RidgeStats"]

# The default prior precision of each arm's intercept (and of the arm-feature model): `ridge`.
DEFAULT_RIDGE = 1.0
# The default prior precision of context weights, as a multiple of `ridge` (docs/policy.md, "Priors"):
# an arm's mean and its arm-feature prediction are well determined after a few pulls, while a prompt
# feature's effect is small and noisy, so it is shrunk harder and buys less exploration.
CONTEXT_RIDGE_RATIO = 10.0
# The default prior precision of an arm's own mean, as a multiple of `ridge`, when the shared model is on:
# the per-arm term corrects what the arm's features predict, so a fresh arm starts at that prediction and
# 300 arms do not each need their own exploration (docs/policy.md, "Priors").
ARM_RIDGE_RATIO = 10.0
# `select` takes two passes once bounds save reading this many floats (2 MB, 0.1 ms of reads at d = 65; below,
# the second pass's fixed cost is more than they save: 1,000 arms with 1 to 4 observations each).
_TWO_PASS_MIN = 500_000


class LinUCB:
    """Contextual bandit with upper confidence bounds over joint context x arm features.

    alpha: width of the confidence bonus (exploration); the default 0.3 keeps a fresh arm's bonus (about
    2 alpha for a unit-norm context) near the [0, 1] range of quality. ridge: prior precision of the arm
    mean and the arm-feature model. context_ridge: prior precision of the weights on prompt features
    (default `CONTEXT_RIDGE_RATIO * ridge`): context effects must earn their place against the arm means.
    arm_ridge: prior precision of each arm's own deviation from what its features predict (default
    `ARM_RIDGE_RATIO * ridge` with the shared model, `ridge` without it).
    forgetting: gamma in (0, 1], 1 keeps all evidence; 0.999 halves an observation's weight after ~700
    updates. per_arm: add per-arm terms (hybrid model). shared: use the joint model (turn off for classic
    disjoint LinUCB).
    """

    name = "linucb"

    def __init__(
        self,
        alpha: float = 0.3,
        ridge: float = DEFAULT_RIDGE,
        forgetting: float = 1.0,
        *,
        context_ridge: float | None = None,
        arm_ridge: float | None = None,
        shared: bool = True,
        per_arm: bool = True,
        shared_context_dim: int = 8,
        refresh_every: int = 1000,
        seed: int = 0,
        record_top: int = 5,
    ):
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
            raise ConfigError(f"LinUCB.alpha: got {alpha!r}; use a finite number >= 0 (e.g. 0.1 to 1)")
        if not (isinstance(ridge, (int, float)) and MIN_RIDGE <= ridge <= MAX_RIDGE):
            raise ConfigError(
                f"LinUCB.ridge: got {ridge!r}; use a number in [{MIN_RIDGE:g}, {MAX_RIDGE:g}] (e.g. 1.0): "
                "the inverse Gram matrix starts at 1/ridge and must stay finite"
            )
        if context_ridge is None:
            context_ridge = CONTEXT_RIDGE_RATIO * float(ridge)
        if arm_ridge is None:
            # Without the shared model nothing predicts a fresh arm's mean: its own prior stays `ridge`.
            arm_ridge = (ARM_RIDGE_RATIO if shared else 1.0) * float(ridge)
        top = max(CONTEXT_RIDGE_RATIO, ARM_RIDGE_RATIO) * MAX_RIDGE
        for name, value in (("context_ridge", context_ridge), ("arm_ridge", arm_ridge)):
            if not (isinstance(value, (int, float)) and MIN_RIDGE <= value <= top):
                raise ConfigError(
                    f"LinUCB.{name}: got {value!r}; use a number in [{MIN_RIDGE:g}, {top:g}], or None for "
                    "the default multiple of ridge"
                )
        if not (isinstance(forgetting, (int, float)) and 0 < forgetting <= 1):
            raise ConfigError(f"LinUCB.forgetting: got {forgetting!r}; use a number in (0, 1], e.g. 0.999")
        if not (shared or per_arm):
            raise ConfigError("LinUCB: shared and per_arm are both False; enable at least one model")
        if shared_context_dim < 1 or refresh_every < 1:
            raise ConfigError("LinUCB.shared_context_dim and refresh_every must be >= 1")
        self.alpha = float(alpha)
        self.ridge = float(ridge)
        self.context_ridge = float(context_ridge)
        self.arm_ridge = float(arm_ridge)
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
            "context_ridge": self.context_ridge,
            "arm_ridge": self.arm_ridge,
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
            # Joint features are vec(reduced context (x) arm features), row-major: the first
            # ARM_FEATURE_DIM entries pair the bias with the arm features (what arm features predict
            # whatever the prompt), the rest pair prompt features with them.
            shared_prior = np.full(self._shared_dim, self.context_ridge)
            shared_prior[:ARM_FEATURE_DIM] = self.ridge
            self._shared_stats = RidgeStats(
                self._shared_dim, self.ridge, self.forgetting, self.refresh_every, prior=shared_prior
            )
            # Per-arm features are [1, x]: the arm's own mean, then its prompt-feature weights.
            self._arm_prior = np.full(augmented, self.context_ridge)
            self._arm_prior[0] = self.arm_ridge
            self._arm_stats: dict[str, PackedRidgeStats] = {}
            self._slot_of: dict[str, int] = {}
            # The per-arm inverses themselves, in the float32 forms scoring reads (policy/arm_inverses.py).
            self._arm_inverses = ArmInverses(augmented, self._arm_prior)
            self._stacked_weights = np.zeros((8, augmented))
            # Candidate views (ids, arm features, slots) per arm-space version and subset.
            self._views: dict[tuple[int, tuple[str, ...] | None], _CandidateView] = {}
            # Features of every arm this policy has seen, so feedback for a since-removed arm still teaches.
            self._known_features: dict[str, np.ndarray] = {}
            self._features_version = -1

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
            slot = len(self._slot_of)
            if slot == self._stacked_weights.shape[0]:  # grow by doubling: amortised O(1) per arm
                self._stacked_weights = np.concatenate(
                    [self._stacked_weights, np.zeros_like(self._stacked_weights)]
                )
            self._slot_of[arm_id] = slot
            stats = self._arm_inverses.add_arm(self.ridge, self.forgetting, self.refresh_every)
            self._arm_stats[arm_id] = stats
            self._sync_slot(slot, stats)
        return slot

    def _sync_slot(self, slot: int, stats: PackedRidgeStats) -> None:
        """Copy one arm's weights into the scoring array (its inverse is already a row there)."""
        self._stacked_weights[slot] = stats.weights

    def _remember_space_features(self, space: ArmSpace) -> None:
        version = space.version  # read before the ids: a concurrent change shows up as a new version
        self._known_features.update(zip(space.ids, space.features(), strict=True))
        self._features_version = version

    def _view(self, arms: Sequence[str] | None) -> _CandidateView:
        """Candidate ids, their arm features and per-arm slots; cached per arm-space version and subset."""
        space = self._space()
        version = space.version
        key = (version, None if arms is None else tuple(arms))
        view = self._views.get(key)
        if view is None:
            ids = space.ids if arms is None else space.check_ids(arms)
            if self._features_version != version:
                self._remember_space_features(space)
            slots = (
                np.fromiter((self._slot(arm_id) for arm_id in ids), dtype=np.intp, count=len(ids))
                if self.per_arm
                else np.zeros(0, dtype=np.intp)  # no per-arm model: no per-arm statistics to allocate
            )
            in_slot_order = bool(np.array_equal(slots, np.arange(len(ids))))
            view = _CandidateView(ids, space.features(ids), slots, in_slot_order)
            if len(self._views) > 256:
                self._views.clear()
            self._views[key] = view
        return view

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
            view = self._view(arms)
            x_aug = np.concatenate(([1.0], check_context(x, self.context_dim)))
            mean, variance = self._shared_terms(view.features, x_aug)
            if self.per_arm:
                exact = self._arm_inverses.variance(x_aug, by_row=self.forgetting == 1.0)
                per_arm_mean, per_arm_variance = self._per_arm_terms(view, x_aug, exact)
                # Each term is added only where it applies (0 + a is a, to the bit): fewer passes over K arms.
                variance = variance + per_arm_variance
                mean = mean + per_arm_mean
            np.maximum(variance, 0.0, out=variance)
            bonus = self.alpha * np.sqrt(variance, out=variance)
            return view.ids, mean, bonus, penalty_vector(penalty, view.ids)

    def _shared_terms(self, features: np.ndarray, x_aug: np.ndarray) -> tuple[Any, Any]:
        """The shared model's mean and variance per candidate (0.0 without it)."""
        if not self.shared:
            return 0.0, 0.0
        stats = self._shared_stats
        reduced = self._projection @ x_aug
        p, m = reduced.shape[0], ARM_FEATURE_DIM
        mean = features @ np.dot(reduced, stats.weights.reshape(p, m))
        # The unscaled inverse and a scalar scale: no D x D copy under forgetting.
        partial = np.dot(reduced, stats._inverse.reshape(p, m * p * m)).reshape(m, p, m)
        arm_gram = np.einsum("j,mjn->mn", reduced, partial)
        return mean, np.einsum("km,km->k", features @ arm_gram, features) * stats._scale

    def _per_arm_terms(
        self, view: _CandidateView, x_aug: np.ndarray, variance: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-arm means and the given slot-order variances, in candidate order."""
        per_arm_mean = self._stacked_weights[: len(self._slot_of)] @ x_aug
        if view.in_slot_order:
            return per_arm_mean[: len(view.ids)], variance[: len(view.ids)]
        return per_arm_mean[view.slots], variance[view.slots]

    def select(
        self,
        x: np.ndarray,
        arms: Sequence[str] | None = None,
        penalty: Mapping[str, float] | np.ndarray | None = None,
    ) -> Decision:
        """Pick the arm with the highest mean + bonus - penalty; exact ties broken by the seeded generator.

        With many arms of many observations (and no forgetting), two passes: bounds for those arms, exact
        scores only where a bound could reach the recorded top (policy/bounds.py); the same decision and
        record as scoring every arm exactly (`score`).
        """
        with self._lock:
            self._space()  # unbound: the error that says so
            if not (self.per_arm and self.forgetting == 1.0 and self._arm_inverses.bounded_savings() > _TWO_PASS_MIN):
                ids, mean, bonus, cost_penalty = self.score(x, arms, penalty)
                total = mean + bonus - cost_penalty
            else:
                ids, mean, bonus, cost_penalty, total = self._two_pass(x, arms, penalty)
            chosen = argmax_tiebreak(total, self._rng)
            return Decision(
                arm_id=ids[chosen],
                context=np.array(x, dtype=np.float64),
                scores=top_scores(ids, mean, bonus, cost_penalty, self.record_top, total),
                policy=self.name,
            )

    def _two_pass(
        self, x: np.ndarray, arms: Sequence[str] | None, penalty: Mapping[str, float] | np.ndarray | None
    ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """`score`'s values and totals, exact wherever they can matter to `select` (bounds elsewhere)."""
        view = self._view(arms)
        x_aug = np.concatenate(([1.0], check_context(x, self.context_dim)))
        shared_mean, shared_variance = self._shared_terms(view.features, x_aug)
        inverses = self._arm_inverses
        bounded_variance, bounded_slots = inverses.bounded_variance(x_aug)
        per_arm_mean, per_arm_variance = self._per_arm_terms(view, x_aug, bounded_variance)
        is_bounded = np.zeros(len(self._slot_of), dtype=bool)
        is_bounded[bounded_slots] = True
        candidate_slots = np.arange(len(view.ids)) if view.in_slot_order else view.slots
        # The operations of `score`, element for element: exact entries carry its bits.
        mean = shared_mean + per_arm_mean
        variance = shared_variance + per_arm_variance
        np.maximum(variance, 0.0, out=variance)
        bonus = self.alpha * np.sqrt(variance, out=variance)
        cost_penalty = penalty_vector(penalty, view.ids)

        def refine(positions: np.ndarray) -> np.ndarray:
            exact = inverses.exact_variance(candidate_slots[positions], x_aug)
            if self.shared:
                exact = shared_variance[positions] + exact
            np.maximum(exact, 0.0, out=exact)
            bonus[positions] = self.alpha * np.sqrt(exact, out=exact)
            return mean[positions] + bonus[positions] - cost_penalty[positions]

        upper = mean + bonus - cost_penalty
        total = pruned_totals(upper, np.flatnonzero(is_bounded[candidate_slots]), max(1, self.record_top), refine)
        return view.ids, mean, bonus, cost_penalty, total

    def select_batch(
        self, xs: np.ndarray, arms: Sequence[str] | None = None, penalties: np.ndarray | None = None
    ) -> list[Decision]:
        """Decisions for many contexts at once against the current model (no learning in between)."""
        with self._lock:
            view = self._view(arms)
            ids, features = view.ids, view.features
            matrix = np.asarray(xs, dtype=np.float64)
            if matrix.ndim != 2 or matrix.shape[1] != self.context_dim:
                raise ConfigError(f"xs: got shape {matrix.shape}; expected (n, {self.context_dim})")
            for row in range(matrix.shape[0]):
                check_context(matrix[row], self.context_dim, owner=f"xs[{row}]")
            rows = matrix.shape[0]
            cost_penalty = (
                np.zeros((rows, len(ids))) if penalties is None else np.asarray(penalties, dtype=np.float64)
            )
            if cost_penalty.shape == (len(ids),):
                cost_penalty = np.broadcast_to(cost_penalty, (rows, len(ids)))
            if cost_penalty.shape != (rows, len(ids)):
                raise ConfigError(f"penalties: got shape {cost_penalty.shape}; expected ({rows}, {len(ids)})")
            if not np.isfinite(cost_penalty).all():
                raise ConfigError("penalties: contains NaN or infinity; cost predictions must be finite")
            x_aug = np.hstack([np.ones((rows, 1)), matrix])
            mean = np.zeros((rows, len(ids)))
            variance = np.zeros((rows, len(ids)))
            if self.shared:
                stats = self._shared_stats
                reduced = x_aug @ self._projection.T  # (n, p)
                p, m = reduced.shape[1], ARM_FEATURE_DIM
                mean += (reduced @ stats.weights.reshape(p, m)) @ features.T
                inverse = stats._inverse.reshape(p, m, p, m)
                arm_grams = np.einsum("ni,imjl,nj->nml", reduced, inverse, reduced, optimize=True)
                variance += (
                    np.einsum("km,nml,kl->nk", features, arm_grams, features, optimize=True) * stats._scale
                )
            if self.per_arm:
                count = len(self._slot_of)
                variance += self._arm_inverses.variance_rows(x_aug)[:, view.slots]
                mean += (x_aug @ self._stacked_weights[:count].T)[:, view.slots]
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

    def _arm_vector(self, arm_id: str, owner: str) -> np.ndarray:
        """Features of an arm in the space, or as last seen for an arm removed since."""
        space = self._space()
        if self._features_version != space.version:
            self._remember_space_features(space)
        vector = self._known_features.get(arm_id)
        if vector is None:
            raise ConfigError(
                f"{owner}: unknown {arm_id!r}; it was never in this policy's arm space "
                "(add the arm to the arm space first)"
            )
        return vector

    def update(self, decision: Decision, reward: float) -> None:
        """Learn from the reward of a decision; also for an arm removed since (its state is kept)."""
        value = check_reward(reward)
        with self._lock:
            vector = check_context(decision.context, self.context_dim, owner="decision.context")
            arm_vector = self._arm_vector(decision.arm_id, "decision.arm_id")
            self._learn(vector, decision.arm_id, arm_vector, value)

    def _learn(self, vector: np.ndarray, arm_id: str, arm_vector: np.ndarray, value: float) -> None:
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
            self._sync_slot(slot, stats)

    def warm_start(self, logged: Iterable[tuple[np.ndarray, str, float]]) -> int:
        """Learn from logged (context, arm id, reward) triples, e.g. a previous deployment; returns count.

        Every triple is checked before any is learnt: one bad triple leaves the policy unchanged.
        """
        with self._lock:
            checked = []
            for index, (x, arm_id, reward) in enumerate(logged):
                vector = check_context(x, self.context_dim, owner=f"logged[{index}].x")
                arm_vector = self._arm_vector(arm_id, f"logged[{index}].arm_id")
                try:
                    value = check_reward(reward)
                except ConfigError as error:
                    raise ConfigError(f"logged[{index}].{error}") from None
                checked.append((vector, arm_id, arm_vector, value))
            for vector, arm_id, arm_vector, value in checked:
                self._learn(vector, arm_id, arm_vector, value)
            self.refresh()
        return len(checked)

    def refresh(self) -> None:
        """Replace every incremental inverse by an exact one."""
        with self._lock:
            if self.shared:
                self._shared_stats.refresh()
            for arm_id, stats in self._arm_stats.items():
                stats.refresh()
                self._sync_slot(self._slot_of[arm_id], stats)

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict[str, Any]:
        """Everything learnt, as plain data and numpy arrays (see `store`)."""
        with self._lock:
            self._space()
            if self.per_arm:
                # Blocks in slot order, as a load lays them out: both then continue bit for bit.
                self._arm_inverses.sort_by_slot()
            return {
                "kind": self.name,
                "config": self.config(),
                "context_dim": self.context_dim,
                "arm_feature_names": list(ARM_FEATURE_NAMES),
                "projection": self._projection.copy(),
                "shared": self._shared_stats.state() if self.shared else None,
                "per_arm": {arm_id: stats.state() for arm_id, stats in self._arm_stats.items()},
                "arm_features": {arm_id: vec.copy() for arm_id, vec in self._known_features.items()},
                "rng": self._rng.bit_generator.state,
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> list[str]:
        """Restore learnt state into the bound arm space; returns the arm ids whose state was dropped.

        Per-arm state of arms no longer in the space is kept (an arm may return) but reported.
        A state that does not parse raises `StateError` and leaves this policy unchanged.
        """
        with self._lock:
            self._space()
            try:
                return self._load(state)
            except (KeyError, TypeError, ValueError, AttributeError) as error:
                if isinstance(error, StateError):
                    raise
                raise StateError(
                    f"policy: malformed state ({type(error).__name__}: {error}); "
                    "the file was edited or corrupt"
                ) from None

    def _load(self, state: Mapping[str, Any]) -> list[str]:
        if state.get("kind") != self.name:
            raise StateError(f"policy.kind: state is for {state.get('kind')!r}, this policy is {self.name!r}")
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
        if projection.shape != self._projection.shape or not np.isfinite(projection).all():
            raise StateError("policy.projection: shape differs; shared_context_dim changed since the save")
        saved_config = dict(state.get("config", {}))
        if "ridge" in saved_config and "context_ridge" not in saved_config:
            # Saved before context priors existed: its Gram matrices hold ridge * I, so keep that prior.
            saved_config["context_ridge"] = saved_config["ridge"]
        if "ridge" in saved_config and "arm_ridge" not in saved_config:
            saved_config["arm_ridge"] = saved_config["ridge"]
        fresh = LinUCB(
            **{
                **self.config(),
                **{k: v for k, v in saved_config.items() if k in self.config()},
            }
        )
        fresh.bind(self._space(), self.context_dim)
        fresh._projection = projection
        if self.shared and state.get("shared") is not None:
            fresh._shared_stats.load(state["shared"], "policy.shared")
        for arm_id, arm_state in dict(state.get("per_arm", {})).items():
            slot = fresh._slot(str(arm_id))
            stats = fresh._arm_stats[str(arm_id)]
            stats.load(arm_state, f"policy.per_arm[{arm_id!r}]")
            fresh._sync_slot(slot, stats)
        if fresh.per_arm:
            fresh._arm_inverses.sort_by_slot()  # the layout the saver sorted to (`state_dict`)
        for arm_id, vec in dict(state.get("arm_features", {})).items():
            array = np.asarray(vec, dtype=np.float64)
            if array.shape != (ARM_FEATURE_DIM,) or not np.isfinite(array).all():
                raise StateError(f"policy.arm_features[{arm_id!r}]: expected {ARM_FEATURE_DIM} finite values")
            fresh._known_features[str(arm_id)] = array
        if isinstance(state.get("rng"), Mapping):
            fresh._rng.bit_generator.state = dict(state["rng"])
        # Adopt the restored state only once everything parsed: a bad file changes nothing.
        for key in (
            "alpha",
            "ridge",
            "context_ridge",
            "arm_ridge",
            "forgetting",
            "shared",
            "per_arm",
            "shared_context_dim",
            "refresh_every",
            "seed",
        ):
            setattr(self, key, getattr(fresh, key))
        for key in (
            "_projection",
            "_shared_dim",
            "_shared_stats",
            "_arm_prior",
            "_arm_inverses",
            "_arm_stats",
            "_slot_of",
            "_stacked_weights",
            "_known_features",
            "_rng",
        ):
            setattr(self, key, getattr(fresh, key))
        self._views = {}
        self._features_version = -1  # arms in the space take their current features again
        space_ids = set(self._space().ids)
        return sorted(arm_id for arm_id in self._arm_stats if arm_id not in space_ids)


@dataclass(frozen=True)
class _CandidateView:
    ids: tuple[str, ...]
    features: np.ndarray
    slots: np.ndarray
    in_slot_order: bool
