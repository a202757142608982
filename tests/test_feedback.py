"""Feedback: delayed, across a restart, idempotent, by every key, validated, automatic; the store's limits."""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

pytest.register_assert_rewrite("fixtures_server")
from fixtures_server import spec_for  # noqa: E402

from uniscale_lc.chat_model import UniScaleChat  # noqa: E402
from uniscale_lc.client import ModelClient  # noqa: E402
from uniscale_lc.errors import FeedbackError  # noqa: E402
from uniscale_lc.feedback import (  # noqa: E402
    FeedbackResult,
    FeedbackStore,
    PendingDecision,
    normalise_key,
    validate_score,
)
from uniscale_lc.policy import Decision  # noqa: E402
from uniscale_lc.strategies.config import Single  # noqa: E402
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel  # noqa: E402

pytest_plugins = ("fixtures_server",)
pytestmark = pytest.mark.timeout(60)

MakeServer = Callable[[Sequence[SimulatedModel]], OpenAIServer]


@pytest.fixture
def server(make_server: MakeServer) -> OpenAIServer:
    return make_server([SimulatedModel("a", "the answer is 42"), SimulatedModel("b", "it is 41")])


@pytest.fixture
def make_chat(server: OpenAIServer, model_client: ModelClient) -> Callable[..., UniScaleChat]:
    def factory(**overrides: Any) -> UniScaleChat:
        params: dict[str, Any] = {
            "models": [
                spec_for(server, "a", gpu_usd_per_hour=1.0),
                spec_for(server, "b", gpu_usd_per_hour=2.0),
            ],
            "strategies": [Single()],
            "client": model_client,
        }
        params.update(overrides)
        return UniScaleChat(**params)

    return factory


def decision_id(message: BaseMessage) -> str:
    return str(message.response_metadata["uniscale"]["decision_id"])


def policy_arrays(chat: UniScaleChat) -> dict[str, Any]:
    state = chat._policy.state_dict()
    return {
        "shared": state["shared"]["target"].copy(),
        "per_arm": {k: v["target"].copy() for k, v in state["per_arm"].items()},
    }


# ----------------------------------------------------------------------------- through the chat model


async def test_delayed_feedback_in_any_order_is_learnt(make_chat: Callable[..., UniScaleChat]) -> None:
    chat = make_chat()
    answers = [await chat.ainvoke(f"question {i}") for i in range(4)]
    assert chat.stats()["pending"] == 4
    before = chat.explain("question 0")
    for message, score in zip(reversed(answers), (1.0, 0.0, 1.0, 0.5), strict=True):
        result = await chat.afeedback(decision_id(message), score)
        assert result.quality == score and not result.duplicate
        # reward = quality - cost_weight * cost / reference, the reference being the dearest arm's prediction
        assert result.reward <= score
    stats = chat.stats()
    assert stats["pending"] == 0
    assert sum(arm["feedback"] for arm in stats["arms"].values()) == 4
    qualities = {arm_id: arm["mean_quality"] for arm_id, arm in stats["arms"].items() if arm["feedback"]}
    assert qualities and all(0.0 <= q <= 1.0 for q in qualities.values())
    after = chat.explain("question 0")
    assert [row["predicted_quality"] for row in before] != [row["predicted_quality"] for row in after]


def test_feedback_survives_a_restart_with_state_path(
    make_chat: Callable[..., UniScaleChat], tmp_path: Path
) -> None:
    path = tmp_path / "state" / "uniscale.npz"
    first = make_chat(state_path=str(path))
    answered = first.invoke("what is six times seven?")
    first.feedback(first.invoke("warm up").response_metadata["uniscale"]["decision_id"], 1.0)
    explained = first.explain("what is six times seven?")
    first.close()  # what interpreter exit does: the autosave's last pending save
    assert path.exists()

    second = make_chat(state_path=str(path))  # a new process would do exactly this
    assert second.load_report == []
    assert second.explain("what is six times seven?") == explained  # the policy came back intact
    assert second.stats()["requests"] == 2 and second.stats()["pending"] == 1
    result = second.feedback(decision_id(answered), 1.0)
    assert result.arm_id == answered.response_metadata["uniscale"]["arm"]
    second.close()

    third = make_chat(state_path=str(path))
    assert third.stats()["pending"] == 0
    assert third.feedback(decision_id(answered), 1.0).duplicate  # still idempotent after two restarts


