"""OpenAI's chat-completions wire format, requests: parse a body into the router's options (responses and
stream chunks: `openai_responses`). Pure functions over plain data (no HTTP), field names exactly as
OpenAI's API uses them.

A field the router cannot honour (`n > 1`, `logprobs`) is refused with a 400 rather than silently ignored:
the strategy decides how many samples to draw, and a client relying on `n` choices would get one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..tags import check_tags
from .errors import bad_request

__all__ = [
    "DECISION_ID_HEADER",
    "REQUEST_ID_HEADER",
    "ROUTER_MODEL",
    "TAGS_METADATA_KEY",
    "TAGS_PARAM",
    "ChatRequest",
    "FeedbackRequest",
    "RouteRequest",
    "parse_chat_request",
    "parse_feedback_request",
    "parse_json_object",
    "parse_messages",
    "parse_route_request",
    "tags_from",
]

ROUTER_MODEL = "uniscale"
REQUEST_ID_HEADER = "x-uniscale-request-id"
DECISION_ID_HEADER = "x-uniscale-decision-id"
REQUEST_ID_METADATA_KEY = "uniscale_request_id"
TAGS_METADATA_KEY = "uniscale_tags"
TAGS_PARAM = f"metadata.{TAGS_METADATA_KEY}"

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# Sent on to the provider as they are; the router has no opinion on them.
_FORWARDED = frozenset(
    {
        "top_p",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "user",
        "parallel_tool_calls",
        "logit_bias",
        "reasoning_effort",
        "service_tier",
    }
)
_CONSUMED = frozenset(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "stream",
        "stream_options",
        "n",
        "metadata",
        "store",
    }
)
_UNSUPPORTED = {
    "logprobs": "the router returns no log-probabilities; leave logprobs out",
    "top_logprobs": "the router returns no log-probabilities; leave top_logprobs out",
    "audio": "audio output is not supported; leave audio out",
    "modalities": "only text output is supported; leave modalities out",
    "prediction": "predicted outputs are not supported; leave prediction out",
    "functions": "the legacy `functions` field is not supported; send `tools` instead",
    "function_call": "the legacy `function_call` field is not supported; send `tool_choice` instead",
}
_MAX_STOP = 4


@dataclass(frozen=True)
class ChatRequest:
    """One parsed /v1/chat/completions request, in the router's terms."""

    messages: list[dict[str, Any]]
    model: str | None = None  # None: the router chooses among every arm
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    stream: bool = False
    include_usage: bool = False
    request_id: str | None = None
    provider_options: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()  # metadata.uniscale_tags (RouterConfig.tag_buckets)

    def router_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `Router.acomplete` / `astream` (`tags` only when some were sent)."""
        return {
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "model": self.model,
            "request_id": self.request_id,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": self.stop,
            **({"tags": self.tags} if self.tags else {}),
            **self.provider_options,
        }


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise bad_request(
            None,
            f"the request body is not valid JSON ({error}); send a JSON object with Content-Type: application/json",
            "invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise bad_request(
            None, f"the request body is a JSON {type(body).__name__}; send a JSON object", "invalid_json"
        )
    return body


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_content(content: Any, where: str, role: str) -> None:
    if content is None:
        if role in ("user", "system", "developer"):
            raise bad_request(
                f"{where}.content", f"{where}.content: a {role} message needs content; send a string"
            )
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise bad_request(
            f"{where}.content",
            f"{where}.content: got a {_type_name(content)}; send a string or a list of parts like "
            '[{"type": "text", "text": "..."}]',
        )
    for index, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise bad_request(
                f"{where}.content[{index}]",
                f'{where}.content[{index}]: each part is an object with a "type", e.g. {{"type": "text", "text": "..."}}',
            )
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise bad_request(
                f"{where}.content[{index}].text", f"{where}.content[{index}].text: send a string"
            )


def parse_messages(value: Any, param: str = "messages") -> list[dict[str, Any]]:
    """Validated OpenAI chat messages (`developer` becomes `system`, as providers without it expect)."""
    if not isinstance(value, list) or not value:
        raise bad_request(
            param,
            f"{param}: got {_type_name(value) if not isinstance(value, list) else 'an empty list'}; send a non-empty "
            'list of messages, e.g. [{"role": "user", "content": "Hello"}]',
        )
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(value):
        where = f"{param}[{index}]"
        if not isinstance(message, dict):
            raise bad_request(
                where, f'{where}: got a {_type_name(message)}; each message is an object with "role"'
            )
        role = message.get("role")
        if role not in _ROLES:
            raise bad_request(
                f"{where}.role",
                f"{where}.role: got {role!r}; use one of system, developer, user, assistant, tool",
            )
        _check_content(message.get("content"), where, role)
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise bad_request(
                f"{where}.tool_call_id",
                f"{where}.tool_call_id: a tool message must name the call it answers; send the assistant "
                "tool call's id",
            )
        tool_calls = message.get("tool_calls")
        if tool_calls is not None and (role != "assistant" or not isinstance(tool_calls, list)):
            raise bad_request(
                f"{where}.tool_calls",
                f"{where}.tool_calls: only assistant messages carry a list of tool calls",
            )
        messages.append({**message, "role": "system"} if role == "developer" else dict(message))
    return messages


def parse_tools(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise bad_request("tools", f"tools: got a {_type_name(value)}; send a list of tools")
    for index, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not (
            isinstance(tool, dict) and tool.get("type") == "function" and isinstance(function, dict)
        ) or not (isinstance(function.get("name"), str) and function["name"]):
            raise bad_request(
                f"tools[{index}]",
                f'tools[{index}]: each tool is {{"type": "function", "function": {{"name": ..., "parameters": {{...}}}}}}',
            )
    return value or None


def _parse_tool_choice(value: Any, tools: list[dict[str, Any]] | None) -> str | dict[str, Any] | None:
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        return str(value)
    if isinstance(value, dict) and isinstance((value.get("function") or {}).get("name"), str):
        names = [tool["function"]["name"] for tool in tools or []]
        if value["function"]["name"] not in names:
            raise bad_request(
                "tool_choice",
                f"tool_choice: names {value['function']['name']!r}, which is not in tools {names}; name one of them",
            )
        return value
    raise bad_request(
        "tool_choice",
        f'tool_choice: got {value!r}; use "auto", "none", "required" or {{"type": "function", "function": {{"name": ...}}}}',
    )


def _number(body: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(name, f"{name}: got {value!r}; send a number in [{low:g}, {high:g}]")
    if not low <= value <= high:
        raise bad_request(name, f"{name}: got {value!r}; send a number in [{low:g}, {high:g}]")
    return float(value)


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    found = None
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad_request(name, f"{name}: got {value!r}; send an integer >= 1")
        if found is not None and found != value:
            raise bad_request(name, "max_tokens and max_completion_tokens disagree; send one of them")
        found = value
    return found


def _stop(value: Any) -> list[str] | None:
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or not all(isinstance(s, str) and s for s in stops)
        or len(stops) > _MAX_STOP
    ):
        raise bad_request(
            "stop", f"stop: got {value!r}; send a string or a list of up to {_MAX_STOP} strings"
        )
    return stops or None


def _model(value: Any) -> str | None:
    if value is None or value == ROUTER_MODEL:
        return None
    if not isinstance(value, str) or not value:
        raise bad_request(
            "model", f'model: got {value!r}; send "{ROUTER_MODEL}" (the router chooses) or a served model id'
        )
    return value


def request_id_from(body: Mapping[str, Any], header_value: str | None) -> str | None:
    """The caller's id for later feedback: the `x-uniscale-request-id` header or `metadata.uniscale_request_id`."""
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad_request("metadata", f"metadata: got a {_type_name(metadata)}; send an object of strings")
    from_body = (metadata or {}).get(REQUEST_ID_METADATA_KEY)
    if from_body is not None and (not isinstance(from_body, str) or not from_body):
        raise bad_request(
            f"metadata.{REQUEST_ID_METADATA_KEY}",
            f"metadata.{REQUEST_ID_METADATA_KEY}: send a non-empty string",
        )
    if header_value is not None and from_body is not None and header_value != from_body:
        raise bad_request(
            f"metadata.{REQUEST_ID_METADATA_KEY}",
            f"the {REQUEST_ID_HEADER} header and metadata.{REQUEST_ID_METADATA_KEY} disagree; send one of them",
        )
    return header_value or from_body


