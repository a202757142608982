"""The compact per-arm statistic (policy/packed.py): agreement with the exact float64 form to float32
precision, exact Gram matrices, bit-for-bit round trips, old full-form files, and the memory per arm."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from test_linucb import LinearBandit, make_space

from uniscale_lc.arms import ArmSpace
from uniscale_lc.errors import StateError
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.policy import Decision, LinUCB
from uniscale_lc.policy.arm_inverses import ArmInverses
from uniscale_lc.policy.packed import MAX_FRESH_RANK, PackedLayout
from uniscale_lc.policy.ridge import RidgeStats
from uniscale_lc.strategies import BestOfN, MajorityVote, Single

# The per-arm inverse is stored in float32 (unit roundoff 6e-8) and rounded once per update; between two
# exact refreshes the errors of up to refresh_every roundings add up. 1e-5 relative to the largest entry
# is float32-level agreement with room for that; the float64 form agrees to 1e-8 (tests/test_linucb.py).
FLOAT32_LEVEL = 1e-5


def packed(dim: int, ridge: float = 1.0, gamma: float = 1.0, refresh_every: int = 1000, prior=None):
    """One arm's statistic in its own scoring arrays (fresh at first without forgetting, as in LinUCB)."""
    inverses = ArmInverses(dim, np.full(dim, ridge) if prior is None else prior)
    return inverses.add_arm(ridge, gamma, refresh_every)


def test_layout_packs_unpacks_and_scores_a_quadratic_form():
    rng = np.random.default_rng(0)
    layout = PackedLayout(5)
    matrix = rng.standard_normal((5, 5))
    matrix = matrix + matrix.T
    assert np.array_equal(layout.unpack(layout.pack(matrix)), matrix)
    doubled = layout.pack(matrix) * layout.doubling
    assert np.array_equal(layout.unpack(doubled, halve=True), matrix)
    x = rng.standard_normal(5)
    assert np.isclose(float(doubled @ layout.outer(x)), float(x @ matrix @ x), rtol=1e-6)
    xs = rng.standard_normal((3, 5))
    assert np.array_equal(layout.outer_rows(xs)[1], layout.outer(xs[1]))


@pytest.mark.parametrize("gamma", [1.0, 0.995])
def test_packed_agrees_with_exact_form_to_float32_precision(gamma):
    rng = np.random.default_rng(1)
    dim, refresh_every, updates = 12, 200, 2_137  # stops between two refreshes
    prior = np.full(dim, 10.0)
    prior[0] = 1.0
    exact = RidgeStats(dim, 1.0, gamma, refresh_every, prior=prior)
    compact = packed(dim, 1.0, gamma, refresh_every, prior=prior)
    rows = rng.standard_normal((updates, dim)) / np.sqrt(dim)
    values = rng.standard_normal(updates)
    for row, value in zip(rows, values, strict=True):
        exact.add(row, float(value))
        compact.add(row, float(value))
    # The Gram matrix and the target are exact float64 in both forms.
    assert np.allclose(compact.gram, exact.gram, rtol=1e-12, atol=1e-12)
    assert np.array_equal(compact.target, exact.target)
    largest = np.abs(exact.inverse).max()
    assert np.abs(compact.inverse - exact.inverse).max() < FLOAT32_LEVEL * largest
    assert np.abs(compact.weights - exact.weights).max() < FLOAT32_LEVEL * max(1.0, np.abs(exact.weights).max())
    assert np.array_equal(compact.inverse, compact.inverse.T)  # symmetric by construction
    # A refresh re-inverts the exact Gram matrix: only one float32 rounding away from a direct solve.
    compact.refresh()
    direct = np.linalg.solve(compact.gram, np.eye(dim))
    assert np.abs(compact.inverse - direct).max() < 2.0**-23 * np.abs(direct).max()
    assert np.abs(compact.weights - np.linalg.solve(compact.gram, compact.target)).max() < 1e-10


def test_rounding_does_not_accumulate_past_a_refresh():
    rng = np.random.default_rng(2)
    dim, refresh_every = 8, 50
    exact = RidgeStats(dim, 1.0, 1.0, refresh_every)
    compact = packed(dim, 1.0, 1.0, refresh_every)
    worst = []
    for step in range(1, 2001):
        row = rng.standard_normal(dim)
        exact.add(row, 1.0)
        compact.add(row, 1.0)
        if step % refresh_every == 0:  # both just refreshed
            worst.append(np.abs(compact.inverse - exact.inverse).max() / np.abs(exact.inverse).max())
    # Right after each refresh the error is one float32 rounding, however many updates came before.
    assert max(worst) < 2.0**-23


