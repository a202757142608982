"""The one place that talks to litellm: timeouts, retries, `n` or parallel samples, usage and cost, typed errors.

See docs/client.md for the rules (model naming, retry policy, cost sources, key handling).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import email.utils
import ipaddress
import logging
import math
import os
import random
import sys
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from types import ModuleType
from typing import Any, TypeVar
from urllib.parse import urlsplit
from weakref import WeakKeyDictionary

from .errors import (
    ConfigError,
    ModelCallError,
    ModelTimeoutError,
    RateLimitedError,
    RequestRejectedError,
    field_error,
)
from .model_spec import ModelSpec
from .prices import lookup_usd_per_mtok
from .redact import install_log_redaction, redact, remember_secret
from .transport_openai import (
    MalformedStreamError,
    OpenAITransport,
    ResponseTooLargeError,
    served_model_name,
)

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "Choice",
    "Completion",
    "ModelClient",
    "RetryPolicy",
    "StreamDelta",
    "call_cost_usd",
    "empty_usage",
    "gpu_cost_usd",
    "is_loopback",
    "litellm_model_name",
    "parse_retry_after",
    "plan_calls",
    "response_byte_cap",
    "run_sync",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Sent when a loopback server needs no key: the OpenAI client refuses to start without one.
DUMMY_LOCAL_KEY = "EMPTY"
DEFAULT_PROVIDER_FOR_API_BASE = "hosted_vllm"
# Arguments the client owns; `extra` may not override them.
_RESERVED_KWARGS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "api_key",
        "api_base",
        "base_url",
        "timeout",
        "max_retries",
        "num_retries",
        "n",
    }
)


def _guard_s(timeout_s: float) -> float:
    """Our wall-clock bound on one wait, a safety net behind litellm's own `timeout`.

    Loose on purpose: litellm's first call in a process does seconds of lazy set-up (more for streams) that
    must not count as the provider timing out.
    """
    return 2.0 * timeout_s + 1.0


_MAX_DETAIL_CHARS = 600
# No tokenizer averages more than this many characters a token: an answer longer than max_tokens times this
# comes from a broken endpoint (one that ignores max_tokens or under-reports its tokens), not from the model.
MAX_CHARS_PER_TOKEN = 32
# Bytes read per response, while reading: `RESPONSE_OVERHEAD_BYTES + n * max_tokens * RESPONSE_BYTES_PER_TOKEN`
# (a streamed token costs one JSON event of a few hundred bytes, more with top logprobs), or the client's
# `max_response_bytes` when `max_tokens` is unset. A body past the cap is cut off: a broken endpoint.
RESPONSE_OVERHEAD_BYTES = 64 * 1024
RESPONSE_BYTES_PER_TOKEN = 4096
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024
# A usage count above this is a provider's bad data (no request is a billion tokens), not a bill.
MAX_REPORTED_TOKENS = 10**9


def response_byte_cap(max_tokens: int | None, n: int, default: int = DEFAULT_MAX_RESPONSE_BYTES) -> int:
    """How many bytes of one response are read before it is refused (see RESPONSE_BYTES_PER_TOKEN)."""
    if max_tokens is None:
        return default
    return RESPONSE_OVERHEAD_BYTES + max(1, n) * max(1, max_tokens) * RESPONSE_BYTES_PER_TOKEN


_litellm_module: ModuleType | None = None


def _litellm() -> ModuleType:
    """Import litellm on first use: it takes seconds and must not fetch its price map from the internet."""
    global _litellm_module
    if _litellm_module is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        # Stop litellm printing "Give Feedback / Get Help" to stdout on every failed call; we log instead.
        litellm.suppress_debug_info = True
        _litellm_module = litellm
        # atexit runs handlers last-registered first: registered again after litellm's own, the background
        # loop drains (litellm's logging worker and sessions included) before litellm's exit hooks run.
        atexit.register(_BACKGROUND.close)
    return _litellm_module


# ---- results ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Choice:
    """One sample. `tool_calls` are OpenAI-format dicts; `logprobs` one float per generated token, if asked."""

    text: str
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    logprobs: list[float] | None = None


def empty_usage() -> dict[str, Any]:
    """The usage dict with every key present and zero."""
    return {
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "calls": 0,
        "cost_usd": 0.0,
        "latency_s": 0.0,
    }


@dataclasses.dataclass
class Completion:
    """The result of `acomplete`: exactly `n` choices, and usage summed over every call made for them.

    `usage` keys: input_tokens, output_tokens, total_tokens, calls (successful API calls), cost_usd, latency_s
    (wall clock of the whole request, retries and backoff included). `Completion(texts=[...])` alone is
    enough for fakes in tests: choices are filled from the texts.
    """

    texts: list[str]
    choices: list[Choice] = dataclasses.field(default_factory=list)
    usage: dict[str, Any] = dataclasses.field(default_factory=empty_usage)
    model: str = ""

    def __post_init__(self) -> None:
        if not self.choices:
            self.choices = [Choice(text=text) for text in self.texts]
        elif len(self.choices) != len(self.texts):
            raise ValueError(f"Completion: {len(self.texts)} texts but {len(self.choices)} choices")


@dataclasses.dataclass(frozen=True)
class StreamDelta:
    """One piece of a streamed answer. The last delta of a stream has `usage` set and no text."""

    text: str = ""
    index: int = 0
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    logprobs: list[float] | None = None
    usage: dict[str, Any] | None = None


# ---- pure decisions ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter, for 429, timeouts, 5xx and malformed replies.

    `max_attempts` counts the first try. A Retry-After longer than `max_retry_after_s` is not waited for:
    the error is raised at once so the router can try another arm.
    """

    max_attempts: int = 3
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    jitter: float = 0.5
    max_retry_after_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise field_error("RetryPolicy", "max_attempts", self.max_attempts, "use 1 (no retries) or more")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or not 0 <= self.jitter <= 1:
            raise ConfigError("RetryPolicy: delays must be >= 0 and jitter in [0, 1]")

    def deadline_s(self, timeout_s: float) -> float:
        """The ceiling of one model call, every attempt and wait included: max_attempts x (2 x timeout_s + 1).

        Each attempt (connect, first byte, whole body or stream) is bounded by 2 x timeout_s + 1 as a whole;
        a wait (backoff or Retry-After) that would leave less than timeout_s before the ceiling is not made.
        """
        return self.max_attempts * _guard_s(timeout_s)

    def delay_s(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float | None:
        """Seconds to wait after failed attempt `attempt` (1-based); None means do not retry."""
        if attempt >= self.max_attempts:
            return None
        if retry_after_s is not None:
            if retry_after_s > self.max_retry_after_s:
                return None
            # The server named its time; a little jitter on top keeps clients from returning in lockstep.
            return retry_after_s + rng.uniform(0.0, self.jitter * min(retry_after_s, self.base_delay_s))
        backoff = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return backoff * (1.0 - self.jitter * rng.random())


def plan_calls(n: int, provider_supports_n: bool) -> list[int]:
    """How many samples to ask of each API call: one call with `n`, or `n` parallel calls of one."""
    if n < 1:
        raise field_error("ModelClient.acomplete", "n", n, "ask for at least one sample")
    return [n] if provider_supports_n or n == 1 else [1] * n


def litellm_model_name(model: str, api_base: str | None, providers: frozenset[str]) -> str:
    """The name to send to litellm.

    A name whose first path segment is a litellm provider (`openai/x`, `hosted_vllm/x`, `anthropic/x`) is
    sent as is. Otherwise, with an `api_base`, the server is taken to be vLLM (or another OpenAI-compatible
    server) and the name becomes `hosted_vllm/<model>`, so `Qwen/Qwen2.5-7B` is served as itself. Without an
    `api_base` the name is left to litellm's own inference (`gpt-4o-mini` -> openai).
    """
    prefix = model.split("/", 1)[0] if "/" in model else None
    if prefix is not None and prefix in providers:
        return model
    if api_base:
        return f"{DEFAULT_PROVIDER_FOR_API_BASE}/{model}"
    return model


def parse_retry_after(headers: Mapping[str, Any] | None, now: float | None = None) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date); None when absent or bad."""
    if not headers:
        return None
    lowered = {str(key).lower(): value for key, value in headers.items()}
    milliseconds = lowered.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(0.0, float(milliseconds) / 1000.0)
        except (TypeError, ValueError):
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        when = email.utils.parsedate_to_datetime(str(value))
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def call_cost_usd(
    input_tokens: int,
    output_tokens: int,
    input_usd_per_mtok: float,
    output_usd_per_mtok: float,
    litellm_cost_usd: float | None = None,
) -> float:
    """Token cost of one call: litellm's own figure when it has one (it knows cached and reasoning rates),
    else tokens times the per-million prices."""
    if litellm_cost_usd is not None:
        return float(litellm_cost_usd)
    return (input_tokens * input_usd_per_mtok + output_tokens * output_usd_per_mtok) / 1e6


def gpu_cost_usd(latency_s: float, gpu_usd_per_hour: float) -> float:
    """Self-hosted cost: the server's hourly price for the wall time this request held it (batching ignored)."""
    return max(0.0, latency_s) * gpu_usd_per_hour / 3600.0


