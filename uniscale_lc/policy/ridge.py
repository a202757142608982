"""`RidgeStats`: one ridge regression's sufficient statistics with an incrementally maintained inverse.

The numerics LinUCB (policy/linucb.py) is built on: Sherman-Morrison rank-one updates (symmetric by
construction), an exact Gram matrix assembled lazily from buffered rows and re-inverted every
`refresh_every` updates (Cholesky, or an eigendecomposition floored at `ridge`), a diagonal prior, and
forgetting. Loaded state is validated (`read_state`, `check_inverse`) before use.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import StateError

__all__ = ["MAX_RIDGE", "MIN_RIDGE", "RidgeStats", "SavedStats", "check_inverse", "exact_inverse", "read_state"]

# The numerics carry ridges in this range: 1/ridge (the starting inverse) stays finite and far from overflow
# after updates, and ridge itself stays far above the subnormals (1e-320 made the inverse inf).
MIN_RIDGE = 1e-8
MAX_RIDGE = 1e8

# Relative room above 1/ridge an exact inverse may keep (float64 rounding of a well-conditioned inverse).
_BOUND_SLACK = 1e-9
# Multiple of eps * trace(Gram) / ridge^2 that `check_inverse` allows for an inversion's rounding: the first-
# order bound with a margin (excesses sampled at d = 64 with the earlier Cholesky-only inverse reach 1/80 of it).
_GRAM_ROUNDING = 8.0
# Pending rows folded into the exact Gram matrix at a time: bounds memory per statistic.
_FLUSH_ROWS = 64
# Pending rows of a per-arm statistic: few, since thousands of arms each hold their own.
_PER_ARM_PENDING_ROWS = 8


class _PendingRows:
    """What both forms of a statistic share: the target and the feature rows awaiting the exact Gram."""

    forgetting: float
    target: np.ndarray
    _pending_rows: np.ndarray
    _pending: int
    _since_refresh: int
    weights: np.ndarray

    def _discount_gram(self, total: float) -> None:
        """Gram <- total Gram + (1 - total) diag(prior): `count` updates' forgetting at once."""
        raise NotImplementedError

    def _add_to_gram(self, block: np.ndarray) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        """Fold the pending rows (with their forgetting weights) into the exact Gram matrix."""
        count = self._pending
        if count == 0:
            return
        gamma = self.forgetting
        rows = self._pending_rows[:count]
        if gamma < 1.0:
            self._discount_gram(gamma**count)
            weighted = rows * (gamma ** np.arange(count - 1, -1, -1, dtype=np.float64))[:, None]
        else:
            weighted = rows
        self._add_to_gram(weighted.T @ rows)
        self._pending = 0

    def _learn_weights(self, features: np.ndarray, value: float, projected: np.ndarray, denominator: float) -> None:
        # theta' = theta + u (r - phi.theta) / den: the closed form of A'^-1 b', with or without forgetting.
        self.weights = self.weights + projected * ((value - float(features @ self.weights)) / denominator)

    def _remember(self, features: np.ndarray, value: float) -> None:
        """Discount the target, add this pair to it, and buffer the row for the exact Gram matrix."""
        if self.forgetting < 1.0:
            self.target *= self.forgetting
        if self._pending == self._pending_rows.shape[0]:
            self._flush()
        self._pending_rows[self._pending] = features
        self._pending += 1
        self._since_refresh += 1
        self.target += value * features


