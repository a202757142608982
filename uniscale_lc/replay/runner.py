"""Prequential replay with bandit feedback: the environment, learners, baselines and one run (sweeps: sweep.py).

Protocol, per seed: the questions are shuffled with that seed; for each question in turn the learner sees
the prompt's features (the live featurizer, computed once per dataset), the cost model's predicted cost of
every candidate arm (the live `CostModel`, turned into a penalty by `costs.cost_penalty`), picks one arm,
and only that arm's recorded outcome is revealed: its quality teaches the policy, its usage teaches the
cost model, exactly as `feedback()` would live. Nothing else about the question is ever shown.

Rewards reported by the replay use one reference cost per question, the largest realised cost among all
arms of the dataset for that question (`reward = quality - cost_weight * cost / reference`), so every
learner, baseline and hindsight comparator is scored on the same scale.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..arms import Arm, ArmSpace
from ..costs import COST_REFERENCES, CostModel, cost_penalty, estimate_tokens
from ..errors import ConfigError
from ..features_minilm import FEATURIZERS, make_featurizer
from ..model_spec import ModelSpec
from ..policy import EpsilonGreedy, LinUCB, UniformRandom
from ..policy.base import Decision, Policy
from ..side_observations import same_answer_arms
from ..tags import MAX_TAG_BUCKETS, tag_features
from .data import OutcomeTable, load_outcome_table
from .recorded_arms import DEFAULT_VOTE_LADDER, ArmOutcomes, build_recorded_arms

__all__ = [
    "DEFAULT_COST_WEIGHT",
    "DEFAULT_COST_WEIGHTS",
    "DRIFT_SCENARIOS",
    "LEARNERS",
    "DriftEvent",
    "PredictedCosts",
    "ReplayConfig",
    "ReplayEnvironment",
    "RunTrace",
    "filter_arms",
    "hindsight_choice",
    "make_policy",
    "question_order",
    "reward_matrix",
    "run_learner",
    "task_tag_features",
]

# Log-spaced from cost-blind to cost-dominated: with costs divided by the dearest arm's, the cheap end of
# the frontier needs weights of the order of the cost spread (datasets here span up to ~1,000x).
DEFAULT_COST_WEIGHTS: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
# The headline operating point: the dearest arm must buy 0.2 more quality than a free one (costs.py).
DEFAULT_COST_WEIGHT = 0.2
LEARNERS: tuple[str, ...] = (
    "uniscale",
    "routing_only",
    "tts_only",
    "epsilon_greedy",
    "random",
    "uniscale_warm",  # replay/warm.py: fitted on a labelled split, scored on the rest
    "offline_router",
    # replay/full_information.py: every arm's outcome after each question, so no exploration (references)
    "full_info_leader",
    "full_info_router",
)
DRIFT_SCENARIOS: tuple[str, ...] = ("task_blocks", "price_change", "outage")


@dataclass(frozen=True)
class ReplayConfig:
    """Everything that determines a replay; the defaults are the documented protocol (tuned to no dataset)."""

    seeds: int = 5
    cost_weights: tuple[float, ...] = DEFAULT_COST_WEIGHTS
    cost_weight: float = DEFAULT_COST_WEIGHT
    learners: tuple[str, ...] = LEARNERS
    arms: str | None = None
    min_coverage: float = 0.9
    vote_ladder: tuple[int, ...] = DEFAULT_VOTE_LADDER
    max_questions: int | None = None
    feature_dim: int = 64
    featurizer: str = "hashing"  # or "minilm" (the [minilm] extra; docs/features.md)
    # > 0: each question's recorded task is passed as a request tag (RouterConfig.tag_buckets), as an
    # application that knows its request types would; tables with one task get none (a constant says nothing).
    tag_buckets: int = 0
    linucb_alpha: float = 0.3  # the library default (LinUCB)
    linucb_per_arm: bool = True
    linucb_context_ridge: float | None = None  # None: the library default (CONTEXT_RIDGE_RATIO x ridge)
    linucb_arm_ridge: float | None = None  # None: the library default (ARM_RIDGE_RATIO x ridge)
    # As live (RouterConfig.side_observations): votes teach the smaller votes they imply. Off by default:
    # on GSM8K it did not pay (docs/results.md, "Side observations").
    side_observations: bool = False
    epsilon: float = 0.1
    # The live default ("max": the dearest candidate's cost); "geomean" is replayed as a variant only.
    cost_reference: str = "max"
    drift: tuple[str, ...] = ()
    drift_window: int = 200
    price_factor: float = 10.0
    curve_points: int = 50
    workers: int = 0  # worker processes for the sweep; 0 = one per CPU core

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ConfigError(f"ReplayConfig.seeds: got {self.seeds}; use >= 1")
        weights = tuple(float(w) for w in self.cost_weights)
        if not weights or any(not math.isfinite(w) or w < 0 for w in weights):
            raise ConfigError(f"ReplayConfig.cost_weights: got {self.cost_weights}; use finite weights >= 0")
        if not math.isfinite(self.cost_weight) or self.cost_weight < 0:
            raise ConfigError(f"ReplayConfig.cost_weight: got {self.cost_weight}; use a finite weight >= 0")
        unknown = [name for name in self.learners if name not in LEARNERS]
        if unknown:
            raise ConfigError(f"ReplayConfig.learners: unknown {unknown}; choose from {list(LEARNERS)}")
        unknown = [name for name in self.drift if name not in DRIFT_SCENARIOS]
        if unknown:
            raise ConfigError(f"ReplayConfig.drift: unknown {unknown}; choose from {list(DRIFT_SCENARIOS)}")
        if self.max_questions is not None and self.max_questions < 2:
            raise ConfigError(f"ReplayConfig.max_questions: got {self.max_questions}; use >= 2 or None")
        if self.featurizer not in FEATURIZERS:
            raise ConfigError(
                f"ReplayConfig.featurizer: got {self.featurizer!r}; choose from {list(FEATURIZERS)}"
            )
        if self.cost_reference not in COST_REFERENCES:
            raise ConfigError(
                f"ReplayConfig.cost_reference: got {self.cost_reference!r}; choose from {list(COST_REFERENCES)}"
            )
        if not 0 <= self.tag_buckets <= MAX_TAG_BUCKETS:
            raise ConfigError(
                f"ReplayConfig.tag_buckets: got {self.tag_buckets}; use 0 (no tags) to {MAX_TAG_BUCKETS}, e.g. 64"
            )
        if self.workers < 0:
            raise ConfigError(f"ReplayConfig.workers: got {self.workers}; use >= 1, or 0 for one per core")
        # The headline weight is always part of the sweep, so its point lies on every frontier.
        object.__setattr__(self, "cost_weights", tuple(sorted(set(weights) | {float(self.cost_weight)})))


# ----------------------------------------------------------------------------- environment


def filter_arms(outcomes: ArmOutcomes, spec: str | None) -> ArmOutcomes:
    """Keep the arms matching `spec`: comma-separated shell patterns over arm ids, or `kind:<kind>`.

    Examples: `kind:single`, `gpt-4:*,gpt-4o-mini*`, `*|single,*majority_vote(n=3*`. None or `all` keeps all.
    """
    if spec is None or spec.strip() in ("", "all"):
        return outcomes
    patterns = [part.strip() for part in spec.split(",") if part.strip()]
    keep = []
    for arm in outcomes.arms:
        for pattern in patterns:
            if pattern.startswith("kind:"):
                if arm.kind == pattern[5:]:
                    keep.append(arm.arm_id)
                    break
            elif fnmatch.fnmatchcase(arm.arm_id, pattern):
                keep.append(arm.arm_id)
                break
    if not keep:
        raise ConfigError(
            f"--arms: {spec!r} matches no arm; arm ids look like {list(outcomes.arm_ids)[:3]} "
            "(patterns are shell globs over ids, or kind:single / kind:majority_vote / kind:composite)"
        )
    return outcomes.select_arms(keep)


def task_tag_features(tasks: Sequence[str], buckets: int) -> np.ndarray:
    """Each question's task as a request tag (`tags.tag_features`), or a zero block when there is one task."""
    if len(set(tasks)) < 2:
        return np.zeros((len(tasks), buckets))
    cache = {task: tag_features((task,), buckets) for task in set(tasks)}
    return np.array([cache[task] for task in tasks]).reshape(len(tasks), buckets)


