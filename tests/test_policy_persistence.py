"""Policy persistence through store.save_state/load_state: exact round trips, arm-space changes, refusal
of corrupt, oversized, newer and pickled files without ever replacing the good file."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pytest
from test_linucb import LinearBandit, make_models, make_space

from uniscale_lc import store
from uniscale_lc.arms import Arm, ArmSpace
from uniscale_lc.errors import StateError
from uniscale_lc.policy import LinUCB
from uniscale_lc.store import load_state, save_state
from uniscale_lc.strategies import BestOfN, MajorityVote, Single

DIM = 6


def trained_policy(space: ArmSpace, rounds: int = 300, **options) -> tuple[LinUCB, LinearBandit]:
    policy = LinUCB(seed=4, **options)
    policy.bind(space, DIM)
    bandit = LinearBandit(space, DIM, seed=8)
    for _ in range(rounds):
        x = bandit.context()
        decision = policy.select(x)
        policy.update(decision, bandit.reward(x, decision.arm_id))
    return policy, bandit


@pytest.mark.parametrize("options", [{}, {"forgetting": 0.995, "refresh_every": 50}])
def test_round_trip_gives_identical_selections(tmp_path, options):
    space = make_space(3)
    policy, bandit = trained_policy(space, **options)
    path = save_state(tmp_path / "state.npz", {"policy": policy.state_dict()})
    restored = LinUCB(**options)
    restored.bind(space, DIM)
    assert restored.load_state_dict(load_state(path)["policy"]) == []
    # Select and learn on the same stream: identical choices and scores, to the last bit.
    for _ in range(100):
        x = bandit.context()
        a, b = policy.select(x), restored.select(x)
        assert a.arm_id == b.arm_id
        assert [s.to_dict() for s in a.scores] == [s.to_dict() for s in b.scores]
        reward = bandit.reward(x, a.arm_id)
        policy.update(a, reward)
        restored.update(b, reward)


def test_tie_breaking_generator_is_restored(tmp_path):
    space = make_space(3)
    policy = LinUCB(shared=False, seed=9)  # untrained: every arm ties, choices come from the generator
    policy.bind(space, DIM)
    for _ in range(5):
        policy.select(np.zeros(DIM))
    path = save_state(tmp_path / "s.npz", {"policy": policy.state_dict()})
    restored = LinUCB(shared=False, seed=0)
    restored.bind(space, DIM)
    restored.load_state_dict(load_state(path)["policy"])
    assert [policy.select(np.zeros(DIM)).arm_id for _ in range(30)] == [
        restored.select(np.zeros(DIM)).arm_id for _ in range(30)
    ]


def test_loading_into_a_different_arm_space_maps_by_id_and_reports_dropped(tmp_path):
    models = make_models(2)
    old_space = ArmSpace.product(models, [Single(), BestOfN(n=4), MajorityVote(n=5)])
    policy, bandit = trained_policy(old_space)
    path = save_state(tmp_path / "s.npz", {"policy": policy.state_dict()})
    # The new space lists arms in another order, drops two and adds one.
    kept = [
        Arm(models[1], MajorityVote(n=5)),
        Arm(models[0], Single()),
        Arm(models[1], Single()),
        Arm(models[0], BestOfN(n=4)),
    ]
    new_space = ArmSpace([*kept, Arm(models[0], MajorityVote(n=9))])
    restored = LinUCB()
    restored.bind(new_space, DIM)
    dropped = restored.load_state_dict(load_state(path)["policy"])
    assert dropped == sorted({arm.id for arm in old_space} - {arm.id for arm in new_space})
    kept_ids = [arm.id for arm in kept]
    for _ in range(10):
        x = bandit.context()
        _, mean_old, bonus_old, _ = policy.score(x, arms=kept_ids)
        _, mean_new, bonus_new, _ = restored.score(x, arms=kept_ids)
        assert np.allclose(mean_old, mean_new, rtol=1e-12) and np.allclose(bonus_old, bonus_new, rtol=1e-12)
    # A dropped arm that comes back resumes what it had learnt.
    returning = next(arm for arm in old_space if arm.id in dropped)
    new_space.add(returning)
    x = bandit.context()
    _, mean_old, bonus_old, _ = policy.score(x, arms=[returning.id])
    _, mean_new, bonus_new, _ = restored.score(x, arms=[returning.id])
    assert np.allclose(mean_old, mean_new, rtol=1e-12) and np.allclose(bonus_old, bonus_new, rtol=1e-12)


def test_incompatible_or_edited_policy_state_raises_and_changes_nothing(tmp_path):
    space = make_space(2)
    policy, bandit = trained_policy(space)
    good = policy.state_dict()
    x = bandit.context()
    before = policy.score(x)
    edited = [
        {**good, "context_dim": DIM + 1},
        {**good, "kind": "random"},
        {**good, "arm_feature_names": ["bias"]},
        {**good, "shared": {**good["shared"], "inverse": np.zeros((3, 3))}},
        {**good, "shared": {k: v for k, v in good["shared"].items() if k != "target"}},
        {**good, "per_arm": {space.ids[0]: {"gram": "x"}}},
        {k: v for k, v in good.items() if k != "projection"},
    ]
    for state in edited:
        with pytest.raises(StateError):
            policy.load_state_dict(state)
        after = policy.score(x)
        assert np.array_equal(before[1], after[1]) and np.array_equal(before[2], after[2])


# ----------------------------------------------------------------------------- hostile files


@pytest.fixture()
def good_file(tmp_path):
    policy, _ = trained_policy(make_space(2), rounds=50)
    path = save_state(tmp_path / "state.npz", {"policy": policy.state_dict()})
    return path, path.read_bytes()


def test_truncated_and_corrupted_files_raise_state_error(good_file, tmp_path):
    _, payload = good_file
    bad = tmp_path / "bad.npz"
    cases = [payload[: len(payload) // 2], payload[:10], b"", b"not a zip at all" * 10]
    flipped = bytearray(payload)
    for offset in range(200, len(flipped) - 200, max(1, len(flipped) // 7)):
        flipped[offset] ^= 0xFF
    cases.append(bytes(flipped))
    for content in cases:
        bad.write_bytes(content)
        with pytest.raises(StateError):
            load_state(bad)
    with pytest.raises(StateError, match="does not exist"):
        load_state(tmp_path / "missing.npz")


def test_oversized_file_is_refused_before_parsing(good_file):
    path, payload = good_file
    with pytest.raises(StateError, match="limit"):
        load_state(path, max_bytes=len(payload) - 1)


def test_failed_saves_never_replace_the_good_file(good_file, monkeypatch):
    path, payload = good_file
    with pytest.raises(StateError):
        save_state(path, {"policy": {"bad": object()}})
    with pytest.raises(StateError):
        save_state(path, {"policy": {"nan": float("nan")}})
    with pytest.raises(StateError):
        save_state(path, {"strings": np.array(["a", "b"], dtype=object)})
    monkeypatch.setattr(store, "MAX_STATE_BYTES", 64)
    with pytest.raises(StateError, match="limit"):
        save_state(path, {"big": np.zeros(1000)})
    assert path.read_bytes() == payload
    assert load_state(path)["policy"]["kind"] == "linucb"


def test_newer_version_is_refused(good_file, monkeypatch, tmp_path):
    monkeypatch.setattr(store, "VERSION", store.VERSION + 1)
    newer = save_state(tmp_path / "newer.npz", {"x": 1})
    monkeypatch.undo()
    with pytest.raises(StateError, match="version"):
        load_state(newer)


class _Exploit:
    triggered = False

    def __reduce__(self):
        return (_trigger, ())


def _trigger():
    _Exploit.triggered = True
    return "pwned"


def _npz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def test_no_pickle_object_arrays_and_pickled_members_are_refused(tmp_path):
    meta = {"format": store.FORMAT, "version": store.VERSION, "state": {"x": {"__ndarray__": 0}}}
    meta_npy = _npy(np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    object_array = np.empty(1, dtype=object)
    object_array[0] = _Exploit()
    crafted = {
        "object array member": {"meta.npy": meta_npy, "a0.npy": _npy(object_array)},
        "pickled member": {"meta.npy": meta_npy, "a0.npy": pickle.dumps(_Exploit())},
        "extra pickle file": {
            "meta.npy": meta_npy,
            "a0.npy": _npy(np.zeros(2)),
            "evil.pkl": pickle.dumps(_Exploit()),
        },
        "no meta": {"a0.npy": _npy(np.zeros(2))},
    }
    for label, members in crafted.items():
        path = tmp_path / f"{label.replace(' ', '_')}.npz"
        path.write_bytes(_npz(members))
        with pytest.raises(StateError):
            load_state(path)
        assert not _Exploit.triggered, label
