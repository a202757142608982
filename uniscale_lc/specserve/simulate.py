"""SIMULATION: replay arrival traces against the goodput/latency model and compare speculation policies.

Continuous batching, decode-dominated: each step every running request gains its expected accepted length
(1 + the survival of the positions it verified) in the step time the profile predicts. Between events
(an arrival that can be admitted, a completion) the batch is constant, so the loop jumps from event to
event and a whole trace replays in about a second per policy. Nothing here touches a GPU or a server.

Policies: no speculation; static k; SmartSpec (one global alpha, goodput-optimal k per step); SpecServe
(per-request acceptance, adaptive verifier, best goodput whose predicted per-request TPOT meets the SLO).
The SpecServe policy sees each request's true acceptance curve (an oracle for the online estimates vLLM's
adaptive verifier derives from draft confidences), so read its row as an upper bound of that policy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..errors import field_error
from .goodput import adaptive_verify, extend_survival, smartspec_accepted_length, step_time_ms
from .profile import Profile

FloatArray = NDArray[np.float64]
TRACE_NAMES = ("conv", "code", "mooncake")
# (k per request, step time ms) for the running batch, given its (B, max_k) survival matrix.
Policy = Callable[[FloatArray], tuple[NDArray[np.int64], float]]


def default_traces_dir() -> Path:
    """../shared/data/traces beside the checkout (recorded data is never copied into the project)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces"


def load_trace(name_or_csv: str, traces_dir: Path | None = None) -> FloatArray:
    """Arrival times in seconds from a trace name (conv, code, mooncake) or a CSV path, starting at 0."""
    path = Path(name_or_csv)
    if name_or_csv in TRACE_NAMES:
        path = (traces_dir or default_traces_dir()) / f"{name_or_csv}.csv"
    if not path.is_file():
        raise field_error("simulate", "trace", name_or_csv,
                          f"give one of {', '.join(TRACE_NAMES)} (read from {traces_dir or default_traces_dir()}) "
                          "or a CSV file with a 'Timestamp' column of arrival seconds")
    lines = path.read_text(encoding="utf-8").split()
    start = 1 if lines and not _is_number(lines[0]) else 0
    arrivals = np.sort(np.array([float(x.split(",")[0]) for x in lines[start:]], dtype=np.float64))
    if arrivals.size == 0:
        raise field_error("simulate", "trace", name_or_csv, "the trace has no arrivals")
    return arrivals - arrivals[0]


def _is_number(text: str) -> bool:
    try:
        float(text.split(",")[0])
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Workload:
    """Requests to replay: arrival (s), output tokens, and each request's acceptance survival curve."""

    arrivals_s: FloatArray
    output_tokens: NDArray[np.int64]
    survival: FloatArray  # (N, max_k)


def make_workload(
    profile: Profile,
    arrivals_s: FloatArray,
    *,
    max_k: int = 8,
    seed: int = 0,
    median_output_tokens: float = 192.0,
    acceptance_spread: float = 0.4,
    rate_scale: float = 1.0,
) -> Workload:
    """Seeded output lengths (log-normal, 16..1024) and per-request acceptance around the profile's curve.

    Request i's conditional acceptance at position j is c_j ** e_i with log e_i ~ N(0, spread): easy prompts
    accept more, hard ones fewer, the mean curve stays near the profile's.
    """
    rng = np.random.default_rng(seed)
    n = arrivals_s.size
    tokens = np.clip(np.round(rng.lognormal(math.log(median_output_tokens), 0.6, n)), 16, 1024).astype(np.int64)
    survival = extend_survival(profile.acceptance_per_pos, max_k)
    prev = np.concatenate([[1.0], survival[:-1]])
    conditional = np.divide(survival, prev, out=np.zeros_like(survival), where=prev > 0)
    exponents = np.exp(rng.normal(0.0, acceptance_spread, n))[:, None]
    per_request = np.cumprod(np.clip(conditional[None, :], 1e-12, 1.0) ** exponents, axis=1)
    return Workload(arrivals_s / rate_scale, tokens, per_request)


