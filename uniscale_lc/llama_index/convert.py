"""Conversions between LlamaIndex's LLM types and the core's plain data, for `UniScaleLLM`.

`ChatMessage`s -> OpenAI message dicts (the mapping llama-index-llms-openai uses: text, images, tool calls
as `ToolCallBlock`s, tool results with `additional_kwargs["tool_call_id"]`); a `Completion` or a stream of
`CompletionChunk`s -> `ChatResponse`s whose `raw` and `additional_kwargs` carry the decision id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    ChatResponse,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.llms.utils import parse_partial_json

from ..core.results import Completion, CompletionChunk
from ..errors import ConfigError

__all__ = [
    "StreamedChat",
    "chat_response",
    "decision_id_of",
    "merge_tool_calls",
    "openai_messages",
    "tool_selections",
]

# Providers' own names for the assistant (Cohere's "chatbot", Gemini's "model") are OpenAI's "assistant".
_ROLE_ALIASES = {MessageRole.CHATBOT.value: "assistant", MessageRole.MODEL.value: "assistant"}
# Roles whose content OpenAI-compatible servers accept only as a string.
_STRING_CONTENT_ROLES = frozenset({"assistant", "tool", "system", "developer"})


def openai_messages(messages: Sequence[ChatMessage], where: str) -> list[dict[str, Any]]:
    """The conversation as OpenAI chat dicts; refused (before any arm is called) when it cannot be sent."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ConfigError(
            f"{where}.messages: got {messages!r:.80}; pass a non-empty list of ChatMessage, e.g. "
            "[ChatMessage(role='user', content='Hello')]"
        )
    converted = []
    for index, message in enumerate(messages):
        if not isinstance(message, ChatMessage):
            raise ConfigError(
                f"{where}.messages[{index}]: got {type(message).__name__}; pass a "
                "llama_index.core.llms.ChatMessage"
            )
        converted.append(_openai_message(message, f"{where}.messages[{index}]"))
    return converted


def _openai_message(message: ChatMessage, where: str) -> dict[str, Any]:
    role = _ROLE_ALIASES.get(message.role.value, message.role.value)
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(message.blocks):
        if isinstance(block, TextBlock):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            parts.append({"type": "image_url", "image_url": _image_url(block)})
        elif isinstance(block, ToolCallBlock):
            arguments = block.tool_kwargs
            calls.append(
                {
                    "id": block.tool_call_id,
                    "type": "function",
                    "function": {
                        "name": block.tool_name,
                        "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
                    },
                }
            )
        elif isinstance(block, (ThinkingBlock, CachePoint)):
            continue  # a model's own reasoning and cache hints are not input for chat completions
        else:
            raise ConfigError(
                f"{where}.blocks[{index}]: UniScaleLLM sends text, images and tool calls; got "
                f"{type(block).__name__}; convert it to a TextBlock or ImageBlock"
            )
    text = "".join(part["text"] for part in parts if part["type"] == "text")
    content: str | list[dict[str, Any]] | None
    if role in _STRING_CONTENT_ROLES or all(part["type"] == "text" for part in parts):
        content = text
    else:
        content = parts
    if not calls:
        calls = [_plain_call(call) for call in message.additional_kwargs.get("tool_calls") or []]
    plain: dict[str, Any] = {
        "role": role,
        "content": None if role == "assistant" and calls and not text else content,
    }
    if calls:
        plain["tool_calls"] = calls
    tool_call_id = message.additional_kwargs.get("tool_call_id")
    if tool_call_id is not None:
        plain["tool_call_id"] = str(tool_call_id)
    return plain


def _image_url(block: ImageBlock) -> dict[str, Any]:
    if block.url:
        url = str(block.url)
    else:
        data = block.resolve_image(as_base64=True).read().decode("utf-8")
        url = f"data:{block.image_mimetype or 'image/png'};base64,{data}"
    return {"url": url, **({"detail": block.detail} if block.detail else {})}


def _plain_call(call: Any) -> dict[str, Any]:
    """A legacy `additional_kwargs["tool_calls"]` entry (a dict or an openai SDK object) as a plain dict."""
    dump = getattr(call, "model_dump", None)
    return dict(dump()) if callable(dump) else dict(call)


def merge_tool_calls(calls: list[dict[str, Any]], deltas: Sequence[Mapping[str, Any]]) -> None:
    """Fold streamed tool-call deltas into whole calls: pieces with the same `index` are one call."""
    for delta in deltas:
        function = delta.get("function") or {}
        index = delta.get("index")
        same = [call for call in calls if index is not None and call.get("index") == index]
        if not same:
            calls.append(
                {
                    "index": index,
                    "id": delta.get("id"),
                    "type": "function",
                    "function": {
                        "name": function.get("name") or "",
                        "arguments": function.get("arguments") or "",
                    },
                }
            )
            continue
        call = same[0]
        call["id"] = call["id"] or delta.get("id")
        call["function"]["name"] = call["function"]["name"] or function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""


