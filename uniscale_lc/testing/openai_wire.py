"""How the scripted server's answers go on the wire: OpenAI's JSON bodies, server-sent events, error bodies.

Apart from openai_server.py so the handlers there read as decisions (which model, fail or not, how), and
the byte-level shapes (including the broken ones the `malformed_json`, `empty_choices` and
`truncated_stream` failures send) stand in one place.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .simulated_model import SimulatedModel


def error_response(
    status: int, message: str, kind: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """An error response with OpenAI's body, which the SDK and litellm parse into their exceptions."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return web.json_response(body, status=status, headers=headers)


def format_retry_after(seconds: float) -> str:
    # Retry-After is an integer number of seconds by RFC 9110; keep fractions for fast tests (clients parse floats).
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def full_choice(choice: dict[str, Any]) -> dict[str, Any]:
    """One choice of `make_choices` as a non-streamed response carries it."""
    message: dict[str, Any] = {"role": "assistant", "content": choice["text"]}
    if choice["tool_calls"]:
        message["tool_calls"] = choice["tool_calls"]
    logprobs = {"content": choice["logprobs"]} if choice["logprobs"] is not None else None
    return {
        "index": choice["index"],
        "message": message,
        "logprobs": logprobs,
        "finish_reason": choice["finish_reason"],
    }


async def write_stream(
    request: web.Request,
    body: dict[str, Any],
    config: SimulatedModel,
    completion_id: str,
    created: int,
    choices: list[dict[str, Any]],
    usage: dict[str, int],
    failure: str | None,
) -> web.StreamResponse:
    """Send `choices` as server-sent events, token by token; the stream failures break it on purpose."""
    response = web.StreamResponse(
        status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    async def send(data: dict[str, Any] | str) -> None:
        text = data if isinstance(data, str) else json.dumps(data)
        await response.write(f"data: {text}\n\n".encode())

    def chunk(choice_list: list[dict[str, Any]], with_usage: dict[str, int] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": config.name,
            "choices": choice_list,
        }
        if include_usage:
            out["usage"] = with_usage
        return out

    if failure == "empty_choices":
        await send(chunk([]))
        await send("[DONE]")
        await response.write_eof()
        return response
    if failure == "malformed_json":
        await response.write(b'data: {"id": "chatcmpl-bad", "choices": [\n\n')
        await send("[DONE]")
        await response.write_eof()
        return response

    await send(
        chunk(
            [
                {
                    "index": c["index"],
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
                for c in choices
            ]
        )
    )
    longest = max(len(c["pieces"]) for c in choices)
    for position in range(longest):
        if failure == "truncated_stream" and position >= max(1, longest // 2):
            # Close the connection mid-answer: no finish_reason, no [DONE].
            assert request.transport is not None
            request.transport.close()
            return response
        if config.stream_chunk_delay_s > 0:
            await asyncio.sleep(config.stream_chunk_delay_s)
        deltas = []
        for c in choices:
            if position < len(c["pieces"]):
                entry: dict[str, Any] = {
                    "index": c["index"],
                    "delta": {"content": c["pieces"][position]},
                    "logprobs": None,
                    "finish_reason": None,
                }
                if c["logprobs"] is not None:
                    entry["logprobs"] = {"content": [c["logprobs"][position]]}
                deltas.append(entry)
        await send(chunk(deltas))
    if failure == "truncated_stream":
        assert request.transport is not None
        request.transport.close()
        return response
    for c in choices:
        if c["tool_calls"]:
            calls = [{"index": i, **call} for i, call in enumerate(c["tool_calls"])]
            await send(
                chunk(
                    [
                        {
                            "index": c["index"],
                            "delta": {"tool_calls": calls},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
            )
    await send(
        chunk(
            [
                {"index": c["index"], "delta": {}, "logprobs": None, "finish_reason": c["finish_reason"]}
                for c in choices
            ]
        )
    )
    if include_usage:
        await send(chunk([], usage))
    await send("[DONE]")
    await response.write_eof()
    return response
