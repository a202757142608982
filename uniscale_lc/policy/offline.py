"""The reference offline router: per-arm ridge regression of quality on prompt features, full information.

What a user with an eval set could fit without any bandit: for every arm, quality ~ w_a . [1, x] by
closed-form ridge (the intercept unpenalised), the ridge chosen per arm by 3-fold cross-validation over
a small grid, and at test time the arm maximising predicted quality minus the replay's cost penalty
(`costs.cost_penalty` of each arm's mean cost on the fitted part). No online learning: it is the yardstick
the warm-started bandit is compared with (docs/warm_start.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..costs import cost_penalty
from ..errors import ConfigError

__all__ = ["RIDGE_GRID", "OfflineRidgeRouter", "cv_errors", "cv_ridge", "ridge_fit"]

RIDGE_GRID: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)


def _augment(contexts: np.ndarray) -> np.ndarray:
    return np.hstack([np.ones((contexts.shape[0], 1)), contexts])


def ridge_fit(x_aug: np.ndarray, targets: np.ndarray, ridge: float) -> np.ndarray:
    """Weights (d+1, k) minimising |X W - Y|^2 + ridge |W without its intercept row|^2, closed form."""
    penalty = np.full(x_aug.shape[1], float(ridge))
    penalty[0] = 0.0  # the intercept is not shrunk: an arm's mean quality needs no prior toward 0
    gram = x_aug.T @ x_aug + np.diag(penalty)
    return np.linalg.solve(gram, x_aug.T @ targets)


def cv_errors(
    x_aug: np.ndarray, targets: np.ndarray, ridges: Sequence[float], folds: int = 3, seed: int = 0
) -> np.ndarray:
    """Summed held-out squared error of each ridge (rows) for each target column, `folds`-fold (seeded)."""
    fold_of = np.random.default_rng(seed).permutation(x_aug.shape[0]) % folds
    errors = np.zeros((len(ridges), targets.shape[1]))
    for fold in range(folds):
        train, test = fold_of != fold, fold_of == fold
        for index, ridge in enumerate(ridges):
            fitted = ridge_fit(x_aug[train], targets[train], ridge)
            errors[index] += ((x_aug[test] @ fitted - targets[test]) ** 2).sum(axis=0)
    return errors


def cv_ridge(
    contexts: np.ndarray, quality: np.ndarray, ridges: Sequence[float], folds: int = 3, seed: int = 0
) -> tuple[float, np.ndarray]:
    """The ridge of least total cross-validated error over every arm, and that error per ridge.

    quality (n, k) may hold NaN where an arm has no outcome; an arm with fewer than `folds` outcomes is
    left out of the total.
    """
    x_aug = _augment(np.asarray(contexts, dtype=np.float64))
    y = np.asarray(quality, dtype=np.float64)
    available = ~np.isnan(y)
    total = np.zeros(len(ridges))
    if available.all():
        total += cv_errors(x_aug, y, ridges, folds, seed).sum(axis=1)
    else:
        for column in range(y.shape[1]):
            rows = np.flatnonzero(available[:, column])
            if rows.size >= folds:
                total += cv_errors(x_aug[rows], y[rows, column : column + 1], ridges, folds, seed)[:, 0]
    return float(ridges[int(np.argmin(total))]), total


class OfflineRidgeRouter:
    """Fit once on labelled (contexts, every arm's quality and cost); then `select` per prompt, no learning."""

    def __init__(self, ridges: Sequence[float] = RIDGE_GRID, folds: int = 3, seed: int = 0):
        grid = tuple(float(r) for r in ridges)
        if not grid or any(not np.isfinite(r) or r <= 0 for r in grid):
            raise ConfigError(f"OfflineRidgeRouter.ridges: got {ridges!r}; use finite values > 0")
        if not isinstance(folds, int) or folds < 2:
            raise ConfigError(f"OfflineRidgeRouter.folds: got {folds!r}; use an int >= 2")
        self.ridges = grid
        self.folds = folds
        self.seed = seed
        self.arm_ids: tuple[str, ...] = ()
        self.weights = np.zeros((0, 0))
        self.chosen_ridge = np.zeros(0)
        self.mean_cost_usd = np.zeros(0)

    @property
    def fitted(self) -> bool:
        return len(self.arm_ids) > 0

    def fit(
        self,
        contexts: np.ndarray,
        quality: np.ndarray,
        cost_usd: np.ndarray,
        arm_ids: Sequence[str],
    ) -> OfflineRidgeRouter:
        """contexts (n, d); quality and cost_usd (n, k) with NaN where an arm has no outcome."""
        x = np.asarray(contexts, dtype=np.float64)
        y = np.asarray(quality, dtype=np.float64)
        c = np.asarray(cost_usd, dtype=np.float64)
        if x.ndim != 2 or y.shape != (x.shape[0], len(arm_ids)) or c.shape != y.shape:
            raise ConfigError(
                f"OfflineRidgeRouter.fit: shapes contexts {x.shape}, quality {y.shape}, cost {c.shape}; "
                f"expected (n, d), (n, {len(arm_ids)}), (n, {len(arm_ids)})"
            )
        if not np.isfinite(x).all():
            raise ConfigError("OfflineRidgeRouter.fit.contexts: contains NaN or infinity")
        available = ~np.isnan(y)
        if (available.sum(axis=0) < self.folds).any():
            raise ConfigError(
                f"OfflineRidgeRouter.fit: every arm needs >= {self.folds} labelled outcomes for "
                f"{self.folds}-fold cross-validation"
            )
        x_aug = _augment(x)
        weights = np.zeros((x_aug.shape[1], y.shape[1]))
        chosen = np.zeros(y.shape[1])
        # Full coverage (the replay's tables): one design matrix for every arm; otherwise one per arm.
        groups = [np.arange(y.shape[1])] if available.all() else [np.array([k]) for k in range(y.shape[1])]
        for columns in groups:
            rows = np.flatnonzero(available[:, columns].all(axis=1))
            targets = y[np.ix_(rows, columns)]
            errors = self._cv_errors(x_aug[rows], targets)  # (ridges, len(columns))
            best = np.argmin(errors, axis=0)
            for ridge_index in np.unique(best):
                mask = best == ridge_index
                fitted = ridge_fit(x_aug[rows], targets[:, mask], self.ridges[ridge_index])
                weights[:, columns[mask]] = fitted
                chosen[columns[mask]] = self.ridges[ridge_index]
        self.arm_ids = tuple(arm_ids)
        self.weights = weights
        self.chosen_ridge = chosen
        costed = (~np.isnan(c)).sum(axis=0)
        # An arm never costed on the fitted part counts as free (no cost penalty).
        self.mean_cost_usd = np.nansum(c, axis=0) / np.maximum(costed, 1)
        return self

    def _cv_errors(self, x_aug: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return cv_errors(x_aug, targets, self.ridges, self.folds, self.seed)

    def predict(self, contexts: np.ndarray) -> np.ndarray:
        """Predicted quality (n, k) of every arm for each context row."""
        self._check_fitted()
        x = np.atleast_2d(np.asarray(contexts, dtype=np.float64))
        if x.shape[1] + 1 != self.weights.shape[0]:
            raise ConfigError(
                f"OfflineRidgeRouter.predict: contexts have {x.shape[1]} features; fitted on "
                f"{self.weights.shape[0] - 1} (use the same featurizer)"
            )
        return _augment(x) @ self.weights

    def select_batch(self, contexts: np.ndarray, cost_weight: float) -> np.ndarray:
        """Arm column per context: argmax(predicted quality - cost penalty); ties go to the first column."""
        penalty, _ = cost_penalty(self.mean_cost_usd, cost_weight)
        return np.argmax(self.predict(contexts) - penalty[None, :], axis=1)

    def select(self, x: np.ndarray, cost_weight: float) -> str:
        """The arm id for one context."""
        return self.arm_ids[int(self.select_batch(np.asarray(x)[None, :], cost_weight)[0])]

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise ConfigError(
                "OfflineRidgeRouter: not fitted; call fit(contexts, quality, cost_usd, arm_ids)"
            )