def static_policy(profile: Profile, k: int) -> Policy:
    def choose(survival: FloatArray) -> tuple[NDArray[np.int64], float]:
        batch = survival.shape[0]
        return np.full(batch, k, dtype=np.int64), float(step_time_ms(profile, k, batch))

    return choose


def smartspec_policy(profile: Profile, max_k: int) -> Policy:
    """Goodput-optimal k per step under the one-alpha model (SmartSpec/TurboSpec)."""
    ks = np.arange(max_k + 1)
    lengths = smartspec_accepted_length(profile.alpha, ks)

    def choose(survival: FloatArray) -> tuple[NDArray[np.int64], float]:
        batch = survival.shape[0]
        times = step_time_ms(profile, ks, batch)
        k = int(np.argmax(lengths / times))
        return np.full(batch, k, dtype=np.int64), float(times[k])

    return choose


def specserve_policy(profile: Profile, max_k: int, slo_tpot_ms: float) -> Policy:
    """Per step: for each k, trim with the adaptive verifier; keep the best goodput whose worst request's
    predicted TPOT meets the SLO, else the best goodput (SmartSpec-like, per-request aware)."""

    def choose(survival: FloatArray) -> tuple[NDArray[np.int64], float]:
        batch = survival.shape[0]
        best: tuple[float, float, NDArray[np.int64], float] | None = None  # (feasible, score, ks, time)
        cumulative = np.concatenate([np.zeros((batch, 1)), np.cumsum(survival, axis=1)], axis=1)
        for k in range(max_k + 1):
            verified, goodput, time_ms = adaptive_verify(profile, survival, k)
            gains = 1.0 + cumulative[np.arange(batch), verified]
            worst_tpot = float(np.max(time_ms / gains))
            feasible = worst_tpot <= slo_tpot_ms
            # No k meets the SLO for the worst request: lowering k to chase it only costs throughput
            # (and queueing), so fall back to the best goodput.
            score = goodput
            if best is None or (feasible, score) > (best[0], best[1]):
                best = (float(feasible), score, verified, time_ms)
        assert best is not None
        return best[2], best[3]

    return choose


@dataclass(frozen=True)
class SimResult:
    """Per-request outcomes of one replay."""

    policy: str
    ttft_s: FloatArray
    tpot_ms: FloatArray
    output_tokens: NDArray[np.int64]
    makespan_s: float
    mean_k: float


def replay(
    profile: Profile, workload: Workload, policy: Policy, name: str, max_batch: int | None = None,
) -> SimResult:
    """Event-driven replay; FIFO admission up to `max_batch` running requests (default the profile's
    max_batch_size, i.e. vLLM's --max-num-seqs), prefill cost at admission."""
    cap = max_batch or profile.max_batch_size
    n = workload.arrivals_s.size
    arrivals = workload.arrivals_s
    first_token = np.zeros(n)
    finish = np.zeros(n)
    remaining = (workload.output_tokens - 1).astype(np.float64)
    active: list[int] = []
    next_arrival = 0
    t = float(arrivals[0])
    prefill_s = profile.prefill_ms_per_request / 1000.0
    k_weighted = 0.0
    steps_total = 0.0
    while next_arrival < n or active:
        admitted = False
        while next_arrival < n and arrivals[next_arrival] <= t + 1e-12 and len(active) < cap:
            t += prefill_s
            first_token[next_arrival] = t
            if remaining[next_arrival] <= 0:
                finish[next_arrival] = t
            else:
                active.append(next_arrival)
            next_arrival += 1
            admitted = True
        if not active:
            if next_arrival < n:
                t = max(t, float(arrivals[next_arrival]))
            continue
        if admitted and next_arrival < n and arrivals[next_arrival] <= t:
            continue  # more arrivals became due while prefilling
        idx = np.array(active)
        survival = workload.survival[idx]
        ks, step_ms = policy(survival)
        cumulative = np.concatenate([np.zeros((idx.size, 1)), np.cumsum(survival, axis=1)], axis=1)
        gains = 1.0 + cumulative[np.arange(idx.size), ks]
        step_s = step_ms / 1000.0
        steps = float(np.ceil(np.min(remaining[idx] / gains) - 1e-9))
        if next_arrival < n and len(active) < cap:
            steps = min(steps, max(1.0, math.ceil((arrivals[next_arrival] - t) / step_s)))
        steps = max(steps, 1.0)
        t += steps * step_s
        remaining[idx] -= steps * gains
        k_weighted += steps * float(np.mean(ks))
        steps_total += steps
        done = remaining[idx] <= 1e-9
        finish[idx[done]] = t
        active = idx[~done].tolist()
    decode_tokens = np.maximum(workload.output_tokens - 1, 1)
    tpot = (finish - first_token) / decode_tokens * 1000.0
    return SimResult(
        policy=name,
        ttft_s=first_token - arrivals,
        tpot_ms=tpot,
        output_tokens=workload.output_tokens,
        makespan_s=float(finish.max() - arrivals[0]),
        mean_k=k_weighted / steps_total if steps_total else 0.0,
    )


