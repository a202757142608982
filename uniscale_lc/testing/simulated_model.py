"""What a scripted model answers: `SimulatedModel`, the token counting, and the choices of one request.

The canned behaviours, apart from the HTTP: what text or tool call each of the `n` samples gets, cut by `stop`
and `max_tokens`, with logprobs if asked, all drawn from a seeded generator so a test's answers repeat. The
server (openai_server.py) decides when to fail and how to send them; openai_server re-exports these names.

Token counting (usage and `max_tokens`): one token is one whitespace-separated word of text, so
`"the cat sat"` is 3 tokens.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

FailureKind = Literal[
    "500",
    "429",
    "400",
    "413",
    "422",
    "timeout",
    "malformed_json",
    "empty_choices",
    "truncated_stream",
    "oversized",
]
FAILURE_KINDS: frozenset[str] = frozenset(get_args(FailureKind))

AnswerFn = Callable[[list[dict[str, Any]], int, random.Random], str]
ToolCallFn = Callable[[list[dict[str, Any]], list[dict[str, Any]], random.Random], "dict[str, Any] | None"]

_TOKEN = re.compile(r"\S+\s*|\s+")
_OVERSIZED_BYTES = 2 * 1024 * 1024


def count_tokens(text: str) -> int:
    """Tokens as this server counts them: whitespace-separated words."""
    return len(text.split())


def split_tokens(text: str) -> list[str]:
    """Pieces that concatenate back to `text` exactly, one per word (with its trailing space)."""
    return _TOKEN.findall(text)


def message_text(message: Mapping[str, Any]) -> str:
    """The text of one chat message, whether its content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def echo_answer(messages: list[dict[str, Any]], sample_index: int, rng: random.Random) -> str:
    """An answer function that repeats the last user message (handy default for demos)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


@dataclasses.dataclass
class SimulatedModel:
    """How one served model behaves. A failure fires on each request with probability `failure_rate`.

    `answer` is a fixed string or `fn(messages, sample_index, rng) -> str`. `tool_call` is a dict
    `{"name": ..., "arguments": {...}}` or `fn(messages, tools, rng) -> dict | None`; it is used when the request
    carries `tools` and `tool_choice` is not "none". Without it, a forced `tool_choice` ("required" or a named
    function) still gets a call with arguments `{}`. `max_running` caps requests processed at once (the rest
    wait, as in vLLM's scheduler, and show as `vllm:num_requests_waiting`). `max_n` caps the choices returned
    whatever `n` asks (servers that ignore `n` behave like `max_n=1`). A "timeout" failure holds the request
    for `hang_s` seconds or until the server stops. `strict_params=True` answers 400 to a request with a
    top-level argument the OpenAI API does not define, as api.openai.com does.
    """

    name: str
    answer: AnswerFn | str
    latency_s: float = 0.0
    stream_chunk_delay_s: float = 0.0
    failure_rate: float = 0.0
    failure: FailureKind | None = None
    retry_after_s: float | None = None
    seed: int = 0
    tool_call: ToolCallFn | dict[str, Any] | None = None
    max_running: int | None = None
    max_n: int | None = None
    hang_s: float = 3600.0
    strict_params: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("SimulatedModel.name: must be non-empty")
        if self.failure is not None and self.failure not in FAILURE_KINDS:
            raise ValueError(
                f"SimulatedModel.failure: got {self.failure!r}; use one of {sorted(FAILURE_KINDS)}"
            )
        if not 0.0 <= self.failure_rate <= 1.0:
            raise ValueError(f"SimulatedModel.failure_rate: got {self.failure_rate!r}; use a value in [0, 1]")
        if self.latency_s < 0 or self.stream_chunk_delay_s < 0:
            raise ValueError("SimulatedModel.latency_s/stream_chunk_delay_s: must be >= 0")
        if self.max_running is not None and self.max_running < 1:
            raise ValueError("SimulatedModel.max_running: must be >= 1 or None")
        if self.max_n is not None and self.max_n < 1:
            raise ValueError("SimulatedModel.max_n: must be >= 1 or None")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimulatedModel:
        """Build from JSON-like data; `"echo": true` makes the model repeat the last user message."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {key: value for key, value in data.items() if key in fields}
        unknown = set(data) - fields - {"echo"}
        if unknown:
            raise ValueError(f"SimulatedModel: unknown keys {sorted(unknown)}; known: {sorted(fields)}")
        if data.get("echo"):
            kwargs["answer"] = echo_answer
        kwargs.setdefault("answer", "ok")
        return cls(**kwargs)


def make_choices(
    config: SimulatedModel,
    body: dict[str, Any],
    request_no: int,
    messages: list[dict[str, Any]],
    n: int,
    oversized: bool,
) -> list[dict[str, Any]]:
    """The `n` samples `config` gives for one request (text cut by `stop` and `max_tokens`, or a tool call).

    Each is a dict: index, text, tool_calls, finish_reason, pieces (the text a stream sends, one per token),
    completion_tokens, logprobs. Each sample of each request draws from its own seeded generator.
    """
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if isinstance(s, str) and s]
    want_logprobs = bool(body.get("logprobs"))
    top_logprobs = int(body.get("top_logprobs") or 0)
    tools = body.get("tools") or []
    tool_choice = body.get("tool_choice", "auto")
    choices: list[dict[str, Any]] = []
    for index in range(min(n, config.max_n or n)):
        rng = random.Random(f"{config.seed}:{request_no}:{index}")
        tool_call = _tool_call(config, messages, tools, tool_choice, rng) if tools else None
        if tool_call is not None:
            choices.append(
                {
                    "index": index,
                    "text": None,
                    "tool_calls": [tool_call],
                    "finish_reason": "tool_calls",
                    "pieces": [],
                    "completion_tokens": count_tokens(tool_call["function"]["arguments"]) + 1,
                    "logprobs": None,
                }
            )
            continue
        if oversized:
            text = "x" * _OVERSIZED_BYTES
        else:
            answer = config.answer
            text = answer if isinstance(answer, str) else str(answer(messages, index, rng))
        finish_reason = "stop"
        for stop_text in stops:
            cut = text.find(stop_text)
            if cut >= 0:
                text = text[:cut]
        pieces = split_tokens(text)
        if isinstance(max_tokens, int) and max_tokens >= 0 and count_tokens(text) > max_tokens:
            kept, words = [], 0
            for piece in pieces:
                if piece.strip():
                    if words == max_tokens:
                        break
                    words += 1
                kept.append(piece)
            pieces = kept
            text = "".join(pieces)
            finish_reason = "length"
        logprobs = None
        if want_logprobs:
            logprobs = [_logprob_entry(piece, rng, top_logprobs) for piece in pieces]
        choices.append(
            {
                "index": index,
                "text": text,
                "tool_calls": None,
                "finish_reason": finish_reason,
                "pieces": pieces,
                "completion_tokens": count_tokens(text),
                "logprobs": logprobs,
            }
        )
    return choices


