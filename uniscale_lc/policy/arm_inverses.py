"""`ArmInverses`: every arm's inverse Gram matrix in the float32 forms scoring reads, grouped by form.

A decision reads every candidate's inverse once, so the bytes read bound its time at 1,000 arms. An arm in
the fresh form (policy/packed.py) with n observations is scored as x' diag(1/prior) x - |V x|^2 from an
(n x d) float32 block; blocks sit in pools of capacity 1, 2, 3, 4, 6, ... `rank` rows, an arm moving to
the next pool when it fills its block, so a pass reads at most 1.5x the rows observed (10 observations at
d = 65: 12 rows, 3.1 KB, against 8.6 KB for a dense arm). Dense arms are scored by one matrix-vector product over
their packed float32 rows (upper triangle, off-diagonal doubled: x' A^-1 x = row . outer(x)). Arrays grow by
doubling and shrink when a quarter full (amortised O(1) per arm, no dead capacity once arms move on);
statistics index them on every use, so a move never leaves a stale view.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .bounds import WITNESS_RANK, margin_coefficient
from .packed import MAX_FRESH_RANK, PackedLayout, PackedRidgeStats

__all__ = ["ArmInverses"]


_CAPACITIES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)


class _Pool:
    """Blocks of one shape, one per member statistic, in member order; removal moves the last one in.

    `extras` are further per-member arrays (name -> (shape, dtype)) that move with the blocks: the dense
    pool's score bounds (`witnesses`, `witness_updates`).
    """

    def __init__(self, shape: tuple[int, ...], extras: dict[str, tuple[tuple[int, ...], Any]] | None = None):
        self.blocks = np.zeros((8, *shape), dtype=np.float32)
        self.ones = np.ones(shape[0], dtype=np.float32)
        self.slots = np.zeros(8, dtype=np.intp)  # the arm slot of each block
        self.extras = {name: np.zeros((8, *shape), dtype=dtype) for name, (shape, dtype) in (extras or {}).items()}
        self.members: list[PackedRidgeStats] = []

    @property
    def count(self) -> int:
        return len(self.members)

    def _arrays(self) -> list[np.ndarray]:
        return [self.blocks, self.slots, *self.extras.values()]

    def add(self, stats: PackedRidgeStats, slot: int) -> int:
        """A zeroed block for `stats`; returns its index."""
        index = self.count
        if index == self.blocks.shape[0]:
            self._resize(2 * index)
        self.blocks[index] = 0.0
        for extra in self.extras.values():
            extra[index] = 0
        self.slots[index] = slot
        self.members.append(stats)
        return index

    def remove(self, index: int) -> None:
        """Drop the block at `index`; the last member moves into it and learns its new index."""
        last = self.count - 1
        if index != last:
            for array in self._arrays():
                array[index] = array[last]
            moved = self.members[last]
            self.members[index] = moved
            moved._block_index = index
        self.members.pop()
        capacity = self.blocks.shape[0]
        if capacity > 8 and self.count <= capacity // 4:
            self._resize(capacity // 2)

    def _resize(self, capacity: int) -> None:
        count = self.count
        resized = []
        for array in self._arrays():
            grown = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
            grown[:count] = array[:count]
            resized.append(grown)
        self.blocks, self.slots = resized[0], resized[1]
        self.extras = dict(zip(self.extras, resized[2:], strict=True))

    def reorder(self, order: np.ndarray) -> None:
        """Lay the first members out in `order` (a permutation of their indices)."""
        count = order.size
        for array in self._arrays():
            array[:count] = array[order]
        self.members = [self.members[index] for index in order]
        for index, member in enumerate(self.members):
            member._block_index = index


class ArmInverses:
    """The scoring arrays of all per-arm inverses, and the statistics living in them (one owner's lock)."""

    def __init__(self, dim: int, prior: np.ndarray, rank: int = MAX_FRESH_RANK):
        self.layout = PackedLayout(dim)
        self.prior = np.asarray(prior, dtype=np.float64)
        self.rank = rank  # the most observations an arm keeps in the fresh form
        self.arms = 0
        self.by_slot: list[PackedRidgeStats] = []  # every arm's statistic, by slot
        # Block capacities grow by about 1.5x (1, 2, 3, 4, 6, 8, 12, 16, 24, 32): a pass reads at most 1.5x the
        # rows observed, and a mixed arm space scores at most ten small fresh passes.
        capacities = [capacity for capacity in _CAPACITIES if capacity < rank] + [rank]
        # Arms with more rows than witnesses also keep score bounds (policy/bounds.py): witness rows, and the
        # downdates since they were last computed exactly (their rounding widens the margin).
        bounds = {"witnesses": ((WITNESS_RANK, dim), np.float32), "witness_updates": ((), np.int64)}
        self.pools = {
            capacity: _Pool((capacity, dim), bounds if capacity > WITNESS_RANK else None) for capacity in capacities
        }
        self.dense_pool = _Pool((self.layout.size,), bounds)

    @property
    def fresh(self) -> int:
        """How many arms are in the fresh (low-rank) form."""
        return sum(pool.count for pool in self.pools.values())

    @property
    def dense_count(self) -> int:
        return self.dense_pool.count

    def add_arm(self, ridge: float, forgetting: float, refresh_every: int) -> PackedRidgeStats:
        """A new arm's statistic in the next slot (fresh without forgetting, else dense)."""
        slot = self.arms
        self.arms += 1
        stats = PackedRidgeStats(self.layout.dim, ridge, forgetting, refresh_every, self.prior, owner=self, slot=slot)
        self.by_slot.append(stats)
        return stats

    def capacity_for(self, rows: int) -> int:
        """The smallest fresh block that holds `rows` rows (at most `rank`)."""
        return next(capacity for capacity in self.pools if capacity >= rows)

    def enter(self, stats: PackedRidgeStats, capacity: int) -> None:
        """Give `stats` a fresh block of `capacity` rows, keeping the rows of the block it leaves."""
        pool = self.pools[capacity]
        old_pool, old_index = stats._block_pool, stats._block_index
        index = pool.add(stats, stats._slot)
        if old_pool is not None:
            kept = min(old_pool.blocks.shape[1], capacity)
            pool.blocks[index, :kept] = old_pool.blocks[old_index, :kept]
            if pool.extras and old_pool.extras:
                for name, extra in pool.extras.items():
                    extra[index] = old_pool.extras[name][old_index]
            elif pool.extras:  # at most WITNESS_RANK rows so far: they are exact witnesses (V'V = C)
                pool.extras["witnesses"][index, :kept] = old_pool.blocks[old_index, :kept]
            old_pool.remove(old_index)
        stats._block_pool, stats._block_index = pool, index

    def enter_dense(self, stats: PackedRidgeStats) -> None:
        """Move `stats` out of the fresh form into a zeroed dense row."""
        if stats._block_pool is not None:
            stats._block_pool.remove(stats._block_index)
        stats._block_pool = None
        stats._block_index = self.dense_pool.add(stats, stats._slot)

    def sort_by_slot(self) -> None:
        """Order every pool's blocks by arm slot, a layout that depends on nothing but the learnt state.

        A row's BLAS rounding depends on its place in a short pass and the places on the order arms moved
        in; LinUCB sorts when it saves and when it loads, so a saved policy and its loaded copy score and
        continue bit for bit. One copy of each pool (8.6 MB at 1,000 dense arms, d = 64) per save.
        """
        for pool in (*self.pools.values(), self.dense_pool):
            count = pool.count
            order = np.argsort(pool.slots[:count], kind="stable")
            if count < 2 or bool(np.all(order == np.arange(count))):
                continue
            pool.reorder(order)

    def variance(self, x: np.ndarray, by_row: bool = False) -> np.ndarray:
        """x' A_a^-1 x for every arm, in slot order (float32 precision); `by_row`: dense arms' values as
        `dense_variance` gives them (what a two-pass select compares with), else by one BLAS pass."""
        variance = self._fresh_variance(x, by_row=by_row)
        dense = self.dense_pool
        if dense.count:
            outer = self.layout.outer(x)
            rows = self.dense_variance(outer) if by_row else dense.blocks[: dense.count] @ outer
            variance[dense.slots[: dense.count]] = rows
        return variance

    def bounded_variance(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`variance(x, by_row=True)` with upper bounds in place of the values of arms that keep bounds
        (policy/bounds.py); also those arms' slots."""
        variance = self._fresh_variance(x, bounded=True)
        scale = float(x @ x) / float(self.prior.min())
        x32 = x.astype(np.float32)
        rank = WITNESS_RANK
        slots = []
        for pool, terms in self._bounded_pools():
            count = pool.count
            if count:
                witnesses = pool.extras["witnesses"][:count].reshape(count * rank, -1)
                projected = (witnesses @ x32).reshape(count, rank)
                projected *= projected
                explained = projected @ np.ones(rank, dtype=np.float32)
                margin = margin_coefficient(self.layout.dim, terms, pool.extras["witness_updates"][:count])
                pool_slots = pool.slots[:count]
                variance[pool_slots] -= explained
                variance[pool_slots] += margin * scale
                slots.append(pool_slots)
        bounded = np.concatenate(slots) if slots else np.zeros(0, dtype=np.intp)
        return variance, bounded

    def bounded_savings(self) -> int:
        """Floats a bounds pass reads less than the exact pass over the arms that keep bounds."""
        dim = self.layout.dim
        bounds = WITNESS_RANK * dim
        fresh = sum(pool.count * (capacity * dim - bounds) for capacity, pool in self.pools.items() if pool.extras)
        return fresh + self.dense_pool.count * (self.layout.size - bounds)

    def exact_variance(self, slots: np.ndarray, x: np.ndarray) -> np.ndarray:
        """`variance(x, by_row=True)` at the given slots of arms that keep bounds, bit for bit (float64)."""
        result = np.empty(slots.size)
        members = self.by_slot
        prior_variance = float(x @ (x / self.prior))
        x32 = None
        by_pool: dict[int, tuple[_Pool, list[int], list[int]]] = {}
        for position, slot in enumerate(slots.tolist()):
            stats = members[slot]
            pool = self.dense_pool if stats._block_pool is None else stats._block_pool
            entry = by_pool.setdefault(id(pool), (pool, [], []))
            entry[1].append(position)
            entry[2].append(stats._block_index)
        for pool, positions, indices in by_pool.values():
            if pool is self.dense_pool:
                result[positions] = self.dense_variance(self.layout.outer(x), np.array(indices))
            else:
                x32 = x.astype(np.float32) if x32 is None else x32
                values = np.full(len(indices), prior_variance)
                values -= _rows_norm(pool.blocks[indices], x32)
                result[positions] = values
        return result

    def _bounded_pools(self) -> list[tuple[_Pool, int]]:
        """The pools whose members keep bounds, each with the length of its exact scoring sum."""
        fresh = [(pool, capacity + self.layout.dim) for capacity, pool in self.pools.items() if pool.extras]
        return [*fresh, (self.dense_pool, self.layout.size)]

    def dense_variance(self, outer: np.ndarray, indices: np.ndarray | None = None) -> np.ndarray:
        """x' A^-1 x of the dense arms (all, or those at `indices` of the dense pool), from `outer(x)`.

        An einsum: each arm's sum is the same loop wherever the arm sits and however many are read (a BLAS
        matrix-vector product rounds a row by its place in the pass), so scoring some arms gives the bits
        scoring all gives; 1.3x a BLAS pass's time over all arms.
        """
        dense = self.dense_pool
        blocks = dense.blocks[: dense.count] if indices is None else dense.blocks[indices]
        return np.einsum("kp,p->k", blocks, outer)

    def _fresh_variance(self, x: np.ndarray, by_row: bool = False, bounded: bool = False) -> np.ndarray:
        """x' D^-1 x - |V x|^2 for the fresh arms in slot order (the prior variance at dense arms' slots).

        `by_row`: pools that keep bounds summed per arm as `exact_variance` does; `bounded`: those left out.
        """
        variance = np.full(self.arms, float(x @ (x / self.prior)))
        x32 = None
        for capacity, pool in self.pools.items():
            count = pool.count
            if not count or (bounded and pool.extras):
                continue
            x32 = x.astype(np.float32) if x32 is None else x32
            if (by_row or bounded) and pool.extras:
                variance[pool.slots[:count]] -= _rows_norm(pool.blocks[:count], x32)
            else:
                projected = (pool.blocks[:count].reshape(count * capacity, -1) @ x32).reshape(count, capacity)
                projected *= projected
                variance[pool.slots[:count]] -= projected @ pool.ones  # |V x|^2 (half an einsum's time)
        return variance

    def variance_rows(self, xs: np.ndarray) -> np.ndarray:
        """`variance` for each row of xs: shape (rows, arms)."""
        base = np.einsum("nd,nd->n", xs / self.prior, xs)
        variance = np.repeat(base[:, None], self.arms, axis=1)
        xs32 = xs.astype(np.float32)
        for capacity, pool in self.pools.items():
            count = pool.count
            if count:
                flat = pool.blocks[:count].reshape(count * capacity, -1)
                projected = (xs32 @ flat.T).reshape(xs.shape[0], count, capacity)
                variance[:, pool.slots[:count]] -= np.einsum("nkr,nkr->nk", projected, projected)
        dense = self.dense_pool
        if dense.count:
            variance[:, dense.slots[: dense.count]] = self.layout.outer_rows(xs) @ dense.blocks[: dense.count].T
        return variance


def _rows_norm(blocks: np.ndarray, x32: np.ndarray) -> np.ndarray:
    """|V x|^2 per block by einsums: the same loop per arm wherever it sits (bits independent of the pass)."""
    projected = np.einsum("krd,d->kr", blocks, x32)
    return np.einsum("kr,kr->k", projected, projected)
