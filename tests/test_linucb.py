"""LinUCB: learning on a synthetic linear bandit, exact numerics of the incremental inverse, run-time arm
changes, forgetting, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from uniscale_lc.arms import ARM_FEATURE_DIM, Arm, ArmSpace
from uniscale_lc.errors import ConfigError
from uniscale_lc.features import HashingFeaturizer
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.policy import Decision, LinUCB, UniformRandom
from uniscale_lc.policy.linucb import RidgeStats
from uniscale_lc.strategies import BestOfN, MajorityVote, Reflection, Single

STRATEGIES = (Single(), BestOfN(n=4), MajorityVote(n=5), Reflection(rounds=2))


def make_models(count: int) -> list[ModelSpec]:
    return [
        ModelSpec(
            model=f"model-{index}",
            input_usd_per_mtok=0.1 * 3**index,
            output_usd_per_mtok=0.4 * 3**index,
            params_b=float(2 ** (index + 1)),
        )
        for index in range(count)
    ]


def make_space(models: int = 3, strategies=STRATEGIES) -> ArmSpace:
    return ArmSpace.product(make_models(models), list(strategies))


class LinearBandit:
    """True expected reward linear in vec([1, x] (x) f(a)), plus Gaussian noise."""

    def __init__(self, space: ArmSpace, dim: int, seed: int, noise: float = 0.1):
        self.rng = np.random.default_rng(seed)
        self.space = space
        self.dim = dim
        self.noise = noise
        self.theta = self.rng.standard_normal((dim + 1, ARM_FEATURE_DIM)) / np.sqrt(dim + 1)

    def context(self) -> np.ndarray:
        return self.rng.standard_normal(self.dim) / np.sqrt(self.dim)

    def means(self, x: np.ndarray) -> dict[str, float]:
        features = self.space.features()
        values = np.concatenate(([1.0], x)) @ self.theta @ features.T
        return dict(zip(self.space.ids, values.tolist(), strict=True))

    def reward(self, x: np.ndarray, arm_id: str) -> float:
        return self.means(x)[arm_id] + self.noise * float(self.rng.standard_normal())


def run_bandit(policy, space: ArmSpace, rounds: int, seed: int = 0, dim: int = 6) -> np.ndarray:
    """Per-round expected regret of `policy` on a fresh linear bandit."""
    bandit = LinearBandit(space, dim, seed)
    policy.bind(space, dim)
    regret = np.empty(rounds)
    for step in range(rounds):
        x = bandit.context()
        means = bandit.means(x)
        decision = policy.select(x)
        regret[step] = max(means.values()) - means[decision.arm_id]
        policy.update(decision, bandit.reward(x, decision.arm_id))
    return regret


# ----------------------------------------------------------------------------- learning


def test_regret_far_below_random_and_sublinear():
    space = make_space(3)  # 12 arms
    rounds = 5000
    learnt = run_bandit(LinUCB(alpha=0.5, shared_context_dim=16), space, rounds, seed=1)
    random = run_bandit(UniformRandom(seed=1), space, rounds, seed=1)
    total, random_total = learnt.sum(), random.sum()
    assert total < 0.15 * random_total, (total, random_total)
    first, second = learnt[: rounds // 2].sum(), learnt[rounds // 2 :].sum()
    # Linear regret would make both halves equal; sqrt(T) growth gives second/first ~ 0.41.
    assert second < 0.5 * first, (first, second)
    # Uniform random keeps paying the same per round.
    assert random[rounds // 2 :].sum() > 0.8 * random[: rounds // 2].sum()


def test_disjoint_and_hybrid_both_learn():
    space = make_space(2)
    for policy in (LinUCB(alpha=0.5, shared=False, per_arm=True), LinUCB(alpha=0.5, per_arm=False)):
        regret = run_bandit(policy, space, 1200, seed=3)
        random = run_bandit(UniformRandom(seed=3), space, 1200, seed=3)
        assert regret.sum() < 0.5 * random.sum()


# ----------------------------------------------------------------------------- numerics


def exact_statistics(rows: np.ndarray, values: np.ndarray, ridge: float, gamma: float):
    """Gram matrix and target of discounted ridge regression, accumulated the slow, obvious way."""
    dim = rows.shape[1]
    gram = ridge * np.eye(dim)
    target = np.zeros(dim)
    for row, value in zip(rows, values, strict=True):
        gram = gamma * gram + np.outer(row, row) + (1.0 - gamma) * ridge * np.eye(dim)
        target = gamma * target + value * row
    return gram, target


@pytest.mark.parametrize("updates", [10_000, 10_437])
def test_incremental_inverse_matches_direct_solve_without_forgetting(updates):
    rng = np.random.default_rng(0)
    dim = 12
    rows = rng.standard_normal((updates, dim)) / np.sqrt(dim)
    values = rng.standard_normal(updates)
    stats = RidgeStats(dim, ridge=1.0, forgetting=1.0, refresh_every=1000)
    for row, value in zip(rows, values, strict=True):
        stats.add(row, float(value))
    gram, target = exact_statistics(rows, values, 1.0, 1.0)
    assert np.allclose(stats.gram, gram, rtol=1e-12, atol=1e-9)
    assert np.allclose(stats.target, target, rtol=1e-12, atol=1e-9)
    assert np.abs(stats.inverse - np.linalg.solve(gram, np.eye(dim))).max() < 1e-8
    assert np.abs(stats.weights - np.linalg.solve(gram, target)).max() < 1e-8


def test_incremental_inverse_with_forgetting_exact_after_refresh_and_bounded_between():
    rng = np.random.default_rng(1)
    dim, gamma, ridge, refresh_every = 10, 0.995, 1.0, 200
    updates = 10_000 + 137  # stop between two refreshes
    rows = rng.standard_normal((updates, dim)) / np.sqrt(dim)
    values = rng.standard_normal(updates)
    stats = RidgeStats(dim, ridge=ridge, forgetting=gamma, refresh_every=refresh_every)
    for row, value in zip(rows, values, strict=True):
        stats.add(row, float(value))
    gram, target = exact_statistics(rows, values, ridge, gamma)
    # The exact Gram (with the forgetting ridge term) and the target are always exact.
    assert np.allclose(stats.gram, gram, rtol=1e-10, atol=1e-10)
    assert np.allclose(stats.target, target, rtol=1e-10, atol=1e-12)

    # Between refreshes the inverse omits (1 - gamma) ridge I for the updates since the last refresh:
    # it is the inverse of a Gram that is smaller by at most (1 - gamma^k) ridge I, k <= refresh_every.
    incremental_gram = np.linalg.inv(stats.inverse)
    missing = gram - incremental_gram
    eigenvalues = np.linalg.eigvalsh(0.5 * (missing + missing.T))
    since_refresh = updates % refresh_every
    assert eigenvalues.min() > -1e-8
    assert eigenvalues.max() <= (1 - gamma**since_refresh) * ridge + 1e-8
    # ... so the confidence bound is only ever wider, never narrower, than the exact one.
    for _ in range(20):
        x = rng.standard_normal(dim)
        assert x @ stats.inverse @ x >= x @ np.linalg.solve(gram, x) - 1e-10
    # The weights are the exact solution of that incremental system.
    assert np.abs(stats.weights - stats.inverse @ stats.target).max() < 1e-8

    # Right after a refresh, inverse and weights match a direct solve of the exact system.
    stats.refresh()
    assert np.abs(stats.inverse - np.linalg.solve(gram, np.eye(dim))).max() < 1e-8
    assert np.abs(stats.weights - np.linalg.solve(gram, target)).max() < 1e-8


def test_refresh_every_bounds_drift_under_forgetting():
    rng = np.random.default_rng(2)
    dim, gamma = 6, 0.99
    drifts = {}
    for refresh_every in (10, 1000):
        stats = RidgeStats(dim, ridge=1.0, forgetting=gamma, refresh_every=refresh_every)
        worst = 0.0
        rows = rng.standard_normal((3000, dim)) / np.sqrt(dim)
        for index, row in enumerate(rows):
            stats.add(row, 1.0)
            if index % 97 == 0:
                exact = np.linalg.inv(stats.gram)
                worst = max(worst, float(np.abs(stats.inverse - exact).max()))
        drifts[refresh_every] = worst
    # The omitted term is at most (1 - gamma^10) ridge with refresh_every=10.
    assert drifts[10] < 0.2
    assert drifts[10] < drifts[1000]


@pytest.mark.parametrize("ridge", [1.0, 1e-6])
@pytest.mark.parametrize("gamma", [1.0, 0.99])
def test_inverse_symmetric_and_finite_under_adversarial_rows(ridge, gamma):
    rng = np.random.default_rng(3)
    dim = 6
    stats = RidgeStats(dim, ridge=ridge, forgetting=gamma, refresh_every=50)
    repeated = rng.standard_normal(dim)
    for index in range(3000):
        kind = index % 5
        if kind == 0:
            row = repeated * 1e6  # huge, and the same row again and again
        elif kind == 1:
            row = rng.standard_normal(dim) * 1e-150  # tiny
        elif kind == 2:
            row = repeated.copy()
        elif kind == 3:
            row = np.zeros(dim)
        else:
            row = rng.standard_normal(dim)
        stats.add(row, float(rng.choice([-1e3, 0.0, 1e3])))
        inverse = stats.inverse
        assert np.isfinite(inverse).all() and np.isfinite(stats.weights).all()
        assert np.array_equal(inverse, inverse.T)
    stats.refresh()
    assert np.isfinite(stats.inverse).all()
    assert np.array_equal(stats.inverse, stats.inverse.T)
    assert np.linalg.eigvalsh(stats.inverse).min() > 0


def test_policy_rejects_absurd_feature_magnitudes_without_learning():
    space = make_space(1)
    policy = LinUCB()
    policy.bind(space, 4)
    decision = policy.select(np.ones(4))
    before = policy.state_dict()
    bad = Decision(arm_id=decision.arm_id, context=np.full(4, 1e200))
    with pytest.raises(ConfigError, match=r"decision\.context"):
        policy.update(bad, 1.0)
    with pytest.raises(ConfigError, match="x:"):
        policy.select(np.full(4, 1e200))
    after = policy.state_dict()
    assert np.array_equal(before["shared"]["gram"], after["shared"]["gram"])


def test_policy_never_nan_with_repeated_identical_contexts():
    space = make_space(2)
    policy = LinUCB(alpha=1.0, ridge=1e-3, refresh_every=64)
    policy.bind(space, 5)
    x = np.array([1e3, -1e3, 0.0, 1e-200, 5.0])
    for _ in range(600):
        decision = policy.select(x)
        assert all(np.isfinite([s.mean, s.bonus, s.score]).all() for s in decision.scores)
        policy.update(decision, 1.0)
    _, mean, bonus, _ = policy.score(x)
    assert np.isfinite(mean).all() and np.isfinite(bonus).all() and (bonus >= 0).all()


# ----------------------------------------------------------------------------- determinism


def test_seeded_tie_breaking_is_deterministic_and_spreads():
    space = make_space(3)
    x = np.zeros(4)

    def choices(seed: int) -> list[str]:
        policy = LinUCB(shared=False, per_arm=True, seed=seed)  # untrained: every arm ties
        policy.bind(space, 4)
        return [policy.select(x).arm_id for _ in range(60)]

    assert choices(7) == choices(7)
    assert choices(7) != choices(8)
    assert len(set(choices(7))) > 4  # ties are broken at random, not always toward the first arm


def trained(seed: int = 0, **options) -> tuple[LinUCB, ArmSpace, LinearBandit]:
    space = make_space(3)
    policy = LinUCB(seed=seed, **options)
    bandit = LinearBandit(space, 6, seed=11)
    policy.bind(space, 6)
    for _ in range(300):
        x = bandit.context()
        decision = policy.select(x)
        policy.update(decision, bandit.reward(x, decision.arm_id))
    return policy, space, bandit


@pytest.mark.parametrize("options", [{}, {"shared": False}, {"per_arm": False}, {"forgetting": 0.99}])
def test_select_batch_agrees_with_select(options):
    one, space, bandit = trained(**options)
    two, _, _ = trained(**options)
    xs = np.stack([bandit.context() for _ in range(40)])
    subset = list(space.ids[::2])
    penalties = np.linspace(0.0, 0.3, len(subset))
    batch = two.select_batch(xs, arms=subset, penalties=penalties)
    for x, from_batch in zip(xs, batch, strict=True):
        single = one.select(x, arms=subset, penalty=penalties)
        assert single.arm_id == from_batch.arm_id
        for a, b in zip(single.scores, from_batch.scores, strict=True):
            assert a.arm_id == b.arm_id
            # Means are float64 throughout; the per-arm variance is summed in float32 (LinUCB docstring).
            assert np.allclose([a.mean, a.penalty], [b.mean, b.penalty], rtol=1e-9, atol=1e-12)
            assert np.isclose(a.bonus, b.bonus, rtol=1e-5, atol=1e-9)


def test_warm_start_equals_online_updates():
    space = make_space(2)
    bandit = LinearBandit(space, 5, seed=4)
    logged = []
    for step in range(400):
        x = bandit.context()
        arm_id = space.ids[step % len(space)]
        logged.append((x, arm_id, bandit.reward(x, arm_id)))
    warm = LinUCB(seed=3)
    warm.bind(space, 5)
    assert warm.warm_start(iter(logged)) == len(logged)
    online = LinUCB(seed=3)
    online.bind(space, 5)
    for x, arm_id, reward in logged:
        online.update(Decision(arm_id=arm_id, context=x), reward)
    online.refresh()
    a, b = warm.state_dict(), online.state_dict()
    assert np.allclose(a["shared"]["gram"], b["shared"]["gram"], rtol=1e-12)
    assert np.allclose(a["shared"]["target"], b["shared"]["target"], rtol=1e-12)
    for arm_id in space.ids:
        assert np.allclose(a["per_arm"][arm_id]["inverse"], b["per_arm"][arm_id]["inverse"], atol=1e-12)
    for _ in range(20):
        x = bandit.context()
        assert warm.select(x).arm_id == online.select(x).arm_id


def test_warm_start_with_a_bad_triple_learns_nothing():
    space = make_space(1)
    policy = LinUCB()
    policy.bind(space, 3)
    good = (np.ones(3), space.ids[0], 0.5)
    with pytest.raises(ConfigError, match=r"logged\[2\]"):
        policy.warm_start([good, good, (np.ones(3), space.ids[0], float("nan"))])
    assert np.array_equal(policy.state_dict()["shared"]["target"], np.zeros_like(policy._shared_stats.target))


# ----------------------------------------------------------------------------- run-time arm changes


def test_arms_added_and_removed_keep_learnt_state():
    policy, space, bandit = trained()
    probe = np.stack([bandit.context() for _ in range(5)])

    def scores() -> dict[str, tuple[float, float]]:
        out = {}
        for x in probe:
            ids, mean, bonus, _ = policy.score(x)
            for arm_id, m, b in zip(ids, mean, bonus, strict=True):
                out.setdefault(arm_id, []).append((m, b))
        return {k: tuple(np.ravel(v)) for k, v in out.items()}

    def same(a, b) -> bool:  # BLAS may round a row differently when the matrix around it changes
        return np.allclose(a, b, rtol=1e-12, atol=1e-15)

    before = scores()
    removed_id = space.ids[1]
    pending = Decision(arm_id=removed_id, context=probe[0])
    removed = space.remove(removed_id)
    during = scores()
    assert removed_id not in during
    assert all(same(during[arm_id], before[arm_id]) for arm_id in during)
    assert all(policy.select(x).arm_id != removed_id for x in probe)

    # A new budget of a known strategy on a known model: others are untouched.
    new_arm = Arm(removed.model, MajorityVote(n=9))
    space.add(new_arm)
    after_add = scores()
    assert all(same(after_add[arm_id], before[arm_id]) for arm_id in during)

    # Feedback for a decision on the removed arm still teaches the policy (delayed reward, outage).
    policy.update(pending, 0.3)
    space.add(removed)
    back = scores()
    assert not same(back[removed_id], before[removed_id])  # it learnt from the late reward ...
    policy2, _, _ = trained()
    policy2.update(Decision(arm_id=removed_id, context=probe[0]), 0.3)
    ids2, mean2, bonus2, _ = policy2.score(probe[0])
    ids, mean, bonus, _ = policy.score(probe[0])
    index, index2 = ids.index(removed_id), ids2.index(removed_id)
    # ... exactly as if it had never been removed
    assert np.isclose(mean[index], mean2[index2], rtol=1e-12) and np.isclose(bonus[index], bonus2[index2])


def test_feedback_for_an_arm_removed_before_it_was_ever_rewarded():
    space = make_space(2)
    policy = LinUCB()
    policy.bind(space, 3)
    decision = policy.select(np.array([0.1, 0.2, 0.3]))
    space.remove(decision.arm_id)
    policy.update(decision, 1.0)  # must not raise: the arm was a candidate when the decision was made
    assert decision.arm_id in policy.state_dict()["per_arm"]


# ----------------------------------------------------------------------------- forgetting


def test_forgetting_recovers_faster_after_an_abrupt_change():
    space = make_space(1)  # 4 arms
    ids = space.ids
    before = dict(zip(ids, [0.8, 0.5, 0.4, 0.3], strict=True))
    after = dict(zip(ids, [0.2, 0.5, 0.4, 0.9], strict=True))  # the best arm becomes the worst
    regrets = {}
    for gamma in (1.0, 0.99):
        rng = np.random.default_rng(5)
        # Disjoint arms: with the shared model the change is also partly absorbed by the shared terms.
        policy = LinUCB(alpha=1.0, forgetting=gamma, shared=False, seed=1)
        policy.bind(space, 2)
        regret = 0.0
        for step in range(2400):
            means = before if step < 1200 else after
            x = rng.standard_normal(2) * 0.1
            decision = policy.select(x)
            policy.update(decision, means[decision.arm_id] + 0.05 * rng.standard_normal())
            if step >= 1200:
                regret += max(means.values()) - means[decision.arm_id]
        regrets[gamma] = regret
    # Measured: about 120 without forgetting, about 4 with gamma = 0.99.
    assert regrets[0.99] < 0.25 * regrets[1.0], regrets


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_field():
    space = make_space(1)
    policy = LinUCB()
    with pytest.raises(ConfigError, match="not bound"):
        policy.select(np.zeros(3))
    policy.bind(space, 3)
    decision = policy.select(np.zeros(3))
    for bad in (float("nan"), float("inf"), "high", None):
        with pytest.raises(ConfigError, match="reward"):
            policy.update(decision, bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"x: got shape \(4,\)"):
        policy.select(np.zeros(4))
    with pytest.raises(ConfigError, match="x: contains NaN"):
        policy.select(np.array([0.0, np.nan, 0.0]))
    with pytest.raises(ConfigError, match="unknown arm ids"):
        policy.select(np.zeros(3), arms=["nope|single"])
    with pytest.raises(ConfigError, match="empty subset"):
        policy.select(np.zeros(3), arms=[])
    with pytest.raises(ConfigError, match=r"decision\.arm_id"):
        policy.update(Decision(arm_id="nope|single", context=np.zeros(3)), 1.0)
    with pytest.raises(ConfigError, match=r"decision\.context"):
        policy.update(Decision(arm_id=decision.arm_id, context=np.zeros(2)), 1.0)
    with pytest.raises(ConfigError, match="penalty"):
        policy.select(np.zeros(3), penalty=np.zeros(2))
    with pytest.raises(ConfigError, match=r"ArmSpace\.arms"):
        ArmSpace([])
    for kwargs, field in (
        ({"alpha": -1}, "alpha"),
        ({"ridge": 0}, "ridge"),
        ({"forgetting": 0}, "forgetting"),
    ):
        with pytest.raises(ConfigError, match=field):
            LinUCB(**kwargs)
    with pytest.raises(ConfigError, match="context_dim"):
        LinUCB().bind(space, 0)


def test_empty_prompt_is_valid_and_gets_features():
    featurizer = HashingFeaturizer(dim=32)
    x = featurizer.transform("")
    assert x.shape == (32,) and np.isfinite(x).all()
    policy = LinUCB()
    policy.bind(make_space(1), featurizer.dim)
    decision = policy.select(x)
    policy.update(decision, 1.0)
    assert decision.arm_id in make_space(1)


@pytest.mark.parametrize("options", [{}, {"forgetting": 0.99}, {"shared": False}, {"per_arm": False}])
def test_scores_match_the_textbook_formula(options):
    """Packed, vectorised scoring equals mean = theta.phi + beta_a.x, var = phi'A^-1 phi + x'A_a^-1 x."""
    policy, space, bandit = trained(**options)
    state = policy.state_dict()
    subset = list(space.ids[1::2])
    for _ in range(10):
        x = bandit.context()
        ids, mean, bonus, _ = policy.score(x, arms=subset)
        assert list(ids) == subset
        x_aug = np.concatenate(([1.0], x))
        for index, arm_id in enumerate(ids):
            expected_mean, expected_variance = 0.0, 0.0
            if policy.shared:
                phi = np.outer(state["projection"] @ x_aug, space.features((arm_id,))[0]).ravel()
                shared = state["shared"]
                expected_mean += shared["weights"] @ phi
                expected_variance += phi @ shared["inverse"] @ phi * shared["inverse_scale"]
            if policy.per_arm:
                own = state["per_arm"][arm_id]
                expected_mean += own["weights"] @ x_aug
                expected_variance += x_aug @ own["inverse"] @ x_aug * own["inverse_scale"]
            assert np.isclose(mean[index], expected_mean, rtol=1e-10, atol=1e-12)
            # The per-arm variance is read from float32 packed copies of the inverses: float32 precision.
            assert np.isclose(bonus[index], policy.alpha * np.sqrt(expected_variance), rtol=1e-5, atol=1e-9)
