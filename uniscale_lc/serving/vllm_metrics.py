"""vLLM's /metrics read as load: raw counters of one scrape, and the load between two scrapes (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .prometheus import ParsedMetrics

# Metric names as served by vLLM (checked against the docs of v0.25 to v0.32; older names as fallbacks).
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_CACHE_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
TTFT = ("vllm:time_to_first_token_seconds",)
# Per-request TPOT first; the per-token inter-token latency is the same quantity averaged per token.
TPOT = (
    "vllm:request_time_per_output_token_seconds",
    "vllm:time_per_output_token_seconds",
    "vllm:inter_token_latency_seconds",
)
SPEC_DRAFTS = "vllm:spec_decode_num_drafts_total"
SPEC_DRAFT_TOKENS = "vllm:spec_decode_num_draft_tokens_total"
SPEC_ACCEPTED = "vllm:spec_decode_num_accepted_tokens_total"
SPEC_ACCEPTED_PER_POS = "vllm:spec_decode_num_accepted_tokens_per_pos_total"


@dataclass(frozen=True)
class VLLMSnapshot:
    """The raw values of one scrape: gauges as read, counters and histogram sums as cumulative totals."""

    time_s: float
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    ttft_sum_s: float | None = None
    ttft_count: float | None = None
    tpot_sum_s: float | None = None
    tpot_count: float | None = None
    spec_drafts: float | None = None
    spec_draft_tokens: float | None = None
    spec_accepted: float | None = None
    spec_accepted_per_pos: tuple[float, ...] = ()


@dataclass(frozen=True)
class ServerLoad:
    """Load of one server between two scrapes; None where the server does not serve that metric yet.

    Latencies and acceptance come from counter deltas, so they describe the last interval, not all time.
    """

    time_s: float
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    acceptance_rate: float | None = None
    mean_acceptance_length: float | None = None
    acceptance_per_pos: tuple[float, ...] = field(default_factory=tuple)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _histogram(parsed: ParsedMetrics, names: tuple[str, ...]) -> tuple[float | None, float | None]:
    for name in names:
        total = parsed.total(name + "_sum")
        count = parsed.total(name + "_count")
        if total is not None and count is not None:
            return total, count
    return None, None


def snapshot_from_metrics(parsed: ParsedMetrics, time_s: float) -> VLLMSnapshot:
    """Pick vLLM's load and speculative-decoding metrics out of one parsed scrape."""
    kv_name = parsed.first_present(KV_CACHE_USAGE)
    ttft_sum, ttft_count = _histogram(parsed, TTFT)
    tpot_sum, tpot_count = _histogram(parsed, TPOT)
    per_pos = parsed.by_label(SPEC_ACCEPTED_PER_POS, "position")
    ordered = tuple(v for _, v in sorted(per_pos.items(), key=lambda kv: int(kv[0]))) if per_pos else ()
    return VLLMSnapshot(
        time_s=time_s,
        running=parsed.total(RUNNING),
        waiting=parsed.total(WAITING),
        kv_cache_usage=parsed.total(kv_name) if kv_name else None,
        ttft_sum_s=ttft_sum,
        ttft_count=ttft_count,
        tpot_sum_s=tpot_sum,
        tpot_count=tpot_count,
        spec_drafts=parsed.total(SPEC_DRAFTS),
        spec_draft_tokens=parsed.total(SPEC_DRAFT_TOKENS),
        spec_accepted=parsed.total(SPEC_ACCEPTED),
        spec_accepted_per_pos=ordered,
    )


def _delta(prev: float | None, cur: float | None) -> float | None:
    """Counter increase; a counter that went down means the server restarted, so count from zero."""
    if cur is None:
        return None
    if prev is None or cur < prev:
        return cur
    return cur - prev


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def load_between(prev: VLLMSnapshot | None, cur: VLLMSnapshot) -> ServerLoad:
    """Load over the interval prev -> cur; with no prev, over the server's whole life (cumulative)."""

    def d(attr: str) -> float | None:
        return _delta(getattr(prev, attr) if prev else None, getattr(cur, attr))

    ttft = _ratio(d("ttft_sum_s"), d("ttft_count"))
    tpot = _ratio(d("tpot_sum_s"), d("tpot_count"))
    drafts = d("spec_drafts")
    draft_tokens = d("spec_draft_tokens")
    accepted = d("spec_accepted")
    per_pos: tuple[float, ...] = ()
    if cur.spec_accepted_per_pos and drafts:
        before = prev.spec_accepted_per_pos if prev else ()
        per_pos = tuple(
            (_delta(before[j] if j < len(before) else None, v) or 0.0) / drafts
            for j, v in enumerate(cur.spec_accepted_per_pos)
        )
    mean_len = _ratio(accepted, drafts)
    return ServerLoad(
        time_s=cur.time_s,
        running=cur.running,
        waiting=cur.waiting,
        kv_cache_usage=cur.kv_cache_usage,
        ttft_ms=None if ttft is None else 1000.0 * ttft,
        tpot_ms=None if tpot is None else 1000.0 * tpot,
        acceptance_rate=_ratio(accepted, draft_tokens),
        mean_acceptance_length=None if mean_len is None else 1.0 + mean_len,
        acceptance_per_pos=per_pos,
    )
