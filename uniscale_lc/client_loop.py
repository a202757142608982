"""The sync bridge: one long-lived event loop in a daemon thread that runs every sync model call.

Its own module because its lifetime is the process's (drained at exit, before litellm's exit hooks), not
a client's; `run_sync` is also the sync face of the router and the chat model (docs/client.md, "Sync
calls" and "Exit").
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from .loop_cleanup import close_litellm_clients_of_running_loop, settle_litellm_logging

T = TypeVar("T")


class _BackgroundLoop:
    """One event loop in a daemon thread that runs every sync call.

    Why not `asyncio.run` per call: litellm caches HTTP sessions per event loop, and a fresh loop per call
    leaves those bound to closed loops; one long-lived loop also makes per-model concurrency limits hold
    across sync callers. Works the same whether or not the calling thread has a running loop (that loop is
    blocked for the duration, as any sync call would block it; async code should use `acomplete`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="uniscale-client-loop", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._ensure()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "a sync ModelClient call from inside its own loop would deadlock; await the async one"
            )
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        """Drain the loop (HTTP pools closed, pending tasks cancelled and awaited), then stop it.

        Without the drain, tasks still parked on the loop (litellm's logging worker, aiohttp's close
        waiters) are destroyed with it, and Python prints "Task was destroyed but it is pending" and
        "Event loop is closed" tracebacks at exit.
        """
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if thread.is_alive() and threading.current_thread() is not thread:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_drain_loop(), loop).result(timeout=5.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        if not thread.is_alive():
            loop.close()


async def _drain_loop() -> None:
    """Close what this loop holds open, while it still runs: litellm's queued logging callbacks and its
    worker, litellm's sessions (this loop's first, then whatever else litellm's own exit hook would close),
    every other task, the async generators (whose finalisers close the openai SDK pools, see
    transport_openai.py); then one more turn so the closed sockets' `connection_lost` callbacks run (a
    transport left "closing" is what `-X dev` reports as an unclosed transport)."""
    from . import client_request  # at call time: it imports this module, and it holds whether litellm is in

    loop = asyncio.get_running_loop()
    if client_request._litellm_module is not None:
        await settle_litellm_logging()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(close_litellm_clients_of_running_loop(), 2.0)
        with contextlib.suppress(Exception):
            from litellm.llms.custom_httpx.async_client_cleanup import close_litellm_async_clients

            await asyncio.wait_for(close_litellm_async_clients(), 2.0)
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks(loop) if task is not current]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    with contextlib.suppress(Exception):
        await loop.shutdown_asyncgens()
    await asyncio.sleep(0)


_BACKGROUND = _BackgroundLoop()
atexit.register(_BACKGROUND.close)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on the shared background loop: the sync face of every async API."""
    return _BACKGROUND.run(coro)


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()
