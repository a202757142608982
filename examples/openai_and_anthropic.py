"""UniScaleChat across two real providers: OpenAI and Anthropic models, routed and scaled per request.

Needs real API keys and network access (never run by the tests); it spends a few cents:

    export OPENAI_API_KEY=...
    export ANTHROPIC_API_KEY=...
    python examples/openai_and_anthropic.py

Each ModelSpec holds the NAME of its key's environment variable (`api_key_env`), never the key; prices
come from litellm's table. Anthropic has no `n` parameter, so a majority vote on it is sent as parallel
calls (the client does this by itself). Feedback here is delayed: the answers are scored after the whole
batch, by decision id, the way a review queue or a user's thumbs-up would arrive.
"""

from __future__ import annotations

import os
import sys

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from uniscale_lc import MajorityVote, ModelSpec, Single, UniScaleChat
from uniscale_lc.strategies.aggregate import extract_number

QUESTIONS = [
    ("A shop sells pens at 3 for 2 dollars. How many dollars do 27 pens cost?", "18"),
    ("What is 144 divided by 12, plus 7?", "19"),
    ("A tank holds 250 litres and leaks 15 litres an hour. How many litres are left after 9 hours?", "115"),
    ("What is the sum of the first 20 positive integers?", "210"),
]


def main() -> int:
    missing = [name for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY") if not os.environ.get(name)]
    if missing:
        print(f"set {', '.join(missing)} to run this example", file=sys.stderr)
        return 1
    chat = UniScaleChat(
        models=[
            ModelSpec(model="gpt-4o-mini", api_key_env="OPENAI_API_KEY", timeout_s=60),
            ModelSpec(model="anthropic/claude-haiku-4-5", name="haiku", api_key_env="ANTHROPIC_API_KEY"),
            ModelSpec(model="gpt-4o", api_key_env="OPENAI_API_KEY", timeout_s=60),
        ],
        strategies=[Single(), MajorityVote(n=5, early_stop=True)],
        cost_weight=0.3,
        max_tokens=400,
    )
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer briefly. End with 'The answer is N.'"), ("human", "{question}")]
    )
    chain = prompt | chat

    messages = chain.batch([{"question": q} for q, _ in QUESTIONS], config={"max_concurrency": 4})
    for (question, expected), message in zip(QUESTIONS, messages, strict=True):
        record = message.response_metadata["uniscale"]
        answer = StrOutputParser().invoke(message)
        correct = extract_number(answer) == expected
        # Delayed feedback, keyed by the decision id the answer carried.
        result = chat.feedback(record["decision_id"], 1.0 if correct else 0.0)
        print(f"{record['arm']:42s} ${record['cost_usd']:.5f} correct={correct} reward={result.reward:+.3f}")
        print(f"   {question}")
    stats = chat.stats()
    print(f"total spend ${stats['total_cost_usd']:.4f} over {stats['requests']} requests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