def test_restart_with_an_arm_removed_says_what_was_dropped(
    make_chat: Callable[..., UniScaleChat], server: OpenAIServer, tmp_path: Path
) -> None:
    path = tmp_path / "uniscale.npz"
    first = make_chat(state_path=str(path))
    first.invoke("q0", model="a")
    kept = first.invoke("q1", model="b")  # `model=` pins the request to that model's arms
    first.feedback(kept, 1.0)  # arm b has learnt state now
    first.invoke("q2", model="b")  # and one decision on it is pending
    first.close()
    second = make_chat(state_path=str(path), models=[spec_for(server, "a", gpu_usd_per_hour=1.0)])
    report = " ".join(second.load_report)
    assert "dropped 1 pending decisions" in report
    assert "kept learnt state of 1 arms no longer configured: ['b|single']" in report
    assert [p.arm_id for p in second.pending_decisions.pending()] == ["a|single"]


def test_repeated_feedback_is_idempotent(make_chat: Callable[..., UniScaleChat]) -> None:
    chat = make_chat()
    message = chat.invoke("hello")
    first = chat.feedback(decision_id(message), 1.0)
    learnt = policy_arrays(chat)
    again = chat.feedback(decision_id(message), 0.0)  # a retry, even with another score, changes nothing
    by_message = chat.feedback(message, 1.0)
    assert again.duplicate and by_message.duplicate
    assert (again.quality, again.reward) == (first.quality, first.reward)
    after = policy_arrays(chat)
    assert np.array_equal(learnt["shared"], after["shared"])
    assert chat.stats()["arms"][first.arm_id]["feedback"] == 1


def test_unknown_key_names_the_field_and_the_fix(make_chat: Callable[..., UniScaleChat]) -> None:
    chat = make_chat()
    with pytest.raises(FeedbackError, match=r"feedback\.key: no pending decision for 'nope'.*decision_id"):
        chat.feedback("nope", 1.0)
    with pytest.raises(FeedbackError, match=r"feedback\.key"):
        chat.feedback(12345, 1.0)


@pytest.mark.parametrize("score", [math.nan, math.inf, -math.inf, -0.01, 1.5, "good", None, True, [1.0]])
def test_invalid_scores_are_refused_and_the_decision_stays_pending(
    make_chat: Callable[..., UniScaleChat], score: Any
) -> None:
    chat = make_chat()
    message = chat.invoke("hello")
    with pytest.raises(FeedbackError, match=r"feedback\.score: got .*\[0, 1\]"):
        chat.feedback(decision_id(message), score)
    assert chat.stats()["pending"] == 1
    assert not chat.feedback(decision_id(message), 1).duplicate  # ints are fine


def test_run_id_and_message_id_keys(make_chat: Callable[..., UniScaleChat]) -> None:
    chat = make_chat()
    run_id = uuid.uuid4()
    message = chat.invoke("hello", config={"run_id": run_id})
    record = message.response_metadata["uniscale"]
    assert record["run_id"] == str(run_id)
    assert message.id is not None and str(run_id) in message.id
    assert chat.feedback(run_id, 1.0).decision_id == record["decision_id"]  # a UUID object works
    other = chat.invoke("again")
    assert other.id is not None
    assert chat.feedback(other.id, 0.0).decision_id == decision_id(other)  # lc_run--<run id>-0


def test_request_id_from_config_metadata_in_invoke_chain_and_stream(
    make_chat: Callable[..., UniScaleChat],
) -> None:
    chat = make_chat()
    message = chat.invoke("hi", config={"metadata": {"uniscale_request_id": "req-1"}})
    assert message.response_metadata["uniscale"]["request_id"] == "req-1"
    assert chat.feedback("req-1", 1.0).decision_id == decision_id(message)

    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | chat | StrOutputParser()
    assert chain.invoke({"q": "inside a chain"}, config={"metadata": {"uniscale_request_id": "req-2"}})
    assert chat.pending_decisions.find("req-2") is not None
    chain_result = chat.feedback("req-2", 1.0)

    chunks = list(chat.stream("streamed", config={"metadata": {"uniscale_request_id": "req-3"}}))
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    record = full.response_metadata["uniscale"]
    assert record["request_id"] == "req-3"
    assert record["run_id"] is not None and full.id is not None and record["run_id"] in full.id
    assert chat.feedback(full.id, 1.0).decision_id == record["decision_id"] != chain_result.decision_id


async def test_request_id_in_async_stream(make_chat: Callable[..., UniScaleChat]) -> None:
    chat = make_chat()
    chunks = [c async for c in chat.astream("hi", config={"metadata": {"uniscale_request_id": "areq"}})]
    assert chunks[-1].response_metadata["uniscale"]["request_id"] == "areq"
    assert (await chat.afeedback("areq", 0.5)).quality == 0.5


