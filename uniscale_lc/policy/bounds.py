"""Cheap upper bounds on a dense arm's variance, so `LinUCB.select` reads exactly only arms that could win.

A dense arm's variance x' S x (S its stored float32 inverse Gram matrix) is the prior variance x' D^-1 x
minus x' C x with C = D^-1 - S positive semi-definite (observations only shrink the inverse). Any W with
W'W <= C (in the PSD order) gives x' S x <= x' D^-1 x - |W x|^2: each dense arm keeps `WITNESS_RANK` such
rows ("witnesses"), 1 KB at d = 65 against the 8.6 KB of its packed inverse. They are C's top eigenvectors
(scaled) whenever the inverse is stored exactly (refresh, load); each rank-one downdate S -= v v' adds v v'
to C, and v is merged into the witness it raises most (the top eigenvector of [w v][w v]' stays below
w w' + v v'), so the bound keeps up with learning between refreshes. A margin covers every float32 rounding
(of S, of W, of the scoring sums) with a factor two to spare (`margin_coefficient`).

`pruned_totals` then makes exact every arm whose bound could reach the top `limit` totals or tie the best
within `TIE_TOLERANCE`: the choice, its tie set and the recorded top scores are those of scoring every arm
exactly (tests/test_policy_two_pass.py). Only without forgetting (gamma < 1 rescales S, not tracked here).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .base import TIE_TOLERANCE

__all__ = ["WITNESS_RANK", "margin_coefficient", "merge_witness", "pruned_totals", "top_witnesses"]

# Rows per dense arm: 4 x 65 floats read per arm instead of 2,145; the first row alone carries most of C
# when contexts share a direction (the intercept), the others what observations add across contexts.
WITNESS_RANK = 2
# float32 unit roundoff, doubled: the margin's safety factor.
_ROUNDING = 2.0 * 2.0**-24


def top_witnesses(complement: np.ndarray, rank: int = WITNESS_RANK) -> np.ndarray:
    """`rank` rows W (float32) with W'W <= complement: its top eigenvectors scaled by sqrt(eigenvalue)."""
    eigenvalues, vectors = np.linalg.eigh(complement)
    top = eigenvalues[::-1][:rank]
    rows = (vectors[:, ::-1][:, :rank] * np.sqrt(np.maximum(top, 0.0))).T
    witnesses = np.zeros((rank, complement.shape[0]), dtype=np.float32)
    witnesses[: rows.shape[0]] = rows
    return witnesses


def merge_witness(witnesses: np.ndarray, vector: np.ndarray) -> None:
    """Fold the downdate vector v (C grew by v v') into the witness it raises most, in place.

    u = [w v] e / |e| for any e satisfies u u' <= w w' + v v'; e is the top eigenvector of the 2 x 2 Gram
    matrix [[w'w, w'v], [v'w, v'v]], so |u|^2 is its top eigenvalue (at least max(w'w, v'v)).
    """
    rows = witnesses.astype(np.float64)
    own = float(vector @ vector)
    norms = np.einsum("rd,rd->r", rows, rows).tolist()
    crosses = (rows @ vector).tolist()
    # r 2 x 2 eigenproblems in Python floats: a fraction of the time of the same in small numpy arrays.
    best, best_gain, best_top = -1, 0.0, 0.0
    for index, (norm, cross) in enumerate(zip(norms, crosses, strict=True)):
        half = 0.5 * (norm - own)
        top = 0.5 * (norm + own) + math.sqrt(half * half + cross * cross)
        if top - norm > best_gain:
            best, best_gain, best_top = index, top - norm, top
    if best < 0:
        return
    first, second = crosses[best], best_top - norms[best]
    length = math.hypot(first, second)
    if length > 0.0 and math.isfinite(length):
        witnesses[best] = (first * rows[best] + second * vector) / length


def margin_coefficient(dim: int, packed_size: int, updates: np.ndarray) -> np.ndarray:
    """Per arm, the margin as a multiple of |x|^2 / min(prior), which bounds each rounding below.

    With X = |x|^2 / min(prior) (>= x' D^-1 x and >= the sum of |S_ij x_i x_j|/d): the float32 scoring sum
    over the packed triangle (packed_size X d u) and its products (2 d u X); the float32 storage of S at the
    last exact store (d u X) and of W (3 d u X); the bound's own float32 sums (d (d + 3) u X); and per
    downdate since then the rounding of S and of the merged witness (4 d u X each).
    """
    return _ROUNDING * dim * (packed_size + dim + 9 + 4.0 * updates)


def pruned_totals(
    upper: np.ndarray,
    bounded: np.ndarray,
    limit: int,
    refine: Callable[[np.ndarray], np.ndarray],
    first_batch: int = 5,
) -> np.ndarray:
    """Totals (mean + bonus - penalty) where `bounded` entries of `upper` are upper bounds, made exact
    (by `refine(indices) -> exact totals`) wherever they could be among the top `limit` or tie the best.

    Entries left bounded are below the `limit`-th best exact total by more than twice the tie tolerance,
    so an argmax with ties (`argmax_tiebreak`) and a top-`limit` record see what exact totals give.
    """
    totals = upper.copy()
    if bounded.size == 0:
        return totals
    unknown = np.zeros(upper.size, dtype=bool)
    unknown[bounded] = True
    # First the bounded arms with the highest bounds: usually the winners, so the threshold is tight.
    batch = min(bounded.size, max(first_batch, limit))
    first = bounded[np.argpartition(upper[bounded], bounded.size - batch)[bounded.size - batch :]] if batch < bounded.size else bounded
    totals[first] = refine(first)
    unknown[first] = False
    known = totals[~unknown]
    if known.size < limit:  # too few exact totals for a threshold: make every arm exact
        rest = np.flatnonzero(unknown)
    else:
        threshold = float(np.partition(known, known.size - limit)[known.size - limit])
        cut = threshold - (2.0 * TIE_TOLERANCE + 1e-14 * abs(threshold))
        rest = np.flatnonzero(unknown & ~(upper < cut))  # NaN bounds are refined too
    if rest.size:
        totals[rest] = refine(rest)
    return totals
