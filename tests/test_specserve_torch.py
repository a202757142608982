"""The torch profiler on CPU with tiny random-weight decoders (skipped without torch)."""

from __future__ import annotations

import pytest

from uniscale_lc.specserve.planner import plan
from uniscale_lc.specserve.torch_profiler import DecoderDims, profile_pair

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.timeout(60)

TINY_TARGET = DecoderDims("tiny-target", hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=97)
TINY_DRAFT = DecoderDims("tiny-draft", hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, vocab=97)


def test_profile_pair_builds_a_valid_profile_the_planner_accepts() -> None:
    profile = profile_pair(TINY_TARGET, TINY_DRAFT, [0.8, 0.6, 0.4], batch_sizes=(1, 2, 4), max_k=2,
                           context_len=16, iters=2)
    assert profile.batch_sizes == [1, 2, 4] and len(profile.draft_ms) == 3
    # B * (k + 1) for B in {1, 2, 4}, k in {0, 1, 2}: the distinct token counts.
    assert profile.verify_tokens == [1, 2, 3, 4, 6, 8, 12]
    assert all(a <= b for a, b in zip(profile.verify_ms, profile.verify_ms[1:], strict=False))
    assert all(ms > 0 for ms in profile.draft_ms + profile.verify_ms)
    assert not profile.synthetic and "torch" in profile.provenance
    spec_plan = plan(profile, slo_tpot_ms=None, max_k=2, max_batch_size=8)
    assert len(spec_plan.choices) == 8
