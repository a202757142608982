"""UniScaleChat over local vLLM servers: a small and a large model, priced by GPU time.

Start two OpenAI-compatible vLLM servers first (or anything OpenAI-compatible), e.g.

    vllm serve Qwen/Qwen2.5-1.5B-Instruct --port 8001
    vllm serve Qwen/Qwen2.5-7B-Instruct --port 8002
    python examples/local_vllm.py --small http://127.0.0.1:8001/v1 --large http://127.0.0.1:8002/v1

Never run by the tests. A model name with an `api_base` is sent to litellm as `hosted_vllm/<name>`; a
loopback server needs no key. Self-hosted cost is latency times `gpu_usd_per_hour`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from uniscale_lc import BestOfN, MajorityVote, ModelSpec, Reflection, Single, UniScaleChat
from uniscale_lc.strategies.aggregate import extract_number

PROBLEMS = [
    ("What is 48 + 17? End with 'The answer is N'.", "65"),
    ("What is 13 * 17? End with 'The answer is N'.", "221"),
    ("If 3x + 7 = 31, what is x? End with 'The answer is N'.", "8"),
    ("How many days are in 7 weeks and 3 days? End with 'The answer is N'.", "52"),
]


async def run(small_url: str, large_url: str, small_name: str, large_name: str, rounds: int) -> None:
    chat = UniScaleChat(
        models=[
            ModelSpec(
                model=small_name,
                name="small",
                api_base=small_url,
                gpu_usd_per_hour=1.0,
                params_b=1.5,
                max_concurrency=32,
                timeout_s=120,
            ),
            ModelSpec(
                model=large_name,
                name="large",
                api_base=large_url,
                gpu_usd_per_hour=4.0,
                params_b=7.0,
                max_concurrency=16,
                timeout_s=120,
            ),
        ],
        strategies=[Single(), MajorityVote(n=8, early_stop=True), BestOfN(n=4), Reflection(rounds=2)],
        budget_usd_per_request=0.0005,  # the pacer tunes the cost weight to this mean spend
        temperature=0.7,
        max_tokens=512,
        state_path="uniscale_local_vllm.npz",
    )
    for round_index in range(rounds):
        answers = await asyncio.gather(*(chat.ainvoke(question) for question, _ in PROBLEMS))
        for (_, expected), message in zip(PROBLEMS, answers, strict=True):
            quality = 1.0 if extract_number(message.text) == expected else 0.0
            await chat.afeedback(message, quality)
            record = message.response_metadata["uniscale"]
            print(
                f"round {round_index} {record['arm']:32s} q={quality:.0f} ${record['cost_usd']:.6f} "
                f"{record['latency_s']:.2f}s"
            )
    stats = chat.stats()
    print(f"cost weight now {stats['cost_weight']:.3f}; total ${stats['total_cost_usd']:.4f}")
    for arm_id, arm in stats["arms"].items():
        print(f"{arm_id:32s} pulls={arm['pulls']:3d} quality={arm['mean_quality']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", default="http://127.0.0.1:8001/v1")
    parser.add_argument("--large", default="http://127.0.0.1:8002/v1")
    parser.add_argument("--small-model", default="Qwen/Qwen2.5-1.5B-Instruct")
    parser.add_argument("--large-model", default="Qwen/Qwen2.5-7B-Instruct")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.small, args.large, args.small_model, args.large_model, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
