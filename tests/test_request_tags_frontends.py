"""Request tags through the three front-ends: LangChain's `uniscale_tags` (kwarg, bind, config metadata),
the OpenAI-compatible server's `metadata.uniscale_tags`, LlamaIndex's `uniscale_tags` kwarg.

Each test routes against the loopback model server and reads the tag block of the pending decision's
context (the last `tag_buckets` features, no load signals here): a tagged request carries its tags'
features there, an untagged one zeros; the tags never reach a provider; a bad value or tags sent to a
router without tag features (`tag_buckets=0`) are the caller's error, refused before any model is called.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableLambda

from uniscale_lc import Router, UniScaleChat
from uniscale_lc.client import ModelClient, RetryPolicy
from uniscale_lc.errors import ConfigError
from uniscale_lc.server.errors import ApiError
from uniscale_lc.server.openai_schema import parse_chat_request, parse_route_request, tags_from
from uniscale_lc.tags import tag_features
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel

pytest.register_assert_rewrite("fixtures_server")
from fixtures_server import spec_for  # noqa: E402

pytest_plugins = ("fixtures_server",)
pytestmark = pytest.mark.timeout(120)

MakeServer = Callable[[Sequence[SimulatedModel]], OpenAIServer]
BUCKETS = 8
MODELS = ("alpha", "beta")
USER = [{"role": "user", "content": "why was I charged twice"}]


@pytest.fixture
def server(make_server: MakeServer) -> OpenAIServer:
    return make_server([SimulatedModel("alpha", "alpha says hi"), SimulatedModel("beta", "beta says hi")])


def _client() -> ModelClient:
    return ModelClient(retry=RetryPolicy(max_attempts=2, base_delay_s=0.01, max_delay_s=0.02))


def _specs(server: OpenAIServer) -> list[Any]:
    return [spec_for(server, name) for name in MODELS]


def _requests(server: OpenAIServer) -> int:
    return sum(server.request_count(name) for name in MODELS)


def _context(router: Router, decision_id: str) -> np.ndarray:
    pending = router.pending_decisions.find(decision_id)
    assert pending is not None, f"no pending decision {decision_id}"
    return np.asarray(pending.decision.context)


def _tag_block(router: Router, decision_id: str) -> np.ndarray:
    return _context(router, decision_id)[-BUCKETS:]


def _expected(*tags: str) -> np.ndarray:
    return tag_features(tags, BUCKETS)


def _never_sent(server: OpenAIServer) -> None:
    """No body any model received mentions the tags (nor the request's metadata)."""
    for name in MODELS:
        for body in server.last_requests(name):
            assert "uniscale_tags" not in json.dumps(body) and "metadata" not in body


def test_tag_features_differ_between_tags() -> None:
    # The premise of the tests below: each tag (and no tag) gives a block of its own.
    blocks = [_expected("billing"), _expected("refunds"), _expected("billing", "refunds"), _expected()]
    for index, block in enumerate(blocks):
        for other in blocks[index + 1 :]:
            assert not np.allclose(block, other)
    assert not blocks[-1].any() and np.linalg.norm(blocks[0]) == pytest.approx(1.0)


# ---------------------------------------------------------------------------- LangChain


def _chat(server: OpenAIServer, **fields: Any) -> UniScaleChat:
    return UniScaleChat(models=_specs(server), client=_client(), **fields)


def _decision_id(message: Any) -> str:
    return str(message.response_metadata["uniscale"]["decision_id"])


def test_langchain_kwarg_tags_reach_the_context_and_never_the_provider(server: OpenAIServer) -> None:
    chat = _chat(server, tag_buckets=BUCKETS)
    tagged = chat.invoke("why was I charged twice", uniscale_tags=["billing"])
    untagged = chat.invoke("why was I charged twice")
    one_string = chat.invoke("why was I charged twice", uniscale_tags="billing")
    two = chat.invoke("why was I charged twice", uniscale_tags=("billing", "refunds", "billing"))
    router = chat.core
    np.testing.assert_allclose(_tag_block(router, _decision_id(tagged)), _expected("billing"))
    np.testing.assert_array_equal(_tag_block(router, _decision_id(untagged)), np.zeros(BUCKETS))
    np.testing.assert_allclose(_tag_block(router, _decision_id(one_string)), _expected("billing"))
    np.testing.assert_allclose(_tag_block(router, _decision_id(two)), _expected("billing", "refunds"))
    # Only the tag block differs: the prompt's features are the same.
    np.testing.assert_array_equal(
        _context(router, _decision_id(tagged))[:-BUCKETS], _context(router, _decision_id(untagged))[:-BUCKETS]
    )
    assert _requests(server) == 4
    _never_sent(server)


def test_langchain_tags_by_bind_stream_ainvoke_and_generate(server: OpenAIServer) -> None:
    chat = _chat(server, tag_buckets=BUCKETS)
    router = chat.core
    bound = chat.bind(uniscale_tags=["billing"]).invoke("q")
    np.testing.assert_allclose(_tag_block(router, _decision_id(bound)), _expected("billing"))
    chunks = list(chat.stream("q", uniscale_tags=["refunds"]))
    last = next(chunk for chunk in reversed(chunks) if chunk.response_metadata.get("uniscale"))
    np.testing.assert_allclose(_tag_block(router, _decision_id(last)), _expected("refunds"))
    awaited = asyncio.run(chat.ainvoke("q", uniscale_tags=["billing", "refunds"]))
    np.testing.assert_allclose(_tag_block(router, _decision_id(awaited)), _expected("billing", "refunds"))
    # generate() skips invoke: the tags come from the run's metadata.
    result = chat.generate([[HumanMessage("q")]], metadata={"uniscale_tags": ["refunds"]})
    generated = result.generations[0][0].message  # type: ignore[attr-defined]
    np.testing.assert_allclose(_tag_block(router, _decision_id(generated)), _expected("refunds"))
    _never_sent(server)


def test_langchain_tags_from_config_metadata_through_a_chain_and_kwargs_win(server: OpenAIServer) -> None:
    chat = _chat(server, tag_buckets=BUCKETS)
    router = chat.core
    config: Any = {"metadata": {"uniscale_tags": ["refunds"]}}
    direct = chat.invoke("q", config=config)
    np.testing.assert_allclose(_tag_block(router, _decision_id(direct)), _expected("refunds"))
    chain = RunnableLambda(lambda text: f"{text}?") | chat
    chained = chain.invoke("q", config=config)
    np.testing.assert_allclose(_tag_block(router, _decision_id(chained)), _expected("refunds"))
    # An explicit kwarg (here a bound one) wins over the config's metadata.
    bound = chat.bind(uniscale_tags=["billing"]).invoke("q", config=config)
    np.testing.assert_allclose(_tag_block(router, _decision_id(bound)), _expected("billing"))
    kwarg = chat.invoke("q", config=config, uniscale_tags="billing")
    np.testing.assert_allclose(_tag_block(router, _decision_id(kwarg)), _expected("billing"))
    _never_sent(server)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda chat: chat.invoke("q", uniscale_tags=[3]), r"uniscale_tags\[0\]: got 3"),
        (lambda chat: chat.invoke("q", uniscale_tags=[""]), r"uniscale_tags\[0\]"),
        (lambda chat: chat.invoke("q", uniscale_tags={"billing": 1}), r"uniscale_tags: got dict"),
        (lambda chat: chat.bind(uniscale_tags=7).invoke("q"), r"uniscale_tags: got int"),
        (
            lambda chat: chat.invoke("q", config={"metadata": {"uniscale_tags": [None]}}),
            r"uniscale_tags\[0\]: got None",
        ),
        (lambda chat: list(chat.stream("q", uniscale_tags=[1.5])), r"uniscale_tags\[0\]"),
    ],
)
def test_langchain_a_bad_tag_value_is_a_config_error_naming_it_and_calls_nothing(
    server: OpenAIServer, call: Callable[[UniScaleChat], Any], match: str
) -> None:
    chat = _chat(server, tag_buckets=BUCKETS)
    with pytest.raises(ConfigError, match=match):
        call(chat)
    assert _requests(server) == 0 and len(chat.pending_decisions) == 0


