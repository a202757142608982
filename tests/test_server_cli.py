"""`uniscale-lc serve`: resolving MODULE:ATTR, refusing bad targets and unset keys, and graceful shutdown
that flushes the state file (in-process, and the real command stopped with SIGTERM)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import openai
import pytest
from fixtures_server import spec_for

from uniscale_lc import Router, UniScaleChat
from uniscale_lc.cli import main as cli_main
from uniscale_lc.demo.problems import generate_problems
from uniscale_lc.demo.run import SYSTEM_PROMPT
from uniscale_lc.errors import ConfigError
from uniscale_lc.server import create_app
from uniscale_lc.server.cli import api_key_from_env, as_router, load_target
from uniscale_lc.server.threaded import ThreadedServer
from uniscale_lc.store import load_state
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel

pytest_plugins = ("fixtures_server",)

ROOT = Path(__file__).resolve().parents[1]
QUESTION = [{"role": "user", "content": "hello there"}]


def test_targets_resolve_to_the_router(openai_server: OpenAIServer) -> None:
    router = Router(models=[spec_for(openai_server, "echo")])
    assert as_router(router, "x") is router
    chat = UniScaleChat(router=router)
    assert as_router(chat, "x") is router
    assert as_router(lambda: chat, "x") is router
    with pytest.raises(ConfigError, match=r"serve.target: x is a int"):
        as_router(3, "x")


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("no_colon", "give MODULE:ATTR"),
        ("no_such_module_xyz:router", "no module 'no_such_module_xyz'"),
        ("uniscale_lc.cli:no_such_attr", "has no attribute 'no_such_attr'"),
        ("uniscale_lc.cli:build_parser", "is a ArgumentParser"),
        ("missing/file.py:router", "is not a file"),
    ],
)
def test_bad_targets_say_what_to_give(target: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_target(target)


def test_the_command_refuses_a_bad_target_or_an_unset_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli_main(["serve", "no_such_module_xyz:router"]) == 2
    assert "no module" in capsys.readouterr().err
    monkeypatch.delenv("UNISCALE_TEST_SERVER_KEY", raising=False)
    assert cli_main(["serve", "uniscale_lc.cli:main", "--api-key-env", "UNISCALE_TEST_SERVER_KEY"]) == 2
    assert "UNISCALE_TEST_SERVER_KEY is unset" in capsys.readouterr().err
    monkeypatch.setenv("UNISCALE_TEST_SERVER_KEY", "k3y-value")
    assert api_key_from_env("UNISCALE_TEST_SERVER_KEY") == "k3y-value"


def test_stopping_the_server_flushes_what_autosave_had_not_written(
    make_server: Callable[[Sequence[SimulatedModel]], OpenAIServer], tmp_path: Path
) -> None:
    models = make_server([SimulatedModel("echo", "hi")])
    state_path = tmp_path / "router.npz"
    # An hour between autosaves: after the first save, only the shutdown flush can write the feedback.
    router = Router(models=[spec_for(models, "echo")], state_path=str(state_path), autosave_interval_s=3600)
    server = ThreadedServer(create_app(router)).start()
    try:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0, timeout=20)
        completion = client.chat.completions.create(model="uniscale", messages=QUESTION)
        deadline = time.monotonic() + 10
        while not state_path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state_path.exists(), "autosave never wrote the first state"
        decision_id = completion.model_extra["uniscale"]["decision_id"]
        response = httpx.post(
            server.base_url + "/v1/feedback", json={"decision_id": decision_id, "score": 1.0}, timeout=20
        )
        assert response.status_code == 200
        client.close()
    finally:
        server.stop()
    arms = load_state(state_path)["stats"]["arms"]
    assert arms["echo|single"]["pulls"] == 1 and arms["echo|single"]["feedback"] == 1
    again = Router(models=[spec_for(models, "echo")], state_path=str(state_path))
    assert again.stats()["arms"]["echo|single"]["mean_quality"] == 1.0
    again.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_the_serve_command_on_the_demo_pool_answers_and_flushes_on_sigterm(tmp_path: Path) -> None:
    state_path = tmp_path / "served.npz"
    port = _free_port()
    env = {**os.environ, "UNISCALE_STATE_PATH": str(state_path), "UNISCALE_TEST_SERVER_KEY": "t0ken-abc"}
    command = [
        sys.executable,
        "-m",
        "uniscale_lc",
        "serve",
        "examples/serve_demo.py:router",
        "--port",
        str(port),
        "--api-key-env",
        "UNISCALE_TEST_SERVER_KEY",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                if httpx.get(base + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)
        client = openai.OpenAI(base_url=base + "/v1", api_key="t0ken-abc", max_retries=0, timeout=30)
        problem = generate_problems(200, seed=0)[0]  # the example's problems (same count and seed)
        completion = client.chat.completions.create(
            model="uniscale",
            messages=[
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": problem.question},
            ],
        )
        assert "The answer is" in (completion.choices[0].message.content or "")
        decision_id = completion.model_extra["uniscale"]["decision_id"]
        feedback = httpx.post(
            base + "/v1/feedback",
            json={"decision_id": decision_id, "score": 1.0},
            headers={"authorization": "Bearer t0ken-abc"},
            timeout=10,
        )
        assert feedback.status_code == 200
        client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
    # uvicorn shuts down gracefully, then re-raises the captured SIGTERM so the parent sees it.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "t0ken-abc" not in output
    stats = load_state(state_path)["stats"]
    assert stats["requests"] == 1
    assert sum(arm["feedback"] for arm in stats["arms"].values()) == 1
