"""Eight threads selecting and learning at once end with the state that serial updates give."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from test_linucb import LinearBandit, make_space

from uniscale_lc.policy import LinUCB

THREADS, PER_THREAD, DIM = 8, 60, 5


@pytest.mark.parametrize(
    "options",
    [
        {"shared": True, "per_arm": False},
        {"shared": False, "per_arm": True},
        {"shared": True, "per_arm": True},
    ],
)
def test_concurrent_select_and_update_match_serial_updates(options):
    space = make_space(2)
    bandit = LinearBandit(space, DIM, seed=2)
    contexts = [[bandit.context() for _ in range(PER_THREAD)] for _ in range(THREADS)]
    policy = LinUCB(refresh_every=37, **options)  # refreshes happen in the middle of the race
    policy.bind(space, DIM)
    applied: list[list[tuple]] = [[] for _ in range(THREADS)]
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(index: int) -> None:
        try:
            start.wait()
            for x in contexts[index]:
                decision = policy.select(x)
                reward = float(np.tanh(x.sum()) + 0.1 * index)
                policy.update(decision, reward)
                applied[index].append((decision, reward))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors

    serial = LinUCB(refresh_every=37, **options)
    serial.bind(space, DIM)
    for records in applied:
        for decision, reward in records:
            serial.update(decision, reward)
    concurrent_state, serial_state = policy.state_dict(), serial.state_dict()
    if policy.shared:
        # Sums of outer products and of reward-weighted features: order-free up to rounding.
        for key in ("gram", "target"):
            assert np.allclose(
                concurrent_state["shared"][key], serial_state["shared"][key], rtol=1e-10, atol=1e-10
            )
        assert concurrent_state["shared"]["updates"] == THREADS * PER_THREAD
    assert set(concurrent_state["per_arm"]) == set(serial_state["per_arm"])
    for arm_id, state in concurrent_state["per_arm"].items():
        assert np.allclose(state["gram"], serial_state["per_arm"][arm_id]["gram"], rtol=1e-10, atol=1e-10)
        if not policy.shared:
            # With a shared model the per-arm targets are residuals of the shared model at update time,
            # which depend on the order of updates; without it they are plain sums.
            assert np.allclose(
                state["target"], serial_state["per_arm"][arm_id]["target"], rtol=1e-10, atol=1e-10
            )
    total = sum(state["updates"] for state in concurrent_state["per_arm"].values())
    assert total == (THREADS * PER_THREAD if policy.per_arm else 0)
