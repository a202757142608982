"""Feedback on any replica, applied exactly once: pending decisions live in the store (with the feedback
TTL), and a local copy of this replica's own decisions answers feedback while Redis is unreachable.

Exactly once: the updates of one feedback are committed as one batch keyed by the decision id; the
commit script appends a batch id once, so concurrent feedback on two replicas, a retry after a lost
reply and a replay after an outage all end in one batch in the log (the others get `duplicate=True`).
A request id (or parent run id) is a group key: its feedback commits one such batch per decision made
under it, on any replica, in one round trip, so each is scored once as well.
"""

from __future__ import annotations

import dataclasses
import json
import math
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

    def __init__(
        self,
        shared: SharedState,
        local: FeedbackStore,
        *,
        lookup_grace_s: float = 0.25,
        learn: Learn | None = None,
        on_scored: Callable[[FeedbackResult], None] | None = None,
    ):
        """`learn` (and `on_scored`, told of each result) lets this replica's writer score a decision that
        reached the store after a feedback on its request id, though made before it (see `_score_late`)."""
        self.shared = shared
        self.local = local
        self.lookup_grace_s = lookup_grace_s
        self.learn = learn
        self.on_scored = on_scored
        if learn is not None:
            shared.on_late_member = self._score_late

    def add(self, pending: PendingDecision, usage: Sequence[UpdateEvent] = ()) -> list[PendingDecision]:
        """Keep `pending` locally and in the store, with the `usage` events of its answer (cost model,
        pacer); returns the local decisions dropped to make room."""
        dropped = self.local.add(pending)
        batch = Batch("usage:" + pending.decision_id, self.shared.replica_id, tuple(usage)) if usage else None
        self.shared.put_pending(pending, batch)
        return dropped

    def apply(self, key: Any, quality: float, learn: Learn) -> FeedbackResult:
        """Score the decisions behind `key` (decision id, run id or request id) once across the fleet."""
        return self.apply_all(key, quality, learn)[0]

    def apply_all(
        self, key: Any, quality: float, learn: Learn
    ) -> tuple[FeedbackResult, list[FeedbackResult]]:
        """Score every decision `key` names once across the fleet: one for a decision id or run id, every
        one pending under a group key (request id, parent run id), whichever replicas made them.

        Returns the result to report (the last decision's; `decisions` says how many this call scored;
        `duplicate=True` when it scored none) and the result of each decision this call scored."""
        name = normalise_key(key)
        # Set on the group as it is read: a member that reaches the store later is scored with this.
        mark = _encode_mark(quality, time.time())
        local = self.local.find_all(name)
        reachable = True
        found: list[PendingDecision | FeedbackResult] = []
        if len(local) == 1 and _names_alone(local[0], name):
            # A decision this replica made needs no look-up: the commit itself refuses a second scoring.
            found = list(local)
        else:
            try:
                # Decisions this replica made may still be in its outbox: they need no grace period.
                found = self.shared.resolve(name, mark) if local else self._resolve_with_grace(name, mark)
            except StoreUnavailable:
                reachable = False
            found = _merged(found, local)
        pending = sorted((f for f in found if isinstance(f, PendingDecision)), key=lambda p: p.created_at)
        if not pending:
            return self._repeat(name, [f for f in found if isinstance(f, FeedbackResult)], reachable), []
        learnt = [learn(one, quality) for one in pending]
        results = [dataclasses.replace(result, decisions=len(pending)) for _, result in learnt]
        batches = [
            (Batch(one.decision_id, self.shared.replica_id, tuple(events)), result, one.decision_id)
            for one, (events, _), result in zip(pending, learnt, results, strict=True)
        ]
        outcomes = self.shared.commit_all(batches)
        scored: list[FeedbackResult] = []
        first: FeedbackResult | None = None
        for one, result, outcome in zip(pending, results, outcomes, strict=True):
            if outcome.status == "duplicate":  # scored meanwhile, on another replica
                first = outcome.result or result
                self._forget_local(one.decision_id, first)
                continue
            self._forget_local(one.decision_id, result)
            scored.append(result)
        if any(outcome.status == "applied" for outcome in outcomes):
            self.shared.sync()  # read-your-writes: the local copy holds this feedback when we return
        if not scored:
            assert first is not None
            return dataclasses.replace(first, duplicate=True), []
        return dataclasses.replace(scored[-1], decisions=len(scored)), scored

    def _score_late(self, pending: PendingDecision, marks: list[bytes]) -> None:
        """Called by the writer once `pending` is in the store, with its groups' score marks: a feedback
        on its request id reached the store first. A decision made before that feedback was sent belongs
        to what it scored and is scored now (once: the commit is keyed by its decision id); one made
        after it waits for a feedback of its own, as on the local path."""
        for raw in marks:
            mark = _decode_mark(raw)
            if mark is None or self.learn is None or pending.created_at > mark[1]:
                continue
            events, result = self.learn(pending, mark[0])
            batch = Batch(pending.decision_id, self.shared.replica_id, tuple(events))
            outcome = self.shared.commit(batch, result, pending.decision_id)
            if outcome.status == "duplicate":
                self._forget_local(pending.decision_id, outcome.result or result)
                return
            self._forget_local(pending.decision_id, result)
            if self.on_scored is not None:
                self.on_scored(result)
            return

    def _repeat(self, name: str, earlier: list[FeedbackResult], reachable: bool) -> FeedbackResult:
        """Nothing pending under `name`: the first result of a repeat, else the standard error."""
        for result in earlier:
            self._forget_local(result.decision_id, result)
        if earlier:
            return dataclasses.replace(earlier[-1], duplicate=True)
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
        raise AssertionError("take found a decision that find_all did not")  # pragma: no cover

    def _resolve_with_grace(self, name: str, mark: bytes) -> list[PendingDecision | FeedbackResult]:
        """The store's records under `name`; an unknown key is looked up again for `lookup_grace_s`, since
        the answering replica's writer thread may still be writing that decision (within a round trip)."""
        deadline = time.monotonic() + self.lookup_grace_s
        delay = 0.005
        while True:
            found = self.shared.resolve(name, mark)
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _forget_local(self, decision_id: str, result: FeedbackResult) -> None:
        """Drop the local copy of a scored decision and remember its result for local duplicates."""
        taken = self.local.take(decision_id) if self.local.find(decision_id) is not None else None
        if isinstance(taken, PendingDecision):
            self.local.mark_done(taken, result)


