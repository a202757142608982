"""One suite, both transports: the openai SDK fast path and litellm must behave the same to ModelClient's callers.

Every test runs twice against the loopback server, once per transport, and checks from the server's side
(the User-Agent) that the request really went the way the parameter says.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from uniscale_lc.client import ModelClient, RetryPolicy, StreamDelta
from uniscale_lc.errors import (
    ConfigError,
    ModelCallError,
    ModelTimeoutError,
    RateLimitedError,
    RequestRejectedError,
)
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel
from uniscale_lc.transport_openai import openai_request, served_model_name

pytest.register_assert_rewrite("fixtures_server")
from fixtures_server import FIXED_ANSWER, spec_for  # noqa: E402

pytest_plugins = ("fixtures_server",)
pytestmark = pytest.mark.timeout(60)

USER = [{"role": "user", "content": "say something nice"}]  # 3 prompt tokens on the server
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
SECRET_ENV = "UNISCALE_TEST_TRANSPORT_KEY"
SECRET = "sk-uniscaleTRANSPORTsecret0123456789abcdef"
# What each transport's HTTP client calls itself.
USER_AGENT_PREFIX = {"auto": "AsyncOpenAI/Python", "litellm": "litellm/"}


@pytest.fixture(params=["auto", "litellm"], ids=["openai-sdk", "litellm"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client(transport: str, fast_retry: RetryPolicy) -> Iterator[ModelClient]:
    yield ModelClient(retry=fast_retry, seed=0, transport=transport)


def went_through(server: OpenAIServer, model: str, transport: str) -> bool:
    return server.last_request_headers(model).get("User-Agent", "").startswith(USER_AGENT_PREFIX[transport])


# ---- pure parts -------------------------------------------------------------------------------------------


def test_which_models_take_the_sdk_path() -> None:
    assert served_model_name("hosted_vllm/Qwen/Qwen2.5-7B", "hosted_vllm") == "Qwen/Qwen2.5-7B"
    assert served_model_name("openai/gpt-4o", "openai") == "gpt-4o"
    assert served_model_name("gpt-4o-mini", "openai") == "gpt-4o-mini"
    assert served_model_name("anthropic/claude-3-5-haiku", "anthropic") is None
    assert served_model_name("ollama/llama3", "ollama") is None
    assert served_model_name("whatever", None) is None


def test_resolved_targets_pick_the_transport() -> None:
    base = "http://127.0.0.1:9/v1"
    auto, litellm_only = ModelClient(), ModelClient(transport="litellm")
    local = ModelSpec(model="Qwen/Qwen2.5-7B", api_base=base, gpu_usd_per_hour=0.0)
    assert auto._target(local).served_model == "Qwen/Qwen2.5-7B"
    assert auto._target(ModelSpec(model="gpt-4o-mini")).served_model == "gpt-4o-mini"
    assert (
        auto._target(
            ModelSpec(model="anthropic/claude-x", input_usd_per_mtok=1, output_usd_per_mtok=5)
        ).served_model
        is None
    )
    assert litellm_only._target(local).served_model is None
    with pytest.raises(ConfigError, match="transport"):
        ModelClient(transport="grpc")


def test_openai_request_mapping() -> None:
    kwargs = {
        "model": "hosted_vllm/m",
        "messages": USER,
        "timeout": 5.0,
        "max_retries": 0,
        "api_base": "http://127.0.0.1:9/v1",
        "api_key": SECRET,
        "max_tokens": 10,
        "top_k": 3,
        "seed": 1,
    }
    request = openai_request("m", kwargs)
    assert request == {
        "model": "m",
        "messages": USER,
        "timeout": 5.0,
        "max_tokens": 10,
        "seed": 1,
        "extra_body": {"top_k": 3},
    }
    # OpenAI's own API takes max_completion_tokens (its reasoning models refuse max_tokens).
    hosted = openai_request("gpt-4o-mini", {**kwargs, "api_base": None, "top_k": None} | {"top_k": 3})
    assert hosted["max_completion_tokens"] == 10 and "max_tokens" not in hosted


# ---- over HTTP, both transports ---------------------------------------------------------------------------


async def test_complete_usage_and_options(
    openai_server: OpenAIServer, client: ModelClient, transport: str
) -> None:
    spec = spec_for(openai_server, "fixed")
    result = await client.acomplete(spec, USER, temperature=0.5, max_tokens=50, stop=["zzz"])
    assert went_through(openai_server, "fixed", transport)
    assert result.texts == [FIXED_ANSWER] and result.model == "fixed"
    assert result.choices[0].finish_reason == "stop" and result.choices[0].logprobs is None
    usage = result.usage
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"], usage["calls"]) == (
        3,
        4,
        7,
        1,
    )
    body = openai_server.last_request("fixed")
    assert body is not None and body["model"] == "fixed"
    assert body["temperature"] == 0.5 and body["max_tokens"] == 50 and body["stop"] == ["zzz"]
    assert "n" not in body


async def test_n_logprobs_and_provider_options(
    openai_server: OpenAIServer, client: ModelClient, transport: str
) -> None:
    result = await client.acomplete(
        spec_for(openai_server, "fixed"), USER, n=3, logprobs=True, extra={"top_logprobs": 2, "top_k": 5}
    )
    assert went_through(openai_server, "fixed", transport)
    assert result.texts == [FIXED_ANSWER] * 3 and openai_server.request_count("fixed") == 1
    assert result.usage["output_tokens"] == 12
    assert all(choice.logprobs is not None and len(choice.logprobs) == 4 for choice in result.choices)
    body = openai_server.last_request("fixed")
    assert body is not None and body["n"] == 3 and body["logprobs"] is True
    assert body["top_logprobs"] == 2 and body["top_k"] == 5  # a vLLM option travels in the body


async def test_tool_calls(openai_server: OpenAIServer, client: ModelClient, transport: str) -> None:
    result = await client.acomplete(spec_for(openai_server, "tools"), USER, tools=TOOLS, tool_choice="auto")
    assert went_through(openai_server, "tools", transport)
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.text == ""
    assert choice.tool_calls is not None
    [call] = choice.tool_calls
    assert type(call) is dict and call["type"] == "function" and call["id"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    body = openai_server.last_request("tools")
    assert body is not None and body["tools"] == TOOLS and body["tool_choice"] == "auto"


async def test_stream_text_logprobs_usage(
    openai_server: OpenAIServer, client: ModelClient, transport: str
) -> None:
    deltas = [d async for d in client.astream(spec_for(openai_server, "fixed"), USER, logprobs=True)]
    assert went_through(openai_server, "fixed", transport)
    assert all(isinstance(d, StreamDelta) for d in deltas)
    assert "".join(d.text for d in deltas) == FIXED_ANSWER
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    assert sum(len(d.logprobs or []) for d in deltas) == 4
    final = deltas[-1]
    assert final.usage is not None and (final.usage["input_tokens"], final.usage["output_tokens"]) == (3, 4)
    body = openai_server.last_request("fixed")
    assert body is not None and body["stream"] is True and body["stream_options"] == {"include_usage": True}


async def test_stream_tool_calls(openai_server: OpenAIServer, client: ModelClient, transport: str) -> None:
    deltas = [d async for d in client.astream(spec_for(openai_server, "tools"), USER, tools=TOOLS)]
    assert went_through(openai_server, "tools", transport)
    calls = [call for d in deltas for call in (d.tool_calls or [])]
    assert calls and all(call.get("index") == 0 for call in calls)
    assert calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(call["function"]["arguments"] or "" for call in calls)
    assert json.loads(arguments) == {"city": "Paris"}
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["tool_calls"]


async def test_stream_retried_before_first_delta_only(
    openai_server: OpenAIServer, client: ModelClient, transport: str
) -> None:
    spec = spec_for(openai_server, "fixed")
    openai_server.set_failure("fixed", "500", count=1)
    assert "".join([d.text async for d in client.astream(spec, USER)]) == FIXED_ANSWER
    assert openai_server.request_count("fixed") == 2 and went_through(openai_server, "fixed", transport)
    openai_server.reset_stats()
    openai_server.set_failure("fixed", "truncated_stream")
    received: list[str] = []
    with pytest.raises(ModelCallError) as info:
        async for delta in client.astream(spec, USER):
            received.append(delta.text)
    assert received and info.value.retryable and openai_server.request_count("fixed") == 1


async def test_429_waits_retry_after_then_gives_up_typed(
    make_server: Any, client: ModelClient, transport: str
) -> None:
    server = make_server([SimulatedModel("m", "x", retry_after_s=0.2)])
    server.set_failure("m", "429", count=2)
    started = time.perf_counter()
    assert (await client.acomplete(spec_for(server, "m"), USER)).texts == ["x"]
    assert 0.4 <= time.perf_counter() - started < 2.0  # the server's 0.2 s twice, not the 0.01 s backoff
    assert server.request_count("m") == 3 and went_through(server, "m", transport)
    server.set_failure("m", "429")
    with pytest.raises(RateLimitedError) as info:
        await client.acomplete(spec_for(server, "m"), USER)
    assert info.value.status_code == 429 and info.value.retryable and "after 3 attempts" in str(info.value)


async def test_500_is_retried_400_is_not(
    openai_server: OpenAIServer, client: ModelClient, transport: str
) -> None:
    spec = spec_for(openai_server, "fixed")
    openai_server.set_failure("fixed", "500", count=1)
    assert (await client.acomplete(spec, USER)).texts == [FIXED_ANSWER]
    assert openai_server.request_count("fixed") == 2 and went_through(openai_server, "fixed", transport)
    openai_server.reset_stats()
    openai_server.set_failure("fixed", "400")
    with pytest.raises(ModelCallError) as info:
        await client.acomplete(spec, USER)
    assert type(info.value) is RequestRejectedError
    assert info.value.status_code == 400 and not info.value.retryable
    assert openai_server.request_count("fixed") == 1


@pytest.mark.parametrize("failure", ["malformed_json", "empty_choices", "truncated_stream", "oversized"])
async def test_malformed_answers_are_retryable_errors(
    openai_server: OpenAIServer, client: ModelClient, transport: str, failure: str
) -> None:
    spec = spec_for(openai_server, "fixed")
    openai_server.set_failure("fixed", failure)  # type: ignore[arg-type]
    with pytest.raises(ModelCallError) as info:
        await client.acomplete(spec, USER, max_tokens=50)
    assert info.value.retryable and "malformed" in str(info.value)
    assert openai_server.request_count("fixed") == 3 and went_through(openai_server, "fixed", transport)


async def test_timeout_is_typed_and_bounded(make_server: Any, transport: str) -> None:
    server = make_server([SimulatedModel("hang", "x", failure="timeout", failure_rate=1.0)])
    client = ModelClient(
        retry=RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.01), transport=transport
    )
    started = time.perf_counter()
    with pytest.raises(ModelTimeoutError) as info:
        await client.acomplete(spec_for(server, "hang", timeout_s=0.3), USER)
    assert info.value.retryable and server.request_count("hang") == 2
    assert time.perf_counter() - started < 1.8  # the per-call timeout, not our looser guard
    assert went_through(server, "hang", transport)


def test_sync_calls_share_a_pool_on_the_background_loop(
    openai_server: OpenAIServer, client: ModelClient, transport: str
) -> None:
    spec = spec_for(openai_server, "echo")
    assert [client.complete(spec, USER).texts for _ in range(3)] == [["say something nice"]] * 3
    assert "".join(d.text for d in client.stream(spec, USER)) == "say something nice"
    assert went_through(openai_server, "echo", transport)
    if transport == "auto":
        assert sum(len(pools) for pools in client._openai._clients.values()) == 1


async def test_one_pooled_sdk_client_per_base_url_and_key(
    make_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = make_server([SimulatedModel("m", "x")]), make_server([SimulatedModel("m", "y")])
    client = ModelClient(transport="auto")
    monkeypatch.setenv(SECRET_ENV, SECRET)
    for _ in range(3):
        await client.acomplete(spec_for(first, "m"), USER)
        await client.acomplete(spec_for(second, "m"), USER)
        await client.acomplete(spec_for(first, "m", api_key_env=SECRET_ENV), USER)
    assert first.last_request_headers("m")["Authorization"] == f"Bearer {SECRET}"
    pools = [pool for pools in client._openai._clients.values() for pool in pools]
    assert len(pools) == 3
    assert all(SECRET not in repr(pool) for pool in pools)  # keyed by a digest, not the key
    await client.aclose()
    assert not client._openai._clients
