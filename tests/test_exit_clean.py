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
)

# argv: api_base, front end ("chat" or "router"), transport, steps ("s" sync call, "a" asyncio.run of an
# async call, "t" a sync stream, "u" an async stream under asyncio.run), "close" or "exit".
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
