"""The ASGI app: OpenAI's chat-completions API over a `Router`, plus feedback, route-only, models, metrics
and health. One process holds the router's learnt state; shutdown (the lifespan's end) flushes it to disk.

Every answer names its decision in the `x-uniscale-decision-id` header and a top-level `uniscale` object.
A stream is started only once its first chunk has arrived: the arm is then fixed (a fallback is possible
only before the first token), so the header can be sent before the body, and a request that fails before
any token is a plain JSON error with the right status rather than a broken stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import FeedbackError
from .auth import BearerAuthMiddleware
from .errors import ApiError, bad_request, from_exception
from .metrics import ServerMetrics
from .openai_responses import (
    chunk_body,
    completion_body,
    error_event,
    json_safe,
    models_body,
    openai_usage,
    sse_event,
    tool_call_deltas,
)
from .openai_schema import (
    DECISION_ID_HEADER,
    REQUEST_ID_HEADER,
    TAGS_PARAM,
    ChatRequest,
    parse_chat_request,
    parse_feedback_request,
    parse_json_object,
    parse_route_request,
)

__all__ = ["DEFAULT_MAX_BODY_BYTES", "create_app"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
Handler = Callable[[Request], Awaitable[Response]]


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


async def _close(stream: Any) -> None:
    """Close the router's stream (its generator frees the model connection); never raises."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


