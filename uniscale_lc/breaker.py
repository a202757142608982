"""Per-endpoint circuit breakers: stop sending requests to a model that keeps failing, probe it later.

Failures are also taught to the policy (quality 0 for that decision), but an outage is an availability
fact, not a quality fact: without a breaker a long outage keeps costing failed attempts, and after it the
arm's learnt quality is depressed for a while. The breaker opens after `failure_threshold` consecutive
failures of a model, keeps its arms out of the candidates for `cooldown_s` (doubling on every failed probe,
up to `max_cooldown_s`), then lets one request through (half-open): success closes it, failure re-opens it.
Recovery after an endpoint heals is therefore bounded by the current cooldown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ["BreakerConfig", "CircuitBreakers"]


@dataclass(frozen=True)
class BreakerConfig:
    """How quickly a failing model is cut off and how often it is probed again."""

    failure_threshold: int = 3
    cooldown_s: float = 5.0
    max_cooldown_s: float = 300.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ConfigError(f"BreakerConfig.failure_threshold: got {self.failure_threshold!r}; use 1 or more")
        if not (0 < self.cooldown_s <= self.max_cooldown_s):
            raise ConfigError("BreakerConfig: need 0 < cooldown_s <= max_cooldown_s")


@dataclass
class _Breaker:
    """Closed: opened_until is None. Open: now < opened_until. Half-open: opened_until <= now."""

    consecutive_failures: int = 0
    opened_until: float | None = None
    cooldown_s: float = 0.0
    opened: int = field(default=0)


class CircuitBreakers:
    """One breaker per key (a model's display name); thread-safe; `clock` is injectable for tests."""

    def __init__(self, config: BreakerConfig | None = None, clock: Callable[[], float] = time.monotonic):
        self.config = config or BreakerConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, _Breaker] = {}

    def allow(self, key: str) -> bool:
        """Whether requests may go to `key` now: closed, or half-open after its cooldown (the next result decides).

        Half-open admits rather than reserving a single probe: a reserved probe that the policy then did not
        use would keep the breaker shut for good.
        """
        with self._lock:
            breaker = self._breakers.get(key)
            return breaker is None or breaker.opened_until is None or self._clock() >= breaker.opened_until

    def any_open(self) -> bool:
        """Whether any breaker is open or half-open: the common all-closed case can skip `filter`."""
        with self._lock:
            return any(breaker.opened_until is not None for breaker in self._breakers.values())

    def filter(self, candidates: Sequence[str], key_of: Mapping[str, str]) -> tuple[tuple[str, ...], list[str]]:
        """(allowed, blocked) candidate ids; if every candidate is blocked, all are allowed (try anyway)."""
        allowed = [arm_id for arm_id in candidates if self.allow(key_of[arm_id])]
        if not allowed:
            return tuple(candidates), []
        blocked = [arm_id for arm_id in candidates if arm_id not in allowed]
        return tuple(allowed), blocked

    def record_success(self, key: str) -> None:
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is not None:
                breaker.consecutive_failures = 0
                breaker.opened_until = None
                breaker.cooldown_s = 0.0

    def record_failure(self, key: str) -> bool:
        """Count a failure; returns True when this failure opened (or re-opened) the breaker."""
        with self._lock:
            now = self._clock()
            breaker = self._breakers.setdefault(key, _Breaker())
            breaker.consecutive_failures += 1
            if breaker.opened_until is not None:
                if now < breaker.opened_until:
                    return False  # already open: a request admitted earlier failed late
                # Half-open and the probe failed: back off exponentially.
                breaker.cooldown_s = min(self.config.max_cooldown_s, breaker.cooldown_s * 2)
            elif breaker.consecutive_failures >= self.config.failure_threshold:
                breaker.cooldown_s = self.config.cooldown_s
            else:
                return False
            breaker.opened_until = now + breaker.cooldown_s
            breaker.opened += 1
            return True

    def open_keys(self) -> list[str]:
        """Keys whose breaker is open now (for stats and the decision record)."""
        with self._lock:
            now = self._clock()
            return sorted(
                key for key, b in self._breakers.items() if b.opened_until is not None and now < b.opened_until
            )

    def snapshot(self) -> dict[str, dict[str, float | int | bool | None]]:
        with self._lock:
            return {
                key: {
                    "consecutive_failures": b.consecutive_failures,
                    "open": b.opened_until is not None,
                    "cooldown_s": b.cooldown_s,
                    "times_opened": b.opened,
                }
                for key, b in self._breakers.items()
            }
