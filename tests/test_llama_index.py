"""`UniScaleLLM` through llama-index-core's own interfaces, against the loopback model server: a ChatMessage
conversation, complete, streams (sync and async), feedback by the decision id, a SimpleChatEngine, tool
calling (predict_and_call and a FunctionAgent), bad input, copies sharing one learner; no network."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_index.core", reason="the [llama-index] extra is not installed")
pytest.register_assert_rewrite("fixtures_server")
from fixtures_server import spec_for  # noqa: E402
from llama_index.core.base.llms.types import AudioBlock, ChatResponse, CompletionResponse  # noqa: E402
from llama_index.core.chat_engine import SimpleChatEngine  # noqa: E402
from llama_index.core.llms import ChatMessage, MessageRole  # noqa: E402
from llama_index.core.tools import FunctionTool  # noqa: E402

from uniscale_lc import Router  # noqa: E402
from uniscale_lc.client import ModelClient  # noqa: E402
from uniscale_lc.errors import ConfigError, FeedbackError  # noqa: E402
from uniscale_lc.llama_index import UniScaleLLM  # noqa: E402
from uniscale_lc.strategies.config import MajorityVote, Single  # noqa: E402
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel, echo_answer  # noqa: E402

pytest_plugins = ("fixtures_server",)
pytestmark = pytest.mark.timeout(120)

MakeServer = Callable[[Sequence[SimulatedModel]], OpenAIServer]
ANSWERS = ("the answer is 42", "it is 41")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every connection that is not to this machine: llama-index must not fetch tokenizers or data."""
    connect = socket.socket.connect

    def loopback_only(sock: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else str(address)
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"a test tried to reach {address!r}: tests never touch the network")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)


def _multiply_call(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]], rng: Any
) -> dict[str, Any] | None:
    """Call `multiply` until a tool result is in the conversation, then answer in words."""
    if messages and messages[-1].get("role") == "tool":
        return None
    return {"name": "multiply", "arguments": {"a": 6, "b": 7}}


def _tool_answer(messages: list[dict[str, Any]], sample: int, rng: Any) -> str:
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return f"the product is {last.get('content')}"
    return "no tool needed"


@pytest.fixture
def server(make_server: MakeServer) -> OpenAIServer:
    return make_server(
        [
            SimulatedModel("a", ANSWERS[0]),
            SimulatedModel("b", ANSWERS[1]),
            SimulatedModel("t", _tool_answer, tool_call=_multiply_call),
        ]
    )


@pytest.fixture
def make_llm(server: OpenAIServer, model_client: ModelClient) -> Iterator[Callable[..., UniScaleLLM]]:
    made: list[UniScaleLLM] = []

    def factory(**overrides: Any) -> UniScaleLLM:
        params: dict[str, Any] = {
            "models": [
                spec_for(server, "a", gpu_usd_per_hour=1.0, supports_tools=False),
                spec_for(server, "b", gpu_usd_per_hour=2.0, supports_tools=False),
            ],
            "client": model_client,
        }
        params.update(overrides)
        llm = UniScaleLLM(**params)
        made.append(llm)
        return llm

    yield factory
    for llm in made:
        llm.close()


def _tool_llm(server: OpenAIServer, model_client: ModelClient) -> UniScaleLLM:
    return UniScaleLLM(
        models=[spec_for(server, "t"), spec_for(server, "a", supports_tools=False)], client=model_client
    )


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def _requests(server: OpenAIServer) -> int:
    return sum(server.request_count(name) for name in ("a", "b", "t"))


def _feedback_count(llm: UniScaleLLM) -> int:
    return sum(arm["feedback"] for arm in llm.stats()["arms"].values())


# ----------------------------------------------------------------------------- chat and complete