def _model_spec(table: OutcomeTable, model: str, name: str, price_factor: float = 1.0) -> ModelSpec:
    price = table.models[model]
    return ModelSpec(
        model=model,
        name=name,
        input_usd_per_mtok=price.input_usd_per_mtok * price_factor,
        output_usd_per_mtok=price.output_usd_per_mtok * price_factor,
        params_b=price.params_b,
    )


@dataclass(frozen=True, eq=False)
class ReplayEnvironment:
    """A dataset ready to replay: arm outcomes on common questions, cached features, live arm objects."""

    table: OutcomeTable
    outcomes: ArmOutcomes
    features: np.ndarray  # (n_questions, feature_dim [+ tag_buckets]): the live context, tags included
    prompt_tokens: np.ndarray  # (n_questions,), what the live path estimates before a call
    arm_models: tuple[str, ...]  # model name of each arm column
    reference_cost: np.ndarray  # (n_questions,), the dearest arm's realised cost per question
    featurizer_config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_directory(cls, data_dir: str | Path, config: ReplayConfig | None = None) -> ReplayEnvironment:
        """Load, rebuild arms, filter (`config.arms`), keep common questions, featurise once."""
        config = config or ReplayConfig()
        table = load_outcome_table(data_dir)
        return cls.from_table(table, config)

    @classmethod
    def from_table(cls, table: OutcomeTable, config: ReplayConfig) -> ReplayEnvironment:
        if config.max_questions is not None and config.max_questions < table.n_questions:
            # A seeded, sorted subset keeps CI replays small and reproducible.
            chosen = np.sort(
                np.random.default_rng(0).choice(table.n_questions, config.max_questions, replace=False)
            )
            table = table.subset(chosen)
        outcomes = build_recorded_arms(table, vote_ladder=config.vote_ladder)
        outcomes = filter_arms(outcomes, config.arms).restrict_to_common(config.min_coverage)
        featurizer = make_featurizer(config.featurizer, config.feature_dim)
        features = featurizer.transform_batch(list(outcomes.prompts))
        if config.tag_buckets:
            features = np.hstack([features, task_tag_features(outcomes.tasks, config.tag_buckets)])
        prompt_tokens = np.array([estimate_tokens(prompt) for prompt in outcomes.prompts], dtype=np.float64)
        return cls(
            table=table,
            outcomes=outcomes,
            features=features,
            prompt_tokens=prompt_tokens,
            arm_models=tuple(arm.model for arm in outcomes.arms),
            reference_cost=np.nanmax(outcomes.cost_usd, axis=1),
            featurizer_config=featurizer.config(),
        )

    @property
    def name(self) -> str:
        return self.outcomes.dataset

    @property
    def n_questions(self) -> int:
        return self.outcomes.n_questions

    def arm_space(self, columns: Sequence[int], price_factors: dict[str, float] | None = None) -> ArmSpace:
        """Live `Arm` objects for some arm columns; a model's prices scaled by `price_factors`."""
        factors = price_factors or {}
        arms = []
        for column in columns:
            recorded = self.outcomes.arms[column]
            spec = _model_spec(
                self.table, recorded.model, recorded.generator.name, factors.get(recorded.model, 1.0)
            )
            arms.append(Arm(spec, recorded.strategy))
        space = ArmSpace(arms)
        expected = tuple(self.outcomes.arms[column].arm_id for column in columns)
        if space.ids != expected:  # pragma: no cover - the id formats are defined to agree
            raise AssertionError(f"live arm ids {space.ids[:3]} differ from recorded ids {expected[:3]}")
        return space

    # ---------------------------------------------------------------- learner arm sets

    def learner_columns(self, learner: str) -> tuple[int, ...]:
        """Arm columns a learner chooses from (see docs/replay.md for why these sets)."""
        arms = self.outcomes.arms
        every = tuple(range(len(arms)))
        if learner in (
            "uniscale",
            "epsilon_greedy",
            "random",
            "uniscale_warm",
            "offline_router",
            "full_info_leader",
            "full_info_router",
        ):
            return every
        if learner == "routing_only":
            singles = tuple(i for i in every if arms[i].kind == "single")
            return singles or every
        if learner == "tts_only":
            model = self.tts_model()
            return tuple(i for i in every if arms[i].model == model)
        raise ConfigError(f"unknown learner {learner!r}; choose from {list(LEARNERS)}")

    def tts_model(self) -> str:
        """The one model TTS-only scales: most arms (strategy variety), then best arm accuracy, then name."""
        quality = self.outcomes.mean_quality()
        counts: dict[str, int] = {}
        best: dict[str, float] = {}
        for index, model in enumerate(self.arm_models):
            counts[model] = counts.get(model, 0) + 1
            best[model] = max(best.get(model, -1.0), float(quality[index]))
        return min(counts, key=lambda model: (-counts[model], -best[model], model))


