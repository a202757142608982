"""Side observations: what the samples of one answered request say about other arms (a feedback graph).

A majority vote over n samples of a model also holds, in its first k samples, what every smaller vote of
that model (and its Single: sample 0) would have answered. When the reward is a function of the final
answer (a `feedback_fn`, a user's score of that answer, or recorded correctness in the replay), every arm
that would have given *the same answer* earns the same reward. Arms that would have answered differently
are not taught anything: their reward is unknown.

Pure functions over plain data, used alike by the live path (`core/engine.py`, from the strategy's
`details["sample_answers"]`) and the replay (`replay/runner.py`, from the recorded samples).

Bias, and why it is acceptable: an implied arm is taught only when it agrees with the pulled arm, so its
evidence is conditioned on agreement. An arm that is over-estimated this way gets pulled and then learns
its own reward directly, so the error corrects itself; docs/policy.md ("Side observations") has the
replay's before and after.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .strategies.aggregate import leader_is_safe, majority_vote
from .strategies.config import MajorityVote, Single, Strategy

__all__ = ["SampleArm", "answer_from_samples", "implied_arms", "same_answer_arms"]


@dataclass(frozen=True)
class SampleArm:
    """What side observations need of an arm: its id, its model's display name and its strategy."""

    arm_id: str
    model: str
    strategy: Strategy


def answer_from_samples(
    strategy: Strategy, answers: Sequence[str | None], extractor: str
) -> tuple[str | None, int] | None:
    """(final answer, samples used) that `strategy` would have returned from these samples, in draw order.

    None when the samples do not determine it: too few of them, a strategy that is not a vote or Single,
    or a vote that extracts answers another way (`extractor` is the one the samples were extracted with).
    """
    if isinstance(strategy, Single):
        return (answers[0], 1) if answers else None
    if not isinstance(strategy, MajorityVote) or strategy.extractor_name != extractor:
        return None
    if not strategy.early_stop:
        if len(answers) < strategy.n:
            return None
        vote = majority_vote(answers[: strategy.n])
        return vote.answer, strategy.n
    # An early-stopping vote looks at waves until its leader is safe against its *own* budget; it is
    # determined only if it stops within the samples we hold.
    wave, drawn = strategy.effective_wave_size, 0
    while drawn < strategy.n:
        drawn = min(strategy.n, drawn + wave)
        if drawn > len(answers):
            return None
        vote = majority_vote(answers[:drawn])
        if leader_is_safe(vote.votes, strategy.n - drawn):
            return vote.answer, drawn
    return majority_vote(answers[: strategy.n]).answer, strategy.n  # pragma: no cover - loop returns


def implied_arms(
    pulled: SampleArm, arms: Sequence[SampleArm], answers: Sequence[str | None], extractor: str
) -> dict[str, str | None]:
    """Every other arm of the pulled arm's model whose answer these samples determine, with that answer."""
    implied: dict[str, str | None] = {}
    for arm in arms:
        if arm.arm_id == pulled.arm_id or arm.model != pulled.model:
            continue
        found = answer_from_samples(arm.strategy, answers, extractor)
        if found is not None:
            implied[arm.arm_id] = found[0]
    return implied


def same_answer_arms(answer: str | None, implied: Mapping[str, str | None]) -> tuple[str, ...]:
    """The implied arms that would have returned `answer`: they earn the reward the answer earns.

    An arm with no extractable answer (None) agrees with nothing: its text would differ.
    """
    if answer is None:
        return ()
    return tuple(sorted(arm_id for arm_id, other in implied.items() if other == answer))
