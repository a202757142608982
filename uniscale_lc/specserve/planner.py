"""The planner: profile + TPOT SLO -> speculation length per batch size -> vLLM `--speculative-config`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, field_error
from .goodput import choose_k, goodput_curve, lengths_by_k, step_time_ms, tail_survival
from .profile import Profile, read_json
from .vllm_rules import (
    ADAPTIVE_VERIFICATION_METHODS,
    METHODS_WITHOUT_MODEL,
    VLLM_TARGET,
    validate_speculative_config,
)

PLAN_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class BatchChoice:
    """The k chosen at one batch size: predicted goodput (tokens/s), mean TPOT and the TPOT of the request
    at the plan's `slo_quantile` of acceptance difficulty (ms); `meets_slo` is judged on the latter."""

    batch_size: int
    k: int
    goodput: float
    tpot_ms: float
    meets_slo: bool
    tail_tpot_ms: float = 0.0


@dataclass(frozen=True)
class SpecPlan:
    """A plan: per-batch-size choices, merged into vLLM's `[[start_bs, end_bs, k], ...]` ranges."""

    choices: tuple[BatchChoice, ...]
    ranges: tuple[tuple[int, int, int], ...]
    slo_tpot_ms: float | None
    max_k: int
    slo_quantile: float = 0.9
    method: str = "draft_model"
    draft_model: str = ""
    profile_description: str = ""

    def to_json(self, path: Path | str) -> None:
        """Write the plan (for `specserve apply`); atomic, plain JSON."""
        payload = {"schema_version": PLAN_SCHEMA_VERSION, "vllm_target": VLLM_TARGET, **asdict(self)}
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        tmp.replace(target)

    @classmethod
    def from_json(cls, path: Path | str) -> SpecPlan:
        source = Path(path)
        data = read_json("SpecPlan", source,
                         "no such file; write one with `specserve plan PROFILE --slo-tpot-ms MS --out PLAN.json`")
        if not isinstance(data, dict) or data.get("schema_version") != PLAN_SCHEMA_VERSION:
            raise field_error("SpecPlan", "schema_version", data.get("schema_version") if isinstance(data, dict)
                              else None, f"expected {PLAN_SCHEMA_VERSION}; re-run `specserve plan`")
        try:
            choices = tuple(BatchChoice(**c) for c in data["choices"])
            ranges = tuple((int(a), int(b), int(k)) for a, b, k in data["ranges"])
            return cls(choices=choices, ranges=ranges, slo_tpot_ms=data["slo_tpot_ms"], max_k=int(data["max_k"]),
                       slo_quantile=float(data["slo_quantile"]), method=str(data["method"]),
                       draft_model=str(data["draft_model"]), profile_description=str(data["profile_description"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"SpecPlan {source}: malformed plan ({exc}); re-run `specserve plan`") from exc

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


def tail_tpot_curve(profile: Profile, batch: int, max_k: int, slo_quantile: float) -> np.ndarray:
    """TPOT (ms) for k = 0..max_k of the request at `slo_quantile` of difficulty, in a batch of `batch`."""
    times = step_time_ms(profile, np.arange(max_k + 1), batch)
    return np.asarray(times / lengths_by_k(tail_survival(profile, slo_quantile, max(max_k, 1)), max_k))


def plan(
    profile: Profile, slo_tpot_ms: float | None, max_k: int = 8, max_batch_size: int | None = None,
    *, slo_quantile: float = 0.9, tolerance: float = 0.01,
) -> SpecPlan:
    """Choose k for every batch size 1..max_batch_size: best goodput whose tail request meets the SLO.

    Requests differ in acceptance (`profile.acceptance_spread`); a hard request gains less from each extra
    draft position, so its TPOT bottoms out at a smaller k than the batch's goodput does. Between the two
    the SLO decides: the plan keeps the largest-goodput k whose TPOT for the request at `slo_quantile` of
    difficulty meets the SLO. k = 0 is always a candidate; if no k meets it, the lowest tail TPOT wins.
    The previous batch size's k is kept while it meets the SLO within `tolerance` of the best goodput, so
    CUDA-graph padding steps do not fragment the table into alternating ranges.
    """
    if max_k < 0 or max_k > 64:
        raise field_error("plan", "max_k", max_k, "give 0..64 speculative tokens")
    if slo_tpot_ms is not None and not slo_tpot_ms > 0:
        raise field_error("plan", "slo_tpot_ms", slo_tpot_ms, "give a positive TPOT target in ms, or None")
    if not 0.5 <= slo_quantile < 1.0:
        raise field_error("plan", "slo_quantile", slo_quantile, "give a quantile in [0.5, 1), e.g. 0.9")
    if not 0.0 <= tolerance < 0.5:
        raise field_error("plan", "tolerance", tolerance, "give a relative goodput tolerance in [0, 0.5)")
    top = max_batch_size or profile.max_batch_size
    choices: list[BatchChoice] = []
    for batch in range(1, top + 1):
        goodput, tpot = goodput_curve(profile, batch, max_k)
        tail = tail_tpot_curve(profile, batch, max_k, slo_quantile)
        k = choose_k(goodput, tail, slo_tpot_ms)
        if choices and choices[-1].k != k:
            held = choices[-1].k
            held_feasible = slo_tpot_ms is None or tail[held] <= slo_tpot_ms + 1e-12
            chosen_feasible = slo_tpot_ms is None or tail[k] <= slo_tpot_ms + 1e-12
            if held_feasible == chosen_feasible and (
                goodput[held] >= goodput[k] * (1 - tolerance) if chosen_feasible else tail[held] <= tail[k] * (1 + tolerance)
            ):
                k = held
        meets = slo_tpot_ms is None or bool(tail[k] <= slo_tpot_ms + 1e-12)
        choices.append(BatchChoice(batch, k, float(goodput[k]), float(tpot[k]), meets, float(tail[k])))
    return SpecPlan(tuple(choices), merge_ranges([c.k for c in choices]), slo_tpot_ms, max_k, slo_quantile,
                    profile.method, profile.draft_model, profile.description)


def speculative_config(
    spec_plan: SpecPlan,
    *,
    method: str | None = None,
    model: str | None = None,
    adaptive_verification: bool = False,
) -> dict[str, Any] | None:
    """The `--speculative-config` JSON for vLLM (see `vllm_rules.VLLM_TARGET`); None when speculation never pays.

    `num_speculative_tokens` is the largest k used; ranges with k = 0 switch speculation off there. The
    draft `model` defaults to the plan's (from the profile); methods that load a draft need one. The result
    passes `validate_speculative_config`, i.e. the checks vLLM runs at startup.
    """
    largest = max(k for _, _, k in spec_plan.ranges)
    if largest == 0:
        return None
    method = method or spec_plan.method
    model = model or spec_plan.draft_model or None
    if model is None and method not in METHODS_WITHOUT_MODEL:
        raise field_error("speculative_config", "model", None,
                          f"method {method!r} loads a draft model: pass --draft-model HF_ID (or model=...), "
                          "or set `draft_model` in the profile")
    if adaptive_verification and method not in ADAPTIVE_VERIFICATION_METHODS:
        raise field_error("speculative_config", "adaptive_verification", True,
                          f"vLLM ({VLLM_TARGET}) accepts enable_adaptive_verification only with method "
                          f"{sorted(ADAPTIVE_VERIFICATION_METHODS)}; drop it for {method!r}")
    config: dict[str, Any] = {"method": method}
    if model:
        config["model"] = model
    config["num_speculative_tokens"] = largest
    config["num_speculative_tokens_per_batch_size"] = [list(r) for r in spec_plan.ranges]
    if adaptive_verification:
        config["enable_adaptive_verification"] = True
    validate_speculative_config(config, max_num_seqs=len(spec_plan.choices))
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
            "tail_tpot_ms": f"{first.tail_tpot_ms:.1f}-{last.tail_tpot_ms:.1f}",
            "goodput_tok_s": f"{first.goodput:.0f}-{last.goodput:.0f}",
            "meets_slo": all(c.meets_slo for c in spec_plan.choices[start - 1 : end]),
        })
    return rows