def test_state_round_trip_continues_bit_for_bit():
    rng = np.random.default_rng(3)
    dim = 7
    first = packed(dim, gamma=0.99, refresh_every=40)
    for _ in range(123):
        first.add(rng.standard_normal(dim), float(rng.standard_normal()))
    second = packed(dim, gamma=0.99, refresh_every=40)
    second.load(first.state(), "stats")
    for _ in range(100):
        row, value = rng.standard_normal(dim), float(rng.standard_normal())
        first.add(row, value)
        second.add(row, value)
    for key, value in first.state().items():
        assert np.array_equal(value, second.state()[key]), key


def test_an_exact_form_state_loads_rounded_to_float32():
    """Files written before the compact form hold a float64 inverse and a pending forgetting scale."""
    rng = np.random.default_rng(4)
    dim = 6
    old = RidgeStats(dim, 1.0, 0.99, 100)
    for _ in range(77):
        old.add(rng.standard_normal(dim), float(rng.standard_normal()))
    saved = old.state()
    assert saved["inverse_scale"] > 1.0  # a pending scale: the case the load must fold in
    compact = packed(dim, gamma=0.99, refresh_every=100)
    compact.load(saved, "stats")
    true_inverse = saved["inverse"] * saved["inverse_scale"]
    assert np.abs(compact.inverse - true_inverse).max() < 2.0**-23 * np.abs(true_inverse).max()
    assert np.array_equal(compact.weights, saved["weights"])
    # The old Gram matrix is symmetric up to BLAS rounding; the packed form keeps its symmetric part.
    assert np.array_equal(compact.gram, 0.5 * (saved["gram"] + saved["gram"].T))
    for _ in range(20):  # and it keeps learning at float32 precision beside the exact form
        row, value = rng.standard_normal(dim), float(rng.standard_normal())
        old.add(row, value)
        compact.add(row, value)
    assert np.abs(compact.inverse - old.inverse).max() < FLOAT32_LEVEL * np.abs(old.inverse).max()


def test_corrupt_inverse_is_refused_and_nothing_changes():
    compact = packed(4)
    compact.add(np.ones(4), 1.0)
    before = compact.state()
    for bad in (-np.eye(4), np.eye(4) * 1e300, before["inverse"] + np.triu(np.ones((4, 4)), 1)):
        with pytest.raises(StateError, match="inverse"):
            compact.load({**before, "inverse": bad}, "stats")
        for key, value in compact.state().items():
            assert np.array_equal(value, before[key]), key


@pytest.mark.parametrize("gamma", [1.0, 0.99])
def test_finite_and_symmetric_under_adversarial_rows(gamma):
    rng = np.random.default_rng(5)
    dim = 6
    compact = packed(dim, ridge=1e-3, gamma=gamma, refresh_every=50)
    repeated = rng.standard_normal(dim)
    for index in range(1500):
        row = (repeated * 1e6, rng.standard_normal(dim) * 1e-150, repeated, np.zeros(dim))[index % 4]
        compact.add(row, float(rng.choice([-1e3, 0.0, 1e3])))
        assert np.isfinite(compact.inverse).all() and np.isfinite(compact.weights).all()
    inverse = compact.inverse
    assert np.array_equal(inverse, inverse.T)


