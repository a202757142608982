"""Reusable fixtures around the scripted OpenAI-compatible server; import the ones a test module needs.

    pytest_plugins = ("fixtures_server",)          # the fixtures
    from fixtures_server import spec_for           # plain helpers

(`tests/` is on sys.path under pytest's default import mode, as it has no __init__.py.)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from uniscale_lc.client import ModelClient, RetryPolicy
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel, echo_answer

FIXED_ANSWER = "the answer is 42"
SERVER_THREAD_PREFIX = "openai-server-"


def default_models() -> list[SimulatedModel]:
    """The models `openai_server` serves: an echo, a fixed answer, and one that calls a tool."""
    return [
        SimulatedModel("echo", echo_answer),
        SimulatedModel("fixed", FIXED_ANSWER, retry_after_s=0.2),
        SimulatedModel(
            "tools", "no tool needed", tool_call={"name": "get_weather", "arguments": {"city": "Paris"}}
        ),
    ]


def spec_for(server: OpenAIServer, model: str, **overrides: Any) -> ModelSpec:
    """A ModelSpec for `model` on `server`: self-hosted pricing (0 USD/h unless given) and a short timeout."""
    fields: dict[str, Any] = {"model": model, "api_base": server.api_base, "timeout_s": 5.0}
    if "input_usd_per_mtok" not in overrides and "gpu_usd_per_hour" not in overrides:
        fields["gpu_usd_per_hour"] = 0.0
    fields.update(overrides)
    return ModelSpec(**fields)


def _server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(SERVER_THREAD_PREFIX)]


@pytest.fixture
def make_server() -> Iterator[Callable[[Sequence[SimulatedModel]], OpenAIServer]]:
    """Factory: `make_server([SimulatedModel(...)])` starts a server that is stopped after the test."""
    servers: list[OpenAIServer] = []
    before = set(_server_threads())

    def factory(models: Sequence[SimulatedModel]) -> OpenAIServer:
        server = OpenAIServer(models=models).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()
    leaked = set(_server_threads()) - before
    assert not leaked, f"server threads still alive after stop(): {leaked}"


@pytest.fixture
def openai_server(make_server: Callable[[Sequence[SimulatedModel]], OpenAIServer]) -> OpenAIServer:
    """A fresh server with `default_models()` (start-up takes milliseconds, so each test gets its own)."""
    return make_server(default_models())


@pytest.fixture
def fast_retry() -> RetryPolicy:
    """Retries with tiny backoff so retry tests stay fast."""
    return RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05, jitter=0.5, max_retry_after_s=2.0)


@pytest.fixture
def model_client(fast_retry: RetryPolicy) -> ModelClient:
    return ModelClient(retry=fast_retry, seed=0)
