"""The core `Router` used directly (no LangChain): OpenAI-format messages, feedback by request id, route-only.

Runs offline on the demo's SIMULATED model pool (scripted stand-ins on a loopback server: no real LLM, no
key, no network; accuracies and prices are made up). About 20 s on an idle two-core machine.

    python examples/router_direct.py                  # 150 problems
    python examples/router_direct.py --requests 60

See docs/router.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from uniscale_lc import HashingFeaturizer, LinUCB, MajorityVote, Router, Single
from uniscale_lc.demo.pool import SimulatedPool
from uniscale_lc.demo.problems import Problem, generate_problems
from uniscale_lc.strategies.aggregate import extract_number

SYSTEM = "Solve the arithmetic word problem step by step. End with 'The answer is N.'"
BATCH = 10  # requests sent together between learning steps


async def learn(router: Router, problems: list[Problem]) -> list[bool]:
    """Ask, then score each answer by its request id (as a client that grades later would)."""
    correct: list[bool] = []
    for start in range(0, len(problems), BATCH):
        batch = problems[start : start + BATCH]
        completions = await asyncio.gather(
            *(
                router.acomplete(
                    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": problem.question}],
                    request_id=f"problem-{problem.id}",
                )
                for problem in batch
            )
        )
        for problem, completion in zip(batch, completions, strict=True):
            right = extract_number(completion.text) == str(problem.answer)
            await router.afeedback(f"problem-{problem.id}", 1.0 if right else 0.0)
            correct.append(right)
    return correct


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    problems = generate_problems(args.requests, seed=args.seed)
    with SimulatedPool(problems, seed=args.seed) as pool:
        router = Router(
            models=pool.specs(),
            strategies=[Single(), MajorityVote(n=5)],
            policy=LinUCB(alpha=0.3, seed=args.seed),
            featurizer=HashingFeaturizer(stats_weight=6.0),
            cost_weight=0.5,
        )
        correct = asyncio.run(learn(router, problems))
        half = len(correct) // 2
        stats = router.stats()
        print(
            f"{len(correct)} simulated requests: accuracy {sum(correct) / len(correct):.1%} "
            f"(last half {sum(correct[half:]) / max(1, len(correct) - half):.1%}), "
            f"cost ${stats['total_cost_usd']:.4f}"
        )
        for arm_id, arm in sorted(stats["arms"].items(), key=lambda item: -item[1]["pulls"]):
            print(f"  {arm_id:26s} pulls {arm['pulls']:4d}  mean quality {arm['mean_quality'] or 0:.2f}")

        # Route-only: pick the arm for a request this program would run itself; feedback teaches as usual.
        hard = max(problems, key=lambda problem: problem.difficulty)
        route = router.route([{"role": "user", "content": hard.question}], request_id="routed-1")
        print(
            f"route for a difficulty-{hard.difficulty} problem: {route.arm_id} "
            f"(predicted ${route.predicted_cost_usd:.6f}); no model was called"
        )
        router.feedback("routed-1", 1.0)
        router.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