def test_chat_sends_the_conversation_and_returns_the_decision(
    make_llm: Callable[..., UniScaleLLM], server: OpenAIServer
) -> None:
    llm = make_llm()
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="be brief"),
        ChatMessage(role=MessageRole.USER, content="what is 6 x 7?"),
        ChatMessage(role=MessageRole.ASSISTANT, content="let me think"),
        ChatMessage(role=MessageRole.USER, content="well?"),
    ]
    response = llm.chat(messages, request_id="req-1")
    assert isinstance(response, ChatResponse)
    assert response.message.role == MessageRole.ASSISTANT and response.message.content in ANSWERS
    decision_id = response.additional_kwargs["decision_id"]
    assert response.raw["decision_id"] == decision_id == response.message.additional_kwargs["decision_id"]
    record = response.raw["uniscale"]
    assert record["decision_id"] == decision_id and record["request_id"] == "req-1"
    assert response.raw["model"] == record["model"] == response.additional_kwargs["model"]
    kwargs = response.additional_kwargs
    assert kwargs["prompt_tokens"] > 0 and kwargs["completion_tokens"] > 0
    assert kwargs["total_tokens"] == kwargs["prompt_tokens"] + kwargs["completion_tokens"]
    sent = server.last_request(record["model"])
    assert sent is not None
    assert [(m["role"], m["content"]) for m in sent["messages"]] == [
        ("system", "be brief"),
        ("user", "what is 6 x 7?"),
        ("assistant", "let me think"),
        ("user", "well?"),
    ]
    assert llm.stats()["requests"] == 1 and llm.stats()["pending"] == 1


async def test_complete_and_acomplete_carry_the_decision_id(make_llm: Callable[..., UniScaleLLM]) -> None:
    llm = make_llm()
    completion = await asyncio.to_thread(llm.complete, "what is 6 x 7?")
    assert isinstance(completion, CompletionResponse) and completion.text in ANSWERS
    assert completion.raw["decision_id"] == completion.additional_kwargs["decision_id"]
    answers = await asyncio.gather(*(llm.acomplete(f"question {i}") for i in range(3)))
    ids = {answer.additional_kwargs["decision_id"] for answer in answers}
    assert len(ids | {completion.additional_kwargs["decision_id"]}) == 4
    assert all(answer.text in ANSWERS for answer in answers)
    assert llm.stats()["requests"] == 4


def test_model_kwarg_pins_the_model(make_llm: Callable[..., UniScaleLLM]) -> None:
    llm = make_llm()
    response = llm.chat([ChatMessage(role="user", content="q")], model="b")
    assert (
        response.message.content == "it is 41" and response.raw["model"] == response.raw["uniscale"]["model"]
    )


# ----------------------------------------------------------------------------- streams


def test_stream_chat_yields_the_message_so_far_and_ends_with_the_record(
    make_llm: Callable[..., UniScaleLLM],
) -> None:
    llm = make_llm()
    responses = list(llm.stream_chat([ChatMessage(role="user", content="what is 6 x 7?")]))
    assert len(responses) >= 3  # token chunks, then the closing one
    text = "".join(response.delta or "" for response in responses)
    assert text in ANSWERS
    assert all(
        response.message.content == text[: len(response.message.content or "")] for response in responses
    )
    last = responses[-1]
    assert last.delta == "" and last.message.content == text
    ids = {response.additional_kwargs["decision_id"] for response in responses}
    assert len(ids) == 1 and last.raw["uniscale"]["decision_id"] in ids
    assert last.additional_kwargs["completion_tokens"] > 0
    assert last.message.additional_kwargs["decision_id"] in ids

    pieces = list(llm.stream_complete("again"))
    assert pieces[-1].text in ANSWERS and pieces[-1].raw["uniscale"]["decision_id"]
    assert "".join(piece.delta or "" for piece in pieces) == pieces[-1].text
    assert llm.stats()["requests"] == 2


async def test_async_streams(make_llm: Callable[..., UniScaleLLM]) -> None:
    llm = make_llm()
    stream = await llm.astream_chat([ChatMessage(role="user", content="what is 6 x 7?")])
    responses = [response async for response in stream]
    assert "".join(r.delta or "" for r in responses) == responses[-1].message.content
    assert responses[-1].message.content in ANSWERS
    decision_id = responses[-1].raw["uniscale"]["decision_id"]
    assert all(r.additional_kwargs["decision_id"] == decision_id for r in responses)

    completion_stream = await llm.astream_complete("hello")
    pieces = [piece async for piece in completion_stream]
    assert pieces[-1].text in ANSWERS and "".join(p.delta or "" for p in pieces) == pieces[-1].text
    assert (await llm.afeedback(pieces[-1], 1.0)).decision_id == pieces[-1].additional_kwargs["decision_id"]


