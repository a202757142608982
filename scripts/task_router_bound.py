"""What knowing each question's task buys a two-model router (uniscale_lc/replay/task_bound.py says how).

    python scripts/task_router_bound.py ../shared/data/routellm_mmlu

Prints RouteLLM's cost reduction at 95% of the strong arm's accuracy for a per-task router in hindsight and
held out (ranked on the warm start's labelled 30%, scored on the other 70%), and for the per-question oracle.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uniscale_lc.replay.runner import ReplayConfig, ReplayEnvironment  # noqa: E402
from uniscale_lc.replay.task_bound import task_router_bounds  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="an outcome-table folder with two single-model arms")
    parser.add_argument("--max-questions", type=int, default=None, help="the replay's seeded subset (all)")
    args = parser.parse_args(argv)
    env = ReplayEnvironment.from_directory(
        args.data_dir, ReplayConfig(seeds=1, max_questions=args.max_questions)
    )
    tasks = len(set(env.outcomes.tasks))
    print(f"{env.outcomes.dataset}: {env.n_questions} questions, {tasks} tasks")
    try:
        bounds = task_router_bounds(env)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    for name, value in bounds.items():
        print(f"  {name}: {'not reached' if value is None else f'{value:.1%}'}")


if __name__ == "__main__":
    main()