def test_langchain_tags_without_tag_buckets_are_refused_before_any_model(server: OpenAIServer) -> None:
    chat = _chat(server)  # tag_buckets=0
    with pytest.raises(ConfigError, match=r"tag_buckets is 0.*tag_buckets=64"):
        chat.invoke("q", uniscale_tags=["billing"])
    with pytest.raises(ConfigError, match="tag_buckets is 0"):
        chat.invoke("q", config={"metadata": {"uniscale_tags": "billing"}})
    with pytest.raises(ConfigError, match="tag_buckets is 0"):
        list(chat.stream("q", uniscale_tags=["billing"]))
    assert _requests(server) == 0 and len(chat.pending_decisions) == 0
    assert all(row.get("pulls", 0) == 0 for row in chat.stats()["arms"].values())
    chat.invoke("q")  # untagged requests still route
    assert _requests(server) == 1


# ---------------------------------------------------------------------------- the OpenAI-compatible server


def _metadata(value: Any) -> dict[str, Any]:
    return {"messages": USER, "metadata": {"uniscale_tags": value}}


@pytest.mark.parametrize(
    ("value", "tags"),
    [
        (["billing"], ("billing",)),
        (["billing", "refunds", "billing"], ("billing", "refunds")),
        ("billing", ("billing",)),
        (" billing , refunds ,", ("billing", "refunds")),
        ('["billing", "a,b"]', ("billing", "a,b")),
        (None, ()),
    ],
)
def test_server_schema_reads_metadata_tags(value: Any, tags: tuple[str, ...]) -> None:
    chat = parse_chat_request(_metadata(value))
    assert chat.tags == tags == tags_from(_metadata(value))
    assert parse_route_request(_metadata(value)).tags == tags
    kwargs = chat.router_kwargs()
    assert kwargs.get("tags", ()) == tags and ("tags" in kwargs) == bool(tags)  # left out when none


