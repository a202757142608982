"""Close the HTTP clients litellm keeps for an event loop when that loop ends, so `asyncio.run` leaves
no socket open for the garbage collector to warn about.

litellm caches its HTTP clients per event loop (the cache key ends in a token of the loop) and never
closes them when the loop ends: after `asyncio.run(chat.ainvoke(...))` that loop's client keeps its
aiohttp session and socket until the interpreter exits, when the collector prints `ResourceWarning:
unclosed transport`. As transport_openai.py does for its own pools, one parked async generator per loop
is finalised by the loop's `shutdown_asyncgens()` (`asyncio.run` calls it before closing the loop, and
so does the client's background loop at exit); it closes that loop's litellm clients while the loop
still runs. Nothing here imports litellm: a loop on which litellm was never used has nothing to close.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sys
from collections.abc import AsyncGenerator
from typing import Any
from weakref import WeakKeyDictionary

__all__ = ["close_litellm_clients_of_running_loop", "watch_running_loop"]

# The started closer of each loop; the loop tracks async generators weakly, so this keeps them alive.
_closers: WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = WeakKeyDictionary()


async def watch_running_loop() -> None:
    """Have the running loop close its litellm clients when it shuts down (once per loop; cheap after)."""
    loop = asyncio.get_running_loop()
    if loop in _closers:
        return
    closer = _closers[loop] = _close_with_loop()
    await closer.__anext__()  # started, so the loop finalises it in shutdown_asyncgens()


async def _close_with_loop() -> AsyncGenerator[None, None]:
    """Parked at its yield until the loop's `shutdown_asyncgens()` closes it; then closes the clients."""
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await close_litellm_clients_of_running_loop()


def _loop_token() -> Any:
    """litellm's token for the running loop (the suffix of its loop-bound cache keys), if it has one."""
    try:
        from litellm.caching.evicted_client_closer import running_loop_token
    except ImportError:  # another litellm layout: nothing we can tell apart safely
        return None
    return running_loop_token()


async def close_litellm_clients_of_running_loop() -> int:
    """Close and drop the clients litellm cached for the running loop; returns how many.

    Only this loop's entries: the clients of other loops (the background loop's) keep serving."""
    litellm = sys.modules.get("litellm")
    cache = getattr(litellm, "in_memory_llm_clients_cache", None)
    entries = getattr(cache, "cache_dict", None)
    if cache is None or not isinstance(entries, dict):
        return 0
    token = _loop_token()
    if token is None:
        return 0
    suffix = f"-{token}"
    closed = 0
    for key in [key for key in list(entries) if isinstance(key, str) and key.endswith(suffix)]:
        client = entries.get(key)
        with contextlib.suppress(Exception):
            cache.delete_cache(key)
        if client is not None and await _aclose(client):
            closed += 1
    if closed:
        await asyncio.sleep(0)  # the transports' connection_lost callbacks run while the loop still lives
    return closed


async def _aclose(client: Any) -> bool:
    """Close one cached client (a litellm handler, an SDK client, an httpx client); never raises."""
    close = getattr(client, "aclose", None) or getattr(client, "close", None)
    if not callable(close):
        return False
    try:
        result = close()
        if inspect.isawaitable(result):
            await result
    except Exception:
        return False
    return True
