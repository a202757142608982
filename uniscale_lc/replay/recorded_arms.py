"""Arms rebuilt from recorded samples: what each (model, method, strategy, budget) would have returned.

For every generator (a recorded (model, method) pair):

- `Single`: its sample 0, as recorded.
- `MajorityVote(n)` for each n of the vote ladder that the generator's samples allow: the vote of the live
  strategy (`aggregate.majority_vote`) over the recorded `answer` strings of samples 0..n-1; its quality is
  the recorded correctness of the winning sample and its cost the sum of the n samples' costs.
- `MajorityVote(n, early_stop=True)`: `aggregate.early_stop_vote` with the live wave size; only the samples
  it drew are paid for.
- Composite methods (a verifier picking one of 100 samples, the Reflexion loop) are arms as recorded: one
  sample with its full recorded cost. Which methods are composite is not in the table format, so it is
  passed in (`COMPOSITE_METHODS` holds the ones the shared data README names).
- `BestOfN` needs a per-sample score that is not correctness (logprob, a judge, a verifier). None of the
  shared datasets records one, so no BestOfN arm is built; correctness is never used as a score.

A question for which an arm has no recorded rows (or too few samples for its budget) is *missing* for that
arm: `available[q, a]` is False and its quality/cost are NaN. The runner only offers a policy the arms
available for the current question, and `restrict_to_common` drops thin arms and then the questions that
the remaining arms do not all cover, so that fixed arms and learners are scored on the same questions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..strategies.aggregate import early_stop_vote, majority_vote
from ..strategies.config import BestOfN, MajorityVote, Reflection, Single, Strategy
from .data import Generator, OutcomeTable, OutcomeTableError

__all__ = [
    "COMPOSITE_METHODS",
    "DEFAULT_VOTE_LADDER",
    "ArmOutcomes",
    "RecordedArm",
    "build_recorded_arms",
]

# Odd budgets so that two-way ties are rarer; dense at the small budgets where accuracy moves most.
DEFAULT_VOTE_LADDER: tuple[int, ...] = (3, 5, 7, 9, 13, 17, 21)


def _recorded_verifier(question: str, answer: str) -> float:  # pragma: no cover - never called
    """Stands for a verifier whose choices were recorded, not rerun; only its name is used (arm labels)."""
    raise NotImplementedError("recorded verifier: outcomes come from the table, the verifier is not rerun")


_recorded_verifier.__name__ = "recorded_verifier"

# Composite methods named in ../shared/data/README.md, with the live strategy each corresponds to; the
# strategy only labels the arm and gives the policy its arm features (kind and budget).
COMPOSITE_METHODS: dict[str, Strategy] = {
    "verifier_best_of_100": BestOfN(n=100, scorer=_recorded_verifier),
    # The Reflexion loop's round count varies per problem and is not in the table; one round is its floor.
    "reflexion": Reflection(rounds=1),
}


@dataclass(frozen=True)
class RecordedArm:
    """One replayable arm: a generator plus the strategy rebuilt (or recorded) on top of its samples."""

    generator: Generator
    strategy: Strategy
    composite: bool = False

    @property
    def arm_id(self) -> str:
        """`model:method|strategy label`, the same shape as a live arm id (`display name|label`)."""
        return f"{self.generator.name}|{self.strategy.label}"

    @property
    def model(self) -> str:
        return self.generator.model

    @property
    def method(self) -> str:
        return self.generator.method

    @property
    def kind(self) -> str:
        """`single`, `majority_vote`, or `composite` (a recorded procedure such as Reflexion)."""
        return "composite" if self.composite else self.strategy.kind


@dataclass(frozen=True, eq=False)
class ArmOutcomes:
    """Per question x arm: quality, cost, tokens and model calls; NaN where the arm is missing."""

    dataset: str
    arms: tuple[RecordedArm, ...]
    qids: tuple[str, ...]
    prompts: tuple[str, ...]
    tasks: tuple[str, ...]
    quality: np.ndarray  # (n_questions, n_arms) float64 in [0, 1], NaN when missing
    cost_usd: np.ndarray  # (n_questions, n_arms) float64, NaN when missing
    input_tokens: np.ndarray  # (n_questions, n_arms) float64, NaN when missing
    output_tokens: np.ndarray  # (n_questions, n_arms) float64, NaN when missing
    # (n_questions, n_arms) float64, NaN when missing: samples drawn; for a composite, its strategy's
    # expected calls (the recorded procedure's own count is not in the table).
    calls: np.ndarray
    notes: tuple[str, ...] = field(default=())
    # (n_questions, n_arms) object: the final extracted answer each arm returns (None when it has none
    # or is missing); what side observations compare (uniscale_lc/side_observations.py).
    answers: np.ndarray | None = None

    @property
    def available(self) -> np.ndarray:
        """(n_questions, n_arms) bool: the arm has a recorded outcome for the question."""
        return ~np.isnan(self.quality)

    @property
    def arm_ids(self) -> tuple[str, ...]:
        return tuple(arm.arm_id for arm in self.arms)

    @property
    def n_questions(self) -> int:
        return len(self.qids)

    def arm_index(self, arm_id: str) -> int:
        try:
            return self.arm_ids.index(arm_id)
        except ValueError:
            raise OutcomeTableError(
                f"{self.dataset}: unknown arm id {arm_id!r}; known (first 10): {list(self.arm_ids)[:10]}"
            ) from None

    def coverage(self) -> np.ndarray:
        """Fraction of questions each arm covers."""
        return self.available.mean(axis=0)

    def mean_quality(self) -> np.ndarray:
        """Each arm's mean quality over the questions it covers."""
        return np.nanmean(self.quality, axis=0)

    def mean_cost_usd(self) -> np.ndarray:
        """Each arm's mean cost per query over the questions it covers."""
        return np.nanmean(self.cost_usd, axis=0)

    def select_arms(self, arm_ids: Sequence[str]) -> ArmOutcomes:
        """The same questions with only the named arms, in the given order."""
        columns = [self.arm_index(arm_id) for arm_id in arm_ids]
        if not columns:
            raise OutcomeTableError(f"{self.dataset}: select_arms needs at least one arm id")
        return self._take(slice(None), columns)

    def select_questions(self, question_indices: Sequence[int] | np.ndarray) -> ArmOutcomes:
        """The same arms over some questions only, in the given order."""
        return self._take(np.asarray(question_indices, dtype=np.int64), slice(None))

    def restrict_to_common(self, min_coverage: float = 0.9) -> ArmOutcomes:
        """Drop arms covering less than `min_coverage` of questions, then questions not covered by every arm.

        After this every arm is available for every question, so a fixed arm's accuracy and a learner's
        accuracy are means over the same questions. What was dropped is recorded in `notes`.
        """
        if not 0.0 <= min_coverage <= 1.0:
            raise OutcomeTableError(
                f"restrict_to_common.min_coverage: got {min_coverage}; use a fraction in [0, 1]"
            )
        coverage = self.coverage()
        keep_arms = [index for index in range(len(self.arms)) if coverage[index] >= min_coverage]
        if not keep_arms:
            raise OutcomeTableError(
                f"{self.dataset}: no arm covers >= {min_coverage:.0%} of questions; lower min_coverage"
            )
        dropped_arms = [self.arms[index].arm_id for index in range(len(self.arms)) if index not in keep_arms]
        covered = self.available[:, keep_arms].all(axis=1)
        keep_questions = np.flatnonzero(covered)
        if keep_questions.size == 0:
            raise OutcomeTableError(f"{self.dataset}: no question is covered by every kept arm")
        notes = list(self.notes)
        if dropped_arms:
            notes.append(
                f"dropped {len(dropped_arms)} arm(s) covering < {min_coverage:.0%} of questions: "
                + ", ".join(dropped_arms[:6])
                + (" ..." if len(dropped_arms) > 6 else "")
            )
        dropped_questions = self.n_questions - keep_questions.size
        if dropped_questions:
            notes.append(f"dropped {dropped_questions} question(s) not covered by every kept arm")
        restricted = self._take(keep_questions, keep_arms)
        return ArmOutcomes(**{**restricted.__dict__, "notes": tuple(notes)})

    def _take(self, rows: slice | np.ndarray, columns: slice | list[int]) -> ArmOutcomes:
        row_index = np.arange(self.n_questions)[rows]
        arms = self.arms[columns] if isinstance(columns, slice) else tuple(self.arms[c] for c in columns)

        def take(matrix: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(matrix[row_index][:, columns])

        return ArmOutcomes(
            dataset=self.dataset,
            arms=arms,
            qids=tuple(self.qids[i] for i in row_index),
            prompts=tuple(self.prompts[i] for i in row_index),
            tasks=tuple(self.tasks[i] for i in row_index),
            quality=take(self.quality),
            cost_usd=take(self.cost_usd),
            input_tokens=take(self.input_tokens),
            output_tokens=take(self.output_tokens),
            calls=take(self.calls),
            notes=self.notes,
            answers=None if self.answers is None else np.ascontiguousarray(self.answers[row_index][:, columns]),
        )


def _sample_grid(table: OutcomeTable, generator_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_questions, k) row-index grid of one generator's samples (-1 where absent), and k per question.

    Samples must be numbered 0..k-1 for a question to count k of them; a gap ends the usable run.
    """
    rows = table.generator_rows(generator_index)
    questions = table.row_question[rows]
    samples = table.row_sample[rows]
    width = int(samples.max()) + 1 if samples.size else 0
    grid = np.full((table.n_questions, max(width, 1)), -1, dtype=np.int64)
    grid[questions, samples] = np.arange(rows.start, rows.stop)
    present = grid >= 0
    # Leading run of present samples: 0..k-1 all recorded.
    contiguous = np.cumprod(present, axis=1).sum(axis=1)
    return grid, contiguous


def build_recorded_arms(
    table: OutcomeTable,
    *,
    vote_ladder: Sequence[int] = DEFAULT_VOTE_LADDER,
    early_stop: bool = True,
    composite_methods: dict[str, Strategy] | None = None,
) -> ArmOutcomes:
    """Every replayable arm of a table with its per-question outcomes (see the module docstring).

    Majority-vote arms are built for a generator only when it has at least 3 samples for some question and
    some non-empty answers (an answer-less table such as RouteLLM's MMLU cannot vote).
    """
    ladder = sorted({int(n) for n in vote_ladder})
    if any(n < 2 for n in ladder):
        raise OutcomeTableError(
            f"build_recorded_arms.vote_ladder: got {list(vote_ladder)}; budgets must be >= 2"
        )
    composites = COMPOSITE_METHODS if composite_methods is None else composite_methods
    arms: list[RecordedArm] = []
    columns: list[tuple[np.ndarray, ...]] = []
    n_questions = table.n_questions
    notes: list[str] = ["no BestOfN arms: no per-sample scores (logprob, judge, verifier) are recorded"]

    for g_index, generator in enumerate(table.generators):
        grid, contiguous = _sample_grid(table, g_index)
        first = grid[:, 0]
        has_first = first >= 0
        composite = generator.method in composites
        strategy: Strategy = composites[generator.method] if composite else Single()
        arms.append(RecordedArm(generator, strategy, composite=composite))
        columns.append(_single_column(table, first, has_first, strategy.expected_calls))
        if composite:
            continue
        answers_present = bool(np.any(table.row_answer[table.generator_rows(g_index)] != ""))
        if not answers_present:
            continue
        for n in ladder:
            covered = contiguous >= n
            if not covered.any():
                break
            arms.append(RecordedArm(generator, MajorityVote(n=n)))
            columns.append(_vote_column(table, grid, covered, n, early=False, wave_size=n))
            if early_stop:
                config = MajorityVote(n=n, early_stop=True)
                arms.append(RecordedArm(generator, config))
                columns.append(
                    _vote_column(table, grid, covered, n, early=True, wave_size=config.effective_wave_size)
                )

    stacked = [np.stack([column[part] for column in columns], axis=1) for part in range(6)]
    if stacked[0].shape != (n_questions, len(arms)):  # pragma: no cover - internal invariant
        raise AssertionError("arm outcome matrix has the wrong shape")
    return ArmOutcomes(
        dataset=table.name,
        arms=tuple(arms),
        qids=table.qids,
        prompts=table.prompts,
        tasks=table.tasks,
        quality=stacked[0],
        cost_usd=stacked[1],
        input_tokens=stacked[2],
        output_tokens=stacked[3],
        calls=stacked[4],
        notes=tuple(notes),
        answers=stacked[5],
    )


def _empty_column(n_questions: int) -> tuple[np.ndarray, ...]:
    """quality, cost, input tokens, output tokens, calls (NaN when missing) and answers (None)."""
    numeric = tuple(np.full(n_questions, np.nan) for _ in range(5))
    return (*numeric, np.full(n_questions, None, dtype=object))


def _single_column(
    table: OutcomeTable, first: np.ndarray, has_first: np.ndarray, calls: float
) -> tuple[np.ndarray, ...]:
    quality, cost, input_tokens, output_tokens, used, answers = _empty_column(table.n_questions)
    rows = first[has_first]
    answers[has_first] = [str(answer) or None for answer in table.row_answer[rows]]
    quality[has_first] = table.row_correct[rows]
    cost[has_first] = table.row_cost_usd[rows]
    input_tokens[has_first] = table.row_input_tokens[rows]
    output_tokens[has_first] = table.row_output_tokens[rows]
    used[has_first] = calls
    return quality, cost, input_tokens, output_tokens, used, answers


def _vote_column(
    table: OutcomeTable, grid: np.ndarray, covered: np.ndarray, n: int, *, early: bool, wave_size: int
) -> tuple[np.ndarray, ...]:
    """Replay the live vote per covered question; pay for the samples the vote drew."""
    quality, cost, input_tokens, output_tokens, used, final = _empty_column(table.n_questions)
    for question in np.flatnonzero(covered):
        rows = grid[question, :n]
        answers = [str(answer) for answer in table.row_answer[rows]]
        result = early_stop_vote(answers, n, wave_size) if early else majority_vote(answers)
        final[question] = result.answer or None
        drawn = rows[: result.samples_used]
        quality[question] = table.row_correct[rows[result.winner_index]]
        cost[question] = table.row_cost_usd[drawn].sum()
        input_tokens[question] = table.row_input_tokens[drawn].sum()
        output_tokens[question] = table.row_output_tokens[drawn].sum()
        used[question] = result.samples_used
    return quality, cost, input_tokens, output_tokens, used, final
