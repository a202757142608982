"""Full-information reference learners (replay/full_information.py): prequential, exact, wired into the replay."""

from __future__ import annotations

import numpy as np
import pytest
from test_replay_runner import write_two_task_table

from uniscale_lc.policy.linucb import CONTEXT_RIDGE_RATIO
from uniscale_lc.replay import ReplayConfig, ReplayEnvironment, replay_dataset
from uniscale_lc.replay.full_information import (
    FULL_INFORMATION_LEARNERS,
    leader_choices,
    ridge_router_choices,
    run_full_information,
)
from uniscale_lc.replay.runner import question_order


@pytest.fixture(scope="module")
def toy_env(tmp_path_factory: pytest.TempPathFactory) -> ReplayEnvironment:
    directory = write_two_task_table(tmp_path_factory.mktemp("full_info"))
    return ReplayEnvironment.from_directory(directory, ReplayConfig(vote_ladder=(3,)))


def test_the_leader_follows_the_sums_of_earlier_steps_only() -> None:
    rewards = np.array([[1.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    choices = leader_choices(rewards, np.random.default_rng(0))
    assert choices[0] in (0, 1, 2)  # nothing seen yet: a seeded tie-break
    assert choices[1] == 0  # step 1's own 5.0 is not seen before its decision
    assert choices[2] == 1 and choices[3] == 1  # totals (1, 5, 0), then (1, 6, 0)
    again = leader_choices(rewards, np.random.default_rng(0))
    np.testing.assert_array_equal(choices, again)  # seeded, so it repeats
    with pytest.raises(ValueError, match=r"rewards: got shape \(4,\)"):
        leader_choices(rewards[:, 0], np.random.default_rng(0))


def test_the_ridge_router_matches_a_fresh_solve_before_every_step() -> None:
    rng = np.random.default_rng(3)
    steps, dim, arms = 40, 5, 4
    contexts = rng.normal(size=(steps, dim))
    rewards = rng.normal(size=(steps, arms))  # continuous: no ties after the first step
    choices = ridge_router_choices(contexts, rewards, np.random.default_rng(0), ridge=2.0)
    prior = np.full(dim + 1, CONTEXT_RIDGE_RATIO * 2.0)
    prior[0] = 2.0
    x_aug = np.hstack([np.ones((steps, 1)), contexts])
    for step in range(1, steps):
        past = x_aug[:step]
        weights = np.linalg.solve(past.T @ past + np.diag(prior), past.T @ rewards[:step])
        assert choices[step] == int(np.argmax(x_aug[step] @ weights)), step
    with pytest.raises(ValueError, match="differ in steps"):
        ridge_router_choices(contexts[:-1], rewards, np.random.default_rng(0))


def test_the_ridge_router_routes_each_task_to_its_arm() -> None:
    # Task A (context e1): arm 0 is right; task B (e2): arm 1 is right. Full information, so after a few
    # questions of each task the router never picks the wrong arm again.
    contexts = np.array([[1.0, 0.0] if step % 2 == 0 else [0.0, 1.0] for step in range(60)])
    rewards = np.where(contexts[:, :1] == 1.0, [[1.0, 0.0]], [[0.0, 1.0]])
    choices = ridge_router_choices(contexts, rewards, np.random.default_rng(0))
    late = slice(10, None)
    np.testing.assert_array_equal(choices[late], np.where(contexts[late, 0] == 1.0, 0, 1))


def test_a_full_information_run_is_a_trace_of_the_replays_rewards(toy_env: ReplayEnvironment) -> None:
    order = question_order(toy_env.n_questions, 1)
    leader = run_full_information(toy_env, "full_info_leader", 1, 0.0, order)
    big = toy_env.outcomes.arm_ids.index("big:direct|single")
    # Ignoring cost, big (always right) leads from its first question on.
    assert (leader.arm[2:] == big).all()
    rows = leader.order
    np.testing.assert_array_equal(leader.quality, toy_env.outcomes.quality[rows, leader.arm])
    np.testing.assert_array_equal(leader.cost_usd, toy_env.outcomes.cost_usd[rows, leader.arm])
    reference = toy_env.reference_cost[rows]
    np.testing.assert_allclose(leader.reward, leader.quality - 0.0 * leader.cost_usd / reference)
    # At a weight where small pays on trivia, the router sends trivia to small and maths to big.
    router = run_full_information(toy_env, "full_info_router", 1, 0.5, order)
    tasks = np.asarray(toy_env.outcomes.tasks)[router.order]
    late = slice(toy_env.n_questions // 2, None)
    on_maths = router.arm[late][tasks[late] == "maths"]
    on_trivia = router.arm[late][tasks[late] == "trivia"]
    assert (on_maths == big).mean() >= 0.9
    # Every one of small's arms is right on trivia and cheaper than big.
    assert np.mean([toy_env.arm_models[column] == "small" for column in on_trivia]) >= 0.9
    with pytest.raises(ValueError, match="full-information"):
        run_full_information(toy_env, "uniscale", 1, 0.0, order)


def test_the_replay_reports_the_full_information_rows(toy_env: ReplayEnvironment) -> None:
    config = ReplayConfig(
        seeds=2, cost_weights=(0.0, 1.0), learners=("uniscale", *FULL_INFORMATION_LEARNERS), workers=1
    )
    report = replay_dataset(None, config, env=toy_env)
    for learner in FULL_INFORMATION_LEARNERS:
        entry = report["policies"][learner]
        assert 0.0 < entry["aiq"] <= 1.0
        assert entry["n_arms"] == len(toy_env.outcomes.arms)
        # Ignoring cost, both see that big is always right: they converge to it.
        assert entry["best_arm_share_last_quarter_w0"] == 1.0
