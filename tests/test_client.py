"""ModelClient: pure decisions, then litellm talking over real HTTP to the scripted server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import random
import subprocess
import sys
import time
from typing import Any

import pytest

from uniscale_lc.client import (
    DUMMY_LOCAL_KEY,
    Completion,
    ModelClient,
    RetryPolicy,
    StreamDelta,
    call_cost_usd,
    gpu_cost_usd,
    litellm_model_name,
    parse_retry_after,
    plan_calls,
)
from uniscale_lc.errors import (
    ConfigError,
    ModelCallError,
    ModelTimeoutError,
    RateLimitedError,
    RequestRejectedError,
)
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.redact import redact
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel

pytest.register_assert_rewrite("fixtures_server")  # before its import, so its asserts are rewritten too
from fixtures_server import FIXED_ANSWER, spec_for  # noqa: E402

# Fixtures (make_server, openai_server, fast_retry, model_client) come from tests/fixtures_server.py.
pytest_plugins = ("fixtures_server",)
pytestmark = pytest.mark.timeout(60)

USER = [{"role": "user", "content": "say something nice"}]  # 3 prompt tokens on the server
SECRET_ENV = "UNISCALE_TEST_SECRET_KEY"
SECRET = "sk-uniscaleTESTsecret0123456789abcdef"
PROVIDERS = frozenset({"openai", "hosted_vllm", "anthropic", "ollama"})


# ---- pure functions ---------------------------------------------------------------------------------------


def test_plan_calls() -> None:
    assert plan_calls(1, False) == [1]
    assert plan_calls(4, True) == [4]
    assert plan_calls(3, False) == [1, 1, 1]
    with pytest.raises(ConfigError, match="n"):
        plan_calls(0, True)


def test_litellm_model_name_rule() -> None:
    base = "http://127.0.0.1:8000/v1"
    assert litellm_model_name("hosted_vllm/qwen", base, PROVIDERS) == "hosted_vllm/qwen"
    assert litellm_model_name("openai/gpt-4o-mini", base, PROVIDERS) == "openai/gpt-4o-mini"
    assert litellm_model_name("qwen-7b", base, PROVIDERS) == "hosted_vllm/qwen-7b"
    # An organisation prefix is not a provider: the whole name is the served model.
    assert litellm_model_name("Qwen/Qwen2.5-7B", base, PROVIDERS) == "hosted_vllm/Qwen/Qwen2.5-7B"
    assert litellm_model_name("gpt-4o-mini", None, PROVIDERS) == "gpt-4o-mini"
    assert litellm_model_name("anthropic/claude-x", None, PROVIDERS) == "anthropic/claude-x"


def test_parse_retry_after() -> None:
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "0.25"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    assert parse_retry_after(None) is None


def test_retry_policy_delays() -> None:
    policy = RetryPolicy(
        max_attempts=4, base_delay_s=1.0, max_delay_s=3.0, jitter=0.5, max_retry_after_s=10.0
    )
    rng = random.Random(0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 3.0)]:
        delay = policy.delay_s(attempt, None, rng)
        assert delay is not None and ceiling * 0.5 <= delay <= ceiling
    assert policy.delay_s(4, None, rng) is None  # attempts exhausted
    delay = policy.delay_s(1, 4.0, rng)
    assert delay is not None and 4.0 <= delay <= 4.5  # honours Retry-After, small jitter on top
    assert policy.delay_s(1, 11.0, rng) is None  # too long to wait: give up at once
    with pytest.raises(ConfigError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_cost_maths() -> None:
    assert call_cost_usd(1_000_000, 500_000, 0.15, 0.60) == pytest.approx(0.15 + 0.30)
    assert call_cost_usd(10, 10, 0.15, 0.60, litellm_cost_usd=0.5) == 0.5
    assert gpu_cost_usd(1.8, 2.0) == pytest.approx(0.001)
    assert gpu_cost_usd(-1.0, 2.0) == 0.0


def test_redact() -> None:
    text = f"failed with key {SECRET} and header Authorization: Bearer abc.def-123 and api_key='hunter22'"
    out = redact(text, [SECRET])
    assert SECRET not in out and "abc.def-123" not in out and "hunter22" not in out
    assert redact("sk-live_ABCDEFGH12", []) == "***"
    assert redact("model x", ["x"]) == "model x"  # too short to be a secret; words survive


def test_completion_from_texts_for_fakes() -> None:
    completion = Completion(texts=["a", "b"])
    assert [c.text for c in completion.choices] == ["a", "b"]
    assert completion.usage["calls"] == 0
    with pytest.raises(ValueError):
        Completion(texts=["a"], choices=completion.choices)


def test_import_does_not_import_litellm() -> None:
    code = (
        "import sys, uniscale_lc.client, uniscale_lc.testing.openai_server; print('litellm' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


# ---- over HTTP --------------------------------------------------------------------------------------------


async def test_complete_basic(openai_server: OpenAIServer, model_client: ModelClient) -> None:
    spec = spec_for(openai_server, "fixed")
    result = await model_client.acomplete(spec, USER, temperature=0.5, max_tokens=50, stop=["zzz"])
    assert result.texts == [FIXED_ANSWER]
    assert result.choices[0].finish_reason == "stop"
    assert result.choices[0].logprobs is None
    assert result.model == "fixed"
    usage = result.usage
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"], usage["calls"]) == (
        3,
        4,
        7,
        1,
    )
    assert usage["latency_s"] > 0 and usage["cost_usd"] == 0.0
    body = openai_server.last_request("fixed")
    assert body is not None
    assert body["temperature"] == 0.5 and body["max_tokens"] == 50 and body["stop"] == ["zzz"]
    assert "n" not in body


async def test_n_uses_provider_n(openai_server: OpenAIServer, model_client: ModelClient) -> None:
    result = await model_client.acomplete(spec_for(openai_server, "fixed"), USER, n=4)
    assert result.texts == [FIXED_ANSWER] * 4
    assert openai_server.request_count("fixed") == 1
    assert openai_server.last_requests("fixed")[0]["n"] == 4
    assert result.usage["calls"] == 1
    assert result.usage["input_tokens"] == 3 and result.usage["output_tokens"] == 16


async def test_n_falls_back_to_parallel_calls(
    openai_server: OpenAIServer, fast_retry: RetryPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    import litellm

    # A provider without `n` (anthropic, ollama): litellm's capability table is the only input that changes.
    original = litellm.get_supported_openai_params
    monkeypatch.setattr(
        litellm,
        "get_supported_openai_params",
        lambda **kw: [p for p in (original(**kw) or []) if p != "n"],
    )
    client = ModelClient(retry=fast_retry)
    result = await client.acomplete(spec_for(openai_server, "fixed"), USER, n=3)
    assert result.texts == [FIXED_ANSWER] * 3
    assert openai_server.request_count("fixed") == 3
    assert all("n" not in body for body in openai_server.last_requests("fixed"))
    assert result.usage["calls"] == 3
    assert result.usage["input_tokens"] == 9  # each call pays for the prompt


async def test_fewer_choices_than_n_are_topped_up(make_server: Any, model_client: ModelClient) -> None:
    server = make_server([SimulatedModel("ignores-n", "x y", max_n=1)])
    result = await model_client.acomplete(spec_for(server, "ignores-n"), USER, n=3)
    assert result.texts == ["x y"] * 3
    assert server.request_count("ignores-n") == 3  # one call with n=3, then two single top-ups
    assert result.usage["calls"] == 3


async def test_logprobs_and_extra(openai_server: OpenAIServer, model_client: ModelClient) -> None:
    result = await model_client.acomplete(
        spec_for(openai_server, "fixed"), USER, logprobs=True, extra={"top_logprobs": 2, "seed": 7}
    )
    logprobs = result.choices[0].logprobs
    assert logprobs is not None and len(logprobs) == 4 and all(lp <= 0 for lp in logprobs)
    body = openai_server.last_request("fixed")
    assert body is not None and body["logprobs"] is True and body["top_logprobs"] == 2 and body["seed"] == 7
    with pytest.raises(ConfigError, match="extra"):
        await model_client.acomplete(spec_for(openai_server, "fixed"), USER, extra={"timeout": 1000})


async def test_tool_calls_are_plain_dicts(openai_server: OpenAIServer, model_client: ModelClient) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    result = await model_client.acomplete(
        spec_for(openai_server, "tools"), USER, tools=tools, tool_choice="auto"
    )
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.text == ""
    assert choice.tool_calls is not None
    [call] = choice.tool_calls
    assert type(call) is dict and type(call["function"]) is dict
    assert call["type"] == "function" and call["id"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


async def test_stream(openai_server: OpenAIServer, model_client: ModelClient) -> None:
    deltas = [d async for d in model_client.astream(spec_for(openai_server, "fixed"), USER, logprobs=True)]
    assert all(isinstance(d, StreamDelta) for d in deltas)
    assert "".join(d.text for d in deltas) == FIXED_ANSWER
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["stop"]
    assert sum(len(d.logprobs or []) for d in deltas) == 4
    final = deltas[-1]
    assert final.usage is not None and final.text == ""
    assert (final.usage["input_tokens"], final.usage["output_tokens"], final.usage["calls"]) == (3, 4, 1)
    body = openai_server.last_request("fixed")
    assert body is not None and body["stream"] is True and body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("failure", ["malformed_json", "empty_choices"])
async def test_stream_broken_before_any_text_is_retried(
    openai_server: OpenAIServer, model_client: ModelClient, failure: str
) -> None:
    # litellm reports these streams as empty answers ending in "stop"; the client must not accept that.
    spec = spec_for(openai_server, "fixed")
    openai_server.set_failure("fixed", failure, count=1)  # type: ignore[arg-type]
    deltas = [d async for d in model_client.astream(spec, USER)]
    assert "".join(d.text for d in deltas) == FIXED_ANSWER
    assert openai_server.request_count("fixed") == 2
    openai_server.set_failure("fixed", failure)  # type: ignore[arg-type]
    with pytest.raises(ModelCallError, match="malformed") as info:
        async for _ in model_client.astream(spec, USER):
            pass
    assert info.value.retryable


def test_sync_stream(openai_server: OpenAIServer, model_client: ModelClient) -> None:
    deltas = list(model_client.stream(spec_for(openai_server, "fixed"), USER))
    assert "".join(d.text for d in deltas) == FIXED_ANSWER and deltas[-1].usage is not None


async def test_costs_from_spec_prices_litellm_and_gpu(make_server: Any, model_client: ModelClient) -> None:
    import litellm

    server = make_server(
        [SimulatedModel("gpt-4o-mini", "a b c"), SimulatedModel("local", "a b c", latency_s=0.1)]
    )
    # Explicit prices on the spec: tokens x prices.
    spec = spec_for(server, "local", input_usd_per_mtok=1.0, output_usd_per_mtok=2.0)
    usage = (await model_client.acomplete(spec, USER, n=2)).usage
    assert (usage["input_tokens"], usage["output_tokens"]) == (3, 6)
    assert usage["cost_usd"] == pytest.approx((3 * 1.0 + 6 * 2.0) / 1e6)
    # A model litellm prices (prices on the spec came from litellm's table): litellm's own figure.
    spec = ModelSpec(model="openai/gpt-4o-mini", api_base=server.api_base, timeout_s=5)
    usage = (await model_client.acomplete(spec, USER)).usage
    prompt_usd, completion_usd = litellm.cost_per_token(
        model="gpt-4o-mini", prompt_tokens=3, completion_tokens=3
    )
    assert usage["cost_usd"] == pytest.approx(prompt_usd + completion_usd)
    # Self-hosted: wall time x GPU price.
    spec = spec_for(server, "local", gpu_usd_per_hour=36.0)
    usage = (await model_client.acomplete(spec, USER)).usage
    assert usage["latency_s"] >= 0.1
    assert usage["cost_usd"] == pytest.approx(usage["latency_s"] * 36.0 / 3600.0)


async def test_retries_429_honouring_retry_after(
    openai_server: OpenAIServer, model_client: ModelClient
) -> None:
    openai_server.set_failure("fixed", "429", count=2)  # the model sends Retry-After: 0.2
    started = time.perf_counter()
    result = await model_client.acomplete(spec_for(openai_server, "fixed"), USER)
    elapsed = time.perf_counter() - started
    assert result.texts == [FIXED_ANSWER]
    assert openai_server.request_count("fixed") == 3
    assert 0.4 <= elapsed < 2.0  # waited the server's 0.2 s twice, not the policy's 0.01 s backoff
    assert result.usage["calls"] == 1


async def test_retries_500_then_succeeds(openai_server: OpenAIServer, model_client: ModelClient) -> None:
    openai_server.set_failure("fixed", "500", count=1)
    result = await model_client.acomplete(spec_for(openai_server, "fixed"), USER)
    assert result.texts == [FIXED_ANSWER]
    assert openai_server.request_count("fixed") == 2


async def test_rate_limit_gives_up_with_typed_error(make_server: Any, model_client: ModelClient) -> None:
    server = make_server([SimulatedModel("m", "x", failure="429", failure_rate=1.0, retry_after_s=0.05)])
    with pytest.raises(RateLimitedError) as info:
        await model_client.acomplete(spec_for(server, "m"), USER)
    assert info.value.status_code == 429 and info.value.retryable and info.value.model == "m"
    assert "after 3 attempts" in str(info.value)
    assert server.request_count("m") == 3
    # A Retry-After beyond the policy's limit is not waited for.
    server.set_failure("m", None)
    slow = make_server([SimulatedModel("m", "x", failure="429", failure_rate=1.0, retry_after_s=60)])
    started = time.perf_counter()
    with pytest.raises(RateLimitedError):
        await model_client.acomplete(spec_for(slow, "m"), USER)
    assert time.perf_counter() - started < 1.0 and slow.request_count("m") == 1


async def test_400_is_not_retried(openai_server: OpenAIServer, model_client: ModelClient) -> None:
    openai_server.set_failure("fixed", "400")
    with pytest.raises(ModelCallError) as info:
        await model_client.acomplete(spec_for(openai_server, "fixed"), USER)
    assert type(info.value) is RequestRejectedError
    assert info.value.status_code == 400 and not info.value.retryable
    assert openai_server.request_count("fixed") == 1


async def test_timeout_within_bound(make_server: Any) -> None:
    server = make_server([SimulatedModel("hang", "x", failure="timeout", failure_rate=1.0)])
    client = ModelClient(retry=RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.01))
    spec = spec_for(server, "hang", timeout_s=0.3)
    started = time.perf_counter()
    with pytest.raises(ModelTimeoutError) as info:
        await client.acomplete(spec, USER)
    elapsed = time.perf_counter() - started
    assert info.value.retryable
    assert server.request_count("hang") == 2
    assert 0.6 <= elapsed < 1.8  # two attempts bounded by litellm's timeout (our guard, 2x + 1 s, is looser)


@pytest.mark.parametrize("failure", ["malformed_json", "empty_choices", "truncated_stream"])
async def test_malformed_responses_become_model_call_errors(
    openai_server: OpenAIServer, model_client: ModelClient, failure: str
) -> None:
    spec = spec_for(openai_server, "fixed")
    openai_server.set_failure("fixed", failure)  # type: ignore[arg-type]
    with pytest.raises(ModelCallError) as info:
        await model_client.acomplete(spec, USER)
    assert info.value.retryable and "malformed" in str(info.value)
    assert openai_server.request_count("fixed") == 3
    openai_server.set_failure("fixed", failure, count=1)  # type: ignore[arg-type]
    assert (await model_client.acomplete(spec, USER)).texts == [FIXED_ANSWER]


async def test_connection_refused_is_retryable(model_client: ModelClient) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = ModelSpec(model="m", api_base=f"http://127.0.0.1:{port}/v1", gpu_usd_per_hour=0.0, timeout_s=2)
    with pytest.raises(ModelCallError) as info:
        await model_client.acomplete(spec, USER)
    assert info.value.retryable


async def test_concurrency_limit_is_respected(make_server: Any, model_client: ModelClient) -> None:
    server = make_server([SimulatedModel("m", "x", latency_s=0.15)])
    spec = spec_for(server, "m", max_concurrency=3)
    results = await asyncio.gather(*[model_client.acomplete(spec, USER) for _ in range(9)])
    assert len(results) == 9
    assert server.peak_in_flight("m") == 3
    # Parallel samples (no provider n) go through the same limit.
    server.reset_stats()
    await asyncio.gather(
        *[model_client.acomplete(spec_for(server, "m", max_concurrency=2), USER) for _ in range(6)]
    )
    assert server.peak_in_flight("m") <= 3  # the first spec's semaphore (model, api_base) is shared


async def test_sync_complete_inside_running_loop(
    openai_server: OpenAIServer, model_client: ModelClient
) -> None:
    asyncio.get_running_loop()  # this test body runs inside pytest-asyncio's loop
    result = model_client.complete(spec_for(openai_server, "fixed"), USER, n=2)
    assert result.texts == [FIXED_ANSWER] * 2
    # And the loop is still usable afterwards.
    assert (await model_client.acomplete(spec_for(openai_server, "fixed"), USER)).texts == [FIXED_ANSWER]


def test_sync_complete_without_loop(openai_server: OpenAIServer, model_client: ModelClient) -> None:
    assert model_client.complete(spec_for(openai_server, "echo"), USER).texts == ["say something nice"]


async def test_local_key_handling(
    openai_server: OpenAIServer, model_client: ModelClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    await model_client.acomplete(spec_for(openai_server, "fixed"), USER)
    assert openai_server.last_request_headers("fixed")["Authorization"] == f"Bearer {DUMMY_LOCAL_KEY}"
    monkeypatch.setenv(SECRET_ENV, SECRET)
    await model_client.acomplete(spec_for(openai_server, "fixed", api_key_env=SECRET_ENV), USER)
    assert openai_server.last_request_headers("fixed")["Authorization"] == f"Bearer {SECRET}"
    # A remote server whose key variable is missing fails before any request, naming the variable.
    monkeypatch.delenv(SECRET_ENV)
    remote = ModelSpec(
        model="m", api_base="http://10.255.255.1:9/v1", api_key_env=SECRET_ENV, gpu_usd_per_hour=0
    )
    with pytest.raises(ConfigError, match=SECRET_ENV):
        await model_client.acomplete(remote, USER)


async def test_served_model_name_with_organisation_prefix(
    make_server: Any, model_client: ModelClient
) -> None:
    server = make_server([SimulatedModel("Qwen/Qwen2.5-7B-Instruct", "hi")])
    result = await model_client.acomplete(spec_for(server, "Qwen/Qwen2.5-7B-Instruct"), USER)
    assert result.texts == ["hi"]
    assert server.request_count("Qwen/Qwen2.5-7B-Instruct") == 1


@pytest.mark.parametrize("failure", ["400", "500", "429", "timeout", "malformed_json"])
async def test_api_key_never_in_errors_or_logs(
    make_server: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failure: str,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    server = make_server([SimulatedModel("m", "x", failure=failure, failure_rate=1.0)])  # type: ignore[arg-type]
    spec = spec_for(server, "m", api_key_env=SECRET_ENV, timeout_s=0.3)
    client = ModelClient(retry=RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.01))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ModelCallError) as info:
        await client.acomplete(spec, USER)
    assert server.last_request_headers("m")["Authorization"] == f"Bearer {SECRET}"  # the key was really sent
    error = info.value
    assert error.__cause__ is None and error.__context__ is None  # no provider exception chained
    texts = [str(error), repr(error), *map(str, error.args), caplog.text]
    assert all(SECRET not in text for text in texts)
    ours = [r.getMessage() for r in caplog.records if r.name == "uniscale_lc.client"]
    assert any(str(error) == message for message in ours)  # the failure was logged, redacted
    if error.retryable:
        assert any("attempt 1/2 failed" in message for message in ours)


def test_key_shaped_strings_in_provider_messages_are_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    import litellm

    from uniscale_lc.client import _classify

    exc = litellm.BadRequestError(
        message=f"Incorrect API key provided: {SECRET}; header Bearer {SECRET}",
        model="m",
        llm_provider="openai",
    )
    failure = _classify(exc, [])
    error = failure.error("m", 1)
    assert "sk-" not in str(error) and SECRET not in str(error)
    assert error.status_code == 400 and not error.retryable
