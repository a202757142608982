"""The one place that talks to litellm: timeouts, retries, `n` or parallel samples, usage and cost, typed errors.

`ModelClient` here runs the call (the retry loop, `n` planning, streams, the sync twins); each of its jobs'
rules lives in a module of its own, and every name callers use is re-exported here:
client_request.py (litellm, model names, the request dict, byte caps), client_retry.py (retry policy,
deadlines), client_failures.py (error classification), client_parse.py (reading answers, plain and
streamed), client_results.py (results, usage and cost), client_loop.py (the sync bridge).
See docs/client.md for the rules (model naming, retry policy, cost sources, key handling).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from . import client_request
from .client_failures import REQUEST_REJECTED_STATUSES as REQUEST_REJECTED_STATUSES
from .client_failures import _classify, _Failure
from .client_loop import _BACKGROUND, _anext, run_sync
from .client_parse import MAX_CHARS_PER_TOKEN as MAX_CHARS_PER_TOKEN
from .client_parse import MAX_REPORTED_TOKENS as MAX_REPORTED_TOKENS
from .client_parse import _carries_answer as _carries_answer
from .client_parse import _parse_response, _StreamReader, check_answer_length
from .client_request import (
    DEFAULT_MAX_RESPONSE_BYTES,
    RESPONSE_OVERHEAD_BYTES,
    _litellm,
    _request_kwargs,
    _resolve_target,
    _Target,
    is_loopback,
    litellm_model_name,
    response_byte_cap,
)
from .client_request import DEFAULT_PROVIDER_FOR_API_BASE as DEFAULT_PROVIDER_FOR_API_BASE
from .client_request import DUMMY_LOCAL_KEY as DUMMY_LOCAL_KEY
from .client_request import RESPONSE_BYTES_PER_TOKEN as RESPONSE_BYTES_PER_TOKEN
from .client_results import (
    Choice,
    Completion,
    StreamDelta,
    _CallResult,
    call_cost_usd,
    empty_usage,
    gpu_cost_usd,
    summed_usage,
)
from .client_retry import RetryPolicy, _Deadline, parse_retry_after
from .errors import ConfigError, field_error
from .model_spec import ModelSpec
from .redact import install_log_redaction
from .transport_openai import OpenAITransport, ResponseTooLargeError

# The public names; constants and the helpers tests import are re-exported above with `as` aliases.
__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "Choice",
    "Completion",
    "ModelClient",
    "RetryPolicy",
    "StreamDelta",
    "call_cost_usd",
    "empty_usage",
    "gpu_cost_usd",
    "is_loopback",
    "litellm_model_name",
    "parse_retry_after",
    "plan_calls",
    "response_byte_cap",
    "run_sync",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def plan_calls(n: int, provider_supports_n: bool) -> list[int]:
    """How many samples to ask of each API call: one call with `n`, or `n` parallel calls of one."""
    if n < 1:
        raise field_error("ModelClient.acomplete", "n", n, "ask for at least one sample")
    return [n] if provider_supports_n or n == 1 else [1] * n


class ModelClient:
    """Calls models through litellm with explicit timeouts, our own bounded retries and per-model limits.

    One instance per process or chat model; it is cheap and holds only caches, semaphores and HTTP pools.
    `transport="auto"` sends OpenAI-compatible endpoints through the openai SDK (transport_openai.py) and
    everything else through litellm; `transport="litellm"` sends everything through litellm.
    """

    def __init__(
        self,
        retry: RetryPolicy | None = None,
        *,
        seed: int | None = None,
        transport: str = "auto",
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if transport not in ("auto", "litellm"):
            raise field_error("ModelClient", "transport", transport, "use 'auto' or 'litellm'")
        if isinstance(max_response_bytes, bool) or not isinstance(max_response_bytes, int):
            raise field_error("ModelClient", "max_response_bytes", max_response_bytes, "use an int of bytes")
        if max_response_bytes < RESPONSE_OVERHEAD_BYTES:
            raise field_error(
                "ModelClient",
                "max_response_bytes",
                max_response_bytes,
                f"use at least {RESPONSE_OVERHEAD_BYTES} bytes (the default is {DEFAULT_MAX_RESPONSE_BYTES})",
            )
        self.max_response_bytes = max_response_bytes
        self.transport = transport
        install_log_redaction()
        self._openai = OpenAITransport()
        self.retry = retry or RetryPolicy()
        self._rng = random.Random(seed)
        self._targets: dict[ModelSpec, _Target] = {}
        # Semaphores belong to the loop they were first awaited on, so keep one set per loop.
        self._limits: WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[str, str | None], asyncio.Semaphore]
        ]
        self._limits = WeakKeyDictionary()

    # -- helpers

    def _target(self, spec: ModelSpec) -> _Target:
        target = self._targets.get(spec)
        if target is None:
            target = self._targets[spec] = _resolve_target(spec, openai_sdk=self.transport == "auto")
        return target

    def _byte_cap(self, kwargs: Mapping[str, Any]) -> int:
        return response_byte_cap(kwargs.get("max_tokens"), int(kwargs.get("n") or 1), self.max_response_bytes)

    def _send(self, target: _Target, kwargs: dict[str, Any]) -> Awaitable[Any]:
        """The one call to a provider: the openai SDK for OpenAI-compatible endpoints, else litellm.

        The SDK path stops reading at the byte cap; litellm reads whole bodies itself, so its answers are
        checked against the cap once read (streams: as they arrive).
        """
        if target.served_model is not None and target.provider is not None:
            return self._openai.acompletion(
                target.provider, target.served_model, kwargs, self._byte_cap(kwargs)
            )
        return _litellm().acompletion(**kwargs)

    async def aclose(self) -> None:
        """Close the HTTP pools this client opened on the running loop."""
        await self._openai.aclose()

    async def _atarget(self, spec: ModelSpec) -> _Target:
        target = self._targets.get(spec)
        if target is not None:
            return target
        if client_request._litellm_module is None:
            # The first import takes seconds; do it in a worker thread so the caller's loop keeps serving.
            await asyncio.to_thread(_litellm)
        return self._target(spec)

    async def awarm_up(self, specs: Sequence[ModelSpec] = ()) -> None:
        """Import litellm and resolve `specs` ahead of the first request (off the event loop)."""
        await asyncio.to_thread(_litellm)
        for spec in specs:
            self._target(spec)

    def _limit(self, spec: ModelSpec) -> asyncio.Semaphore | None:
        if spec.max_concurrency is None:
            return None
        loop = asyncio.get_running_loop()
        per_loop = self._limits.get(loop)
        if per_loop is None:
            per_loop = self._limits[loop] = {}
        key = (spec.model, spec.api_base)
        semaphore = per_loop.get(key)
        if semaphore is None:
            semaphore = per_loop[key] = asyncio.Semaphore(spec.max_concurrency)
        return semaphore

    async def _attempt(
        self, spec: ModelSpec, target: _Target, kwargs: dict[str, Any], deadline: _Deadline
    ) -> _CallResult:
        response = await deadline.bound(self._send(target, kwargs))
        result = _parse_response(response, use_litellm_cost=target.use_litellm_cost)
        texts = [choice.text for choice in result.choices]
        check_answer_length(texts, kwargs.get("max_tokens"))
        if sum(len(text) for text in texts) > self._byte_cap(kwargs):  # litellm read it whole; refuse it now
            raise ResponseTooLargeError(f"the answer passed the cap of {self._byte_cap(kwargs)} bytes")
        return result

    async def _call(
        self, spec: ModelSpec, target: _Target, kwargs: dict[str, Any], secrets: list[str | None]
    ) -> _CallResult:
        """One logical call with bounded retries and one total deadline; raises the typed error of the last
        attempt."""
        deadline = _Deadline(spec.timeout_s, self.retry.deadline_s(spec.timeout_s))
        attempt = 0
        while True:
            attempt += 1
            failure: _Failure | None = None
            limit = self._limit(spec)
            try:
                if limit is None:
                    return await self._attempt(spec, target, kwargs, deadline)
                await deadline.acquire(limit)
                try:
                    return await self._attempt(spec, target, kwargs, deadline)
                finally:
                    limit.release()
            except (asyncio.CancelledError, ConfigError):
                raise  # a ConfigError (no API key) is the caller's to fix: no retry, no model blamed
            except Exception as exc:
                failure = _classify(exc, secrets, spec.api_base)
            # Raised outside the except block so no provider exception (which may quote headers) is chained.
            await asyncio.sleep(
                self._retry_delay_or_raise(spec, failure, attempt, deadline, retryable=failure.retryable)
            )

    def _retry_delay_or_raise(
        self,
        spec: ModelSpec,
        failure: _Failure,
        attempt: int,
        deadline: _Deadline,
        *,
        retryable: bool,
        what: str = "attempt",
    ) -> float:
        """Seconds to wait before the next attempt, or raise the typed error when no retry is left.

        A wait that would leave less than one `timeout_s` before the call's deadline is not made: the error
        is raised now, so the router can try another arm (a `Retry-After: 29` never holds a 2 s call).
        """
        delay = self.retry.delay_s(attempt, failure.retry_after_s, self._rng) if retryable else None
        if delay is not None and delay + spec.timeout_s > deadline.remaining():
            logger.info(
                "%s: not retrying: a %.2f s wait passes the call deadline of %.1f s",
                spec.model,
                delay,
                deadline.total_s,
            )
            delay = None
        if delay is None:
            error = failure.error(spec.model, attempt)
            logger.info("%s", error)
            raise error
        logger.warning(
            "%s: %s %d/%d failed (%s); retrying in %.2f s",
            spec.model,
            what,
            attempt,
            self.retry.max_attempts,
            failure.describe(),
            delay,
        )
        return delay

    # -- public API

    async def acomplete(
        self,
        spec: ModelSpec,
        messages: list[dict[str, Any]],
        *,
        n: int = 1,
        temperature: float | None = None,
        max_tokens: int | None = None,
        logprobs: bool = False,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        stop: str | list[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Completion:
        """Ask `spec` for `n` samples; returns exactly `n` choices or raises a `ModelCallError`.

        `n` goes to the provider in one call when litellm says the provider supports it, else as `n` parallel
        calls; if the provider returns fewer choices than asked, the rest are topped up with parallel calls.
        """
        target = await self._atarget(spec)
        started = time.perf_counter()
        kwargs = _request_kwargs(
            spec, target, messages, temperature, max_tokens, logprobs, tools, tool_choice, stop, extra
        )
        secrets = [kwargs.get("api_key")]
        plan = plan_calls(n, target.supports_n)
        results = await self._run_plan(spec, target, kwargs, secrets, plan)
        got = sum(len(result.choices) for result in results)
        if got < n:
            logger.info("%s: asked for n=%d, got %d; topping up with %d calls", spec.model, n, got, n - got)
            results += await self._run_plan(spec, target, kwargs, secrets, [1] * (n - got))
        choices = [choice for result in results for choice in result.choices][:n]
        latency_s = time.perf_counter() - started
        return Completion(
            texts=[choice.text for choice in choices],
            choices=choices,
            usage=summed_usage(spec, results, latency_s),
            model=spec.model,
        )

    async def _run_plan(
        self,
        spec: ModelSpec,
        target: _Target,
        kwargs: dict[str, Any],
        secrets: list[str | None],
        plan: list[int],
    ) -> list[_CallResult]:
        def with_n(k: int) -> dict[str, Any]:
            return {**kwargs, "n": k} if k > 1 else kwargs

        if len(plan) == 1:  # the common case: no task objects
            return [await self._call(spec, target, with_n(plan[0]), secrets)]
        return await _gather_or_cancel([self._call(spec, target, with_n(k), secrets) for k in plan])

    async def astream(
        self,
        spec: ModelSpec,
        messages: list[dict[str, Any]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        logprobs: bool = False,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        stop: str | list[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[StreamDelta, None]:
        """Stream one answer. Retries happen only before the first delta; a failure after it is raised.

        `spec.timeout_s` bounds the wait for the stream to open and for each next chunk, and the whole stream
        ends within `RetryPolicy.deadline_s(timeout_s)` (a stream that never ends is cut there). A stream
        with no text and no tool call is a malformed response (litellm reports a broken stream that way).
        The last delta carries `usage`; without usage from the server, tokens are estimated as characters / 4.
        """
        target = await self._atarget(spec)
        started = time.perf_counter()
        kwargs = _request_kwargs(
            spec, target, messages, temperature, max_tokens, logprobs, tools, tool_choice, stop, extra
        )
        kwargs["stream"] = True
        kwargs["stream_options"] = {"include_usage": True}
        secrets = [kwargs.get("api_key")]
        deadline = _Deadline(spec.timeout_s, self.retry.deadline_s(spec.timeout_s))
        byte_cap = self._byte_cap(kwargs)
        attempt = 0
        while True:
            attempt += 1
            failure: _Failure | None = None
            reader = _StreamReader(spec.model, max_tokens, byte_cap)
            limit = self._limit(spec)
            if limit is not None:
                await deadline.acquire(limit)
            stream: Any = None
            try:
                stream = await deadline.bound(self._send(target, kwargs))
                iterator = stream.__aiter__()
                while True:
                    try:
                        chunk = await deadline.bound(iterator.__anext__())
                    except StopAsyncIteration:
                        break
                    for piece in reader.deltas(chunk):
                        yield piece
                reader.check_end()
            except (asyncio.CancelledError, ConfigError):
                raise
            except Exception as exc:
                failure = _classify(exc, secrets, spec.api_base)
            finally:
                if limit is not None:
                    limit.release()
                # Always: a stream abandoned by the caller (GeneratorExit here) must free its connection too.
                close = getattr(stream, "aclose", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        await close()
            if failure is None:
                for piece in reader.held:
                    yield piece
                latency_s = time.perf_counter() - started
                input_tokens, output_tokens = reader.token_counts(messages)
                result = _CallResult([], input_tokens, output_tokens, None)
                yield StreamDelta(usage=summed_usage(spec, [result], latency_s))
                return
            # Once tokens reached the caller a retry would repeat them: only a clean failure is retried.
            retryable = failure.retryable and not reader.yielded
            await asyncio.sleep(
                self._retry_delay_or_raise(
                    spec, failure, attempt, deadline, retryable=retryable, what="stream attempt"
                )
            )

    def complete(
        self,
        spec: ModelSpec,
        messages: list[dict[str, Any]],
        *,
        n: int = 1,
        temperature: float | None = None,
        max_tokens: int | None = None,
        logprobs: bool = False,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        stop: str | list[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Completion:
        """Sync twin of `acomplete`, safe to call with or without a running event loop in this thread.

        The call runs on a shared background loop (see `_BackgroundLoop` for why), never on the caller's loop.
        """
        return _BACKGROUND.run(
            self.acomplete(
                spec,
                messages,
                n=n,
                temperature=temperature,
                max_tokens=max_tokens,
                logprobs=logprobs,
                tools=tools,
                tool_choice=tool_choice,
                stop=stop,
                extra=extra,
            )
        )

    def stream(self, spec: ModelSpec, messages: list[dict[str, Any]], **kwargs: Any) -> Iterator[StreamDelta]:
        """Sync twin of `astream` (same keyword arguments), driven on the shared background loop."""
        agen = self.astream(spec, messages, **kwargs)
        try:
            while True:
                try:
                    yield _BACKGROUND.run(_anext(agen))
                except StopAsyncIteration:
                    return
        finally:
            _BACKGROUND.run(agen.aclose())


async def _gather_or_cancel(coros: Sequence[Awaitable[T]]) -> list[T]:
    """Like `gather`, but the first failure cancels the rest (no orphaned calls still spending money)."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