def _names_alone(pending: PendingDecision, name: str) -> bool:
    """Whether `name` is the decision's own id or run id (not a group key that may name more)."""
    return name == pending.decision_id or (
        pending.run_id is not None and normalise_key(pending.run_id) == name
    )


def _merged(
    stored: list[PendingDecision | FeedbackResult], local: list[PendingDecision]
) -> list[PendingDecision | FeedbackResult]:
    """The store's records, then this replica's pending decisions the store does not hold yet (still in
    the outbox, or written while it was unreachable): the store's record of a decision wins."""
    known = {item.decision_id for item in stored}
    return stored + [one for one in local if one.decision_id not in known]


_MAX_MARK_BYTES = 256


def _encode_mark(quality: float, sent_at: float) -> bytes:
    return json.dumps({"quality": quality, "sent_at": sent_at}).encode()


def _decode_mark(raw: bytes) -> tuple[float, float] | None:
    """(quality, time the feedback was sent) of a group's score mark; None for anything else."""
    if len(raw) > _MAX_MARK_BYTES:
        return None
    try:
        data = json.loads(raw)
        quality, sent_at = float(data["quality"]), float(data["sent_at"])
    except (ValueError, TypeError, KeyError):
        return None
    if not (math.isfinite(sent_at) and 0.0 <= quality <= 1.0):
        return None
    return quality, sent_at