@pytest.mark.parametrize(
    "value",
    [3, [3], [""], ["ok", {"a": 1}], "", " , ", "[broken", '["ok", 4]', "x" * 201, ["x"] * 33],
)
def test_server_schema_a_bad_tag_value_is_a_400_naming_the_field(value: Any) -> None:
    for parse in (parse_chat_request, parse_route_request):
        with pytest.raises(ApiError) as caught:
            parse(_metadata(value))
        error = caught.value
        assert error.status == 400 and error.param == "metadata.uniscale_tags"
        assert error.message.startswith("metadata.uniscale_tags")


@pytest.fixture
def serve() -> Iterator[Callable[[Router], Any]]:
    """`serve(router)` runs the app on 127.0.0.1 and returns an httpx client for it; stopped after the test."""
    pytest.importorskip("uvicorn", reason="the [server] extra is not installed")
    httpx = pytest.importorskip("httpx")
    from uniscale_lc.server import create_app
    from uniscale_lc.server.threaded import ThreadedServer

    started: list[tuple[Any, Any]] = []

    def factory(router: Router) -> Any:
        threaded = ThreadedServer(create_app(router)).start()
        client = httpx.Client(base_url=threaded.base_url, timeout=httpx.Timeout(20.0))
        started.append((threaded, client))
        return client

    yield factory
    for threaded, client in started:
        client.close()
        threaded.stop()


def _router(server: OpenAIServer, **fields: Any) -> Router:
    return Router(models=_specs(server), client=_client(), max_retries=0, **fields)


