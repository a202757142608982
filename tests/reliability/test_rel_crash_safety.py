"""Crash safety of learnt state: SIGKILL at random points, and two processes on one state path.

The writers run in processes forked by `crash_worker.py` (one import, one fork per kill), so 100 kills take
seconds. Each writer resumes from the file the previous one left, learns one update and saves the whole
state in a tight loop until it is killed 20-200 ms after it started.
"""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from crash_worker import (
    expected_pending_ids,
    make_policy,
    make_space,
    pending_for,
    update_for,
)

from uniscale_lc.errors import StateError
from uniscale_lc.store import load_state, save_state, state_lock

KILLS = 100
WORKER = Path(__file__).with_name("crash_worker.py")


class ForkServer:
    def __init__(self) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )

    def ask(self, timeout_s: float = 60.0, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        assert ready, f"fork server gave no answer to {command} within {timeout_s} s"
        line = self.process.stdout.readline()
        assert line, f"fork server died (exit {self.process.poll()})"
        answer: dict[str, Any] = json.loads(line)
        return answer

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def fork_server() -> Iterator[ForkServer]:
    server = ForkServer()
    yield server
    server.close()


def _orphans(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


@pytest.mark.timeout(180)
def test_sigkill_100_times_loses_at_most_the_save_in_flight(fork_server: ForkServer, tmp_path: Path) -> None:
    path = tmp_path / "router.npz"
    seed = 7
    rng = random.Random(20261126)
    space = make_space()
    reference = make_policy(space)  # the same updates applied serially, never interrupted
    reference_step = 0
    durable_step = 0  # the last step the state file is known to hold
    total_saves = 0
    killed_mid_save = 0  # kills that left a temporary file behind
    for kill in range(KILLS):
        answer = fork_server.ask(op="kill", path=str(path), seed=seed, delay_ms=rng.uniform(20, 200))
        assert answer["ended"] == "signal:9", (
            f"kill {kill}: the writer ended by {answer['ended']}, not SIGKILL"
        )
        if answer["resumed_from"] is not None:
            # The writer itself loaded what the last killed writer left behind.
            assert answer["resumed_from"] == durable_step, f"kill {kill}: resumed from the wrong step"
        completed = answer["last_completed_save"] or durable_step
        total_saves += answer["saves"]

        tree = load_state(path)  # never raises: the file always loads
        step = int(tree["step"])
        # At most the save in flight is lost; a save that finished its rename but was killed before
        # reporting may be one ahead.
        assert completed <= step <= completed + 1, (
            f"kill {kill}: file holds step {step}, completed {completed}"
        )
        assert step >= durable_step, "a step regressed"
        durable_step = step

        # Nothing corrupt: what is stored equals the same updates applied serially in one process.
        while reference_step < step:
            reference_step += 1
            reference.update(*update_for(space, seed, reference_step))
        restored = make_policy(space)
        assert restored.load_state_dict(tree["policy"]) == []
        _assert_same_learning(restored.state_dict(), reference.state_dict(), step)
        # Pending decisions (issued, not yet rewarded) survive the kill.
        pending = [item["decision_id"] for item in tree["pending"]]
        assert pending == expected_pending_ids(seed, step)
        assert tree["pending"][-1]["arm_id"] == pending_for(space, seed, step).arm_id

        # A kill mid-save may leave its temporary file; the next save clears it, so none pile up.
        assert len(_orphans(path)) <= 1, f"kill {kill}: orphaned temporary files {_orphans(path)}"
        killed_mid_save += len(_orphans(path))
        # The killed writer's lock died with it.
        with state_lock(path):
            pass
    assert total_saves > 0, "no writer ever completed a save: the kills tested nothing"
    print(
        f"\n{KILLS} SIGKILLs ({killed_mid_save} mid-save), {total_saves} completed saves, "
        f"final step {durable_step}, 0 corrupt loads, 0 lost completed saves"
    )
    save_state(path, load_state(path))
    assert _orphans(path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["router.npz", "router.npz.lock"]


def _assert_same_learning(got: dict[str, Any], want: dict[str, Any], step: int) -> None:
    assert got["shared"]["updates"] == want["shared"]["updates"] == step
    np.testing.assert_allclose(got["shared"]["gram"], want["shared"]["gram"], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got["shared"]["target"], want["shared"]["target"], rtol=1e-9, atol=1e-9)
    assert sorted(got["per_arm"]) == sorted(want["per_arm"])
    for arm_id, stats in want["per_arm"].items():
        assert got["per_arm"][arm_id]["updates"] == stats["updates"]
        np.testing.assert_allclose(got["per_arm"][arm_id]["gram"], stats["gram"], rtol=1e-9, atol=1e-9)
        # Per-arm targets regress the shared model's residual, which depends on float rounding of the
        # incremental weights (a resumed process recomputes them exactly): equal to 1e-6.
        np.testing.assert_allclose(got["per_arm"][arm_id]["target"], stats["target"], rtol=1e-6, atol=1e-6)


@pytest.mark.timeout(120)
def test_two_writers_and_two_readers_never_see_a_torn_file(fork_server: ForkServer, tmp_path: Path) -> None:
    path = tmp_path / "shared.npz"
    answer = fork_server.ask(op="race", path=str(path), writers=2, saves=150, readers=2, loads=150)
    assert answer["ended"] == ["exit:0"] * 4
    assert answer["saves"] == 300
    assert answer["torn_loads"] == 0
    assert answer["consistent_loads"] == 300
    final = load_state(path)
    # Last complete save wins: the file is wholly the final state of one of the writers.
    assert int(final["step"]) == 150 and int(final["writer"]) in (1, 2)
    assert _orphans(path) == []
    print("\n2 writers x 150 saves, 2 readers x 150 loads on one path: 0 torn, 0 failed")


def test_a_save_waits_for_the_lock_holder(tmp_path: Path) -> None:
    """The lock is the contract between processes: while another holder has it, the file is not replaced."""
    path = tmp_path / "locked.npz"
    save_state(path, {"owner": "first"})
    code = (
        "import sys; from uniscale_lc.store import save_state; "
        "print('started', flush=True); save_state(sys.argv[1], {'owner': 'second'}); print('saved', flush=True)"
    )
    with state_lock(path):
        child = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "started"
        ready, _, _ = select.select([child.stdout], [], [], 1.0)
        assert not ready, "the second process saved while the first held the lock"
        assert load_state_unlocked(path)["owner"] == "first"
    assert child.wait(timeout=30) == 0
    assert child.stdout.readline().strip() == "saved"
    assert load_state(path)["owner"] == "second"


def load_state_unlocked(path: Path) -> dict[str, Any]:
    """Read the state while this process itself holds the lock (flock is per open file, so re-taking it
    from the same process would block): copy the file and load the copy."""
    copy = path.with_name("copy-" + path.name)
    copy.write_bytes(path.read_bytes())
    try:
        return load_state(copy)
    finally:
        copy.unlink()
        copy.with_name(copy.name + ".lock").unlink(missing_ok=True)


def test_a_truncated_file_is_refused_and_the_good_one_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "router.npz"
    space = make_space()
    policy = make_policy(space)
    policy.update(*update_for(space, 1, 1))
    save_state(path, {"policy": policy.state_dict()})
    good = path.read_bytes()
    for cut in (0, 1, 22, len(good) // 3, len(good) - 1):
        broken = tmp_path / f"broken-{cut}.npz"
        broken.write_bytes(good[:cut])
        with pytest.raises(StateError, match=r"truncated or corrupt|meta\.json|not a uniscale"):
            load_state(broken)
    assert path.read_bytes() == good


def test_two_chat_models_on_one_state_path_last_complete_save_wins(tmp_path: Path) -> None:
    """No merge: each process saves its whole state, so the file is always one process's complete state,
    and the other's learning since its last load is not in it (documented: one state_path per process)."""
    from test_rel_load import InstantClient, _specs

    from uniscale_lc.chat_model import UniScaleChat

    path = tmp_path / "shared.npz"
    first = UniScaleChat(models=_specs(), client=InstantClient(), state_path=str(path))
    second = UniScaleChat(models=_specs(), client=InstantClient(), state_path=str(path))
    for index in range(5):
        first.feedback(first.invoke(f"first {index}"), 1.0)
    first.close()
    for index in range(3):
        second.feedback(second.invoke(f"second {index}"), 0.0)
    second.close()
    restarted = UniScaleChat(models=_specs(), client=InstantClient(), state_path=str(path))
    assert restarted.stats()["requests"] == 3  # wholly the second process's state, the last to save
    assert restarted._policy.state_dict()["shared"]["updates"] == 3
    assert _orphans(path) == []
