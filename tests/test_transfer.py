"""Arm features make learning transfer: arms that share a model or a strategy teach each other."""

from __future__ import annotations

import numpy as np
from test_linucb import LinearBandit, make_models, run_bandit

from uniscale_lc.arms import Arm, ArmSpace
from uniscale_lc.policy import Decision, LinUCB
from uniscale_lc.strategies import BestOfN, MajorityVote, Reflection, Single

DIM = 5


def big_space() -> ArmSpace:
    strategies = [
        Single(),
        BestOfN(n=2),
        BestOfN(n=8),
        MajorityVote(n=3),
        MajorityVote(n=5),
        Reflection(rounds=1),
    ]
    return ArmSpace.product(make_models(4), strategies)  # 24 arms


def test_shared_arm_features_learn_faster_than_disjoint_arms():
    space = big_space()
    rounds = 800
    shared = run_bandit(
        LinUCB(alpha=0.5, shared=True, per_arm=False, shared_context_dim=16), space, rounds, seed=6, dim=DIM
    )
    disjoint = run_bandit(LinUCB(alpha=0.5, shared=False, per_arm=True), big_space(), rounds, seed=6, dim=DIM)
    # Disjoint LinUCB must try each of 24 arms separately in a 6-dim context; the joint model shares.
    assert shared.sum() < 0.6 * disjoint.sum(), (shared.sum(), disjoint.sum())


def test_new_budget_of_a_known_strategy_on_a_known_model_does_not_start_from_zero():
    models = make_models(3)
    space = ArmSpace.product(
        models, [Single(), BestOfN(n=4), MajorityVote(n=3), MajorityVote(n=5), Reflection(rounds=1)]
    )
    held_out = Arm(models[1], MajorityVote(n=9))  # a budget never seen, of a seen strategy on a seen model
    full = ArmSpace([*space.arms, held_out])
    bandit = LinearBandit(full, DIM, seed=7, noise=0.05)
    transfer = LinUCB(shared=True, per_arm=False, shared_context_dim=16)
    disjoint = LinUCB(shared=False, per_arm=True)
    for policy in (transfer, disjoint):
        policy.bind(space, DIM)
    rng = np.random.default_rng(3)
    for _ in range(1500):  # logged, uniformly explored traffic on the other arms
        x = bandit.context()
        arm_id = space.ids[int(rng.integers(len(space)))]
        reward = bandit.reward(x, arm_id)
        for policy in (transfer, disjoint):
            policy.update(Decision(arm_id=arm_id, context=x), reward)
    space.add(held_out)
    errors = {"transfer": [], "disjoint": []}
    truths = []
    for _ in range(100):
        x = bandit.context()
        truth = bandit.means(x)[held_out.id]
        truths.append(truth)
        for name, policy in (("transfer", transfer), ("disjoint", disjoint)):
            _, mean, _, _ = policy.score(x, arms=[held_out.id])
            errors[name].append(abs(mean[0] - truth))
    spread = float(np.std(truths))
    transfer_error, disjoint_error = float(np.mean(errors["transfer"])), float(np.mean(errors["disjoint"]))
    assert disjoint_error > 0.5 * spread  # the disjoint model knows nothing: it predicts 0
    assert transfer_error < 0.25 * disjoint_error, (transfer_error, disjoint_error, spread)
    # ... and its uncertainty about the new arm is already lower than a blank arm's.
    _, _, bonus_transfer, _ = transfer.score(x, arms=[held_out.id])
    untrained = LinUCB(shared=True, per_arm=False, shared_context_dim=16)
    untrained.bind(space, DIM)
    _, _, bonus_blank, _ = untrained.score(x, arms=[held_out.id])
    assert bonus_transfer[0] < 0.5 * bonus_blank[0]
