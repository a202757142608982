"""The fast transport for OpenAI-compatible endpoints: the official `openai` async client, pooled.

litellm spends about 3 ms of CPU per call on provider mapping, logging and cost look-ups that an endpoint
speaking the OpenAI API does not need (ECOSYSTEM.md). For `openai/...` and `hosted_vllm/...` models (and
unprefixed names litellm maps to OpenAI) `ModelClient` sends the same request through this module instead;
every other provider stays on litellm. The request is litellm's keyword dict, so both paths share one
request builder, one response parser, one retry loop and one error classifier (`client.py`):

- non-streamed answers are read as plain JSON (no pydantic models: the parser reads dicts and objects alike);
- streams are read as server-sent events by `_SSEStream` here, each chunk a plain JSON dict;
- both are read through the SDK's streaming response, counting bytes as they arrive: past `max_bytes` the
  read stops with `ResponseTooLargeError`, so a body that never ends costs at most the cap in memory;
- errors are the SDK's exceptions, of which litellm's are subclasses, so one classifier serves both.

One `AsyncOpenAI` client (one HTTP connection pool) per (event loop, base URL, key): a pool must not be
shared across event loops (the sync API runs on its own background loop). The pools of a loop are closed
when that loop shuts down its async generators (`asyncio.run` does, and so does the client's background
loop at exit), so no connection is left open for the garbage collector to warn about.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import inspect
import json
import os
from collections.abc import AsyncGenerator, Mapping
from typing import Any
from urllib.parse import urlsplit
from weakref import WeakKeyDictionary

from .errors import ConfigError

__all__ = [
    "OPENAI_COMPATIBLE_PROVIDERS",
    "MalformedStreamError",
    "OpenAITransport",
    "ResponseTooLargeError",
    "openai_request",
    "served_model_name",
]

# litellm providers whose endpoints speak the OpenAI chat-completions API as is.
OPENAI_COMPATIBLE_PROVIDERS = frozenset({"openai", "hosted_vllm"})
OPENAI_API_HOST = "api.openai.com"
# Keys of litellm's keyword dict that select the client rather than go into the request.
_CLIENT_KEYS = frozenset({"api_base", "api_key", "max_retries", "model"})

_create_params: frozenset[str] | None = None


class ResponseTooLargeError(Exception):
    """The provider sent more bytes than the call's cap: a broken or hostile endpoint, not an answer."""


class MalformedStreamError(Exception):
    """A server-sent event that is not JSON, or a line longer than the byte cap."""


class _CappedBody:
    """The response body piece by piece, stopping (before buffering more) once it passes `max_bytes`.

    A class, not an async generator: an async generator left suspended by a caller who stopped early is
    closed by the loop's `shutdown_asyncgens()` at the same time as httpx's own generators below it, and the
    two closes collide ("aclose(): asynchronous generator is already running"). `aclose()` here closes
    httpx's body iterator and the response at once, in order, on the caller's task.
    """

    def __init__(self, response: Any, max_bytes: int) -> None:
        self._response = response
        self._max_bytes = max_bytes
        self._received = 0
        self._pieces: Any = None  # httpx's iterator, started on the first read
        self._closed = False

    def __aiter__(self) -> _CappedBody:
        return self

    async def __anext__(self) -> bytes:
        if self._pieces is None:
            if self._closed:
                raise StopAsyncIteration
            declared = self._response.http_response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self._max_bytes:
                raise ResponseTooLargeError(
                    f"the response declares {int(declared)} bytes, over the cap of {self._max_bytes}"
                )
            self._pieces = self._response.http_response.aiter_bytes().__aiter__()
        try:
            piece: bytes = await self._pieces.__anext__()
        except StopAsyncIteration:
            raise
        except Exception as exc:  # a cut connection: the SDK's own error for it, so it is classified alike
            import openai

            raise openai.APIConnectionError(
                message=f"reading the response failed ({type(exc).__name__}: {exc})",
                request=self._response.http_response.request,
            ) from exc
        self._received += len(piece)
        if self._received > self._max_bytes:
            raise ResponseTooLargeError(f"the response passed the cap of {self._max_bytes} bytes")
        return piece

    async def aclose(self) -> None:
        """Finish httpx's iterator (no generator is left for the loop to close) and release the connection."""
        self._closed = True
        pieces, self._pieces = self._pieces, None
        if pieces is not None:
            with contextlib.suppress(Exception):
                await pieces.aclose()
        with contextlib.suppress(Exception):
            await self._response.http_response.aclose()