def test_a_stream_left_early_is_closed_and_the_next_call_works(make_llm: Callable[..., UniScaleLLM]) -> None:
    llm = make_llm()
    stream = llm.stream_chat([ChatMessage(role="user", content="q")])
    first = next(stream)
    assert first.delta
    stream.close()
    assert llm.chat([ChatMessage(role="user", content="q")]).message.content in ANSWERS


def test_a_non_single_arm_streams_as_one_chunk(
    make_llm: Callable[..., UniScaleLLM], server: OpenAIServer
) -> None:
    llm = make_llm(models=[spec_for(server, "a")], strategies=[MajorityVote(n=3)])
    responses = list(llm.stream_chat([ChatMessage(role="user", content="q")]))
    assert [r.delta for r in responses] == [ANSWERS[0], ""]
    assert responses[-1].raw["uniscale"]["kind"] == "majority_vote"


# ----------------------------------------------------------------------------- feedback


def test_feedback_by_decision_id_teaches_the_policy(make_llm: Callable[..., UniScaleLLM]) -> None:
    llm = make_llm()
    response = llm.chat([ChatMessage(role="user", content="q")], model="b")
    arm = response.raw["uniscale"]["arm"]
    before = llm.core.policy.state_dict()
    result = llm.feedback(response.additional_kwargs["decision_id"], 0.25)
    assert result.arm_id == arm and result.quality == 0.25 and not result.duplicate
    stats = llm.stats()["arms"][arm]
    assert stats["feedback"] == 1 and stats["mean_quality"] == pytest.approx(0.25)
    after = llm.core.policy.state_dict()
    assert json.dumps(before, default=repr) != json.dumps(after, default=repr)
    assert llm.feedback(response, 0.9).duplicate  # the same decision: the first score stands
    assert llm.stats()["arms"][arm]["feedback"] == 1 and llm.stats()["pending"] == 0


def test_feedback_by_every_key_and_bad_keys(make_llm: Callable[..., UniScaleLLM]) -> None:
    llm = make_llm()
    by_request = llm.chat([ChatMessage(role="user", content="q1")], request_id="req-7")
    assert llm.feedback("req-7", 1.0).decision_id == by_request.raw["decision_id"]
    by_message = llm.chat([ChatMessage(role="user", content="q2")])
    assert llm.feedback(by_message.message, 0.5).decision_id == by_message.raw["decision_id"]
    completion = llm.complete("q3")
    assert llm.feedback(completion, 0.0).decision_id == completion.raw["decision_id"]
    assert _feedback_count(llm) == 3
    with pytest.raises(FeedbackError, match="carries no decision_id"):
        llm.feedback(ChatMessage(role="assistant", content="not ours"), 1.0)
    with pytest.raises(FeedbackError, match="no pending decision"):
        llm.feedback("nope", 1.0)
    pending = llm.chat([ChatMessage(role="user", content="q4")])
    for bad in (1.5, float("nan"), "good", True):
        with pytest.raises(FeedbackError, match=r"feedback\.score"):
            llm.feedback(pending, bad)
    assert llm.stats()["pending"] == 1 and _feedback_count(llm) == 3  # nothing learnt from the mistakes


def test_feedback_fn_scores_llama_index_types(make_llm: Callable[..., UniScaleLLM]) -> None:
    seen: list[tuple[list[Any], Any]] = []

    def score(messages: list[ChatMessage], response: ChatResponse) -> float:
        seen.append((messages, response))
        return 1.0 if "42" in (response.message.content or "") else 0.0

    llm = make_llm(feedback_fn=score)
    llm.chat([ChatMessage(role="user", content="q")])
    list(llm.stream_chat([ChatMessage(role="user", content="q")]))
    assert len(seen) == 2
    assert all(isinstance(m[0], ChatMessage) and isinstance(r, ChatResponse) for m, r in seen)
    assert _feedback_count(llm) == 2 and llm.stats()["pending"] == 0


# ----------------------------------------------------------------------------- llama-index's own machinery