def tags_from(body: Mapping[str, Any]) -> tuple[str, ...]:
    """The request's tags from `metadata.uniscale_tags`: a JSON list of strings, or (OpenAI's metadata values
    being strings) one string, either comma-separated tags (`"billing,refunds"`) or a JSON list in a string."""
    metadata = body.get("metadata")
    value = metadata.get(TAGS_METADATA_KEY) if isinstance(metadata, dict) else None  # see request_id_from
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise bad_request(
                    TAGS_PARAM,
                    f"{TAGS_PARAM}: got {value!r:.80}, which starts as a JSON list but is not one; send a "
                    'JSON list of strings such as ["billing"] or comma-separated tags such as "billing,refunds"',
                ) from None
        else:
            parts = [part for part in text.split(",") if part.strip()]
            if not parts:
                raise bad_request(
                    TAGS_PARAM,
                    f"{TAGS_PARAM}: got {value!r:.80}, which holds no tag; send one, or leave it out",
                )
            value = parts
    try:
        return check_tags(value, TAGS_PARAM)
    except ConfigError as error:
        raise bad_request(TAGS_PARAM, str(error)) from None


def _stream_options(body: Mapping[str, Any], stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise bad_request(
            "stream_options", "stream_options: only allowed with stream: true; leave it out or stream"
        )
    if not isinstance(options, dict):
        raise bad_request("stream_options", f"stream_options: got a {_type_name(options)}; send an object")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise bad_request("stream_options.include_usage", "stream_options.include_usage: send true or false")
    return include


def parse_chat_request(body: Mapping[str, Any], request_id_header: str | None = None) -> ChatRequest:
    """Validate an OpenAI chat-completions body; any mistake is a 400 naming the field and the fix."""
    for name, fix in _UNSUPPORTED.items():
        if body.get(name) not in (None, False):
            raise bad_request(name, f"{name}: {fix}", "unsupported_parameter")
    unknown = sorted(set(body) - _CONSUMED - _FORWARDED - set(_UNSUPPORTED))
    if unknown:
        raise bad_request(
            unknown[0],
            f"{unknown[0]}: not a chat-completions field this server knows; remove it "
            f"(unknown fields: {unknown})",
            "unknown_parameter",
        )
    n = body.get("n")
    if n is not None and n != 1:
        raise bad_request(
            "n",
            f"n: got {n!r}; the router returns one choice (its strategy decides how many samples to draw); send n=1 or leave it out",
        )
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise bad_request("stream", f"stream: got {stream!r}; send true or false")
    tools = parse_tools(body.get("tools"))
    return ChatRequest(
        messages=parse_messages(body.get("messages")),
        model=_model(body.get("model")),
        tools=tools,
        tool_choice=_parse_tool_choice(body.get("tool_choice"), tools),
        temperature=_number(body, "temperature", 0.0, 2.0),
        max_tokens=_max_tokens(body),
        stop=_stop(body.get("stop")),
        stream=stream,
        include_usage=_stream_options(body, stream),
        request_id=request_id_from(body, request_id_header),
        provider_options={name: body[name] for name in _FORWARDED if body.get(name) is not None},
        tags=tags_from(body),
    )


@dataclass(frozen=True)
class FeedbackRequest:
    key: str
    key_field: str  # "decision_id" or "request_id": the field to name if the key is unknown
    score: Any  # validated by the router exactly as chat.feedback validates it


def parse_feedback_request(body: Mapping[str, Any]) -> FeedbackRequest:
    """`{"decision_id" | "request_id": ..., "score": 0..1}`; exactly one key."""
    given = [name for name in ("decision_id", "request_id") if body.get(name) is not None]
    unknown = sorted(set(body) - {"decision_id", "request_id", "score"})
    if unknown:
        raise bad_request(
            unknown[0], f"{unknown[0]}: unknown field; send decision_id or request_id, and score"
        )
    if len(given) != 1:
        raise bad_request(
            "decision_id",
            "decision_id: send exactly one of decision_id (from the x-uniscale-decision-id header or the response's "
            "uniscale.decision_id) or request_id (the one you sent)" + ("; got both" if given else ""),
        )
    key_field = given[0]
    key = body[key_field]
    if not isinstance(key, str) or not key:
        raise bad_request(key_field, f"{key_field}: got {key!r}; send the id as a non-empty string")
    if "score" not in body:
        raise bad_request("score", "score: missing; send the answer's quality as a number in [0, 1]")
    return FeedbackRequest(key=key, key_field=key_field, score=body["score"])


@dataclass(frozen=True)
class RouteRequest:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    model: str | None
    request_id: str | None
    tags: tuple[str, ...] = ()


def parse_route_request(body: Mapping[str, Any], request_id_header: str | None = None) -> RouteRequest:
    """A /v1/route body: the chat-completions body's messages, tools, model, request id and tags (the rest is
    ignored: the caller runs the model itself)."""
    tools = parse_tools(body.get("tools"))
    return RouteRequest(
        messages=parse_messages(body.get("messages")),
        tools=tools,
        model=_model(body.get("model")),
        request_id=request_id_from(body, request_id_header),
        tags=tags_from(body),
    )