class _SSEStream:
    """Server-sent events of one streamed answer, each `data:` payload decoded as a JSON dict.

    Ends at `[DONE]` or at the end of the body. The connection is released as soon as the stream ends,
    fails, or is cancelled while waiting (the caller's task, not the garbage collector, closes it), and by
    `aclose()` when the caller stops reading early.
    """

    def __init__(self, manager: Any, response: Any, max_bytes: int) -> None:
        self._manager = manager
        self._response = response
        self._body = _CappedBody(response, max_bytes)
        self._buffer = b""
        self._data: list[bytes] = []  # the `data:` lines of the event being read
        self._payloads: collections.deque[bytes] = collections.deque()  # complete events, decoded on demand
        self._ended = False  # [DONE] or the end of the body was read
        self._closed = False

    def __aiter__(self) -> _SSEStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            while not self._payloads:
                if self._ended or self._closed:
                    raise StopAsyncIteration
                await self._read_more()
            return self._decode(self._payloads.popleft())
        except GeneratorExit:
            raise  # this coroutine is being discarded unrun: nothing may be awaited now
        except BaseException:  # the end, a broken event, a cut connection, a cancelled wait: release now
            await self.aclose()
            raise

    async def _read_more(self) -> None:
        """Read one piece of the body into complete events (or mark the end)."""
        try:
            piece = await self._body.__anext__()
        except StopAsyncIteration:
            self._ended = True
            if self._data and self._data[-1].strip() != b"[DONE]":
                self._payloads.append(b"\n".join(self._data))
            return
        *lines, self._buffer = (self._buffer + piece).split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if line.startswith(b"data:"):
                self._data.append(line[5:].lstrip(b" "))
                continue
            if line or not self._data:
                continue  # comments, event names, ids, keep-alive blank lines
            payload, self._data = b"\n".join(self._data), []
            if payload.strip() == b"[DONE]":
                self._ended = True
                return
            self._payloads.append(payload)

    def _decode(self, payload: bytes) -> dict[str, Any]:
        try:
            event = json.loads(payload)
        except ValueError as exc:
            raise MalformedStreamError(f"a stream event is not JSON ({exc})") from None
        if not isinstance(event, dict):
            raise MalformedStreamError("a stream event is not a JSON object")
        if event.get("error") is not None:
            import openai

            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else str(error)
            raise openai.APIError(
                str(message or "error in the stream"), self._response.http_response.request, body=error
            )
        return event

    async def aclose(self) -> None:
        """Release the connection; safe to call again, and from any point of the stream."""
        if self._closed:
            return
        self._closed = True
        self._payloads.clear()
        await self._body.aclose()
        with contextlib.suppress(Exception):
            await self._manager.__aexit__(None, None, None)


def _known_params() -> frozenset[str]:
    """The keyword arguments `chat.completions.create` takes; anything else travels in `extra_body`."""
    global _create_params
    if _create_params is None:
        from openai.resources.chat.completions import AsyncCompletions

        names = set(inspect.signature(AsyncCompletions.create).parameters) - {"self"}
        _create_params = frozenset(names)
    return _create_params


def served_model_name(litellm_model: str, provider: str | None) -> str | None:
    """The name to send to an OpenAI-compatible server, or None when the model is not for this transport.

    `hosted_vllm/Qwen/Qwen2.5-7B` -> `Qwen/Qwen2.5-7B`; `openai/gpt-4o` -> `gpt-4o`; `gpt-4o-mini` (which
    litellm maps to provider "openai") -> `gpt-4o-mini`; `anthropic/...` -> None.
    """
    if provider not in OPENAI_COMPATIBLE_PROVIDERS:
        return None
    prefix, _, rest = litellm_model.partition("/")
    if rest and prefix == provider:
        return rest
    return litellm_model


def _is_openai_api(api_base: str | None) -> bool:
    return api_base is None or urlsplit(api_base).hostname == OPENAI_API_HOST


