"""Quickstart: UniScaleChat over two OpenAI models, learning from your feedback.

Needs a real provider (never run by the tests):

    export OPENAI_API_KEY=...
    python examples/quickstart.py

The key is read from the environment at call time; it is never stored in the chat model or its state file.
"""

from __future__ import annotations

import os
import sys

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from uniscale_lc import MajorityVote, ModelSpec, Single, UniScaleChat
from uniscale_lc.strategies.aggregate import extract_number

QUESTIONS = [
    ("What is 17 + 25? Finish with 'The answer is N'.", "42"),
    (
        "A train leaves at 14:10 and arrives at 16:55. How many minutes is the trip? "
        "Finish with 'The answer is N'.",
        "165",
    ),
    ("What is 12 * 12? Finish with 'The answer is N'.", "144"),
]


def main() -> int:
    if not os.environ.get("OPENAI_API_KEY"):
        print("set OPENAI_API_KEY to run this example", file=sys.stderr)
        return 1
    chat = UniScaleChat(
        models=[
            ModelSpec(model="gpt-4o-mini", api_key_env="OPENAI_API_KEY", timeout_s=60),
            ModelSpec(model="gpt-4o", api_key_env="OPENAI_API_KEY", timeout_s=60),
        ],
        strategies=[Single(), MajorityVote(n=5, early_stop=True)],
        cost_weight=0.2,
        state_path="uniscale_quickstart.npz",  # learning survives restarts
    )
    chain = ChatPromptTemplate.from_messages([("human", "{question}")]) | chat | StrOutputParser()

    for index, (question, expected) in enumerate(QUESTIONS):
        request_id = f"quickstart-{index}"
        text = chain.invoke({"question": question}, config={"metadata": {"uniscale_request_id": request_id}})
        correct = extract_number(text) == expected
        result = chat.feedback(request_id, 1.0 if correct else 0.0)  # what you learnt about the answer
        print(f"{result.arm_id:40s} correct={correct} reward={result.reward:+.3f}")

    # One answer with its full decision record.
    message = chat.invoke("Name three prime numbers above 100.")
    record = message.response_metadata["uniscale"]
    print(message.text)
    print({key: record[key] for key in ("arm", "cost_usd", "latency_s", "predicted_cost_usd", "fallbacks")})
    print(chat.stats())
    for row in chat.explain("What is 99 * 99?"):
        print(f"{row['arm']:40s} quality={row['predicted_quality']:+.2f} penalty={row['penalty']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
