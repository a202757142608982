"""`UniScaleChat`: a LangChain chat model that picks, per request, which (model x strategy x budget) to run.

One request: featurise the conversation (the last human message), predict each candidate arm's cost,
let the policy pick the arm with the best `quality + bonus - cost penalty`, run its strategy through
the model client, and return an `AIMessage` whose `response_metadata["uniscale"]` records the decision.
The decision waits in the feedback store until the caller scores it (`feedback`), or is scored at once
by `feedback_fn`. A failing arm falls back to the next best one, and the failure is taught to the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    convert_to_openai_messages,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import ToolCallChunk
from langchain_core.output_parsers.openai_tools import make_invalid_tool_call, parse_tool_call
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError

from . import client as client_module
from .arms import Arm, ArmSpace
from .autosave import Autosaver
from .breaker import BreakerConfig, CircuitBreakers
from .client import ModelClient, RetryPolicy, StreamDelta, empty_usage
from .costs import BudgetPacer, CostModel, cost_penalty, estimate_tokens, reward_from
from .errors import AllArmsFailedError, ConfigError, FeedbackError, ModelCallError, StateError
from .features import HashingFeaturizer
from .feedback import (
    DEFAULT_MAX_PENDING,
    DEFAULT_TTL_S,
    REQUEST_ID_METADATA_KEY,
    FeedbackResult,
    FeedbackStore,
    PendingDecision,
    validate_score,
)
from .model_spec import ModelSpec
from .policy import Decision, LinUCB
from .serving.load import slo_gate
from .store import load_state, save_state
from .strategies.config import BestOfN, MajorityVote, Reflection, Single
from .strategies.execute import CallOptions, StrategyResult, add_usage, run_strategy, stream_single

__all__ = ["UniScaleChat"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_STRATEGY_TYPES = (Single, BestOfN, MajorityVote, Reflection)
# Per-call keyword arguments the chat model consumes itself (the rest go to the provider as `extra`).
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
    }
)
_STATE_KEYS = ("policy", "cost_model", "feedback", "pacer", "stats")
_TOP_SCORES = 5


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run on the client's shared background loop, so a sync call never runs on (or blocks) the caller's loop."""
    return client_module.run_sync(coro)


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()


def _usage_metadata(usage: dict[str, Any]) -> UsageMetadata:
    """LangChain's usage dict (plain ints) from the strategy's usage, summed over every call."""
    input_tokens, output_tokens = int(usage["input_tokens"]), int(usage["output_tokens"])
    plain = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }
    return cast(UsageMetadata, plain)


def _text_of(message: BaseMessage) -> str:
    text = message.text
    return text if isinstance(text, str) else str(text)


def featurized_text(messages: Sequence[BaseMessage]) -> str:
    """The text the featurizer sees: the last human message, or every message's text if there is none.

    Why the last human message: it is what the request asks; long histories would otherwise swamp the
    features and make the same question look different in every conversation.
    """
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            text = _text_of(message)
            if text.strip():
                return text
    return "\n".join(_text_of(message) for message in messages)


def _run_id_from_message_id(message_id: str | None) -> str | None:
    """LangChain names a run's message `lc_run--<run id>`; recover the run id from it."""
    if not message_id or not message_id.startswith("lc_run--"):
        return None
    candidate = message_id[len("lc_run--") : len("lc_run--") + 36]
    try:
        return str(uuid.UUID(candidate))
    except ValueError:
        return None


def _tool_choice(tool_choice: Any, tool_names: Sequence[str]) -> str | dict[str, Any] | None:
    """LangChain's tool_choice values in OpenAI's form ('any' and True mean 'required')."""
    if tool_choice is None or tool_choice is False:
        return None
    if tool_choice is True or tool_choice == "any":
        return "required"
    if isinstance(tool_choice, str):
        if tool_choice in ("auto", "none", "required"):
            return tool_choice
        if tool_choice not in tool_names:
            raise ConfigError(
                f"UniScaleChat.bind_tools.tool_choice: got {tool_choice!r}, which is not a bound tool; "
                f"use one of {list(tool_names)}, 'auto', 'any', 'none' or 'required'"
            )
        return {"type": "function", "function": {"name": tool_choice}}
    if isinstance(tool_choice, dict):
        return tool_choice
    raise ConfigError(
        f"UniScaleChat.bind_tools.tool_choice: got {tool_choice!r}; use a tool name, 'auto', 'any', "
        "'none', 'required', True or an OpenAI tool_choice dict"
    )


@dataclasses.dataclass
class _Request:
    """Everything decided before the first model call of one request."""

    x: np.ndarray
    candidates: tuple[str, ...]
    penalties: dict[str, float]
    predicted_cost: dict[str, float]
    reference_cost_usd: float
    cost_weight: float
    prompt_tokens: int
    openai_messages: list[dict[str, Any]]
    options: CallOptions
    request_id: str | None
    slo_gate: dict[str, Any] | None = None
    breaker_blocked: list[str] = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.perf_counter)


@dataclasses.dataclass
class _Outcome:
    """The arm that answered, its decision and result, and the arms that failed before it."""

    arm: Arm
    decision: Decision
    result: StrategyResult
    failures: list[tuple[str, ModelCallError]]