def test_feedback_fn_scores_every_answer_at_once(make_chat: Callable[..., UniScaleChat]) -> None:
    seen: list[tuple[int, str]] = []

    def grade(messages: list[BaseMessage], answer: AIMessage) -> float:
        seen.append((len(messages), answer.text))
        return 1.0 if "42" in answer.text else 0.0

    chat = make_chat(feedback_fn=grade)
    for i in range(5):
        chat.invoke(f"q{i}")
    list(chat.stream("streamed too"))
    stats = chat.stats()
    assert stats["pending"] == 0 and len(seen) == 6
    assert sum(arm["feedback"] for arm in stats["arms"].values()) == 6
    for arm_id, arm in stats["arms"].items():
        if arm["feedback"]:
            assert arm["mean_quality"] == (1.0 if arm_id == "a|single" else 0.0)


def test_feedback_fn_that_abstains_or_fails_leaves_the_decision_pending(
    make_chat: Callable[..., UniScaleChat], caplog: pytest.LogCaptureFixture
) -> None:
    abstain = make_chat(feedback_fn=lambda messages, answer: None)
    abstain.invoke("q")
    assert abstain.stats()["pending"] == 1

    def broken(messages: list[BaseMessage], answer: AIMessage) -> float:
        raise RuntimeError("grader down")

    failing = make_chat(feedback_fn=broken)
    with caplog.at_level(logging.WARNING, logger="uniscale_lc.chat_model"):
        message = failing.invoke("q")  # the caller still gets the answer
    assert message.text and failing.stats()["pending"] == 1
    assert "feedback_fn raised" in caplog.text

    out_of_range = make_chat(feedback_fn=lambda messages, answer: 7)
    out_of_range.invoke("q")
    assert out_of_range.stats()["pending"] == 1


# ----------------------------------------------------------------------------- the store alone


def _pending(
    decision_id: str, created_at: float, run_id: str | None = None, request_id: str | None = None
) -> PendingDecision:
    decision = Decision(
        arm_id="m|single", context=np.zeros(3), decision_id=decision_id, created_at=created_at
    )
    return PendingDecision(
        decision, 0.1, 0.2, 0.5, run_id=run_id, request_id=request_id, created_at=created_at
    )


def test_store_expires_after_ttl_and_bounds_its_size() -> None:
    now = [1000.0]
    store = FeedbackStore(ttl_s=60.0, max_pending=3, clock=lambda: now[0])
    for i in range(3):
        store.add(_pending(f"d{i}", created_at=now[0] + i, request_id=f"r{i}"))
    dropped = store.add(_pending("d3", created_at=now[0] + 3))
    assert [p.decision_id for p in dropped] == ["d0"] and store.evicted == 1  # oldest first
    assert store.find("r0") is None and store.find("r1") is not None
    now[0] += 62.0  # d1 (created at 1001) is now older than the TTL; d2 and d3 are not
    assert store.find("d1") is None and store.expired == 1
    assert [p.decision_id for p in store.pending()] == ["d2", "d3"]
    with pytest.raises(FeedbackError, match="expire after 60 s"):
        store.take("d1")


def test_store_take_is_once_then_answers_with_the_result() -> None:
    run_id = str(uuid.uuid4())
    store = FeedbackStore()
    store.add(_pending("d", created_at=store._clock(), run_id=run_id))
    taken = store.take(f"lc_run--{run_id}-0")
    assert isinstance(taken, PendingDecision) and taken.decision_id == "d"
    store.mark_done(taken, FeedbackResult("d", "m|single", 1.0, 0.75))
    again = store.take(run_id)
    assert isinstance(again, FeedbackResult) and again.reward == 0.75


def test_store_round_trips_through_to_dict() -> None:
    store = FeedbackStore(ttl_s=3600.0, max_pending=10)
    now = store._clock()
    store.add(_pending("d1", now, run_id=str(uuid.uuid4()), request_id="req"))
    store.add(_pending("d2", now))
    done = store.take("d2")
    assert isinstance(done, PendingDecision)
    store.mark_done(done, FeedbackResult("d2", "m|single", 0.0, -0.1))
    restored = FeedbackStore.from_dict(store.to_dict())
    assert restored.ttl_s == 3600.0 and restored.max_pending == 10
    found = restored.find("req")
    assert (
        found is not None
        and found.decision_id == "d1"
        and np.array_equal(found.decision.context, np.zeros(3))
    )
    assert isinstance(restored.take("d2"), FeedbackResult)


def test_score_and_key_validation_messages() -> None:
    assert validate_score(0) == 0.0 and validate_score(np.float32(0.5)) == 0.5
    with pytest.raises(FeedbackError, match=r"feedback\.score: got nan"):
        validate_score(math.nan)
    assert normalise_key(uuid.UUID(int=1)) == str(uuid.UUID(int=1))
    assert normalise_key("lc_run--not-a-uuid") == "lc_run--not-a-uuid"
    with pytest.raises(FeedbackError, match=r"feedback\.key"):
        normalise_key("")
