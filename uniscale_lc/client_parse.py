"""Reading a provider's answer, whole or streamed, into `Choice`s and `StreamDelta`s, checking it as it goes.

One parser for both transports (litellm's pydantic objects and the openai SDK path's plain dicts) and one
rule for what counts as an answer, so a broken endpoint fails the same way plain or streamed: bad data
raises `_MalformedResponse`, which the client retries like any other malformed reply (docs/reliability.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .client_results import Choice, StreamDelta, _CallResult
from .transport_openai import ResponseTooLargeError

# The client's own logger name, so callers filtering on "uniscale_lc.client" keep seeing every client line.
logger = logging.getLogger("uniscale_lc.client")

# No tokenizer averages more than this many characters a token: an answer longer than max_tokens times this
# comes from a broken endpoint (one that ignores max_tokens or under-reports its tokens), not from the model.
MAX_CHARS_PER_TOKEN = 32
# A usage count above this is a provider's bad data (no request is a billion tokens), not a bill.
MAX_REPORTED_TOKENS = 10**9


class _MalformedResponse(Exception):
    """The provider answered, but not with something usable (no choices, a stream cut short)."""


def _get(obj: Any, key: str) -> Any:
    """Attribute or key access: litellm returns pydantic objects, some providers plain dicts."""
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def _plain_tool_calls(raw: Any) -> list[dict[str, Any]] | None:
    if not raw:
        return None
    calls = []
    for call in raw:
        function = _get(call, "function")
        entry: dict[str, Any] = {
            "id": _get(call, "id"),
            "type": _get(call, "type") or "function",
            "function": {"name": _get(function, "name"), "arguments": _get(function, "arguments") or ""},
        }
        index = _get(call, "index")
        if index is not None:
            entry["index"] = index
        calls.append(entry)
    return calls


def _token_logprobs(raw: Any) -> list[float] | None:
    content = _get(raw, "content") if raw is not None else None
    if content is None:
        return None
    return [float(_get(item, "logprob")) for item in content]


def _parse_response(response: Any, *, use_litellm_cost: bool) -> _CallResult:
    raw_choices = _get(response, "choices")
    if not raw_choices:
        raise _MalformedResponse("the response has no choices")
    choices = []
    for raw in raw_choices:
        message = _get(raw, "message")
        if message is None:
            raise _MalformedResponse("a choice has no message")
        content = _get(message, "content")
        choices.append(
            Choice(
                text=content if isinstance(content, str) else "",
                finish_reason=_get(raw, "finish_reason"),
                tool_calls=_plain_tool_calls(_get(message, "tool_calls")),
                logprobs=_token_logprobs(_get(raw, "logprobs")),
            )
        )
    if not any(_carries_answer(choice.text, choice.tool_calls, choice.finish_reason) for choice in choices):
        raise _MalformedResponse("the answer carried no text and no tool call")
    usage = _get(response, "usage")
    input_tokens = _usage_count(usage, "prompt_tokens")
    output_tokens = _usage_count(usage, "completion_tokens")
    cost = None
    if use_litellm_cost:
        hidden = getattr(response, "_hidden_params", None) or {}
        value = hidden.get("response_cost") if isinstance(hidden, Mapping) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e6:
            cost = float(value)  # anything else: our own token maths below
    return _CallResult(choices, input_tokens, output_tokens, cost)


# Why a real model may end with nothing to say: its token budget ran out (a reasoning model can spend it all
# before any text) or a filter stopped it. Any other empty answer (null content and "stop") is malformed.
_EMPTY_ANSWER_REASONS = frozenset({"length", "content_filter"})


def _carries_answer(text: str, tool_calls: Any, finish_reason: str | None) -> bool:
    """The one rule for plain and streamed answers: text, a tool call, or an empty answer with a reason."""
    return bool(text) or bool(tool_calls) or finish_reason in _EMPTY_ANSWER_REASONS


def _usage_count(usage: Any, key: str) -> int:
    """One token count of a provider's usage block, checked: bad data is a model failure, not a bill.

    Absent or null is 0; a negative, non-integral, non-numeric or huge (> MAX_REPORTED_TOKENS) count raises
    `_MalformedResponse`, so it never reaches the cost model.
    """
    value = _get(usage, key) if usage is not None else None
    if value is None:
        return 0
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REPORTED_TOKENS:
        if isinstance(value, int) and not isinstance(value, bool):
            shown = f"an integer of {value.bit_length()} bits" if value.bit_length() > 64 else str(value)
        else:
            shown = repr(value)[:40]
        raise _MalformedResponse(
            f"usage.{key}: got {shown}; a token count is an integer in [0, {MAX_REPORTED_TOKENS}]"
        )
    return value


def check_answer_length(texts: Iterable[str], max_tokens: int | None, *, streamed_chars: int = 0) -> None:
    """Refuse an answer longer than `max_tokens * MAX_CHARS_PER_TOKEN` characters: the endpoint is broken.

    Characters, not reported tokens: a broken server may under-report, and tokens are summed over `n` choices.
    """
    if max_tokens is None:
        return
    longest = max([streamed_chars, *(len(text) for text in texts)])
    if longest > max_tokens * MAX_CHARS_PER_TOKEN:
        raise _MalformedResponse(f"an answer of {longest} characters is far over max_tokens={max_tokens}")


class _StreamReader:
    """What one stream attempt has read so far, and the checks each chunk must pass.

    `deltas` hands on text and tool-call deltas as they come; finish-only deltas are `held` until the stream
    proves to carry an answer (`check_end`). `yielded` says whether anything reached the caller: after that,
    a failure is not retried, since a retry would repeat the text.
    """

    def __init__(self, model: str, max_tokens: int | None, byte_cap: int) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.byte_cap = byte_cap
        self.yielded = False
        self.finished = False
        # Finish-only deltas, sent once the stream proved to carry an answer.
        self.held: list[StreamDelta] = []
        self.usage_tokens: tuple[int, int] | None = None
        self.output_chars = 0

    def deltas(self, chunk: Any) -> Iterator[StreamDelta]:
        """The deltas of one chunk to pass on now; raises on a chunk over max_tokens or the byte cap."""
        chunk_usage = _get(chunk, "usage")
        if chunk_usage is not None and _get(chunk_usage, "completion_tokens") is not None:
            try:
                self.usage_tokens = (
                    _usage_count(chunk_usage, "prompt_tokens"),
                    _usage_count(chunk_usage, "completion_tokens"),
                )
            except _MalformedResponse as bad:
                # The text already reached the caller: estimate the tokens instead of billing the provider's
                # bad numbers (a plain answer with bad usage falls back instead).
                logger.warning("%s: %s; tokens estimated from characters", self.model, bad)
                self.usage_tokens = None
        for raw in _get(chunk, "choices") or []:
            delta = _get(raw, "delta")
            content = _get(delta, "content") if delta is not None else None
            text = content if isinstance(content, str) else ""
            tool_calls = _plain_tool_calls(_get(delta, "tool_calls")) if delta is not None else None
            finish_reason = _get(raw, "finish_reason")
            self.finished = self.finished or finish_reason is not None
            token_logprobs = _token_logprobs(_get(raw, "logprobs"))
            if not text and not tool_calls and finish_reason is None and not token_logprobs:
                continue
            piece = StreamDelta(
                text=text,
                index=int(_get(raw, "index") or 0),
                finish_reason=finish_reason,
                tool_calls=tool_calls,
                logprobs=token_logprobs,
            )
            if not text and not tool_calls:
                self.held.append(piece)
                continue
            self.output_chars += len(text)
            check_answer_length((), self.max_tokens, streamed_chars=self.output_chars)
            if self.output_chars > self.byte_cap:  # litellm streams are not byte-counted: count the text
                raise ResponseTooLargeError(f"the stream passed the cap of {self.byte_cap} bytes")
            self.yielded = True
            yield piece

    def check_end(self) -> None:
        """Raise `_MalformedResponse` for a stream that ended without a finish or without an answer."""
        if not self.finished:
            raise _MalformedResponse("the stream ended without a finish_reason")
        if not self.yielded and not any(
            _carries_answer("", None, piece.finish_reason) for piece in self.held
        ):
            # litellm turns an unparseable or choice-less stream into an empty one that ends in "stop".
            raise _MalformedResponse("the stream carried no text and no tool call")

    def token_counts(self, messages: list[dict[str, Any]]) -> tuple[int, int]:
        """(input, output) tokens: the server's usage, or without it characters / 4."""
        if self.usage_tokens is not None:
            return self.usage_tokens
        prompt_chars = sum(len(str(m.get("content") or "")) for m in messages)
        return (max(1, prompt_chars // 4), self.output_chars // 4)
