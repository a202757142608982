"""What a replica folds from the shared log: the policy (reward updates), the cost model and the budget
pacer (cost observations). Applying the same batches in the same order to the same starting state gives
the same state on every replica: the fold is the only writer of what it holds.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from ..costs import BudgetPacer, CostModel
from ..errors import UniScaleError
from ..policy.base import Decision, Policy
from .codec import Batch, CostObservation, RewardUpdate

__all__ = ["LearnerFold"]

logger = logging.getLogger("uniscale_lc.shared_state")


class LearnerFold:
    """Applies update batches to a policy, and optionally to a cost model and a budget pacer."""

    def __init__(
        self,
        policy: Policy,
        cost_model: CostModel | None = None,
        pacer: BudgetPacer | None = None,
        *,
        updates: int = 0,
    ):
        self.policy = policy
        self.cost_model = cost_model
        self.pacer = pacer
        self.updates = (
            updates  # reward updates in the policy: from the snapshot it started from, plus applied
        )
        self.rejected = 0  # events every replica refuses alike (e.g. an arm unknown to this configuration)
        self._lock = threading.RLock()

    def fingerprint(self) -> dict[str, Any]:
        """What every replica on one namespace must share, or their folds would differ."""
        config = getattr(self.policy, "config", None)
        return {
            "policy": type(self.policy).__name__,
            "context_dim": getattr(self.policy, "context_dim", None),
            "config": config() if callable(config) else None,
            "cost_model": self.cost_model is not None,
            "pacer": None if self.pacer is None else self.pacer.target,
        }

    def apply(self, batch: Batch) -> None:
        with self._lock:
            for event in batch.events:
                try:
                    if isinstance(event, RewardUpdate):
                        decision = Decision(
                            arm_id=event.arm_id, context=event.context, decision_id=batch.batch_id
                        )
                        self.policy.update(decision, event.reward)
                        self.updates += 1
                    elif isinstance(event, CostObservation):
                        self._observe_cost(event)
                except UniScaleError as error:
                    self.rejected += 1
                    logger.warning("uniscale: shared update from %s refused (%s)", batch.origin, error)

    def _observe_cost(self, event: CostObservation) -> None:
        if self.cost_model is not None:
            self.cost_model.observe(
                event.arm_id,
                event.prompt_tokens,
                input_tokens=event.input_tokens,
                output_tokens=event.output_tokens,
                calls=event.calls,
                latency_s=event.latency_s,
            )
        if self.pacer is not None:
            self.pacer.observe(event.cost_usd)

    def state_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "policy": self.policy.state_dict(),
                "cost_model": self.cost_model.state_dict() if self.cost_model is not None else None,
                "pacer": self.pacer.state_dict() if self.pacer is not None else None,
                "updates": self.updates,
                "rejected": self.rejected,
            }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Adopt a snapshot; `StateError` (and nothing changed in the policy) when it does not parse."""
        with self._lock:
            self.policy.load_state_dict(state["policy"])
            if self.cost_model is not None and state.get("cost_model") is not None:
                self.cost_model.load_state_dict(state["cost_model"])
            if self.pacer is not None and state.get("pacer") is not None:
                self.pacer.load_state_dict(state["pacer"])
            self.updates = int(state.get("updates", 0))
            self.rejected = int(state.get("rejected", 0))
