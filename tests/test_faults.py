"""Faults: a model that times out, answers 500 or sends garbage gives way to the next arm, and the policy
learns the failure; when every arm tried fails the caller gets AllArmsFailedError with the typed causes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

pytest.register_assert_rewrite("fixtures_server")
from fixtures_server import spec_for  # noqa: E402

from uniscale_lc.chat_model import UniScaleChat  # noqa: E402
from uniscale_lc.client import ModelClient, RetryPolicy  # noqa: E402
from uniscale_lc.errors import AllArmsFailedError, ModelCallError, ModelTimeoutError  # noqa: E402
from uniscale_lc.policy import FixedArm, LinUCB  # noqa: E402
from uniscale_lc.strategies.config import MajorityVote, Single  # noqa: E402
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel  # noqa: E402

pytest_plugins = ("fixtures_server",)
pytestmark = pytest.mark.timeout(60)

MakeServer = Callable[[Sequence[SimulatedModel]], OpenAIServer]
GOOD_ANSWER = "the answer is 42"


@pytest.fixture
def server(make_server: MakeServer) -> OpenAIServer:
    return make_server(
        [
            SimulatedModel("good", GOOD_ANSWER),
            SimulatedModel("hangs", "never sent", failure="timeout", failure_rate=1.0, hang_s=5.0),
            SimulatedModel("errors", "never sent", failure="500", failure_rate=1.0),
            SimulatedModel("garbage", "never sent", failure="malformed_json", failure_rate=1.0),
        ]
    )


@pytest.fixture
def client(server: OpenAIServer) -> ModelClient:
    # One attempt per call: the fallback, not the retry loop, is under test here (and it keeps tests fast).
    client = ModelClient(retry=RetryPolicy(max_attempts=1))
    # The first litellm call in a process sets up its HTTP machinery, which can take longer than the short
    # timeouts below; make it here so that a timeout in a test is always the server's doing.
    client.complete(spec_for(server, "good"), [{"role": "user", "content": "warm up"}])
    server.reset_stats()
    return client


def make_chat(
    server: OpenAIServer, client: ModelClient, names: Sequence[str], **overrides: Any
) -> UniScaleChat:
    specs = [spec_for(server, name, timeout_s=0.4) for name in names]
    return UniScaleChat(models=specs, strategies=[Single()], client=client, **overrides)


@pytest.mark.parametrize(
    ("broken", "error_type"),
    [("hangs", "ModelTimeoutError"), ("errors", "ModelCallError"), ("garbage", "ModelCallError")],
)
def test_a_failing_arm_falls_back_and_the_failure_is_learnt(
    server: OpenAIServer, client: ModelClient, broken: str, error_type: str
) -> None:
    policy = FixedArm(f"{broken}|single")  # always tries the broken arm first
    chat = make_chat(server, client, [broken, "good"], policy=policy)
    message = chat.invoke("what is six times seven?")
    assert message.text == GOOD_ANSWER
    record = message.response_metadata["uniscale"]
    assert record["arm"] == "good|single" and message.response_metadata["model_name"] == "good"
    assert [f["arm"] for f in record["fallbacks"]] == [f"{broken}|single"]
    assert record["fallbacks"][0]["error"] == error_type
    assert server.request_count(broken) == 1 and server.request_count("good") == 1
    # The failure reached the policy as quality 0 for the broken arm's decision.
    assert policy.pulls == {f"{broken}|single": 1} and policy.reward_sums[f"{broken}|single"] == 0.0
    stats = chat.stats()["arms"]
    assert stats[f"{broken}|single"]["failures"] == 1 and stats["good|single"]["pulls"] == 1
    assert chat.stats()["pending"] == 1  # only the answered decision waits for feedback


async def test_async_and_streaming_paths_fall_back_too(server: OpenAIServer, client: ModelClient) -> None:
    chat = make_chat(server, client, ["errors", "good"], policy=FixedArm("errors|single"))
    message = await chat.ainvoke("q")
    assert message.text == GOOD_ANSWER and message.response_metadata["uniscale"]["fallbacks"]
    chunks = [chunk async for chunk in chat.astream("q")]
    assert "".join(str(c.content) for c in chunks) == GOOD_ANSWER
    assert chunks[-1].response_metadata["uniscale"]["fallbacks"][0]["arm"] == "errors|single"
    sync_chunks = list(chat.stream("q"))
    assert "".join(str(c.content) for c in sync_chunks) == GOOD_ANSWER


def test_a_failing_scaled_arm_falls_back(server: OpenAIServer, client: ModelClient) -> None:
    specs = [spec_for(server, "errors", timeout_s=0.4), spec_for(server, "good", timeout_s=0.4)]
    chat = UniScaleChat(
        models=specs,
        strategies=[MajorityVote(n=3)],
        client=client,
        policy=FixedArm("errors|majority_vote(n=3)"),
    )
    message = chat.invoke("q")
    assert message.text == GOOD_ANSWER
    assert message.response_metadata["uniscale"]["details"]["votes"] == {"42": 3}


def test_all_arms_failing_raises_with_every_typed_error(server: OpenAIServer, client: ModelClient) -> None:
    chat = make_chat(server, client, ["hangs", "errors", "garbage"], max_fallbacks=5)
    with pytest.raises(AllArmsFailedError, match="all 3 arms tried failed") as caught:
        chat.invoke("q")
    error = caught.value
    assert sorted(arm for arm, _ in error.errors) == ["errors|single", "garbage|single", "hangs|single"]
    assert all(isinstance(cause, ModelCallError) for _, cause in error.errors)
    assert any(isinstance(cause, ModelTimeoutError) for _, cause in error.errors)
    assert error.__cause__ is error.errors[-1][1]  # the last typed error is chained
    assert chat.stats()["failed_requests"] == 1 and chat.stats()["pending"] == 0


def test_fallbacks_are_bounded_by_max_fallbacks(server: OpenAIServer, client: ModelClient) -> None:
    chat = make_chat(
        server, client, ["errors", "garbage", "good"], max_fallbacks=1, policy=FixedArm("errors|single")
    )
    # FixedArm falls back to the first remaining candidate: garbage. Then the budget of one fallback is spent.
    with pytest.raises(AllArmsFailedError) as caught:
        chat.invoke("q")
    assert [arm for arm, _ in caught.value.errors] == ["errors|single", "garbage|single"]
    assert server.request_count("good") == 0


async def test_all_arms_failing_in_a_stream_raises(server: OpenAIServer, client: ModelClient) -> None:
    # Not "garbage": over a stream, litellm drops the malformed chunk and reports a clean, empty finish.
    chat = make_chat(server, client, ["errors", "hangs"])
    with pytest.raises(AllArmsFailedError):
        async for _ in chat.astream("q"):
            pass


async def test_linucb_learns_to_avoid_a_broken_endpoint(server: OpenAIServer, client: ModelClient) -> None:
    chat = make_chat(server, client, ["errors", "good"], policy=LinUCB(alpha=0.5), cost_weight=0.0)
    first_choice_broken = []
    for i in range(30):
        message = await chat.ainvoke(f"question number {i}")
        assert message.text == GOOD_ANSWER  # the caller always gets an answer
        first_choice_broken.append(bool(message.response_metadata["uniscale"]["fallbacks"]))
        await chat.afeedback(message, 1.0)
    assert sum(first_choice_broken[-10:]) == 0  # after a few failures the broken arm is not tried first
    assert chat.stats()["arms"]["errors|single"]["failures"] == sum(first_choice_broken)
