"""State files that are valid zip and JSON but poisonous: shared arrays that amplify, matrices no learning
could produce, FIFOs, symlinks, read-only folders; and configurations the numerics cannot carry."""

from __future__ import annotations

import errno
import os
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from reliability_helpers import fault_models

import uniscale_lc.store as store_module
from uniscale_lc.chat_model import UniScaleChat
from uniscale_lc.client import ModelClient, RetryPolicy
from uniscale_lc.errors import ConfigError, StateError
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.policy import LinUCB
from uniscale_lc.store import load_state, save_state
from uniscale_lc.testing.openai_server import OpenAIServer

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer(models=fault_models()) as running:
        yield running


def _chat(server: OpenAIServer, state_path: Path) -> UniScaleChat:
    specs = [
        ModelSpec(model=name, api_base=server.api_base, timeout_s=5.0, gpu_usd_per_hour=0.0)
        for name in ("primary", "backup")
    ]
    return UniScaleChat(
        models=specs,
        client=ModelClient(retry=RetryPolicy(max_attempts=1), seed=0),
        state_path=str(state_path),
        autosave_interval_s=0.0,
    )


@pytest.fixture(scope="module")
def good_state(server: OpenAIServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real saved tree: 6 answers, 3 scored, 3 pending."""
    path = tmp_path_factory.mktemp("good") / "state.npz"
    chat = _chat(server, path)
    for index in range(6):
        message = chat.invoke(f"question {index}")
        if index % 2:
            chat.feedback(message, 0.9)
    chat.close()
    return load_state(path)


def _copy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _copy(value) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_copy(value) for value in tree]
    if isinstance(tree, np.ndarray):
        return tree.copy()
    return tree


# ---- 11: configuration the numerics cannot carry


@pytest.mark.parametrize("field", ["ridge", "context_ridge"])
@pytest.mark.parametrize("value", [1e-320, 1e-12, 1e12, float("inf")])
def test_ridge_outside_what_the_numerics_carry_is_refused(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        LinUCB(**{field: value})


def test_ridge_at_the_bounds_learns_finite_values() -> None:
    from uniscale_lc.arms import ArmSpace
    from uniscale_lc.strategies import Single

    for ridge in (1e-8, 1e8):
        policy = LinUCB(ridge=ridge, seed=0)
        space = ArmSpace.product([ModelSpec(model="m", gpu_usd_per_hour=0.0)], [Single()])
        policy.bind(space, 4)
        x = np.array([1.0, 0.5, -0.5, 0.25])
        for _ in range(30):
            decision = policy.select(x)
            policy.update(decision, 0.7)
        restored = LinUCB(ridge=ridge, seed=0)
        restored.bind(space, 4)
        restored.load_state_dict(policy.state_dict())  # a state it saved always loads again
        assert restored.select(x).arm_id == decision.arm_id


# ---- 10: finite but poisonous matrices


def _poison(tree: dict[str, Any], how: str) -> dict[str, Any]:
    poisoned = _copy(tree)
    stats = poisoned["policy"]["shared"]
    dim = stats["inverse"].shape[0]
    if how == "negative-definite":
        stats["inverse"] = -np.eye(dim)
    elif how == "huge":
        stats["inverse"] = np.eye(dim) * 1e300
    elif how == "asymmetric":
        stats["inverse"] = stats["inverse"] + np.triu(np.ones((dim, dim)), 1)
    elif how == "per-arm-indefinite":
        arm = next(iter(poisoned["policy"]["per_arm"].values()))
        inverse = arm["inverse"]
        inverse[0, 0] = -1.0
    return poisoned


@pytest.mark.parametrize("how", ["negative-definite", "huge", "asymmetric", "per-arm-indefinite"])
def test_poisonous_matrices_are_refused_at_load(
    server: OpenAIServer, good_state: dict[str, Any], tmp_path: Path, how: str
) -> None:
    path = tmp_path / "state.npz"
    save_state(path, _poison(good_state, how))
    before = path.read_bytes()
    with pytest.raises(StateError, match="inverse"):
        _chat(server, path)
    assert path.read_bytes() == before  # the refused file is not overwritten


def test_a_good_saved_file_loads_and_saves_and_loads_again(
    server: OpenAIServer, good_state: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "state.npz"
    save_state(path, good_state)
    chat = _chat(server, path)
    chat.invoke("one more")
    chat.close()
    again = _chat(server, path)
    assert again.stats()["requests"] == 7
    again.close()


# ---- 9: small files that amplify


def test_one_array_referenced_many_times_is_refused_before_it_is_copied(tmp_path: Path) -> None:
    path = tmp_path / "state.npz"
    big = np.zeros(2_000_000)  # 16 MB, compresses to a few KB
    save_state(path, {"x": big})
    # Rewrite meta.json so that 180 entries point at that one array (2.9 GB if each were copied).
    import io
    import json
    import zipfile

    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    meta = np.load(io.BytesIO(members["meta.npy"]))
    tree = json.loads(meta.tobytes())
    tree["state"] = {"per_arm": {f"arm{i}": {"gram": {"__ndarray__": 0}} for i in range(180)}}
    encoded = json.dumps(tree).encode()
    buffer = io.BytesIO()
    np.save(buffer, np.frombuffer(encoded, dtype=np.uint8))
    members["meta.npy"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    print(f"\nshared-array file: {path.stat().st_size:,} bytes, 180 references to one 16 MB array")
    tracemalloc.start()
    try:
        with pytest.raises(StateError, match="more than once"):
            load_state(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"refused; peak traced allocation {peak / 1e6:.1f} MB")
    assert peak < 200e6


def test_pending_decisions_of_another_shape_are_dropped_not_learnt(
    server: OpenAIServer, good_state: dict[str, Any], tmp_path: Path
) -> None:
    tree = _copy(good_state)
    for item in tree["feedback"]["pending"]:
        item["decision"]["context"] = np.zeros(20_000)
    path = tmp_path / "state.npz"
    save_state(path, tree)
    chat = _chat(server, path)
    assert chat.stats()["pending"] == 0
    assert any("dropped" in line for line in chat.load_report)
    chat.close()


# ---- 12, 13, 8: what state_path points at


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_at_state_path_is_refused_without_hanging(server: OpenAIServer, tmp_path: Path) -> None:
    path = tmp_path / "state.npz"
    os.mkfifo(path)
    outcome: list[BaseException | None] = []

    def construct() -> None:
        try:
            _chat(server, path)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=construct, daemon=True)
    thread.start()
    thread.join(20.0)
    if thread.is_alive():  # unblock the reader so the test process can exit, then fail
        with open(path, "wb"):
            pass
        pytest.fail("the constructor hung on a FIFO at state_path")
    assert isinstance(outcome[0], StateError) and "FIFO" in str(outcome[0])


def test_a_symlinked_state_path_saves_through_to_its_target(
    server: OpenAIServer, good_state: dict[str, Any], tmp_path: Path
) -> None:
    real = tmp_path / "real" / "state.npz"
    real.parent.mkdir()
    save_state(real, good_state)
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    chat = _chat(server, link)
    chat.invoke("through the link")
    chat.close()
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert load_state(real)["stats"]["requests"] == 7  # the target holds the new save
    assert not (tmp_path / "link.npz.lock").exists() and (real.parent / "state.npz.lock").exists()


def test_a_lock_symlink_is_never_written_through(
    server: OpenAIServer, good_state: dict[str, Any], tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path = tmp_path / "state.npz"
    (tmp_path / "state.npz.lock").symlink_to(victim)
    with pytest.raises(StateError, match="symbolic link"):
        save_state(path, good_state)
    assert victim.read_text() == "precious"


def test_a_read_only_folder_loads_a_good_file(
    good_state: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.npz"
    save_state(path, good_state)
    (tmp_path / "state.npz.lock").unlink()
    real_open = os.open

    def read_only_fs(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, flags, *args, **kwargs)

    def read_only_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(flag in mode for flag in "wa+x"):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return open(file, mode, *args, **kwargs)

    monkeypatch.setattr(store_module.os, "open", read_only_fs)
    monkeypatch.setattr(store_module, "open", read_only_open, raising=False)
    assert load_state(path)["stats"]["requests"] == good_state["stats"]["requests"]
    monkeypatch.undo()
    path.write_bytes(b"")  # an unreadable file names its real cause, not "corrupt"
    path.chmod(0)
    if os.geteuid() != 0:  # root reads it anyway
        with pytest.raises(StateError, match="PermissionError"):
            load_state(path)
