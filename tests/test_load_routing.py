"""Load-aware routing: live server load reaches the policy's context and gates arms that would break the SLO."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from uniscale_lc import ConfigError, ModelSpec, Single, UniScaleChat
from uniscale_lc.features import HashingFeaturizer
from uniscale_lc.serving import LoadSignals, ServerMonitor
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel


@pytest.fixture()
def two_servers() -> Iterator[tuple[OpenAIServer, OpenAIServer]]:
    fast = OpenAIServer(models={"fast": SimulatedModel("fast", answer="The answer is 4.")}).start()
    slow = OpenAIServer(models={"slow": SimulatedModel("slow", answer="The answer is 4.")}).start()
    try:
        yield fast, slow
    finally:
        fast.stop()
        slow.stop()


def _chat(fast: OpenAIServer, slow: OpenAIServer, slow_tpot_ms: list[float], **extra: object) -> UniScaleChat:
    monitors = {server.api_base: ServerMonitor(server.url, timeout_s=5.0) for server in (fast, slow)}
    for monitor in monitors.values():
        monitor.scrape()
    signals = LoadSignals(
        monitors,
        tpot_models={fast.api_base: lambda running: 20.0, slow.api_base: lambda running: slow_tpot_ms[0]},
    )
    specs = [
        ModelSpec(model="hosted_vllm/fast", api_base=fast.api_base, gpu_usd_per_hour=2.0, timeout_s=30),
        # The slow server is made cheaper so that, ungated, the policy would prefer it.
        ModelSpec(model="hosted_vllm/slow", api_base=slow.api_base, gpu_usd_per_hour=0.1, timeout_s=30),
    ]
    return UniScaleChat(models=specs, strategies=[Single()], load_signals=signals, **extra)  # type: ignore[arg-type]


def test_gate_skips_arms_predicted_to_break_the_slo_and_says_so(two_servers) -> None:
    fast, slow = two_servers
    slow_tpot = [200.0]
    chat = _chat(fast, slow, slow_tpot, slo_tpot_ms=50.0, cost_weight=1.0)
    for _ in range(6):
        record = chat.invoke("What is 2 + 2?").response_metadata["uniscale"]
        assert record["arm"] == "hosted_vllm/fast|single"
        assert record["slo_gate"]["acted"] is True
        assert record["slo_gate"]["gated_arms"] == ["hosted_vllm/slow|single"]
        assert record["slo_gate"]["predicted_tpot_ms"][slow.api_base] == pytest.approx(200.0)
    assert slow.request_count("slow") == 0

    slow_tpot[0] = 10.0  # the slow server recovers: the gate stands down
    record = chat.invoke("What is 2 + 2?").response_metadata["uniscale"]
    assert record["slo_gate"]["acted"] is False
    assert record["slo_gate"]["gated_arms"] == []


def test_per_request_slo_overrides_the_default(two_servers) -> None:
    fast, slow = two_servers
    chat = _chat(fast, slow, [200.0], slo_tpot_ms=50.0)
    record = chat.invoke("What is 2 + 2?", slo_tpot_ms=500.0).response_metadata["uniscale"]
    assert record["slo_gate"]["slo_tpot_ms"] == 500.0
    assert record["slo_gate"]["acted"] is False


def test_load_features_extend_the_policy_context(two_servers) -> None:
    fast, slow = two_servers
    chat = _chat(fast, slow, [30.0])
    featurizer_dim = HashingFeaturizer().dim
    assert chat._policy.context_dim == featurizer_dim + LoadSignals.feature_dim
    message = chat.invoke("What is 2 + 2?")
    record = message.response_metadata["uniscale"]
    assert record["slo_gate"] is None  # no SLO configured: features only
    (pending,) = [p for p in chat.pending_decisions.pending() if p.decision_id == record["decision_id"]]
    decision = pending.decision
    load_part = decision.context[featurizer_dim:]
    # Mean predicted TPOT of the two servers, (20 + 30) / 2, over the default 100 ms scale.
    assert load_part[4] == pytest.approx(0.25)
    assert chat.explain("What is 2 + 2?")[0]["arm"] in chat.arm_space.ids


def test_slo_without_load_signals_is_a_clear_error() -> None:
    spec = ModelSpec(model="gpt-4o-mini")
    with pytest.raises(ConfigError, match="slo_tpot_ms"):
        UniScaleChat(models=[spec], slo_tpot_ms=40.0)
    with pytest.raises(ConfigError, match="slo_tpot_ms"):
        UniScaleChat(models=[spec], slo_tpot_ms=-1.0, load_signals=LoadSignals({}))
