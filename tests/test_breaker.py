"""Circuit breakers: a model that keeps failing is skipped, probed after a cooldown, and restored on success."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pytest

pytest.register_assert_rewrite("fixtures_server")
from fixtures_server import spec_for  # noqa: E402

from uniscale_lc.breaker import BreakerConfig, CircuitBreakers  # noqa: E402
from uniscale_lc.chat_model import UniScaleChat  # noqa: E402
from uniscale_lc.client import ModelClient, RetryPolicy  # noqa: E402
from uniscale_lc.errors import ConfigError  # noqa: E402
from uniscale_lc.policy import FixedArm  # noqa: E402
from uniscale_lc.strategies.config import Single  # noqa: E402
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel  # noqa: E402

pytest_plugins = ("fixtures_server",)
pytestmark = pytest.mark.timeout(60)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_then_half_opens_after_cooldown_and_backs_off() -> None:
    clock = FakeClock()
    breakers = CircuitBreakers(BreakerConfig(failure_threshold=3, cooldown_s=5.0, max_cooldown_s=12.0), clock)
    assert not breakers.any_open()
    assert [breakers.record_failure("m") for _ in range(3)] == [False, False, True]
    assert not breakers.allow("m") and breakers.open_keys() == ["m"] and breakers.any_open()
    clock.now += 5.0
    assert breakers.allow("m")  # half-open: the next result decides
    assert breakers.record_failure("m")  # the probe failed: re-opened with a doubled cooldown
    clock.now += 9.9
    assert not breakers.allow("m")
    clock.now += 0.1
    assert breakers.allow("m")
    assert breakers.record_failure("m")
    assert breakers.snapshot()["m"]["cooldown_s"] == 12.0  # capped at max_cooldown_s
    clock.now += 12.0
    breakers.record_success("m")
    assert breakers.allow("m") and breakers.open_keys() == []
    assert [breakers.record_failure("m") for _ in range(3)] == [False, False, True]  # counting restarts


def test_success_resets_the_consecutive_count_and_other_models_are_independent() -> None:
    breakers = CircuitBreakers(BreakerConfig(failure_threshold=2), FakeClock())
    breakers.record_failure("a")
    breakers.record_success("a")
    assert not breakers.record_failure("a")
    assert breakers.record_failure("b") is False and breakers.record_failure("b") is True
    assert breakers.allow("a") and not breakers.allow("b")


def test_filter_never_blocks_every_candidate() -> None:
    breakers = CircuitBreakers(BreakerConfig(failure_threshold=1), FakeClock())
    breakers.record_failure("a")
    keys = {"a|single": "a", "b|single": "b"}
    assert breakers.filter(["a|single", "b|single"], keys) == (("b|single",), ["a|single"])
    breakers.record_failure("b")
    assert breakers.filter(["a|single", "b|single"], keys) == (("a|single", "b|single"), [])


def test_bad_config_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="failure_threshold"):
        BreakerConfig(failure_threshold=0)
    with pytest.raises(ConfigError, match="cooldown_s"):
        BreakerConfig(cooldown_s=10.0, max_cooldown_s=1.0)


def test_an_outage_costs_threshold_failures_then_the_healed_model_is_back_within_the_cooldown(
    make_server: Callable[[Sequence[SimulatedModel]], OpenAIServer],
) -> None:
    server = make_server([SimulatedModel("primary", "from primary"), SimulatedModel("backup", "from backup")])
    client = ModelClient(retry=RetryPolicy(max_attempts=1))
    client.complete(spec_for(server, "primary"), [{"role": "user", "content": "warm up"}])
    specs = [spec_for(server, name, timeout_s=5.0) for name in ("primary", "backup")]
    # FixedArm always prefers the primary: only the breaker keeps requests away from it during the outage.
    chat = UniScaleChat(
        models=specs,
        strategies=[Single()],
        client=client,
        policy=FixedArm("primary|single"),
        breaker=BreakerConfig(failure_threshold=2, cooldown_s=0.5),
    )
    server.set_failure("primary", "500")
    server.reset_stats()
    records = [chat.invoke(f"q{i}").response_metadata["uniscale"] for i in range(10)]
    assert all(record["arm"] == "backup|single" for record in records)  # every caller got an answer
    assert server.request_count("primary") == 2  # the threshold, then no more requests during the outage
    assert records[-1]["breaker_blocked"] == ["primary|single"]
    assert chat.stats()["breakers"]["primary"]["open"] is True

    server.set_failure("primary", None)  # the endpoint heals
    time.sleep(0.6)
    record = chat.invoke("after healing").response_metadata["uniscale"]
    assert record["arm"] == "primary|single" and record["breaker_blocked"] == []
    assert chat.stats()["breakers"]["primary"]["open"] is False
