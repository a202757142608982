"""Offline evaluation on recorded outcome tables: prequential bandit replay, baselines, metrics, plots.

From a notebook::

    from uniscale_lc.replay import ReplayConfig, replay_dataset, format_table
    report = replay_dataset("../shared/data/gsm8k", ReplayConfig(seeds=5))
    print(format_table(report))
    report["policies"]["uniscale"]["aiq"]

Lower level: `load_outcome_table` -> `build_recorded_arms` -> `ReplayEnvironment` -> `run_learner`, and the
pure metrics in `uniscale_lc.replay.metrics`. See docs/replay.md for the protocol and the report format.
"""

from .data import Generator, ModelPrice, OutcomeTable, OutcomeTableError, load_outcome_table
from .drift import run_drift
from .metrics import (
    aiq,
    apgr,
    best_fixed_arm,
    cost_at_fraction_of_best,
    cost_to_reach,
    cpt,
    cumulative_regret,
    learning_curve,
    non_decreasing_convex_hull,
    pareto_frontier,
)
from .recorded_arms import (
    COMPOSITE_METHODS,
    DEFAULT_VOTE_LADDER,
    ArmOutcomes,
    RecordedArm,
    build_recorded_arms,
)
from .report import POLICY_KEYS, build_report, format_table, replay_dataset, two_model_summary
from .runner import (
    DEFAULT_COST_WEIGHT,
    DEFAULT_COST_WEIGHTS,
    DRIFT_SCENARIOS,
    LEARNERS,
    DriftEvent,
    ReplayConfig,
    ReplayEnvironment,
    RunTrace,
    filter_arms,
    question_order,
    run_learner,
)
from .sweep import run_sweep

__all__ = [
    "COMPOSITE_METHODS",
    "DEFAULT_COST_WEIGHT",
    "DEFAULT_COST_WEIGHTS",
    "DEFAULT_VOTE_LADDER",
    "DRIFT_SCENARIOS",
    "LEARNERS",
    "POLICY_KEYS",
    "ArmOutcomes",
    "DriftEvent",
    "Generator",
    "ModelPrice",
    "OutcomeTable",
    "OutcomeTableError",
    "RecordedArm",
    "ReplayConfig",
    "ReplayEnvironment",
    "RunTrace",
    "aiq",
    "apgr",
    "best_fixed_arm",
    "build_recorded_arms",
    "build_report",
    "cost_at_fraction_of_best",
    "cost_to_reach",
    "cpt",
    "cumulative_regret",
    "filter_arms",
    "format_table",
    "learning_curve",
    "load_outcome_table",
    "non_decreasing_convex_hull",
    "pareto_frontier",
    "question_order",
    "replay_dataset",
    "run_drift",
    "run_learner",
    "run_sweep",
    "two_model_summary",
]
