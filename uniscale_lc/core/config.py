"""`RouterConfig`: the one definition of the router's configuration fields, and their validation.

`Router` is built from a `RouterConfig`; `UniScaleChat` inherits the same fields (a pydantic mixin), so
each field, its default and its description are written once. Validation runs when the router is built
and names the owner the caller actually constructed (`Router.cost_weight: ...` or
`UniScaleChat.cost_weight: ...`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ..arms import Arm, ArmSpace
from ..breaker import BreakerConfig
from ..client import ModelClient, RetryPolicy
from ..errors import ConfigError
from ..features import HashingFeaturizer
from ..feedback import DEFAULT_MAX_PENDING, DEFAULT_TTL_S
from ..model_spec import ModelSpec
from ..policy import LinUCB
from ..strategies.config import BestOfN, MajorityVote, Reflection, Single
from ..tags import MAX_TAG_BUCKETS

__all__ = [
    "SECRET_FIELDS",
    "RouterConfig",
    "check_load_signals",
    "check_numbers",
    "check_per_call_cost",
    "refuse_secrets",
    "resolve_arm_space",
    "resolve_client",
    "resolve_featurizer",
    "resolve_policy",
]

_STRATEGY_TYPES = (Single, BestOfN, MajorityVote, Reflection)
# Keys under other names than `api_key` are refused (with the fix), so no key hides in an unknown field.
SECRET_FIELDS = ("openai_api_key",)


class RouterConfig(BaseModel):
    """Everything a router is configured with; see docs/router.md and docs/chat_model.md."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    arms: ArmSpace | None = Field(default=None, description="the arm space; or give models (+ strategies)")
    models: list[ModelSpec] | None = Field(default=None, description="models; crossed with `strategies`")
    strategies: list[Any] | None = Field(default=None, description="strategies; default [Single()]")
    policy: Any = Field(default=None, description="a Policy; default LinUCB()")
    featurizer: Any = Field(default=None, description="a Featurizer; default HashingFeaturizer()")
    cost_weight: float = Field(default=0.2, description="quality given up for the most expensive arm")
    budget_usd_per_request: float | None = Field(
        default=None, description="target mean spend; a BudgetPacer then adapts cost_weight"
    )
    api_key: SecretStr | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description=(
            "key for every ModelSpec that names none (no api_key, no api_key_env); never serialised or logged"
        ),
    )
    state_path: str | None = Field(default=None, description="file for learnt state (autosaved)")
    autosave_interval_s: float = Field(
        default=1.0,
        description="with state_path: save in the background at most this often; 0 saves on every event",
    )
    feedback_fn: Callable[..., Any] | None = Field(
        default=None,
        description=(
            "fn(messages, answer) -> score in [0, 1] or None, for automatic feedback; the front-end's "
            "own types (Router: OpenAI message dicts and a Completion; UniScaleChat: BaseMessages and an AIMessage)"
        ),
    )
    side_observations: bool = Field(
        default=False,
        description=(
            "a vote's score also teaches the smaller votes (and Single) of its model whose answer its "
            "samples show was the same (docs/policy.md, 'Side observations'; off by default: it did not pay in "
            "the replay)"
        ),
    )
    tag_buckets: int = Field(
        default=0,
        description=(
            "context features for request tags (`tags=` per request: the app's feature, template or task "
            "type; docs/features.md, 'Request tags'); 0 = no tags. 64 suits up to a few dozen distinct tags"
        ),
    )
    max_fallbacks: int = Field(default=2, description="other arms tried after a failed one")
    breaker: BreakerConfig | None = Field(
        default_factory=BreakerConfig,
        description="per-model circuit breaker (docs/reliability.md); None turns it off",
    )
    temperature: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = Field(default=None, description="default stop sequences")
    timeout: float | None = Field(
        default=None, description="per-call timeout (s); overrides ModelSpec.timeout_s"
    )
    max_retries: int | None = Field(default=None, description="retries per call; default: the client's (2)")
    feedback_ttl_s: float = Field(default=DEFAULT_TTL_S, description="pending decisions expire after this")
    max_pending: int = Field(default=DEFAULT_MAX_PENDING, description="most pending decisions kept")
    client: Any = Field(default=None, exclude=True, description="a ModelClient; default: a new one")
    load_signals: Any = Field(
        default=None,
        exclude=True,
        description="serving.LoadSignals: live server load as context features and for the SLO gate",
    )
    slo_tpot_ms: float | None = Field(
        default=None,
        description="time-per-output-token SLO; arms on servers predicted to break it are skipped",
    )
    shared_state: str | None = Field(
        default=None,
        description=(
            "redis://HOST:PORT/DB[?namespace=NAME]: replicas on one Redis learn one policy "
            "(docs/scaling.md; needs the redis extra)"
        ),
    )