def openai_request(served_model: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """litellm's keyword dict -> `chat.completions.create` keywords (pure: tested on its own).

    Unknown keys (provider options such as vLLM's `top_k`) go in `extra_body`, as litellm sends them.
    The OpenAI API itself takes `max_completion_tokens` (reasoning models refuse `max_tokens`).
    """
    known = _known_params()
    request: dict[str, Any] = {"model": served_model}
    extra_body: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _CLIENT_KEYS:
            continue
        if key in known:
            request[key] = value
        else:
            extra_body[key] = value
    if "max_tokens" in request and _is_openai_api(kwargs.get("api_base")):
        request["max_completion_tokens"] = request.pop("max_tokens")
    if extra_body:
        given = request.get("extra_body")
        request["extra_body"] = {**extra_body, **given} if isinstance(given, Mapping) else extra_body
    return request


def _api_key_for(provider: str, api_key: str | None) -> str:
    """The key to send: the spec's, else the provider's usual variable; OpenAI's own API requires one."""
    if api_key:
        return api_key
    if provider == "hosted_vllm":
        # As litellm does: a self-hosted server usually needs no key, but the client must send one.
        return os.environ.get("HOSTED_VLLM_API_KEY") or "EMPTY"
    key = os.environ.get("OPENAI_API_KEY")
    if not key:
        raise ConfigError(
            "ModelSpec.api_key_env: no API key for the OpenAI API; export OPENAI_API_KEY, or give the "
            "ModelSpec api_key_env='NAME_OF_YOUR_VARIABLE'"
        )
    return key


# httpx scans every connection of a pool on each request and each release (a poll() per connection), so a
# call costs O(connections in its pool): about 0.6 ms of CPU per call with 64 in flight on one pool. Calls
# fill one pool up to this many in flight, then spill to another pool of the same base URL and key, so no
# pool holds many more connections than this. At low load one pool (one connection) is all there is.
SHARD_IN_FLIGHT = 8
MAX_SHARDS = 32


@dataclasses.dataclass
class _Pools:
    """The `AsyncOpenAI` clients of one (loop, base URL, key) and the calls in flight on each."""

    clients: list[Any] = dataclasses.field(default_factory=list)
    in_flight: list[int] = dataclasses.field(default_factory=list)

    def pick(self, make: Any) -> int:
        """The first pool with room, a new one while allowed, else the least busy."""
        for index, busy in enumerate(self.in_flight):
            if busy < SHARD_IN_FLIGHT:
                return index
        if len(self.clients) < MAX_SHARDS:
            self.clients.append(make())
            self.in_flight.append(0)
            return len(self.clients) - 1
        return min(range(len(self.in_flight)), key=self.in_flight.__getitem__)


class OpenAITransport:
    """Pooled `AsyncOpenAI` clients and the two calls `ModelClient` makes through them."""

    def __init__(self) -> None:
        self._clients: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str | None, str], _Pools]]
        self._clients = WeakKeyDictionary()
        # One started async generator per loop: the loop finalises it at shutdown, which closes the pools.
        self._closers: WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncGenerator[None, None]]
        self._closers = WeakKeyDictionary()

    async def _close_with_loop(self) -> AsyncGenerator[None, None]:
        """Parked at its yield until the loop's `shutdown_asyncgens()` closes it; then closes the pools."""
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await self.aclose()

    async def _watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop in self._closers:
            return
        closer = self._closers[loop] = self._close_with_loop()
        await closer.__anext__()  # started, so the loop tracks it (asyncgen hooks)

    def _pools(self, provider: str, api_base: str | None, api_key: str | None) -> tuple[_Pools, Any]:
        """The pools of this loop, base URL and key, and a factory of one more."""
        key = _api_key_for(provider, api_key)
        loop = asyncio.get_running_loop()
        per_loop = self._clients.get(loop)
        if per_loop is None:
            per_loop = self._clients[loop] = {}
        # Keyed by a digest, so this dict never holds a key in the clear.
        pool_key = (api_base, hashlib.sha256(key.encode()).hexdigest())
        pools = per_loop.get(pool_key)
        if pools is None:
            pools = per_loop[pool_key] = _Pools()

        def make() -> Any:
            import openai

            # max_retries=0: ModelClient retries; the SDK would otherwise retry twice inside each attempt.
            return openai.AsyncOpenAI(api_key=key, base_url=api_base, max_retries=0)

        return pools, make

    async def acompletion(
        self, provider: str, served_model: str, kwargs: Mapping[str, Any], max_bytes: int
    ) -> Any:
        """One call: a plain-JSON dict for a whole answer, an `_SSEStream` of dicts when `stream=True`.

        At most `max_bytes` of the body are read (`ResponseTooLargeError` past them).
        """
        if asyncio.get_running_loop() not in self._closers:
            await self._watch_loop()
        pools, make = self._pools(provider, kwargs.get("api_base"), kwargs.get("api_key"))
        index = pools.pick(make)
        request = openai_request(served_model, kwargs)
        # Counted until the body is read (a stream: until its headers came; its connection is held longer).
        pools.in_flight[index] += 1
        try:
            manager = pools.clients[index].chat.completions.with_streaming_response.create(**request)
            response = await manager.__aenter__()
            if request.get("stream"):
                return _SSEStream(manager, response, max_bytes)
            reader = _CappedBody(response, max_bytes)
            try:
                body = b"".join([piece async for piece in reader])
            finally:
                await reader.aclose()
                with contextlib.suppress(Exception):
                    await manager.__aexit__(None, None, None)
        finally:
            pools.in_flight[index] -= 1
        return json.loads(body)

    async def aclose(self) -> None:
        """Close the pools of the running loop (the others close with their loops)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        per_loop = self._clients.pop(loop, {})
        for pools in per_loop.values():
            for client in pools.clients:
                await client.close()