def test_simple_chat_engine_runs_on_uniscale(
    make_llm: Callable[..., UniScaleLLM], server: OpenAIServer
) -> None:
    llm = make_llm()
    engine = SimpleChatEngine.from_defaults(llm=llm, system_prompt="be brief")
    first = engine.chat("what is 6 x 7?")
    assert str(first) in ANSWERS
    second = engine.stream_chat("and again?")
    streamed = "".join(second.response_gen)
    assert streamed in ANSWERS
    history = engine.chat_history
    assert [m.role for m in history] == [MessageRole.USER, MessageRole.ASSISTANT] * 2
    # The second request carried the first turn: the system prompt, both user turns and the first answer.
    sent = [server.last_request(name) for name in ("a", "b")]
    last = max((s for s in sent if s), key=lambda s: len(s["messages"]))
    assert [m["role"] for m in last["messages"]] == ["system", "user", "assistant", "user"]
    # Chat engines keep only the message; it names its decision, so the user can score a turn later.
    for message in (history[1], history[3]):
        assert llm.feedback(message, 1.0).decision_id == message.additional_kwargs["decision_id"]
    assert _feedback_count(llm) == 2


def test_a_query_engine_answer_is_scored_through_a_scoped_request_id(
    server: OpenAIServer, make_server: MakeServer, model_client: ModelClient
) -> None:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.embeddings import MockEmbedding

    echo = make_server([SimulatedModel("echo", echo_answer)])
    llm = UniScaleLLM(models=[spec_for(echo, "echo")], client=model_client)
    try:
        documents = [Document(text="The vault code is 4711."), Document(text="Cats sleep a lot.")]
        index = VectorStoreIndex.from_documents(documents, embed_model=MockEmbedding(embed_dim=8))
        engine = index.as_query_engine(llm=llm, similarity_top_k=2)
        with llm.scoped_request_id("ticket-9"):
            answer = engine.query("What is the vault code?")
        # The echo model repeats the prompt: the retrieved context reached the model through UniScaleLLM.
        assert "The vault code is 4711." in str(answer) and "What is the vault code?" in str(answer)
        sent = echo.last_request("echo")
        assert sent is not None and sent["messages"][0]["role"] == "system"
        result = llm.feedback("ticket-9", 1.0)
        assert result.arm_id == "echo|single" and llm.stats()["pending"] == 0
        outside = llm.complete("no scope here")
        assert outside.raw["uniscale"]["request_id"] is None
        with llm.scoped_request_id("ticket-10"):
            pinned = llm.complete("q", request_id="mine")
        assert pinned.raw["uniscale"]["request_id"] == "mine"
        with pytest.raises(ConfigError, match=r"scoped_request_id\.request_id"), llm.scoped_request_id(""):
            pass
    finally:
        llm.close()


async def test_a_scoped_request_id_reaches_async_calls_and_tasks(
    make_llm: Callable[..., UniScaleLLM],
) -> None:
    llm, other = make_llm(), make_llm()
    with llm.scoped_request_id("outer"):
        direct = await llm.achat([ChatMessage(role="user", content="q")])
        with llm.scoped_request_id("inner"):
            task = asyncio.create_task(llm.acomplete("q"))
        stream = await llm.astream_chat([ChatMessage(role="user", content="q")])
        streamed = [response async for response in stream]
        unscoped = await other.acomplete("q")  # another router: not in this scope
    assert direct.raw["uniscale"]["request_id"] == "outer"
    assert (await task).raw["uniscale"]["request_id"] == "inner"
    assert streamed[-1].raw["uniscale"]["request_id"] == "outer"
    assert unscoped.raw["uniscale"]["request_id"] is None
    assert llm.feedback("inner", 1.0).decision_id == (await task).raw["decision_id"]