PolicySet = dict[str, tuple[Policy, int | None]]
"""name -> (policy, admission cap or None for the profile's max_batch_size)."""


def standard_policies(profile: Profile, slo_tpot_ms: float, max_k: int = 8) -> PolicySet:
    """The comparison the docs report. `+cap` rows admit at most the plan's largest batch meeting the SLO
    (what `specserve apply` sets as --max-num-seqs); the others admit up to the profile's max_batch_size."""
    from .planner import plan
    from .step_policies import drafting_policy, trimming_policy, vllm_table_policy

    spec_plan = plan(profile, slo_tpot_ms, max_k)
    cap = spec_plan.max_batch_meeting_slo
    return {
        "no-spec": (static_policy(profile, 0), None),
        "static-k1": (static_policy(profile, 1), None),
        "static-k3": (static_policy(profile, 3), None),
        "static-k5": (static_policy(profile, 5), None),
        "static-k3+cap": (static_policy(profile, 3), cap),
        "smartspec": (smartspec_policy(profile, max_k), None),
        "vllm-table": (vllm_table_policy(profile, spec_plan), None),
        "vllm-table+cap": (vllm_table_policy(profile, spec_plan), cap),
        "adaspec-drafting": (drafting_policy(profile, max_k), None),
        "adaspec-drafting+trim": (trimming_policy(profile, max_k), None),
        "specserve-slo": (specserve_policy(profile, max_k, slo_tpot_ms), None),
        "specserve-slo+cap": (specserve_policy(profile, max_k, slo_tpot_ms), cap),
    }


def summarise(result: SimResult, slo_tpot_ms: float) -> dict[str, float | str]:
    """Mean and p99 TPOT, SLO attainment, throughput, goodput (tokens of requests meeting the SLO per
    second), TTFT, mean k: one row of the results table."""
    meets = result.tpot_ms <= slo_tpot_ms
    span = result.makespan_s
    return {
        "policy": result.policy,
        "mean_tpot_ms": float(np.mean(result.tpot_ms)),
        "p99_tpot_ms": float(np.percentile(result.tpot_ms, 99)),
        "slo_attainment": float(np.mean(meets)),
        "throughput_tok_s": float(np.sum(result.output_tokens) / span) if span else 0.0,
        "goodput_tok_s": float(np.sum(result.output_tokens[meets]) / span) if span else 0.0,
        "mean_ttft_ms": float(np.mean(result.ttft_s) * 1000.0),
        "p99_ttft_ms": float(np.percentile(result.ttft_s, 99) * 1000.0),
        "mean_k": result.mean_k,
    }


def run_comparison(
    profile: Profile, arrivals_s: FloatArray, slo_tpot_ms: float, *, max_k: int = 8, seed: int = 0,
    rate_scale: float = 1.0, policies: tuple[str, ...] | None = None,
) -> list[dict[str, float | str]]:
    """Replay one trace under every standard policy (or the named ones), same workload for all."""
    # Columns for the static rows' k (up to 5) even when the adaptive policies search fewer.
    workload = make_workload(profile, arrivals_s, max_k=max(max_k, 5), seed=seed, rate_scale=rate_scale)
    chosen = standard_policies(profile, slo_tpot_ms, max_k)
    names = policies or tuple(chosen)
    return [
        summarise(replay(profile, workload, chosen[name][0], name, chosen[name][1]), slo_tpot_ms)
        for name in names
    ]
