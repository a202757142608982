"""A fork server for the crash-safety tests: forks writers that update and save learnt state until killed.

Started once per test (imports cost about a second; a fork costs a millisecond), it reads one JSON
command per line on stdin and answers one JSON line on stdout:

* `{"op": "kill", "path": ..., "seed": ..., "delay_ms": ...}`: fork a writer that resumes from `path` (when
  it exists) and loops "learn one update, save the whole state"; SIGKILL it after `delay_ms`; answer with how
  it died and the last step whose save had completed (reported by the writer over a pipe after `save_state`
  returned).
* `{"op": "race", "path": ..., "writers": k, "saves": n, "readers": r, "loads": m}`: k writers save n
  self-checking states each to the same path while r readers load it m times; answer with what they saw.

Updates are a pure function of (seed, step), so the test replays them and compares what survived.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from uniscale_lc.arms import ArmSpace
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.policy import Decision, LinUCB
from uniscale_lc.store import load_state, save_state
from uniscale_lc.strategies import BestOfN, MajorityVote, Single

CONTEXT_DIM = 12
PENDING_KEPT = 16
_RECORD = struct.Struct("<cq")  # (kind, step); 9-byte writes to a pipe are atomic


def make_space() -> ArmSpace:
    models = [
        ModelSpec(model=f"m{i}", input_usd_per_mtok=0.1 * (i + 1), output_usd_per_mtok=0.4 * (i + 1))
        for i in range(3)
    ]
    return ArmSpace.product(models, [Single(), BestOfN(n=4), MajorityVote(n=5)])


def make_policy(space: ArmSpace) -> LinUCB:
    policy = LinUCB(alpha=1.0, refresh_every=64, seed=0)
    policy.bind(space, CONTEXT_DIM)
    return policy


def update_for(space: ArmSpace, seed: int, step: int) -> tuple[Decision, float]:
    """The `step`-th (1-based) rewarded decision of run `seed`: a pure function, so the test can replay it."""
    rng = np.random.default_rng([seed, step])
    context = rng.normal(size=CONTEXT_DIM)
    arm_id = space.ids[int(rng.integers(len(space)))]
    decision = Decision(arm_id=arm_id, context=context, decision_id=f"u{seed}-{step}", created_at=float(step))
    return decision, float(rng.uniform(-0.2, 1.0))


def pending_for(space: ArmSpace, seed: int, step: int) -> Decision:
    """The decision issued at `step` whose reward has not arrived: it must survive a restart."""
    decision, _ = update_for(space, seed + 1_000_003, step)
    return Decision(
        arm_id=decision.arm_id,
        context=decision.context,
        decision_id=f"p{seed}-{step}",
        created_at=float(step),
    )


def expected_pending_ids(seed: int, step: int) -> list[str]:
    return [f"p{seed}-{s}" for s in range(max(1, step - PENDING_KEPT + 1), step + 1)]


def state_tree(step: int, policy: LinUCB, pending: deque[Decision]) -> dict[str, Any]:
    return {
        "step": step,
        "policy": policy.state_dict(),
        "pending": [decision.to_dict() for decision in pending],
    }


def _writer(path: Path, seed: int, progress_fd: int) -> None:
    space = make_space()
    policy = make_policy(space)
    pending: deque[Decision] = deque(maxlen=PENDING_KEPT)
    step = 0
    if path.exists():
        tree = load_state(path)
        policy.load_state_dict(tree["policy"])
        pending.extend(Decision.from_dict(item) for item in tree["pending"])
        step = int(tree["step"])
    os.write(progress_fd, _RECORD.pack(b"R", step))
    while True:
        step += 1
        decision, reward = update_for(space, seed, step)
        policy.update(decision, reward)
        pending.append(pending_for(space, seed, step))
        save_state(path, state_tree(step, policy, pending))
        os.write(progress_fd, _RECORD.pack(b"S", step))


def _read_records(fd: int) -> list[tuple[bytes, int]]:
    chunks = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    data = b"".join(chunks)
    usable = len(data) - len(data) % _RECORD.size
    return [_RECORD.unpack_from(data, offset) for offset in range(0, usable, _RECORD.size)]


def _fork(target: Any, *args: Any) -> tuple[int, int]:
    """Fork `target(*args, write_fd)`; returns (pid, read_fd). The child never returns."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        code = 0
        try:
            target(*args, write_fd)
        except BaseException as error:  # reported as an exit code; the parent fails the test
            sys.stderr.write(f"worker {os.getpid()} failed: {type(error).__name__}: {error}\n")
            code = 3
        os._exit(code)
    os.close(write_fd)
    return pid, read_fd


