"""`PackedRidgeStats`: a per-arm ridge statistic in compact form, for LinUCB with thousands of arms.

LinUCB holds one statistic per arm; two full float64 d x d matrices each (Gram and inverse) were 68 KB per
arm at d = 64. Two forms here, both stored in the float32 arrays scoring reads (policy/arm_inverses.py):

* fresh (at most `MAX_FRESH_RANK` = 32 observations, no forgetting): A^-1 = diag(1/prior) - V'V with V one
  float32 row per observation (the Sherman-Morrison vectors v = A^-1 x / sqrt(1 + x'A^-1 x)); the rows
  themselves are kept (they are the pending Gram rows anyway), so a refresh recomputes V exactly. V's block
  and the row buffer grow with the observations (capacities 1, 2, 3, 4, 6, ... 32): 0.8 KB per observation
  at d = 64, and scoring reads 260 bytes per observation instead of 8.6 KB.
* dense (afterwards): the exact Gram matrix as its packed upper triangle in float64 (17 KB), and the inverse
  only as the float32 packed scoring form (upper triangle, off-diagonal doubled, 8.6 KB). An update unpacks
  it into a shared float64 scratch, does the downdate in float64 and rounds back to float32 once.

Rounding error stays at float32 level and never outlives `refresh_every` updates: a refresh re-inverts the
exact float64 Gram matrix. Weights and targets stay float64. The forgetting scale is folded into the stored
inverse at each update (no lazy scale), since each update rewrites every entry anyway.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StateError
from .bounds import merge_witness, top_witnesses
from .ridge import _PER_ARM_PENDING_ROWS, SavedStats, _PendingRows, check_inverse, exact_inverse, read_state

if TYPE_CHECKING:
    from .arm_inverses import ArmInverses

__all__ = ["MAX_FRESH_RANK", "PackedLayout", "PackedRidgeStats"]

# The most observations an arm keeps in the fresh form: up to 32 rows of d read less than the packed
# d(d+1)/2 (2,145 at d = 65) and hold less (780 bytes a row with its float64 copy, against 30 KB dense).
MAX_FRESH_RANK = 32
# Fresh rows a release before growing blocks accepts (under `rows`/`low_rank`); more go under `fresh_*`.
_OLD_FRESH_ROWS = 8
_FRESH_KEYS = (("rows", "low_rank"), ("fresh_rows", "fresh_low_rank"))


class PackedLayout:
    """Index arrays of the packed (row-major upper triangle) form of a dim x dim symmetric matrix, and the
    float64 scratch buffers the updates of every statistic of that size share (the owner serialises them)."""

    def __init__(self, dim: int):
        rows, cols = np.triu_indices(dim)
        self.dim = dim
        self.size = int(rows.size)
        self.upper_flat = rows * dim + cols
        self.lower_flat = cols * dim + rows
        self.rows, self.cols = rows, cols
        on_diagonal = rows == cols
        self.diagonal = np.flatnonzero(on_diagonal)
        # x' M x = sum over the upper triangle of m_ij x_i x_j, counting off-diagonal pairs twice.
        self.doubling = np.where(on_diagonal, 1.0, 2.0)
        self.halving = np.where(on_diagonal, 1.0, 0.5)
        self.scratch = np.empty((dim, dim))
        self.packed_scratch = np.empty(self.size)

    def pack(self, matrix: np.ndarray) -> np.ndarray:
        """The upper triangle of a (symmetrised) matrix, float64."""
        return (0.5 * (matrix + matrix.T)).ravel().take(self.upper_flat)

    def unpack(self, packed: np.ndarray, out: np.ndarray | None = None, *, halve: bool = False) -> np.ndarray:
        """The full symmetric float64 matrix of a packed one (`halve`: its off-diagonal entries are doubled)."""
        values = np.multiply(packed, self.halving, out=self.packed_scratch) if halve else packed
        full = np.empty((self.dim, self.dim)) if out is None else out
        flat = full.reshape(-1)
        flat[self.upper_flat] = values
        flat[self.lower_flat] = values
        return full

    def outer(self, x: np.ndarray) -> np.ndarray:
        """x_i x_j over the upper triangle, float32: x' M x = packed_doubled(M) . outer(x)."""
        return (x.take(self.rows) * x.take(self.cols)).astype(np.float32)

    def outer_rows(self, xs: np.ndarray) -> np.ndarray:
        """`outer` for each row of xs, float32."""
        return (xs[:, self.rows] * xs[:, self.cols]).astype(np.float32)


