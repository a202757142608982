"""`ArmInverses`: every arm's inverse Gram matrix in the float32 forms scoring reads, one slot per arm.

A decision reads every candidate's inverse once, so that read bounds its time at 1,000 arms. Arms in the
fresh form (policy/packed.py) are scored as x' diag(1/prior) x - |V x|^2 from a (rank x d) float32 block;
dense arms as one matrix-vector product over their packed float32 rows (upper triangle, off-diagonal
doubled: x' A^-1 x = row . outer(x)). Arrays grow by doubling (amortised O(1) per arm); statistics index
them by slot on every use, so growth never leaves a stale view.
"""

from __future__ import annotations

import numpy as np

from .packed import PackedLayout, PackedRidgeStats
from .ridge import _PER_ARM_PENDING_ROWS

__all__ = ["ArmInverses"]


class ArmInverses:
    """The scoring arrays of all per-arm inverses, and the statistics living in them (one owner's lock)."""

    def __init__(self, dim: int, prior: np.ndarray, rank: int = _PER_ARM_PENDING_ROWS):
        self.layout = PackedLayout(dim)
        self.prior = np.asarray(prior, dtype=np.float64)
        self.rank = rank
        self.arms = 0
        self.fresh = 0  # arms in the fresh (low-rank) form
        self.low_rank = np.zeros((8, rank, dim), dtype=np.float32)
        self.dense = np.zeros((8, self.layout.size), dtype=np.float32)
        self.dense_slots = np.zeros(8, dtype=np.intp)  # the arm slot of each dense row
        self.dense_count = 0

    def add_arm(self, ridge: float, forgetting: float, refresh_every: int) -> PackedRidgeStats:
        """A new arm's statistic in the next slot (fresh without forgetting, else dense)."""
        slot = self.arms
        if slot == self.low_rank.shape[0]:
            self.low_rank = np.concatenate([self.low_rank, np.zeros_like(self.low_rank)])
        self.arms += 1
        self.fresh += 1
        return PackedRidgeStats(
            self.layout.dim, ridge, forgetting, refresh_every, self.prior, owner=self, slot=slot
        )

    def allocate_dense(self, slot: int) -> int:
        """A zeroed dense row for the arm in `slot`, which leaves the fresh form; returns the row index."""
        index = self.dense_count
        if index == self.dense.shape[0]:
            self.dense = np.concatenate([self.dense, np.zeros_like(self.dense)])
            self.dense_slots = np.concatenate([self.dense_slots, np.zeros_like(self.dense_slots)])
        self.dense[index] = 0.0
        self.dense_slots[index] = slot
        self.dense_count += 1
        self.low_rank[slot] = 0.0  # its low-rank term no longer applies
        self.fresh -= 1
        return index

    def variance(self, x: np.ndarray) -> np.ndarray:
        """x' A_a^-1 x for every arm, in slot order (float32 precision)."""
        count = self.arms
        variance = np.full(count, float(x @ (x / self.prior)))
        if self.fresh:
            projected = (self.low_rank[:count].reshape(count * self.rank, -1) @ x.astype(np.float32)).reshape(
                count, self.rank
            )
            variance -= np.einsum("kr,kr->k", projected, projected)
        if self.dense_count:
            dense = self.dense_count
            variance[self.dense_slots[:dense]] = self.dense[:dense] @ self.layout.outer(x)
        return variance

    def variance_rows(self, xs: np.ndarray) -> np.ndarray:
        """`variance` for each row of xs: shape (rows, arms)."""
        count = self.arms
        base = np.einsum("nd,nd->n", xs / self.prior, xs)
        variance = np.repeat(base[:, None], count, axis=1)
        if self.fresh:
            flat = self.low_rank[:count].reshape(count * self.rank, -1)
            projected = (xs.astype(np.float32) @ flat.T).reshape(xs.shape[0], count, self.rank)
            variance -= np.einsum("nkr,nkr->nk", projected, projected)
        if self.dense_count:
            dense = self.dense_count
            variance[:, self.dense_slots[:dense]] = self.layout.outer_rows(xs) @ self.dense[:dense].T
        return variance
