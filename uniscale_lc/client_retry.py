"""When a model call tries again and when it gives up: the retry policy, Retry-After, the call's deadline.

Pure decisions plus the one clock a call runs against; split from client.py so the retry loop there reads
as policy calls. `ModelClient` is the only user; see docs/client.md ("Retries", "Timeouts").
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import random
import sys
import time
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from .errors import ConfigError, field_error

T = TypeVar("T")


def _guard_s(timeout_s: float) -> float:
    """Our wall-clock bound on one wait, a safety net behind litellm's own `timeout`.

    Loose on purpose: litellm's first call in a process does seconds of lazy set-up (more for streams) that
    must not count as the provider timing out.
    """
    return 2.0 * timeout_s + 1.0


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter, for 429, timeouts, 5xx and malformed replies.

    `max_attempts` counts the first try. A Retry-After longer than `max_retry_after_s` is not waited for:
    the error is raised at once so the router can try another arm.
    """

    max_attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    jitter: float = 0.5
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise field_error("RetryPolicy", "max_attempts", self.max_attempts, "use 1 (no retries) or more")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or not 0 <= self.jitter <= 1:
            raise ConfigError("RetryPolicy: delays must be >= 0 and jitter in [0, 1]")

    def deadline_s(self, timeout_s: float) -> float:
        """The ceiling of one model call, every attempt and wait included: max_attempts x (2 x timeout_s + 1).

        Each attempt (connect, first byte, whole body or stream) is bounded by 2 x timeout_s + 1 as a whole;
        a wait (backoff or Retry-After) that would leave less than timeout_s before the ceiling is not made.
        """
        return self.max_attempts * _guard_s(timeout_s)

    def delay_s(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float | None:
        """Seconds to wait after failed attempt `attempt` (1-based); None means do not retry."""
        if attempt >= self.max_attempts:
            return None
        if retry_after_s is not None:
            if retry_after_s > self.max_retry_after_s:
                return None
            # The server named its time; a little jitter on top keeps clients from returning in lockstep.
            return retry_after_s + rng.uniform(0.0, self.jitter * min(retry_after_s, self.base_delay_s))
        backoff = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return backoff * (1.0 - self.jitter * rng.random())


def parse_retry_after(headers: Mapping[str, Any] | None, now: float | None = None) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date); None when absent or bad."""
    if not headers:
        return None
    lowered = {str(key).lower(): value for key, value in headers.items()}
    milliseconds = lowered.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000.0)
        except (TypeError, ValueError):
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class _DeadlinePassed(Exception):
    """The call reached its total deadline (`RetryPolicy.deadline_s`)."""


class _Deadline:
    """The wall-clock end of one model call; time spent waiting for our own concurrency slot is added back."""

    def __init__(self, timeout_s: float, total_s: float) -> None:
        self.guard_s = _guard_s(timeout_s)
        self.total_s = total_s
        self.at = time.monotonic() + total_s

    def remaining(self) -> float:
        return self.at - time.monotonic()

    async def bound(self, awaitable: Awaitable[T]) -> T:
        """Await with the per-wait guard, cut to what is left of the call's deadline."""
        remaining = self.remaining()
        if remaining >= self.guard_s:
            return await _deadline(awaitable, self.guard_s)
        if remaining <= 0:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise _DeadlinePassed(f"passed the call deadline of {self.total_s:.1f} s")
        try:
            return await _deadline(awaitable, remaining)
        except asyncio.TimeoutError:
            raise _DeadlinePassed(f"passed the call deadline of {self.total_s:.1f} s") from None

    async def acquire(self, limit: asyncio.Semaphore) -> None:
        started = time.monotonic()
        await limit.acquire()
        self.at += time.monotonic() - started


if sys.version_info >= (3, 11):

    async def _deadline(awaitable: Awaitable[T], seconds: float) -> T:
        """Bound a wait without a new task: `wait_for` wraps the call in a task, and the extra loop turns let
        litellm's post-call logging run before we return (about 1 ms per call, measured in docs/client.md)."""
        async with asyncio.timeout(seconds):
            return await awaitable

else:  # Python 3.10 has no asyncio.timeout

    async def _deadline(awaitable: Awaitable[T], seconds: float) -> T:
        return await asyncio.wait_for(awaitable, seconds)
