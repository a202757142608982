"""The SpecServe goodput model of speculative decoding, as pure numpy functions.

E[N](k) = B + sum over requests and positions j <= k of P(positions 1..j accepted)
T(k, B) = k * t_draft(B) + t_verify((k + 1) * B) + overhead
goodput(k) = E[N](k) / T(k, B);   TPOT(k) = T(k, B) / (E[N](k) / B)

At one batch size with the same acceptance for every request, goodput = B / TPOT, so maximising goodput and
minimising TPOT pick the same k; the SLO then decides feasibility (and max batch size). With per-request
acceptance (the simulator, the adaptive verifier) the two differ, and the SLO constrains the worst request.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .profile import Profile

FloatArray = NDArray[np.float64]


def interp_extrap(x: ArrayLike, xs: Sequence[float], ys: Sequence[float]) -> FloatArray:
    """Piecewise-linear through (xs, ys), extended linearly past both ends, never below zero."""
    xv = np.asarray(x, dtype=np.float64)
    xa = np.asarray(xs, dtype=np.float64)
    ya = np.asarray(ys, dtype=np.float64)
    out = np.interp(xv, xa, ya)
    if len(xa) >= 2:
        hi = xv > xa[-1]
        slope_hi = (ya[-1] - ya[-2]) / (xa[-1] - xa[-2])
        out = np.where(hi, ya[-1] + slope_hi * (xv - xa[-1]), out)
        lo = xv < xa[0]
        slope_lo = (ya[1] - ya[0]) / (xa[1] - xa[0])
        out = np.where(lo, ya[0] + slope_lo * (xv - xa[0]), out)
    return np.maximum(out, 0.0)


def survival_from_conditional(rates: ArrayLike) -> FloatArray:
    """Per-position conditional acceptance rates -> P(positions 1..j all accepted)."""
    return np.asarray(np.cumprod(np.clip(np.asarray(rates, dtype=np.float64), 0.0, 1.0), axis=-1), dtype=np.float64)


def extend_survival(survival: ArrayLike, k: int) -> FloatArray:
    """The first k survival probabilities; past the measured ones, decay by the last conditional rate."""
    s = np.asarray(survival, dtype=np.float64)
    if k <= len(s):
        return s[:k].copy()
    if len(s) == 0 or s[-1] == 0.0:
        return np.concatenate([s, np.zeros(k - len(s))])
    ratio = s[-1] / s[-2] if len(s) >= 2 and s[-2] > 0 else s[-1]
    extra = s[-1] * ratio ** np.arange(1, k - len(s) + 1)
    return np.concatenate([s, extra])


def accepted_length(survival: ArrayLike, k: int) -> float:
    """Expected tokens one request gains per step at speculation length k: 1 + sum_{j<=k} s_j."""
    return 1.0 + float(np.sum(extend_survival(survival, k)))


def smartspec_accepted_length(alpha: float, k: int | ArrayLike) -> FloatArray:
    """SmartSpec/TurboSpec's one-parameter model: (1 - alpha^(k+1)) / (1 - alpha); k + 1 when alpha = 1."""
    kv = np.asarray(k, dtype=np.float64)
    if alpha >= 1.0:
        return kv + 1.0
    return (1.0 - alpha ** (kv + 1.0)) / (1.0 - alpha)


def expected_accepted_tokens(survival: ArrayLike, k: int, batch: int) -> float:
    """E[N](k): with a 1-D survival every request is alike; with a (B, K) matrix, one row per request."""
    s = np.asarray(survival, dtype=np.float64)
    if s.ndim == 2:
        return float(s.shape[0] + np.sum(s[:, :k]))
    return batch * accepted_length(s, k)


def draft_ms(profile: Profile, batch: ArrayLike) -> FloatArray:
    return interp_extrap(batch, profile.batch_sizes, profile.draft_ms)


def pad_to_graph(profile: Profile, tokens: ArrayLike) -> FloatArray:
    """Tokens a verify of n tokens really runs: the next captured CUDA-graph size (eager past the largest)."""
    n = np.asarray(tokens, dtype=np.float64)
    sizes = np.asarray(profile.cuda_graph_sizes, dtype=np.float64)
    if sizes.size == 0:
        return n
    index = np.searchsorted(sizes, n, side="left")
    padded = sizes[np.minimum(index, sizes.size - 1)]
    return np.where(n > sizes[-1], n, padded)


def next_lower_graph_size(profile: Profile, tokens: int) -> int | None:
    """The largest captured size strictly below `tokens` (the verifier's trimming target); None if none."""
    below = [s for s in profile.cuda_graph_sizes if s < tokens]
    return below[-1] if below else None


def verify_ms(profile: Profile, tokens: ArrayLike) -> FloatArray:
    return interp_extrap(pad_to_graph(profile, tokens), profile.verify_tokens, profile.verify_ms)