def is_loopback(api_base: str | None) -> bool:
    """Whether `api_base` names this machine (a local server needs no key)."""
    return _is_loopback(api_base)


def _is_loopback(api_base: str | None) -> bool:
    if not api_base:
        return False
    host = urlsplit(api_base).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---- errors -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Failure:
    """What went wrong in one attempt, before it becomes the typed error the caller sees."""

    kind: type[ModelCallError]
    retryable: bool
    status_code: int | None
    summary: str
    detail: str = ""
    retry_after_s: float | None = None

    def error(self, model: str, attempts: int) -> ModelCallError:
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        detail = f": {self.detail}" if self.detail else ""
        return self.kind(
            f"{model}: {self.summary}{tries}{detail}",
            model=model,
            retryable=self.retryable,
            status_code=self.status_code,
        )

    def describe(self) -> str:
        return f"{self.summary}: {self.detail}" if self.detail else self.summary


class _MalformedResponse(Exception):
    """The provider answered, but not with something usable (no choices, a stream cut short)."""


class _DeadlinePassed(Exception):
    """The call reached its total deadline (`RetryPolicy.deadline_s`)."""


class _Deadline:
    """The wall-clock end of one model call; time spent waiting for our own concurrency slot is added back."""

    def __init__(self, timeout_s: float, total_s: float) -> None:
        self.guard_s = _guard_s(timeout_s)
        self.total_s = total_s
        self.at = time.monotonic() + total_s

    def remaining(self) -> float:
        return self.at - time.monotonic()

    async def bound(self, awaitable: Awaitable[T]) -> T:
        """Await with the per-wait guard, cut to what is left of the call's deadline."""
        remaining = self.remaining()
        if remaining >= self.guard_s:
            return await _deadline(awaitable, self.guard_s)
        if remaining <= 0:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise _DeadlinePassed(f"passed the call deadline of {self.total_s:.1f} s")
        try:
            return await _deadline(awaitable, remaining)
        except asyncio.TimeoutError:
            raise _DeadlinePassed(f"passed the call deadline of {self.total_s:.1f} s") from None

    async def acquire(self, limit: asyncio.Semaphore) -> None:
        started = time.monotonic()
        await limit.acquire()
        self.at += time.monotonic() - started


