"""End to end: with feedback, the chat model learns to send easy questions to a cheap model and hard ones
to an expensive model, over real HTTP through litellm.

The cheap model answers easy questions right and hard ones wrong; the strong model is always right but
costs 50 times more. With cost_weight 0.3 the best arm is cheap for easy questions (same quality, less
cost) and strong for hard ones (quality 1 - 0.3 beats 0).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable, Sequence
from typing import Any

import pytest

pytest.register_assert_rewrite("fixtures_server")
from fixtures_server import spec_for  # noqa: E402

from uniscale_lc.chat_model import UniScaleChat  # noqa: E402
from uniscale_lc.client import ModelClient  # noqa: E402
from uniscale_lc.policy import LinUCB  # noqa: E402
from uniscale_lc.strategies.aggregate import extract_number  # noqa: E402
from uniscale_lc.strategies.config import Single  # noqa: E402
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel, message_text  # noqa: E402

pytest_plugins = ("fixtures_server",)
pytestmark = pytest.mark.timeout(150)

MakeServer = Callable[[Sequence[SimulatedModel]], OpenAIServer]
_OPERANDS = re.compile(r"(\d+) (?:plus|times) (\d+)")


def true_answer(question: str) -> int:
    a, b = (int(v) for v in _OPERANDS.search(question).groups())  # type: ignore[union-attr]
    return a + b if "plus" in question else (a * b) % 97


def model(strong: bool) -> Callable[[list[dict[str, Any]], int, random.Random], str]:
    def answer(messages: list[dict[str, Any]], index: int, rng: random.Random) -> str:
        question = message_text(messages[-1])
        value = true_answer(question)
        if not strong and "[hard]" in question:
            value += 1 + rng.randint(0, 5)  # confidently wrong
        return f"Working it out. The answer is {value}"

    return answer


def question(rng: random.Random, hard: bool) -> str:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    if hard:
        return f"[hard] What is {a} times {b} modulo 97? Think carefully."
    return f"[easy] What is {a} plus {b}?"


async def test_cheap_arm_for_easy_and_strong_arm_for_hard_questions(
    make_server: MakeServer, model_client: ModelClient
) -> None:
    server = make_server(
        [SimulatedModel("cheap", model(strong=False)), SimulatedModel("strong", model(strong=True))]
    )
    chat = UniScaleChat(
        models=[
            spec_for(server, "cheap", input_usd_per_mtok=0.1, output_usd_per_mtok=0.4),
            spec_for(server, "strong", input_usd_per_mtok=5.0, output_usd_per_mtok=20.0),
        ],
        strategies=[Single()],
        policy=LinUCB(alpha=0.5, seed=1),
        cost_weight=0.3,
        client=model_client,
    )
    rng = random.Random(7)
    history: list[tuple[bool, str, float]] = []  # (hard, arm, quality)
    batch = 10  # requests in flight together; feedback arrives after each batch, like delayed feedback
    for _ in range(300 // batch):
        questions = [question(rng, hard=rng.random() < 0.5) for _ in range(batch)]
        answers = await asyncio.gather(*(chat.ainvoke(q) for q in questions))
        for text, message in zip(questions, answers, strict=True):
            correct = extract_number(message.text) == str(true_answer(text))
            quality = 1.0 if correct else 0.0
            await chat.afeedback(message, quality)
            history.append(("[hard]" in text, message.response_metadata["uniscale"]["arm"], quality))

    last = history[-100:]
    easy = [arm for hard, arm, _ in last if not hard]
    hard = [arm for hard, arm, _ in last if hard]
    easy_cheap = easy.count("cheap|single") / len(easy)
    hard_strong = hard.count("strong|single") / len(hard)
    assert easy_cheap >= 0.8, f"easy questions on the cheap arm: {easy_cheap:.2f}"
    assert hard_strong >= 0.8, f"hard questions on the strong arm: {hard_strong:.2f}"
    assert sum(quality for _, _, quality in last) / len(last) >= 0.85

    # The learnt policy explains itself the same way.
    assert chat.explain(question(rng, hard=False))[0]["arm"] == "cheap|single"
    assert chat.explain(question(rng, hard=True))[0]["arm"] == "strong|single"
    stats = chat.stats()
    assert stats["requests"] == 300 and stats["pending"] == 0
    assert stats["arms"]["cheap|single"]["total_cost_usd"] < stats["arms"]["strong|single"]["total_cost_usd"]
