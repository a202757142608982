"""Sync faces over the async core: run a coroutine or drive an async iterator on the client's shared loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

from .. import client as client_module

__all__ = ["iterate_sync", "run_sync"]

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run on the client's shared background loop, so a sync call never runs on (or blocks) the caller's loop."""
    return client_module.run_sync(coro)


def iterate_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Drive an async iterator from sync code on the shared background loop; closes it when left early."""

    async def _next() -> T:
        return await agen.__anext__()

    try:
        while True:
            try:
                yield run_sync(_next())
            except StopAsyncIteration:
                return
    finally:
        close = getattr(agen, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                run_sync(close())
