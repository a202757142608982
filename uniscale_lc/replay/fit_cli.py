"""`uniscale-lc fit DATA_DIR --out state.npz`: warm-start a router's state file from a recorded outcome table.

The table's arms are rebuilt exactly as the replay builds them; a `Router` with those arms
(`recorded_arm_space(DATA_DIR, arms=...)`) is fitted through `Router.fit` on every arm's recorded outcome of
the chosen questions, and saved. `Router(arms=recorded_arm_space(...), state_path=OUT)` or
`UniScaleChat(arms=..., state_path=OUT)` then starts from what was learnt (docs/warm_start.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..arms import ArmSpace
from ..errors import ConfigError, UniScaleError
from ..progress import progress_bar
from ..warm_start import check_outcomes, labelled_split
from .data import load_outcome_table
from .output_path import check_output_path
from .recorded_arms import ArmOutcomes, build_recorded_arms
from .runner import ReplayConfig, ReplayEnvironment, filter_arms
from .threads import one_blas_thread
from .warm import WARM_SEED, outcome_records

__all__ = ["add_subparser", "check_out_path", "recorded_arm_space", "recorded_outcomes", "run"]


def recorded_outcomes(
    data_dir: str | Path,
    arms: str | None = None,
    *,
    max_questions: int | None = None,
    min_coverage: float = 0.9,
) -> tuple[ReplayEnvironment, ArmOutcomes]:
    """The table's arms and common questions as the replay builds them, without featurising the prompts.

    Returns a feature-less environment (for its `arm_space`) and its outcomes.
    """
    config = ReplayConfig(seeds=1, arms=arms, max_questions=max_questions, min_coverage=min_coverage)
    table = load_outcome_table(data_dir)
    if config.max_questions is not None and config.max_questions < table.n_questions:
        # The replay's seeded subset (ReplayEnvironment.from_table), so both see the same questions.
        chosen = np.sort(
            np.random.default_rng(0).choice(table.n_questions, config.max_questions, replace=False)
        )
        table = table.subset(chosen)
    outcomes = filter_arms(build_recorded_arms(table, vote_ladder=config.vote_ladder), config.arms)
    outcomes = outcomes.restrict_to_common(config.min_coverage)
    n = outcomes.n_questions
    env = ReplayEnvironment(
        table=table,
        outcomes=outcomes,
        features=np.zeros((n, 0)),  # not needed: the router featurises what it is taught
        prompt_tokens=np.zeros(n),
        arm_models=tuple(arm.model for arm in outcomes.arms),
        reference_cost=np.nanmax(outcomes.cost_usd, axis=1),
    )
    return env, outcomes


def recorded_arm_space(
    data_dir: str | Path,
    arms: str | None = None,
    *,
    max_questions: int | None = None,
    min_coverage: float = 0.9,
) -> ArmSpace:
    """The live arm space of a table's arms (ids `model:method|strategy`), to build the router a fit loads into."""
    env, outcomes = recorded_outcomes(data_dir, arms, max_questions=max_questions, min_coverage=min_coverage)
    return env.arm_space(range(len(outcomes.arms)))


def check_out_path(out: Path) -> None:
    """Refuse an --out that cannot be written, before any work (see `check_output_path`)."""
    check_output_path(out, "--out", example="state.npz")


def add_subparser(subparsers: Any) -> None:
    """Register `fit` on the main CLI's subparsers."""
    parser = subparsers.add_parser(
        "fit",
        help="warm-start a state file from a recorded outcome table (every arm's outcome per question)",
        description=(
            "Fit a router on an outcome table (full information: every arm's recorded outcome of each "
            "question) and save its state; Router/UniScaleChat(arms=recorded_arm_space(DATA_DIR), "
            "state_path=OUT) loads it. See docs/warm_start.md."
        ),
    )
    parser.add_argument("data_dir", metavar="DATA_DIR", type=Path, help="an outcome-table directory")
    parser.add_argument("--out", metavar="STATE.npz", type=Path, required=True, help="state file to write")
    parser.add_argument(
        "--arms",
        metavar="SPEC",
        default=None,
        help="arms to keep: comma-separated globs over arm ids or kind:single|majority_vote|composite",
    )
    parser.add_argument(
        "--max-questions",
        metavar="N",
        type=int,
        default=None,
        help="the replay's seeded subset of N questions",
    )
    parser.add_argument(
        "--questions-fraction",
        metavar="F",
        type=float,
        default=None,
        help=f"fit on the replay's seeded labelled split of this fraction only (seed {WARM_SEED}; "
        "the replay's uniscale_warm uses 0.3); default: every question",
    )
    parser.add_argument(
        "--min-coverage", metavar="F", type=float, default=0.9, help="as for replay (default 0.9)"
    )
    parser.add_argument(
        "--tag-buckets",
        metavar="N",
        type=int,
        default=0,
        help="tag each record with its task, in N hashed features: load the state into a router with "
        "tag_buckets=N and pass tags= per request (default 0: no tags)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Fit and save; 0 on success, 2 on a configuration or data error."""
    from ..router import Router

    try:
        check_out_path(args.out)
        if args.questions_fraction is not None and not 0.0 < args.questions_fraction <= 1.0:
            raise ConfigError(
                f"--questions-fraction: got {args.questions_fraction}; use a fraction in (0, 1]"
            )
        env, outcomes = recorded_outcomes(
            args.data_dir, args.arms, max_questions=args.max_questions, min_coverage=args.min_coverage
        )
        questions: Sequence[int] | np.ndarray = np.arange(outcomes.n_questions)
        if args.questions_fraction is not None and args.questions_fraction < 1.0:
            questions = labelled_split(outcomes.n_questions, args.questions_fraction, WARM_SEED)[0]
        router = Router(
            arms=env.arm_space(range(len(outcomes.arms))), tag_buckets=args.tag_buckets, label="fit"
        )
        tagged = outcome_records(outcomes, questions, task_tags=args.tag_buckets > 0)
        records = check_outcomes(tagged, router.arm_space.ids)
        progress = None if args.no_progress else progress_bar(len(records), "fit", "records")
        try:
            with one_blas_thread():  # many small products in one process (replay/threads.py)
                summary = router.fit(records, progress=None if progress is None else progress.update)
        finally:
            if progress is not None:
                progress.close()
        router.save(args.out)
    except (UniScaleError, ValueError) as error:
        print(f"uniscale-lc fit: {error}", file=sys.stderr)
        return 2
    options = "".join(
        f", {name}={value!r}"
        for name, value, default in (
            ("arms", args.arms, None),
            ("max_questions", args.max_questions, None),
            ("min_coverage", args.min_coverage, 0.9),
        )
        if value != default
    )
    tag_option = f", tag_buckets={args.tag_buckets}" if args.tag_buckets else ""
    print(
        f"fitted {len(records)} outcomes of {summary['arms_taught']} arms on {len(questions)} questions of "
        f"{outcomes.dataset} (LinUCB context_ridge {summary['context_ridge']:g}); state written to {args.out}\n"
        f"load it with: Router(arms=recorded_arm_space({str(args.data_dir)!r}{options}){tag_option}, "
        f"state_path={str(args.out)!r})"
    )
    return 0