class RidgeStats(_PendingRows):
    """Sufficient statistics of one ridge regression with an incrementally maintained inverse.

    Hot-path costs per update: two D x D in-place passes (the rank-one downdate) and O(D) for the
    weights, using preallocated buffers (allocating a D x D temporary costs more than the maths).
    The exact Gram matrix is assembled lazily from buffered feature rows, folded in blocks of at most
    `_FLUSH_ROWS` rows (so memory stays O(D^2) whatever `refresh_every` is), and inverted exactly
    every `refresh_every` updates.
    """

    def __init__(
        self,
        dim: int,
        ridge: float,
        forgetting: float,
        refresh_every: int,
        prior: np.ndarray | None = None,
        *,
        pending_rows: int = _FLUSH_ROWS,
        scratch: np.ndarray | None = None,
    ):
        self.dim = dim
        # The prior precision per coordinate (a diagonal ridge); `ridge` is its smallest entry.
        self.prior = np.full(dim, float(ridge)) if prior is None else np.asarray(prior, dtype=np.float64)
        self.ridge = float(self.prior.min())
        self.forgetting = forgetting
        self.refresh_every = refresh_every
        self._gram = np.diag(self.prior)  # exact, up to the rows still pending
        # Per-arm statistics keep few pending rows (memory per arm); the one shared statistic keeps more.
        self._pending_rows = np.zeros((max(1, min(refresh_every, pending_rows)), dim))
        self._pending = 0
        self._since_refresh = 0
        self._inverse = np.diag(1.0 / self.prior)  # true inverse = _inverse * _scale
        self._scale = 1.0
        self.target = np.zeros(dim)
        self.weights = np.zeros(dim)
        self.updates = 0
        # D x D scratch for the rank-one downdate; an owner that serialises updates (LinUCB's lock) passes
        # one buffer for all its statistics of that size, so it is not held once per arm.
        self._buffer = np.empty((dim, dim)) if scratch is None else scratch

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
        if self.forgetting < 1.0:
            self._scale /= self.forgetting
        self._remember(features, value)
        projected = (self._inverse @ features) * self._scale
        denominator = 1.0 + float(features @ projected)
        self.updates += 1
        if (
            not math.isfinite(denominator)
            or denominator <= 0.0
            or self._since_refresh >= self.refresh_every
            or self._scale > 1e6
        ):
            self.refresh()
            return
        # Rank-one downdate with v v^T (v = u / sqrt(den)): symmetric to the last bit by construction.
        shared = projected / math.sqrt(denominator * self._scale)
        # The outer product by BLAS (a k = 1 product: each entry one rounded multiply, as np.multiply gives,
        # in two thirds of the time at D = 160).
        np.dot(shared[:, None], shared[None, :], out=self._buffer)
        self._inverse -= self._buffer
        self._learn_weights(features, value, projected, denominator)

    def _discount_gram(self, total: float) -> None:
        self._gram *= total
        self._gram[np.diag_indices(self.dim)] += (1.0 - total) * self.prior

    def _add_to_gram(self, block: np.ndarray) -> None:
        self._gram += block

    def refresh(self) -> None:
        """Exact inverse of the accumulated Gram matrix (Cholesky), symmetrised.

        The Gram matrix is at least `diag(prior) >= ridge * I` in exact arithmetic; when rounding makes it
        fail the Cholesky test (features of 1e6 against a ridge of 1e-6), the inverse comes from its
        eigendecomposition with eigenvalues raised to `ridge`, so it is always finite and positive.
        """
        self._flush()
        self._gram = 0.5 * (self._gram + self._gram.T)
        self._inverse = exact_inverse(self._gram, self.ridge)
        self._scale = 1.0
        self._since_refresh = 0
        self.weights = self._inverse @ self.target

    def state(self) -> dict[str, Any]:
        # The inverse is saved unscaled with its pending forgetting scale (true inverse =
        # inverse * inverse_scale), and with the refresh phase, so a loaded policy continues bit for bit.
        return SavedStats(
            self.gram.copy(), self._inverse.copy(), self._scale, self.target.copy(), self.weights.copy(),
            self.updates, self._since_refresh,
        ).to_state()

    def load(self, state: Mapping[str, Any], owner: str) -> None:
        loaded = read_state(state, self.dim, owner)
        # Between refreshes the incremental inverse leaves out the (1 - gamma) prior terms, so under forgetting
        # its Gram matrix can fall to gamma^refresh_every x the prior (module docstring).
        floor = self.ridge * self.forgetting**self.refresh_every
        check_inverse(loaded.inverse * loaded.scale, floor, owner, gram=loaded.gram)
        self._gram, self._inverse, self.target = loaded.gram, loaded.inverse, loaded.target
        self._scale = loaded.scale
        self._pending = 0
        self._since_refresh = min(loaded.since_refresh, self.refresh_every - 1)
        # Saved weights make a save/load round trip continue bit for bit; recomputing would differ
        # from the incrementally updated weights in the last digits.
        self.weights = loaded.weights if loaded.weights is not None else self.inverse @ self.target
        self.updates = loaded.updates


def exact_inverse(gram: np.ndarray, ridge: float) -> np.ndarray:
    """The symmetrised inverse of a symmetric Gram matrix by Cholesky, or, when rounding defeats Cholesky or
    lifts the result above 1/ridge, by its eigendecomposition with eigenvalues raised to `ridge` (finite,
    positive and at most 1/ridge either way, as the prior bounds the exact inverse).

    Entries that dwarf the prior (features of 1e6 against a prior of 10: Gram entries of 1e13, rounded at
    1e-3) leave the directions no observation covered up to 1e-4 above 1/ridge after a Cholesky inverse,
    and a saved state must pass `check_inverse` on reload.
    """
    dim = gram.shape[0]
    eye = np.eye(dim)
    try:
        factor = np.linalg.cholesky(gram)
        lower_inverse = np.linalg.solve(factor, eye)
        inverse = lower_inverse.T @ lower_inverse
        # inverse <= I / ridge up to float64 rounding; one more small Cholesky tells (no eigendecomposition).
        np.linalg.cholesky(((1.0 + _BOUND_SLACK) / ridge) * eye - inverse)
    except np.linalg.LinAlgError:
        eigenvalues, vectors = np.linalg.eigh(gram)
        inverse = (vectors / np.maximum(eigenvalues, ridge)) @ vectors.T
    return 0.5 * (inverse + inverse.T)


