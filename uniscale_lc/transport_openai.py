"""The fast transport for OpenAI-compatible endpoints: the official `openai` async client, pooled.

litellm spends about 3 ms of CPU per call on provider mapping, logging and cost look-ups that an endpoint
speaking the OpenAI API does not need (ECOSYSTEM.md). For `openai/...` and `hosted_vllm/...` models (and
unprefixed names litellm maps to OpenAI) `ModelClient` sends the same request through this module instead;
every other provider stays on litellm. The request is litellm's keyword dict, so both paths share one
request builder, one response parser, one retry loop and one error classifier (`client.py`):

- non-streamed answers are read as plain JSON (no pydantic models: the parser reads dicts and objects alike);
- streams are the SDK's `AsyncStream` of chunk objects;
- errors are the SDK's exceptions, of which litellm's are subclasses, so one classifier serves both.

One `AsyncOpenAI` client (one HTTP connection pool) per (event loop, base URL, key): a pool must not be
shared across event loops (the sync API runs on its own background loop). The pools of a loop are closed
when that loop shuts down its async generators (`asyncio.run` does, and so does the client's background
loop at exit), so no connection is left open for the garbage collector to warn about.
"""

from __future__ import annotations

import asyncio
import contextlib
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
    "OpenAITransport",
    "openai_request",
    "served_model_name",
]

# litellm providers whose endpoints speak the OpenAI chat-completions API as is.
OPENAI_COMPATIBLE_PROVIDERS = frozenset({"openai", "hosted_vllm"})
OPENAI_API_HOST = "api.openai.com"
# Keys of litellm's keyword dict that select the client rather than go into the request.
_CLIENT_KEYS = frozenset({"api_base", "api_key", "max_retries", "model"})

_create_params: frozenset[str] | None = None


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


class OpenAITransport:
    """Pooled `AsyncOpenAI` clients and the two calls `ModelClient` makes through them."""

    def __init__(self) -> None:
        self._clients: WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str | None, str], Any]]
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

    def _client(self, provider: str, api_base: str | None, api_key: str | None) -> Any:
        key = _api_key_for(provider, api_key)
        loop = asyncio.get_running_loop()
        per_loop = self._clients.get(loop)
        if per_loop is None:
            per_loop = self._clients[loop] = {}
        # The pool is keyed by a digest, so this dict never holds a key in the clear.
        pool_key = (api_base, hashlib.sha256(key.encode()).hexdigest())
        client = per_loop.get(pool_key)
        if client is None:
            import openai

            # max_retries=0: ModelClient retries; the SDK would otherwise retry twice inside each attempt.
            client = per_loop[pool_key] = openai.AsyncOpenAI(api_key=key, base_url=api_base, max_retries=0)
        return client

    async def acompletion(self, provider: str, served_model: str, kwargs: Mapping[str, Any]) -> Any:
        """One call: a plain-JSON dict for a whole answer, the SDK's `AsyncStream` when `stream=True`."""
        if asyncio.get_running_loop() not in self._closers:
            await self._watch_loop()
        client = self._client(provider, kwargs.get("api_base"), kwargs.get("api_key"))
        request = openai_request(served_model, kwargs)
        if request.get("stream"):
            return await client.chat.completions.create(**request)
        raw = await client.chat.completions.with_raw_response.create(**request)
        return json.loads(raw.http_response.content)

    async def aclose(self) -> None:
        """Close the pools of the running loop (the others close with their loops)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        clients = self._clients.pop(loop, {})
        for client in clients.values():
            await client.close()