# ----------------------------------------------------------------------------- one run


class PredictedCosts:
    """The live `CostModel`'s predictions, cached per arm as intercept + slope * prompt tokens.

    `CostModel.predict` is affine in the prompt's token count (calls x (prompt + overhead) x input price
    + output part), and its inputs for an arm change only when that arm's model (display name) is
    observed or repriced. So each arm is re-predicted with the live code only when stale: the same
    numbers as calling `predict` every step (tests check this), at a fraction of the time.
    """

    def __init__(self, cost_model: CostModel, space: ArmSpace):
        self.cost_model = cost_model
        self.space = space
        self._ids = space.ids
        self._index = {arm_id: i for i, arm_id in enumerate(self._ids)}
        self._group = np.array([space[arm_id].model.display_name for arm_id in self._ids], dtype=object)
        self._model = np.array([space[arm_id].model.model for arm_id in self._ids], dtype=object)
        self._intercept = np.zeros(len(self._index))
        self._slope = np.zeros(len(self._index))
        self._stale = np.ones(len(self._index), dtype=bool)

    def predict(self, prompt_tokens: float, arm_ids: Sequence[str]) -> np.ndarray:
        rows = np.fromiter((self._index[arm_id] for arm_id in arm_ids), dtype=np.intp, count=len(arm_ids))
        stale = rows[self._stale[rows]]
        if stale.size:
            stale_ids = [self._ids[i] for i in stale]
            prediction = self.cost_model.predict(0.0, stale_ids)
            prices = np.array(
                [float(self.space[arm_id].model.input_usd_per_mtok or 0.0) for arm_id in stale_ids]
            )
            self._intercept[stale] = prediction.cost_usd
            self._slope[stale] = prediction.calls * prices / 1e6
            self._stale[stale] = False
        return self._intercept[rows] + self._slope[rows] * prompt_tokens

    def invalidate(self, arm_id: str) -> None:
        """Mark every arm sharing `arm_id`'s model (display name) stale: its learnt means changed."""
        self._stale |= self._group == self._group[self._index[arm_id]]

    def invalidate_model(self, model: str) -> None:
        """Mark the arms of a repriced model stale."""
        self._stale |= self._model == model


