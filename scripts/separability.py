"""How many arms a replay stream can tell from the best arm, at each cost weight (docs/policy.md).

    python scripts/separability.py ../shared/data gsm8k,llmrouter,reflexion,routellm_mmlu,routerarena

For each cost weight of the replay's sweep: the best arm in hindsight, and how many other arms would need more
paired samples than the stream has questions to be told apart from it (`metrics.samples_to_separate`, a 95%
interval on the mean reward difference). Where that count is not 0, no learner can identify the best fixed arm
from the stream itself, and only a context that routes better than any one arm can beat it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uniscale_lc.replay.metrics import samples_to_separate  # noqa: E402
from uniscale_lc.replay.runner import ReplayConfig, ReplayEnvironment  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_root", type=Path, help="folder holding one outcome-table folder per dataset")
    parser.add_argument("datasets", help="comma-separated dataset folder names")
    parser.add_argument("--max-questions", type=int, default=1500, help="the replay's seeded subset size")
    args = parser.parse_args()
    config = ReplayConfig(seeds=1, max_questions=args.max_questions)
    print("| dataset | questions | arms | cost weight | best arm | arms not separable from it | closest: gap, samples needed |")
    print("|---|---:|---:|---:|---|---:|---|")
    for name in args.datasets.split(","):
        env = ReplayEnvironment.from_directory(args.data_root / name, config)
        outcomes = env.outcomes
        reference = np.where(env.reference_cost > 0, env.reference_cost, 1.0)[:, None]
        for weight in config.cost_weights:
            rewards = outcomes.quality - weight * outcomes.cost_usd / reference
            needed = samples_to_separate(rewards)
            best = int(np.argmax(rewards.mean(axis=0)))
            others = np.delete(np.arange(rewards.shape[1]), best)
            stuck = int((needed[others] > env.n_questions).sum())
            closest = int(others[np.argmin(rewards.mean(axis=0)[best] - rewards.mean(axis=0)[others])])
            gap = float(rewards[:, best].mean() - rewards[:, closest].mean())
            print(
                f"| {name} | {env.n_questions} | {rewards.shape[1]} | {weight:g} | `{outcomes.arms[best].arm_id}` "
                f"| {stuck} | {gap:.4f}, {needed[closest]:,.0f} |"
            )


if __name__ == "__main__":
    main()
