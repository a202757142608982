"""Why does the learner (not) choose an arm? Pulls and score breakdowns of named arms in one replay run.

    python scripts/arm_trace.py ../shared/data/gsm8k --cost-weight 0.2 --seed 0 \\
        --watch 'gpt-4o:ms_single*,gemini-1.5-pro:ms_single*' --at 50,200,600,1000

Replays UniScale (library defaults; `--context-ridge` overrides the prior of the prompt-feature weights, e.g.
1e6 for none) on one question order at one cost weight, the way `uniscale-lc replay` does. At each step of
`--at` it prints the three best-scored arms and every watched arm: predicted quality, exploration bonus and
cost penalty (`LinUCB.score`); at the end, how often each watched arm was chosen. docs/policy.md ('Session 6')
was measured with it.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uniscale_lc.costs import CostModel  # noqa: E402
from uniscale_lc.policy.base import Policy  # noqa: E402
from uniscale_lc.policy.linucb import LinUCB  # noqa: E402
from uniscale_lc.replay.runner import ReplayConfig, ReplayEnvironment, question_order, run_learner  # noqa: E402


def _line(ids: Sequence[str], mean: np.ndarray, bonus: np.ndarray, penalty: np.ndarray, k: int) -> str:
    return f"{ids[k]}: quality {mean[k]:.3f} + bonus {bonus[k]:.3f} - penalty {penalty[k]:.3f}"


def trace(
    data_dir: Path,
    cost_weight: float,
    seed: int,
    watch: Sequence[str],
    at: Sequence[int],
    context_ridge: float | None = None,
    max_questions: int = 1500,
) -> list[str]:
    """The report lines (see the module docstring)."""
    config = ReplayConfig(seeds=1, max_questions=max_questions)
    env = ReplayEnvironment.from_directory(data_dir, config)
    lines: list[str] = []
    steps = set(at)

    def prepare(policy: Policy, cost_model: CostModel) -> None:
        if not isinstance(policy, LinUCB):
            raise SystemExit("arm_trace: the uniscale learner is not a LinUCB")
        if context_ridge is not None:
            policy.context_ridge = float(context_ridge)
            policy.bind(cost_model.arm_space, policy.context_dim)  # has learnt nothing yet
        select = policy.select
        count = [0]

        def traced_select(x: np.ndarray, arms: Any = None, penalty: Any = None) -> Any:
            count[0] += 1
            if count[0] in steps:
                ids, mean, bonus, pen = policy.score(x, arms, penalty)
                lines.append(f"step {count[0]}:")
                for k in np.argsort(-(mean + bonus - pen), kind="stable")[:3]:
                    lines.append("  top      " + _line(ids, mean, bonus, pen, int(k)))
                for k, arm_id in enumerate(ids):
                    if any(fnmatch.fnmatchcase(arm_id, pattern) for pattern in watch):
                        lines.append("  watched  " + _line(ids, mean, bonus, pen, k))
            return select(x, arms, penalty)

        policy.select = traced_select  # type: ignore[method-assign]

    order = question_order(env.n_questions, seed)
    run = run_learner(env, "uniscale", seed, cost_weight, order, config, prepare=prepare)
    outcomes = env.outcomes
    accuracy, cost = outcomes.quality.mean(axis=0), outcomes.cost_usd.mean(axis=0)
    lines.append(f"{len(order)} requests: accuracy {run.accuracy:.4f}, {run.cost_usd_per_query:.5f} USD per request")
    for column, arm in enumerate(outcomes.arms):
        if any(fnmatch.fnmatchcase(arm.arm_id, pattern) for pattern in watch):
            pulls = int(np.sum(run.arm == column))
            lines.append(
                f"  chosen {pulls:5d} times: {arm.arm_id} (accuracy {accuracy[column]:.4f}, "
                f"{cost[column]:.5f} USD)"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="an outcome-table directory")
    parser.add_argument("--cost-weight", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0, help="question order (as the replay's seeds)")
    parser.add_argument("--watch", required=True, help="comma-separated globs over arm ids")
    parser.add_argument("--at", default="50,200,600,1000", help="comma-separated steps to print scores at")
    parser.add_argument("--context-ridge", type=float, default=None, help="override LinUCB.context_ridge")
    parser.add_argument("--max-questions", type=int, default=1500, help="the replay's seeded subset size")
    args = parser.parse_args(argv)
    steps = [int(step) for step in args.at.split(",") if step]
    watch = [pattern for pattern in args.watch.split(",") if pattern]
    for line in trace(
        args.data_dir, args.cost_weight, args.seed, watch, steps, args.context_ridge, args.max_questions
    ):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