@dataclass(frozen=True)
class DriftEvent:
    """A change in the world at a step: a model's price multiplied, or a model removed / added back."""

    step: int
    kind: str  # "price", "remove" or "add"
    model: str
    factor: float = 1.0


@dataclass(frozen=True)
class RunTrace:
    """What one learner did on one question order: arm column, quality, cost and reward per step."""

    learner: str
    seed: int
    cost_weight: float
    order: np.ndarray
    arm: np.ndarray
    quality: np.ndarray
    cost_usd: np.ndarray
    reward: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(self.quality.mean())

    @property
    def cost_usd_per_query(self) -> float:
        return float(self.cost_usd.mean())


def make_policy(learner: str, seed: int, config: ReplayConfig) -> Policy:
    """The policy object behind a learner name; LinUCB with the library defaults for every learner."""
    if learner in ("uniscale", "routing_only", "tts_only", "uniscale_warm"):
        return LinUCB(
            alpha=config.linucb_alpha,
            per_arm=config.linucb_per_arm,
            context_ridge=config.linucb_context_ridge,
            arm_ridge=config.linucb_arm_ridge,
            seed=seed,
        )
    if learner == "epsilon_greedy":
        return EpsilonGreedy(epsilon=config.epsilon, seed=seed)
    if learner == "random":
        return UniformRandom(seed=seed)
    raise ConfigError(f"unknown learner {learner!r}; choose from {list(LEARNERS)}")


