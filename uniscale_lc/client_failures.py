"""Error classification: what went wrong in one attempt, whether to retry it, and the typed error it becomes.

Every exception a provider call can raise (litellm's, the openai SDK's, ours, the network's) goes through
`_classify` here, so both transports give one `ModelCallError` hierarchy with redacted, bounded details and
one answer to "retry, try another arm, or blame the caller" (docs/client.md, "Retries").
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .client_parse import _MalformedResponse
from .client_retry import _DeadlinePassed, parse_retry_after
from .errors import (
    ModelCallError,
    ModelTimeoutError,
    RateLimitedError,
    RequestRejectedError,
)
from .redact import redact
from .transport_openai import MalformedStreamError, ResponseTooLargeError

_MAX_DETAIL_CHARS = 600


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