def test_predict_and_call_runs_the_tool(server: OpenAIServer, model_client: ModelClient) -> None:
    llm = _tool_llm(server, model_client)
    try:
        assert llm.metadata.is_function_calling_model
        tool = FunctionTool.from_defaults(fn=multiply)
        response = llm.chat_with_tools([tool], user_msg="what is 6 times 7?")
        (selection,) = llm.get_tool_calls_from_response(response)
        assert selection.tool_name == "multiply" and selection.tool_kwargs == {"a": 6, "b": 7}
        assert selection.tool_id.startswith("call_")
        sent = server.last_request("t")
        assert sent is not None and sent["tools"][0]["function"]["name"] == "multiply"
        assert sent["tool_choice"] == "auto"
        assert response.raw["tool_calls"][0]["function"]["name"] == "multiply"
        output = llm.predict_and_call([tool], user_msg="what is 6 times 7?")
        assert output.response == "42" and output.sources[0].tool_name == "multiply"
        forced = llm.chat_with_tools([tool], user_msg="hi", tool_choice="multiply")
        assert llm.get_tool_calls_from_response(forced)[0].tool_name == "multiply"
        assert server.last_request("t")["tool_choice"] == {
            "type": "function",
            "function": {"name": "multiply"},
        }
        assert llm.stats()["arms"]["t|single"]["pulls"] == 3  # only the arm that takes tools
    finally:
        llm.close()


def test_streamed_tool_calls_are_merged(server: OpenAIServer, model_client: ModelClient) -> None:
    llm = _tool_llm(server, model_client)
    try:
        tool = FunctionTool.from_defaults(fn=multiply)
        responses = list(llm.stream_chat_with_tools([tool], user_msg="what is 6 times 7?"))
        selections = llm.get_tool_calls_from_response(responses[-1])
        assert [(s.tool_name, s.tool_kwargs) for s in selections] == [("multiply", {"a": 6, "b": 7})]
        assert responses[-1].raw["uniscale"]["arm"] == "t|single"
    finally:
        llm.close()


def test_structured_predict_goes_through_a_forced_tool_call(
    server: OpenAIServer, model_client: ModelClient
) -> None:
    from llama_index.core.prompts import PromptTemplate
    from pydantic import BaseModel

    class Factors(BaseModel):
        """The two factors of a product."""

        a: int
        b: int

    llm = _tool_llm(server, model_client)
    try:
        factors = llm.structured_predict(Factors, PromptTemplate("factors of {n}?"), n="42")
        assert factors == Factors(a=6, b=7)
        sent = server.last_request("t")
        assert sent is not None and sent["tool_choice"] == "required"
        assert sent["tools"][0]["function"]["name"] == "Factors"
    finally:
        llm.close()


def test_the_example_runs_offline() -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "llama_index_demo.py"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run(
        [sys.executable, str(example), "--requests", "20"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "20 simulated requests scored by feedback_fn: accuracy" in done.stdout
        and "chat engine:" in done.stdout
    )


# llama-index-workflows reads pydantic's deprecated instance attributes (inspect.getmembers on the agent).
@pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince211")
async def test_function_agent_loop_sends_tool_results_back(
    server: OpenAIServer, model_client: ModelClient
) -> None:
    from llama_index.core.agent.workflow import FunctionAgent

    llm = _tool_llm(server, model_client)
    try:
        agent = FunctionAgent(tools=[FunctionTool.from_defaults(fn=multiply)], llm=llm, streaming=True)
        result = await asyncio.wait_for(agent.run(user_msg="what is 6 times 7?"), timeout=60)
        assert "the product is 42" in str(result)
        sent = server.last_request("t")
        assert sent is not None
        assistant, tool_message = sent["messages"][-2:]
        assert (
            assistant["role"] == "assistant" and assistant["tool_calls"][0]["function"]["name"] == "multiply"
        )
        assert tool_message == {
            "role": "tool",
            "content": "42",
            "tool_call_id": assistant["tool_calls"][0]["id"],
        }
        assert llm.stats()["requests"] == 2
    finally:
        await llm.aclose()


def test_messages_convert_as_llama_index_openai_does() -> None:
    from llama_index.core.base.llms.types import ImageBlock, TextBlock, ThinkingBlock, ToolCallBlock

    from uniscale_lc.llama_index.convert import openai_messages

    legacy = {"id": "call_1", "type": "function", "function": {"name": "multiply", "arguments": '{"a": 1}'}}
    plain = openai_messages(
        [
            ChatMessage(
                role="user",
                blocks=[
                    TextBlock(text="what is in "),
                    TextBlock(text="this?"),
                    ImageBlock(url="https://x/cat.png"),
                ],
            ),
            ChatMessage(
                role="assistant",
                blocks=[
                    ThinkingBlock(content="hmm"),
                    ToolCallBlock(tool_call_id="c2", tool_name="f", tool_kwargs={"a": 2}),
                ],
            ),
            ChatMessage(role="tool", content="4", additional_kwargs={"tool_call_id": "c2"}),
            ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [legacy]}),
            ChatMessage(role=MessageRole.CHATBOT, content="done"),
        ],
        "test",
    )
    assert plain[0] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is in "},
            {"type": "text", "text": "this?"},
            {"type": "image_url", "image_url": {"url": "https://x/cat.png"}},
        ],
    }
    assert plain[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c2", "type": "function", "function": {"name": "f", "arguments": '{"a": 2}'}}],
    }
    assert plain[2] == {"role": "tool", "content": "4", "tool_call_id": "c2"}
    assert plain[3] == {"role": "assistant", "content": None, "tool_calls": [legacy]}
    assert plain[4] == {"role": "assistant", "content": "done"}


