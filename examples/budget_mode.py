"""Budget mode: give UniScaleChat a target spend per request instead of a cost weight.

Needs nothing but this package: it runs on the demo's SIMULATED model pool (scripted models on a
loopback server, made-up prices; no real LLM, no key, no network). About half a minute.

    python examples/budget_mode.py                       # target: 0.4 USD per 1k requests
    python examples/budget_mode.py --usd-per-1k 1.5

With `budget_usd_per_request`, a BudgetPacer adapts the cost weight online: spending above the target
raises it (cheaper arms win more often), spending below lowers it (more accuracy is bought). The table
shows spend and accuracy per block of requests converging on the target.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from uniscale_lc import HashingFeaturizer, LinUCB, MajorityVote, Single, UniScaleChat
from uniscale_lc.demo.pool import SIMULATED_NOTICE, SimulatedPool
from uniscale_lc.demo.problems import generate_problems
from uniscale_lc.strategies.aggregate import extract_number


async def run(requests: int, usd_per_1k: float, seed: int, block: int) -> None:
    problems = generate_problems(requests, seed=seed)
    gold = {p.question: str(p.answer) for p in problems}

    def score(messages, ai_message) -> float:  # automatic feedback: the known answer
        return 1.0 if extract_number(ai_message.text) == gold.get(messages[-1].text) else 0.0

    with SimulatedPool(problems, seed=seed) as pool:
        chat = UniScaleChat(
            models=pool.specs(),
            strategies=[Single(), MajorityVote(n=5)],
            policy=LinUCB(alpha=0.3, seed=seed),
            featurizer=HashingFeaturizer(stats_weight=6.0),
            budget_usd_per_request=usd_per_1k / 1000,
            feedback_fn=score,
        )
        chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | chat | StrOutputParser()
        print(SIMULATED_NOTICE)
        print(f"target: {usd_per_1k:.3f} USD per 1k requests\n")
        print(f"{'requests':>10} {'USD / 1k':>9} {'accuracy':>9} {'cost weight':>12}")
        for start in range(0, requests, block):
            chunk = problems[start : start + block]
            before = chat.stats()["total_cost_usd"]
            answers = []
            for sub in range(0, len(chunk), 10):  # ten at a time, learning between groups
                group = chunk[sub : sub + 10]
                answers += await chain.abatch([{"question": p.question} for p in group])
            spent = chat.stats()["total_cost_usd"] - before
            accuracy = sum(extract_number(a) == str(p.answer) for a, p in zip(answers, chunk, strict=True))
            print(
                f"{start + 1:>4}-{start + len(chunk):<5} {1000 * spent / len(chunk):9.4f} "
                f"{100 * accuracy / len(chunk):8.1f}% {chat.stats()['cost_weight']:12.3f}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--usd-per-1k", type=float, default=0.4, help="target spend, USD per 1k requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--block", type=int, default=50, help="requests per printed row")
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.usd_per_1k, args.seed, args.block))
    return 0


if __name__ == "__main__":
    sys.exit(main())
