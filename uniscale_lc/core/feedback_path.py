"""The feedback side of `RoutingEngine`: automatic scoring after an answer, resolving a feedback key to
its pending decisions (locally or on the shared store), teaching the policy, autosave."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..costs import reward_from
from ..errors import ConfigError, FeedbackError
from ..feedback import FeedbackResult, PendingDecision, validate_score
from ..policy import Decision
from .parts import EngineParts
from .results import Completion, RouteResult

__all__ = ["FeedbackPath", "ScoreHook", "pending_reward"]

logger = logging.getLogger("uniscale_lc.core.engine")

# A front-end's automatic scorer of one answer: a score in [0, 1], or None to leave it pending.
ScoreHook = Callable[[Completion], Any]


def _decision_key(key: Any) -> Any:
    """Our own result objects name their decision; anything else is a key for the feedback store."""
    if isinstance(key, (Completion, RouteResult)):
        return key.decision_id
    return key


def pending_reward(pending: PendingDecision, quality: float) -> float:
    """The reward a score of `pending` records: its quality less the cost term it was chosen under."""
    return reward_from(quality, pending.cost_usd, pending.reference_cost_usd, pending.cost_weight)


class FeedbackPath(EngineParts):
    """Feedback on the engine's pending decisions: local, or through the shared store when joined."""

    def _score_hook(self, messages: list[dict[str, Any]], score: ScoreHook | None) -> ScoreHook | None:
        """The front-end's scorer, else the configured feedback_fn over the OpenAI messages."""
        if score is not None:
            return score
        feedback_fn = self.config.feedback_fn
        if feedback_fn is None:
            return None
        return lambda completion: feedback_fn(messages, completion)

    async def _after_answer(
        self, score: ScoreHook | None, completion: Completion, pending: PendingDecision
    ) -> None:
        """Automatic feedback (if configured), then autosave off the event loop."""
        if score is not None:
            try:
                value = score(completion)
                if value is not None:
                    await self._aapply_feedback(pending.decision_id, value)
            except FeedbackError as error:
                logger.warning(
                    "uniscale: feedback_fn gave an unusable score (%s); the decision stays pending", error
                )
            except Exception:
                logger.exception("uniscale: feedback_fn raised; the decision stays pending")
        await self._aautosave()

    async def _aapply_feedback(self, key: Any, score: Any) -> FeedbackResult:
        """`_apply_feedback` off the event loop when it waits on the shared store."""
        if self._shared is not None:
            return await asyncio.to_thread(self._apply_feedback, key, score)
        return self._apply_feedback(key, score)

    def _apply_feedback(self, key: Any, score: Any) -> FeedbackResult:
        key = _decision_key(key)
        quality = validate_score(score)
        if self._shared is not None:
            shared, scored = self._shared.apply_feedback(
                key,
                quality,
                pending_reward,
            )
            for one in scored:  # every decision of a request id this call scored, on whichever replica
                self._stats.scored(one.arm_id, one.quality, one.reward)
            return shared
        with self._feedback_lock, self._lock:
            taken = self._feedback.take_all(key)
            if isinstance(taken, FeedbackResult):
                return dataclasses.replace(taken, duplicate=True)
            result: FeedbackResult | None = None
            for index, one in enumerate(taken):
                reward = reward_from(quality, one.cost_usd, one.reference_cost_usd, one.cost_weight)
                own, *side = one.updates(quality)
                try:
                    self._policy.update(*own)
                except Exception:
                    for left in taken[index:]:
                        self._feedback.restore(left)
                    raise
                self._learn_side_observations(side)
                result = FeedbackResult(one.decision_id, one.arm_id, quality, reward, decisions=len(taken))
                self._feedback.mark_done(one, result)
                self._stats.scored(one.arm_id, quality, reward)
        assert result is not None  # take_all returns at least one decision or raises
        return result

    def _learn_side_observations(self, updates: Sequence[tuple[Decision, float]]) -> None:
        """Teach the implied arms; an arm that has left the policy since is skipped, never fatal."""
        for decision, quality in updates:
            try:
                self._policy.update(decision, quality)
            except ConfigError as error:
                logger.info("uniscale: side observation for %s skipped (%s)", decision.arm_id, error)
                continue
            self._stats.side_observed()

    def _autosave(self) -> None:
        if self._autosaver is not None:
            self._autosaver.request()

    async def _aautosave(self) -> None:
        """Mark the state dirty; only a synchronous autosave (interval 0) goes to a worker thread."""
        if self._autosaver is None:
            return
        if self._autosaver.interval_s == 0:
            await asyncio.to_thread(self._autosaver.request)
        else:
            self._autosaver.request()