def _sse_record(text: str) -> dict[str, Any]:
    """The decision record of a streamed answer (on the last chunk before [DONE])."""
    events = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    records = [json.loads(event)["uniscale"] for event in events[:-1] if "uniscale" in json.loads(event)]
    assert len(records) == 1
    return dict(records[0])


def test_server_metadata_tags_reach_the_context_and_never_the_provider(
    server: OpenAIServer, serve: Callable[[Router], Any]
) -> None:
    router = _router(server, tag_buckets=BUCKETS)
    http = serve(router)
    tagged = http.post("/v1/chat/completions", json=_metadata("billing,refunds"))
    listed = http.post("/v1/chat/completions", json=_metadata(["billing"]))
    untagged = http.post("/v1/chat/completions", json={"messages": USER})
    streamed = http.post("/v1/chat/completions", json={**_metadata('["refunds"]'), "stream": True})
    routed = http.post("/v1/route", json=_metadata(["billing"]))
    for response in (tagged, listed, untagged, streamed, routed):
        assert response.status_code == 200, response.text
    ids = {name: response.headers["x-uniscale-decision-id"] for name, response in [
        ("tagged", tagged), ("listed", listed), ("untagged", untagged), ("streamed", streamed),
        ("routed", routed)]}  # fmt: skip
    assert tagged.json()["uniscale"]["decision_id"] == ids["tagged"]
    assert _sse_record(streamed.text)["decision_id"] == ids["streamed"]
    np.testing.assert_allclose(_tag_block(router, ids["tagged"]), _expected("billing", "refunds"))
    np.testing.assert_allclose(_tag_block(router, ids["listed"]), _expected("billing"))
    np.testing.assert_array_equal(_tag_block(router, ids["untagged"]), np.zeros(BUCKETS))
    np.testing.assert_allclose(_tag_block(router, ids["streamed"]), _expected("refunds"))
    np.testing.assert_allclose(_tag_block(router, ids["routed"]), _expected("billing"))
    np.testing.assert_array_equal(
        _context(router, ids["tagged"])[:-BUCKETS], _context(router, ids["untagged"])[:-BUCKETS]
    )
    assert _requests(server) == 4  # /v1/route calls no model
    _never_sent(server)


def test_server_bad_tags_and_tags_without_tag_buckets_are_400s_naming_the_field(
    server: OpenAIServer, serve: Callable[[Router], Any]
) -> None:
    with_tags = serve(_router(server, tag_buckets=BUCKETS))
    response = with_tags.post("/v1/chat/completions", json=_metadata([1]))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "metadata.uniscale_tags"
    without = serve(_router(server))  # tag_buckets=0
    for path, body in [
        ("/v1/chat/completions", _metadata("billing")),
        ("/v1/chat/completions", {**_metadata(["billing"]), "stream": True}),
        ("/v1/route", _metadata(["billing"])),
    ]:
        response = without.post(path, json=body)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "metadata.uniscale_tags" and error["type"] == "invalid_request_error"
        assert "tag_buckets=0" in error["message"] and "leave the tags out" in error["message"]
    assert _requests(server) == 0
    assert without.get("/health").json()["pending"] == 0
    assert without.post("/v1/chat/completions", json={"messages": USER}).status_code == 200


def test_server_a_router_tags_error_is_a_400_even_without_the_app_check(server: OpenAIServer) -> None:
    # The app's own check needs `router.config`; the router's refusal alone still maps to a 400.
    from uniscale_lc.server.errors import from_exception

    router = _router(server)
    try:
        with pytest.raises(ConfigError) as caught:
            asyncio.run(router.acomplete(USER, tags=["billing"]))
    finally:
        router.close()
    assert from_exception(caught.value).status == 400
    assert _requests(server) == 0


# ---------------------------------------------------------------------------- LlamaIndex


