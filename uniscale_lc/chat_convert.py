"""Conversions between LangChain's types and the core's plain data, for `UniScaleChat`.

LangChain messages -> OpenAI-format dicts; LangChain kwargs -> `RequestOptions`; a `Completion` ->
`AIMessage` (tool calls parsed, usage_metadata, response_metadata["uniscale"] = the decision record);
`CompletionChunk`s -> `ChatGenerationChunk`s.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, cast

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, convert_to_openai_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import ToolCallChunk
from langchain_core.output_parsers.openai_tools import make_invalid_tool_call, parse_tool_call
from langchain_core.outputs import ChatGenerationChunk

from .core.tool_choice import openai_tool_choice
from .errors import ConfigError
from .feedback import REQUEST_ID_METADATA_KEY
from .router import Completion, CompletionChunk, RequestOptions
from .tags import check_tags

__all__ = [
    "ROUTING_KWARGS",
    "TAGS_KWARG",
    "ai_message",
    "delta_chunk",
    "last_chunk",
    "openai_messages",
    "request_options",
    "run_id_from_message_id",
    "tool_choice_for_openai",
]

# The request's tags (RouterConfig.tag_buckets): a call kwarg or `config["metadata"]`; never sent to a provider.
TAGS_KWARG = "uniscale_tags"
# Per-call keyword arguments with a meaning of their own (the rest go to the provider as `extra`).
_OWN_KWARGS = frozenset(
    {
        "tools",
        "tool_choice",
        "model",
        REQUEST_ID_METADATA_KEY,
        "temperature",
        "max_tokens",
        "stream",
        "slo_tpot_ms",
        "cost_weight",
        "budget_usd_per_request",
        TAGS_KWARG,
    }
)
# Per-call routing controls also read from `config["configurable"]` (never sent to a provider).
ROUTING_KWARGS = ("cost_weight", "budget_usd_per_request")


def run_id_from_message_id(message_id: str | None) -> str | None:
    """LangChain names a run's message `lc_run--<run id>`; recover the run id from it."""
    if not message_id or not message_id.startswith("lc_run--"):
        return None
    candidate = message_id[len("lc_run--") : len("lc_run--") + 36]
    try:
        return str(uuid.UUID(candidate))
    except ValueError:
        return None


def tool_choice_for_openai(tool_choice: Any, tool_names: Sequence[str]) -> str | dict[str, Any] | None:
    """LangChain's tool_choice values in OpenAI's form ('any' and True mean 'required')."""
    return openai_tool_choice(tool_choice, tool_names, "UniScaleChat.bind_tools.tool_choice")


def request_options(stop: list[str] | None, kwargs: dict[str, Any]) -> RequestOptions:
    """LangChain's per-call kwargs as the core's options (unknown ones go to the provider)."""
    model = kwargs.get("model")
    extra = {key: value for key, value in kwargs.items() if key not in _OWN_KWARGS and value is not None}
    return RequestOptions(
        tools=kwargs.get("tools") or None,
        tool_choice=kwargs.get("tool_choice"),
        model=model if isinstance(model, str) else None,
        temperature=kwargs.get("temperature"),
        max_tokens=kwargs.get("max_tokens"),
        stop=list(stop) if stop else None,
        slo_tpot_ms=kwargs.get("slo_tpot_ms"),
        extra=extra or None,
        cost_weight=kwargs.get("cost_weight"),
        budget_usd_per_request=kwargs.get("budget_usd_per_request"),
        tags=check_tags(kwargs.get(TAGS_KWARG), TAGS_KWARG),
    )


def _usage_metadata(usage: dict[str, Any]) -> UsageMetadata:
    """LangChain's usage dict (plain ints) from the core's usage, summed over every call."""
    keys = ("input_tokens", "output_tokens", "total_tokens")
    return cast(UsageMetadata, {key: int(usage[key]) for key in keys})


def _response_metadata(completion: Completion) -> dict[str, Any]:
    return {
        "model_name": completion.model,
        "finish_reason": completion.finish_reason,
        "uniscale": completion.decision,
    }


def ai_message(completion: Completion) -> AIMessage:
    """The AIMessage of one answer: tool calls parsed (bad JSON arguments become invalid tool calls)."""
    tool_calls, invalid_tool_calls = [], []
    for raw in completion.tool_calls:
        try:
            parsed = parse_tool_call(raw, return_id=True)
        except Exception as error:  # the model produced arguments that are not JSON
            invalid_tool_calls.append(make_invalid_tool_call(raw, str(error)))
            continue
        if parsed is not None:
            tool_calls.append(parsed)
    return AIMessage(
        content=completion.text,
        tool_calls=tool_calls,
        invalid_tool_calls=invalid_tool_calls,
        usage_metadata=_usage_metadata(completion.usage),
        response_metadata=_response_metadata(completion),
    )


def delta_chunk(chunk: CompletionChunk) -> ChatGenerationChunk:
    calls = [
        ToolCallChunk(
            name=(raw.get("function") or {}).get("name"),
            args=(raw.get("function") or {}).get("arguments"),
            id=raw.get("id"),
            index=raw.get("index"),
            type="tool_call_chunk",
        )
        for raw in chunk.tool_calls
    ]
    return ChatGenerationChunk(message=AIMessageChunk(content=chunk.text, tool_call_chunks=calls))


def last_chunk(completion: Completion) -> ChatGenerationChunk:
    message = AIMessageChunk(
        content="",
        usage_metadata=_usage_metadata(completion.usage),
        response_metadata=_response_metadata(completion),
        chunk_position="last",
    )
    return ChatGenerationChunk(message=message)


def openai_messages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain messages as the core's OpenAI-format dicts; an empty list is refused."""
    if not messages:
        # The caller's mistake: refuse it before any arm is called (and so before any arm is penalised).
        raise ConfigError("messages: got an empty list; pass at least one message, e.g. chat.invoke('Hello')")
    return cast(list[dict[str, Any]], convert_to_openai_messages(messages))
