"""SIMULATION policies that decide per step, after AdaSpec's released code (github cerebellumking/AdaSpec, a
fork of vLLM 0.6.3 / SmartSpec), and the per-batch-size table stock vLLM runs.

- `vllm_table_policy`: the plan's k at the running batch size, for every request: what
  `num_speculative_tokens_per_batch_size` does in stock vLLM (see `vllm_rules.VLLM_TARGET`).
- `drafting_policy` (AdaSpec `--ssd`): draft one position at a time; after each, predict the batch's goodput
  from the running product of each request's draft-token confidences, and stop at the first position where
  it falls (so k = 0 when one position does not beat none). Stock vLLM cannot do this: k is fixed per step
  by the table, and its drafters take no per-step stop signal.
- `trimming_policy` (AdaSpec `--rsd` on top of `--ssd`): after drafting, drop the lowest-confidence tail
  tokens so the verify batch shrinks to the next lower CUDA-graph size, when predicted goodput does not
  fall. Stock vLLM's nearest is `enable_adaptive_verification`, which at the targeted commit only DSpark
  accepts; for a draft model it cannot run today.

A request's draft confidence is its true survival curve here (an oracle for the running product of the
drafter's token probabilities), so these rows are upper bounds of the policies, as for `specserve-slo`.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .goodput import next_lower_graph_size, pad_to_graph, step_time_ms
from .planner import SpecPlan
from .profile import Profile
from .simulate import Policy

FloatArray = NDArray[np.float64]
StepChoice = tuple[NDArray[np.int64], float]


def vllm_table_policy(profile: Profile, spec_plan: SpecPlan) -> Policy:
    """Stock vLLM with the plan's per-batch-size table: k from the running batch size only."""

    def choose(survival: FloatArray) -> StepChoice:
        batch = survival.shape[0]
        k = spec_plan.k_for(batch)
        return np.full(batch, k, dtype=np.int64), float(step_time_ms(profile, k, batch))

    return choose


def drafted_length(profile: Profile, survival: FloatArray, max_k: int) -> int:
    """AdaSpec's per-step stop rule: keep drafting while one more position raises predicted goodput."""
    batch = survival.shape[0]
    gain = float(batch)
    best = gain / float(step_time_ms(profile, 0, batch))
    for j in range(1, max_k + 1):
        gain += float(np.sum(survival[:, j - 1]))
        goodput = gain / float(step_time_ms(profile, j, batch))
        if goodput < best:
            return j - 1
        best = goodput
    return max_k


def drafting_policy(profile: Profile, max_k: int) -> Policy:
    def choose(survival: FloatArray) -> StepChoice:
        batch = survival.shape[0]
        k = drafted_length(profile, survival, max_k)
        return np.full(batch, k, dtype=np.int64), float(step_time_ms(profile, k, batch))

    return choose


def trim_to_graph(profile: Profile, survival: FloatArray, k: int) -> StepChoice:
    """Verify fewer tokens: drop the lowest-survival tail slots down to the next lower CUDA-graph size if
    predicted goodput does not fall. Slots are dropped in order of survival, which is non-increasing along
    each request, so every request keeps a prefix of its draft."""
    batch = survival.shape[0]
    full_tokens = batch * (k + 1)
    full_time = float(step_time_ms(profile, k, batch))
    kept_all = np.full(batch, k, dtype=np.int64)
    if k == 0 or not profile.cuda_graph_sizes:
        return kept_all, full_time
    padded = int(pad_to_graph(profile, full_tokens))
    target = next_lower_graph_size(profile, padded if padded == full_tokens else full_tokens)
    if target is None or target < batch:
        return kept_all, full_time
    slots = survival[:, :k]
    drop = full_tokens - target
    order = np.argsort(slots, axis=None, kind="stable")[:drop]  # lowest survival first
    rows = np.unravel_index(order, slots.shape)[0]
    kept = kept_all - np.bincount(rows, minlength=batch).astype(np.int64)
    trimmed_time = float(step_time_ms(profile, k, batch, verify_tokens=target))
    full_gain = batch + float(np.sum(slots))
    trimmed_gain = full_gain - float(np.sum(slots.reshape(-1)[order]))
    if trimmed_gain / trimmed_time >= full_gain / full_time:
        return kept, trimmed_time
    return kept_all, full_time


def trimming_policy(profile: Profile, max_k: int) -> Policy:
    def choose(survival: FloatArray) -> StepChoice:
        return trim_to_graph(profile, survival, drafted_length(profile, survival, max_k))

    return choose