def refuse_secrets(fields: dict[str, Any], label: str) -> None:
    """A key only under `api_key` (a SecretStr) or named by `ModelSpec.api_key_env`; never elsewhere."""
    for secret_field in SECRET_FIELDS:
        if secret_field in fields:
            raise ConfigError(
                f"{label}.{secret_field}: not a field; pass the key as api_key=... (kept as a SecretStr), "
                "or give each ModelSpec the NAME of its environment variable, e.g. "
                "ModelSpec(..., api_key_env='OPENAI_API_KEY')"
            )


def _with_default_key(model: ModelSpec, key: SecretStr | None) -> ModelSpec:
    if key is None or model.api_key is not None or model.api_key_env:
        return model
    return model.model_copy(update={"api_key": key})


def resolve_arm_space(config: RouterConfig, label: str) -> ArmSpace:
    """The configured arm space: `arms` as given, or every model crossed with every strategy."""
    if config.arms is not None:
        if config.models is not None or config.strategies is not None:
            raise ConfigError(
                f"{label}.arms: give either arms=ArmSpace(...) or models=[...] (+ strategies), not both"
            )
        if config.api_key is None:
            return config.arms
        return ArmSpace(
            Arm(_with_default_key(arm.model, config.api_key), arm.strategy) for arm in config.arms
        )
    if not config.models:
        raise ConfigError(
            f"{label}.models: got no models; pass models=[ModelSpec(model='gpt-4o-mini'), ...] "
            "or arms=ArmSpace(...)"
        )
    strategies = config.strategies if config.strategies is not None else [Single()]
    for index, strategy in enumerate(strategies):
        if not isinstance(strategy, _STRATEGY_TYPES):
            raise ConfigError(
                f"{label}.strategies[{index}]: got {type(strategy).__name__}; use Single(), "
                "BestOfN(n=...), MajorityVote(n=...) or Reflection(rounds=...)"
            )
    models = [_with_default_key(model, config.api_key) for model in config.models]
    return ArmSpace.product(models, strategies)


def _check_durations(config: RouterConfig, label: str) -> None:
    if not (math.isfinite(config.autosave_interval_s) and config.autosave_interval_s >= 0):
        raise ConfigError(
            f"{label}.autosave_interval_s: got {config.autosave_interval_s!r}; use seconds >= 0 (0: every event)"
        )
    if config.slo_tpot_ms is not None and not (math.isfinite(config.slo_tpot_ms) and config.slo_tpot_ms > 0):
        raise ConfigError(f"{label}.slo_tpot_ms: got {config.slo_tpot_ms!r}; use a positive number of ms")
    if config.timeout is not None and not (math.isfinite(config.timeout) and 0 < config.timeout <= 3600):
        raise ConfigError(f"{label}.timeout: got {config.timeout!r}; use seconds in (0, 3600]")


def _check_cost(config: RouterConfig, label: str) -> None:
    if not (math.isfinite(config.cost_weight) and config.cost_weight >= 0):
        raise ConfigError(
            f"{label}.cost_weight: got {config.cost_weight!r}; use a number >= 0 (0.2 means the most "
            "expensive arm must buy 0.2 more quality)"
        )
    if config.budget_usd_per_request is not None and "cost_weight" in config.model_fields_set:
        raise ConfigError(
            f"{label}.budget_usd_per_request: give cost_weight or budget_usd_per_request, not both; "
            "with a budget the cost weight is adapted online"
        )


