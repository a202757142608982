"""The planner: profile + TPOT SLO -> speculation length per batch size -> vLLM `--speculative-config`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import field_error
from .goodput import choose_k, goodput_curve
from .profile import Profile


@dataclass(frozen=True)
class BatchChoice:
    """The k chosen at one batch size, with its predicted goodput (tokens/s) and TPOT (ms)."""

    batch_size: int
    k: int
    goodput: float
    tpot_ms: float
    meets_slo: bool


@dataclass(frozen=True)
class SpecPlan:
    """A plan: per-batch-size choices, merged into vLLM's `[[start_bs, end_bs, k], ...]` ranges."""

    choices: tuple[BatchChoice, ...]
    ranges: tuple[tuple[int, int, int], ...]
    slo_tpot_ms: float | None
    max_k: int

    @property
    def max_batch_meeting_slo(self) -> int | None:
        """Largest batch size whose predicted TPOT meets the SLO (a candidate for --max-num-seqs)."""
        meeting = [c.batch_size for c in self.choices if c.meets_slo]
        return max(meeting) if meeting else None

    def k_for(self, batch_size: int) -> int:
        for start, end, k in self.ranges:
            if start <= batch_size <= end:
                return k
        return self.ranges[-1][2]

    def tpot_ms_for(self, batch_size: int) -> float:
        """Predicted TPOT at a batch size (clamped to the planned range): a TPOT model for LoadSignals."""
        index = min(max(batch_size, 1), len(self.choices)) - 1
        return self.choices[index].tpot_ms


def merge_ranges(ks_by_batch: list[int]) -> tuple[tuple[int, int, int], ...]:
    """[3, 3, 1, 1, 0] for batch sizes 1..5 -> ((1, 2, 3), (3, 4, 1), (5, 5, 0)); ranges are inclusive."""
    ranges: list[tuple[int, int, int]] = []
    for batch, k in enumerate(ks_by_batch, start=1):
        if ranges and ranges[-1][2] == k:
            ranges[-1] = (ranges[-1][0], batch, k)
        else:
            ranges.append((batch, batch, k))
    return tuple(ranges)


def plan(profile: Profile, slo_tpot_ms: float | None, max_k: int = 8, max_batch_size: int | None = None) -> SpecPlan:
    """Choose k for every batch size 1..max_batch_size: best goodput whose predicted TPOT meets the SLO.

    k = 0 (no speculation) is always a candidate, so the plan never predicts less goodput than running
    without speculation, nor than any static k that meets the SLO at that batch size.
    """
    if max_k < 0 or max_k > 64:
        raise field_error("plan", "max_k", max_k, "give 0..64 speculative tokens")
    if slo_tpot_ms is not None and not slo_tpot_ms > 0:
        raise field_error("plan", "slo_tpot_ms", slo_tpot_ms, "give a positive TPOT target in ms, or None")
    top = max_batch_size or profile.max_batch_size
    choices: list[BatchChoice] = []
    for batch in range(1, top + 1):
        goodput, tpot = goodput_curve(profile, batch, max_k)
        k = choose_k(goodput, tpot, slo_tpot_ms)
        meets = slo_tpot_ms is None or bool(tpot[k] <= slo_tpot_ms + 1e-12)
        choices.append(BatchChoice(batch, k, float(goodput[k]), float(tpot[k]), meets))
    return SpecPlan(tuple(choices), merge_ranges([c.k for c in choices]), slo_tpot_ms, max_k)


def speculative_config(
    spec_plan: SpecPlan,
    *,
    method: str = "draft_model",
    model: str | None = None,
    adaptive_verification: bool = False,
) -> dict[str, Any] | None:
    """The `--speculative-config` JSON for vLLM; None when no batch size gains from speculation.

    `num_speculative_tokens` is the largest k used; ranges with k = 0 switch speculation off there.
    """
    largest = max(k for _, _, k in spec_plan.ranges)
    if largest == 0:
        return None
    config: dict[str, Any] = {"method": method}
    if model:
        config["model"] = model
    config["num_speculative_tokens"] = largest
    config["num_speculative_tokens_per_batch_size"] = [list(r) for r in spec_plan.ranges]
    if adaptive_verification:
        config["enable_adaptive_verification"] = True
    return config


def static_goodput(profile: Profile, batch: int, k: int) -> tuple[float, float]:
    """(goodput, TPOT) of a fixed k at one batch size: the baseline the plan is compared with."""
    goodput, tpot = goodput_curve(profile, batch, k)
    return float(goodput[k]), float(tpot[k])


def summary_rows(spec_plan: SpecPlan) -> list[dict[str, Any]]:
    """One row per merged range, for printing: batch range, k, TPOT and goodput at its ends."""
    rows = []
    for start, end, k in spec_plan.ranges:
        first, last = spec_plan.choices[start - 1], spec_plan.choices[end - 1]
        rows.append({
            "batch_sizes": f"{start}-{end}",
            "k": k,
            "tpot_ms": f"{first.tpot_ms:.1f}-{last.tpot_ms:.1f}",
            "goodput_tok_s": f"{first.goodput:.0f}-{last.goodput:.0f}",
            "meets_slo": all(c.meets_slo for c in spec_plan.choices[start - 1 : end]),
        })
    return rows
