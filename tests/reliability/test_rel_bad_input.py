"""Bad input, with a clear error and nothing lost; property-based fuzzing of the public API and the loader."""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
import logging
import math
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import HumanMessage, SystemMessage
from reliability_helpers import fault_models, make_router
from test_rel_load import InstantClient, _specs

from uniscale_lc.chat_model import UniScaleChat
from uniscale_lc.errors import ConfigError, FeedbackError, StateError
from uniscale_lc.store import load_state, save_state
from uniscale_lc.strategies import MajorityVote, Single
from uniscale_lc.testing.openai_server import OpenAIServer

pytestmark = pytest.mark.timeout(240)
FUZZ_EXAMPLES = 150


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="uniscale_lc")


def _chat(**fields: Any) -> UniScaleChat:
    return UniScaleChat(models=_specs(), client=InstantClient(), **fields)


def _learnt(chat: UniScaleChat) -> dict[str, Any]:
    return copy.deepcopy(chat._policy.state_dict())


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    return bool(a == b)


# ---------------------------------------------------------------------------------------------- messages


def test_non_text_content_and_enormous_prompts_get_an_answer() -> None:
    chat = _chat()
    image: list[str | dict[Any, Any]] = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    ]
    for messages in (
        [HumanMessage(content=image)],
        [SystemMessage("only a system message")],
        [HumanMessage(content=[{"type": "text", "text": "hi"}, {"type": "unknown-part"}])],
        [HumanMessage("word " * 1_000_000)],  # 5 MB
    ):
        assert chat.invoke(messages).response_metadata["uniscale"]["decision_id"]


def test_an_empty_message_list_is_refused_up_front_without_penalising_any_arm() -> None:
    with OpenAIServer(models=fault_models()) as server:
        router = make_router(server)
        before = _learnt(router.chat)
        with pytest.raises(ConfigError):
            router.chat.invoke([])
        assert _same(_learnt(router.chat), before)


# ---------------------------------------------------------------------------------------------- feedback


@pytest.mark.parametrize(
    "score", [math.nan, math.inf, -math.inf, -0.01, 1.01, 1e308, "0.5", True, None, [0.5]]
)
def test_invalid_scores_are_refused_and_nothing_is_lost(score: Any) -> None:
    chat = _chat()
    message = chat.invoke("a question")
    before = _learnt(chat)
    with pytest.raises(FeedbackError, match=r"feedback\.score"):
        chat.feedback(message, score)
    assert _same(_learnt(chat), before)
    assert chat.stats()["pending"] == 1  # still waiting: a valid score is learnt later
    assert not chat.feedback(message, 0.75).duplicate


def test_unknown_and_duplicate_feedback_keys() -> None:
    chat = _chat()
    message = chat.invoke("a question")
    for key in ("never-issued", "", 123, None, object()):
        with pytest.raises(FeedbackError, match=r"feedback\.key"):
            chat.feedback(key, 0.5)
    first = chat.feedback(message, 0.5)
    before = _learnt(chat)
    again = chat.feedback(message.response_metadata["uniscale"]["decision_id"], 0.9)
    assert again.duplicate and again.quality == first.quality == 0.5
    assert _same(_learnt(chat), before)  # the duplicate taught nothing


def test_feedback_for_an_arm_removed_since_is_still_learnt() -> None:
    chat = _chat()
    message = chat.invoke("a question")
    arm_id = message.response_metadata["uniscale"]["arm"]
    chat.arm_space.remove(arm_id)
    result = chat.feedback(message, 1.0)
    assert result.arm_id == arm_id and not result.duplicate
    assert chat._policy.state_dict()["per_arm"][arm_id]["updates"] == 1
    assert chat.invoke("another").response_metadata["uniscale"]["arm"] != arm_id


# ---------------------------------------------------------------------------------------------- state files


