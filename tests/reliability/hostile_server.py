"""A hostile OpenAI-compatible endpoint on 127.0.0.1: answers that never end, huge bodies, poisoned usage.

The project's loopback server (`uniscale_lc.testing.openai_server`) plays well-behaved models with scripted
faults; this one plays a broken or malicious provider, one behaviour per model name:

- `endless_stream`: SSE chunks of text every few milliseconds, never a finish_reason nor `[DONE]`;
- `endless_body`: a JSON body that is never closed, written 64 KiB at a time;
- `big_body`: a well-formed answer of `big_bytes` bytes (default 50 MB);
- `usage`: a normal answer whose usage block is `usage` (set per test), plain or streamed;
- `retry_after`: 429 with `Retry-After: <retry_after_s>`;
- `null_content`: content null (plain) or a stream whose only chunk carries content null and "stop";
- `ok`: "fine" with sane usage.

`requests[name]` counts the requests each model received; `bytes_sent[name]` what was written.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import threading
import time
from typing import Any

from aiohttp import web

_CHUNK = 64 * 1024
_SANE_USAGE = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}


class HostileServer:
    def __init__(self) -> None:
        self.usage: dict[str, Any] = {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        self.retry_after_s = 29
        self.big_bytes = 50_000_000
        self.requests: collections.Counter[str] = collections.Counter()
        self.bytes_sent: collections.Counter[str] = collections.Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> HostileServer:
        self._thread = threading.Thread(target=self._run, name="hostile-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(10.0):
            raise RuntimeError("hostile server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        loop = self._loop
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._stop(), loop).result(10.0)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10.0)

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _completion(content: Any, usage: Any, model: str) -> dict[str, Any]:
        return {
            "id": "chatcmpl-hostile",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": usage,
        }

    @staticmethod
    def _chunk(model: str, content: Any, finish: str | None = None, usage: Any = None) -> bytes:
        body: dict[str, Any] = {
            "id": "chatcmpl-hostile",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
        }
        if usage is not None:
            body["usage"] = usage
            body["choices"] = []
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    async def _write(self, response: web.StreamResponse, name: str, data: bytes) -> None:
        await response.write(data)
        self.bytes_sent[name] += len(data)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        name = str(body.get("model", ""))
        self.requests[name] += 1
        stream = bool(body.get("stream"))
        if name == "retry_after":
            return web.json_response(
                {"error": {"message": "slow down", "type": "rate_limit", "code": 429}},
                status=429,
                headers={"Retry-After": str(self.retry_after_s)},
            )
        if name == "ok" and not stream:
            return web.json_response(self._completion("fine", _SANE_USAGE, name))
        if name == "usage" and not stream:
            # json.dumps writes 10**400 as a plain integer, as a hostile server could.
            return web.Response(
                text=json.dumps(self._completion("fine", self.usage, name)), content_type="application/json"
            )
        if name == "null_content" and not stream:
            return web.json_response(self._completion(None, self.usage, name))
        if name == "big_body" and not stream:
            return await self._big_body(request, name)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream" if stream else "application/json"}
        )
        await response.prepare(request)
        try:
            if name == "endless_body":
                await self._write(response, name, b'{"id": "x", "choices": [{"message": {"content": "')
                while True:
                    await self._write(response, name, b"a" * _CHUNK)
                    await asyncio.sleep(0.001)
            if name == "endless_stream":
                for index in itertools.count():  # distinct chunks: litellm cuts a stream that repeats one
                    await self._write(response, name, self._chunk(name, f"more{index} "))
                    await asyncio.sleep(0.005)
            if name == "big_body":  # streamed: one huge text delta after another, then a clean end
                piece, written = self._chunk(name, "b" * _CHUNK), 0
                while written < self.big_bytes:
                    await self._write(response, name, piece)
                    written += len(piece)
                await self._write(response, name, self._chunk(name, "", "stop") + b"data: [DONE]\n\n")
            elif name in ("usage", "ok"):
                usage = self.usage if name == "usage" else _SANE_USAGE
                await self._write(response, name, self._chunk(name, "fine "))
                await self._write(response, name, self._chunk(name, "", "stop"))
                await self._write(response, name, self._chunk(name, None, usage=usage))
                await self._write(response, name, b"data: [DONE]\n\n")
            elif name == "null_content":
                await self._write(response, name, self._chunk(name, None, "stop"))
                await self._write(response, name, b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError, RuntimeError):
            pass  # the client hung up: that is what these tests want
        return response

    async def _big_body(self, request: web.Request, name: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        head = json.dumps(self._completion("@@", self.usage, name)).encode()
        before, after = head.split(b"@@")
        try:
            await self._write(response, name, before)
            for _ in range(self.big_bytes // _CHUNK):
                await self._write(response, name, b"c" * _CHUNK)
            await self._write(response, name, after)
        except (ConnectionResetError, RuntimeError):
            pass
        return response
