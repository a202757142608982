"""OpenAI wire format (pure functions): request parsing refuses each kind of bad field with a 400 naming
it; responses and stream chunks carry OpenAI's field names and parse with the official openai types."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from uniscale_lc.errors import AllArmsFailedError, ConfigError, FeedbackError, ModelTimeoutError
from uniscale_lc.server.errors import ApiError, from_exception, param_of
from uniscale_lc.server.openai_responses import (
    chunk_body,
    completion_body,
    json_safe,
    sse_event,
    tool_call_deltas,
)
from uniscale_lc.server.openai_schema import (
    parse_chat_request,
    parse_feedback_request,
    parse_json_object,
    parse_route_request,
)

USER = [{"role": "user", "content": "What is 2 + 2?"}]


def _param(body: dict, header: str | None = None) -> str | None:
    with pytest.raises(ApiError) as caught:
        parse_chat_request(body, header)
    assert caught.value.status == 400
    assert caught.value.body()["error"]["type"] == "invalid_request_error"
    return caught.value.param


def test_a_full_request_maps_to_router_options() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    chat = parse_chat_request(
        {
            "model": "uniscale",
            "messages": [{"role": "developer", "content": "Be brief."}, *USER],
            "tools": tools,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "temperature": 0.5,
            "max_completion_tokens": 64,
            "stop": "END",
            "stream": True,
            "stream_options": {"include_usage": True},
            "seed": 7,
            "n": 1,
            "metadata": {"uniscale_request_id": "req-1"},
        }
    )
    assert chat.model is None  # "uniscale": the router chooses
    assert chat.messages[0]["role"] == "system"  # developer -> system for providers without it
    assert chat.stream and chat.include_usage and chat.request_id == "req-1"
    kwargs = chat.router_kwargs()
    assert kwargs["tools"] == tools and kwargs["max_tokens"] == 64 and kwargs["stop"] == ["END"]
    assert kwargs["temperature"] == 0.5 and kwargs["seed"] == 7
    assert "n" not in kwargs and "stream" not in kwargs


def test_a_served_model_name_pins_the_model_and_the_header_gives_the_request_id() -> None:
    chat = parse_chat_request({"model": "small", "messages": USER}, "req-h")
    assert chat.model == "small" and chat.request_id == "req-h"
    assert _param({"messages": USER, "metadata": {"uniscale_request_id": "other"}}, "req-h") == (
        "metadata.uniscale_request_id"
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages[0].content[0]"),
        ({"messages": [*USER, {"role": "tool", "content": "sunny"}]}, "messages[1].tool_call_id"),
        ({"messages": USER, "temperature": 3}, "temperature"),
        ({"messages": USER, "temperature": "hot"}, "temperature"),
        ({"messages": USER, "max_tokens": 0}, "max_tokens"),
        ({"messages": USER, "max_tokens": 5, "max_completion_tokens": 6}, "max_tokens"),
        ({"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": USER, "n": 3}, "n"),
        ({"messages": USER, "stream": "yes"}, "stream"),
        ({"messages": USER, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"messages": USER, "tools": [{"type": "function"}]}, "tools[0]"),
        ({"messages": USER, "tool_choice": "sometimes"}, "tool_choice"),
        ({"messages": USER, "logprobs": True}, "logprobs"),
        ({"messages": USER, "functions": []}, "functions"),
        ({"messages": USER, "temprature": 0.2}, "temprature"),
        ({"messages": USER, "model": 42}, "model"),
    ],
)
def test_each_bad_field_is_a_400_naming_it(body: dict, param: str) -> None:
    assert _param(body) == param


def test_a_named_tool_choice_must_be_a_given_tool() -> None:
    tools = [{"type": "function", "function": {"name": "a"}}]
    choice = {"type": "function", "function": {"name": "b"}}
    assert _param({"messages": USER, "tools": tools, "tool_choice": choice}) == "tool_choice"


def test_body_must_be_a_json_object() -> None:
    for raw in (b"{not json", b"[1, 2]", b"\xff"):
        with pytest.raises(ApiError) as caught:
            parse_json_object(raw)
        assert caught.value.status == 400 and caught.value.code == "invalid_json"
    assert parse_json_object(b'{"a": 1}') == {"a": 1}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"score": 1.0}, "decision_id"),
        ({"decision_id": "d", "request_id": "r", "score": 1}, "decision_id"),
        ({"decision_id": "", "score": 1}, "decision_id"),
        ({"request_id": 5, "score": 1}, "request_id"),
        ({"decision_id": "d"}, "score"),
        ({"decision_id": "d", "score": 1, "extra": 2}, "extra"),
    ],
)
def test_bad_feedback_bodies_name_the_field(body: dict, param: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_feedback_request(body)
    assert caught.value.status == 400 and caught.value.param == param


def test_feedback_and_route_requests_parse() -> None:
    parsed = parse_feedback_request({"request_id": "r1", "score": 0.5})
    assert (parsed.key, parsed.key_field, parsed.score) == ("r1", "request_id", 0.5)
    route = parse_route_request({"model": "uniscale", "messages": USER, "temperature": 9}, "r2")
    assert route.model is None and route.request_id == "r2" and route.messages == USER


def _completion(**overrides: object) -> SimpleNamespace:
    fields = {
        "text": "4",
        "tool_calls": [],
        "finish_reason": "stop",
        "model": "hosted_vllm/small",
        "usage": {"input_tokens": 5, "output_tokens": 1, "total_tokens": 6, "cost_usd": 1e-6, "calls": 1},
        "decision": {"decision_id": "abc", "arm": "small|single", "scores": [{"bonus": math.inf}]},
    }
    fields.update(overrides)
    return SimpleNamespace(**fields)


def test_completion_body_is_an_openai_chat_completion_with_the_decision() -> None:
    body = json_safe(completion_body(_completion(), "chatcmpl-1", 1700000000))
    parsed = ChatCompletion.model_validate(body)
    assert parsed.choices[0].message.content == "4"
    assert parsed.usage is not None and parsed.usage.total_tokens == 6
    assert body["uniscale"]["decision_id"] == "abc"
    assert body["uniscale"]["scores"][0]["bonus"] is None  # inf is not JSON
    json.dumps(body, allow_nan=False)


def test_tool_call_answer_has_null_content_and_tool_calls_finish() -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    body = completion_body(_completion(text="", tool_calls=[call], finish_reason=None), "chatcmpl-2", 0)
    parsed = ChatCompletion.model_validate(json_safe(body))
    choice = parsed.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None
    assert choice.message.tool_calls[0].function.arguments == '{"city": "Paris"}'


def test_chunks_and_sse_framing() -> None:
    deltas = tool_call_deltas(
        [
            {"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}},
            {"index": 0, "function": {"arguments": "{}"}},
        ]
    )
    assert deltas[0] == {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    assert deltas[1] == {"index": 0, "function": {"arguments": "{}"}}
    chunk = chunk_body("chatcmpl-3", 0, "m", {"tool_calls": deltas[:1]})
    ChatCompletionChunk.model_validate(chunk)
    assert chunk_body("chatcmpl-3", 0, "m", None)["choices"] == []
    assert sse_event("[DONE]") == b"data: [DONE]\n\n"
    event = sse_event({"a": 1})
    assert event.startswith(b"data: ") and event.endswith(b"\n\n") and json.loads(event[6:]) == {"a": 1}


def test_router_errors_map_to_statuses() -> None:
    assert param_of("messages[2].content: got 3") == "messages[2].content"
    assert param_of("UniScaleChat.model: got 'x'") == "model"
    assert param_of("no field here") is None
    config = from_exception(ConfigError("model: got 'gpt-9', which no arm runs; use one of ['small']"))
    assert (config.status, config.param) == (400, "model")
    unknown = from_exception(FeedbackError("feedback.key: no pending decision for 'x'"))
    assert unknown.status == 404
    failed = AllArmsFailedError(
        "all failed", errors=[("small|single", ModelTimeoutError("timed out after 5 s", model="small"))]
    )
    mapped = from_exception(failed)
    assert mapped.status == 502 and mapped.code == "all_arms_failed"
    assert "small|single: ModelTimeoutError" in mapped.message
    internal = from_exception(RuntimeError("secret internals"))
    assert internal.status == 500 and "secret" not in internal.message


def test_error_bodies_never_carry_a_key() -> None:
    body = ApiError(502, "provider said: invalid api_key=sk-abcdefghijklmnop", "upstream_error").body()
    assert "sk-abcdefghijklmnop" not in json.dumps(body)
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_the_base_package_and_the_cli_parser_do_not_import_starlette() -> None:
    code = (
        "import sys, uniscale_lc, uniscale_lc.server, uniscale_lc.server.openai_schema, uniscale_lc.server.openai_responses;"
        "from uniscale_lc.cli import build_parser; build_parser();"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"
