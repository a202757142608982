"""Test-time-scaling strategies: typed configurations, pure aggregation, and execution over the client."""

from .config import (
    STRATEGY_KINDS,
    BestOfN,
    JudgeScorer,
    MajorityVote,
    Reflection,
    Single,
    Strategy,
    StrategyKind,
)

__all__ = [
    "STRATEGY_KINDS",
    "BestOfN",
    "JudgeScorer",
    "MajorityVote",
    "Reflection",
    "Single",
    "Strategy",
    "StrategyKind",
]