def _saved_chat(path: Path, requests: int = 6, scored: int = 3) -> tuple[UniScaleChat, list[str]]:
    chat = _chat(state_path=str(path))
    ids = []
    for index in range(requests):
        message = chat.invoke(f"question {index}")
        ids.append(message.response_metadata["uniscale"]["decision_id"])
    for decision_id in ids[:scored]:
        chat.feedback(decision_id, 0.8)
    chat.close()  # the process ends: autosave writes what it had pending
    return chat, ids


def test_pending_decisions_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "router.npz"
    first, ids = _saved_chat(path)
    restarted = _chat(state_path=str(path))
    assert restarted.stats()["pending"] == 3
    assert _same(restarted._policy.state_dict(), first._policy.state_dict())
    for decision_id in ids[3:]:
        assert not restarted.feedback(decision_id, 0.4).duplicate
    for decision_id in ids[:3]:  # scored before the restart: still recognised as duplicates
        assert restarted.feedback(decision_id, 0.1).duplicate


def _rewrite_meta(path: Path, edit: Any) -> None:
    """Hand-edit the JSON inside a saved state file, keeping the arrays."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    meta = json.loads(np.load(io.BytesIO(members["meta.npy"])).tobytes())
    edit(meta)
    buffer = io.BytesIO()
    np.save(buffer, np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    members["meta.npy"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda meta: meta.__setitem__("version", 99), id="newer-version"),
        pytest.param(lambda meta: meta.__setitem__("version", 0), id="version-0"),
        pytest.param(lambda meta: meta.__setitem__("format", "something-else"), id="foreign-format"),
        pytest.param(lambda meta: meta["state"].pop("policy"), id="no-policy"),
        pytest.param(
            lambda meta: meta["state"]["policy"].__setitem__("context_dim", 3), id="other-featurizer"
        ),
        pytest.param(lambda meta: meta["state"]["policy"].__setitem__("kind", "fixed"), id="other-policy"),
        pytest.param(lambda meta: meta["state"]["policy"].__setitem__("per_arm", [1, 2]), id="per-arm-list"),
        pytest.param(lambda meta: meta["state"]["policy"].__setitem__("config", 5), id="config-number"),
        pytest.param(
            lambda meta: meta["state"]["policy"]["config"].__setitem__("alpha", -1), id="alpha-negative"
        ),
        pytest.param(lambda meta: meta["state"]["policy"].__setitem__("rng", {"state": 1}), id="rng-garbage"),
        pytest.param(
            lambda meta: meta["state"]["cost_model"].__setitem__("per_arm", {"x": 1}), id="cost-garbage"
        ),
        pytest.param(lambda meta: meta["state"]["policy"]["shared"].pop("target"), id="missing-array"),
        pytest.param(
            lambda meta: meta["state"]["policy"]["shared"].__setitem__("gram", {"__ndarray__": 999}),
            id="dangling-array",
        ),
    ],
)
def test_foreign_or_hand_edited_state_files_are_refused_with_state_error(tmp_path: Path, edit: Any) -> None:
    path = tmp_path / "router.npz"
    _saved_chat(path)
    _rewrite_meta(path, edit)
    edited = path.read_bytes()
    with pytest.raises(StateError):
        _chat(state_path=str(path))
    assert path.read_bytes() == edited  # a refused file is never overwritten


def test_a_bad_state_file_raises_state_error_itself(tmp_path: Path) -> None:
    path = tmp_path / "router.npz"
    path.write_bytes(b"not a state file")
    with pytest.raises(StateError):
        _chat(state_path=str(path))


def test_an_arm_space_changed_between_runs_keeps_what_was_learnt(tmp_path: Path) -> None:
    path = tmp_path / "router.npz"
    first, _ = _saved_chat(path, requests=12, scored=6)
    learnt = first._policy.state_dict()["per_arm"]
    # Drop the "large" model, add a majority-vote strategy: some arms go, new arms come.
    changed = UniScaleChat(
        models=_specs()[:2],
        strategies=[Single(), MajorityVote(n=3)],
        client=InstantClient(),
        state_path=str(path),
    )
    kept = changed._policy.state_dict()["per_arm"]
    for arm_id, arm_state in learnt.items():  # learnt state of removed arms is kept for their return
        np.testing.assert_array_equal(kept[arm_id]["gram"], arm_state["gram"])
    removed = [arm_id for arm_id in learnt if arm_id.startswith("large|")]
    assert all(any(arm_id in line for line in changed.load_report) for arm_id in removed[:5]) or not removed
    assert changed.invoke("new question").response_metadata["uniscale"]["arm"] in changed.arm_space


# ---------------------------------------------------------------------------------------------- fuzzing

_scores = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
    st.lists(st.floats(), max_size=2),
)
_keys = st.one_of(st.text(max_size=40), st.uuids(), st.integers(), st.none(), st.just("lc_run--"))
_texts = st.text(max_size=300)
_content = st.one_of(
    _texts,
    st.lists(
        st.one_of(
            st.fixed_dictionaries({"type": st.just("text"), "text": _texts}),
            st.fixed_dictionaries({"type": st.text(max_size=10)}),
        ),
        max_size=4,
    ),
)


@pytest.fixture(scope="module")
def fuzz_chat() -> Iterator[UniScaleChat]:
    yield _chat()


@settings(
    max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    contents=st.lists(_content, min_size=1, max_size=3), key=_keys, score=_scores, use_answer=st.booleans()
)
def test_fuzz_public_api(
    fuzz_chat: UniScaleChat, contents: list[Any], key: Any, score: Any, use_answer: bool
) -> None:
    """Any message content, any key, any score: an answer, a FeedbackResult or a typed error; a refused
    feedback changes nothing learnt."""
    message = fuzz_chat.invoke([HumanMessage(content=content) for content in contents])
    target = message if use_answer else key
    before = _learnt(fuzz_chat)
    pending_before = fuzz_chat.stats()["pending"]
    try:
        result = fuzz_chat.feedback(target, score)
    except FeedbackError:
        assert _same(_learnt(fuzz_chat), before)
        assert fuzz_chat.stats()["pending"] == pending_before
    else:
        assert 0.0 <= result.quality <= 1.0


def _valid_state_bytes() -> bytes:
    chat = _chat()
    for index in range(4):
        chat.feedback(chat.invoke(f"q{index}"), 0.5)
    chat.invoke("left pending")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.npz"
        chat.save(path)
        return path.read_bytes()


@functools.cache
def _valid_state() -> bytes:
    return _valid_state_bytes()


@settings(
    max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzz_state_loader(tmp_path_factory: pytest.TempPathFactory, data: Any) -> None:
    """Flipped, cut, spliced or random bytes: the loader returns a state or raises StateError, and a chat
    model built on the file either starts or raises StateError; nothing else, nothing written."""
    mode = data.draw(st.sampled_from(["flip", "cut", "splice", "random"]))
    blob = bytearray(_valid_state())
    if mode == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
    elif mode == "cut":
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    elif mode == "splice":
        start = data.draw(st.integers(0, len(blob)))
        blob[start:start] = data.draw(st.binary(max_size=64))
    else:
        blob = bytearray(data.draw(st.binary(max_size=2048)))
    path = tmp_path_factory.mktemp("fuzz") / "router.npz"
    path.write_bytes(bytes(blob))
    with contextlib.suppress(StateError):
        load_state(path)
    with contextlib.suppress(StateError):
        _chat(state_path=str(path))
    assert path.read_bytes() == bytes(blob)
    assert sorted(p.name for p in path.parent.iterdir()) in (
        ["router.npz"],
        ["router.npz", "router.npz.lock"],
    )


@settings(max_examples=60, deadline=None)
@given(
    tree=st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**53), 2**53),
            st.floats(allow_nan=False),
            st.text(max_size=20),
        ),
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=30,
    )
)
def test_fuzz_save_then_load_round_trips_any_plain_tree(tree: Any) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.npz"
        try:
            save_state(path, {"value": tree})
        except StateError:
            return  # e.g. the reserved key; refused before anything is written
        assert load_state(path) == {"value": json.loads(json.dumps(tree))}
