"""Feedback on any replica, applied exactly once: pending decisions live in the store (with the feedback
TTL), and a local copy of this replica's own decisions answers feedback while Redis is unreachable.

Exactly once: the updates of one feedback are committed as one batch keyed by the decision id; the
commit script appends a batch id once, so concurrent feedback on two replicas, a retry after a lost
reply and a replay after an outage all end in one batch in the log (the others get `duplicate=True`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import FeedbackError
from ..feedback import FeedbackResult, FeedbackStore, PendingDecision, normalise_key
from .codec import Batch, RewardUpdate, UpdateEvent
from .redis_store import StoreUnavailable
from .replica import SharedState

__all__ = ["Learn", "SharedFeedback"]

Learn = Callable[[PendingDecision, float], tuple[Sequence[UpdateEvent], FeedbackResult]]
"""Turns a pending decision and its quality into the updates to apply and the result to report."""


def reward_updates(updates: Sequence[tuple[Any, float]]) -> tuple[RewardUpdate, ...]:
    """(decision, reward) pairs, as `policy.update` takes them, as reward-update events."""
    return tuple(
        RewardUpdate(decision.context, decision.arm_id, float(reward)) for decision, reward in updates
    )


class SharedFeedback:
    """Pending decisions for a replica on a shared store; `apply` is the one way feedback teaches."""

    def __init__(self, shared: SharedState, local: FeedbackStore, *, lookup_grace_s: float = 0.25):
        self.shared = shared
        self.local = local
        self.lookup_grace_s = lookup_grace_s

    def add(self, pending: PendingDecision, usage: Sequence[UpdateEvent] = ()) -> list[PendingDecision]:
        """Keep `pending` locally and in the store, with the `usage` events of its answer (cost model,
        pacer); returns the local decisions dropped to make room."""
        dropped = self.local.add(pending)
        batch = Batch("usage:" + pending.decision_id, self.shared.replica_id, tuple(usage)) if usage else None
        self.shared.put_pending(pending, batch)
        return dropped

    def apply(self, key: Any, quality: float, learn: Learn) -> FeedbackResult:
        """Score the decision behind `key` (decision id, run id or request id) once across the fleet."""
        name = normalise_key(key)
        reachable = True
        # A decision this replica made needs no look-up: the commit itself refuses a second scoring.
        found: PendingDecision | FeedbackResult | None = self.local.find(name)
        if found is None:
            try:
                found = self._resolve_with_grace(name)
            except StoreUnavailable:
                reachable = False
        if isinstance(found, FeedbackResult):
            self._forget_local(name, found)
            return dataclasses.replace(found, duplicate=True)
        pending = found
        if pending is None:
            previous = self.local.previous_result(name)
            if previous is not None:
                return dataclasses.replace(previous, duplicate=True)
            try:
                self.local.take(name)  # raises the standard "no pending decision" error
            except FeedbackError as error:
                if reachable:
                    raise
                raise FeedbackError(
                    f"{error}; the shared store is unreachable now and this replica did not make that "
                    "decision: retry when Redis is back"
                ) from None
        assert pending is not None
        events, result = learn(pending, quality)
        outcome = self.shared.commit(
            Batch(pending.decision_id, self.shared.replica_id, tuple(events)), result, pending.decision_id
        )
        if outcome.status == "duplicate":
            first = outcome.result or result
            self._forget_local(name, first)
            return dataclasses.replace(first, duplicate=True)
        self._forget_local(name, result)
        if outcome.status == "applied":
            self.shared.sync()  # read-your-writes: the local copy holds this feedback when we return
        return result

    def _resolve_with_grace(self, name: str) -> PendingDecision | FeedbackResult | None:
        """The store's record of `name`; an unknown key is looked up again for `lookup_grace_s`, since the
        answering replica's writer thread may still be writing that decision (within a round trip)."""
        deadline = time.monotonic() + self.lookup_grace_s
        delay = 0.005
        while True:
            found = self.shared.resolve(name)
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _forget_local(self, name: str, result: FeedbackResult) -> None:
        """Drop the local copy of a scored decision and remember its result for local duplicates."""
        pending = self.local.find(name) or self.local.find(result.decision_id)
        if pending is not None:
            taken = self.local.take(pending.decision_id)
            if isinstance(taken, PendingDecision):
                self.local.mark_done(taken, result)
