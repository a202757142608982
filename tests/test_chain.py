"""UniScaleChat inside an LCEL chain: prompt | chat | parser with invoke, ainvoke, batch and stream."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable

pytest.register_assert_rewrite("fixtures_server")
from fixtures_server import spec_for  # noqa: E402

from uniscale_lc.chat_model import UniScaleChat  # noqa: E402
from uniscale_lc.client import ModelClient  # noqa: E402
from uniscale_lc.strategies.config import MajorityVote, Single  # noqa: E402
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel, message_text  # noqa: E402

pytest_plugins = ("fixtures_server",)
pytestmark = pytest.mark.timeout(90)

MakeServer = Callable[[Sequence[SimulatedModel]], OpenAIServer]


def shout(messages: list[dict[str, Any]], index: int, rng: random.Random) -> str:
    """Answers with the user's question in upper case, after checking the system prompt arrived."""
    assert messages[0]["role"] == "system" and "terse" in message_text(messages[0])
    question = message_text(messages[-1])
    return f"ANSWER TO {question.upper()}"


@pytest.fixture
def chat(make_server: MakeServer, model_client: ModelClient) -> UniScaleChat:
    server = make_server([SimulatedModel("small", shout), SimulatedModel("large", shout)])
    return UniScaleChat(
        models=[
            spec_for(server, "small", gpu_usd_per_hour=0.5),
            spec_for(server, "large", gpu_usd_per_hour=4.0),
        ],
        strategies=[Single(), MajorityVote(n=3, extractor="text", early_stop=True)],
        client=model_client,
    )


def make_chain(chat: UniScaleChat) -> Runnable[dict[str, str], str]:
    prompt = ChatPromptTemplate.from_messages([("system", "You are terse."), ("human", "{question}")])
    return prompt | chat | StrOutputParser()


def test_invoke(chat: UniScaleChat) -> None:
    assert make_chain(chat).invoke({"question": "why is the sky blue"}) == "ANSWER TO WHY IS THE SKY BLUE"
    assert chat.stats()["requests"] == 1 and chat.stats()["pending"] == 1


async def test_ainvoke(chat: UniScaleChat) -> None:
    chain = make_chain(chat)
    answers = await asyncio.gather(*(chain.ainvoke({"question": f"q{i}"}) for i in range(5)))
    assert answers == [f"ANSWER TO Q{i}" for i in range(5)]


def test_batch_of_50(chat: UniScaleChat) -> None:
    questions = [{"question": f"question {i}"} for i in range(50)]
    answers = make_chain(chat).batch(questions, config={"max_concurrency": 8})
    assert answers == [f"ANSWER TO QUESTION {i}" for i in range(50)]
    stats = chat.stats()
    assert stats["requests"] == 50 and stats["pending"] == 50
    assert sum(arm["pulls"] for arm in stats["arms"].values()) == 50
    decision_ids = {pending.decision_id for pending in chat.pending_decisions.pending()}
    assert len(decision_ids) == 50  # one decision per request, each waiting for its feedback


def test_stream_yields_tokens_for_single_arms(chat: UniScaleChat) -> None:
    chain = make_chain(chat)
    pieces = list(chain.stream({"question": "tell me about streams"}))
    assert "".join(pieces) == "ANSWER TO TELL ME ABOUT STREAMS"
    arm = chat.pending_decisions.pending()[-1].arm_id
    if arm.endswith("|single"):
        assert len([p for p in pieces if p]) == 5  # one chunk per word, as the server sends them
    else:
        assert len([p for p in pieces if p]) == 1  # scaled strategies answer in one chunk


async def test_astream_only_single_arms_stream_tokens(
    make_server: MakeServer, model_client: ModelClient
) -> None:
    server = make_server([SimulatedModel("m", shout)])
    chat = UniScaleChat(models=[spec_for(server, "m")], strategies=[Single()], client=model_client)
    pieces = [piece async for piece in make_chain(chat).astream({"question": "one two three"})]
    assert [p for p in pieces if p] == ["ANSWER ", "TO ", "ONE ", "TWO ", "THREE"]