# ----------------------------------------------------------------------------- bad input


def test_bad_input_is_refused_before_any_model_call(
    make_llm: Callable[..., UniScaleLLM], server: OpenAIServer
) -> None:
    llm = make_llm()
    tool = FunctionTool.from_defaults(fn=multiply)
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: llm.chat([]), r"UniScaleLLM\.messages: got \[\]"),
        (lambda: llm.chat([{"role": "user", "content": "hi"}]), r"messages\[0\]: got dict"),
        (
            lambda: llm.chat([ChatMessage(role="user", blocks=[AudioBlock(audio=b"abc", format="mp3")])]),
            r"messages\[0\]\.blocks\[0\].*AudioBlock",
        ),
        (lambda: llm.chat([ChatMessage(role="user", content="q")], model="zzz"), "model: got 'zzz'"),
        (lambda: llm.stream_chat([ChatMessage(role="user", content="q")], model="zzz"), "model: got 'zzz'"),
        (lambda: llm.stream_chat([ChatMessage(role="user", content="q")], seed=float("nan")), "seed"),
        (lambda: llm.chat_with_tools([tool], user_msg="q"), "tools: no candidate arm can take tools"),
        (lambda: llm.complete(123), r"complete\.prompt: got int"),
        (
            lambda: llm.chat_with_tools([tool], user_msg="q", tool_choice="divide"),
            r"tool_choice: got 'divide'",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ConfigError, match=message):
            call()
    with pytest.raises(ValueError, match="messages"):  # llama-index's own callback layer refuses a string
        llm.chat("hello")  # type: ignore[arg-type]
    assert _requests(server) == 0
    assert llm.stats()["requests"] == 0 and llm.stats()["failed_requests"] == 0


async def test_bad_input_in_async_paths(make_llm: Callable[..., UniScaleLLM], server: OpenAIServer) -> None:
    llm = make_llm()
    with pytest.raises(ConfigError, match="messages"):
        await llm.achat([])
    with pytest.raises(ConfigError, match="model: got 'zzz'"):
        await llm.astream_chat([ChatMessage(role="user", content="q")], model="zzz")
    with pytest.raises(ConfigError, match="prompt"):
        await llm.astream_complete(None)  # type: ignore[arg-type]
    assert _requests(server) == 0


def test_construction_errors_name_the_field(server: OpenAIServer, model_client: ModelClient) -> None:
    router = Router(models=[spec_for(server, "a")], client=model_client)
    with pytest.raises(ConfigError, match="not both"):
        UniScaleLLM(router=router, cost_weight=0.5)
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['colour'\]"):
        UniScaleLLM(router=router, colour="red")
    with pytest.raises(ConfigError, match=r"pass a uniscale_lc\.Router"):
        UniScaleLLM(router="router")  # type: ignore[arg-type]
    # A key goes in api_key (a SecretStr, the default of every ModelSpec without one) or a ModelSpec's
    # api_key_env; with a router given it belongs to that router, and the error never echoes it.
    with pytest.raises(ConfigError, match=r"UniScaleLLM\.router: give router") as keyed:
        UniScaleLLM(router=router, api_key="sk-secret")
    assert "sk-secret" not in str(keyed.value)
    with pytest.raises(ConfigError, match=r"UniScaleLLM\.openai_api_key: not a field; pass the key as api_key"):
        UniScaleLLM(models=[spec_for(server, "a")], openai_api_key="sk-secret")
    with pytest.raises(ConfigError, match=r"UniScaleLLM\.models: got no models"):
        UniScaleLLM(models=[])
    with pytest.raises(ConfigError, match=r"UniScaleLLM\.feedback_fn: must be callable"):
        UniScaleLLM(router=router, feedback_fn="score it")
    with pytest.raises(ValueError, match="context_window"):  # pydantic names LlamaIndex-side fields
        UniScaleLLM(router=router, context_window=0)
    with pytest.raises(ConfigError, match=r"UniScaleLLM\.cost_weight"):
        UniScaleLLM(models=[spec_for(server, "a")], cost_weight=-1.0)
    router.close()