@dataclass(frozen=True)
class SavedStats:
    """One statistic as saved: full matrices, whichever form holds it, so either form reads the file."""

    gram: np.ndarray
    inverse: np.ndarray  # unscaled: the true inverse is inverse * scale
    scale: float
    target: np.ndarray
    weights: np.ndarray | None  # None in files written before weights were saved
    updates: int
    since_refresh: int

    def to_state(self) -> dict[str, Any]:
        return {
            "gram": self.gram,
            "inverse": self.inverse,
            "inverse_scale": self.scale,
            "target": self.target,
            "weights": self.weights,
            "updates": self.updates,
            "since_refresh": self.since_refresh,
        }


def read_state(state: Mapping[str, Any], dim: int, owner: str) -> SavedStats:
    """Parse a saved statistic (the full-matrix format both `RidgeStats` and `PackedRidgeStats` write)."""
    arrays = {}
    for key in ("gram", "inverse", "target", "weights"):
        if key == "weights" and key not in state:
            continue  # written before weights were saved: recomputed by the caller
        try:
            array = np.array(state[key], dtype=np.float64)
        except KeyError:
            raise StateError(f"{owner}.{key}: missing; the state file was edited or corrupt") from None
        except (TypeError, ValueError):
            raise StateError(f"{owner}.{key}: not a numeric array; the state file is corrupt") from None
        expected = (dim,) if key in ("target", "weights") else (dim, dim)
        if array.shape != expected or not np.isfinite(array).all():
            raise StateError(f"{owner}.{key}: shape {array.shape} or non-finite values; expected {expected}")
        arrays[key] = array
    try:
        updates = int(state.get("updates", 0))
        since_refresh = int(state.get("since_refresh", 0))
        scale = float(state.get("inverse_scale", 1.0))
    except (TypeError, ValueError):
        raise StateError(f"{owner}: updates, since_refresh or inverse_scale is not a number") from None
    if not (math.isfinite(scale) and 1.0 <= scale <= 1e6) or updates < 0 or since_refresh < 0:
        raise StateError(f"{owner}: inverse_scale, updates or since_refresh out of range; the file is corrupt")
    return SavedStats(
        arrays["gram"], arrays["inverse"], scale, arrays["target"], arrays.get("weights"), updates, since_refresh
    )


def check_inverse(
    inverse: np.ndarray, ridge: float, owner: str, tolerance: float = 1e-9, gram: np.ndarray | None = None
) -> None:
    """Refuse a loaded inverse Gram matrix no learning could produce: it must be symmetric, positive
    definite and at most 1/ridge (the prior bounds it), else every request's bonus would be NaN or inf.

    `tolerance` is relative to its largest entry: float64 rounding by default, more for float32 storage.
    With the saved `gram`, the rounding a float64 inversion of it can cause is allowed too (files written
    before `exact_inverse` floored its result hold it): first order eps * trace(gram) / ridge^2, at most
    1/ridge itself, so an edited inverse of twice the bound is refused whatever the Gram matrix says.
    """
    bound = 1.0 / ridge
    scale = max(bound, float(np.abs(inverse).max(initial=0.0)))
    tolerance = tolerance * scale
    if gram is not None:
        trace = float(np.abs(np.diagonal(gram)).sum())
        tolerance += min(bound, _GRAM_ROUNDING * float(np.finfo(np.float64).eps) * trace * bound * bound)
    problem = None
    if float(np.abs(inverse - inverse.T).max(initial=0.0)) > tolerance:
        problem = "is not symmetric"
    else:
        eye = np.eye(inverse.shape[0])
        try:
            np.linalg.cholesky(inverse + tolerance * eye)
        except np.linalg.LinAlgError:
            problem = "is not positive definite"
        else:
            try:  # inverse <= I / ridge, with room for rounding
                np.linalg.cholesky((bound * (1.0 + 1e-6)) * eye - inverse + tolerance * eye)
            except np.linalg.LinAlgError:
                problem = f"exceeds 1/ridge = {bound:g}"
    if problem is not None:
        raise StateError(
            f"{owner}.inverse {problem}; the state file was edited or corrupt. Restore a backup, or delete "
            "the file to start learning afresh"
        )
