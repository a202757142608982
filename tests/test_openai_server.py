"""The scripted OpenAI-compatible server, spoken to over real HTTP with aiohttp (no litellm here)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import aiohttp
import pytest

from uniscale_lc.testing.openai_server import (
    OpenAIServer,
    SimulatedModel,
    count_tokens,
    load_models,
    split_tokens,
)

pytest.register_assert_rewrite("fixtures_server")  # before its import, so its asserts are rewritten too
from fixtures_server import FIXED_ANSWER  # noqa: E402

# Fixtures (make_server, openai_server, ...) come from tests/fixtures_server.py, loaded as a plugin.
pytest_plugins = ("fixtures_server",)
pytestmark = pytest.mark.timeout(30)

USER = [{"role": "user", "content": "say something nice"}]


async def post(server: OpenAIServer, body: dict[str, Any], timeout_s: float = 5.0) -> tuple[int, Any, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
        session.post(f"{server.api_base}/chat/completions", json=body) as response,
    ):
        text = await response.text()
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            payload = text
        return response.status, payload, response.headers


async def sse_events(server: OpenAIServer, body: dict[str, Any]) -> list[Any]:
    """The `data:` payloads of a streamed response, `[DONE]` kept as the string."""
    events: list[Any] = []
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.post(f"{server.api_base}/chat/completions", json={**body, "stream": True}) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for raw in response.content:
            line = raw.decode().strip()
            if line.startswith("data: "):
                data = line[len("data: ") :]
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_token_helpers_round_trip() -> None:
    text = "the  cat\nsat "
    assert "".join(split_tokens(text)) == text
    assert count_tokens(text) == 3


async def test_completion_shape_and_usage(openai_server: OpenAIServer) -> None:
    status, payload, _ = await post(openai_server, {"model": "fixed", "messages": USER})
    assert status == 200
    assert payload["object"] == "chat.completion"
    assert payload["model"] == "fixed"
    [choice] = payload["choices"]
    assert choice["message"] == {"role": "assistant", "content": FIXED_ANSWER}
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    # Whitespace tokens: prompt "say something nice" = 3, answer "the answer is 42" = 4.
    assert payload["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert openai_server.request_count("fixed") == 1
    assert openai_server.last_request("fixed") == {"model": "fixed", "messages": USER}


async def test_n_choices_get_their_sample_index(make_server: Any) -> None:
    seen: list[int] = []

    def answer(messages: list[dict[str, Any]], index: int, rng: Any) -> str:
        seen.append(index)
        return f"sample {index}"

    server = make_server([SimulatedModel("m", answer)])
    status, payload, _ = await post(server, {"model": "m", "messages": USER, "n": 3})
    assert status == 200
    assert [c["message"]["content"] for c in payload["choices"]] == ["sample 0", "sample 1", "sample 2"]
    assert [c["index"] for c in payload["choices"]] == [0, 1, 2]
    assert payload["usage"]["completion_tokens"] == 6  # summed over choices, as OpenAI does
    assert payload["usage"]["prompt_tokens"] == 3  # counted once
    assert seen == [0, 1, 2]


async def test_max_n_caps_choices(make_server: Any) -> None:
    server = make_server([SimulatedModel("m", "x", max_n=1)])
    _, payload, _ = await post(server, {"model": "m", "messages": USER, "n": 4})
    assert len(payload["choices"]) == 1


async def test_logprobs_one_per_token(openai_server: OpenAIServer) -> None:
    _, payload, _ = await post(
        openai_server, {"model": "fixed", "messages": USER, "logprobs": True, "top_logprobs": 2}
    )
    content = payload["choices"][0]["logprobs"]["content"]
    assert "".join(entry["token"] for entry in content) == FIXED_ANSWER
    assert all(entry["logprob"] <= 0 for entry in content)
    assert all(len(entry["top_logprobs"]) == 2 for entry in content)


async def test_max_tokens_and_stop(openai_server: OpenAIServer) -> None:
    _, payload, _ = await post(openai_server, {"model": "fixed", "messages": USER, "max_tokens": 2})
    assert payload["choices"][0]["message"]["content"].strip() == "the answer"
    assert payload["choices"][0]["finish_reason"] == "length"
    assert payload["usage"]["completion_tokens"] == 2
    _, payload, _ = await post(openai_server, {"model": "fixed", "messages": USER, "stop": [" is"]})
    assert payload["choices"][0]["message"]["content"] == "the answer"


async def test_tool_calls(openai_server: OpenAIServer) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    _, payload, _ = await post(openai_server, {"model": "tools", "messages": USER, "tools": tools})
    choice = payload["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    _, payload, _ = await post(
        openai_server, {"model": "tools", "messages": USER, "tools": tools, "tool_choice": "none"}
    )
    assert payload["choices"][0]["message"]["content"] == "no tool needed"
    # A model without a scripted call still obeys a forced tool_choice.
    forced = {"type": "function", "function": {"name": "get_weather"}}
    _, payload, _ = await post(
        openai_server, {"model": "fixed", "messages": USER, "tools": tools, "tool_choice": forced}
    )
    assert payload["choices"][0]["message"]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": "{}",
    }


async def test_streaming_with_usage_and_logprobs(openai_server: OpenAIServer) -> None:
    events = await sse_events(
        openai_server,
        {"model": "fixed", "messages": USER, "stream_options": {"include_usage": True}, "logprobs": True},
    )
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert text == FIXED_ANSWER
    finishes = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert finishes == ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    logprob_tokens = [
        entry["token"]
        for c in chunks
        for ch in c["choices"]
        if ch["logprobs"]
        for entry in ch["logprobs"]["content"]
    ]
    assert "".join(logprob_tokens) == FIXED_ANSWER


async def test_streaming_without_usage_has_no_usage_chunk(openai_server: OpenAIServer) -> None:
    events = await sse_events(openai_server, {"model": "fixed", "messages": USER, "n": 2})
    chunks = events[:-1]
    assert all("usage" not in c for c in chunks)
    by_index: dict[int, str] = {}
    for c in chunks:
        for ch in c["choices"]:
            by_index[ch["index"]] = by_index.get(ch["index"], "") + (ch["delta"].get("content") or "")
    assert by_index == {0: FIXED_ANSWER, 1: FIXED_ANSWER}


async def test_models_health_and_errors(openai_server: OpenAIServer) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.get(f"{openai_server.api_base}/models") as response:
            listing = await response.json()
        assert [m["id"] for m in listing["data"]] == ["echo", "fixed", "tools"]
        async with session.get(f"{openai_server.url}/health") as response:
            assert response.status == 200
        async with session.post(f"{openai_server.api_base}/chat/completions", data=b"{nope") as response:
            assert response.status == 400
    status, payload, _ = await post(openai_server, {"model": "nope", "messages": USER})
    assert status == 404 and "nope" in payload["error"]["message"]
    status, _, _ = await post(openai_server, {"model": "fixed", "messages": []})
    assert status == 400
    status, _, _ = await post(openai_server, {"model": "fixed", "messages": USER, "n": 0})
    assert status == 400


@pytest.mark.parametrize(
    ("failure", "status"),
    [("500", 500), ("429", 429), ("400", 400), ("malformed_json", 200), ("empty_choices", 200)],
)
async def test_failures_and_healing(openai_server: OpenAIServer, failure: str, status: int) -> None:
    openai_server.set_failure("fixed", failure, count=2)  # type: ignore[arg-type]
    for _ in range(2):
        got, payload, headers = await post(openai_server, {"model": "fixed", "messages": USER})
        assert got == status
        if failure == "malformed_json":
            assert isinstance(payload, str)
        if failure == "empty_choices":
            assert payload["choices"] == []
        if failure == "429":
            assert headers["Retry-After"] == "0.2"
    got, payload, _ = await post(openai_server, {"model": "fixed", "messages": USER})
    assert got == 200 and payload["choices"][0]["message"]["content"] == FIXED_ANSWER
    assert openai_server.request_count("fixed") == 3


async def test_failure_rate_is_seeded_and_partial(make_server: Any) -> None:
    server = make_server([SimulatedModel("m", "x", failure="500", failure_rate=0.5, seed=7)])
    statuses = [(await post(server, {"model": "m", "messages": USER}))[0] for _ in range(40)]
    assert 5 < statuses.count(500) < 35
    assert set(statuses) == {200, 500}


async def test_oversized_and_truncated(openai_server: OpenAIServer) -> None:
    openai_server.set_failure("fixed", "oversized")
    _, payload, _ = await post(openai_server, {"model": "fixed", "messages": USER})
    assert len(payload["choices"][0]["message"]["content"]) >= 2 * 1024 * 1024
    openai_server.set_failure("fixed", "truncated_stream")
    status, payload, _ = await post(openai_server, {"model": "fixed", "messages": USER})
    assert status == 200 and isinstance(payload, str)  # cut-off JSON
    with pytest.raises(aiohttp.ClientPayloadError):
        await sse_events(openai_server, {"model": "fixed", "messages": USER})


async def test_timeout_failure_hangs_until_client_gives_up(openai_server: OpenAIServer) -> None:
    openai_server.set_failure("fixed", "timeout")
    started = time.perf_counter()
    with pytest.raises(asyncio.TimeoutError):
        await post(openai_server, {"model": "fixed", "messages": USER}, timeout_s=0.3)
    assert time.perf_counter() - started < 2.0
    # The client went away, so the server freed the slot (as vLLM aborts a disconnected request).
    for _ in range(50):
        if openai_server.in_flight("fixed") == 0:
            break
        await asyncio.sleep(0.02)
    assert openai_server.in_flight("fixed") == 0


async def test_64_concurrent_requests_overlap(make_server: Any) -> None:
    server = make_server([SimulatedModel("slow", "done", latency_s=0.5)])
    connector = aiohttp.TCPConnector(limit=0)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def one() -> int:
            async with session.post(
                f"{server.api_base}/chat/completions", json={"model": "slow", "messages": USER}
            ) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*[one() for _ in range(64)])
    elapsed = time.perf_counter() - started
    assert statuses == [200] * 64
    assert elapsed < 2.0, f"64 requests of 0.5 s took {elapsed:.2f} s: they were serialised"
    assert server.peak_in_flight("slow") > 32


async def test_metrics_report_real_in_flight_counts(make_server: Any) -> None:
    server = make_server([SimulatedModel("m", "x", latency_s=0.6, max_running=2)])
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def one() -> None:
            async with session.post(
                f"{server.api_base}/chat/completions", json={"model": "m", "messages": USER}
            ) as response:
                await response.read()

        tasks = [asyncio.create_task(one()) for _ in range(5)]
        await asyncio.sleep(0.3)
        async with session.get(f"{server.url}/metrics") as response:
            text = await response.text()
        await asyncio.gather(*tasks)
        async with session.get(f"{server.url}/metrics") as response:
            after = await response.text()
    assert 'vllm:num_requests_running{model_name="m"} 2.0' in text
    assert 'vllm:num_requests_waiting{model_name="m"} 3.0' in text
    assert "# TYPE vllm:num_requests_running gauge" in text
    assert 'vllm:num_requests_running{model_name="m"} 0.0' in after
    assert 'vllm:num_requests_waiting{model_name="m"} 0.0' in after


def test_stop_releases_hung_requests_and_thread() -> None:
    server = OpenAIServer(models=[SimulatedModel("m", "x", failure="timeout", failure_rate=1.0)]).start()
    port = server.port

    async def hang() -> None:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.post(f"{server.api_base}/chat/completions", json={"model": "m", "messages": USER}) as r,
        ):
            await r.read()

    async def scenario() -> None:
        task = asyncio.create_task(hang())
        while server.in_flight("m") == 0:
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        await asyncio.to_thread(server.stop)
        assert time.perf_counter() - started < 5.0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert server._thread is None
    server.stop()  # idempotent
    with socket.socket() as probe:  # the port is free again
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="failure"):
        SimulatedModel("m", "x", failure="teapot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="failure_rate"):
        SimulatedModel("m", "x", failure_rate=2.0)
    with pytest.raises(ValueError, match="duplicate"):
        OpenAIServer(models=[SimulatedModel("m", "x"), SimulatedModel("m", "y")])
    with pytest.raises(ValueError, match="unknown keys"):
        load_models('{"models": [{"name": "m", "answr": "x"}]}')
    [model] = load_models('{"models": [{"name": "m", "echo": true, "latency_s": 0.1}]}')
    assert model.latency_s == 0.1 and callable(model.answer)


def test_cli_serves_until_terminated() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = json.dumps({"models": [{"name": "cli-model", "answer": "from the cli"}]})
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "uniscale_lc.testing.openai_server", "--port", str(port), "--config", config],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"127.0.0.1:{port}/v1" in line, line

        async def ask() -> Any:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
                session.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json={"model": "cli-model", "messages": USER},
                ) as response,
            ):
                return await response.json()

        payload = asyncio.run(ask())
        assert payload["choices"][0]["message"]["content"] == "from the cli"
    finally:
        process.terminate()
        code = process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    assert code == 0
