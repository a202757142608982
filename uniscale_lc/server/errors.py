"""HTTP errors in OpenAI's JSON shape, and the mapping from the router's typed errors to status codes.

The caller's own mistakes (bad JSON, a bad field, an unknown model) are 400s that name the field and the
fix, and are refused before any arm runs, so they never teach the policy. Every arm failing is a 502: the
models behind the router failed, not the router and not the caller.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import AllArmsFailedError, ConfigError, FeedbackError, ModelCallError, StateError
from ..redact import redact

# "messages[2].content: got ..." -> param "messages[2].content"; our errors all start "field: ...".
_PARAM = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\[\]]*):\s")
_MAX_MESSAGE_CHARS = 2000


@dataclass(frozen=True)
class ApiError(Exception):
    """An error response: HTTP status and OpenAI's `{"error": {message, type, param, code}}` body."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None

    def __str__(self) -> str:
        return self.message

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": redact(self.message)[:_MAX_MESSAGE_CHARS],
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(param: str | None, message: str, code: str = "invalid_value") -> ApiError:
    """A 400 for the caller's mistake; `message` says what was wrong and how to fix it."""
    return ApiError(400, message, "invalid_request_error", param, code)


def param_of(message: str) -> str | None:
    """The field an error message names at its start (`"tools: no candidate ..."` -> `"tools"`)."""
    match = _PARAM.match(message)
    if match is None:
        return None
    field = match.group(1)
    # Router errors name the configuration object ("UniScaleChat.model"); the request field is the last part.
    return field.split(".", 1)[1] if field.startswith(("UniScaleChat.", "Router.")) else field


def _all_failed_message(error: AllArmsFailedError) -> str:
    attempts = "; ".join(
        f"{arm_id}: {type(cause).__name__}: {str(cause)[:200]}" for arm_id, cause in error.errors
    )
    return (
        f"every arm tried failed, so no model answered ({len(error.errors)} tried; {attempts}). "
        "The models behind the router are failing or unreachable: check their servers and keys, "
        "then retry"
    )


def from_exception(error: BaseException) -> ApiError:
    """The HTTP error for one of the router's exceptions (anything unexpected is a 500 without details)."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, AllArmsFailedError):
        return ApiError(502, _all_failed_message(error), "upstream_error", None, "all_arms_failed")
    if isinstance(error, ModelCallError):
        return ApiError(
            502, f"the model {error.model!r} failed: {error}", "upstream_error", None, "model_error"
        )
    if isinstance(error, StateError):
        return ApiError(
            500, f"the router's state could not be used: {error}", "server_error", None, "state_error"
        )
    if isinstance(error, FeedbackError):
        message = str(error)
        if "no pending decision" in message:
            return ApiError(404, message, "not_found_error", "decision_id", "decision_not_found")
        return bad_request(param_of(message.removeprefix("feedback.")), message)
    if isinstance(error, ConfigError):
        return bad_request(param_of(str(error)), str(error))
    return ApiError(
        500, "internal error in the uniscale server; see its log", "server_error", None, "internal_error"
    )
