"""Profile a running server: load it at several concurrency levels, read /metrics deltas, fit a Profile.

A server runs one speculation length k, so step times at other k come from a fit: with a baseline server
(same target, no speculation) the verify times are measured directly (a non-speculative step at batch B
verifies B tokens); without one, verify time is taken as linear in tokens, a + b * n, and a draft step as
`draft_cost_ratio` times a one-token target step, and a, b are fitted by least squares.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from dataclasses import dataclass

import numpy as np

from ..errors import field_error
from ..serving.monitor import ServerMonitor, server_root
from ..serving.vllm_metrics import ServerLoad
from .goodput import interp_extrap
from .profile import Profile


@dataclass(frozen=True)
class Observation:
    """What one concurrency level showed: TPOT, and the server's acceptance over that interval."""

    concurrency: int
    tpot_ms: float
    requests: int
    acceptance_per_pos: tuple[float, ...]
    mean_acceptance_length: float | None

    @property
    def step_ms(self) -> float:
        """Time of one decode step: each step yields the mean acceptance length of tokens per request."""
        return self.tpot_ms * (self.mean_acceptance_length or 1.0)


def _post_chat(api_base: str, model: str, max_tokens: int, timeout_s: float) -> None:
    body = json.dumps({
        "model": model,
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse keeper."}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,
    }).encode()
    request = urllib.request.Request(api_base + "/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout_s) as response:
        response.read()


def observe(
    url: str, model: str, concurrency: int, *, requests_per_worker: int = 2, max_tokens: int = 128,
    timeout_s: float = 120.0,
) -> Observation:
    """Keep `concurrency` requests in flight (bounded count), then read TPOT and acceptance deltas."""
    root = server_root(url)
    monitor = ServerMonitor(root, timeout_s=min(10.0, timeout_s))
    before = monitor.scrape()
    if not before.ok:
        raise field_error("profile", "url", url, f"could not read {root}/metrics ({before.error})")
    errors: list[BaseException] = []

    def worker() -> None:
        for _ in range(requests_per_worker):
            try:
                _post_chat(root + "/v1", model, max_tokens, timeout_s)
            except OSError as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s * requests_per_worker
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    if errors:
        raise field_error("profile", "url", url, f"requests failed during profiling: {errors[0]}")
    after: ServerLoad = monitor.scrape()
    if after.tpot_ms is None:
        raise field_error("profile", "url", url, "the server reported no TPOT histogram; is it vLLM?")
    return Observation(concurrency, after.tpot_ms, concurrency * requests_per_worker,
                       after.acceptance_per_pos, after.mean_acceptance_length)


def fit_profile(
    spec_observations: list[Observation],
    *,
    k: int,
    baseline_observations: list[Observation] | None = None,
    draft_cost_ratio: float = 0.15,
    description: str = "",
    target: str = "",
    draft: str = "",
    method: str = "draft_model",
    max_batch_size: int = 256,
) -> Profile:
    """Turn observations into a Profile (see the module docstring for the two fits)."""
    if k < 1 or not spec_observations:
        raise field_error("fit_profile", "k", k, "give the server's num_speculative_tokens (>= 1) and observations")
    obs = sorted(spec_observations, key=lambda o: o.concurrency)
    batches = np.array([o.concurrency for o in obs], dtype=np.float64)
    steps = np.array([o.step_ms for o in obs])
    positions = [o.acceptance_per_pos for o in obs if o.acceptance_per_pos]
    if not positions:
        raise field_error("fit_profile", "spec_observations", "no acceptance",
                          "the server reported no spec-decode counters; profile a server with speculation on")
    depth = min(len(p) for p in positions)
    weights = np.array([o.requests for o in obs if o.acceptance_per_pos], dtype=np.float64)
    survival = np.average(np.array([p[:depth] for p in positions]), axis=0, weights=weights)
    survival = np.minimum.accumulate(np.clip(survival, 0.0, 1.0))
    if baseline_observations:
        base = sorted(baseline_observations, key=lambda o: o.concurrency)
        measured_tokens = [o.concurrency for o in base]
        measured_ms = [o.tpot_ms for o in base]
        # A speculative step at batch B verifies (k + 1) * B tokens, usually past the baseline's highest
        # concurrency: extend the measured curve linearly (its last segment), never clamp it flat.
        verify_tokens = sorted({*measured_tokens, *((k + 1) * batches).astype(int).tolist()})
        verify_ms = interp_extrap(verify_tokens, measured_tokens, measured_ms).tolist()
        verify_at = interp_extrap((k + 1) * batches, measured_tokens, measured_ms)
        draft_ms = np.maximum((steps - verify_at) / k, 0.0)
        how = ("verify times from a no-speculation baseline server, extended linearly past its highest "
               "concurrency; draft = (step - verify) / k")
    else:
        # step = a (1 + k r) + b B (k r + k + 1), with verify(n) = a + b n and draft(B) = r verify(B).
        design = np.column_stack([np.full_like(batches, 1 + k * draft_cost_ratio),
                                  batches * (k * draft_cost_ratio + k + 1)])
        (a, b), *_ = np.linalg.lstsq(design, steps, rcond=None)
        a, b = max(float(a), 1e-3), max(float(b), 0.0)
        verify_tokens = sorted({int(n) for n in np.concatenate([batches, (k + 1) * batches])})
        verify_ms = [a + b * n for n in verify_tokens]
        draft_ms = draft_cost_ratio * (a + b * batches)
        how = f"linear fit verify(n) = {a:.3f} + {b:.5f} n ms, draft = {draft_cost_ratio} x verify(B)"
    return Profile(
        description=description or f"profiled at concurrency {batches.astype(int).tolist()}",
        provenance=f"measured with `specserve profile` against a running server (k={k}); {how}",
        synthetic=False,
        target=target,
        draft=draft,
        method=method,
        batch_sizes=batches.astype(int).tolist(),
        draft_ms=np.round(draft_ms, 4).tolist(),
        verify_tokens=list(verify_tokens),
        verify_ms=np.round(verify_ms, 4).tolist(),
        acceptance_per_pos=np.round(survival, 5).tolist(),
        max_batch_size=max_batch_size,
    )
