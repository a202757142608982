"""The framework-free core used directly: OpenAI-format messages, sync and async, streaming, route-only
decisions, feedback by every key, persistence, and no LangChain import."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("fixtures_server")
from fixtures_server import spec_for  # noqa: E402

from uniscale_lc import Completion, CompletionChunk, Router, RouterConfig, RouteResult  # noqa: E402
from uniscale_lc.client import ModelClient  # noqa: E402
from uniscale_lc.errors import AllArmsFailedError, ConfigError, FeedbackError  # noqa: E402
from uniscale_lc.strategies.config import MajorityVote, Single  # noqa: E402
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel  # noqa: E402

pytest_plugins = ("fixtures_server",)
pytestmark = pytest.mark.timeout(60)

MakeServer = Callable[[Sequence[SimulatedModel]], OpenAIServer]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def server(make_server: MakeServer) -> OpenAIServer:
    return make_server(
        [
            SimulatedModel("a", "the answer is 42"),
            SimulatedModel("b", "it is 41"),
            SimulatedModel(
                "t", "no tool needed", tool_call={"name": "get_weather", "arguments": {"city": "Paris"}}
            ),
        ]
    )


@pytest.fixture
def make_router(server: OpenAIServer, model_client: ModelClient) -> Callable[..., Router]:
    def factory(**overrides: Any) -> Router:
        params: dict[str, Any] = {
            "models": [
                spec_for(server, "a", gpu_usd_per_hour=1.0),
                spec_for(server, "b", gpu_usd_per_hour=2.0),
            ],
            "client": model_client,
        }
        params.update(overrides)
        return Router(**params)

    return factory


def _pulls(router: Router) -> int:
    return sum(arm["pulls"] for arm in router.stats()["arms"].values())


# ----------------------------------------------------------------------------- answering


def test_complete_takes_openai_messages_and_returns_the_decision(make_router: Callable[..., Router]) -> None:
    router = make_router()
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "what is 6 x 7?"}]},
    ]
    completion = router.complete(messages, request_id="req-1")
    assert isinstance(completion, Completion)
    assert completion.text in ("the answer is 42", "it is 41")
    assert completion.model == completion.decision["model"]
    assert completion.decision["decision_id"] == completion.decision_id
    assert completion.decision["request_id"] == "req-1"
    assert completion.usage["calls"] == 1 and completion.usage["input_tokens"] > 0
    assert (
        completion.usage["total_tokens"]
        == completion.usage["input_tokens"] + completion.usage["output_tokens"]
    )
    assert completion.finish_reason == "stop" and completion.tool_calls == []
    assert router.stats()["requests"] == 1 and router.stats()["pending"] == 1


async def test_acomplete_runs_on_the_callers_loop_and_a_string_is_one_user_message(
    make_router: Callable[..., Router],
) -> None:
    router = make_router()
    completions = await asyncio.gather(*(router.acomplete(f"question {i}") for i in range(4)))
    assert len({c.decision_id for c in completions}) == 4
    assert router.stats()["requests"] == 4 == _pulls(router)


def test_model_option_pins_the_arm_and_unknown_model_is_the_callers_mistake(
    make_router: Callable[..., Router], server: OpenAIServer
) -> None:
    router = make_router()
    assert router.complete("q", model="b").text == "it is 41"
    before = server.request_count("a") + server.request_count("b")
    with pytest.raises(ConfigError, match="model: got 'zzz'"):
        router.complete("q", model="zzz")
    with pytest.raises(ConfigError, match=r"messages\[0\]\.role"):
        router.complete([{"role": "robot", "content": "hi"}])
    with pytest.raises(ConfigError, match="non-empty list"):
        router.complete([])
    assert server.request_count("a") + server.request_count("b") == before
    assert router.stats()["failed_requests"] == 0 and router.stats()["requests"] == 1


def test_tools_go_to_tool_capable_arms_and_come_back_in_openai_format(
    server: OpenAIServer, model_client: ModelClient
) -> None:
    router = Router(
        models=[spec_for(server, "a"), spec_for(server, "t", supports_tools=True)],
        client=model_client,
    )
    completion = router.complete("weather in Paris?", tools=[WEATHER_TOOL], tool_choice="required")
    assert completion.decision["arm"] == "t|single"
    [call] = completion.tool_calls
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_stream_yields_text_then_one_last_chunk_with_the_completion(
    make_router: Callable[..., Router],
) -> None:
    router = make_router()
    chunks = list(router.stream([{"role": "user", "content": "hello"}], request_id="s-1"))
    assert all(isinstance(chunk, CompletionChunk) for chunk in chunks)
    *pieces, last = chunks
    assert pieces and all(chunk.completion is None for chunk in pieces)
    assert last.completion is not None and last.text == ""
    assert "".join(chunk.text for chunk in pieces) == last.completion.text
    assert last.completion.decision["details"]["streamed"] is True
    assert last.completion.decision["request_id"] == "s-1"
    assert router.feedback("s-1", 1.0).decision_id == last.completion.decision_id


async def test_astream_of_a_voting_arm_is_one_chunk_then_the_completion(
    server: OpenAIServer, model_client: ModelClient
) -> None:
    router = Router(models=[spec_for(server, "a")], strategies=[MajorityVote(n=3)], client=model_client)
    chunks = [chunk async for chunk in router.astream("what is 6 x 7?")]
    assert len(chunks) == 2
    assert chunks[0].text == "the answer is 42" and chunks[0].completion is None
    completion = chunks[1].completion
    assert completion is not None and completion.usage["calls"] >= 1 and completion.decision["n"] == 3


def test_a_failing_arm_falls_back_and_is_taught_as_a_failure(
    make_router: Callable[..., Router], server: OpenAIServer
) -> None:
    router = make_router(breaker=None)
    server.set_failure("a", "500")
    server.set_failure("b", "500")
    with pytest.raises(AllArmsFailedError):
        router.complete("q")
    server.set_failure("a", None)
    completion = router.complete("q")
    assert completion.text == "the answer is 42"
    stats = router.stats()
    assert stats["failed_requests"] == 1 and stats["arms"]["b|single"]["failures"] >= 1


# ----------------------------------------------------------------------------- route-only and feedback


def test_route_calls_no_model_and_its_feedback_teaches_the_policy(
    make_router: Callable[..., Router], server: OpenAIServer
) -> None:
    router = make_router()
    route = router.route([{"role": "user", "content": "pick for me"}], request_id="r-1")
    assert isinstance(route, RouteResult)
    assert server.request_count("a") == server.request_count("b") == 0
    assert route.arm_id in router.arm_space.ids and route.model in (
        spec.model for spec in router.arm_space.models
    )
    assert route.record["decision_id"] == route.decision_id and route.record["details"] == {
        "route_only": True
    }
    assert route.predicted_cost_usd == route.record["predicted_cost_usd"]
    assert (
        router.stats()["routes"] == 1 and router.stats()["requests"] == 0 and router.stats()["pending"] == 1
    )
    updates_before = router.policy.state_dict()["per_arm"][route.arm_id]["updates"]
    result = router.feedback("r-1", 0.75)  # by request id
    assert result.decision_id == route.decision_id and result.quality == 0.75 and not result.duplicate
    assert router.policy.state_dict()["per_arm"][route.arm_id]["updates"] == updates_before + 1
    assert router.feedback(route, 0.75).duplicate  # the RouteResult itself is a key too


def test_route_honours_tools_and_model(server: OpenAIServer, model_client: ModelClient) -> None:
    router = Router(
        models=[spec_for(server, "a"), spec_for(server, "t", supports_tools=True)], client=model_client
    )
    assert router.route("weather?", tools=[WEATHER_TOOL]).arm_id == "t|single"
    assert router.route("q", model="a").arm_id == "a|single"


async def test_feedback_by_decision_id_run_id_request_id_and_completion(
    make_router: Callable[..., Router],
) -> None:
    router = make_router()
    by_id = await router.acomplete("one")
    by_run = await router.acomplete("two", run_id="11111111-2222-3333-4444-555555555555")
    by_request = await router.acomplete("three", request_id="client-7")
    by_object = await router.acomplete("four")
    assert (await router.afeedback(by_id.decision_id, 1.0)).decision_id == by_id.decision_id
    assert router.feedback("11111111-2222-3333-4444-555555555555", 0.0).decision_id == by_run.decision_id
    assert router.feedback("client-7", 0.5).decision_id == by_request.decision_id
    assert router.feedback(by_object, 0.25).decision_id == by_object.decision_id
    assert router.stats()["pending"] == 0
    with pytest.raises(FeedbackError, match=r"feedback\.score"):
        router.feedback(by_id, 3)
    with pytest.raises(FeedbackError, match=r"feedback\.key"):
        router.feedback("nope", 1.0)


def test_feedback_fn_gets_openai_messages_and_the_completion(make_router: Callable[..., Router]) -> None:
    seen: list[tuple[list[dict[str, Any]], Completion]] = []

    def grade(messages: list[dict[str, Any]], answer: Completion) -> float:
        seen.append((messages, answer))
        return 1.0 if "42" in answer.text else 0.0

    router = make_router(feedback_fn=grade)
    completion = router.complete("what is 6 x 7?")
    [(messages, answer)] = seen
    assert messages == [{"role": "user", "content": "what is 6 x 7?"}] and answer is completion
    assert router.stats()["pending"] == 0
    assert sum(arm["feedback"] for arm in router.stats()["arms"].values()) == 1


def test_state_survives_a_restart_and_pending_route_decisions_with_it(
    make_router: Callable[..., Router], tmp_path: Path
) -> None:
    path = str(tmp_path / "router.npz")
    first = make_router(state_path=path)
    first.complete("q")
    route = first.route("r", request_id="later")
    first.close()
    second = make_router(state_path=path)
    assert second.stats()["requests"] == 1 and second.stats()["routes"] == 1
    assert second.feedback("later", 1.0).decision_id == route.decision_id
    second.close()


# ----------------------------------------------------------------------------- configuration


def test_config_errors_name_the_router_field_and_a_router_config_builds_it(
    server: OpenAIServer, model_client: ModelClient
) -> None:
    with pytest.raises(ConfigError, match=r"^Router\.cost_weight: got -1"):
        Router(models=[spec_for(server, "a")], cost_weight=-1)
    with pytest.raises(ConfigError, match=r"^Router\.models: got no models"):
        Router()
    with pytest.raises(ConfigError, match=r"^Router\.openai_api_key: not a field; pass the key as api_key"):
        Router(models=[spec_for(server, "a")], openai_api_key="sk-secret")
    config = RouterConfig(models=[spec_for(server, "a")], client=model_client, cost_weight=0.5)
    router = Router(config)
    assert router.config is config and router.stats()["cost_weight"] == 0.5
    with pytest.raises(ConfigError, match="not both"):
        Router(config, cost_weight=0.1)


def test_explain_scores_every_arm_without_calling_a_model(
    make_router: Callable[..., Router], server: OpenAIServer
) -> None:
    router = make_router()
    rows = router.explain([{"role": "user", "content": "q"}])
    assert {row["arm"] for row in rows} == set(router.arm_space.ids)
    assert rows == sorted(rows, key=lambda row: -row["score"])
    assert server.request_count("a") == server.request_count("b") == 0


def test_importing_the_core_imports_no_langchain_and_no_litellm() -> None:
    code = (
        "import sys, uniscale_lc, uniscale_lc.router; from uniscale_lc import Router, Completion; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('langchain_core', 'litellm')))"
    )
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, check=True
    )
    assert out.stdout.strip() == "[]"


def test_a_chat_model_adapts_a_given_router(make_router: Callable[..., Router]) -> None:
    from uniscale_lc.chat_model import UniScaleChat

    router = make_router()
    chat = UniScaleChat(router=router)
    message = chat.invoke("what is 6 x 7?")
    assert chat.router is router and router.stats()["requests"] == 1
    assert message.response_metadata["uniscale"]["decision_id"] in router.pending_decisions
    assert router.feedback(message.response_metadata["uniscale"]["decision_id"], 1.0).quality == 1.0
    # Per-call fields may differ (a view on the same learner, as LangChain's configured copies are) ...
    view = UniScaleChat(router=router, cost_weight=0.3)
    assert view.router is router
    assert view.invoke("q").response_metadata["uniscale"]["cost_weight"] == pytest.approx(0.3)
    # ... anything else would need a router of its own.
    with pytest.raises(ConfigError, match=r"UniScaleChat\.router: give router"):
        UniScaleChat(router=router, max_fallbacks=5)


def test_a_single_arm_router_still_works_end_to_end(server: OpenAIServer, model_client: ModelClient) -> None:
    router = Router(models=[spec_for(server, "a")], strategies=[Single()], client=model_client)
    assert router.complete("hi").decision["arm"] == "a|single"