def _how_it_ended(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal:{os.WTERMSIG(status)}"
    return f"exit:{os.WEXITSTATUS(status)}"


def kill_once(path: str, seed: int, delay_ms: float) -> dict[str, Any]:
    pid, read_fd = _fork(_writer, Path(path), seed)
    # Start the clock once the writer has loaded what its predecessor left, so the kill lands in the
    # update-and-save loop whatever the machine's speed.
    first = b""
    while len(first) < _RECORD.size:
        chunk = os.read(read_fd, _RECORD.size - len(first))
        if not chunk:
            break
        first += chunk
    time.sleep(delay_ms / 1000.0)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    records = ([_RECORD.unpack(first)] if len(first) == _RECORD.size else []) + _read_records(read_fd)
    resumed = [step for kind, step in records if kind == b"R"]
    saved = [step for kind, step in records if kind == b"S"]
    return {
        "ended": _how_it_ended(status),
        "resumed_from": resumed[0] if resumed else None,
        "last_completed_save": saved[-1] if saved else None,
        "saves": len(saved),
    }


def _race_writer(path: Path, writer: int, saves: int, progress_fd: int) -> None:
    for step in range(1, saves + 1):
        mark = writer * 1_000_000 + step
        save_state(
            path,
            {
                "writer": writer,
                "step": step,
                "mark": mark,
                # Large enough that a torn write would show: every element must equal `mark`.
                "block": np.full((64, 64), float(mark)),
                "tail": np.arange(4096, dtype=np.int64) + mark,
            },
        )
        os.write(progress_fd, _RECORD.pack(b"S", mark))


def _race_reader(path: Path, loads: int, progress_fd: int) -> None:
    for _ in range(loads):
        tree = load_state(path)
        mark = int(tree["mark"])
        consistent = (
            mark == int(tree["writer"]) * 1_000_000 + int(tree["step"])
            and bool((tree["block"] == float(mark)).all())
            and bool((tree["tail"] == np.arange(4096, dtype=np.int64) + mark).all())
        )
        os.write(progress_fd, _RECORD.pack(b"L" if consistent else b"T", mark))


def race(path: str, writers: int, saves: int, readers: int, loads: int) -> dict[str, Any]:
    target = Path(path)
    save_state(
        target,
        {
            "writer": 0,
            "step": 0,
            "mark": 0,
            "block": np.zeros((64, 64)),
            "tail": np.arange(4096, dtype=np.int64),
        },
    )
    children = [_fork(_race_writer, target, index + 1, saves) for index in range(writers)]
    children += [_fork(_race_reader, target, loads) for _ in range(readers)]
    ended, loaded, torn, saved = [], 0, 0, 0
    for pid, read_fd in children:
        records = _read_records(read_fd)
        _, status = os.waitpid(pid, 0)
        ended.append(_how_it_ended(status))
        saved += sum(1 for kind, _ in records if kind == b"S")
        loaded += sum(1 for kind, _ in records if kind == b"L")
        torn += sum(1 for kind, _ in records if kind == b"T")
    return {"ended": ended, "saves": saved, "consistent_loads": loaded, "torn_loads": torn}


def main() -> int:
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "kill":
            answer = kill_once(**command)
        elif op == "race":
            answer = race(**command)
        else:
            answer = {"error": f"unknown op {op!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    # The writers must not start BLAS thread pools: forks of a threaded process are not safe.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