class UniScaleChat(BaseChatModel):
    """A chat model that learns online which arm (model x test-time-scaling strategy) to run per request.

    Configure with `arms=ArmSpace(...)`, or `models=[ModelSpec, ...]` and `strategies=[...]` (every model
    with every strategy; default `[Single()]`). See docs/chat_model.md.
    """

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
    state_path: str | None = Field(default=None, description="file for learnt state (autosaved)")
    autosave_interval_s: float = Field(
        default=1.0,
        description="with state_path: save in the background at most this often; 0 saves on every event",
    )
    feedback_fn: Callable[..., Any] | None = Field(
        default=None,
        description="fn(messages, ai_message) -> score in [0, 1] or None, for automatic feedback",
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
    streaming: bool = Field(default=False, description="stream by default (LangChain convention)")
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

    _arm_space: ArmSpace = PrivateAttr()
    _policy: Any = PrivateAttr()
    _featurizer: Any = PrivateAttr()
    _cost_model: CostModel = PrivateAttr()
    _pacer: BudgetPacer | None = PrivateAttr(default=None)
    _feedback: FeedbackStore = PrivateAttr()
    _client: ModelClient = PrivateAttr()
    _lock: Any = PrivateAttr(default_factory=threading.RLock)
    _save_lock: Any = PrivateAttr(default_factory=threading.Lock)
    # Held from taking a pending decision to recording it as scored, so that a duplicate arriving in that
    # window (a retry from another thread) sees the first result instead of "no pending decision".
    _feedback_lock: Any = PrivateAttr(default_factory=threading.Lock)
    _stats: dict[str, Any] = PrivateAttr(default_factory=dict)
    _specs: dict[str, ModelSpec] = PrivateAttr(default_factory=dict)
    _load_report: list[str] = PrivateAttr(default_factory=list)
    _autosaver: Autosaver | None = PrivateAttr(default=None)
    _breakers: CircuitBreakers | None = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        for secret_field in ("api_key", "openai_api_key"):
            if secret_field in data:
                raise ConfigError(
                    f"UniScaleChat.{secret_field}: keys are never held by the chat model; give each "
                    "ModelSpec the NAME of its environment variable, e.g. ModelSpec(..., api_key_env='OPENAI_API_KEY')"
                )
        try:
            super().__init__(**data)
        except ValidationError as error:
            # pydantic wraps what model_post_init raises; hand the caller our ConfigError itself.
            for detail in error.errors():
                cause = (detail.get("ctx") or {}).get("error")
                if isinstance(cause, (ConfigError, StateError)):
                    raise cause from None
            raise

    # ------------------------------------------------------------------ construction

    def model_post_init(self, context: Any, /) -> None:
        """Validate the configuration and build the learning parts; errors name the field and the fix."""
        super().model_post_init(context)
        self._arm_space = self._build_arm_space()
        self._check_numbers()
        self._featurizer = self.featurizer if self.featurizer is not None else HashingFeaturizer()
        if not (hasattr(self._featurizer, "transform") and hasattr(self._featurizer, "dim")):
            raise ConfigError(
                f"UniScaleChat.featurizer: got {type(self.featurizer).__name__}; pass an object with "
                "`dim` and `transform(text)`, e.g. HashingFeaturizer()"
            )
        self._policy = self.policy if self.policy is not None else LinUCB()
        for method in ("bind", "select", "update", "state_dict", "load_state_dict"):
            if not callable(getattr(self._policy, method, None)):
                raise ConfigError(
                    f"UniScaleChat.policy: got {type(self._policy).__name__} without `{method}`; pass a "
                    "Policy such as LinUCB()"
                )
        if self.load_signals is not None and not callable(
            getattr(self.load_signals, "context_features", None)
        ):
            raise ConfigError(
                "UniScaleChat.load_signals: pass a uniscale_lc.serving.LoadSignals (or leave it out)"
            )
        if self.slo_tpot_ms is not None and self.load_signals is None:
            raise ConfigError(
                "UniScaleChat.slo_tpot_ms: the SLO gate needs live load; pass "
                "load_signals=LoadSignals({api_base: ServerMonitor(url)}) too"
            )
        load_dim = int(self.load_signals.feature_dim) if self.load_signals is not None else 0
        self._policy.bind(self._arm_space, int(self._featurizer.dim) + load_dim)
        self._cost_model = CostModel(self._arm_space)
        self._pacer = (
            BudgetPacer(self.budget_usd_per_request) if self.budget_usd_per_request is not None else None
        )
        self._feedback = FeedbackStore(ttl_s=self.feedback_ttl_s, max_pending=self.max_pending)
        self._breakers = CircuitBreakers(self.breaker) if self.breaker is not None else None
        if self.client is not None:
            if not callable(getattr(self.client, "acomplete", None)):
                raise ConfigError("UniScaleChat.client: pass a ModelClient (or leave it out)")
            self._client = self.client
        else:
            retry = RetryPolicy(max_attempts=self.max_retries + 1) if self.max_retries is not None else None
            self._client = ModelClient(retry=retry)
        self._stats = {"requests": 0, "failed_requests": 0, "arms": {}}
        if self.state_path is not None and Path(self.state_path).exists():
            self._load()
        if self.state_path is not None:
            self._autosaver = Autosaver(self.save, self.autosave_interval_s)

    def _build_arm_space(self) -> ArmSpace:
        if self.arms is not None:
            if self.models is not None or self.strategies is not None:
                raise ConfigError(
                    "UniScaleChat.arms: give either arms=ArmSpace(...) or models=[...] (+ strategies), not both"
                )
            return self.arms
        if not self.models:
            raise ConfigError(
                "UniScaleChat.models: got no models; pass models=[ModelSpec(model='gpt-4o-mini'), ...] "
                "or arms=ArmSpace(...)"
            )
        strategies = self.strategies if self.strategies is not None else [Single()]
        for index, strategy in enumerate(strategies):
            if not isinstance(strategy, _STRATEGY_TYPES):
                raise ConfigError(
                    f"UniScaleChat.strategies[{index}]: got {type(strategy).__name__}; use Single(), "
                    "BestOfN(n=...), MajorityVote(n=...) or Reflection(rounds=...)"
                )
        return ArmSpace.product(self.models, strategies)

    def _check_numbers(self) -> None:
        if not (math.isfinite(self.autosave_interval_s) and self.autosave_interval_s >= 0):
            raise ConfigError(
                f"UniScaleChat.autosave_interval_s: got {self.autosave_interval_s!r}; use seconds >= 0 (0: every event)"
            )
        if self.slo_tpot_ms is not None and not (math.isfinite(self.slo_tpot_ms) and self.slo_tpot_ms > 0):
            raise ConfigError(
                f"UniScaleChat.slo_tpot_ms: got {self.slo_tpot_ms!r}; use a positive number of ms"
            )
        if not (math.isfinite(self.cost_weight) and self.cost_weight >= 0):
            raise ConfigError(
                f"UniScaleChat.cost_weight: got {self.cost_weight!r}; use a number >= 0 (0.2 means the most "
                "expensive arm must buy 0.2 more quality)"
            )
        if self.budget_usd_per_request is not None and "cost_weight" in self.model_fields_set:
            raise ConfigError(
                "UniScaleChat.budget_usd_per_request: give cost_weight or budget_usd_per_request, not both; "
                "with a budget the cost weight is adapted online"
            )
        if self.max_fallbacks < 0:
            raise ConfigError(f"UniScaleChat.max_fallbacks: got {self.max_fallbacks!r}; use an int >= 0")
        if self.timeout is not None and not (math.isfinite(self.timeout) and 0 < self.timeout <= 3600):
            raise ConfigError(f"UniScaleChat.timeout: got {self.timeout!r}; use seconds in (0, 3600]")
        if self.max_retries is not None and self.max_retries < 0:
            raise ConfigError(f"UniScaleChat.max_retries: got {self.max_retries!r}; use an int >= 0")
        if self.temperature is not None and not (0.0 <= self.temperature <= 2.0):
            raise ConfigError(f"UniScaleChat.temperature: got {self.temperature!r}; use a value in [0, 2]")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"UniScaleChat.max_tokens: got {self.max_tokens!r}; use an int >= 1")
        if self.feedback_fn is not None and not callable(self.feedback_fn):
            raise ConfigError(
                "UniScaleChat.feedback_fn: must be callable as fn(messages, ai_message) -> score"
            )
        if self.state_path is not None:
            self.state_path = str(self.state_path)
            if Path(self.state_path).is_dir():
                raise ConfigError(
                    f"UniScaleChat.state_path: {self.state_path} is a directory; give a file such as "
                    f"{Path(self.state_path) / 'uniscale.npz'}"
                )

    # ------------------------------------------------------------------ LangChain plumbing

    @property
    def _llm_type(self) -> str:
        return "uniscale"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "arms": list(self._arm_space.ids),
            "policy": type(self._policy).__name__,
            "cost_weight": self.cost_weight,
            "budget_usd_per_request": self.budget_usd_per_request,
            "max_fallbacks": self.max_fallbacks,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """Tracing parameters; the model actually run is per response (response_metadata['model_name'])."""
        params = LangSmithParams(ls_provider="uniscale", ls_model_type="chat")
        model = kwargs.get("model")
        params["ls_model_name"] = model if isinstance(model, str) else "uniscale"
        temperature = kwargs.get("temperature", self.temperature)
        if isinstance(temperature, (int, float)):
            params["ls_temperature"] = float(temperature)
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if isinstance(max_tokens, int):
            params["ls_max_tokens"] = max_tokens
        stops = stop or self.stop
        if stops:
            params["ls_stop"] = list(stops)
        return params

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (converted to OpenAI format). Tools restrict the candidates to Single arms on models
        with `supports_tools=True`: a vote or a judge over tool calls is not defined."""
        formatted = [convert_to_openai_tool(tool) for tool in tools]
        if not self._tool_arms(self._arm_space.ids):
            raise ConfigError(
                "UniScaleChat.bind_tools: no arm can take tools; tools need a Single() strategy on a "
                "ModelSpec with supports_tools=True"
            )
        names = [tool["function"]["name"] for tool in formatted]
        choice = _tool_choice(tool_choice, names)
        if choice is not None:
            kwargs["tool_choice"] = choice
        return super().bind(tools=formatted, **kwargs)

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        # `_stream` gets no run manager in langchain-core's stream(), so pass the request id explicitly.
        return super().stream(input, config, stop=stop, **self._with_request_id(config, kwargs))

    def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        return super().astream(input, config, stop=stop, **self._with_request_id(config, kwargs))

    @staticmethod
    def _with_request_id(config: RunnableConfig | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        metadata = (config or {}).get("metadata") or {}
        request_id = metadata.get(REQUEST_ID_METADATA_KEY)
        if request_id is not None and REQUEST_ID_METADATA_KEY not in kwargs:
            return {**kwargs, REQUEST_ID_METADATA_KEY: str(request_id)}
        return kwargs

    # ------------------------------------------------------------------ generation

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        run_id, request_id = self._run_keys(run_manager, kwargs)
        return _run_sync(self._agenerate_core(messages, stop, kwargs, run_id, request_id))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        run_id, request_id = self._run_keys(run_manager, kwargs)
        return await self._agenerate_core(messages, stop, kwargs, run_id, request_id)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        run_id, request_id = self._run_keys(run_manager, kwargs)
        agen = self._astream_core(messages, stop, kwargs, run_id, request_id)
        try:
            while True:
                try:
                    chunk = _run_sync(_anext(agen))
                except StopAsyncIteration:
                    return
                if run_manager is not None:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        finally:
            with contextlib.suppress(Exception):
                _run_sync(agen.aclose())

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        run_id, request_id = self._run_keys(run_manager, kwargs)
        async for chunk in self._astream_core(messages, stop, kwargs, run_id, request_id):
            if run_manager is not None:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    @staticmethod
    def _run_keys(run_manager: Any, kwargs: dict[str, Any]) -> tuple[str | None, str | None]:
        run_id = str(run_manager.run_id) if run_manager is not None else None
        request_id = kwargs.pop(REQUEST_ID_METADATA_KEY, None)
        if request_id is None and run_manager is not None:
            request_id = (getattr(run_manager, "metadata", None) or {}).get(REQUEST_ID_METADATA_KEY)
        return run_id, None if request_id is None else str(request_id)

    # ------------------------------------------------------------------ the request path

    def _tool_arms(self, arm_ids: Sequence[str]) -> list[str]:
        return [
            arm_id
            for arm_id in arm_ids
            if (arm := self._arm_space.get(arm_id)) is not None
            and arm.model.supports_tools
            and isinstance(arm.strategy, Single)
        ]

    def _candidates(self, tools: bool, model: str | None) -> tuple[str, ...]:
        ids: list[str] = list(self._arm_space.ids)
        if model is not None:
            ids = [
                arm_id
                for arm_id in ids
                if model in (self._arm_space[arm_id].model.model, self._arm_space[arm_id].model.display_name)
            ]
            if not ids:
                known = sorted({m.display_name for m in self._arm_space.models})
                raise ConfigError(
                    f"model: got {model!r}, which no arm runs; use one of {known} or leave it out"
                )
        if tools:
            ids = self._tool_arms(ids)
            if not ids:
                raise ConfigError(
                    "tools: no candidate arm can take tools; tools need a Single() strategy on a ModelSpec "
                    "with supports_tools=True"
                )
        return tuple(ids)

    def _cost_weight_now(self) -> float:
        return self._pacer.cost_weight if self._pacer is not None else self.cost_weight

    def _prepare(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        request_id: str | None,
    ) -> _Request:
        if not messages:
            # The caller's mistake: refuse it before any arm is called (and so before any arm is penalised).
            raise ConfigError(
                "messages: got an empty list; pass at least one message, e.g. chat.invoke('Hello')"
            )
        tools = kwargs.get("tools") or None
        model = kwargs.get("model")
        candidates = self._candidates(bool(tools), model if isinstance(model, str) else None)
        x = self._context(messages)
        gate_record: dict[str, Any] | None = None
        if self.load_signals is not None:
            slo = kwargs.get("slo_tpot_ms", self.slo_tpot_ms)
            if slo is not None:
                candidates, gate_record = self._slo_gate(candidates, float(slo))
        blocked: list[str] = []
        if self._breakers is not None and self._breakers.any_open():
            candidates, blocked = self._breakers.filter(
                candidates, {arm_id: self._arm_space[arm_id].model.display_name for arm_id in candidates}
            )
        openai_messages: list[dict[str, Any]] = convert_to_openai_messages(messages)
        prompt_tokens = estimate_tokens("\n".join(_text_of(m) for m in messages))
        prediction = self._cost_model.predict(prompt_tokens, candidates)
        weight = self._cost_weight_now()
        penalty, reference = cost_penalty(prediction.cost_usd, weight)
        extra = {key: value for key, value in kwargs.items() if key not in _OWN_KWARGS and value is not None}
        options = CallOptions(
            temperature=kwargs.get("temperature", self.temperature),
            max_tokens=kwargs.get("max_tokens", self.max_tokens),
            stop=list(stop) if stop else (list(self.stop) if self.stop else None),
            tools=tools,
            tool_choice=kwargs.get("tool_choice") if tools else None,
            extra=extra or None,
        )
        return _Request(
            x=x,
            candidates=candidates,
            penalties={arm_id: float(value) for arm_id, value in zip(candidates, penalty, strict=True)},
            predicted_cost={
                arm_id: float(value) for arm_id, value in zip(candidates, prediction.cost_usd, strict=True)
            },
            reference_cost_usd=reference,
            cost_weight=weight,
            prompt_tokens=prompt_tokens,
            openai_messages=openai_messages,
            options=options,
            request_id=request_id,
            slo_gate=gate_record,
            breaker_blocked=blocked,
        )

    def _context(self, messages: Sequence[BaseMessage]) -> np.ndarray:
        """The policy's context: prompt features, then live server load when load_signals is set."""
        x = np.asarray(self._featurizer.transform(featurized_text(messages)), dtype=np.float64)
        if self.load_signals is None:
            return x
        return np.concatenate([x, np.asarray(self.load_signals.context_features(), dtype=np.float64)])

    def _slo_gate(
        self, candidates: tuple[str, ...], slo_tpot_ms: float
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        """Drop arms whose server is predicted to break the TPOT SLO (never all of them)."""
        predicted = self.load_signals.predicted_tpot_by_api_base()
        api_bases = {arm_id: self._arm_space[arm_id].model.api_base for arm_id in candidates}
        allowed, gated = slo_gate(api_bases, predicted, slo_tpot_ms)
        record = {
            "slo_tpot_ms": slo_tpot_ms,
            "acted": bool(gated),
            "gated_arms": list(gated),
            "predicted_tpot_ms": {
                base: (None if value is None else float(value))
                for base, value in predicted.items()
                if value is None or math.isfinite(value)
            },
        }
        return tuple(allowed), record

    def _spec(self, arm: Arm) -> ModelSpec:
        if self.timeout is None:
            return arm.model
        spec = self._specs.get(arm.model.display_name)
        if spec is None:
            spec = self._specs[arm.model.display_name] = arm.model.model_copy(
                update={"timeout_s": self.timeout}
            )
        return spec

    def _select(self, request: _Request, remaining: Sequence[str]) -> tuple[Decision, Arm]:
        decision = self._policy.select(request.x, list(remaining), request.penalties)
        return decision, self._arm_space[decision.arm_id]

    def _arm_stats(self, arm_id: str) -> dict[str, Any]:
        return self._stats["arms"].setdefault(
            arm_id,
            {
                "pulls": 0,
                "failures": 0,
                "feedback": 0,
                "quality_sum": 0.0,
                "reward_sum": 0.0,
                "cost_usd": 0.0,
            },
        )

    def _learn_failure(
        self, request: _Request, decision: Decision, arm: Arm, error: ModelCallError, failures: list[Any]
    ) -> list[str]:
        """Teach the policy that this arm failed (quality 0) and return the arms still worth trying."""
        logger.warning("uniscale: arm %s failed (%s); falling back", arm.id, error)
        self._policy.update(decision, 0.0)
        if self._breakers is not None and self._breakers.record_failure(arm.model.display_name):
            logger.warning("uniscale: circuit breaker opened for model %s", arm.model.display_name)
        with self._lock:
            self._arm_stats(arm.id)["failures"] += 1
        self._autosave()
        failures.append((arm.id, error))
        tried = {arm_id for arm_id, _ in failures}
        remaining = [arm_id for arm_id in request.candidates if arm_id not in tried]
        if not remaining or len(failures) > self.max_fallbacks:
            with self._lock:
                self._stats["failed_requests"] += 1
            raise AllArmsFailedError(
                f"all {len(failures)} arms tried failed ({', '.join(a for a, _ in failures)}); last error: {error}",
                errors=list(failures),
            ) from error
        return remaining

    async def _run_with_fallbacks(self, request: _Request) -> _Outcome:
        remaining: list[str] = list(request.candidates)
        failures: list[tuple[str, ModelCallError]] = []
        while True:
            decision, arm = self._select(request, remaining)
            try:
                result = await run_strategy(
                    self._client, self._spec(arm), arm.strategy, request.openai_messages, request.options
                )
            except ModelCallError as error:
                remaining = self._learn_failure(request, decision, arm, error, failures)
                continue
            return _Outcome(arm, decision, result, failures)

    async def _agenerate_core(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        run_id: str | None,
        request_id: str | None,
    ) -> ChatResult:
        request = self._prepare(messages, stop, kwargs, request_id)
        outcome = await self._run_with_fallbacks(request)
        pending = self._record(request, outcome, run_id)
        record = self._decision_record(request, outcome, pending)
        tool_calls, invalid_tool_calls = [], []
        for raw in outcome.result.tool_calls or []:
            try:
                parsed = parse_tool_call(raw, return_id=True)
            except Exception as error:  # the model produced arguments that are not JSON
                invalid_tool_calls.append(make_invalid_tool_call(raw, str(error)))
                continue
            if parsed is not None:
                tool_calls.append(parsed)
        usage = outcome.result.usage
        message = AIMessage(
            content=outcome.result.text or "",
            tool_calls=tool_calls,
            invalid_tool_calls=invalid_tool_calls,
            usage_metadata=_usage_metadata(usage),
            response_metadata={
                "model_name": outcome.arm.model.model,
                "finish_reason": outcome.result.finish_reason,
                "uniscale": record,
            },
        )
        await self._after_answer(messages, message, pending)
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"model_name": outcome.arm.model.model, "uniscale": record},
        )

    async def _astream_core(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        kwargs: dict[str, Any],
        run_id: str | None,
        request_id: str | None,
    ) -> AsyncGenerator[ChatGenerationChunk, None]:
        """Token chunks for Single arms (fallback only before the first token), one chunk otherwise;
        then a last chunk with usage and the decision record."""
        request = self._prepare(messages, stop, kwargs, request_id)
        remaining: list[str] = list(request.candidates)
        failures: list[tuple[str, ModelCallError]] = []
        first_chunk: ChatGenerationChunk | None = None
        while True:
            decision, arm = self._select(request, remaining)
            if not isinstance(arm.strategy, Single):
                try:
                    result = await run_strategy(
                        self._client, self._spec(arm), arm.strategy, request.openai_messages, request.options
                    )
                except ModelCallError as error:
                    remaining = self._learn_failure(request, decision, arm, error, failures)
                    continue
                first_chunk = ChatGenerationChunk(
                    message=AIMessageChunk(content=result.text or "", tool_call_chunks=[])
                )
                yield first_chunk
                break
            texts: list[str] = []
            raw_calls: list[dict[str, Any]] = []
            usage: dict[str, Any] | None = None
            finish_reason: str | None = None
            started = time.perf_counter()
            try:
                async for delta in stream_single(
                    self._client, self._spec(arm), request.openai_messages, request.options
                ):
                    if delta.usage is not None:
                        usage = delta.usage
                        continue
                    finish_reason = delta.finish_reason or finish_reason
                    chunk = self._delta_chunk(delta, raw_calls)
                    if chunk is None:
                        continue
                    texts.append(delta.text)
                    if first_chunk is None:
                        first_chunk = chunk
                    yield chunk
            except ModelCallError as error:
                if first_chunk is not None:  # tokens already reached the caller: no clean fallback
                    self._policy.update(decision, 0.0)
                    with self._lock:
                        self._arm_stats(arm.id)["failures"] += 1
                        self._stats["failed_requests"] += 1
                    raise
                remaining = self._learn_failure(request, decision, arm, error, failures)
                continue
            total = add_usage(empty_usage(), usage or {})
            total["latency_s"] = time.perf_counter() - started
            result = StrategyResult(
                text="".join(texts),
                model=arm.model.model,
                kind="single",
                tool_calls=raw_calls or None,
                finish_reason=finish_reason,
                usage=total,
                details={"samples": 1, "streamed": True},
            )
            break
        outcome = _Outcome(arm, decision, result, failures)
        if run_id is None and first_chunk is not None:
            # langchain-core stamps `lc_run--<run id>` on the first chunk once we have yielded it.
            run_id = _run_id_from_message_id(first_chunk.message.id)
        pending = self._record(request, outcome, run_id)
        record = self._decision_record(request, outcome, pending)
        usage_total = outcome.result.usage
        last = AIMessageChunk(
            content="",
            usage_metadata=_usage_metadata(usage_total),
            response_metadata={
                "model_name": arm.model.model,
                "finish_reason": outcome.result.finish_reason,
                "uniscale": record,
            },
            chunk_position="last",
        )
        await self._after_answer(messages, None, pending, streamed=result)
        yield ChatGenerationChunk(message=last)

    @staticmethod
    def _delta_chunk(delta: StreamDelta, raw_calls: list[dict[str, Any]]) -> ChatGenerationChunk | None:
        calls: list[ToolCallChunk] = []
        for raw in delta.tool_calls or []:
            raw_calls.append(raw)
            function = raw.get("function") or {}
            calls.append(
                ToolCallChunk(
                    name=function.get("name"),
                    args=function.get("arguments"),
                    id=raw.get("id"),
                    index=raw.get("index"),
                    type="tool_call_chunk",
                )
            )
        if not delta.text and not calls:
            return None
        return ChatGenerationChunk(message=AIMessageChunk(content=delta.text, tool_call_chunks=calls))

    # ------------------------------------------------------------------ bookkeeping

    def _record(self, request: _Request, outcome: _Outcome, run_id: str | None) -> PendingDecision:
        """Learn the cost, pace the budget, count the pull, and keep the decision for feedback."""
        if self._breakers is not None:
            self._breakers.record_success(outcome.arm.model.display_name)
        usage = outcome.result.usage
        cost = float(usage["cost_usd"])
        self._cost_model.observe(
            outcome.arm.id,
            request.prompt_tokens,
            input_tokens=float(usage["input_tokens"]),
            output_tokens=float(usage["output_tokens"]),
            calls=float(usage["calls"]),
            latency_s=float(usage["latency_s"]),
        )
        with self._lock:
            if self._pacer is not None:
                self._pacer.observe(cost)
            self._stats["requests"] += 1
            stats = self._arm_stats(outcome.arm.id)
            stats["pulls"] += 1
            stats["cost_usd"] += cost
        pending = PendingDecision(
            decision=outcome.decision,
            cost_usd=cost,
            reference_cost_usd=request.reference_cost_usd,
            cost_weight=request.cost_weight,
            run_id=run_id,
            request_id=request.request_id,
        )
        dropped = self._feedback.add(pending)
        if dropped:
            logger.info("uniscale: %d pending decisions expired or were evicted unscored", len(dropped))
        return pending

    def _decision_record(
        self, request: _Request, outcome: _Outcome, pending: PendingDecision
    ) -> dict[str, Any]:
        """The plain-data record put in response_metadata['uniscale']."""
        arm, result = outcome.arm, outcome.result
        usage = result.usage
        return {
            "decision_id": pending.decision_id,
            "arm": arm.id,
            "model": arm.model.model,
            "strategy": arm.strategy.label,
            "kind": arm.strategy.kind,
            "n": arm.strategy.budget,
            "cost_usd": float(usage["cost_usd"]),
            "latency_s": time.perf_counter() - request.started,
            "input_tokens": int(usage["input_tokens"]),
            "output_tokens": int(usage["output_tokens"]),
            "calls": int(usage["calls"]),
            "scores": [score.to_dict() for score in outcome.decision.scores[:_TOP_SCORES]],
            "predicted_cost_usd": request.predicted_cost.get(arm.id, 0.0),
            "reference_cost_usd": request.reference_cost_usd,
            "cost_weight": request.cost_weight,
            "fallbacks": [
                {"arm": arm_id, "error": type(error).__name__, "message": str(error)[:300]}
                for arm_id, error in outcome.failures
            ],
            "details": result.details,
            "run_id": pending.run_id,
            "request_id": pending.request_id,
            "policy": outcome.decision.policy,
            "slo_gate": request.slo_gate,
            "breaker_blocked": request.breaker_blocked,
        }

    async def _after_answer(
        self,
        messages: list[BaseMessage],
        message: AIMessage | None,
        pending: PendingDecision,
        streamed: StrategyResult | None = None,
    ) -> None:
        """Automatic feedback (if configured), then autosave off the event loop."""
        if self.feedback_fn is not None:
            if message is None and streamed is not None:
                message = AIMessage(content=streamed.text, response_metadata={"model_name": streamed.model})
            try:
                score = self.feedback_fn(messages, message)
                if score is not None:
                    self._apply_feedback(pending.decision_id, score)
            except FeedbackError as error:
                logger.warning(
                    "uniscale: feedback_fn gave an unusable score (%s); the decision stays pending", error
                )
            except Exception:
                logger.exception("uniscale: feedback_fn raised; the decision stays pending")
        await self._aautosave()

    # ------------------------------------------------------------------ feedback

    def _apply_feedback(self, key: Any, score: Any) -> FeedbackResult:
        if isinstance(key, AIMessage):
            key = ((key.response_metadata or {}).get("uniscale") or {}).get("decision_id") or key.id
        quality = validate_score(score)
        with self._feedback_lock:
            taken = self._feedback.take(key)
            if isinstance(taken, FeedbackResult):
                return dataclasses.replace(taken, duplicate=True)
            reward = reward_from(quality, taken.cost_usd, taken.reference_cost_usd, taken.cost_weight)
            try:
                self._policy.update(taken.decision, quality)
            except Exception:
                self._feedback.restore(taken)
                raise
            result = FeedbackResult(taken.decision_id, taken.arm_id, quality, reward)
            self._feedback.mark_done(taken, result)
        with self._lock:
            stats = self._arm_stats(taken.arm_id)
            stats["feedback"] += 1
            stats["quality_sum"] += quality
            stats["reward_sum"] += reward
        return result

    def feedback(self, key: Any, score: Any) -> FeedbackResult:
        """Score a past answer: `score` is its quality in [0, 1]; the policy learns it.

        `key` is the decision_id, the AIMessage (or its id / the run id), or the `uniscale_request_id`
        given in config metadata. Repeated feedback on the same decision is a no-op returning the first
        result (`duplicate=True`). Raises `FeedbackError` for an unknown key or an invalid score.
        """
        result = self._apply_feedback(key, score)
        if not result.duplicate:
            self._autosave()
        return result

    async def afeedback(self, key: Any, score: Any) -> FeedbackResult:
        """Async twin of `feedback`: the state file is written in a worker thread."""
        result = self._apply_feedback(key, score)
        if not result.duplicate:
            await self._aautosave()
        return result

    @property
    def pending_decisions(self) -> FeedbackStore:
        """The store of decisions waiting for feedback."""
        return self._feedback

    @property
    def arm_space(self) -> ArmSpace:
        return self._arm_space

    @property
    def load_report(self) -> list[str]:
        """What loading `state_path` at construction dropped or kept aside (empty when nothing)."""
        return list(self._load_report)

    # ------------------------------------------------------------------ introspection

    def stats(self) -> dict[str, Any]:
        """Per-arm pulls, failures, feedback count, mean quality, mean reward and total cost."""
        with self._lock:
            arms: dict[str, Any] = {}
            for arm_id, raw in self._stats["arms"].items():
                count = raw["feedback"]
                arms[arm_id] = {
                    "pulls": raw["pulls"],
                    "failures": raw["failures"],
                    "feedback": count,
                    "mean_quality": raw["quality_sum"] / count if count else None,
                    "mean_reward": raw["reward_sum"] / count if count else None,
                    "total_cost_usd": raw["cost_usd"],
                }
            return {
                "requests": self._stats["requests"],
                "failed_requests": self._stats["failed_requests"],
                "pending": len(self._feedback),
                "total_cost_usd": sum(raw["cost_usd"] for raw in self._stats["arms"].values()),
                "cost_weight": self._cost_weight_now(),
                "arms": arms,
                "breakers": self._breakers.snapshot() if self._breakers is not None else {},
            }

    def explain(self, prompt: str | Sequence[BaseMessage]) -> list[dict[str, Any]]:
        """How every arm would score for `prompt` now: predicted quality, bonus, cost, penalty, bound.

        Sorted best first; nothing is learnt or called.
        """
        messages = [HumanMessage(prompt)] if isinstance(prompt, str) else list(prompt)
        x = self._context(messages)
        ids = self._arm_space.ids
        prompt_tokens = estimate_tokens("\n".join(_text_of(m) for m in messages))
        prediction = self._cost_model.predict(prompt_tokens, ids)
        penalty, _ = cost_penalty(prediction.cost_usd, self._cost_weight_now())
        scorer = getattr(self._policy, "score", None)
        if callable(scorer):
            ids, mean, bonus, penalty = scorer(x, list(ids), penalty)
        else:  # baselines: their recorded scores for a (discarded) decision
            decision = self._policy.select(x, list(ids), penalty)
            by_id = {score.arm_id: score for score in decision.scores}
            mean = np.array([by_id[i].mean if i in by_id else math.nan for i in ids])
            bonus = np.array([by_id[i].bonus if i in by_id else math.nan for i in ids])
        rows: list[dict[str, Any]] = []
        for index, arm_id in enumerate(ids):
            rows.append(
                {
                    "arm": arm_id,
                    "predicted_quality": float(mean[index]),
                    "bonus": float(bonus[index]),
                    "bound": float(mean[index] + bonus[index]),
                    "predicted_cost_usd": float(prediction.cost_usd[index]),
                    "penalty": float(penalty[index]),
                    "score": float(mean[index] + bonus[index] - penalty[index]),
                }
            )
        rows.sort(key=lambda row: -row["score"] if math.isfinite(row["score"]) else math.inf)
        return rows

    # ------------------------------------------------------------------ persistence

    def _state_tree(self) -> dict[str, Any]:
        with self._lock:
            stats = {
                "requests": self._stats["requests"],
                "failed_requests": self._stats["failed_requests"],
                "arms": {arm_id: dict(values) for arm_id, values in self._stats["arms"].items()},
            }
            pacer = self._pacer.state_dict() if self._pacer is not None else None
        return {
            "policy": self._policy.state_dict(),
            "cost_model": self._cost_model.state_dict(),
            "feedback": self._feedback.to_dict(),
            "pacer": pacer,
            "stats": stats,
            "arm_ids": list(self._arm_space.ids),
        }

    def _autosave(self) -> None:
        if self._autosaver is not None:
            self._autosaver.request()

    async def _aautosave(self) -> None:
        """Mark the state dirty; only a synchronous autosave (interval 0) goes to a worker thread."""
        if self._autosaver is None:
            return
        if self._autosaver.interval_s == 0:
            await asyncio.to_thread(self._autosaver.request)
        else:
            self._autosaver.request()

    def close(self) -> None:
        """Save what autosave has pending and stop its thread (also done at interpreter exit)."""
        if self._autosaver is not None:
            self._autosaver.close()

    def save(self, path: str | Path | None = None) -> Path:
        """Write policy, cost model, pending decisions, pacer and stats atomically (default: state_path)."""
        target = path if path is not None else self.state_path
        if target is None:
            raise ConfigError("UniScaleChat.save.path: no path given and no state_path configured")
        with self._save_lock:
            return save_state(target, self._state_tree())

    def _load(self) -> None:
        assert self.state_path is not None
        tree = load_state(self.state_path)
        missing = [key for key in _STATE_KEYS if key not in tree]
        if missing:
            raise StateError(
                f"state file {self.state_path} lacks {missing}; it was not written by UniScaleChat. "
                "Point state_path at another file, or delete it to start afresh"
            )
        report: list[str] = []
        kept_aside = self._policy.load_state_dict(tree["policy"])
        if kept_aside:
            report.append(
                f"policy: kept learnt state of {len(kept_aside)} arms no longer configured: {kept_aside[:5]}"
            )
        self._cost_model.load_state_dict(tree["cost_model"])
        known = set(self._arm_space.ids)
        dropped = self._feedback.load_dict(tree["feedback"], keep=lambda pending: pending.arm_id in known)
        if dropped:
            report.append(
                f"feedback: dropped {dropped} pending decisions (expired, unreadable or of removed arms)"
            )
        if tree.get("pacer") is not None:
            if self._pacer is not None:
                self._pacer.load_state_dict(tree["pacer"])
            else:
                report.append("pacer: saved budget pacer ignored (budget_usd_per_request is not set)")
        stats = tree.get("stats") or {}
        with self._lock:
            self._stats = {
                "requests": int(stats.get("requests", 0)),
                "failed_requests": int(stats.get("failed_requests", 0)),
                "arms": {str(k): dict(v) for k, v in dict(stats.get("arms", {})).items()},
            }
        self._load_report = report
        for line in report:
            logger.warning("uniscale: loading %s: %s", self.state_path, line)