def many_arms(arms: int) -> ArmSpace:
    models = [ModelSpec(model=f"m{i}", input_usd_per_mtok=0.1 * (i + 1), output_usd_per_mtok=0.2) for i in range(arms // 4)]
    return ArmSpace.product(models, [Single(), BestOfN(n=2), MajorityVote(n=3), MajorityVote(n=5)])


def test_arms_added_after_the_scoring_array_grows_keep_learning():
    """Per-arm inverses are rows of one array that grows by doubling; earlier arms must follow the move."""
    space = many_arms(40)
    policy = LinUCB(alpha=1.0)
    policy.bind(space, 5)
    bandit = LinearBandit(space, 5, seed=6)
    first = space.ids[0]
    policy.update(Decision(arm_id=first, context=bandit.context()), 1.0)  # slot 0, array of 8 rows
    for arm_id in space.ids:  # 40 arms: the array grows 8 -> 16 -> 32 -> 64
        policy.update(Decision(arm_id=arm_id, context=bandit.context()), 0.5)
    policy.update(Decision(arm_id=first, context=bandit.context()), 0.0)
    state = policy.state_dict()
    x = bandit.context()
    x_aug = np.concatenate(([1.0], x))
    ids, _, bonus, _ = policy.score(x)
    for index, arm_id in enumerate(ids):
        phi = np.outer(state["projection"] @ x_aug, space.features((arm_id,))[0]).ravel()
        shared = state["shared"]
        variance = phi @ shared["inverse"] @ phi * shared["inverse_scale"]
        variance += x_aug @ state["per_arm"][arm_id]["inverse"] @ x_aug
        assert np.isclose(bonus[index], np.sqrt(variance), rtol=1e-5)
    assert state["per_arm"][first]["updates"] == 3


@pytest.mark.parametrize("observations", [1, 10, MAX_FRESH_RANK + 1])
def test_memory_per_arm_at_d64_is_under_40_kb(observations):
    """Issue 11's aim: <= 40 KB of policy state per arm at d = 64 (here 256 arms, the same layout as 1,000).

    One or ten observations per arm keep every arm in the fresh form; 33 make every arm dense (the worst
    case), and the fresh blocks they passed through must not stay allocated.
    """
    arms, dim = 256, 64
    space = many_arms(arms)
    rng = np.random.default_rng(7)
    logged = [(rng.standard_normal(dim) / 8, arm_id, 0.5) for arm_id in space.ids for _ in range(observations)]
    tracemalloc.start()
    try:
        policy = LinUCB()
        policy.bind(space, dim)
        baseline = tracemalloc.get_traced_memory()[0]
        policy.warm_start(logged)
        per_arm = (tracemalloc.get_traced_memory()[0] - baseline) / arms
    finally:
        tracemalloc.stop()
    fresh = [stats.fresh for stats in policy._arm_stats.values()]
    if observations == 1:
        # One float64 row, its float32 low-rank row (0.8 KB) + vectors; no Gram or dense inverse yet.
        assert all(fresh) and per_arm < 4 * 1024, per_arm / 1024
    elif observations == 10:
        # 12-row blocks: 12 float64 rows (6.2 KB) + 12 float32 low-rank rows (3.1 KB) + vectors.
        assert all(fresh) and per_arm < 16 * 1024, per_arm / 1024
    else:
        # Packed float64 Gram (17.2 KB) + packed float32 inverse (8.6 KB) + pending rows (4.2 KB) + vectors.
        assert not any(fresh)
        assert 26 * 1024 < per_arm < 40 * 1024, per_arm / 1024


def trained(space: ArmSpace, rounds: int, seed: int, bandit_seed: int, **options) -> tuple[LinUCB, LinearBandit]:
    policy = LinUCB(seed=seed, **options)
    policy.bind(space, 4)
    bandit = LinearBandit(space, 4, seed=bandit_seed)
    for _ in range(rounds):
        x = bandit.context()
        decision = policy.select(x)
        policy.update(decision, bandit.reward(x, decision.arm_id))
    return policy, bandit


def test_policy_round_trip_with_many_arms_is_bit_for_bit():
    space = make_space(3)
    options = {"forgetting": 0.995, "refresh_every": 30}
    one, bandit = trained(space, 200, seed=1, bandit_seed=9, **options)
    two = LinUCB(seed=1, **options)
    two.bind(space, 4)
    two.load_state_dict(one.state_dict())
    for _ in range(100):
        x = bandit.context()
        a, b = one.select(x), two.select(x)
        assert a.arm_id == b.arm_id and a.scores == b.scores
        reward = bandit.reward(x, a.arm_id)
        one.update(a, reward)
        two.update(b, reward)
    for arm_id, stats in one.state_dict()["per_arm"].items():
        other = two.state_dict()["per_arm"][arm_id]
        for key, value in stats.items():
            assert np.array_equal(value, other[key]), (arm_id, key)


def test_fresh_form_is_exact_low_rank_and_turns_dense_after_rank_observations():
    rng = np.random.default_rng(10)
    dim = 9
    prior = np.full(dim, 10.0)
    compact = packed(dim, prior=prior)
    exact = RidgeStats(dim, 1.0, 1.0, 1000, prior=prior)
    for step in range(1, MAX_FRESH_RANK + 4):
        row, value = rng.standard_normal(dim), float(rng.standard_normal())
        compact.add(row, value)
        exact.add(row, value)
        # The block grows 1, 2, 3, 4, 6, ... 32 rows; the 33rd observation makes it dense.
        assert compact.fresh == (step <= MAX_FRESH_RANK)
        largest = np.abs(exact.inverse).max()
        assert np.abs(compact.inverse - exact.inverse).max() < FLOAT32_LEVEL * largest
        assert np.abs(compact.weights - exact.weights).max() < 1e-6
        assert np.array_equal(compact.gram, compact.gram.T)
        assert np.allclose(compact.gram, exact.gram, rtol=1e-12, atol=1e-12)
        if step == 5:  # a refresh in the fresh form recomputes the low-rank rows from the kept rows
            compact.refresh()
            assert compact.fresh
            direct = np.linalg.inv(compact.gram)
            assert np.abs(compact.inverse - direct).max() < 1e-6 * np.abs(direct).max()
            assert np.abs(compact.weights - np.linalg.solve(compact.gram, compact.target)).max() < 1e-10


def fresh_with(observations: int, dim: int, rng: np.random.Generator):
    stats = packed(dim)
    for _ in range(observations):
        stats.add(rng.standard_normal(dim), float(rng.standard_normal()))
    return stats


@pytest.mark.parametrize("observations, rows_key", [(3, "rows"), (20, "fresh_rows")])
def test_fresh_form_round_trip_continues_bit_for_bit_through_turning_dense(observations, rows_key):
    """Up to 8 rows save as `rows`/`low_rank`; more (which releases before growing blocks refuse there) as
    `fresh_rows`/`fresh_low_rank`."""
    rng = np.random.default_rng(11)
    dim = 5
    first = fresh_with(observations, dim, rng)
    saved = first.state()
    assert first.fresh and saved[rows_key].shape == (observations, dim)
    assert ({"rows", "fresh_rows"} - {rows_key}).isdisjoint(saved)  # one pair of keys, never both
    second = packed(dim)
    second.load(saved, "stats")
    assert second.fresh
    for _ in range(MAX_FRESH_RANK):  # crosses block growth and the 33rd observation
        row, value = rng.standard_normal(dim), float(rng.standard_normal())
        first.add(row, value)
        second.add(row, value)
    assert not first.fresh and not second.fresh
    for key, value in first.state().items():
        assert np.array_equal(value, second.state()[key]), key


def test_fresh_state_whose_rows_contradict_its_gram_loads_dense_from_the_checked_arrays():
    """The saved Gram matrix and inverse are authoritative (checked as for any state); rows and low-rank
    vectors that do not reproduce them (another prior, an edit) are not used. Malformed ones are refused."""
    compact = packed(4)
    compact.add(np.ones(4), 1.0)
    saved = compact.state()
    for bad in ({"rows": saved["rows"] * 2.0}, {"low_rank": saved["low_rank"] * 3.0}):
        loaded = packed(4)
        loaded.load({**saved, **bad}, "stats")
        assert not loaded.fresh
        assert np.array_equal(loaded.gram, saved["gram"])
        assert np.abs(loaded.inverse - saved["inverse"]).max() < 2.0**-23
    too_many = MAX_FRESH_RANK + 1
    for bad in (
        {"rows": np.ones((too_many, 4)), "low_rank": np.ones((too_many, 4))},
        {"rows": np.full((1, 4), np.nan)},
    ):
        with pytest.raises(StateError, match="rows/low_rank"):
            packed(4).load({**saved, **bad}, "stats")


def test_policy_state_in_the_old_layout_loads_and_scores_alike():
    """A file written before the compact form has per-arm float64 inverses and no rows or low-rank vectors:
    every arm loads dense, and scores agree with the saving policy to float32 precision."""
    space = make_space(3)
    policy, bandit = trained(space, 60, seed=2, bandit_seed=12)
    state = policy.state_dict()
    assert any("rows" in arm or "fresh_rows" in arm for arm in state["per_arm"].values())  # some still fresh
    old_layout = {**state, "per_arm": {}}
    for arm_id, arm in state["per_arm"].items():
        old_layout["per_arm"][arm_id] = {key: value for key, value in arm.items() if key not in ("rows", "low_rank", "fresh_rows", "fresh_low_rank")}
    loaded = LinUCB(seed=2)
    loaded.bind(space, 4)
    assert loaded.load_state_dict(old_layout) == []
    assert not any(stats.fresh for stats in loaded._arm_stats.values())
    for _ in range(20):
        x = bandit.context()
        _, mean, bonus, _ = policy.score(x)
        _, loaded_mean, loaded_bonus, _ = loaded.score(x)
        assert np.allclose(mean, loaded_mean, rtol=1e-12, atol=1e-12)  # weights load exactly
        assert np.allclose(bonus, loaded_bonus, rtol=1e-5)


def test_a_fresh_arm_past_eight_rows_loads_dense_without_its_fresh_keys():
    """What a release before growing blocks reads: it ignores `fresh_rows`/`fresh_low_rank` and loads the
    arm dense from the full matrices, to float32 precision. Malformed fresh keys are refused by name."""
    dim = 6
    saved = fresh_with(20, dim, np.random.default_rng(12)).state()
    assert "rows" not in saved and "low_rank" not in saved
    as_old = packed(dim)
    as_old.load({k: v for k, v in saved.items() if not k.startswith("fresh_")}, "stats")
    assert not as_old.fresh
    assert np.abs(as_old.inverse - saved["inverse"]).max() < 2.0**-23 * np.abs(saved["inverse"]).max()
    with pytest.raises(StateError, match="fresh_rows/fresh_low_rank"):
        packed(dim).load({**saved, "fresh_rows": np.ones((MAX_FRESH_RANK + 1, dim))}, "stats")
