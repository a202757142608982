"""The Router's learning side effects, routed through the shared store when `shared_state` is set.

The router keeps selecting from its own policy object; with a link, nothing but the fold writes to that
policy, its cost model and its pacer: a failed arm, an answer's usage and a feedback become batches in
the shared log and reach this replica's copy the way they reach every other replica's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..costs import BudgetPacer, CostModel
from ..feedback import FeedbackResult, FeedbackStore, PendingDecision
from ..policy.base import Decision
from .codec import Batch, CostObservation
from .feedback import SharedFeedback, reward_updates
from .fold import LearnerFold
from .replica import SharedState

__all__ = ["RouterLink"]

RewardOf = Callable[[PendingDecision, float], float]
"""The reward reported for a feedback (quality less the cost term): `costs.reward_from` of the pending."""


class RouterLink:
    """One router's connection to a shared store; built by `RouterLink.connect` at router start-up."""

    def __init__(self, shared: SharedState, feedback: SharedFeedback):
        self.shared = shared
        self.feedback = feedback

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        policy: Any,
        cost_model: CostModel,
        pacer: BudgetPacer | None,
        local: FeedbackStore,
        feedback_ttl_s: float,
        updates: int = 0,
        reward_of: RewardOf | None = None,
        on_scored: Callable[[FeedbackResult], None] | None = None,
    ) -> RouterLink:
        """Join the store at `url`: its snapshot and log replace what this router holds (a first replica
        on an empty store seeds it with its own state, e.g. loaded from `state_path`). With `reward_of`,
        this replica scores its own decisions that reach the store after a feedback on their request id
        (told to `on_scored`)."""
        fold = LearnerFold(policy, cost_model, pacer, updates=updates)
        shared = SharedState.connect(url, fold, feedback_ttl_s=feedback_ttl_s)
        learn = None if reward_of is None else _learner(reward_of)
        return cls(shared, SharedFeedback(shared, local, learn=learn, on_scored=on_scored))

    @property
    def updates(self) -> int:
        """Reward updates in the shared policy (every replica's), as folded into this replica."""
        return self.shared.fold.updates

    def learn_failure(self, decision: Decision) -> None:
        """A failed arm teaches quality 0, through the log; the request path does not wait for it."""
        batch = Batch(
            "fail:" + decision.decision_id, self.shared.replica_id, reward_updates([(decision, 0.0)])
        )
        self.shared.submit(batch)

    def keep_pending(
        self, pending: PendingDecision, usage: Mapping[str, Any] | None = None, prompt_tokens: float = 0.0
    ) -> list[PendingDecision]:
        """Keep `pending` for feedback on any replica; `usage` (the answer's tokens, calls, latency and
        cost) goes to every replica's cost model and pacer. Returns local decisions dropped for room."""
        events = []
        if usage is not None:
            events.append(
                CostObservation(
                    pending.arm_id,
                    float(prompt_tokens),
                    float(usage["input_tokens"]),
                    float(usage["output_tokens"]),
                    float(usage["calls"]),
                    float(usage["latency_s"]),
                    float(usage["cost_usd"]),
                )
            )
        return self.feedback.add(pending, usage=events)

    def apply_feedback(
        self, key: Any, quality: float, reward_of: RewardOf
    ) -> tuple[FeedbackResult, list[FeedbackResult]]:
        """Score every decision behind `key` once across the fleet (all of a request id's); waits on Redis
        (call off the event loop). Returns the result to report and each decision newly scored."""

        return self.feedback.apply_all(key, quality, _learner(reward_of))

    def stats(self) -> dict[str, Any]:
        return self.shared.stats()

    def close(self) -> None:
        self.shared.close()


def _learner(reward_of: RewardOf) -> Callable[[PendingDecision, float], tuple[Any, FeedbackResult]]:
    """The updates a score teaches (the arm, and its side observations) and the result it reports."""

    def learn(pending: PendingDecision, value: float) -> tuple[Any, FeedbackResult]:
        result = FeedbackResult(pending.decision_id, pending.arm_id, value, reward_of(pending, value))
        return reward_updates(pending.updates(value)), result

    return learn