def _tool_call(
    config: SimulatedModel,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    tool_choice: Any,
    rng: random.Random,
) -> dict[str, Any] | None:
    if tool_choice == "none":
        return None
    forced: str | None = None
    if isinstance(tool_choice, dict):
        forced = (tool_choice.get("function") or {}).get("name")
    elif tool_choice in ("required", "any"):
        first = tools[0] if tools and isinstance(tools[0], dict) else {}
        forced = (first.get("function") or {}).get("name")
    call: dict[str, Any] | None
    if callable(config.tool_call):
        call = config.tool_call(messages, tools, rng)
    else:
        call = dict(config.tool_call) if config.tool_call else None
    if call is None and forced is None:
        return None
    call = call or {"name": forced, "arguments": {}}
    name = forced or call.get("name")
    arguments = call.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return {
        "id": f"call_{uuid.UUID(int=rng.getrandbits(128)).hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def _logprob_entry(piece: str, rng: random.Random, top: int) -> dict[str, Any]:
    logprob = -round(rng.random() ** 2 * 2.0, 6)
    entry: dict[str, Any] = {
        "token": piece,
        "logprob": logprob,
        "bytes": list(piece.encode()),
        "top_logprobs": [],
    }
    for rank in range(top):
        token = piece if rank == 0 else f"<alt{rank}>"
        value = logprob if rank == 0 else logprob - 1.0 - rank
        entry["top_logprobs"].append({"token": token, "logprob": value, "bytes": list(token.encode())})
    return entry
