"""Typed errors of uniscale-lc: each names the field, the bad value and the fix."""

from __future__ import annotations


class UniScaleError(Exception):
    """Base class of every error the library raises on purpose.

    A plain Exception (no LangChain base): the core and its non-LangChain front-ends must not import
    LangChain; chains catch it like any other exception.
    """


class ConfigError(UniScaleError, ValueError):
    """A configuration object or argument is invalid; the message says which field and how to fix it."""


class FeedbackError(UniScaleError, ValueError):
    """Feedback could not be applied: unknown key or an invalid score. Nothing learnt is lost."""


class StateError(UniScaleError, ValueError):
    """A saved state file is unreadable, corrupt, too large or from an incompatible version."""


class ModelCallError(UniScaleError):
    """A model call failed after its retries. `model` is the litellm model name; never carries an API key."""

    def __init__(self, message: str, *, model: str, retryable: bool = False, status_code: int | None = None):
        super().__init__(message)
        self.model = model
        self.retryable = retryable
        self.status_code = status_code


class ModelTimeoutError(ModelCallError):
    """A model call did not finish within its timeout."""


class RateLimitedError(ModelCallError):
    """The provider answered 429 (rate limited) on every retry."""


class RequestRejectedError(ModelCallError):
    """The provider refused the request itself (HTTP 400, 404, 413, 422): a caller's mistake, not the model's.

    Raised to the caller at once: no other arm is tried, and the arm is neither taught a failure nor counted
    toward its circuit breaker. `status_code` says which; the message quotes the provider's reason.
    """


class AllArmsFailedError(ModelCallError):
    """Every arm tried for one request failed; `errors` holds (arm_id, error) for each attempt."""

    def __init__(self, message: str, *, errors: list[tuple[str, BaseException]]):
        last = errors[-1][1] if errors else None
        super().__init__(
            message,
            model=getattr(last, "model", ""),
            retryable=False,
            status_code=getattr(last, "status_code", None),
        )
        self.errors = errors


def field_error(owner: str, field: str, value: object, fix: str) -> ConfigError:
    """Build the one error format used everywhere: `Owner.field: bad value; fix`."""
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ConfigError(f"{owner}.{field}: got {shown}; {fix}")