class _Service:
    """The handlers, bound to one router and one metrics object."""

    def __init__(self, router: Any, metrics: ServerMetrics, max_body_bytes: int) -> None:
        self.router = router
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    def endpoint(self, name: str, handler: Handler) -> Handler:
        """Wrap a handler: errors become OpenAI error JSON, and every response is counted by status."""

        async def wrapped(request: Request) -> Response:
            try:
                response = await handler(request)
            except Exception as error:
                api_error = from_exception(error)
                if api_error.status >= 500 and not isinstance(error, ApiError):
                    log = logger.warning if api_error.status == 502 else logger.exception
                    log("uniscale server: %s failed: %s", name, error)
                response = _error_response(api_error)
            self.metrics.observe_request(name, response.status_code)
            return response

        return wrapped

    async def read_json(self, request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        raw = await request.body()
        if len(raw) > self.max_body_bytes:
            raise self._too_large()
        return parse_json_object(raw)

    def check_tags(self, tags: tuple[str, ...]) -> None:
        """Tags sent to a router configured without tag features are the caller's 400 naming the field (the
        router refuses them too, before any arm runs, but names itself rather than the request's field)."""
        if tags and getattr(getattr(self.router, "config", None), "tag_buckets", None) == 0:
            raise bad_request(
                TAGS_PARAM,
                f"{TAGS_PARAM}: got tags {list(tags)[:3]}, but the served router has tag_buckets=0, so its policy "
                "has no features for them; leave the tags out, or serve a Router configured with tag_buckets "
                "(e.g. 64; a new policy, as its context grows)",
            )

    def _too_large(self) -> ApiError:
        return ApiError(
            413,
            f"the request body is over {self.max_body_bytes} bytes; send a shorter conversation",
            "invalid_request_error",
            None,
            "request_too_large",
        )

    # ------------------------------------------------------------------ chat completions

    async def chat_completions(self, request: Request) -> Response:
        chat = parse_chat_request(await self.read_json(request), request.headers.get(REQUEST_ID_HEADER))
        self.check_tags(chat.tags)
        started = time.perf_counter()
        response_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if chat.stream:
            return await self._stream(chat, response_id, created, started)
        completion = await self.router.acomplete(chat.messages, **chat.router_kwargs())
        self.metrics.observe_latency(completion.decision["arm"], time.perf_counter() - started)
        return JSONResponse(
            json_safe(completion_body(completion, response_id, created)),
            headers={DECISION_ID_HEADER: completion.decision_id},
        )

    async def _stream(self, chat: ChatRequest, response_id: str, created: int, started: float) -> Response:
        chunks = aiter(self.router.astream(chat.messages, **chat.router_kwargs()))
        try:
            first = await anext(chunks)
        except BaseException:
            await _close(chunks)
            raise
        decision_id = first.decision_id if first.completion is None else first.completion.decision_id
        model = first.model if first.completion is None else first.completion.model
        events = self._events(chat, chunks, first, response_id, created, model, started)
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={
                DECISION_ID_HEADER: str(decision_id),
                "cache-control": "no-cache",
                "x-accel-buffering": "no",
            },
        )

    async def _events(
        self,
        chat: ChatRequest,
        chunks: AsyncIterator[Any],
        first: Any,
        response_id: str,
        created: int,
        model: str,
        started: float,
    ) -> AsyncIterator[bytes]:
        """The SSE body: a role chunk, the deltas, a finish chunk, the usage chunk if asked, then [DONE]."""
        usage_field: dict[str, Any] = {"usage": None} if chat.include_usage else {}

        def event(delta: dict[str, Any] | None, finish_reason: str | None = None, **extra: Any) -> bytes:
            return sse_event(
                json_safe(
                    {**chunk_body(response_id, created, model, delta, finish_reason), **usage_field, **extra}
                )
            )

        try:
            yield event({"role": "assistant", "content": ""})
            chunk = first
            while chunk.completion is None:
                delta: dict[str, Any] = {}
                if chunk.text:
                    delta["content"] = chunk.text
                if chunk.tool_calls:
                    delta["tool_calls"] = tool_call_deltas(chunk.tool_calls)
                if delta:
                    yield event(delta)
                chunk = await anext(chunks)
            completion = chunk.completion
            self.metrics.observe_latency(completion.decision["arm"], time.perf_counter() - started)
            finish = completion.finish_reason or ("tool_calls" if completion.tool_calls else "stop")
            if chat.include_usage:
                yield event({}, finish)
                yield event(None, usage=openai_usage(completion.usage), uniscale=completion.decision)
            else:
                yield event({}, finish, uniscale=completion.decision)
            yield sse_event("[DONE]")
        except Exception as error:  # tokens were sent: report in-band, as OpenAI does
            api_error = from_exception(error)
            logger.warning("uniscale server: stream %s failed after it started: %s", response_id, error)
            self.metrics.observe_request("chat_completions_stream_error", api_error.status)
            yield error_event(api_error)
        finally:
            await _close(chunks)

    # ------------------------------------------------------------------ the rest of the API

    async def route(self, request: Request) -> Response:
        parsed = parse_route_request(await self.read_json(request), request.headers.get(REQUEST_ID_HEADER))
        self.check_tags(parsed.tags)
        result = await self.router.aroute(
            parsed.messages,
            tools=parsed.tools,
            model=parsed.model,
            request_id=parsed.request_id,
            **({"tags": parsed.tags} if parsed.tags else {}),
        )
        body = {
            "decision_id": result.decision_id,
            "arm_id": result.arm_id,
            "model": result.model,
            "strategy": result.strategy,
            "predicted_cost_usd": result.predicted_cost_usd,
            "uniscale": result.record,
        }
        return JSONResponse(json_safe(body), headers={DECISION_ID_HEADER: result.decision_id})

    async def feedback(self, request: Request) -> Response:
        try:
            parsed = parse_feedback_request(await self.read_json(request))
        except ApiError:
            self.metrics.observe_feedback("invalid")
            raise
        try:
            result = await self.router.afeedback(parsed.key, parsed.score)
        except FeedbackError as error:
            message = str(error)
            if "no pending decision" in message:
                self.metrics.observe_feedback("unknown")
                raise ApiError(
                    404, message, "not_found_error", parsed.key_field, "decision_not_found"
                ) from None
            self.metrics.observe_feedback("invalid")
            raise ApiError(400, message, "invalid_request_error", "score", "invalid_value") from None
        self.metrics.observe_feedback("duplicate" if result.duplicate else "applied")
        return JSONResponse(json_safe(result.to_dict()), headers={DECISION_ID_HEADER: result.decision_id})

    async def models(self, request: Request) -> Response:
        return JSONResponse(models_body(self.router.arm_space))

    async def metrics_text(self, request: Request) -> Response:
        return PlainTextResponse(
            self.metrics.render(self.router.stats()), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def health(self, request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "arms": len(self.router.arm_space),
                "pending": len(self.router.pending_decisions),
            }
        )

    async def http_error(self, request: Request, error: Exception) -> Response:
        """Starlette's own 404/405 in OpenAI's error shape."""
        status = error.status_code if isinstance(error, HTTPException) else 500
        hint = {
            404: f"no endpoint {request.url.path}; see GET /v1/models, POST /v1/chat/completions, /v1/route, /v1/feedback",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(status, "request failed")
        self.metrics.observe_request("other", status)
        code = {404: "not_found", 405: "method_not_allowed"}.get(status)
        return _error_response(ApiError(status, hint, "invalid_request_error", None, code))

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """Warm up before serving; on shutdown flush the learnt state and stop autosave (uvicorn runs this on
        SIGINT/SIGTERM)."""
        # litellm's first import takes seconds; pay it before the first request, not inside it.
        await asyncio.to_thread(importlib.import_module, "litellm")
        try:
            yield
        finally:
            await self.router.aclose()
            logger.info("uniscale server: router closed, state flushed")


def create_app(
    router: Any,
    *,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    metrics: ServerMetrics | None = None,
) -> Starlette:
    """An ASGI app serving `router` (a `Router`); `api_key` turns on bearer-token auth for all but /health."""
    counters = metrics if metrics is not None else ServerMetrics()
    service = _Service(router, counters, max_body_bytes)
    table: list[tuple[str, str, str, Handler]] = [
        ("/v1/chat/completions", "POST", "chat_completions", service.chat_completions),
        ("/v1/route", "POST", "route", service.route),
        ("/v1/feedback", "POST", "feedback", service.feedback),
        ("/v1/models", "GET", "models", service.models),
        ("/metrics", "GET", "metrics", service.metrics_text),
        ("/health", "GET", "health", service.health),
    ]
    routes = [
        Route(path, service.endpoint(name, handler), methods=[method])
        for path, method, name, handler in table
    ]
    refused = functools.partial(counters.observe_request, "unauthorized", 401)
    middleware = [Middleware(BearerAuthMiddleware, token=api_key, on_refused=refused)] if api_key else []
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=service.lifespan,
        exception_handlers={HTTPException: service.http_error},
    )
