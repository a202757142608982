"""A real OpenAI-compatible HTTP server on 127.0.0.1 with scripted models, for tests, the demo and benchmarks.

This module is the server: its lifecycle in a background thread, the run-time controls and observations
tests use, and the request handlers (validation, queueing, which failure fires). What a model answers is in
simulated_model.py and how answers are written out in openai_wire.py; their public names are re-exported
here, so `from uniscale_lc.testing.openai_server import SimulatedModel` keeps working.

Token counting (usage and `max_tokens`): one token is one whitespace-separated word of text, so
`"the cat sat"` is 3 tokens. Prompt tokens are the words of every message's text content (at least 1);
completion tokens are summed over all `n` choices, as OpenAI does.

Run it alone:

    python -m uniscale_lc.testing.openai_server --port 8000 \
        --config '{"models": [{"name": "small", "answer": "42", "latency_s": 0.05}]}'
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import itertools
import json
import random
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from .openai_wire import error_response, format_retry_after, full_choice, write_stream
from .simulated_model import (
    FAILURE_KINDS,
    AnswerFn,
    FailureKind,
    SimulatedModel,
    ToolCallFn,
    count_tokens,
    echo_answer,
    make_choices,
    message_text,
    split_tokens,
)

__all__ = [
    "FAILURE_KINDS",
    "AnswerFn",
    "FailureKind",
    "OpenAIServer",
    "SimulatedModel",
    "ToolCallFn",
    "count_tokens",
    "echo_answer",
    "load_models",
    "main",
    "message_text",
    "serve",
    "split_tokens",
]

_HISTORY = 100  # request bodies kept per model for assertions
# The top-level arguments of OpenAI's chat-completions API (what `strict_params` lets through).
_OPENAI_REQUEST_ARGUMENTS = frozenset(
    {
        "model", "messages", "audio", "frequency_penalty", "function_call", "functions", "logit_bias",
        "logprobs", "max_completion_tokens", "max_tokens", "metadata", "modalities", "n",
        "parallel_tool_calls", "prediction", "presence_penalty", "prompt_cache_key", "reasoning_effort",
        "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
        "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user",
        "verbosity", "web_search_options",
    }
)  # fmt: skip


@dataclasses.dataclass
class _ModelState:
    """Mutable run-time state of one model; touched only under `OpenAIServer._lock`."""

    config: SimulatedModel
    rng: random.Random
    failure: str | None
    failure_rate: float
    failures_left: int | None = None
    requests: int = 0
    running: int = 0
    waiting: int = 0
    peak_in_flight: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    bodies: collections.deque[dict[str, Any]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=_HISTORY)
    )
    last_headers: dict[str, str] = dataclasses.field(default_factory=dict)
    gate: asyncio.Semaphore | None = None


class OpenAIServer:
    """An OpenAI-compatible server in a background thread with its own event loop.

    Use as a context manager (`with OpenAIServer(models=[...]) as server: server.api_base`) or call
    `start()`/`stop()`. Latency is `asyncio.sleep`, so many concurrent requests overlap instead of queueing.
    """

    def __init__(
        self,
        models: Sequence[SimulatedModel] | Mapping[str, SimulatedModel],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        configs = list(models.values()) if isinstance(models, Mapping) else list(models)
        if not configs:
            raise ValueError("OpenAIServer.models: give at least one SimulatedModel")
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.Lock()
        self._states: dict[str, _ModelState] = {}
        for config in configs:
            if config.name in self._states:
                raise ValueError(f"OpenAIServer.models: duplicate model name {config.name!r}")
            self._states[config.name] = _ModelState(
                config=config,
                rng=random.Random(config.seed),
                failure=config.failure,
                failure_rate=config.failure_rate,
            )
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("OpenAIServer is not started; call start() or use it as a context manager")
        return self._port

    @property
    def url(self) -> str:
        """Root URL, e.g. `http://127.0.0.1:43123`."""
        return f"http://{self.host}:{self.port}"

    @property
    def api_base(self) -> str:
        """The OpenAI base URL (`.../v1`), what litellm's `api_base` wants."""
        return f"{self.url}/v1"

    def start(self, timeout_s: float = 10.0) -> OpenAIServer:
        """Bind the socket and serve in a daemon thread; returns once requests are accepted."""
        if self._thread is not None:
            raise RuntimeError("OpenAIServer already started")
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name=f"openai-server-{id(self):x}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"OpenAIServer did not start within {timeout_s} s")
        if self._startup_error is not None:
            self._thread.join(timeout_s)
            self._thread = None
            raise RuntimeError(
                f"OpenAIServer failed to start: {self._startup_error}"
            ) from self._startup_error
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving, release hung requests, close the loop and join the thread."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout_s)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        if thread.is_alive():
            raise RuntimeError(f"OpenAIServer thread did not stop within {timeout_s} s")
        self._thread = None
        self._loop = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # reported to start() in the caller's thread
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _startup(self) -> None:
        self._stopping = asyncio.Event()
        for state in self._states.values():
            if state.config.max_running is not None:
                state.gate = asyncio.Semaphore(state.config.max_running)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        # handler_cancellation: a client that disconnects (its timeout) frees its slot, as vLLM aborts it.
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, handler_cancellation=True)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._requested_port))
            sock.listen(1024)
            sock.setblocking(False)
            site = web.SockSite(runner, sock, backlog=1024)
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._port = sock.getsockname()[1]
        self._runner = runner

    async def _shutdown(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- controls and observations (thread-safe) ------------------------------------------------------

    def _state(self, model: str) -> _ModelState:
        try:
            return self._states[model]
        except KeyError:
            raise KeyError(f"unknown model {model!r}; served: {sorted(self._states)}") from None

    @property
    def model_names(self) -> list[str]:
        return list(self._states)

    def set_failure(
        self, model: str, failure: FailureKind | None, rate: float = 1.0, count: int | None = None
    ) -> None:
        """Break (or with `failure=None`, heal) a model at run time.

        `rate` is the probability per request; `count`, when given, heals the model after that many failures,
        which makes "fail twice, then succeed" deterministic.
        """
        if failure is not None and failure not in FAILURE_KINDS:
            raise ValueError(f"failure: got {failure!r}; use one of {sorted(FAILURE_KINDS)}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate: got {rate!r}; use a value in [0, 1]")
        with self._lock:
            state = self._state(model)
            state.failure = failure
            state.failure_rate = rate if failure is not None else 0.0
            state.failures_left = count

    def set_latency(self, model: str, latency_s: float) -> None:
        """Change a model's latency at run time (for load and timeout scenarios)."""
        with self._lock:
            self._state(model).config.latency_s = latency_s

    def request_count(self, model: str) -> int:
        """Chat requests received for `model` (failed ones included)."""
        with self._lock:
            return self._state(model).requests

    def in_flight(self, model: str) -> int:
        with self._lock:
            state = self._state(model)
            return state.running + state.waiting

    def peak_in_flight(self, model: str) -> int:
        """The most requests for `model` the server held at once since start or `reset_stats`."""
        with self._lock:
            return self._state(model).peak_in_flight

    def last_requests(self, model: str) -> list[dict[str, Any]]:
        """The last request bodies for `model`, oldest first (at most 100)."""
        with self._lock:
            return list(self._state(model).bodies)

    def last_request(self, model: str) -> dict[str, Any] | None:
        with self._lock:
            bodies = self._state(model).bodies
            return bodies[-1] if bodies else None

    def last_request_headers(self, model: str) -> dict[str, str]:
        """HTTP headers of the last request for `model` (to check what credentials a client sent)."""
        with self._lock:
            return dict(self._state(model).last_headers)

    def reset_stats(self) -> None:
        """Zero counters and history (not failures); in-flight gauges stay true."""
        with self._lock:
            for state in self._states.values():
                state.requests = 0
                state.peak_in_flight = state.running + state.waiting
                state.prompt_tokens = state.generation_tokens = 0
                state.bodies.clear()
                state.last_headers = {}

    # ---- handlers ---------------------------------------------------------------------------------------

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _models(self, request: web.Request) -> web.Response:
        created = int(time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "uniscale-testing"}
            for name in self._states
        ]
        return web.json_response({"object": "list", "data": data})

    async def _metrics(self, request: web.Request) -> web.Response:
        lines: list[str] = []
        with self._lock:
            snapshot = [
                (name, s.running, s.waiting, s.requests, s.prompt_tokens, s.generation_tokens)
                for name, s in self._states.items()
            ]
        gauges = [
            ("vllm:num_requests_running", "Number of requests currently running.", 1),
            ("vllm:num_requests_waiting", "Number of requests waiting to be processed.", 2),
        ]
        for metric, help_text, column in gauges:
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
            lines += [f'{metric}{{model_name="{row[0]}"}} {float(row[column])}' for row in snapshot]
        counters = [
            ("vllm:request_success_total", "Chat requests received.", 3),
            ("vllm:prompt_tokens_total", "Prompt tokens processed.", 4),
            ("vllm:generation_tokens_total", "Generation tokens produced.", 5),
        ]
        for metric, help_text, column in counters:
            lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
            lines += [f'{metric}{{model_name="{row[0]}"}} {float(row[column])}' for row in snapshot]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error_response(400, "request body is not valid JSON", "BadRequestError")
        if not isinstance(body, dict):
            return error_response(400, "request body must be a JSON object", "BadRequestError")
        name = body.get("model")
        state = self._states.get(name) if isinstance(name, str) else None
        if state is None:
            return error_response(404, f"The model `{name}` does not exist.", "NotFoundError")
        messages = body.get("messages")
        n = body.get("n", 1) if body.get("n") is not None else 1
        if not isinstance(messages, list) or not messages:
            return error_response(400, "messages: must be a non-empty list", "BadRequestError")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
            return error_response(400, f"n: got {n!r}; must be an integer in [1, 128]", "BadRequestError")

        if state.config.strict_params:
            unknown = sorted(set(body) - _OPENAI_REQUEST_ARGUMENTS)
            if unknown:
                return error_response(
                    400, f"Unrecognized request argument supplied: {', '.join(unknown)}", "BadRequestError"
                )
        with self._lock:
            state.requests += 1
            request_no = state.requests
            state.bodies.append(body)
            state.last_headers = dict(request.headers)
            failure = self._draw_failure(state)
            state.waiting += 1
            state.peak_in_flight = max(state.peak_in_flight, state.running + state.waiting)
        try:
            if state.gate is not None:
                await state.gate.acquire()
        except BaseException:  # cancelled while queued (client went away)
            with self._lock:
                state.waiting -= 1
            raise
        with self._lock:
            state.waiting -= 1
            state.running += 1
        try:
            return await self._respond(request, body, state, request_no, messages, n, failure)
        finally:
            with self._lock:
                state.running -= 1
            if state.gate is not None:
                state.gate.release()

    @staticmethod
    def _draw_failure(state: _ModelState) -> str | None:
        """Under the lock: does this request fail, and how?"""
        failure = state.failure
        if failure is None or state.failure_rate <= 0.0:
            return None
        if state.failure_rate < 1.0 and state.rng.random() >= state.failure_rate:
            return None
        if state.failures_left is not None:
            state.failures_left -= 1
            if state.failures_left <= 0:  # heal after the last scripted failure
                state.failure, state.failure_rate, state.failures_left = None, 0.0, None
        return failure

    async def _respond(
        self,
        request: web.Request,
        body: dict[str, Any],
        state: _ModelState,
        request_no: int,
        messages: list[dict[str, Any]],
        n: int,
        failure: str | None,
    ) -> web.StreamResponse:
        config = state.config
        stream = bool(body.get("stream"))
        if config.latency_s > 0:
            await asyncio.sleep(config.latency_s)
        if failure == "timeout":
            assert self._stopping is not None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), config.hang_s)
            return error_response(503, "server shutting down", "ServiceUnavailableError")
        if failure == "500":
            return error_response(500, "simulated internal server error", "InternalServerError")
        if failure == "400":
            return error_response(400, "simulated bad request", "BadRequestError")
        if failure == "413":
            return error_response(413, "simulated request too large", "RequestTooLargeError")
        if failure == "422":
            return error_response(422, "simulated unprocessable request", "UnprocessableEntityError")
        if failure == "429":
            headers = {}
            if config.retry_after_s is not None:
                headers["Retry-After"] = format_retry_after(config.retry_after_s)
            return error_response(429, "simulated rate limit", "RateLimitError", headers)
        if failure == "malformed_json" and not stream:
            return web.Response(
                status=200, text='{"id": "chatcmpl-bad", "choices": [', content_type="application/json"
            )

        choices = make_choices(state.config, body, request_no, messages, n, oversized=failure == "oversized")
        prompt_tokens = max(1, sum(count_tokens(message_text(m)) for m in messages if isinstance(m, dict)))
        completion_tokens = sum(choice["completion_tokens"] for choice in choices)
        with self._lock:
            state.prompt_tokens += prompt_tokens
            state.generation_tokens += completion_tokens
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if stream:
            return await write_stream(request, body, config, completion_id, created, choices, usage, failure)
        if failure == "empty_choices":
            payload_choices: list[dict[str, Any]] = []
        else:
            payload_choices = [full_choice(choice) for choice in choices]
        payload = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": config.name,
            "choices": payload_choices,
            "usage": usage,
        }
        if failure == "truncated_stream":
            text = json.dumps(payload)
            return web.Response(status=200, text=text[: len(text) // 2], content_type="application/json")
        return web.json_response(payload)


def load_models(config: str) -> list[SimulatedModel]:
    """Models from a JSON string or file: `{"models": [{...}, ...]}` or a bare list."""
    text = config if config.lstrip().startswith(("{", "[")) else Path(config).read_text(encoding="utf-8")
    data = json.loads(text)
    items = data.get("models", []) if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ValueError('--config: expected {"models": [{"name": ..., "answer": ...}, ...]}')
    return [SimulatedModel.from_dict(item) for item in items]


@contextlib.contextmanager
def serve(models: Sequence[SimulatedModel], host: str = "127.0.0.1", port: int = 0) -> Iterator[OpenAIServer]:
    """`with serve([...]) as server:` — the same as `with OpenAIServer(...)`, as a function."""
    with OpenAIServer(models=models, host=host, port=port) as server:
        yield server


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve scripted models over an OpenAI-compatible API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--config",
        default='{"models": [{"name": "echo", "echo": true}]}',
        help='JSON text or a path to a JSON file: {"models": [{"name": "m", "answer": "hi", "latency_s": 0.1}]}',
    )
    args = parser.parse_args(argv)
    server = OpenAIServer(models=load_models(args.config), host=args.host, port=args.port)
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    with server:
        print(f"serving {', '.join(server.model_names)} on {server.api_base}", flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
