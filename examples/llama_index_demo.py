"""`UniScaleLLM` in LlamaIndex: ChatMessages, feedback by the decision id, a SimpleChatEngine, streaming.

Runs offline on the demo's SIMULATED model pool (scripted stand-ins on a loopback server: no real LLM, no
key, no network; accuracies and prices are made up). Needs the extra: pip install 'uniscale-lc[llama-index]'.

    python examples/llama_index_demo.py                  # 120 problems, then a chat engine turn and a stream
    python examples/llama_index_demo.py --requests 60

See docs/llama_index.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import ChatMessage, ChatResponse

from uniscale_lc import HashingFeaturizer, LinUCB, MajorityVote, Single
from uniscale_lc.demo.pool import SimulatedPool
from uniscale_lc.demo.problems import Problem, generate_problems
from uniscale_lc.llama_index import UniScaleLLM
from uniscale_lc.strategies.aggregate import extract_number

SYSTEM = "Solve the arithmetic word problem step by step. End with 'The answer is N.'"


def grader(problems: list[Problem]) -> Callable[[list[ChatMessage], ChatResponse], float | None]:
    """A feedback_fn: LlamaIndex types in (the messages sent, the response), a quality in [0, 1] or None out."""
    answers = {problem.question: str(problem.answer) for problem in problems}

    def grade(messages: list[ChatMessage], response: ChatResponse) -> float | None:
        expected = answers.get(messages[-1].content or "")
        if expected is None:
            return None  # not a question it knows: leave the decision pending for a later feedback()
        return float(extract_number(response.message.content or "") == expected)

    return grade


async def ask_all(llm: UniScaleLLM, questions: list[str], concurrency: int = 10) -> list[ChatResponse]:
    """`achat` in waves of `concurrency`; the LLM scores each answer itself (feedback_fn) as it comes."""
    responses: list[ChatResponse] = []
    for start in range(0, len(questions), concurrency):
        wave = [
            [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content=q)]
            for q in questions[start : start + concurrency]
        ]
        responses += await asyncio.gather(*(llm.achat(messages) for messages in wave))
    return responses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    problems = generate_problems(args.requests + 2, seed=args.seed)
    learnt, engine_problem, streamed_problem = problems[: args.requests], problems[-2], problems[-1]
    with SimulatedPool(problems, seed=args.seed) as pool:
        llm = UniScaleLLM(
            models=pool.specs(),
            strategies=[Single(), MajorityVote(n=5)],
            policy=LinUCB(alpha=0.3, seed=args.seed),
            featurizer=HashingFeaturizer(stats_weight=6.0),
            cost_weight=0.5,
            feedback_fn=grader(learnt),
        )
        asyncio.run(ask_all(llm, [problem.question for problem in learnt]))
        arms = llm.stats()["arms"]
        scored = sum(arm["feedback"] for arm in arms.values())
        quality = sum((arm["mean_quality"] or 0.0) * arm["feedback"] for arm in arms.values()) / max(
            1, scored
        )
        print(
            f"{scored} simulated requests scored by feedback_fn: accuracy {quality:.1%}, cost ${llm.stats()['total_cost_usd']:.4f}"
        )
        print(
            "arms by pulls: "
            + ", ".join(
                f"{arm_id} x{arm['pulls']}"
                for arm_id, arm in sorted(arms.items(), key=lambda item: -item[1]["pulls"])
            )
        )

        # A chat engine keeps only the assistant message; it names its decision, so a turn can be scored later.
        engine = SimpleChatEngine.from_defaults(llm=llm, system_prompt=SYSTEM)
        right = extract_number(str(engine.chat(engine_problem.question))) == str(engine_problem.answer)
        result = llm.feedback(engine.chat_history[-1], 1.0 if right else 0.0)
        print(
            f"chat engine: {'right' if right else 'wrong'} answer from {result.arm_id}, scored {result.quality}"
        )

        # Streaming: the deltas as they come; the last response adds usage and the decision record.
        stream = list(llm.stream_complete(streamed_problem.question))
        last = stream[-1]
        print(
            f"streamed {len(stream)} responses from {last.raw['uniscale']['arm']}: {last.text.splitlines()[-1]!r}"
        )
        llm.feedback(last, float(extract_number(last.text) == str(streamed_problem.answer)))
        llm.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
