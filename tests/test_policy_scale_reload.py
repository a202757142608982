"""A LinUCB state the library saved itself always reloads, whatever the context magnitude (within
`MAX_ABS_FEATURE`); a tampered inverse is still refused, also beside an ill-conditioned Gram matrix.

Features of 1e6 against a prior of 10 make Gram entries of 1e13, whose float64 rounding (1e-3) moves the
inverse of the directions no observation covered past 1/ridge: such self-saved files used to be refused.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_linucb import make_space

from uniscale_lc.errors import StateError
from uniscale_lc.policy import Decision, LinUCB
from uniscale_lc.policy.base import MAX_ABS_FEATURE
from uniscale_lc.policy.ridge import RidgeStats, check_inverse, exact_inverse
from uniscale_lc.store import load_state, save_state

MAGNITUDES = (1e-3, 1.0, 1e3, 1e6)


def learnt(options: dict, dim: int, magnitude: float, seed: int) -> LinUCB:
    """A policy after a random number of updates (some arms fresh, some dense, some just refreshed)."""
    rng = np.random.default_rng(seed)
    space = make_space()
    policy = LinUCB(seed=seed, **options)
    policy.bind(space, dim)
    for _ in range(int(rng.integers(1, 20 * len(space.ids)))):
        x = rng.uniform(-1.0, 1.0, dim) * magnitude
        arm_id = space.ids[int(rng.integers(len(space.ids)))]
        policy.update(Decision(arm_id=arm_id, context=x, scores=(), policy="linucb"), float(rng.random()))
    return policy


@pytest.mark.parametrize("magnitude", MAGNITUDES)
@pytest.mark.parametrize(
    "options",
    [{}, {"forgetting": 0.99, "refresh_every": 50}, {"per_arm": False}, {"shared": False, "ridge": 0.1}],
    ids=["hybrid", "forgetting", "shared-only", "disjoint"],
)
def test_a_self_saved_state_always_reloads_and_scores_alike(tmp_path, options, magnitude):
    for seed in range(3):
        policy = learnt(options, 64, magnitude, seed)
        path = save_state(tmp_path / f"state-{seed}.npz", {"policy": policy.state_dict()})
        restored = LinUCB(**options)
        restored.bind(make_space(), 64)
        assert restored.load_state_dict(load_state(path)["policy"]) == [], (seed, magnitude)
        x = np.random.default_rng(seed + 100).uniform(-1.0, 1.0, 64) * magnitude
        _, mean, bonus, _ = policy.score(x)
        _, restored_mean, restored_bonus, _ = restored.score(x)
        # To the last bit: saver and loaded copy both lay blocks out in slot order (`sort_by_slot`).
        assert np.array_equal(mean, restored_mean) and np.array_equal(bonus, restored_bonus)


def test_exact_inverse_never_exceeds_the_prior_bound_of_an_ill_conditioned_gram():
    """Rounding of entries of 1e13 used to leave uncovered directions above 1/ridge after a Cholesky inverse."""
    rng = np.random.default_rng(0)
    dim, ridge = 64, 10.0
    for _ in range(20):
        rows = rng.uniform(-1.0, 1.0, (int(rng.integers(9, 60)), dim)) * MAX_ABS_FEATURE
        inverse = exact_inverse(ridge * np.eye(dim) + rows.T @ rows, ridge)
        assert np.linalg.eigvalsh(inverse).max() <= (1.0 + 1e-9) / ridge
        check_inverse(inverse, ridge, "stats")


def ill_conditioned_state() -> dict:
    rng = np.random.default_rng(1)
    stats = RidgeStats(16, 1.0, 1.0, 1000)
    for _ in range(10):
        stats.add(rng.uniform(-1.0, 1.0, 16) * MAX_ABS_FEATURE, float(rng.random()))
    return stats.state()


def test_an_older_files_rounded_inverse_beside_an_ill_conditioned_gram_loads():
    """Files from before the floor in `exact_inverse` hold a Cholesky inverse up to float64 rounding of
    the Gram matrix above 1/ridge; that rounding is allowed, nothing more."""
    state = ill_conditioned_state()
    direction = np.linalg.eigh(state["gram"])[1][:, 0]  # uncovered: inverse eigenvalue 1/ridge
    rounded = state["inverse"] + 1e-5 * np.outer(direction, direction)
    RidgeStats(16, 1.0, 1.0, 1000).load({**state, "inverse": rounded}, "stats")
    for excess in (1.5, 3.0):  # beyond any rounding: edited
        with pytest.raises(StateError, match="exceeds 1/ridge"):
            edited = state["inverse"] + excess * np.outer(direction, direction)
            RidgeStats(16, 1.0, 1.0, 1000).load({**state, "inverse": edited}, "stats")


def test_a_slightly_inflated_inverse_beside_a_well_conditioned_gram_is_refused():
    rng = np.random.default_rng(2)
    stats = RidgeStats(8, 1.0, 1.0, 1000)
    for _ in range(3):
        stats.add(rng.uniform(-1.0, 1.0, 8), float(rng.random()))
    state = stats.state()
    direction = np.linalg.eigh(state["gram"])[1][:, 0]
    with pytest.raises(StateError, match="exceeds 1/ridge"):
        stats.load({**state, "inverse": state["inverse"] + 1e-3 * np.outer(direction, direction)}, "stats")
