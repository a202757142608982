"""What a request teaches and counts: a caller's bad options teach nothing, a provider's bad data and every
failed call (even after the first streamed token) count against the arm that produced it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hostile_server import HostileServer
from reliability_helpers import BACKUP, PRIMARY, PRIMARY_ARM, make_router

from uniscale_lc.chat_model import UniScaleChat
from uniscale_lc.client import ModelClient, RetryPolicy
from uniscale_lc.errors import AllArmsFailedError, ConfigError, ModelCallError
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.testing.openai_server import OpenAIServer

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def server(fault_server: OpenAIServer, quiet_fallbacks: None) -> OpenAIServer:
    return fault_server


def _learnt(chat: UniScaleChat) -> list[np.ndarray]:
    state = chat.core.policy.state_dict()
    return [np.asarray(value).copy() for value in _arrays(state)]


def _arrays(tree: Any) -> Iterator[Any]:
    if isinstance(tree, dict):
        for key in sorted(tree):
            yield from _arrays(tree[key])
    elif isinstance(tree, list | tuple):
        for item in tree:
            yield from _arrays(item)
    elif isinstance(tree, np.ndarray | int | float):
        yield tree


BAD_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("seed-object", {"seed": object()}),
    ("logit_bias-nan", {"logit_bias": {"50256": math.nan}}),
    ("response_format-set", {"response_format": {"type": "json_object", "extra": {1, 2}}}),
    ("extra-bytes", {"user": b"me"}),
    ("logit_bias-int-keys", {"logit_bias": {50256: -100}}),
    (
        "tool-schema-set",
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"enum": {"a", "b"}}}}]},
    ),
    (
        "tool-schema-bytes",
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"default": b"x"}}}]},
    ),
    ("tool-without-function", {"tools": [{"type": "function", "name": "f"}]}),
    ("temperature-nan", {"temperature": math.nan}),
    ("max_tokens-negative", {"max_tokens": -3}),
]


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
@pytest.mark.parametrize(("name", "options"), BAD_OPTIONS, ids=[name for name, _ in BAD_OPTIONS])
def test_options_no_provider_could_take_are_refused_before_any_call(
    server: OpenAIServer, name: str, options: dict[str, Any], stream: bool
) -> None:
    router = make_router(server)
    before = _learnt(router.chat)
    with pytest.raises(ConfigError) as caught:
        if stream:
            list(router.chat.stream("what is six times seven?", **options))
        else:
            router.chat.invoke("what is six times seven?", **options)
    assert len(str(caught.value)) < 400
    assert server.request_count(PRIMARY) == 0 and server.request_count(BACKUP) == 0
    stats = router.chat.stats()
    assert all(arm["failures"] == 0 for arm in stats["arms"].values()), stats["arms"]
    assert not any(breaker.get("consecutive_failures") for breaker in stats["breakers"].values())
    after = _learnt(router.chat)
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True)), "a refused request taught"
    # The same chat still answers a well-formed request.
    assert router.chat.invoke("what is six times seven?").content


def test_failures_after_the_first_streamed_token_count_toward_the_breaker(server: OpenAIServer) -> None:
    router = make_router(server)
    server.set_failure(PRIMARY, "truncated_stream")
    outcomes = []
    for index in range(8):  # pinned to the primary: every stream is cut after its first tokens
        try:
            list(router.chat.stream(f"question {index}: six times seven?", model=PRIMARY))
            outcomes.append("answer")
        except AllArmsFailedError:
            outcomes.append("blocked")  # the open breaker keeps the request off the broken model
        except ModelCallError:
            outcomes.append("cut")
    breaker = router.chat.stats()["breakers"].get(PRIMARY, {})
    print(f"\n8 streams pinned to a primary cut mid-stream: {outcomes}; breaker {breaker}")
    assert outcomes[:3] == ["cut", "cut", "cut"]
    assert breaker.get("times_opened", 0) >= 1
    assert router.chat.stats()["arms"][PRIMARY_ARM]["failures"] == outcomes.count("cut")


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    with HostileServer() as running:
        yield running


@pytest.mark.parametrize("usage", [{"prompt_tokens": -5, "completion_tokens": 2}, {"prompt_tokens": 10**400}])
def test_bad_usage_from_a_provider_falls_back_then_is_one_typed_error(
    hostile: HostileServer, usage: dict[str, Any]
) -> None:
    hostile.usage = usage
    try:
        specs = [
            ModelSpec(model="usage", api_base=hostile.api_base, timeout_s=2.0, gpu_usd_per_hour=0.0),
            ModelSpec(model="ok", api_base=hostile.api_base, timeout_s=2.0, gpu_usd_per_hour=0.0),
        ]
        chat = UniScaleChat(models=specs, client=ModelClient(retry=RetryPolicy(max_attempts=1), seed=0))
        for index in range(4):
            assert chat.invoke(f"q{index}").content == "fine"
        assert chat.stats()["arms"]["ok|single"]["pulls"] == 4
        only_bad = UniScaleChat(
            models=specs[:1], client=ModelClient(retry=RetryPolicy(max_attempts=1), seed=0)
        )
        with pytest.raises(AllArmsFailedError) as caught:
            only_bad.invoke("q")
        assert "usage." in str(caught.value)
        # Streamed, the text has reached the caller before the usage: it stands, its tokens are estimated.
        streamed = "".join(str(chunk.content) for chunk in only_bad.stream("q"))
        assert streamed.strip() == "fine"
        arm = only_bad.stats()["arms"]["usage|single"]
        assert arm["pulls"] == 1 and 0 <= arm["total_cost_usd"] < 1.0
    finally:
        hostile.usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