def check_per_call_cost(
    cost_weight: float | None, budget_usd_per_request: float | None, label: str
) -> None:
    """The per-call routing controls (`invoke(q, cost_weight=...)`): a caller's mistake names the option."""
    if cost_weight is not None and (
        isinstance(cost_weight, bool)
        or not isinstance(cost_weight, (int, float))
        or not (math.isfinite(cost_weight) and cost_weight >= 0)
    ):
        raise ConfigError(
            f"{label}.cost_weight: got {cost_weight!r} for this call; use a number >= 0 (0.2 means the most "
            "expensive arm must buy 0.2 more quality)"
        )
    if budget_usd_per_request is not None and (
        isinstance(budget_usd_per_request, bool)
        or not isinstance(budget_usd_per_request, (int, float))
        or not (math.isfinite(budget_usd_per_request) and budget_usd_per_request > 0)
    ):
        raise ConfigError(
            f"{label}.budget_usd_per_request: got {budget_usd_per_request!r} for this call; use USD > 0 "
            "(arms predicted to cost more are left out, the cheapest stays)"
        )


def _check_call_options(config: RouterConfig, label: str) -> None:
    if config.max_fallbacks < 0:
        raise ConfigError(f"{label}.max_fallbacks: got {config.max_fallbacks!r}; use an int >= 0")
    if config.max_retries is not None and config.max_retries < 0:
        raise ConfigError(f"{label}.max_retries: got {config.max_retries!r}; use an int >= 0")
    if config.temperature is not None and not (0.0 <= config.temperature <= 2.0):
        raise ConfigError(f"{label}.temperature: got {config.temperature!r}; use a value in [0, 2]")
    if config.max_tokens is not None and config.max_tokens < 1:
        raise ConfigError(f"{label}.max_tokens: got {config.max_tokens!r}; use an int >= 1")
    if config.feedback_fn is not None and not callable(config.feedback_fn):
        raise ConfigError(f"{label}.feedback_fn: must be callable as fn(messages, ai_message) -> score")


def _check_state_path(config: RouterConfig, label: str) -> None:
    if config.state_path is None:
        return
    config.state_path = str(config.state_path)
    if Path(config.state_path).is_dir():
        raise ConfigError(
            f"{label}.state_path: {config.state_path} is a directory; give a file such as "
            f"{Path(config.state_path) / 'uniscale.npz'}"
        )


def check_numbers(config: RouterConfig, label: str) -> None:
    """Every numeric and path field, in the order UniScaleChat always checked them."""
    _check_durations(config, label)
    _check_cost(config, label)
    if not 0 <= config.tag_buckets <= MAX_TAG_BUCKETS:
        raise ConfigError(
            f"{label}.tag_buckets: got {config.tag_buckets!r}; use 0 (no request tags) to {MAX_TAG_BUCKETS}, "
            "e.g. 64 for up to a few dozen distinct tags"
        )
    _check_call_options(config, label)
    _check_state_path(config, label)


def resolve_featurizer(config: RouterConfig, label: str) -> Any:
    featurizer = config.featurizer if config.featurizer is not None else HashingFeaturizer()
    if not (hasattr(featurizer, "transform") and hasattr(featurizer, "dim")):
        raise ConfigError(
            f"{label}.featurizer: got {type(config.featurizer).__name__}; pass an object with "
            "`dim` and `transform(text)`, e.g. HashingFeaturizer()"
        )
    return featurizer


def resolve_policy(config: RouterConfig, label: str) -> Any:
    policy = config.policy if config.policy is not None else LinUCB()
    for method in ("bind", "select", "update", "state_dict", "load_state_dict"):
        if not callable(getattr(policy, method, None)):
            raise ConfigError(
                f"{label}.policy: got {type(policy).__name__} without `{method}`; pass a "
                "Policy such as LinUCB()"
            )
    return policy


def check_load_signals(config: RouterConfig, label: str) -> int:
    """The number of load features the context gains (0 without load signals)."""
    if config.load_signals is not None and not callable(
        getattr(config.load_signals, "context_features", None)
    ):
        raise ConfigError(f"{label}.load_signals: pass a uniscale_lc.serving.LoadSignals (or leave it out)")
    if config.slo_tpot_ms is not None and config.load_signals is None:
        raise ConfigError(
            f"{label}.slo_tpot_ms: the SLO gate needs live load; pass "
            "load_signals=LoadSignals({api_base: ServerMonitor(url)}) too"
        )
    return int(config.load_signals.feature_dim) if config.load_signals is not None else 0


def resolve_client(config: RouterConfig, label: str) -> Any:
    if config.client is not None:
        if not callable(getattr(config.client, "acomplete", None)):
            raise ConfigError(f"{label}.client: pass a ModelClient (or leave it out)")
        return config.client
    retry = RetryPolicy(max_attempts=config.max_retries + 1) if config.max_retries is not None else None
    return ModelClient(retry=retry)
