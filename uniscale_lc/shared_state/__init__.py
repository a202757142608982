"""One policy for many replicas: an append-only Redis log of update batches, folded by every replica.

See docs/scaling.md for the design, the guarantees and the staleness bound. Needs the `redis` extra
(`pip install 'uniscale-lc[redis]'`); importing this package does not import the Redis client.
"""

from __future__ import annotations

from .codec import Batch, CostObservation, RewardUpdate, UpdateEvent
from .feedback import SharedFeedback, reward_updates
from .fold import LearnerFold
from .redis_store import StoreUnavailable, parse_store_url
from .replica import CommitOutcome, SharedState

__all__ = [
    "Batch",
    "CommitOutcome",
    "CostObservation",
    "LearnerFold",
    "RewardUpdate",
    "SharedFeedback",
    "SharedState",
    "StoreUnavailable",
    "UpdateEvent",
    "parse_store_url",
    "reward_updates",
]