def _cause_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _exception_headers(exc: BaseException) -> Mapping[str, Any] | None:
    for candidate in (
        getattr(exc, "litellm_response_headers", None),
        getattr(exc, "headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        if candidate:
            try:
                return dict(candidate.items())
            except Exception:
                continue
    return None


# Statuses caused by the request itself (bad arguments, unknown model, too large, unprocessable): the caller's
# mistake, raised as RequestRejectedError; no other arm is tried and the arm is not blamed.
REQUEST_REJECTED_STATUSES = frozenset({400, 404, 413, 422})
_CONNECT_ERROR_NAMES = frozenset(
    {"ConnectError", "ClientConnectorError", "ConnectTimeout", "ConnectionError"}
)


def _connection_problem(exc: BaseException) -> str | None:
    """'refused' or 'failed' when the chain of causes shows the connection never opened; else None.

    litellm reports a refused connection as an InternalServerError (500) and the openai SDK as a bare
    "Connection error.": the cause chain is the only place that says what happened.
    """
    found: str | None = None
    for inner in _cause_chain(exc):
        if isinstance(inner, ConnectionRefusedError):
            return "refused"
        if type(inner).__name__ in _CONNECT_ERROR_NAMES:
            found = "failed"
    return found


def _classify(exc: BaseException, secrets: Sequence[str | None], api_base: str | None = None) -> _Failure:
    """Map any exception from one attempt to a `_Failure`; the detail is already redacted."""
    name = type(exc).__name__
    text = str(exc)
    detail = redact(text if name in text else f"{name}: {text}", secrets)
    if len(detail) > _MAX_DETAIL_CHARS:
        detail = detail[: _MAX_DETAIL_CHARS - 3] + "..."
    if isinstance(exc, _MalformedResponse):
        return _Failure(ModelCallError, True, None, "malformed response", redact(text, secrets))
    if isinstance(exc, _DeadlinePassed):
        return _Failure(ModelTimeoutError, False, None, "timed out", text)
    # The SDK wraps what our byte counter raises in APIConnectionError: look for it down the chain.
    for inner in _cause_chain(exc):
        if isinstance(inner, ResponseTooLargeError):
            return _Failure(ModelCallError, True, None, "malformed response (over the byte cap)", str(inner))
        if isinstance(inner, MalformedStreamError):
            return _Failure(ModelCallError, True, None, "malformed response", str(inner))
    if isinstance(exc, asyncio.TimeoutError):
        return _Failure(ModelTimeoutError, True, None, "timed out (client-side guard)")
    import openai  # litellm's exception classes subclass the SDK's, so these tests serve both transports

    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    if isinstance(exc, openai.APITimeoutError):
        return _Failure(ModelTimeoutError, True, status, "timed out", detail)
    connection = _connection_problem(exc)
    if connection is not None:
        where = api_base or "the provider's default endpoint"
        summary = f"connection {connection} ({where})"
        if connection == "refused":
            summary += ": is the server running and is api_base right?"
        return _Failure(ModelCallError, True, None, summary, detail)
    if isinstance(exc, openai.RateLimitError) or status == 429:
        retry_after = parse_retry_after(_exception_headers(exc))
        return _Failure(RateLimitedError, True, 429, "rate limited (429)", detail, retry_after)
    if isinstance(exc, openai.APIConnectionError):
        return _Failure(
            ModelCallError, True, status, f"connection failed ({api_base or 'default endpoint'})", detail
        )
    if status is not None and status >= 500:
        return _Failure(ModelCallError, True, status, f"server error ({status})", detail)
    if status in REQUEST_REJECTED_STATUSES:
        return _Failure(RequestRejectedError, False, status, f"request rejected ({status})", detail)
    if status in (401, 403):
        return _Failure(
            ModelCallError,
            False,
            status,
            f"credentials refused ({status}): check the key the ModelSpec names (api_key / api_key_env)",
            detail,
        )
    if status is not None and 400 <= status < 500:
        return _Failure(ModelCallError, status == 408, status, f"request failed ({status})", detail)
    if isinstance(exc, openai.APIError):
        # An APIError without an HTTP error status: litellm could not parse what came back.
        return _Failure(ModelCallError, True, None, "malformed response", detail)
    if isinstance(exc, (KeyError, IndexError, ValueError, AttributeError, OSError)):
        return _Failure(ModelCallError, True, None, "malformed response or transport error", detail)
    return _Failure(ModelCallError, False, status, "unexpected error", detail)


# ---- response parsing -------------------------------------------------------------------------------------


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


@dataclasses.dataclass
class _CallResult:
    choices: list[Choice]
    input_tokens: int
    output_tokens: int
    litellm_cost_usd: float | None


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


# ---- per-spec facts, resolved once ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Target:
    """What a spec means for litellm, worked out once per spec (provider lookups are not free)."""

    litellm_model: str
    supports_n: bool
    loopback: bool
    use_litellm_cost: bool
    provider: str | None = None
    # Set for OpenAI-compatible endpoints: the name sent through the openai SDK (transport_openai.py).
    served_model: str | None = None


def _resolve_target(spec: ModelSpec, *, openai_sdk: bool = True) -> _Target:
    litellm = _litellm()
    providers = frozenset(str(getattr(p, "value", p)) for p in litellm.provider_list)
    name = litellm_model_name(spec.model, spec.api_base, providers)
    try:
        supported = litellm.get_supported_openai_params(model=name) or []
    except Exception:  # an unknown provider: assume the conservative answer
        supported = []
    # litellm's per-call cost is trusted only while the spec's prices are litellm's own (not overridden), and
    # never for self-hosted specs, whose cost is GPU time.
    table_prices = lookup_usd_per_mtok(name)
    own_prices = (spec.input_usd_per_mtok, spec.output_usd_per_mtok)
    use_litellm_cost = not spec.self_hosted and table_prices is not None and table_prices == own_prices
    try:
        provider: str | None = litellm.get_llm_provider(model=name, api_base=spec.api_base)[1]
    except Exception:
        provider = None
    return _Target(
        litellm_model=name,
        supports_n="n" in supported,
        loopback=_is_loopback(spec.api_base),
        use_litellm_cost=use_litellm_cost,
        provider=provider,
        served_model=served_model_name(name, provider) if openai_sdk else None,
    )


# ---- the sync bridge --------------------------------------------------------------------------------------


class _BackgroundLoop:
    """One event loop in a daemon thread that runs every sync call.

    Why not `asyncio.run` per call: litellm caches HTTP sessions per event loop, and a fresh loop per call
    leaves those bound to closed loops; one long-lived loop also makes per-model concurrency limits hold
    across sync callers. Works the same whether or not the calling thread has a running loop (that loop is
    blocked for the duration, as any sync call would block it; async code should use `acomplete`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="uniscale-client-loop", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._ensure()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "a sync ModelClient call from inside its own loop would deadlock; await the async one"
            )
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        """Drain the loop (HTTP pools closed, pending tasks cancelled and awaited), then stop it.

        Without the drain, tasks still parked on the loop (litellm's logging worker, aiohttp's close
        waiters) are destroyed with it, and Python prints "Task was destroyed but it is pending" and
        "Event loop is closed" tracebacks at exit.
        """
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if thread.is_alive() and threading.current_thread() is not thread:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_drain_loop(), loop).result(timeout=5.0)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5.0)
        if not thread.is_alive():
            loop.close()


async def _drain_loop() -> None:
    """Close what this loop holds open: litellm's sessions and logging worker, every other task, the
    async generators (whose finalisers close the openai SDK pools, see transport_openai.py)."""
    loop = asyncio.get_running_loop()
    if _litellm_module is not None:
        with contextlib.suppress(Exception):
            from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

            await asyncio.wait_for(GLOBAL_LOGGING_WORKER.stop(timeout=1.0), 2.0)
        with contextlib.suppress(Exception):
            from litellm.llms.custom_httpx.async_client_cleanup import close_litellm_async_clients

            await asyncio.wait_for(close_litellm_async_clients(), 2.0)
    current = asyncio.current_task()
    others = [task for task in asyncio.all_tasks(loop) if task is not current]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
    with contextlib.suppress(Exception):
        await loop.shutdown_asyncgens()


_BACKGROUND = _BackgroundLoop()
atexit.register(_BACKGROUND.close)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on the shared background loop: the sync face of every async API."""
    return _BACKGROUND.run(coro)


# ---- the client -------------------------------------------------------------------------------------------


class ModelClient:
    """Calls models through litellm with explicit timeouts, our own bounded retries and per-model limits.

    One instance per process or chat model; it is cheap and holds only caches, semaphores and HTTP pools.
    `transport="auto"` sends OpenAI-compatible endpoints through the openai SDK (transport_openai.py) and
    everything else through litellm; `transport="litellm"` sends everything through litellm.
    """

    def __init__(
        self,
        retry: RetryPolicy | None = None,
        *,
        seed: int | None = None,
        transport: str = "auto",
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if transport not in ("auto", "litellm"):
            raise field_error("ModelClient", "transport", transport, "use 'auto' or 'litellm'")
        if isinstance(max_response_bytes, bool) or not isinstance(max_response_bytes, int):
            raise field_error("ModelClient", "max_response_bytes", max_response_bytes, "use an int of bytes")
        if max_response_bytes < RESPONSE_OVERHEAD_BYTES:
            raise field_error(
                "ModelClient",
                "max_response_bytes",
                max_response_bytes,
                f"use at least {RESPONSE_OVERHEAD_BYTES} bytes (the default is {DEFAULT_MAX_RESPONSE_BYTES})",
            )
        self.max_response_bytes = max_response_bytes
        self.transport = transport
        install_log_redaction()
        self._openai = OpenAITransport()
        self.retry = retry or RetryPolicy()
        self._rng = random.Random(seed)
        self._targets: dict[ModelSpec, _Target] = {}
        # Semaphores belong to the loop they were first awaited on, so keep one set per loop.
        self._limits: WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[tuple[str, str | None], asyncio.Semaphore]
        ]
        self._limits = WeakKeyDictionary()

    # -- helpers

    def _target(self, spec: ModelSpec) -> _Target:
        target = self._targets.get(spec)
        if target is None:
            target = self._targets[spec] = _resolve_target(spec, openai_sdk=self.transport == "auto")
        return target

    def _byte_cap(self, kwargs: Mapping[str, Any]) -> int:
        return response_byte_cap(kwargs.get("max_tokens"), int(kwargs.get("n") or 1), self.max_response_bytes)

    def _send(self, target: _Target, kwargs: dict[str, Any]) -> Awaitable[Any]:
        """The one call to a provider: the openai SDK for OpenAI-compatible endpoints, else litellm.

        The SDK path stops reading at the byte cap; litellm reads whole bodies itself, so its answers are
        checked against the cap once read (streams: as they arrive).
        """
        if target.served_model is not None and target.provider is not None:
            return self._openai.acompletion(
                target.provider, target.served_model, kwargs, self._byte_cap(kwargs)
            )
        return _litellm().acompletion(**kwargs)

    async def aclose(self) -> None:
        """Close the HTTP pools this client opened on the running loop."""
        await self._openai.aclose()

    async def _atarget(self, spec: ModelSpec) -> _Target:
        target = self._targets.get(spec)
        if target is not None:
            return target
        if _litellm_module is None:
            # The first import takes seconds; do it in a worker thread so the caller's loop keeps serving.
            await asyncio.to_thread(_litellm)
        return self._target(spec)

    async def awarm_up(self, specs: Sequence[ModelSpec] = ()) -> None:
        """Import litellm and resolve `specs` ahead of the first request (off the event loop)."""
        await asyncio.to_thread(_litellm)
        for spec in specs:
            self._target(spec)

    def _limit(self, spec: ModelSpec) -> asyncio.Semaphore | None:
        if spec.max_concurrency is None:
            return None
        loop = asyncio.get_running_loop()
        per_loop = self._limits.get(loop)
        if per_loop is None:
            per_loop = self._limits[loop] = {}
        key = (spec.model, spec.api_base)
        semaphore = per_loop.get(key)
        if semaphore is None:
            semaphore = per_loop[key] = asyncio.Semaphore(spec.max_concurrency)
        return semaphore

    @staticmethod
    def _api_key(spec: ModelSpec, target: _Target) -> str | None:
        key = spec.resolved_api_key()
        if key:
            remember_secret(key)  # so an echo of it is scrubbed from every log line too, ours or a library's
            return key
        if target.loopback:
            return DUMMY_LOCAL_KEY
        if spec.api_key_env:
            raise field_error(
                "ModelSpec",
                "api_key_env",
                spec.api_key_env,
                "that environment variable is not set or empty; export it before calling the model",
            )
        return None  # litellm falls back to the provider's usual variable (OPENAI_API_KEY, ...)

    def _kwargs(
        self,
        spec: ModelSpec,
        target: _Target,
        messages: list[dict[str, Any]],
        temperature: float | None,
        max_tokens: int | None,
        logprobs: bool,
        tools: list[dict[str, Any]] | None,
        tool_choice: str | dict[str, Any] | None,
        stop: str | list[str] | None,
        extra: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": target.litellm_model,
            "messages": messages,
            "timeout": spec.timeout_s,
            "max_retries": 0,  # we retry; the OpenAI SDK would otherwise retry twice more inside each attempt
        }
        if spec.api_base:
            kwargs["api_base"] = spec.api_base
        key = self._api_key(spec, target)
        if key is not None:
            kwargs["api_key"] = key
        if temperature is not None:
            kwargs["temperature"] = temperature
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if logprobs:
            kwargs["logprobs"] = True
        if tools:
            kwargs["tools"] = tools
            if tool_choice is not None:
                kwargs["tool_choice"] = tool_choice
        if stop is not None:
            kwargs["stop"] = stop
        if extra:
            clash = sorted(_RESERVED_KWARGS.intersection(extra))
            if clash:
                raise field_error(
                    "ModelClient",
                    "extra",
                    clash,
                    "these are set by the client; use the ModelSpec or arguments",
                )
            kwargs.update(extra)
        return kwargs

    async def _attempt(
        self, spec: ModelSpec, target: _Target, kwargs: dict[str, Any], deadline: _Deadline
    ) -> _CallResult:
        response = await deadline.bound(self._send(target, kwargs))
        result = _parse_response(response, use_litellm_cost=target.use_litellm_cost)
        texts = [choice.text for choice in result.choices]
        check_answer_length(texts, kwargs.get("max_tokens"))
        if sum(len(text) for text in texts) > self._byte_cap(kwargs):  # litellm read it whole; refuse it now
            raise ResponseTooLargeError(f"the answer passed the cap of {self._byte_cap(kwargs)} bytes")
        return result

    async def _call(
        self, spec: ModelSpec, target: _Target, kwargs: dict[str, Any], secrets: list[str | None]
    ) -> _CallResult:
        """One logical call with bounded retries and one total deadline; raises the typed error of the last
        attempt."""
        deadline = _Deadline(spec.timeout_s, self.retry.deadline_s(spec.timeout_s))
        attempt = 0
        while True:
            attempt += 1
            failure: _Failure | None = None
            limit = self._limit(spec)
            try:
                if limit is None:
                    return await self._attempt(spec, target, kwargs, deadline)
                await deadline.acquire(limit)
                try:
                    return await self._attempt(spec, target, kwargs, deadline)
                finally:
                    limit.release()
            except (asyncio.CancelledError, ConfigError):
                raise  # a ConfigError (no API key) is the caller's to fix: no retry, no model blamed
            except Exception as exc:
                failure = _classify(exc, secrets, spec.api_base)
            # Raised outside the except block so no provider exception (which may quote headers) is chained.
            await asyncio.sleep(
                self._retry_delay_or_raise(spec, failure, attempt, deadline, retryable=failure.retryable)
            )

    def _retry_delay_or_raise(
        self,
        spec: ModelSpec,
        failure: _Failure,
        attempt: int,
        deadline: _Deadline,
        *,
        retryable: bool,
        what: str = "attempt",
    ) -> float:
        """Seconds to wait before the next attempt, or raise the typed error when no retry is left.

        A wait that would leave less than one `timeout_s` before the call's deadline is not made: the error
        is raised now, so the router can try another arm (a `Retry-After: 29` never holds a 2 s call).
        """
        delay = self.retry.delay_s(attempt, failure.retry_after_s, self._rng) if retryable else None
        if delay is not None and delay + spec.timeout_s > deadline.remaining():
            logger.info(
                "%s: not retrying: a %.2f s wait passes the call deadline of %.1f s",
                spec.model,
                delay,
                deadline.total_s,
            )
            delay = None
        if delay is None:
            error = failure.error(spec.model, attempt)
            logger.info("%s", error)
            raise error
        logger.warning(
            "%s: %s %d/%d failed (%s); retrying in %.2f s",
            spec.model,
            what,
            attempt,
            self.retry.max_attempts,
            failure.describe(),
            delay,
        )
        return delay

    # -- public API

    async def acomplete(
        self,
        spec: ModelSpec,
        messages: list[dict[str, Any]],
        *,
        n: int = 1,
        temperature: float | None = None,
        max_tokens: int | None = None,
        logprobs: bool = False,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        stop: str | list[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Completion:
        """Ask `spec` for `n` samples; returns exactly `n` choices or raises a `ModelCallError`.

        `n` goes to the provider in one call when litellm says the provider supports it, else as `n` parallel
        calls; if the provider returns fewer choices than asked, the rest are topped up with parallel calls.
        """
        target = await self._atarget(spec)
        started = time.perf_counter()
        kwargs = self._kwargs(
            spec, target, messages, temperature, max_tokens, logprobs, tools, tool_choice, stop, extra
        )
        secrets = [kwargs.get("api_key")]
        plan = plan_calls(n, target.supports_n)
        results = await self._run_plan(spec, target, kwargs, secrets, plan)
        got = sum(len(result.choices) for result in results)
        if got < n:
            logger.info("%s: asked for n=%d, got %d; topping up with %d calls", spec.model, n, got, n - got)
            results += await self._run_plan(spec, target, kwargs, secrets, [1] * (n - got))
        choices = [choice for result in results for choice in result.choices][:n]
        latency_s = time.perf_counter() - started
        return Completion(
            texts=[choice.text for choice in choices],
            choices=choices,
            usage=self._usage(spec, results, latency_s),
            model=spec.model,
        )

    async def _run_plan(
        self,
        spec: ModelSpec,
        target: _Target,
        kwargs: dict[str, Any],
        secrets: list[str | None],
        plan: list[int],
    ) -> list[_CallResult]:
        def with_n(k: int) -> dict[str, Any]:
            return {**kwargs, "n": k} if k > 1 else kwargs

        if len(plan) == 1:  # the common case: no task objects
            return [await self._call(spec, target, with_n(plan[0]), secrets)]
        return await _gather_or_cancel([self._call(spec, target, with_n(k), secrets) for k in plan])

    @staticmethod
    def _usage(spec: ModelSpec, results: Sequence[_CallResult], latency_s: float) -> dict[str, Any]:
        input_tokens = sum(result.input_tokens for result in results)
        output_tokens = sum(result.output_tokens for result in results)
        cost = sum(
            call_cost_usd(
                result.input_tokens,
                result.output_tokens,
                spec.input_usd_per_mtok or 0.0,
                spec.output_usd_per_mtok or 0.0,
                result.litellm_cost_usd,
            )
            for result in results
        )
        if spec.gpu_usd_per_hour is not None:
            cost += gpu_cost_usd(latency_s, spec.gpu_usd_per_hour)
        return {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
            "calls": len(results),
            "cost_usd": cost,
            "latency_s": latency_s,
        }

    async def astream(
        self,
        spec: ModelSpec,
        messages: list[dict[str, Any]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        logprobs: bool = False,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        stop: str | list[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[StreamDelta, None]:
        """Stream one answer. Retries happen only before the first delta; a failure after it is raised.

        `spec.timeout_s` bounds the wait for the stream to open and for each next chunk, and the whole stream
        ends within `RetryPolicy.deadline_s(timeout_s)` (a stream that never ends is cut there). A stream
        with no text and no tool call is a malformed response (litellm reports a broken stream that way).
        The last delta carries `usage`; without usage from the server, tokens are estimated as characters / 4.
        """
        target = await self._atarget(spec)
        started = time.perf_counter()
        kwargs = self._kwargs(
            spec, target, messages, temperature, max_tokens, logprobs, tools, tool_choice, stop, extra
        )
        kwargs["stream"] = True
        kwargs["stream_options"] = {"include_usage": True}
        secrets = [kwargs.get("api_key")]
        deadline = _Deadline(spec.timeout_s, self.retry.deadline_s(spec.timeout_s))
        byte_cap = self._byte_cap(kwargs)
        attempt = 0
        while True:
            attempt += 1
            failure: _Failure | None = None
            yielded = False
            finished = False
            held: list[StreamDelta] = []  # finish-only deltas, sent once the stream proved to carry an answer
            usage_tokens: tuple[int, int] | None = None
            output_chars = 0
            limit = self._limit(spec)
            if limit is not None:
                await deadline.acquire(limit)
            stream: Any = None
            try:
                stream = await deadline.bound(self._send(target, kwargs))
                iterator = stream.__aiter__()
                while True:
                    try:
                        chunk = await deadline.bound(iterator.__anext__())
                    except StopAsyncIteration:
                        break
                    chunk_usage = _get(chunk, "usage")
                    if chunk_usage is not None and _get(chunk_usage, "completion_tokens") is not None:
                        try:
                            usage_tokens = (
                                _usage_count(chunk_usage, "prompt_tokens"),
                                _usage_count(chunk_usage, "completion_tokens"),
                            )
                        except _MalformedResponse as bad:
                            # The text already reached the caller: estimate the tokens instead of billing
                            # the provider's bad numbers (a plain answer with bad usage falls back instead).
                            logger.warning("%s: %s; tokens estimated from characters", spec.model, bad)
                            usage_tokens = None
                    for raw in _get(chunk, "choices") or []:
                        delta = _get(raw, "delta")
                        content = _get(delta, "content") if delta is not None else None
                        text = content if isinstance(content, str) else ""
                        tool_calls = (
                            _plain_tool_calls(_get(delta, "tool_calls")) if delta is not None else None
                        )
                        finish_reason = _get(raw, "finish_reason")
                        finished = finished or finish_reason is not None
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
                            held.append(piece)
                            continue
                        output_chars += len(text)
                        check_answer_length((), max_tokens, streamed_chars=output_chars)
                        if output_chars > byte_cap:  # litellm streams are not byte-counted: count the text
                            raise ResponseTooLargeError(f"the stream passed the cap of {byte_cap} bytes")
                        yielded = True
                        yield piece
                if not finished:
                    raise _MalformedResponse("the stream ended without a finish_reason")
                if not yielded and not any(_carries_answer("", None, piece.finish_reason) for piece in held):
                    # litellm turns an unparseable or choice-less stream into an empty one that ends in "stop".
                    raise _MalformedResponse("the stream carried no text and no tool call")
            except (asyncio.CancelledError, ConfigError):
                raise
            except Exception as exc:
                failure = _classify(exc, secrets, spec.api_base)
            finally:
                if limit is not None:
                    limit.release()
                # Always: a stream abandoned by the caller (GeneratorExit here) must free its connection too.
                close = getattr(stream, "aclose", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        await close()
            if failure is None:
                for piece in held:
                    yield piece
                latency_s = time.perf_counter() - started
                if usage_tokens is None:
                    prompt_chars = sum(len(str(m.get("content") or "")) for m in messages)
                    usage_tokens = (max(1, prompt_chars // 4), output_chars // 4)
                result = _CallResult([], usage_tokens[0], usage_tokens[1], None)
                yield StreamDelta(usage=self._usage(spec, [result], latency_s))
                return
            # Once tokens reached the caller a retry would repeat them: only a clean failure is retried.
            retryable = failure.retryable and not yielded
            await asyncio.sleep(
                self._retry_delay_or_raise(
                    spec, failure, attempt, deadline, retryable=retryable, what="stream attempt"
                )
            )

    def complete(
        self,
        spec: ModelSpec,
        messages: list[dict[str, Any]],
        *,
        n: int = 1,
        temperature: float | None = None,
        max_tokens: int | None = None,
        logprobs: bool = False,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        stop: str | list[str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Completion:
        """Sync twin of `acomplete`, safe to call with or without a running event loop in this thread.

        The call runs on a shared background loop (see `_BackgroundLoop` for why), never on the caller's loop.
        """
        return _BACKGROUND.run(
            self.acomplete(
                spec,
                messages,
                n=n,
                temperature=temperature,
                max_tokens=max_tokens,
                logprobs=logprobs,
                tools=tools,
                tool_choice=tool_choice,
                stop=stop,
                extra=extra,
            )
        )

    def stream(self, spec: ModelSpec, messages: list[dict[str, Any]], **kwargs: Any) -> Iterator[StreamDelta]:
        """Sync twin of `astream` (same keyword arguments), driven on the shared background loop."""
        agen = self.astream(spec, messages, **kwargs)
        try:
            while True:
                try:
                    yield _BACKGROUND.run(_anext(agen))
                except StopAsyncIteration:
                    return
        finally:
            _BACKGROUND.run(agen.aclose())


if sys.version_info >= (3, 11):

    async def _deadline(awaitable: Awaitable[T], seconds: float) -> T:
        """Bound a wait without a new task: `wait_for` wraps the call in a task, and the extra loop turns let
        litellm's post-call logging run before we return (about 1 ms per call, measured in docs/client.md)."""
        async with asyncio.timeout(seconds):
            return await awaitable

else:  # Python 3.10 has no asyncio.timeout

    async def _deadline(awaitable: Awaitable[T], seconds: float) -> T:
        return await asyncio.wait_for(awaitable, seconds)


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


async def _gather_or_cancel(coros: Sequence[Awaitable[T]]) -> list[T]:
    """Like `gather`, but the first failure cancels the rest (no orphaned calls still spending money)."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
