"""`UniScaleLLM`: the LlamaIndex front-end of the learning core (`uniscale_lc.router.Router`).

A `FunctionCallingLLM` whose every call goes through the router: it converts `ChatMessage`s to OpenAI
dicts, passes tools on as OpenAI tool definitions, and returns `ChatResponse`s with the decision id in
`raw` and `additional_kwargs`, so `feedback()` can teach the policy. It follows llama-index-llms-openai's
conventions (chat-first, `complete` through `chat`, `ToolCallBlock`s, token counts in `additional_kwargs`).
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from llama_index.core.base.llms.generic_utils import (
    achat_to_completion_decorator,
    astream_chat_to_completion_decorator,
    chat_to_completion_decorator,
    stream_chat_to_completion_decorator,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import ConfigDict, Field
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection

from ..core.config import RouterConfig, refuse_secrets
from ..core.engine import iterate_sync, run_sync
from ..core.request_check import check_request
from ..core.results import Completion, RequestOptions
from ..core.tool_choice import openai_tool_choice
from ..errors import ConfigError, FeedbackError
from ..feedback import REQUEST_ID_METADATA_KEY, FeedbackResult, FeedbackStore
from ..router import Router
from ..tags import check_tags
from .convert import StreamedChat, chat_response, decision_id_of, openai_messages, tool_selections

__all__ = ["UniScaleLLM"]

_LABEL = "UniScaleLLM"
# Per-call keyword arguments with a meaning of their own; the rest go to the provider as they are (as
# llama-index-llms-openai does with its **kwargs).
_OWN_KWARGS = frozenset(
    {"tools", "tool_choice", "model", "request_id", REQUEST_ID_METADATA_KEY, "temperature", "max_tokens",
     "stop", "slo_tpot_ms", "uniscale_tags"}
)  # fmt: skip

# Request ids set by `UniScaleLLM.scoped_request_id`, per router (copies of an LLM share theirs).
_SCOPED_REQUEST_IDS: contextvars.ContextVar[tuple[tuple[int, str], ...]] = contextvars.ContextVar(
    "uniscale_scoped_request_ids", default=()
)


class UniScaleLLM(FunctionCallingLLM):
    """A LlamaIndex LLM that learns online which arm (model x test-time-scaling strategy) to run per request.

    `UniScaleLLM(models=[ModelSpec, ...], strategies=[...], ...)` with the fields of `RouterConfig`, or
    `UniScaleLLM(router=Router(...))` to share a core with other front-ends. Copies share the router (one
    learner). See docs/llama_index.md.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    router: Any = Field(
        default=None, exclude=True, description="the uniscale_lc.Router every call goes through"
    )
    context_window: int = Field(
        default=DEFAULT_CONTEXT_WINDOW,
        gt=0,
        description="tokens the smallest model of the pool accepts; LlamaIndex sizes prompts and memory by it",
    )
    feedback_fn: Callable[..., Any] | None = Field(
        default=None,
        exclude=True,
        description="fn(messages: list[ChatMessage], response: ChatResponse) -> score in [0, 1] or None",
    )

    def __init__(self, router: Router | None = None, **fields: Any) -> None:
        refuse_secrets(fields, _LABEL)
        own = set(type(self).model_fields)
        unknown = sorted(set(fields) - own - set(RouterConfig.model_fields))
        if unknown:
            raise ConfigError(
                f"{_LABEL}: unknown field(s) {unknown}; use RouterConfig's fields (models, strategies, "
                "cost_weight, ...), LlamaIndex's LLM fields (system_prompt, callback_manager, ...) or router="
            )
        if fields.get("feedback_fn") is not None and not callable(fields["feedback_fn"]):
            raise ConfigError(f"{_LABEL}.feedback_fn: must be callable as fn(messages, response) -> score")
        config_fields = {name: fields.pop(name) for name in list(fields) if name not in own}
        built = router is None
        if router is None:
            router = Router(RouterConfig(**config_fields), label=_LABEL)
        elif config_fields:
            raise ConfigError(
                f"{_LABEL}.router: give router=Router(...) or its configuration fields, not both "
                f"(got {sorted(config_fields)}); configure the Router itself"
            )
        elif not isinstance(router, Router):
            raise ConfigError(f"{_LABEL}.router: got {type(router).__name__}; pass a uniscale_lc.Router")
        try:
            super().__init__(router=router, **fields)
        except Exception:
            if built:
                router.close()  # a router built here and refused with its LLM must not keep autosaving
            raise

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> UniScaleLLM:
        # A copy is another face of the same learner: never clone the router (its locks, threads, state).
        memo = {} if memo is None else memo
        memo[id(self.router)] = self.router
        return super().__deepcopy__(memo)

    @property
    def core(self) -> Router:
        """The router every call goes through (shared by copies of this LLM)."""
        router: Router = self.router
        return router

    @classmethod
    def class_name(cls) -> str:
        return _LABEL

    @property
    def metadata(self) -> LLMMetadata:
        """A chat model; function-calling when some arm can take tools (Single strategy, supports_tools)."""
        core = self.core
        return LLMMetadata(
            context_window=self.context_window,
            num_output=core.config.max_tokens or -1,
            is_chat_model=True,
            is_function_calling_model=bool(core.tool_arms(core.arm_space.ids)),
            model_name="uniscale",
            system_role=MessageRole.SYSTEM,
        )

    # ------------------------------------------------------------------ chat and complete

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return self._chat(messages, **kwargs)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await self._achat(messages, **kwargs)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        return self._stream_chat(messages, **kwargs)

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return self._astream_chat(messages, **kwargs)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        _check_prompt(prompt)
        return chat_to_completion_decorator(self._chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        _check_prompt(prompt)
        return await achat_to_completion_decorator(self._achat)(prompt, **kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        _check_prompt(prompt)
        return stream_chat_to_completion_decorator(self._stream_chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        _check_prompt(prompt)
        return await astream_chat_to_completion_decorator(self._astream_chat_async)(prompt, **kwargs)

    # The undecorated paths (the decorated faces above call these, so one call is one callback event).

    def _chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        request = self._request(messages, kwargs)  # refused here, in the caller's thread
        return run_sync(self._run(messages, *request))

    async def _achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await self._run(messages, *self._request(messages, kwargs))

    def _stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        request = self._request(messages, kwargs)
        # iterate_sync is a generator function: llama-index's callback wraps what it returns as one.
        return cast(ChatResponseGen, iterate_sync(self._stream(messages, *request)))

    def _astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return self._stream(messages, *self._request(messages, kwargs))

    async def _astream_chat_async(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        return self._astream_chat(messages, **kwargs)

    def _request(
        self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], RequestOptions, str | None]:
        """Validate and convert one call; a caller's mistake raises before any arm is called."""
        plain = openai_messages(messages, _LABEL)
        options, request_id = _request_options(kwargs)
        if request_id is None:
            request_id = dict(_SCOPED_REQUEST_IDS.get()).get(id(self.core))
        # Here too (the router checks again), so that a stream is refused when it is asked for, not at its
        # first chunk: options that are not JSON, an unknown model, tools that no arm takes.
        check_request(plain, options)
        self.core.candidates(bool(options.tools), options.model)
        return plain, options, request_id

    def _score_hook(self, messages: Sequence[ChatMessage]) -> Callable[[Completion], Any] | None:
        feedback_fn = self.feedback_fn
        if feedback_fn is None:
            return None
        return lambda completion: feedback_fn(list(messages), chat_response(completion))

    async def _run(
        self,
        messages: Sequence[ChatMessage],
        plain: list[dict[str, Any]],
        options: RequestOptions,
        request_id: str | None,
    ) -> ChatResponse:
        completion = await self.core.arun(
            plain, options, request_id=request_id, score=self._score_hook(messages)
        )
        return chat_response(completion)

    async def _stream(
        self,
        messages: Sequence[ChatMessage],
        plain: list[dict[str, Any]],
        options: RequestOptions,
        request_id: str | None,
    ) -> ChatResponseAsyncGen:
        state = StreamedChat()
        chunks = self.core.arun_stream(
            plain, options, request_id=request_id, score=self._score_hook(messages)
        )
        try:
            async for chunk in chunks:
                yield state.response(chunk)
        finally:
            await chunks.aclose()

    # ------------------------------------------------------------------ tools

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[Any],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Tools as OpenAI tool definitions and `tool_choice` as OpenAI's (a tool name becomes a dict)."""
        specs = [tool.metadata.to_openai_tool(skip_length_check=True) for tool in tools]
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
        if user_msg is not None:
            messages.append(user_msg)
        names = [spec["function"]["name"] for spec in specs]
        return {
            "messages": messages,
            "tools": specs or None,
            "tool_choice": openai_tool_choice(
                "required" if tool_choice is None and tool_required else tool_choice or "auto",
                names,
                f"{_LABEL}.tool_choice",
            )
            if specs
            else None,
            **kwargs,
        }

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[Any],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Keep only the first tool call unless parallel calls are allowed (llama-index-llms-openai's rule)."""
        if not allow_parallel_tool_calls:
            calls = [block for block in response.message.blocks if isinstance(block, ToolCallBlock)]
            if len(calls) > 1:
                others = [block for block in response.message.blocks if not isinstance(block, ToolCallBlock)]
                response.message.blocks = [*others, calls[0]]
        return response

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        return tool_selections(response, error_on_no_tool_call)

    # ------------------------------------------------------------------ feedback and the core's faces

    @contextlib.contextmanager
    def scoped_request_id(self, request_id: str) -> Iterator[None]:
        """Tag every call of this LLM (and its copies) in the block with `request_id`, for code that never
        sees the response: a query engine's `Response` or an agent's output carry no decision id.

        `feedback(request_id, score)` then scores the last decision made in the block (for a query engine
        or an agent, the final answer). A contextvar: asyncio tasks and `asyncio.to_thread` inside the
        block inherit it, plain threads do not; a `request_id=` passed to a call wins.
        """
        if not isinstance(request_id, str) or not request_id:
            raise ConfigError(
                f"{_LABEL}.scoped_request_id.request_id: got {request_id!r}; pass a non-empty string"
            )
        token = _SCOPED_REQUEST_IDS.set((*_SCOPED_REQUEST_IDS.get(), (id(self.core), request_id)))
        try:
            yield
        finally:
            _SCOPED_REQUEST_IDS.reset(token)

    def feedback(self, key: Any, score: Any) -> FeedbackResult:
        """Score a past answer: `score` is its quality in [0, 1]; the policy learns it.

        `key` is a ChatResponse / CompletionResponse / the assistant ChatMessage this LLM returned, its
        `additional_kwargs["decision_id"]`, or the `request_id` passed to the call. Repeated feedback on the
        same decision is a no-op returning the first result (`duplicate=True`). Raises `FeedbackError` for
        an unknown key or an invalid score.
        """
        return self.core.feedback(_feedback_key(key), score)

    async def afeedback(self, key: Any, score: Any) -> FeedbackResult:
        """Async twin of `feedback`: the state file is written in a worker thread."""
        return await self.core.afeedback(_feedback_key(key), score)

    def fit(self, records: Iterable[Any] | str | Path) -> dict[str, Any]:
        """Warm start from labelled outcomes or an outcome-table directory (`Router.fit`, docs/warm_start.md)."""
        return self.core.fit(records)

    @property
    def pending_decisions(self) -> FeedbackStore:
        """The store of decisions waiting for feedback."""
        return self.core.pending_decisions

    def stats(self) -> dict[str, Any]:
        """Per-arm pulls, failures, feedback count, mean quality, mean reward and total cost."""
        return self.core.stats()

    def explain(
        self, prompt: str | Sequence[ChatMessage], uniscale_tags: str | Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """How every arm would score for `prompt` (with those tags) now, best first; nothing is learnt or called."""
        if isinstance(prompt, str):
            return self.core.explain(prompt, tags=uniscale_tags)
        return self.core.explain(openai_messages(prompt, f"{_LABEL}.explain"), tags=uniscale_tags)

    def save(self, path: str | Path | None = None) -> Path:
        """Write policy, cost model, pending decisions, pacer and stats atomically (default: state_path)."""
        return self.core.save(path)

    def close(self) -> None:
        """Save what autosave has pending and stop its thread (the router's close; copies share it)."""
        self.core.close()

    async def aclose(self) -> None:
        """Async twin of `close`: the final save runs in a worker thread."""
        await self.core.aclose()


def _check_prompt(prompt: Any) -> None:
    if not isinstance(prompt, str):
        raise ConfigError(
            f"{_LABEL}.complete.prompt: got {type(prompt).__name__}; pass a string, or call chat() with "
            "ChatMessages"
        )


def _request_options(kwargs: dict[str, Any]) -> tuple[RequestOptions, str | None]:
    """LlamaIndex's per-call kwargs as the core's options (unknown ones go to the provider)."""
    request_id = kwargs.get("request_id", kwargs.get(REQUEST_ID_METADATA_KEY))
    model, stop = kwargs.get("model"), kwargs.get("stop")
    if model is not None and not isinstance(model, str):
        raise ConfigError(f"{_LABEL}.model: got {model!r}; pass a model name or leave it out")
    extra = {key: value for key, value in kwargs.items() if key not in _OWN_KWARGS and value is not None}
    options = RequestOptions(
        tools=kwargs.get("tools") or None,
        tool_choice=kwargs.get("tool_choice"),
        model=model,
        temperature=kwargs.get("temperature"),
        max_tokens=kwargs.get("max_tokens"),
        stop=[stop] if isinstance(stop, str) else list(stop) if stop else None,
        slo_tpot_ms=kwargs.get("slo_tpot_ms"),
        extra=extra or None,
        tags=check_tags(kwargs.get("uniscale_tags"), f"{_LABEL}.uniscale_tags"),
    )
    return options, None if request_id is None else str(request_id)


def _feedback_key(key: Any) -> Any:
    found = decision_id_of(key)
    if isinstance(found, (ChatMessage, ChatResponse, CompletionResponse)):
        raise FeedbackError(
            f"{_LABEL}.feedback.key: this {type(key).__name__} carries no decision_id (UniScaleLLM did not "
            "answer it); pass the response UniScaleLLM returned, its additional_kwargs['decision_id'], or "
            "the request_id given to the call"
        )
    return found
