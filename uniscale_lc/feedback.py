"""Pending decisions waiting for feedback: lookup by several keys, expiry, idempotence, persistence.

A decision stays pending from the moment its answer is returned until the caller scores it, which may
be seconds or days later, in another process after a restart. It can be found by any of three keys:

- its `decision_id` (in `AIMessage.response_metadata["uniscale"]["decision_id"]`);
- the LangChain run id of the model call (`run_manager.run_id`; also accepted as the message id
  `lc_run--<run id>` or `lc_run--<run id>-0` that LangChain gives the returned `AIMessage`);
- a caller request id, passed as `config={"metadata": {"uniscale_request_id": "..."}}`;
- the LangChain parent run id of the model call (the chain or agent step that called it).

A request id and a parent run id are group keys: an agent run makes several model calls under one, and
feedback on it scores every decision still pending under it (`FeedbackResult.decisions` says how many).

Defaults: a pending decision expires after `DEFAULT_TTL_S` (7 days) and at most `DEFAULT_MAX_PENDING`
(10,000) are kept; beyond that the oldest are dropped first. Feedback on a decision that was already
scored is a no-op that returns the first result (retries from a flaky network are safe); the record of
scored decisions is bounded by the same limit.

This module is a plain data structure behind a lock; the chat model does the learning.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any

from .errors import ConfigError, FeedbackError
from .policy.base import Decision

__all__ = [
    "DEFAULT_MAX_PENDING",
    "DEFAULT_TTL_S",
    "REQUEST_ID_METADATA_KEY",
    "FeedbackResult",
    "FeedbackStore",
    "PendingDecision",
    "normalise_key",
    "validate_score",
]

DEFAULT_TTL_S = 7 * 24 * 3600.0
DEFAULT_MAX_PENDING = 10_000
REQUEST_ID_METADATA_KEY = "uniscale_request_id"
_RUN_PREFIX = "lc_run--"
_UUID_CHARS = 36


@dataclasses.dataclass(frozen=True)
class PendingDecision:
    """What is needed to learn from a decision later: the decision and what the answer cost."""

    decision: Decision
    cost_usd: float
    reference_cost_usd: float
    cost_weight: float
    run_id: str | None = None
    request_id: str | None = None
    created_at: float = dataclasses.field(default_factory=time.time)
    parent_run_id: str | None = None
    # Arms the answer's samples imply would have given the same answer (side_observations.py): the
    # score of this answer teaches them too.
    implied_arms: tuple[str, ...] = ()

    @property
    def group_keys(self) -> list[str]:
        """The keys that name this decision together with others (request id, parent run id)."""
        return [normalise_key(key) for key in (self.request_id, self.parent_run_id) if key]

    @property
    def all_keys(self) -> list[str]:
        """Every key besides the decision id that finds this decision."""
        return [normalise_key(key) for key in (self.run_id, self.request_id, self.parent_run_id) if key]

    @property
    def decision_id(self) -> str:
        return self.decision.decision_id

    def updates(self, quality: float) -> list[tuple[Decision, float]]:
        """Every (decision, reward) this score teaches: the answering arm first, then its side observations."""
        own = [(self.decision, quality)]
        return own + [
            (
                Decision(
                    arm_id=arm_id,
                    context=self.decision.context,
                    policy=self.decision.policy,
                    decision_id=f"{self.decision_id}:{arm_id}",
                    created_at=self.decision.created_at,
                ),
                quality,
            )
            for arm_id in self.implied_arms
        ]

    @property
    def arm_id(self) -> str:
        return self.decision.arm_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision.to_dict(),
            "cost_usd": self.cost_usd,
            "reference_cost_usd": self.reference_cost_usd,
            "cost_weight": self.cost_weight,
            "run_id": self.run_id,
            "request_id": self.request_id,
            "created_at": self.created_at,
            "parent_run_id": self.parent_run_id,
            "implied_arms": list(self.implied_arms),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingDecision:
        return cls(
            decision=Decision.from_dict(data["decision"]),
            cost_usd=float(data["cost_usd"]),
            reference_cost_usd=float(data["reference_cost_usd"]),
            cost_weight=float(data["cost_weight"]),
            run_id=None if data.get("run_id") is None else str(data["run_id"]),
            request_id=None if data.get("request_id") is None else str(data["request_id"]),
            created_at=float(data.get("created_at", 0.0)),
            parent_run_id=None if data.get("parent_run_id") is None else str(data["parent_run_id"]),
            implied_arms=_arm_ids(data.get("implied_arms", ())),
        )


def _arm_ids(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise ValueError("implied_arms: expected a list of arm ids")
    return tuple(value)


@dataclasses.dataclass(frozen=True)
class FeedbackResult:
    """What one feedback call did: the score learnt, the reward recorded, whether it was a repeat.

    Feedback on a group key (request id, parent run id) scores every decision pending under it; the result
    is that of the last one, and `decisions` says how many were scored.
    """

    decision_id: str
    arm_id: str
    quality: float
    reward: float
    duplicate: bool = False
    decisions: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_MAX_SHOWN = 80  # what an error echoes of a caller's value: a 10 MB key must not become a 10 MB message


def shown(value: Any) -> str:
    """`repr(value)` cut to 80 characters (with its full length), safe for any object, for error messages."""
    try:
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
            return f"<int of {value.bit_length()} bits>"  # repr of a huge int is slow, or refused past 4300 digits
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    if len(text) <= _MAX_SHOWN:
        return text
    return f"{text[: _MAX_SHOWN - 3]}... ({len(text):,} characters)"


def validate_score(score: Any, field: str = "score") -> float:
    """A quality score as a float in [0, 1], or a `FeedbackError` naming the field and the fix."""
    if isinstance(score, bool) or not isinstance(score, Real):
        raise FeedbackError(
            f"feedback.{field}: got {shown(score)} ({type(score).__name__}); pass a number in [0, 1], "
            "e.g. 1.0 for a good answer and 0.0 for a bad one"
        )
    try:
        value = float(score)
    except (OverflowError, ValueError):  # an int such as 10**400 has no float
        raise FeedbackError(
            f"feedback.{field}: got {shown(score)}; scores are quality in [0, 1] (rescale, e.g. stars/5)"
        ) from None
    if not math.isfinite(value):
        raise FeedbackError(f"feedback.{field}: got {value!r}; pass a finite number in [0, 1]")
    if not 0.0 <= value <= 1.0:
        raise FeedbackError(
            f"feedback.{field}: got {value!r}; scores are quality in [0, 1] (rescale, e.g. stars/5)"
        )
    return value


def normalise_key(key: Any) -> str:
    """A lookup key as a string: UUIDs as text, message ids `lc_run--<uuid>[-i]` as the run id."""
    if isinstance(key, uuid.UUID):
        return str(key)
    if not isinstance(key, str) or not key:
        raise FeedbackError(
            f"feedback.key: got {shown(key)} ({type(key).__name__}); pass the decision_id, the run id, the "
            "AIMessage id, or the uniscale_request_id you set in config metadata"
        )
    if key.startswith(_RUN_PREFIX):
        candidate = key[len(_RUN_PREFIX) : len(_RUN_PREFIX) + _UUID_CHARS]
        try:
            return str(uuid.UUID(candidate))
        except ValueError:
            return key
    return key


class FeedbackStore:
    """Pending decisions by decision id, run id and request id; thread-safe; bounded in time and count."""

    def __init__(
        self,
        ttl_s: float = DEFAULT_TTL_S,
        max_pending: int = DEFAULT_MAX_PENDING,
        *,
        clock: Callable[[], float] = time.time,
    ):
        if not (isinstance(ttl_s, (int, float)) and math.isfinite(ttl_s) and ttl_s > 0):
            raise ConfigError(f"FeedbackStore.ttl_s: got {ttl_s!r}; use seconds > 0 (default 7 days)")
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigError(f"FeedbackStore.max_pending: got {max_pending!r}; use an int >= 1")
        self.ttl_s = float(ttl_s)
        self.max_pending = max_pending
        self._clock = clock
        self._lock = threading.RLock()
        self._pending: OrderedDict[str, PendingDecision] = OrderedDict()  # by decision id, oldest first
        self._aliases: dict[str, str] = {}  # run id -> decision id
        self._groups: dict[str, list[str]] = {}  # request id / parent run id -> decision ids, oldest first
        self._done: OrderedDict[str, FeedbackResult] = OrderedDict()  # scored, for idempotence
        self._done_aliases: dict[str, str] = {}
        self._aliases_of_done: dict[str, list[str]] = {}  # decision id -> its aliases, for O(1) eviction
        self.expired = 0
        self.evicted = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def __contains__(self, key: object) -> bool:
        try:
            return self.find(key) is not None
        except FeedbackError:
            return False

    # ------------------------------------------------------------------ adding and expiring

    def add(self, pending: PendingDecision) -> list[PendingDecision]:
        """Keep a decision for later feedback; returns the decisions dropped to make room (oldest first)."""
        with self._lock:
            dropped = self._expire()
            decision_id = pending.decision_id
            self._pending[decision_id] = pending
            self._index(pending)
            while len(self._pending) > self.max_pending:
                _, oldest = self._pending.popitem(last=False)
                self._forget_aliases(oldest)
                self.evicted += 1
                dropped.append(oldest)
            return dropped

    def expire(self) -> list[PendingDecision]:
        """Drop decisions older than `ttl_s`; returns them."""
        with self._lock:
            return self._expire()

    def _expire(self) -> list[PendingDecision]:
        cutoff = self._clock() - self.ttl_s
        dropped: list[PendingDecision] = []
        while self._pending:
            decision_id, oldest = next(iter(self._pending.items()))
            if oldest.created_at >= cutoff:
                break
            del self._pending[decision_id]
            self._forget_aliases(oldest)
            self.expired += 1
            dropped.append(oldest)
        return dropped

    def _index(self, pending: PendingDecision) -> None:
        if pending.run_id:
            self._aliases[normalise_key(pending.run_id)] = pending.decision_id
        for group in pending.group_keys:
            members = self._groups.setdefault(group, [])
            if pending.decision_id not in members:
                members.append(pending.decision_id)

    def _forget_aliases(self, pending: PendingDecision) -> None:
        if pending.run_id and self._aliases.get(normalise_key(pending.run_id)) == pending.decision_id:
            del self._aliases[normalise_key(pending.run_id)]
        for group in pending.group_keys:
            members = self._groups.get(group)
            if members is not None and pending.decision_id in members:
                members.remove(pending.decision_id)
                if not members:
                    del self._groups[group]

    # ------------------------------------------------------------------ lookup and resolution

    def find(self, key: Any) -> PendingDecision | None:
        """The pending decision for `key`, or None (no error; see `take` for the strict form)."""
        found = self._find_all(normalise_key(key))
        return found[-1] if found else None

    def find_all(self, key: Any) -> list[PendingDecision]:
        """Every pending decision `key` names (all of a group, oldest first); [] when none."""
        return self._find_all(normalise_key(key))

    def _find_all(self, name: str) -> list[PendingDecision]:
        """The pending decisions `name` finds: one by decision or run id, all of a group, newest last."""
        with self._lock:
            self._expire()
            decision_id = name if name in self._pending else self._aliases.get(name)
            if decision_id is not None:
                return [self._pending[decision_id]]
            return [self._pending[member] for member in self._groups.get(name, ())]

    def previous_result(self, key: Any) -> FeedbackResult | None:
        """The result of earlier feedback on `key`, if it was already scored."""
        name = normalise_key(key)
        with self._lock:
            decision_id = name if name in self._done else self._done_aliases.get(name)
            return None if decision_id is None else self._done.get(decision_id)

    def take(self, key: Any) -> PendingDecision | FeedbackResult:
        """Remove and return the pending decision for `key`, or the earlier result if already scored.

        Raises `FeedbackError` when the key is unknown (never issued, expired or evicted).
        """
        name = normalise_key(key)
        with self._lock:
            pending = self.find(name)
            if pending is not None:
                del self._pending[pending.decision_id]
                self._forget_aliases(pending)
                return pending
            previous = self.previous_result(name)
            if previous is not None:
                return previous
        raise FeedbackError(
            f"feedback.key: no pending decision for {shown(name)}. Use the decision_id from "
            "response_metadata['uniscale'], the AIMessage id / run id, or the uniscale_request_id set in "
            f"config metadata; decisions expire after {self.ttl_s:g} s and at most {self.max_pending} are "
            "kept (FeedbackStore.ttl_s / max_pending)"
        )

    def take_all(self, key: Any) -> list[PendingDecision] | FeedbackResult:
        """Like `take`, for every decision `key` finds: a group key (request id, parent run id) takes all
        that are pending under it, oldest first. Raises `FeedbackError` when the key is unknown."""
        name = normalise_key(key)
        with self._lock:
            found = self._find_all(name)
            if found:
                for pending in found:
                    del self._pending[pending.decision_id]
                    self._forget_aliases(pending)
                return found
            previous = self.previous_result(name)
            if previous is not None:
                return previous
        return [self.take(name)]  # type: ignore[list-item]  # raises the standard "no pending decision" error

    def restore(self, pending: PendingDecision) -> None:
        """Put back a decision taken by `take` when learning from it failed, so nothing is lost."""
        with self._lock:
            self._pending[pending.decision_id] = pending
            self._pending.move_to_end(pending.decision_id, last=False)
            self._index(pending)

    def mark_done(self, pending: PendingDecision, result: FeedbackResult) -> None:
        """Remember that `pending` was scored, so repeated feedback is answered without relearning."""
        with self._lock:
            self._done[pending.decision_id] = result
            names = pending.all_keys
            for name in names:
                self._done_aliases[name] = pending.decision_id
            self._aliases_of_done[pending.decision_id] = names
            self._trim_done()

    def _trim_done(self) -> None:
        while len(self._done) > self.max_pending:
            old_id, _ = self._done.popitem(last=False)
            for alias in self._aliases_of_done.pop(old_id, []):
                if self._done_aliases.get(alias) == old_id:
                    del self._done_aliases[alias]

    def pending(self) -> list[PendingDecision]:
        """Every pending decision, oldest first."""
        with self._lock:
            self._expire()
            return list(self._pending.values())

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready state: pending decisions and the bounded record of scored ones."""
        with self._lock:
            return {
                "ttl_s": self.ttl_s,
                "max_pending": self.max_pending,
                "pending": [pending.to_dict() for pending in self._pending.values()],
                "done": [
                    {**result.to_dict(), "aliases": list(self._aliases_of_done.get(key, []))}
                    for key, result in self._done.items()
                ],
            }

    def load_dict(
        self, data: Mapping[str, Any], keep: Callable[[PendingDecision], bool] | None = None
    ) -> int:
        """Replace the content with saved state; `keep` filters decisions (e.g. arms no longer served).

        Returns how many saved pending decisions were dropped (expired, filtered or unreadable).
        """
        pending: OrderedDict[str, PendingDecision] = OrderedDict()
        dropped = 0
        for item in data.get("pending", []):
            try:
                entry = PendingDecision.from_dict(item)
            except (KeyError, TypeError, ValueError):
                dropped += 1
                continue
            if keep is not None and not keep(entry):
                dropped += 1
                continue
            pending[entry.decision_id] = entry
        done: OrderedDict[str, FeedbackResult] = OrderedDict()
        done_aliases: dict[str, str] = {}
        aliases_of_done: dict[str, list[str]] = {}
        for item in data.get("done", []):
            try:
                result = FeedbackResult(
                    decision_id=str(item["decision_id"]),
                    arm_id=str(item["arm_id"]),
                    quality=float(item["quality"]),
                    reward=float(item["reward"]),
                    duplicate=False,
                    decisions=int(item.get("decisions", 1)),
                )
            except (KeyError, TypeError, ValueError):
                continue
            done[result.decision_id] = result
            names = [str(alias) for alias in item.get("aliases", [])]
            for name in names:
                done_aliases[name] = result.decision_id
            aliases_of_done[result.decision_id] = names
        with self._lock:
            self._pending = OrderedDict(sorted(pending.items(), key=lambda kv: kv[1].created_at))
            self._aliases, self._groups = {}, {}
            for entry in self._pending.values():
                self._index(entry)
            self._done, self._done_aliases, self._aliases_of_done = done, done_aliases, aliases_of_done
            self._trim_done()
            before = len(self._pending)
            self._expire()
            dropped += before - len(self._pending)
            while len(self._pending) > self.max_pending:
                _, oldest = self._pending.popitem(last=False)
                self._forget_aliases(oldest)
                dropped += 1
        return dropped

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        ttl_s: float | None = None,
        max_pending: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> FeedbackStore:
        """A store rebuilt from `to_dict` output (limits from the data unless given)."""
        store = cls(
            ttl_s=float(data.get("ttl_s", DEFAULT_TTL_S)) if ttl_s is None else ttl_s,
            max_pending=int(data.get("max_pending", DEFAULT_MAX_PENDING))
            if max_pending is None
            else max_pending,
            clock=clock,
        )
        store.load_dict(data)
        return store
