"""The two-pass select (policy/bounds.py): the same decisions, tie-breaks and recorded scores as scoring
every arm exactly, on seeded streams with many dense arms, subsets, penalties and exact ties; and the
bounds it prunes with are valid upper bounds."""

from __future__ import annotations

import numpy as np
import pytest
from test_linucb import LinearBandit, make_space

from uniscale_lc.arms import ArmSpace
from uniscale_lc.policy import Decision, LinUCB, linucb
from uniscale_lc.policy.arm_inverses import ArmInverses
from uniscale_lc.policy.base import argmax_tiebreak, top_scores
from uniscale_lc.policy.bounds import merge_witness, top_witnesses
from uniscale_lc.policy.packed import MAX_FRESH_RANK


def one_pass(policy: LinUCB, x, arms=None, penalty=None) -> Decision:
    """What `select` did before the two passes: every arm scored exactly, then the argmax with ties."""
    ids, mean, bonus, cost_penalty = policy.score(x, arms, penalty)
    chosen = argmax_tiebreak(mean + bonus - cost_penalty, policy._rng)
    return Decision(arm_id=ids[chosen], context=np.array(x), scores=top_scores(ids, mean, bonus, cost_penalty))


def dense_pair(space: ArmSpace, dim: int, seed: int, observations: int, groups: int = 0, **options):
    """Two identical policies whose every arm has more observations than the fresh form holds. With
    `groups`, arm i learns the rewards of arm i % groups: arms of a group have equal statistics."""
    bandit = LinearBandit(space, dim, seed)
    logged = []
    for _ in range(observations):
        x = bandit.context()
        rewards = list(bandit.means(x).values())
        for index, arm_id in enumerate(space.ids):
            reward = rewards[index % groups] if groups else rewards[index] + 0.05 * np.sin(len(logged))
            logged.append((x, arm_id, reward))
    pair = []
    for _ in range(2):
        policy = LinUCB(seed=seed, **options)
        policy.bind(space, dim)
        policy.warm_start(logged)
        pair.append(policy)
    if observations > MAX_FRESH_RANK:
        assert pair[0]._arm_inverses.dense_count == len(space.ids)
    return pair, bandit


@pytest.fixture(autouse=True)
def two_pass_from_few_arms(monkeypatch):
    """The small spaces here take the two-pass path (by default once bounds save reading 2 MB)."""
    monkeypatch.setattr(linucb, "_TWO_PASS_MIN", 0)


@pytest.mark.parametrize("observations", [MAX_FRESH_RANK + 6, 10])
@pytest.mark.parametrize(
    ("seed", "options"),
    [(0, {}), (1, {"alpha": 1.5}), (2, {"shared": False}), (3, {"alpha": 0.0}), (4, {"refresh_every": 7}), (5, {"alpha": 5.0, "ridge": 0.05})],
)
def test_two_pass_select_equals_one_pass_on_seeded_streams(observations, seed, options, monkeypatch):
    # Dense arms (more observations than the fresh form keeps), or fresh ones in 12-row blocks.
    space = make_space(6)
    (two, one), bandit = dense_pair(space, 6, seed, observations, **options)
    refined = []
    original = ArmInverses.exact_variance

    def counted(self, slots, x):
        refined.append(len(slots))
        return original(self, slots, x)

    monkeypatch.setattr(ArmInverses, "exact_variance", counted)
    subset = list(space.ids[::3])
    rng = np.random.default_rng(seed)
    for step in range(150):
        x = bandit.context() * (1.0 if step % 5 else 30.0)  # large contexts too: wide margins
        arms, penalty = (subset, rng.uniform(0.0, 0.3, len(subset))) if step % 3 == 0 else (None, None)
        a = two.select(x, arms, penalty)
        b = one_pass(one, x, arms, penalty)
        assert a.arm_id == b.arm_id, step
        assert a.scores == b.scores, step  # the recorded top five, to the bit
        reward = bandit.reward(x, a.arm_id)
        two.update(a, reward)
        one.update(b, reward)
    # The second pass read fewer arms exactly than there are; with the default exploration, under half (a
    # bonus-driven choice with alpha = 5 refines more).
    assert sum(refined) < (0.5 if not options else 1.0) * 150 * len(space.ids)


def test_two_pass_breaks_exact_ties_as_one_pass_does():
    # Without the shared model an arm's score is its own statistic's: arms of a group tie exactly.
    space = make_space(6)
    (two, one), bandit = dense_pair(space, 4, 5, MAX_FRESH_RANK + 2, groups=5, shared=False)
    ties = 0
    for step in range(300):
        x = bandit.context()
        _, mean, bonus, cost_penalty = one.score(x)
        total = mean + bonus - cost_penalty
        ties += int((total >= total.max() - 1e-12).sum() > 1)
        a, b = two.select(x), one_pass(one, x)
        assert a.arm_id == b.arm_id and a.scores == b.scores, step
        if step >= 200:  # then learning, so twins drift apart
            reward = bandit.reward(x, a.arm_id)
            two.update(a, reward)
            one.update(b, reward)
    assert ties > 50  # the stream does exercise the seeded tie-break


@pytest.mark.parametrize("observations", [MAX_FRESH_RANK + 4, 3, 10, 20])
def test_bounds_are_upper_bounds_of_the_exact_variance(observations):
    space = make_space(5)
    (policy, _), bandit = dense_pair(space, 8, 7, observations, refresh_every=50)
    inverses = policy._arm_inverses
    rng = np.random.default_rng(1)
    for _ in range(400):
        x = np.concatenate(([1.0], bandit.context() * rng.choice([0.01, 1.0, 100.0])))
        bounded, slots = inverses.bounded_variance(x)
        exact = inverses.variance(x, by_row=True)
        assert np.all(bounded[slots] >= exact[slots])
        arm_id = space.ids[int(rng.integers(len(space.ids)))]
        policy.update(Decision(arm_id=arm_id, context=x[1:]), float(rng.normal()))


def test_scoring_some_dense_arms_gives_the_bits_of_scoring_all():
    space = make_space(5)
    (policy, _), bandit = dense_pair(space, 8, 3, MAX_FRESH_RANK + 1)
    inverses = policy._arm_inverses
    rng = np.random.default_rng(0)
    for _ in range(50):
        outer = inverses.layout.outer(np.concatenate(([1.0], bandit.context())))
        every = inverses.dense_variance(outer)
        some = np.sort(rng.choice(every.size, int(rng.integers(1, every.size)), replace=False))
        assert np.array_equal(inverses.dense_variance(outer, some), every[some])


def test_witnesses_stay_below_the_shrinkage_they_bound():
    rng = np.random.default_rng(0)
    dim = 7
    prior = np.full(dim, 2.0)
    gram = np.diag(prior)
    complement = np.diag(1.0 / prior) - np.linalg.inv(gram)
    witnesses = top_witnesses(complement)
    for _ in range(60):
        x = rng.standard_normal(dim) * rng.choice([0.1, 1.0, 10.0])
        inverse = np.linalg.inv(gram)
        v = inverse @ x / np.sqrt(1.0 + x @ inverse @ x)
        gram = gram + np.outer(x, x)
        merge_witness(witnesses, v)
        rows = witnesses.astype(np.float64)
        shrinkage = np.diag(1.0 / prior) - np.linalg.inv(gram)
        # Below it up to the float32 storage of the witnesses (which the margin covers).
        assert np.linalg.eigvalsh(shrinkage - rows.T @ rows).min() >= -1e-6 * np.abs(shrinkage).max()
    assert float(np.sum(witnesses.astype(np.float64) ** 2)) > 0.0
