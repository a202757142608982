"""The edges of a chat's life: feedback with absurd keys and scores, streams the caller abandons, empty
answers, and a chat dropped without close() at interpreter exit."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile_server import HostileServer
from reliability_helpers import BACKUP, PRIMARY, make_router

from uniscale_lc.chat_model import UniScaleChat
from uniscale_lc.client import ModelClient, RetryPolicy
from uniscale_lc.errors import FeedbackError
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.store import load_state
from uniscale_lc.testing.openai_server import OpenAIServer

pytestmark = pytest.mark.timeout(180)
HERE = Path(__file__).resolve().parent


@pytest.fixture
def server(fault_server: OpenAIServer, quiet_fallbacks: None) -> OpenAIServer:
    return fault_server


# ---- 14: what errors echo


def test_feedback_errors_echo_at_most_a_capped_part_of_the_key_and_huge_scores_are_typed(
    server: OpenAIServer,
) -> None:
    router = make_router(server)
    message = router.chat.invoke("six times seven?")
    huge_key = "k" * 10_000_000
    with pytest.raises(FeedbackError) as caught:
        router.chat.feedback(huge_key, 0.5)
    print(f"\n10 MB key: a FeedbackError of {len(str(caught.value))} characters")
    assert len(str(caught.value)) < 1_000 and "10,000,002 characters" in str(caught.value)
    for score in (10**400, -(10**400), 10**5000):
        with pytest.raises(FeedbackError, match="score"):
            router.chat.feedback(message, score)
    assert router.chat.feedback(message, 1.0).duplicate is False  # still pending: nothing was lost


# ---- 16: abandoned streams are accounted, one rule for empty answers


def test_a_stream_abandoned_after_two_chunks_is_counted_and_can_be_scored(server: OpenAIServer) -> None:
    router = make_router(server)
    stream = router.chat.stream("six times seven?")
    chunks = [next(stream), next(stream)]
    stream.close()
    calls = server.request_count(PRIMARY) + server.request_count(BACKUP)
    stats = router.chat.stats()
    pulls = sum(arm["pulls"] for arm in stats["arms"].values())
    print(
        f"\nstream abandoned after 2 chunks: {calls} provider call(s); requests {stats['requests']}, "
        f"pulls {pulls}, pending {stats['pending']}"
    )
    assert chunks and calls == 1
    assert stats["requests"] == 1 and pulls == 1 and stats["pending"] == 1
    decision_id = chunks[0].response_metadata.get("uniscale", {}).get("decision_id") or chunks[0].id
    assert decision_id


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileServer]:
    with HostileServer() as running:
        yield running


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_null_content_follows_one_rule_plain_or_streamed(hostile: HostileServer, stream: bool) -> None:
    specs = [
        ModelSpec(model=name, api_base=hostile.api_base, timeout_s=2.0, gpu_usd_per_hour=0.0)
        for name in ("null_content", "ok")
    ]
    chat = UniScaleChat(models=specs, client=ModelClient(retry=RetryPolicy(max_attempts=1), seed=0))
    answers = []
    for index in range(4):
        if stream:
            answers.append("".join(str(chunk.content) for chunk in chat.stream(f"q{index}")).strip())
        else:
            answers.append(str(chat.invoke(f"q{index}").content))
    arms = chat.stats()["arms"]
    print(f"\nnull content ({'stream' if stream else 'invoke'}): answers {answers}; arms {arms}")
    assert answers == ["fine"] * 4  # a null "stop" answer is malformed either way: the other arm answers
    assert arms.get("null_content|single", {}).get("pulls", 0) == 0


# ---- 15: a chat dropped without close()

_DROPPED = textwrap.dedent(
    """
    import gc, sys
    sys.path.insert(0, {here!r})
    from reliability_helpers import fault_models
    from uniscale_lc.chat_model import UniScaleChat
    from uniscale_lc.client import ModelClient, RetryPolicy
    from uniscale_lc.model_spec import ModelSpec
    from uniscale_lc.testing.openai_server import OpenAIServer

    server = OpenAIServer(models=fault_models()).start()
    specs = [ModelSpec(model=m, api_base=server.api_base, timeout_s=5.0, gpu_usd_per_hour=0.0)
             for m in ("primary", "backup")]
    chat = UniScaleChat(models=specs, client=ModelClient(retry=RetryPolicy(max_attempts=1), seed=0),
                        state_path={path!r}, autosave_interval_s=60.0)
    for index in range(6):
        chat.feedback(chat.invoke(f"question {{index}}"), 0.75)
    del chat
    gc.collect()
    server.stop()
    """
)


def test_a_chat_dropped_without_close_is_saved_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "state.npz"
    script = _DROPPED.format(here=str(HERE), path=str(path))
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    tree = load_state(path)
    scored = sum(int(arm["feedback"]) for arm in tree["stats"]["arms"].values())
    print(
        f"\nchat dropped without close(): the file holds {tree['stats']['requests']} of 6 requests, {scored} of 6 feedbacks"
    )
    assert tree["stats"]["requests"] == 6 and scored == 6


def test_a_dropped_chat_is_collectable_once_saved(server: OpenAIServer, tmp_path: Path) -> None:
    import gc
    import weakref

    specs = [
        ModelSpec(model=m, api_base=server.api_base, timeout_s=5.0, gpu_usd_per_hour=0.0)
        for m in ("primary",)
    ]
    chat = UniScaleChat(models=specs, state_path=str(tmp_path / "s.npz"), autosave_interval_s=0.0)
    chat.invoke("q")
    reference = weakref.ref(chat)
    del chat
    gc.collect()
    assert reference() is None  # saved on every event: nothing pins it