def question_order(n_questions: int, seed: int) -> np.ndarray:
    """The seeded shuffle every learner sees for one seed (paired comparison across learners)."""
    return np.random.default_rng(seed).permutation(n_questions)


def run_learner(
    env: ReplayEnvironment,
    learner: str,
    seed: int,
    cost_weight: float,
    order: np.ndarray,
    config: ReplayConfig,
    *,
    events: Sequence[DriftEvent] = (),
    initial_price_factors: dict[str, float] | None = None,
    initially_removed: Iterable[str] = (),
    prepare: Callable[[Policy, CostModel], None] | None = None,
) -> RunTrace:
    """Replay one learner over `order` with bandit feedback; drift events apply at their steps.

    `prepare(policy, cost_model)` runs once before the first step (the warm learners fit there).
    """
    outcomes = env.outcomes
    columns = env.learner_columns(learner)
    price_factors = dict(initial_price_factors or {})
    removed = set(initially_removed)
    space = env.arm_space(columns, price_factors)
    column_of = {outcomes.arms[c].arm_id: c for c in columns}
    policy = make_policy(learner, seed, config)
    policy.bind(space, env.features.shape[1])
    cost_model = CostModel(space)
    if prepare is not None:
        prepare(policy, cost_model)
    predicted = PredictedCosts(cost_model, space)
    events_at: dict[int, list[DriftEvent]] = {}
    for event in events:
        events_at.setdefault(event.step, []).append(event)
    model_of_column = np.asarray(env.arm_models, dtype=object)
    factor_vector = _factor_vector(model_of_column, price_factors)

    steps = len(order)
    chosen = np.zeros(steps, dtype=np.int64)
    quality = np.zeros(steps)
    cost = np.zeros(steps)
    reward = np.zeros(steps)
    candidates = _candidates(env, columns, removed)
    siblings = _sibling_columns(outcomes, columns) if config.side_observations else {}
    for step, question in enumerate(order):
        for event in events_at.get(step, ()):
            if event.kind == "price":
                price_factors[event.model] = price_factors.get(event.model, 1.0) * event.factor
                factor_vector = _factor_vector(model_of_column, price_factors)
                _reprice(space, env, columns, price_factors, event.model)
                predicted.invalidate_model(event.model)
            elif event.kind == "remove":
                removed.add(event.model)
            elif event.kind == "add":
                removed.discard(event.model)
            candidates = _candidates(env, columns, removed)
        penalty, _ = cost_penalty(
            predicted.predict(float(env.prompt_tokens[question]), candidates),
            cost_weight,
            config.cost_reference,
        )
        decision = policy.select(env.features[question], candidates, penalty)
        column = column_of[decision.arm_id]
        arm_quality = float(outcomes.quality[question, column])
        arm_cost = float(outcomes.cost_usd[question, column] * factor_vector[column])
        policy.update(decision, arm_quality)
        if siblings.get(column):
            _teach_side_observations(
                policy, outcomes, question, column, siblings[column], decision.context, arm_quality
            )
        cost_model.observe(
            decision.arm_id,
            float(env.prompt_tokens[question]),
            input_tokens=float(outcomes.input_tokens[question, column]),
            output_tokens=float(outcomes.output_tokens[question, column]),
            calls=float(outcomes.calls[question, column]),
            latency_s=0.0,
        )
        predicted.invalidate(decision.arm_id)
        reference = float((outcomes.cost_usd[question] * factor_vector).max())
        chosen[step] = column
        quality[step] = arm_quality
        cost[step] = arm_cost
        reward[step] = arm_quality - (cost_weight * arm_cost / reference if reference > 0 else 0.0)
    return RunTrace(learner, seed, cost_weight, np.asarray(order), chosen, quality, cost, reward)