def tail_survival(profile: Profile, quantile: float, depth: int) -> FloatArray:
    """Survival of the request at `quantile` of difficulty: conditional rates c_j ** e_q, e_q at that
    quantile of the log-normal spread the simulator draws (quantile 0.9: a request harder than 90%)."""
    from statistics import NormalDist

    survival = extend_survival(profile.acceptance_per_pos, depth)
    prev = np.concatenate([[1.0], survival[:-1]])
    conditional = np.divide(survival, prev, out=np.zeros_like(survival), where=prev > 0)
    exponent = float(np.exp(NormalDist().inv_cdf(quantile) * profile.acceptance_spread))
    return np.asarray(np.cumprod(np.clip(conditional, 0.0, 1.0) ** exponent), dtype=np.float64)


def step_time_ms(profile: Profile, k: ArrayLike, batch: ArrayLike, verify_tokens: ArrayLike | None = None) -> FloatArray:
    """T(k, B); `verify_tokens` overrides (k + 1) * B when the verifier trims the draft."""
    kv = np.asarray(k, dtype=np.float64)
    bv = np.asarray(batch, dtype=np.float64)
    tokens = (kv + 1.0) * bv if verify_tokens is None else np.asarray(verify_tokens, dtype=np.float64)
    draft = np.where(kv > 0, kv * draft_ms(profile, bv), 0.0)
    return draft + verify_ms(profile, tokens) + bv * profile.verify_ms_per_request + profile.overhead_ms


def lengths_by_k(survival: ArrayLike, max_k: int) -> FloatArray:
    """Expected tokens per step for k = 0..max_k: 1 + sum_{j<=k} s_j."""
    s = np.asarray(survival, dtype=np.float64)
    return 1.0 + np.concatenate([[0.0], np.cumsum(extend_survival(s, max_k))])


def goodput_curve(
    profile: Profile, batch: int, max_k: int, survival: ArrayLike | None = None
) -> tuple[FloatArray, FloatArray]:
    """(goodput in tokens/s, TPOT in ms) for k = 0..max_k at one batch size."""
    s = np.asarray(profile.acceptance_per_pos if survival is None else survival, dtype=np.float64)
    ks = np.arange(max_k + 1)
    lengths = lengths_by_k(s, max_k)
    times = step_time_ms(profile, ks, batch)
    goodput = batch * lengths / times * 1000.0
    tpot = times / lengths
    return goodput, tpot


def choose_k(goodput: ArrayLike, tpot_ms: ArrayLike, slo_tpot_ms: float | None) -> int:
    """Best goodput among k meeting the SLO; if none can, the k with the lowest TPOT (best effort).

    Ties go to the smaller k: the same predicted goodput for less drafting work.
    """
    g = np.asarray(goodput, dtype=np.float64)
    t = np.asarray(tpot_ms, dtype=np.float64)
    feasible = np.ones_like(g, dtype=bool) if slo_tpot_ms is None else t <= slo_tpot_ms + 1e-12
    if not feasible.any():
        return int(np.argmin(t))
    masked = np.where(feasible, g, -np.inf)
    return int(np.flatnonzero(masked >= masked.max() * (1 - 1e-12))[0])


def adaptive_verify(
    profile: Profile, survival_matrix: ArrayLike, k: int
) -> tuple[NDArray[np.int64], float, float]:
    """SpecServe's adaptive verifier: keep the most likely draft slots while that does not lower goodput.

    `survival_matrix` is (B, >=k): per request, P(its positions 1..j accepted). Slots are admitted in order
    of survival (a slot's survival never exceeds the one before it in the same request, so the admitted set
    is always a prefix per request). Returns (verified tokens per request, goodput tokens/s, step ms).
    """
    s = np.asarray(survival_matrix, dtype=np.float64)[:, :k]
    batch = s.shape[0]
    if k == 0 or batch == 0:
        t = float(step_time_ms(profile, 0, batch))
        return np.zeros(batch, dtype=np.int64), batch / t * 1000.0 if t > 0 else 0.0, t
    order = np.argsort(-s, axis=None, kind="stable")
    sorted_s = s.reshape(-1)[order]
    n = np.arange(sorted_s.size + 1)
    gain = batch + np.concatenate([[0.0], np.cumsum(sorted_s)])
    # Drafting k positions is paid in full; only the verifier's tokens shrink with trimming.
    times = step_time_ms(profile, k, batch, verify_tokens=batch + n)
    goodput = gain / times * 1000.0
    best = int(np.argmax(goodput))
    rows = np.unravel_index(order[:best], s.shape)[0]
    per_request = np.bincount(rows, minlength=batch).astype(np.int64)
    return per_request, float(goodput[best]), float(times[best])