# ----------------------------------------------------------------------------- one learner, many faces


def test_copies_and_other_front_ends_share_one_learner(
    server: OpenAIServer, model_client: ModelClient
) -> None:
    router = Router(
        models=[spec_for(server, "a"), spec_for(server, "b")], strategies=[Single()], client=model_client
    )
    llm = UniScaleLLM(router=router, system_prompt="be brief")
    shallow, deep = llm.model_copy(), copy.deepcopy(llm)
    assert shallow.core is router and deep.core is router and deep.system_prompt == "be brief"
    response = deep.chat([ChatMessage(role="user", content="q")])
    assert shallow.feedback(response, 1.0).decision_id == response.raw["decision_id"]
    assert (
        router.stats()["requests"] == 1 and sum(a["feedback"] for a in router.stats()["arms"].values()) == 1
    )
    routed = router.complete("direct")
    assert llm.feedback(routed.decision_id, 0.5).arm_id == routed.decision["arm"]
    payload = json.dumps(llm.to_dict(), default=str)
    assert "router" not in llm.to_dict() and "sk-" not in payload
    llm.close()


def test_state_path_persists_what_was_learnt(make_llm: Callable[..., UniScaleLLM], tmp_path: Path) -> None:
    state = tmp_path / "uniscale.npz"
    llm = make_llm(state_path=str(state), autosave_interval_s=0)
    llm.feedback(llm.chat([ChatMessage(role="user", content="q")]), 1.0)
    llm.close()
    again = make_llm(state_path=str(state))
    assert _feedback_count(again) == 1 and again.stats()["requests"] == 1


def test_fit_warm_starts_the_shared_router(make_llm: Callable[..., UniScaleLLM]) -> None:
    llm = make_llm()
    before = json.dumps(llm.core.policy.state_dict(), default=repr)
    summary = llm.fit([("what is 6 x 7?", "b|single", 1.0), ("what is 6 x 7?", "a|single", 0.0)])
    assert summary["records"] == 2 and summary["arms_taught"] == 2
    assert json.dumps(llm.core.policy.state_dict(), default=repr) != before


# ----------------------------------------------------------------------------- the extra stays optional


def test_importing_the_adapter_and_llama_index_tokenizer_downloads_nothing() -> None:
    """In a fresh interpreter with every socket connection refused: imports, chat engine, tokenizer."""
    script = (
        "import socket\n"
        "def refuse(self, address):\n"
        "    raise OSError(f'network refused: {address!r}')\n"
        "socket.socket.connect = refuse\n"
        "from uniscale_lc.llama_index import UniScaleLLM\n"
        "from llama_index.core.chat_engine import SimpleChatEngine\n"
        "from llama_index.core.memory import Memory\n"
        "from llama_index.core.utils import get_tokenizer\n"
        "assert len(get_tokenizer()('hello world')) == 2\n"
        "Memory.from_defaults(token_limit=1000)\n"
        "print('offline ok')\n"
    )
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("TIKTOKEN_CACHE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "offline ok" in done.stdout


def test_the_library_imports_without_the_extra() -> None:
    """With llama_index unimportable, `import uniscale_lc` works and the adapter names the extra to install."""
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'llama_index' or name.startswith('llama_index.'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import uniscale_lc\n"
        "assert uniscale_lc.Router is not None\n"
        "assert not any(m.startswith('llama_index') for m in sys.modules)\n"
        "try:\n"
        "    import uniscale_lc.llama_index\n"
        "except ImportError as error:\n"
        "    print('refused:', error)\n"
    )
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'uniscale-lc[llama-index]'" in done.stdout
