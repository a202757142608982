"""A hostile provider: answers that never end, bodies far over any limit, Retry-After past the deadline,
usage that is negative or astronomically large. Each call ends in bounded time and bytes with a typed error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from hostile_server import HostileServer

from uniscale_lc.client import DEFAULT_MAX_RESPONSE_BYTES, ModelClient, RetryPolicy, response_byte_cap
from uniscale_lc.errors import ModelCallError, ModelTimeoutError
from uniscale_lc.model_spec import ModelSpec

pytestmark = pytest.mark.timeout(120)

TIMEOUT_S = 1.0
RETRY = RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.05, jitter=0.5)
# Far above the documented ceiling: a call still running then is a call that would never end.
NEVER_S = 60.0


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    with HostileServer() as running:
        yield running


def _spec(server: HostileServer, model: str, timeout_s: float = TIMEOUT_S) -> ModelSpec:
    return ModelSpec(model=model, api_base=server.api_base, timeout_s=timeout_s, gpu_usd_per_hour=0.0)


async def _drain(client: ModelClient, spec: ModelSpec, **kwargs: object) -> str:
    text = ""
    async for delta in client.astream(spec, [{"role": "user", "content": "hi"}], **kwargs):  # type: ignore[arg-type]
        text += delta.text
    return text


@pytest.mark.parametrize("transport", ["auto", "litellm"])
async def test_a_stream_that_never_ends_stops_at_the_call_deadline(
    server: HostileServer, transport: str
) -> None:
    client = ModelClient(retry=RETRY, seed=0, transport=transport)
    assert await _drain(client, _spec(server, "ok")) == "fine "  # pays the one-off imports before the clock
    spec = _spec(server, "endless_stream")
    ceiling = RETRY.deadline_s(TIMEOUT_S)
    started = time.monotonic()
    with pytest.raises(ModelCallError) as caught:
        await asyncio.wait_for(_drain(client, spec), NEVER_S)
    elapsed = time.monotonic() - started
    print(
        f"\nendless stream ({transport}): {caught.value} after {elapsed:.1f} s; documented ceiling {ceiling:.1f} s"
    )
    assert elapsed < ceiling + 5.0


async def test_a_body_that_never_ends_is_cut_at_the_byte_cap(server: HostileServer) -> None:
    client = ModelClient(retry=RetryPolicy(max_attempts=1), seed=0)
    spec = _spec(server, "endless_body", timeout_s=5.0)
    before = server.bytes_sent["endless_body"]
    with pytest.raises(ModelCallError) as caught:
        await asyncio.wait_for(
            client.acomplete(spec, [{"role": "user", "content": "hi"}], max_tokens=16), NEVER_S
        )
    sent = server.bytes_sent["endless_body"] - before
    cap = response_byte_cap(16, 1)
    print(
        f"\nendless body, max_tokens=16: cut after the server wrote {sent:,} bytes (cap {cap:,}): {caught.value}"
    )
    # What the server wrote includes the socket buffers on both sides, a few MB at most.
    assert sent < cap + 16 * 1024 * 1024
    assert "byte" in str(caught.value)


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_over_the_default_cap_is_refused_without_max_tokens(
    server: HostileServer, stream: bool
) -> None:
    client = ModelClient(retry=RetryPolicy(max_attempts=1), seed=0, max_response_bytes=4 * 1024 * 1024)
    spec = _spec(server, "big_body", timeout_s=20.0)
    server.big_bytes = 50_000_000
    before = server.bytes_sent["big_body"]
    with pytest.raises(ModelCallError) as caught:
        if stream:
            await asyncio.wait_for(_drain(client, spec), NEVER_S)
        else:
            await asyncio.wait_for(client.acomplete(spec, [{"role": "user", "content": "hi"}]), NEVER_S)
    sent = server.bytes_sent["big_body"] - before
    print(
        f"\n50 MB answer (stream={stream}), cap 4 MiB: refused after {sent:,} bytes written: {caught.value}"
    )
    assert sent < 40_000_000
    assert DEFAULT_MAX_RESPONSE_BYTES < 50_000_000  # the default refuses a 50 MB answer as well


async def test_retry_after_past_the_deadline_is_not_waited_for(server: HostileServer) -> None:
    client = ModelClient(retry=RetryPolicy(max_attempts=3, max_retry_after_s=60.0), seed=0)
    spec = _spec(server, "retry_after", timeout_s=2.0)
    server.retry_after_s = 29
    started = time.monotonic()
    with pytest.raises(ModelCallError) as caught:
        await asyncio.wait_for(client.acomplete(spec, [{"role": "user", "content": "hi"}]), NEVER_S)
    elapsed = time.monotonic() - started
    print(f"\nRetry-After: 29 with timeout_s=2: {type(caught.value).__name__} after {elapsed:.2f} s")
    assert elapsed < 10.0
    assert caught.value.status_code == 429


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -5, "completion_tokens": 3},
        {"prompt_tokens": 3, "completion_tokens": -1},
        {"prompt_tokens": 10**400, "completion_tokens": 3},
        {"prompt_tokens": 3, "completion_tokens": "many"},
        {"prompt_tokens": 3, "completion_tokens": 1e300},
    ],
    ids=["negative-prompt", "negative-completion", "huge-int", "string", "huge-float"],
)
async def test_bad_usage_is_a_model_failure(server: HostileServer, usage: dict[str, object]) -> None:
    client = ModelClient(retry=RetryPolicy(max_attempts=1), seed=0)
    server.usage = usage
    try:
        with pytest.raises(ModelCallError) as caught:
            await client.acomplete(_spec(server, "usage"), [{"role": "user", "content": "hi"}])
        assert "usage" in str(caught.value)
        assert not isinstance(caught.value, ModelTimeoutError)
        # Streamed, the answer stands and its tokens are estimated instead (the text reached the caller).
        deltas = [
            delta
            async for delta in client.astream(_spec(server, "usage"), [{"role": "user", "content": "hi"}])
        ]
        final = deltas[-1].usage
        assert final is not None and 0 <= final["input_tokens"] < 100 and 0 <= final["output_tokens"] < 100
    finally:
        server.usage = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