def _message(text: str, calls: Sequence[Mapping[str, Any]], decision_id: str | None) -> ChatMessage:
    blocks: list[Any] = [TextBlock(text=text)] if text or not calls else []
    blocks += [
        ToolCallBlock(
            tool_call_id=call.get("id"),
            tool_name=(call.get("function") or {}).get("name") or "",
            tool_kwargs=(call.get("function") or {}).get("arguments") or {},
        )
        for call in calls
    ]
    # The decision id rides on the message too: chat engines keep only the message (in their memory).
    return ChatMessage(
        role=MessageRole.ASSISTANT,
        blocks=blocks,
        additional_kwargs={"decision_id": decision_id} if decision_id is not None else {},
    )


def _usage_kwargs(completion: Completion) -> dict[str, Any]:
    """llama-index-llms-openai's token counts, plus what the router adds (decision, model, cost)."""
    usage = completion.usage
    return {
        "prompt_tokens": int(usage["input_tokens"]),
        "completion_tokens": int(usage["output_tokens"]),
        "total_tokens": int(usage["total_tokens"]),
        "cost_usd": float(usage["cost_usd"]),
        "decision_id": completion.decision_id,
        "model": completion.model,
    }


def _raw(completion: Completion, calls: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "decision_id": completion.decision_id,
        "model": completion.model,
        "finish_reason": completion.finish_reason,
        "tool_calls": [dict(call) for call in calls],
        "usage": dict(completion.usage),
        "uniscale": completion.decision,
    }


def chat_response(completion: Completion) -> ChatResponse:
    """The ChatResponse of one answer: the decision record in `raw["uniscale"]`."""
    calls: list[dict[str, Any]] = []
    merge_tool_calls(calls, completion.tool_calls)
    return ChatResponse(
        message=_message(completion.text, calls, completion.decision_id),
        raw=_raw(completion, calls),
        additional_kwargs=_usage_kwargs(completion),
    )


class StreamedChat:
    """Turns the core's chunks into LlamaIndex's stream convention: each ChatResponse holds the message so
    far and its `delta`; the last one (delta "") adds usage and the decision record."""

    def __init__(self) -> None:
        self.text = ""
        self.calls: list[dict[str, Any]] = []

    def response(self, chunk: CompletionChunk) -> ChatResponse:
        if chunk.completion is not None:
            return self._last(chunk.completion)
        self.text += chunk.text
        merge_tool_calls(self.calls, chunk.tool_calls)
        keys = {"decision_id": chunk.decision_id, "model": chunk.model}
        return ChatResponse(
            message=_message(self.text, self.calls, chunk.decision_id),
            delta=chunk.text,
            raw=dict(keys),
            additional_kwargs=dict(keys),
        )

    def _last(self, completion: Completion) -> ChatResponse:
        if not self.calls:
            merge_tool_calls(self.calls, completion.tool_calls)
        return ChatResponse(
            message=_message(completion.text, self.calls, completion.decision_id),
            delta="",
            raw=_raw(completion, self.calls),
            additional_kwargs=_usage_kwargs(completion),
        )


def decision_id_of(key: Any) -> Any:
    """The decision id a LlamaIndex object carries (a response, a completion, an assistant message);
    anything else is passed on as a key for the feedback store (a decision or request id)."""
    if isinstance(key, ChatMessage):
        return key.additional_kwargs.get("decision_id") or key
    found = (getattr(key, "additional_kwargs", None) or {}).get("decision_id")
    if found is None and isinstance(getattr(key, "raw", None), Mapping):
        found = key.raw.get("decision_id")
    return found if found is not None else key


def tool_selections(response: ChatResponse, error_on_no_tool_call: bool) -> list[ToolSelection]:
    """The tool calls of a response as LlamaIndex `ToolSelection`s (arguments parsed, even partial JSON)."""
    selections = []
    for block in response.message.blocks:
        if not isinstance(block, ToolCallBlock):
            continue
        arguments: Any = block.tool_kwargs
        if isinstance(arguments, str):
            try:
                arguments = parse_partial_json(arguments) if arguments.strip() else {}
            except (ValueError, TypeError):
                arguments = {}
        selections.append(
            ToolSelection(
                tool_id=block.tool_call_id or "",
                tool_name=block.tool_name,
                tool_kwargs=arguments if isinstance(arguments, dict) else {},
            )
        )
    if not selections and error_on_no_tool_call:
        raise ConfigError(
            "UniScaleLLM.get_tool_calls_from_response: the response has no tool call; pass "
            "error_on_no_tool_call=False to accept a plain answer, or tool_required=True to force one"
        )
    return selections