class PackedRidgeStats(_PendingRows):
    """One ridge regression's statistics in compact form; the same interface as `RidgeStats`.

    Created by `ArmInverses.add_arm`, which owns the float32 arrays this statistic's inverse lives in (slot
    `slot`). `inverse` and `gram` return full float64 copies (for tests, persistence and tools; the hot path
    never builds them).
    """

    _scale = 1.0  # the forgetting scale is folded into the stored inverse (see the module docstring)

    def __init__(
        self,
        dim: int,
        ridge: float,
        forgetting: float,
        refresh_every: int,
        prior: np.ndarray,
        *,
        owner: ArmInverses,
        slot: int,
        pending_rows: int = _PER_ARM_PENDING_ROWS,
    ):
        self.dim = dim
        self.prior = np.asarray(prior, dtype=np.float64)
        self.ridge = float(self.prior.min())
        self.forgetting = forgetting
        self.refresh_every = refresh_every
        self._owner = owner
        self._layout: PackedLayout = owner.layout
        self._slot = slot
        # Fresh: every row is kept (the block grows with them); dense: only those awaiting the Gram matrix.
        self._fresh_limit = max(1, min(refresh_every, owner.rank))
        self._dense_pending_rows = max(1, min(refresh_every, pending_rows))
        self._pending_rows = np.zeros((1, dim))
        self._pending = 0
        self._since_refresh = 0
        self.target = np.zeros(dim)
        self.weights = np.zeros(dim)
        self.updates = 0
        self._dense = False  # fresh form until then (module docstring)
        self._packed_gram: np.ndarray | None = None  # dense form only: exact, up to the rows still pending
        # Where the inverse lives in the owner's arrays (set and kept current by the owner).
        self._block_pool: Any = None
        self._block_index = -1
        owner.enter(self, 1)
        if forgetting < 1.0:
            self._make_dense(refresh=False)
            self._packed_inverse[self._layout.diagonal] = 1.0 / self.prior

    # ------------------------------------------------------------------ forms

    @property
    def fresh(self) -> bool:
        """True while the inverse is the prior minus one low-rank row per observation."""
        return not self._dense

    @property
    def _packed_inverse(self) -> np.ndarray:
        return self._owner.dense_pool.blocks[self._block_index]

    @property
    def _low_rank(self) -> np.ndarray:
        return self._block_pool.blocks[self._block_index]

    def _grow(self, rows: int) -> None:
        """A fresh block (and row buffer) for at least `rows` rows, keeping those observed."""
        capacity = self._owner.capacity_for(rows)
        if capacity != self._low_rank.shape[0]:
            self._owner.enter(self, capacity)
        kept = np.zeros((min(capacity, self._fresh_limit), self.dim))
        kept[: self._pending] = self._pending_rows[: self._pending]
        self._pending_rows = kept

    def _make_dense(self, refresh: bool = True) -> None:
        """Leave the fresh form: fold the rows into a packed exact Gram matrix and invert it exactly."""
        self._packed_gram = np.zeros(self._layout.size)
        self._packed_gram[self._layout.diagonal] = self.prior
        self._flush()
        self._pending_rows = np.zeros((self._dense_pending_rows, self.dim))
        self._owner.enter_dense(self)
        self._dense = True
        if refresh:  # an extra exact inversion: the refresh phase stays that of `RidgeStats`
            since_refresh = self._since_refresh
            self.refresh()
            self._since_refresh = since_refresh

    def _discount_gram(self, total: float) -> None:
        assert self._packed_gram is not None
        self._packed_gram *= total
        self._packed_gram[self._layout.diagonal] += (1.0 - total) * self.prior

    def _add_to_gram(self, block: np.ndarray) -> None:
        assert self._packed_gram is not None
        self._packed_gram += block.reshape(-1).take(self._layout.upper_flat)

    # ------------------------------------------------------------------ views

    @property
    def inverse(self) -> np.ndarray:
        """The current inverse Gram matrix, full float64 (a new array; float32-rounded values)."""
        if self.fresh:
            rows = self._low_rank[: self._pending].astype(np.float64)
            inverse = np.diag(1.0 / self.prior) - rows.T @ rows
            return 0.5 * (inverse + inverse.T)
        return self._layout.unpack(self._packed_inverse, halve=True)

    @property
    def gram(self) -> np.ndarray:
        """The exact Gram matrix, full float64 (a new array)."""
        if self.fresh:  # what folding the rows would give, without folding them
            packed = np.zeros(self._layout.size)
            packed[self._layout.diagonal] = self.prior
            rows = self._pending_rows[: self._pending]
            packed += (rows.T @ rows).reshape(-1).take(self._layout.upper_flat)
            return self._layout.unpack(packed)
        self._flush()
        assert self._packed_gram is not None
        return self._layout.unpack(self._packed_gram)

    # ------------------------------------------------------------------ learning

    def add(self, features: np.ndarray, value: float) -> None:
        """Learn one (features, value) pair: a float64 rank-one downdate of the float32 inverse."""
        if self.fresh and self._pending == self._pending_rows.shape[0]:
            if self._pending < self._fresh_limit:
                self._grow(self._pending + 1)
            else:
                self._make_dense()
        self._remember(features, value)
        self.updates += 1
        if self.fresh:
            self._add_fresh(features, value)
        else:
            self._add_dense(features, value)

    def _add_fresh(self, features: np.ndarray, value: float) -> None:
        count = self._pending  # this observation's row is the last pending one
        earlier = self._low_rank[: count - 1]
        projected = features / self.prior - (earlier @ features) @ earlier
        denominator = 1.0 + float(features @ projected)
        if not math.isfinite(denominator) or denominator <= 0.0 or self._since_refresh >= self.refresh_every:
            self.refresh()
            return
        self._low_rank[count - 1] = projected / math.sqrt(denominator)
        extras = self._block_pool.extras
        if extras:  # C = V'V grew by the stored row's outer product: the score bounds follow
            merge_witness(extras["witnesses"][self._block_index], self._low_rank[count - 1].astype(np.float64))
            extras["witness_updates"][self._block_index] += 1
        self._learn_weights(features, value, projected, denominator)

    def _add_dense(self, features: np.ndarray, value: float) -> None:
        gamma = self.forgetting
        layout = self._layout
        stored = self._packed_inverse
        full = layout.unpack(stored, layout.scratch, halve=True)
        projected = full @ features
        if gamma < 1.0:
            projected /= gamma  # the stored inverse before this update's forgetting: (gamma A)^-1 = A^-1 / gamma
        denominator = 1.0 + float(features @ projected)
        if not math.isfinite(denominator) or denominator <= 0.0 or self._since_refresh >= self.refresh_every:
            self.refresh()
            return
        # New inverse = old / gamma - v v' (v = u / sqrt(den)), computed as (old - gamma v v') / gamma in
        # float64 and rounded to float32 once; packed and doubled like the stored form.
        shared = projected / math.sqrt(denominator)
        # v_i v_j over the upper triangle only: the products of the full outer product, half the work.
        downdate = np.multiply(shared.take(layout.rows), shared.take(layout.cols), out=layout.packed_scratch)
        downdate *= layout.doubling if gamma == 1.0 else layout.doubling * gamma
        if gamma == 1.0:  # the float64 difference, rounded into the float32 row in place
            np.subtract(stored, downdate, out=stored, casting="same_kind")
        else:
            np.subtract(stored, downdate, out=downdate)
            downdate /= gamma
            stored[:] = downdate
        if gamma == 1.0:  # C = D^-1 - S grew by v v': the score bounds follow (policy/bounds.py)
            extras = self._owner.dense_pool.extras
            merge_witness(extras["witnesses"][self._block_index], shared)
            extras["witness_updates"][self._block_index] += 1
        self._learn_weights(features, value, projected, denominator)

    def refresh(self) -> None:
        """Exact inverse of the exact Gram matrix, stored rounded to float32; the weights come from float64.

        Fresh form: V = L^-1 X diag(1/prior) with L L' = I + X diag(1/prior) X' (Woodbury), from the rows.
        Dense form: Cholesky of the Gram matrix, or an eigendecomposition floored at `ridge`.
        """
        self._since_refresh = 0
        if self.fresh:
            rows = self._pending_rows[: self._pending]
            scaled = rows / self.prior
            try:
                factor = np.linalg.cholesky(np.eye(rows.shape[0]) + scaled @ rows.T)
                low_rank = np.linalg.solve(factor, scaled)
            except np.linalg.LinAlgError:
                low_rank = np.full_like(scaled, np.nan)
            if np.isfinite(low_rank).all():
                block = self._low_rank
                block[: rows.shape[0]] = low_rank
                block[rows.shape[0] :] = 0.0
                self._reset_fresh_witnesses()
                self.weights = self.target / self.prior - (low_rank @ self.target) @ low_rank
                return
            self._make_dense(refresh=False)  # rounding defeated the small system: the dense form copes
        self._flush()
        assert self._packed_gram is not None
        inverse = exact_inverse(self._layout.unpack(self._packed_gram), self.ridge)
        self.weights = inverse @ self.target
        self._store_inverse(inverse)

    def _reset_fresh_witnesses(self) -> None:
        """Score bounds of the stored rows V: the top right singular directions, W = Q'V with Q V V''s top
        eigenvectors (W'W = V'QQ'V <= V'V whatever Q's accuracy, Q orthonormal)."""
        extras = self._block_pool.extras
        if not extras:
            return
        rows = self._low_rank[: self._pending].astype(np.float64)
        witnesses = extras["witnesses"][self._block_index]
        witnesses[:] = 0.0
        rank = witnesses.shape[0]
        if rows.shape[0] <= rank:
            witnesses[: rows.shape[0]] = rows
        else:
            _, vectors = np.linalg.eigh(rows @ rows.T)
            witnesses[:] = vectors[:, ::-1][:, :rank].T @ rows
        extras["witness_updates"][self._block_index] = 0

    def _store_inverse(self, inverse: np.ndarray) -> None:
        layout = self._layout
        np.multiply(inverse.reshape(-1).take(layout.upper_flat), layout.doubling, out=layout.packed_scratch)
        stored = self._packed_inverse
        stored[:] = layout.packed_scratch
        if self.forgetting == 1.0:  # score bounds from what is stored (policy/bounds.py): one eigh, d = 65
            complement = np.diag(1.0 / self.prior) - layout.unpack(stored.astype(np.float64), halve=True)
            extras = self._owner.dense_pool.extras
            extras["witnesses"][self._block_index] = top_witnesses(complement)
            extras["witness_updates"][self._block_index] = 0

    # ------------------------------------------------------------------ persistence

    def state(self) -> dict[str, Any]:
        # Full matrices, as `RidgeStats` writes them, so files stay readable by either form (and by versions
        # before it). The float32 values are exact in float64 and pack back to the same bits; a fresh arm
        # also saves its rows and low-rank vectors. A round trip continues bit for bit.
        state = SavedStats(
            self.gram, self.inverse, 1.0, self.target.copy(), self.weights.copy(), self.updates, self._since_refresh
        ).to_state()
        if self.fresh:
            # Releases before blocks grew past 8 rows refuse more under these keys: they get others, which
            # such a release ignores (it loads that arm dense from the full matrices).
            rows_key, low_rank_key = _FRESH_KEYS[self._pending > _OLD_FRESH_ROWS]
            state[rows_key] = self._pending_rows[: self._pending].copy()
            state[low_rank_key] = self._low_rank[: self._pending].astype(np.float64)
        return state

    def load(self, state: Mapping[str, Any], owner: str) -> None:
        """Load a `RidgeStats` or `PackedRidgeStats` state; an exact float64 inverse is rounded to float32.

        Call on a statistic just created for it (a fresh one): a dense state turns it dense.
        """
        loaded = read_state(state, self.dim, owner)
        inverse = loaded.inverse * loaded.scale
        floor = self.ridge * self.forgetting**self.refresh_every
        # float32 storage: the check allows float32 rounding (symmetric, positive definite up to it).
        tolerance = self.dim * 2.0**-20
        check_inverse(inverse, floor, owner, tolerance=tolerance, gram=loaded.gram)
        fresh = self._fresh_rows(state, loaded.gram, loaded.updates, owner) if self.fresh else None
        if fresh is not None:
            rows, low_rank = fresh
            rebuilt = np.diag(1.0 / self.prior) - low_rank.T @ low_rank
            if not np.allclose(rebuilt, inverse, rtol=0.0, atol=tolerance / floor):
                fresh = None  # vectors that contradict the checked inverse: load it dense instead
        if fresh is not None:
            count = rows.shape[0]
            self._pending = 0
            self._grow(count)
            self._pending_rows[:count] = rows
            self._pending = count
            self._low_rank[:count] = low_rank
            self._low_rank[count:] = 0.0
            self._reset_fresh_witnesses()
        else:
            if self.fresh:
                self._pending = 0
                self._make_dense(refresh=False)
            self._packed_gram = self._layout.pack(loaded.gram)
            self._store_inverse(0.5 * (inverse + inverse.T))
            self._pending = 0
        self.target = loaded.target
        self._since_refresh = min(loaded.since_refresh, self.refresh_every - 1)
        self.weights = loaded.weights if loaded.weights is not None else inverse @ self.target
        self.updates = loaded.updates

    def _fresh_rows(
        self, state: Mapping[str, Any], saved_gram: np.ndarray, updates: int, owner: str
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The saved rows and low-rank vectors of a fresh-form state, checked; None for a dense state."""
        keys = next((keys for keys in _FRESH_KEYS if keys[0] in state and keys[1] in state), None)
        if keys is None:
            return None
        try:
            rows = np.array(state[keys[0]], dtype=np.float64)
            low_rank = np.array(state[keys[1]], dtype=np.float64)
        except (TypeError, ValueError):
            raise StateError(f"{owner}.{keys[0]}/{keys[1]}: not numeric arrays; the state file is corrupt") from None
        capacity = self._fresh_limit
        if (
            rows.ndim != 2
            or rows.shape != low_rank.shape
            or rows.shape[1] != self.dim
            or rows.shape[0] > min(capacity, updates)
            or not (np.isfinite(rows).all() and np.isfinite(low_rank).all())
        ):
            raise StateError(
                f"{owner}.{keys[0]}/{keys[1]}: shapes {rows.shape}, {low_rank.shape} or values do not fit a fresh "
                f"statistic of dim {self.dim} with {updates} updates; the state file is corrupt"
            )
        # The saved Gram matrix and inverse are authoritative (and checked): rows learnt under another prior
        # (a file from before context priors) or that contradict them are not used, the state loads dense.
        gram = np.diag(self.prior) + rows.T @ rows
        if not np.allclose(saved_gram, gram, rtol=1e-9, atol=1e-12 * float(np.abs(gram).max())):
            return None
        return rows, low_rank.astype(np.float32).astype(np.float64)
