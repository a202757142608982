"""The OpenAI-compatible server end to end: the official openai client against a real uvicorn on 127.0.0.1,
over a Router on the loopback model server. Plain and streaming answers, tools, feedback, route-only,
models, metrics, health, auth, each kind of bad request (never teaching an arm), and all arms failing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import openai
import pytest
from fixtures_server import FIXED_ANSWER, spec_for

from uniscale_lc import FixedArm, Router
from uniscale_lc.server import create_app
from uniscale_lc.server.threaded import THREAD_NAME, ThreadedServer
from uniscale_lc.serving.prometheus import parse_prometheus_text
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel

pytest_plugins = ("fixtures_server",)

QUESTION = [{"role": "user", "content": "what is the capital of France"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
# A float, not httpx.Timeout: openai 3.x builds on httpx2, whose Timeout does not accept httpx's (both take seconds).
TIMEOUT = 20.0


class Served:
    """A router behind a live server, with the clients a test needs."""

    def __init__(self, router: Router, server: ThreadedServer, api_key: str) -> None:
        self.router = router
        self.server = server
        self.openai = openai.OpenAI(
            base_url=server.base_url + "/v1", api_key=api_key, max_retries=0, timeout=TIMEOUT
        )
        self.http = httpx.Client(base_url=server.base_url, timeout=TIMEOUT)

    def post(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, json=body, **kwargs)


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """`serve(router, api_key=None)` starts a server; every one is stopped (and its router closed) after the test."""
    started: list[Served] = []

    def factory(router: Router, api_key: str | None = None) -> Served:
        server = ThreadedServer(create_app(router, api_key=api_key)).start()
        served = Served(router, server, api_key or "unused")
        started.append(served)
        return served

    yield factory
    for served in started:
        served.http.close()
        served.openai.close()
        served.server.stop()
    import threading

    assert not [t for t in threading.enumerate() if t.name == THREAD_NAME]


def _router(server: OpenAIServer, models: Sequence[str] = ("echo", "fixed"), **fields: Any) -> Router:
    fields.setdefault("max_retries", 0)
    return Router(models=[spec_for(server, name) for name in models], **fields)


@pytest.fixture
def served(openai_server: OpenAIServer, serve: Callable[..., Served]) -> Served:
    return serve(_router(openai_server, models=("echo",)))


# ---------------------------------------------------------------------- chat completions


def test_plain_completion_has_openai_shape_header_and_decision(served: Served) -> None:
    raw = served.openai.chat.completions.with_raw_response.create(model="uniscale", messages=QUESTION)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == QUESTION[0]["content"]  # the echo model
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model.endswith("echo")
    assert completion.usage is not None and completion.usage.completion_tokens == 6
    record = completion.model_extra["uniscale"]
    assert raw.headers["x-uniscale-decision-id"] == record["decision_id"]
    assert record["arm"] == "echo|single"
    assert record["decision_id"] in served.router.pending_decisions


def test_a_served_model_name_pins_the_arm(openai_server: OpenAIServer, serve: Callable[..., Served]) -> None:
    served = serve(_router(openai_server))
    for _ in range(3):
        completion = served.openai.chat.completions.create(model="fixed", messages=QUESTION)
        assert completion.choices[0].message.content == FIXED_ANSWER
        assert completion.model_extra["uniscale"]["arm"] == "fixed|single"


def test_streaming_sends_the_header_first_and_the_record_in_the_last_chunk(served: Served) -> None:
    with served.openai.chat.completions.with_streaming_response.create(
        model="uniscale", messages=QUESTION, stream=True, stream_options={"include_usage": True}
    ) as response:
        decision_id = response.headers["x-uniscale-decision-id"]
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == QUESTION[0]["content"]
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and last.usage.completion_tokens == 6
    assert last.model_extra["uniscale"]["decision_id"] == decision_id
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_streaming_without_usage_puts_the_record_on_the_finish_chunk(served: Served) -> None:
    chunks = list(served.openai.chat.completions.create(model="uniscale", messages=QUESTION, stream=True))
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["uniscale"]["arm"] == "echo|single"


def test_tools_plain_and_streamed(openai_server: OpenAIServer, serve: Callable[..., Served]) -> None:
    served = serve(_router(openai_server, models=("tools",)))
    completion = served.openai.chat.completions.create(
        model="uniscale", messages=[{"role": "user", "content": "weather in Paris?"}], tools=[WEATHER_TOOL]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    sent = openai_server.last_request("tools")
    assert sent is not None and sent["tools"][0]["function"]["name"] == "get_weather"

    stream = served.openai.chat.completions.create(
        model="uniscale",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    names, arguments, finish = [], "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        for delta in chunk.choices[0].delta.tool_calls or []:
            assert delta.index == 0
            if delta.function and delta.function.name:
                names.append(delta.function.name)
            if delta.function and delta.function.arguments:
                arguments += delta.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert names == ["get_weather"] and json.loads(arguments) == {"city": "Paris"}
    assert finish == "tool_calls"

    # A tool result goes back in the conversation, as OpenAI clients send it.
    follow_up = served.openai.chat.completions.create(
        model="uniscale",
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
        tools=[WEATHER_TOOL],
        tool_choice="none",
    )
    assert follow_up.choices[0].message.content == "no tool needed"


# ---------------------------------------------------------------------- feedback and route


def test_feedback_by_decision_id_and_by_request_id(served: Served) -> None:
    first = served.openai.chat.completions.create(model="uniscale", messages=QUESTION)
    decision_id = first.model_extra["uniscale"]["decision_id"]
    applied = served.post("/v1/feedback", {"decision_id": decision_id, "score": 0.8})
    assert applied.status_code == 200
    assert applied.json() | {"reward": None} == {
        "decision_id": decision_id,
        "arm_id": "echo|single",
        "quality": 0.8,
        "reward": None,
        "duplicate": False,
        "decisions": 1,
    }
    again = served.post("/v1/feedback", {"decision_id": decision_id, "score": 0.1})
    assert again.status_code == 200 and again.json()["duplicate"] and again.json()["quality"] == 0.8

    served.openai.chat.completions.create(
        model="uniscale", messages=QUESTION, extra_headers={"x-uniscale-request-id": "req-42"}
    )
    by_request = served.post("/v1/feedback", {"request_id": "req-42", "score": 1})
    assert by_request.status_code == 200 and not by_request.json()["duplicate"]
    arm = served.router.stats()["arms"]["echo|single"]
    assert arm["feedback"] == 2 and arm["mean_quality"] == pytest.approx(0.9)


def test_bad_feedback_is_a_4xx_and_loses_nothing(served: Served) -> None:
    completion = served.openai.chat.completions.create(model="uniscale", messages=QUESTION)
    decision_id = completion.model_extra["uniscale"]["decision_id"]
    cases = [
        ({"decision_id": decision_id, "score": 7}, 400, "score"),
        ({"decision_id": decision_id, "score": "good"}, 400, "score"),
        ({"decision_id": decision_id}, 400, "score"),
        ({"score": 1}, 400, "decision_id"),
        ({"decision_id": "no-such-decision", "score": 1}, 404, "decision_id"),
        ({"request_id": "never-sent", "score": 1}, 404, "request_id"),
    ]
    for body, status, param in cases:
        response = served.post("/v1/feedback", body)
        assert response.status_code == status, body
        error = response.json()["error"]
        assert error["param"] == param and error["message"], body
    not_json = served.http.post("/v1/feedback", content=b"score=1")
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
    assert served.router.stats()["arms"]["echo|single"]["feedback"] == 0
    assert decision_id in served.router.pending_decisions  # still there to be scored
    assert served.post("/v1/feedback", {"decision_id": decision_id, "score": 1.0}).status_code == 200


def test_route_picks_an_arm_without_calling_a_model(
    openai_server: OpenAIServer, serve: Callable[..., Served]
) -> None:
    served = serve(_router(openai_server))
    response = served.post("/v1/route", {"model": "uniscale", "messages": QUESTION})
    assert response.status_code == 200
    body = response.json()
    assert body["arm_id"] in ("echo|single", "fixed|single")
    assert body["strategy"] == "single" and body["model"].endswith(body["arm_id"].split("|")[0])
    assert body["predicted_cost_usd"] >= 0
    assert (
        response.headers["x-uniscale-decision-id"] == body["decision_id"] == body["uniscale"]["decision_id"]
    )
    assert openai_server.request_count("echo") + openai_server.request_count("fixed") == 0
    learnt = served.post("/v1/feedback", {"decision_id": body["decision_id"], "score": 1.0})
    assert learnt.status_code == 200 and learnt.json()["arm_id"] == body["arm_id"]
    pinned = served.post("/v1/route", {"model": "fixed", "messages": QUESTION})
    assert pinned.json()["arm_id"] == "fixed|single"
    assert served.post("/v1/route", {"messages": []}).json()["error"]["param"] == "messages"


# ---------------------------------------------------------------------- models, metrics, health


def test_models_lists_the_router_and_each_model(
    openai_server: OpenAIServer, serve: Callable[..., Served]
) -> None:
    served = serve(_router(openai_server))
    ids = [model.id for model in served.openai.models.list()]
    assert ids == ["uniscale", "echo", "fixed"]


def test_metrics_count_requests_pulls_feedback_and_latency(served: Served) -> None:
    completion = served.openai.chat.completions.create(model="uniscale", messages=QUESTION)
    served.post(
        "/v1/feedback", {"decision_id": completion.model_extra["uniscale"]["decision_id"], "score": 1}
    )
    served.post("/v1/feedback", {"decision_id": "missing", "score": 1})
    with pytest.raises(openai.BadRequestError):
        served.openai.chat.completions.create(model="uniscale", messages=[])
    response = served.http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    metrics = parse_prometheus_text(response.text)
    assert metrics.total("uniscale_requests_total", endpoint="chat_completions", status="200") == 1
    assert metrics.total("uniscale_requests_total", endpoint="chat_completions", status="400") == 1
    assert metrics.total("uniscale_requests_total", endpoint="feedback", status="404") == 1
    assert metrics.by_label("uniscale_arm_pulls_total", "arm") == {"echo|single": 1}
    assert metrics.by_label("uniscale_arm_feedback_total", "arm") == {"echo|single": 1}
    assert metrics.total("uniscale_feedback_total", outcome="applied") == 1
    assert metrics.total("uniscale_feedback_total", outcome="unknown") == 1
    assert metrics.total("uniscale_request_latency_seconds_count", arm="echo|single") == 1


def test_health_and_unknown_paths(served: Served) -> None:
    health = served.http.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["arms"] == 1
    missing = served.http.get("/v1/nothing-here")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong_method = served.http.get("/v1/chat/completions")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


# ---------------------------------------------------------------------- auth


def test_bearer_auth(openai_server: OpenAIServer, serve: Callable[..., Served]) -> None:
    served = serve(_router(openai_server, models=("echo",)), api_key="s3cret-token")
    assert served.openai.chat.completions.create(model="uniscale", messages=QUESTION).choices
    wrong = openai.OpenAI(
        base_url=served.server.base_url + "/v1", api_key="guess", max_retries=0, timeout=TIMEOUT
    )
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(model="uniscale", messages=QUESTION)
    assert "s3cret" not in str(caught.value)
    wrong.close()
    for path in ("/metrics", "/v1/models"):
        assert served.http.get(path).status_code == 401
    assert served.post("/v1/feedback", {"decision_id": "x", "score": 1}).status_code == 401
    assert served.http.get("/health").status_code == 200  # liveness probes carry no key
    scrape = served.http.get("/metrics", headers={"authorization": "Bearer s3cret-token"})
    assert parse_prometheus_text(scrape.text).total("uniscale_requests_total", endpoint="unauthorized") == 4
    assert served.router.stats()["requests"] == 1  # the refused request never reached the router


# ---------------------------------------------------------------------- the caller's mistakes, and failures


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": QUESTION, "model": "gpt-9000"}, "model"),
        ({"messages": QUESTION, "n": 2}, "n"),
        ({"messages": QUESTION, "temperature": 5}, "temperature"),
        ({"messages": QUESTION, "max_tokens": 0}, "max_tokens"),
        ({"messages": QUESTION, "extra_body": {"temprature": 1}}, "temprature"),
        ({"messages": QUESTION, "tools": [{"type": "function"}]}, "tools[0]"),
        ({"messages": QUESTION, "tool_choice": "always"}, "tool_choice"),
        ({"messages": QUESTION, "logprobs": True}, "logprobs"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_bad_requests_are_400s_that_teach_nothing(
    openai_server: OpenAIServer,
    serve: Callable[..., Served],
    kwargs: dict[str, Any],
    param: str,
    stream: bool,
) -> None:
    served = serve(_router(openai_server))
    kwargs = {"model": "uniscale", **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        served.openai.chat.completions.create(stream=stream, **kwargs)
    error = caught.value.body
    assert isinstance(error, dict) and error["param"] == param and error["type"] == "invalid_request_error"
    assert caught.value.response.status_code == 400
    stats = served.router.stats()
    assert stats["requests"] == 0 and stats["pending"] == 0 and not stats["arms"]
    assert openai_server.request_count("echo") + openai_server.request_count("fixed") == 0


def test_tools_on_a_model_without_tool_support_name_the_field(
    openai_server: OpenAIServer, serve: Callable[..., Served]
) -> None:
    router = Router(models=[spec_for(openai_server, "echo", supports_tools=False)], max_retries=0)
    served = serve(router)
    with pytest.raises(openai.BadRequestError) as caught:
        served.openai.chat.completions.create(model="uniscale", messages=QUESTION, tools=[WEATHER_TOOL])
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "tools"


def test_a_body_that_is_not_json_or_too_large(served: Served) -> None:
    response = served.http.post(
        "/v1/chat/completions", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    big = {"messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]}
    assert served.post("/v1/chat/completions", big).status_code == 413


@pytest.mark.parametrize("stream", [False, True])
def test_all_arms_failing_is_a_502_naming_each_arm(
    make_server: Callable[[Sequence[SimulatedModel]], OpenAIServer],
    serve: Callable[..., Served],
    stream: bool,
) -> None:
    down = make_server(
        [
            SimulatedModel("a", "x", failure="500", failure_rate=1.0),
            SimulatedModel("b", "y", failure="500", failure_rate=1.0),
        ]
    )
    served = serve(_router(down, models=("a", "b")))
    with pytest.raises(openai.InternalServerError) as caught:
        served.openai.chat.completions.create(model="uniscale", messages=QUESTION, stream=stream)
    assert caught.value.response.status_code == 502
    error = caught.value.body
    assert isinstance(error, dict) and error["code"] == "all_arms_failed"
    assert "a|single" in error["message"] and "b|single" in error["message"]
    arms = served.router.stats()["arms"]
    assert (
        arms["a|single"]["failures"] == 1 and arms["b|single"]["failures"] == 1
    )  # the models' fault: taught


def test_a_fallback_before_the_first_token_is_the_decision_the_stream_names(
    make_server: Callable[[Sequence[SimulatedModel]], OpenAIServer], serve: Callable[..., Served]
) -> None:
    """The first arm always fails, so each stream falls back before its first chunk: every router chunk, and
    the server's header, name the decision that answered (the core's chunk fields the header relies on)."""
    models = make_server(
        [SimulatedModel("down", "x", failure="500", failure_rate=1.0), SimulatedModel("up", "a b c")]
    )
    router = _router(models, models=("down", "up"), policy=FixedArm("down|single"), breaker=None)
    chunks = list(router.stream(QUESTION))
    final = chunks[-1].completion
    assert final is not None and final.decision["arm"] == "up|single" and final.decision["fallbacks"]
    assert {chunk.decision_id for chunk in chunks} == {final.decision_id}
    assert {chunk.model for chunk in chunks} == {final.model}
    served = serve(router)
    with served.openai.chat.completions.with_streaming_response.create(
        model="uniscale", messages=QUESTION, stream=True
    ) as response:
        header = response.headers["x-uniscale-decision-id"]
        events = list(response.parse())
    record = events[-1].model_extra["uniscale"]
    assert record["arm"] == "up|single" and record["fallbacks"][0]["arm"] == "down|single"
    assert header == record["decision_id"]
    assert "".join(e.choices[0].delta.content or "" for e in events if e.choices) == "a b c"


def test_a_failure_after_the_first_token_ends_the_stream_with_an_error_event(
    make_server: Callable[[Sequence[SimulatedModel]], OpenAIServer], serve: Callable[..., Served]
) -> None:
    models = make_server(
        [SimulatedModel("flaky", "one two three four five six", failure="truncated_stream", failure_rate=1.0)]
    )
    served = serve(_router(models, models=("flaky",)))
    received = ""
    with pytest.raises(openai.APIError) as caught:
        for chunk in served.openai.chat.completions.create(model="uniscale", messages=QUESTION, stream=True):
            if chunk.choices:
                received += chunk.choices[0].delta.content or ""
    assert received and "one two three four five six".startswith(received)  # tokens arrived, then the error
    assert "failed" in caught.value.message
    stats = served.router.stats()
    assert stats["failed_requests"] == 1 and stats["arms"]["flaky|single"]["failures"] == 1
    metrics = parse_prometheus_text(served.http.get("/metrics").text)
    assert metrics.total("uniscale_requests_total", endpoint="chat_completions_stream_error") == 1
