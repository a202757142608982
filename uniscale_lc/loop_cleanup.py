"""Close what litellm keeps for an event loop when that loop ends, and run our exit drain before litellm's
exit hooks, so interpreter exit has nothing left to warn about.

litellm caches its HTTP clients per event loop (the cache key ends in a token of the loop) and never
closes them when the loop ends: after `asyncio.run(chat.ainvoke(...))` that loop's client keeps its
aiohttp session and socket until the interpreter exits, when the collector prints `ResourceWarning:
unclosed transport`. As transport_openai.py does for its own pools, one parked async generator per loop
is finalised by the loop's `shutdown_asyncgens()` (`asyncio.run` calls it before closing the loop, and
so does the client's background loop at exit); it closes that loop's litellm clients while the loop
still runs. Nothing here imports litellm on its own: a loop on which litellm was never used has nothing to close.

litellm's logging worker is one per process, bound to the last loop that enqueued on it. `asyncio.run`
cancels every task (the worker's included) before it finalises async generators, so the callbacks queued
on that loop would be carried to the next loop by litellm itself, with a warning ("LoggingWorker: event
loop changed; carried 1 pending ...", litellm_core_utils/logging_worker.py, `_ensure_queue`). The parked
generator therefore first runs them on the loop that queued them, through the worker's public `flush()`
and `stop()` (`settle_litellm_logging`), which restart the worker there; the background loop does the
same from client_loop.py's drain.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib
import inspect
import sys
from collections.abc import AsyncGenerator, Callable
from typing import Any
from weakref import WeakKeyDictionary

__all__ = [
    "close_litellm_clients_of_running_loop",
    "register_exit_hook_before_litellms",
    "settle_litellm_logging",
    "watch_running_loop",
]

# How long the background loop's drain waits for litellm's queued logging callbacks (local bookkeeping,
# no I/O, unless the user registered callbacks of their own).
LOGGING_FLUSH_TIMEOUT_S = 2.0

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
            await settle_litellm_logging()
        with contextlib.suppress(Exception):
            await close_litellm_clients_of_running_loop()


def register_exit_hook_before_litellms(litellm: Any, hook: Callable[[], None]) -> None:
    """Register `hook` at exit so that it runs before litellm's own exit hooks (atexit runs last-in first).

    litellm registers its async-client cleanup on the first attribute looked up that its module lacks
    (`litellm/__init__.py`, module `__getattr__`), which is usually in the middle of the first call, i.e.
    after us; that hook then closes the background loop's aiohttp sessions from the main thread on a
    throwaway loop while the background loop still runs: a cross-thread close that leaves the socket
    "closing" forever (`ResourceWarning: unclosed transport`) and, under asyncio debug mode, a task on a
    loop that never runs again ("Task was destroyed but it is pending"). So trigger that registration now,
    then register ours. A litellm without the lazy hook registers nothing here, which is as good.
    """
    if getattr(litellm, "_async_client_cleanup_registered", True) is False:
        getattr(litellm, "_uniscale_registers_litellm_exit_hook", None)  # the lookup is what registers it
    with contextlib.suppress(ImportError):  # registers the logging worker's exit flush (import-time)
        importlib.import_module("litellm.litellm_core_utils.logging_worker")
    atexit.register(hook)


async def settle_litellm_logging() -> None:
    """Run litellm's logging callbacks queued on the running loop and stop its worker there, if the worker
    is bound to this loop; call it before cancelling the loop's tasks (a callback task cancelled before it
    started is never marked done, and the flush would wait out its timeout)."""
    module = sys.modules.get("litellm.litellm_core_utils.logging_worker")
    worker = getattr(module, "GLOBAL_LOGGING_WORKER", None)
    if worker is None or getattr(worker, "_bound_loop", None) is not asyncio.get_running_loop():
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(worker.flush(), LOGGING_FLUSH_TIMEOUT_S)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(worker.stop(timeout=1.0), LOGGING_FLUSH_TIMEOUT_S)


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
