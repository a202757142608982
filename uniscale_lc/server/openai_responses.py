"""OpenAI's chat-completions wire format, responses: completion bodies, stream chunks, SSE events and the
model list, built from the router's results. Pure functions over plain data (no HTTP)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ApiError
from .openai_schema import ROUTER_MODEL

__all__ = [
    "chunk_body",
    "completion_body",
    "error_event",
    "json_safe",
    "models_body",
    "openai_usage",
    "sse_event",
    "tool_call_deltas",
]


def openai_usage(usage: Mapping[str, Any]) -> dict[str, int]:
    """OpenAI's usage block from the router's (summed over every call the strategy made)."""
    prompt, completion = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish_reason(finish_reason: str | None, tool_calls: Sequence[Any]) -> str:
    if finish_reason:
        return finish_reason
    return "tool_calls" if tool_calls else "stop"


def completion_body(completion: Any, response_id: str, created: int) -> dict[str, Any]:
    """A `chat.completion` object for a router Completion, with the decision record under `uniscale`."""
    tool_calls = [
        {
            "id": call.get("id"),
            "type": "function",
            "function": {
                "name": (call.get("function") or {}).get("name"),
                "arguments": (call.get("function") or {}).get("arguments") or "",
            },
        }
        for call in completion.tool_calls or []
    ]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": completion.text if (completion.text or not tool_calls) else None,
        "refusal": None,
    }
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": completion.model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(completion.finish_reason, tool_calls),
            }
        ],
        "usage": openai_usage(completion.usage),
        "uniscale": completion.decision,
    }


def chunk_body(
    response_id: str,
    created: int,
    model: str,
    delta: Mapping[str, Any] | None,
    finish_reason: str | None = None,
) -> dict[str, Any]:
    """One `chat.completion.chunk` with a single choice (`delta=None`: the usage-only chunk, no choices)."""
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish_reason}]
    )
    return {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
    }


def tool_call_deltas(raw_calls: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI streaming tool-call deltas (index, and id/type/name on the call's first delta only)."""
    deltas: list[dict[str, Any]] = []
    for position, raw in enumerate(raw_calls):
        function = raw.get("function") or {}
        delta: dict[str, Any] = {"index": int(raw.get("index", position))}
        if raw.get("id"):
            delta["id"] = raw["id"]
            delta["type"] = "function"
        part: dict[str, Any] = {}
        if function.get("name"):
            part["name"] = function["name"]
        if function.get("arguments") is not None:
            part["arguments"] = function["arguments"]
        delta["function"] = part
        deltas.append(delta)
    return deltas


def json_safe(value: Any) -> Any:
    """`value` with every float JSON can carry: NaN and infinities (an unexplored arm's bound) become null,
    numpy scalars plain numbers, tuples lists."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item):
        return json_safe(item())
    return str(value)


def sse_event(data: Mapping[str, Any] | str) -> bytes:
    """One server-sent event: `data: <json>` and a blank line (`data: [DONE]` ends the stream)."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), allow_nan=False)
    return f"data: {text}\n\n".encode()


def models_body(arm_space: Any, created: int = 0) -> dict[str, Any]:
    """/v1/models: the router itself (`uniscale`, it chooses) and each configured model (pinned to it)."""
    arms = list(arm_space.arms)
    data: list[dict[str, Any]] = [
        {
            "id": ROUTER_MODEL,
            "object": "model",
            "created": created,
            "owned_by": "uniscale",
            "uniscale": {"router": True, "arms": [arm.id for arm in arms]},
        }
    ]
    for spec in arm_space.models:
        data.append(
            {
                "id": spec.display_name,
                "object": "model",
                "created": created,
                "owned_by": "uniscale",
                "uniscale": {
                    "router": False,
                    "model": spec.model,
                    "arms": [arm.id for arm in arms if arm.model.display_name == spec.display_name],
                },
            }
        )
    return {"object": "list", "data": data}


def error_event(error: ApiError) -> bytes:
    """A mid-stream error, as OpenAI sends it (the openai SDK raises it as an APIError)."""
    return sse_event(error.body())