def _sibling_columns(outcomes: ArmOutcomes, columns: Sequence[int]) -> dict[int, tuple[int, ...]]:
    """Per learner column, the other vote/Single columns over the same recorded samples (same generator)."""
    if outcomes.answers is None:
        return {}
    by_generator: dict[Any, list[int]] = {}
    for column in columns:
        arm = outcomes.arms[column]
        if not arm.composite:
            by_generator.setdefault(arm.generator, []).append(column)
    return {
        column: tuple(other for other in group if other != column)
        for group in by_generator.values()
        for column in group
        if len(group) > 1
    }


def _teach_side_observations(
    policy: Policy,
    outcomes: ArmOutcomes,
    question: int,
    column: int,
    siblings: Sequence[int],
    context: np.ndarray,
    quality: float,
) -> None:
    """Teach the arms the pulled arm's samples imply and that agree with its answer (as live does).

    A sibling is determined by the pulled arm's samples when it needs no more of them (its recorded
    samples-used is at most the pulled arm's: votes read their samples as a prefix in draw order).
    A sibling shares the pulled arm's model, so an outage never removes one without the other.
    """
    assert outcomes.answers is not None  # _sibling_columns returned nothing otherwise
    drawn = outcomes.calls[question, column]
    implied = {
        outcomes.arms[other].arm_id: outcomes.answers[question, other]
        for other in siblings
        if outcomes.calls[question, other] <= drawn
    }
    for arm_id in same_answer_arms(outcomes.answers[question, column], implied):
        policy.update(Decision(arm_id=arm_id, context=context), quality)


def _factor_vector(model_of_column: np.ndarray, price_factors: dict[str, float]) -> np.ndarray:
    return np.array([price_factors.get(model, 1.0) for model in model_of_column], dtype=np.float64)


def _candidates(env: ReplayEnvironment, columns: Sequence[int], removed: set[str]) -> tuple[str, ...]:
    """Arm ids of the learner's columns whose model is serving (an outage removes a whole model)."""
    ids = tuple(
        env.outcomes.arms[column].arm_id for column in columns if env.arm_models[column] not in removed
    )
    if not ids:
        raise ConfigError(
            "drift: every arm of this learner is removed; an outage must leave some model serving"
        )
    return ids


def _reprice(
    space: ArmSpace, env: ReplayEnvironment, columns: Sequence[int], factors: dict[str, float], model: str
) -> None:
    """A price change as it happens live: the model's arms are removed and added back with new prices.

    Policy and cost model key what they learnt by arm id, so nothing learnt is lost. When the model owns
    every arm nothing is done: the penalty divides by the dearest arm, so a uniform repricing is a no-op.
    """
    affected = [column for column in columns if env.arm_models[column] == model]
    if len(affected) == len(space):
        return
    for column in affected:
        recorded = env.outcomes.arms[column]
        spec = _model_spec(env.table, model, recorded.generator.name, factors.get(model, 1.0))
        space.remove(recorded.arm_id)
        space.add(Arm(spec, recorded.strategy))


def reward_matrix(env: ReplayEnvironment, cost_weight: float) -> np.ndarray:
    """Every arm's reward on every question: quality minus the cost penalty, with the dearest arm's realised
    cost of that question as the reference (what `run_learner` pays when no drift reprices a model)."""
    reference = np.where(env.reference_cost > 0, env.reference_cost, 1.0)[:, None]
    return env.outcomes.quality - cost_weight * env.outcomes.cost_usd / reference


def hindsight_choice(env: ReplayEnvironment, cost_weight: float, per_question: bool) -> np.ndarray:
    """Arm column(s) maximising reward in hindsight: one fixed arm, or the oracle's arm per question.

    Ties go to the cheaper arm; at weight 0 the oracle is the cheapest correct arm of each question.
    """
    outcomes = env.outcomes
    reward = reward_matrix(env, cost_weight)
    if per_question:
        # Lexicographic: highest reward, then lowest cost, then first column.
        order = np.lexsort(
            (np.arange(reward.shape[1])[None, :].repeat(reward.shape[0], 0), outcomes.cost_usd, -reward),
            axis=1,
        )
        return order[:, 0]
    mean_reward = reward.mean(axis=0)
    mean_cost = outcomes.cost_usd.mean(axis=0)
    return np.array([int(np.lexsort((np.arange(mean_reward.size), mean_cost, -mean_reward))[0])])
