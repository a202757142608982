"""Exit is silent (issue 11, bug 6): sync and async calls mixed in one process leave nothing for Python to
complain about at interpreter exit, under `python -X dev` (asyncio debug mode, ResourceWarnings shown).

Each case runs in a subprocess, since what it checks is what the interpreter prints while it shuts down;
the models are the loopback OpenAI-compatible server this test process starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence

import pytest

from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel

pytest_plugins = ("fixtures_server",)
pytestmark = pytest.mark.timeout(180)

MakeServer = Callable[[Sequence[SimulatedModel]], OpenAIServer]

# What an unclean exit prints: a task of a loop nobody ran again, a callback on a closed loop, a socket left
# to the collector, a coroutine dropped unrun.
_SYMPTOMS = (
    "Task was destroyed",
    "Event loop is closed",
    "Traceback",
    "ResourceWarning",
    "nclosed",  # "Unclosed client session", "unclosed transport"
    "was never awaited",
    "error occurred",  # "an error occurred during closing of asynchronous generator" (asyncio's handler)
    "Exception ignored",  # an error Python could only report, e.g. from a finaliser
    "event loop changed",  # litellm's LoggingWorker carrying callbacks an asyncio.run loop left unrun
)

# argv: api_base, front end ("chat" or "router"), transport, steps ("s" sync call, "a" asyncio.run of an
# async call, "t" a sync stream, "u" an async stream under asyncio.run, "b" an async stream broken out of after
# its first chunk under asyncio.run, never closed by the caller, "c" a task reading an async stream cancelled
# while it waits for the next chunk), "close" or "exit".
_SCRIPT = """
import asyncio, sys
from uniscale_lc import ModelSpec, Router, UniScaleChat
from uniscale_lc.client import ModelClient

api_base, front, transport, steps, ending = sys.argv[1:6]
spec = ModelSpec(model="alpha", api_base=api_base, gpu_usd_per_hour=0.0, timeout_s=20.0)
client = ModelClient(transport=transport)
if front == "chat":
    target = UniScaleChat(models=[spec], client=client)
    call, acall = target.invoke, target.ainvoke
    stream, astream = target.stream, target.astream
else:
    target = Router(models=[spec], client=client)
    call, acall = target.complete, target.acomplete
    stream, astream = target.stream, target.astream

async def drain(chunks):
    async for _ in chunks:
        pass

async def first_only(chunks):
    async for _ in chunks:
        break  # as a caller does who has what it wanted: no aclose()

async def cancel_mid_stream(chunks):
    first = asyncio.Event()

    async def read():
        async for _ in chunks:
            first.set()

    reader = asyncio.create_task(read())
    await first.wait()
    await asyncio.sleep(0)  # the reader is back waiting for the next chunk
    reader.cancel()
    try:
        await reader
    except asyncio.CancelledError:
        pass

for step in steps:
    if step == "s":
        call("hello")
    elif step == "a":
        asyncio.run(acall("hello"))
    elif step == "t":
        for _ in stream("hello"):
            pass
    elif step == "u":
        asyncio.run(drain(astream("hello")))
    elif step == "b":
        asyncio.run(first_only(astream("hello")))
    elif step == "c":
        asyncio.run(cancel_mid_stream(astream("hello")))
if ending == "close":
    target.close()
print("done", flush=True)
"""


def _run_and_exit(server: OpenAIServer, front: str, transport: str, steps: str, ending: str) -> str:
    """Run the script under `-X dev`; returns its stderr after checking it finished."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONWARNINGS": "default"}
    command = [sys.executable, "-X", "dev", "-c", textwrap.dedent(_SCRIPT)]
    command += [server.api_base, front, transport, steps, ending]
    # Generous deadline: importing litellm alone takes ~10 s on a loaded 2-core machine.
    done = subprocess.run(command, capture_output=True, text=True, timeout=150, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("done"), done.stdout
    return done.stderr


def _symptoms(stderr: str) -> list[str]:
    return [text for text in _SYMPTOMS if text in stderr]


@pytest.fixture
def server(make_server: MakeServer) -> OpenAIServer:
    return make_server([SimulatedModel("alpha", "alpha says hi")])


@pytest.mark.parametrize(
    ("front", "steps", "ending"),
    [
        ("chat", "sa", "close"),  # invoke, then asyncio.run(ainvoke), then close()
        ("chat", "as", "exit"),  # the reverse order, left to interpreter exit
        ("router", "satu", "close"),  # the Router directly, back and forth, then streams both ways
    ],
)
def test_mixed_sync_and_async_calls_exit_silently_on_litellm(
    server: OpenAIServer, front: str, steps: str, ending: str
) -> None:
    stderr = _run_and_exit(server, front, "litellm", steps, ending)
    assert _symptoms(stderr) == [], stderr


def test_the_background_loop_closes_its_sockets_before_it_stops(server: OpenAIServer) -> None:
    # Sync calls only: every socket is the background loop's, and -X dev names any left open at exit.
    stderr = _run_and_exit(server, "router", "litellm", "ss", "exit")
    assert _symptoms(stderr) == [], stderr


@pytest.fixture
def slow_server(make_server: MakeServer) -> OpenAIServer:
    # Many chunks with a pause between them: a caller who stops after the first leaves the body half read.
    answer = " ".join(f"word{index}" for index in range(40))
    return make_server([SimulatedModel("alpha", answer, stream_chunk_delay_s=0.02)])


@pytest.mark.parametrize("transport", ["auto", "litellm"])  # "auto": the openai-SDK path for this endpoint
@pytest.mark.parametrize(
    ("front", "steps"),
    [
        ("router", "bb"),  # Router.astream broken out of, twice (two loops)
        ("router", "cc"),  # the reading task cancelled mid-stream, twice
        ("chat", "bc"),  # UniScaleChat.astream: broken out of, then cancelled
        ("router", "bsu"),  # a broken-off stream, then a sync call and a whole stream still work
    ],
)
def test_an_async_stream_abandoned_early_exits_silently(
    slow_server: OpenAIServer, front: str, steps: str, transport: str
) -> None:
    stderr = _run_and_exit(slow_server, front, transport, steps, "exit")
    assert _symptoms(stderr) == [], stderr


def test_litellm_logging_callbacks_run_on_the_asyncio_run_loop_that_queued_them(server: OpenAIServer) -> None:
    # Each asyncio.run loop runs the logging callbacks litellm queued on it before it closes, so litellm's
    # worker has nothing to carry to the next loop ("LoggingWorker: event loop changed; carried 1 pending").
    stderr = _run_and_exit(server, "router", "litellm", "aaas", "exit")
    assert _symptoms(stderr) == [], stderr