@pytest.fixture
def make_llm(server: OpenAIServer) -> Iterator[Callable[..., Any]]:
    pytest.importorskip("llama_index.core", reason="the [llama-index] extra is not installed")
    from uniscale_lc.llama_index import UniScaleLLM

    made: list[Any] = []

    def factory(**fields: Any) -> Any:
        llm = UniScaleLLM(models=_specs(server), client=_client(), **fields)
        made.append(llm)
        return llm

    yield factory
    for llm in made:
        llm.close()


def test_llama_index_tags_reach_the_context_and_never_the_provider(
    server: OpenAIServer, make_llm: Callable[..., Any]
) -> None:
    from llama_index.core.llms import ChatMessage

    llm = make_llm(tag_buckets=BUCKETS)
    router = llm.core
    messages = [ChatMessage(role="user", content="why was I charged twice")]
    tagged = llm.chat(messages, uniscale_tags=["billing"])
    untagged = llm.chat(messages)
    completed = llm.complete("why was I charged twice", uniscale_tags="refunds")
    streamed = list(llm.stream_chat(messages, uniscale_tags=("billing", "refunds")))[-1]
    awaited = asyncio.run(llm.achat(messages, uniscale_tags=["refunds"]))

    def block(response: Any) -> np.ndarray:
        return _tag_block(router, response.additional_kwargs["decision_id"])

    np.testing.assert_allclose(block(tagged), _expected("billing"))
    np.testing.assert_array_equal(block(untagged), np.zeros(BUCKETS))
    np.testing.assert_allclose(block(completed), _expected("refunds"))
    np.testing.assert_allclose(block(streamed), _expected("billing", "refunds"))
    np.testing.assert_allclose(block(awaited), _expected("refunds"))
    assert _requests(server) == 5
    _never_sent(server)


def test_llama_index_bad_tags_and_tags_without_tag_buckets_call_nothing(
    server: OpenAIServer, make_llm: Callable[..., Any]
) -> None:
    from llama_index.core.llms import ChatMessage

    messages = [ChatMessage(role="user", content="q")]
    llm = make_llm(tag_buckets=BUCKETS)
    with pytest.raises(ConfigError, match=r"UniScaleLLM\.uniscale_tags\[0\]: got 3"):
        llm.chat(messages, uniscale_tags=[3])
    with pytest.raises(ConfigError, match=r"UniScaleLLM\.uniscale_tags: got dict"):
        llm.stream_chat(messages, uniscale_tags={"a": 1})
    untagged = make_llm()  # tag_buckets=0
    with pytest.raises(ConfigError, match="tag_buckets is 0"):
        untagged.chat(messages, uniscale_tags=["billing"])
    with pytest.raises(ConfigError, match="tag_buckets is 0"):
        untagged.complete("q", uniscale_tags="billing")
    assert _requests(server) == 0
    assert len(llm.pending_decisions) == 0 and len(untagged.pending_decisions) == 0


def _tag_records() -> list[dict[str, Any]]:
    """alpha is right under 'billing', beta under 'refunds'; the prompts say nothing of it."""
    return [
        {"prompt": f"ticket {i}", "arm_id": f"{arm}|single", "quality": float(arm == best), "tags": [tag]}
        for i in range(30)
        for tag, best in (("billing", "alpha"), ("refunds", "beta"))
        for arm in MODELS
    ]


def test_explain_on_both_front_ends_scores_with_the_tags(
    server: OpenAIServer, make_llm: Callable[..., Any]
) -> None:
    chat, llm = _chat(server, tag_buckets=BUCKETS), make_llm(tag_buckets=BUCKETS)
    for front_end in (chat, llm):
        front_end.core.fit(_tag_records())
        assert front_end.explain("ticket 7", uniscale_tags="billing")[0]["arm"] == "alpha|single"
        assert front_end.explain("ticket 7", uniscale_tags=["refunds"])[0]["arm"] == "beta|single"
    with pytest.raises(ConfigError, match="tag_buckets is 0"):
        _chat(server).explain("ticket 7", uniscale_tags="billing")
    assert _requests(server) == 0
    chat.close()
