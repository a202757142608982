"""`UniScaleChat`: the LangChain front-end of the learning core (`uniscale_lc.router.Router`).

It converts LangChain messages and options to the core's plain data and back (an `AIMessage` with
`usage_metadata`, parsed tool calls and `response_metadata["uniscale"]` = the decision record), and
forwards callbacks. Everything that learns, records or persists lives in the router (`chat.router`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError

from .arms import ArmSpace
from .chat_convert import (
    ai_message,
    delta_chunk,
    last_chunk,
    openai_messages,
    run_id_from_message_id,
    tool_choice_for_openai,
)
from .chat_options import (
    ADAPTER_FIELDS,
    call_keys,
    call_options,
    feedback_key,
    from_config,
    keys_as_kwargs,
    per_call_overrides,
)
from .chat_structured import structured_output
from .core.config import RouterConfig, refuse_secrets
from .errors import ConfigError, StateError
from .feedback import FeedbackResult, FeedbackStore
from .router import Completion, Router, iterate_sync

__all__ = ["UniScaleChat"]

_LABEL = "UniScaleChat"


class UniScaleChat(BaseChatModel, RouterConfig):
    """A chat model that learns online which arm (model x test-time-scaling strategy) to run per request.

    Configure with `arms=ArmSpace(...)`, or `models=[ModelSpec, ...]` and `strategies=[...]` (every model
    with every strategy; default `[Single()]`); the fields are `RouterConfig`'s. Or adapt an existing
    core with `UniScaleChat(router=Router(...))`. See docs/chat_model.md and docs/router.md.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    streaming: bool = Field(default=False, description="stream by default (LangChain convention)")
    router: Router | None = Field(
        default=None, exclude=True, description="the core to adapt; default: one built from these fields"
    )
    _overrides: dict[str, Any] = PrivateAttr(default_factory=dict)

    def __init__(self, **data: Any) -> None:
        refuse_secrets(data, _LABEL)
        try:
            super().__init__(**data)
        except ValidationError as error:
            # pydantic wraps what model_post_init raises; hand the caller our ConfigError itself.
            for detail in error.errors():
                cause = (detail.get("ctx") or {}).get("error")
                if isinstance(cause, (ConfigError, StateError)):
                    raise cause from None
            raise

    def model_post_init(self, context: Any, /) -> None:
        """Build the router from this model's RouterConfig fields, or adopt the one given.

        Adopting one with fields is how LangChain's configured copies (`configurable_fields`,
        `with_config`) are built: the copy shares the router (one learner, one feedback store), and the
        fields it sets differently apply per call (only those in `chat_options.PER_CALL_FIELDS` may differ).
        """
        super().model_post_init(context)
        configured = sorted(set(RouterConfig.model_fields) & self.model_fields_set)
        if self.router is None:
            # feedback_fn stays here: it scores LangChain messages, so the adapter calls it (see _score_hook).
            fields = {name: getattr(self, name) for name in configured if name not in ADAPTER_FIELDS}
            self.router = Router(RouterConfig(**fields), label=_LABEL)
            return
        if not isinstance(self.router, Router):
            raise ConfigError(
                f"UniScaleChat.router: got {type(self.router).__name__}; pass a uniscale_lc.Router"
            )
        config = self.router.config
        self._overrides = per_call_overrides(self, configured, config)
        # Mirror the router's configuration, so that copies LangChain makes from this model's fields
        # carry the same values (and differ only where they are configured to).
        for name in RouterConfig.model_fields:
            if name not in self._overrides and name not in ADAPTER_FIELDS:
                self.__dict__[name] = getattr(config, name)

    @property
    def core(self) -> Router:
        assert self.router is not None  # set in model_post_init
        return self.router

    # The learning parts, for callers (and tests) that inspect them.
    @property
    def _policy(self) -> Any:
        return self.core.policy

    @property
    def _pacer(self) -> Any:
        return self.core.pacer

    def _candidates(self, tools: bool, model: str | None) -> tuple[str, ...]:
        return self.core.candidates(tools, model)

    # ------------------------------------------------------------------ LangChain plumbing

    @property
    def _llm_type(self) -> str:
        return "uniscale"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        config, overrides = self.core.config, self._overrides
        return {
            "arms": list(self.core.arm_space.ids),
            "policy": type(self.core.policy).__name__,
            "cost_weight": overrides.get("cost_weight", config.cost_weight),
            "budget_usd_per_request": overrides.get("budget_usd_per_request", config.budget_usd_per_request),
            "max_fallbacks": config.max_fallbacks,
            "temperature": overrides.get("temperature", config.temperature),
            "max_tokens": overrides.get("max_tokens", config.max_tokens),
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """Tracing parameters, known before the call: the provider is the router ("uniscale"); the model is
        the one a call pins (`model=`) or the only one configured, else "uniscale". The model that answered
        is in each response (`response_metadata["model_name"]`)."""
        config, overrides = self.core.config, self._overrides
        params = LangSmithParams(ls_provider="uniscale", ls_model_type="chat")
        model = kwargs.get("model")
        if not isinstance(model, str):
            models = self.core.arm_space.models
            model = models[0].model if len(models) == 1 else "uniscale"
        params["ls_model_name"] = model
        temperature = kwargs.get("temperature", overrides.get("temperature", config.temperature))
        if isinstance(temperature, (int, float)):
            params["ls_temperature"] = float(temperature)
        max_tokens = kwargs.get("max_tokens", overrides.get("max_tokens", config.max_tokens))
        if isinstance(max_tokens, int):
            params["ls_max_tokens"] = max_tokens
        stops = stop or overrides.get("stop") or config.stop
        if stops:
            params["ls_stop"] = list(stops)
        return params

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (converted to OpenAI format). Tools restrict the candidates to Single arms on models
        with `supports_tools=True`: a vote or a judge over tool calls is not defined. `strict` goes inside
        each function definition, as ChatOpenAI sends it (never as a request argument)."""
        formatted = [convert_to_openai_tool(tool, strict=strict) for tool in tools]
        if strict is not None:  # a tool given already in OpenAI's format comes back as it was
            formatted = [
                {**tool, "function": {**tool["function"], "strict": strict}} if "function" in tool else tool
                for tool in formatted
            ]
        if not self.core.tool_arms(self.core.arm_space.ids):
            raise ConfigError(
                "UniScaleChat.bind_tools: no arm can take tools; tools need a Single() strategy on a "
                "ModelSpec with supports_tools=True"
            )
        choice = tool_choice_for_openai(tool_choice, [tool["function"]["name"] for tool in formatted])
        if choice is not None:
            kwargs["tool_choice"] = choice
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None = None,
        *,
        method: str = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Structured answers as ChatOpenAI gives them: `method` is "function_calling" (a forced tool call),
        "json_schema" or "json_mode" (`response_format`, sent only to arms whose ModelSpec has
        `supports_response_format=True`). See uniscale_lc/chat_structured.py."""
        if kwargs:
            raise ConfigError(
                f"UniScaleChat.with_structured_output: unknown arguments {sorted(kwargs)}; it takes schema, "
                "method, include_raw and strict"
            )
        return structured_output(self, schema, method=method, include_raw=include_raw, strict=strict)

    def invoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        return super().invoke(input, config, stop=stop, **from_config(config, kwargs))

    async def ainvoke(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:
        return await super().ainvoke(input, config, stop=stop, **from_config(config, kwargs))

    def stream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:
        # `_stream` gets no run manager in langchain-core's stream(), so pass the request id explicitly.
        return super().stream(input, config, stop=stop, **from_config(config, kwargs))

    def astream(
        self,
        input: LanguageModelInput,
        config: RunnableConfig | None = None,
        *,
        stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:
        return super().astream(input, config, stop=stop, **from_config(config, kwargs))

    # ------------------------------------------------------------------ generation

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        from .client import run_sync

        return run_sync(self._agenerate(messages, stop, None, **keys_as_kwargs(run_manager, kwargs)))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        run_id, request_id, parent_run_id = call_keys(run_manager, kwargs)
        answered: list[AIMessage] = []

        def score(completion: Completion) -> Any:
            answered.append(ai_message(completion))
            return self.feedback_fn(messages, answered[0]) if self.feedback_fn is not None else None

        completion = await self.core.arun(
            openai_messages(messages),
            call_options(self._overrides, stop, kwargs),
            run_id=run_id,
            request_id=request_id,
            score=score if self.feedback_fn is not None else None,
            parent_run_id=parent_run_id,
        )
        message = answered[0] if answered else ai_message(completion)
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"model_name": completion.model, "uniscale": completion.decision},
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        for chunk in iterate_sync(self._astream(messages, stop, None, **keys_as_kwargs(run_manager, kwargs))):
            if run_manager is not None:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """Token chunks for Single arms, one chunk otherwise; then a last chunk with usage and the record."""
        run_id, request_id, parent_run_id = call_keys(run_manager, kwargs)
        first: list[ChatGenerationChunk] = []

        def stamped_run_id() -> str | None:
            # langchain-core stamps `lc_run--<run id>` on the first chunk once we have yielded it.
            return run_id_from_message_id(first[0].message.id) if first else None

        def score(completion: Completion) -> Any:
            assert self.feedback_fn is not None
            message = AIMessage(content=completion.text, response_metadata={"model_name": completion.model})
            return self.feedback_fn(messages, message)

        stream = self.core.arun_stream(
            openai_messages(messages),
            call_options(self._overrides, stop, kwargs),
            run_id=run_id if run_id is not None else stamped_run_id,
            request_id=request_id,
            score=score if self.feedback_fn is not None else None,
            parent_run_id=parent_run_id,
        )
        # aclosing: a caller that stops reading closes the core's stream now (which then accounts for what
        # was spent), not whenever the garbage collector finalises it.
        async with contextlib.aclosing(stream):
            async for piece in stream:
                chunk = last_chunk(piece.completion) if piece.completion is not None else delta_chunk(piece)
                if not first:
                    first.append(chunk)
                if run_manager is not None:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    # ------------------------------------------------------------------ feedback and the core's faces

    def feedback(self, key: Any, score: Any) -> FeedbackResult:
        """Score a past answer: `score` is its quality in [0, 1]; the policy learns it.

        `key` is the decision_id, the AIMessage (or its id / the run id), or the `uniscale_request_id`
        given in config metadata. Repeated feedback on the same decision is a no-op returning the first
        result (`duplicate=True`). Raises `FeedbackError` for an unknown key or an invalid score.
        """
        return self.core.feedback(feedback_key(key), score)

    async def afeedback(self, key: Any, score: Any) -> FeedbackResult:
        """Async twin of `feedback`: the state file is written in a worker thread."""
        return await self.core.afeedback(feedback_key(key), score)

    @property
    def pending_decisions(self) -> FeedbackStore:
        """The store of decisions waiting for feedback."""
        return self.core.pending_decisions

    @property
    def arm_space(self) -> ArmSpace:
        return self.core.arm_space

    @property
    def load_report(self) -> list[str]:
        """What loading `state_path` at construction dropped or kept aside (empty when nothing)."""
        return self.core.load_report

    def fit(
        self, records: Iterable[Any] | str | Path, *, progress: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        """Warm start from labelled outcomes or an outcome-table directory (`Router.fit`, docs/warm_start.md)."""
        return self.core.fit(records, progress=progress)

    def stats(self) -> dict[str, Any]:
        """Per-arm pulls, failures, feedback count, mean quality, mean reward and total cost."""
        return self.core.stats()

    def explain(
        self, prompt: str | Sequence[BaseMessage], uniscale_tags: str | Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """How every arm would score for `prompt` (with those tags) now, best first; nothing is learnt or called."""
        messages: list[BaseMessage] = [HumanMessage(prompt)] if isinstance(prompt, str) else list(prompt)
        return self.core.explain(openai_messages(messages), tags=uniscale_tags)

    def close(self) -> None:
        """Save what autosave has pending and stop its thread (also done at interpreter exit)."""
        self.core.close()

    def save(self, path: str | Path | None = None) -> Path:
        """Write policy, cost model, pending decisions, pacer and stats atomically (default: state_path)."""
        return self.core.save(path)
