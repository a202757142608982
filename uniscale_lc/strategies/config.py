"""Typed configurations of the test-time-scaling strategies; what they cost and how they are labelled.

Execution lives beside this module; here are only the value objects the arm space and the policy see.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..model_spec import ModelSpec

StrategyKind = Literal["single", "best_of_n", "majority_vote", "reflection"]
STRATEGY_KINDS: tuple[StrategyKind, ...] = ("single", "best_of_n", "majority_vote", "reflection")

ExtractorName = Literal["number", "choice", "boxed", "text"]
ScorerName = Literal["logprob"]


def _callable_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


class _StrategyBase(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, extra="forbid")
    kind: ClassVar[StrategyKind]

    @property
    def budget(self) -> int:
        """The strategy's budget knob (samples or rounds); 1 for Single."""
        return 1

    @property
    def expected_calls(self) -> float:
        """Model calls per request before any early stop; the cost model's prior."""
        return 1.0

    @property
    def label(self) -> str:
        """Readable, stable name used in arm ids, e.g. `majority_vote(n=5)`."""
        raise NotImplementedError


class Single(_StrategyBase):
    """One sample from the model; the only strategy that streams tokens."""

    kind: ClassVar[StrategyKind] = "single"

    @property
    def label(self) -> str:
        return "single"


class JudgeScorer(BaseModel):
    """Score each candidate with a pointwise LLM judge running on `model`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model: ModelSpec
    max_score: int = Field(default=10, ge=2, description="the judge rates on 1..max_score")

    @property
    def name(self) -> str:
        return f"judge:{self.model.display_name}"


Scorer = ScorerName | JudgeScorer | Callable[[str, str], float]


class BestOfN(_StrategyBase):
    """Draw n samples and return the one the scorer rates highest."""

    kind: ClassVar[StrategyKind] = "best_of_n"
    n: int = Field(ge=2, le=256, description="number of candidate samples")
    scorer: Scorer = "logprob"

    @field_validator("scorer")
    @classmethod
    def _check_scorer(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "logprob":
            raise ValueError(
                "scorer must be 'logprob', a JudgeScorer, or a callable (question, answer) -> float"
            )
        return value

    @property
    def scorer_name(self) -> str:
        if isinstance(self.scorer, str):
            return self.scorer
        if isinstance(self.scorer, JudgeScorer):
            return self.scorer.name
        return _callable_name(self.scorer)

    @property
    def budget(self) -> int:
        return self.n

    @property
    def expected_calls(self) -> float:
        return float(self.n * (2 if isinstance(self.scorer, JudgeScorer) else 1))

    @property
    def label(self) -> str:
        suffix = "" if self.scorer == "logprob" else f",scorer={self.scorer_name}"
        return f"best_of_n(n={self.n}{suffix})"


class MajorityVote(_StrategyBase):
    """Draw n samples, extract each final answer, return a sample with the most common answer.

    With `early_stop`, samples come in waves of `wave_size` and drawing stops as soon as the leader
    cannot be overtaken by the samples still to come.
    """

    kind: ClassVar[StrategyKind] = "majority_vote"
    n: int = Field(ge=1, le=256, description="maximum number of samples")
    extractor: ExtractorName | Callable[[str], str | None] = "number"
    early_stop: bool = False
    wave_size: int | None = Field(default=None, ge=1, description="samples per wave when early_stop is on")

    @property
    def extractor_name(self) -> str:
        return self.extractor if isinstance(self.extractor, str) else _callable_name(self.extractor)

    @property
    def effective_wave_size(self) -> int:
        """Default wave: about a third of n (at least 2), so a clear majority stops after two waves."""
        if self.wave_size is not None:
            return min(self.wave_size, self.n)
        return min(self.n, max(2, math.ceil(self.n / 3)))

    @property
    def budget(self) -> int:
        return self.n

    @property
    def expected_calls(self) -> float:
        return float(self.n)

    @property
    def label(self) -> str:
        parts = [f"n={self.n}"]
        if self.extractor != "number":
            parts.append(f"extractor={self.extractor_name}")
        if self.early_stop:
            parts.append("early_stop")
        return f"majority_vote({','.join(parts)})"


class Reflection(_StrategyBase):
    """Draft, then up to `rounds` of critique and revision; stops when the critic approves."""

    kind: ClassVar[StrategyKind] = "reflection"
    rounds: int = Field(ge=1, le=16, description="maximum critique-and-revise rounds")
    critic: ModelSpec | None = Field(
        default=None, description="model that critiques; default: the arm's model"
    )

    @property
    def budget(self) -> int:
        return self.rounds

    @property
    def expected_calls(self) -> float:
        return float(1 + 2 * self.rounds)

    @property
    def label(self) -> str:
        suffix = f",critic={self.critic.display_name}" if self.critic is not None else ""
        return f"reflection(rounds={self.rounds}{suffix})"


Strategy = Single | BestOfN | MajorityVote | Reflection
