"""Side observations (a vote teaches the smaller votes its samples imply) and the context prior of LinUCB."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

pytest.register_assert_rewrite("fixtures_server")
from fixtures_server import spec_for  # noqa: E402

from uniscale_lc import Router  # noqa: E402
from uniscale_lc.arms import Arm, ArmSpace, ModelSpec  # noqa: E402
from uniscale_lc.client import ModelClient  # noqa: E402
from uniscale_lc.feedback import PendingDecision  # noqa: E402
from uniscale_lc.policy import LinUCB  # noqa: E402
from uniscale_lc.policy.base import Decision  # noqa: E402
from uniscale_lc.side_observations import (  # noqa: E402
    SampleArm,
    answer_from_samples,
    implied_arms,
    same_answer_arms,
)
from uniscale_lc.strategies.config import MajorityVote, Reflection, Single  # noqa: E402
from uniscale_lc.testing.openai_server import OpenAIServer, SimulatedModel  # noqa: E402

pytest_plugins = ("fixtures_server",)
pytestmark = pytest.mark.timeout(60)


# ----------------------------------------------------------------------------- the pure rule


def test_answer_from_samples_replays_each_strategy_on_a_prefix() -> None:
    answers = ["7", "8", "8", "8", "7"]
    assert answer_from_samples(Single(), answers, "number") == ("7", 1)
    assert answer_from_samples(MajorityVote(n=3), answers, "number") == ("8", 3)
    assert answer_from_samples(MajorityVote(n=5), answers, "number") == ("8", 5)
    assert answer_from_samples(MajorityVote(n=7), answers, "number") is None  # too few samples
    assert answer_from_samples(MajorityVote(n=3, extractor="choice"), answers, "number") is None
    assert answer_from_samples(Reflection(rounds=1), answers, "number") is None
    # An early-stopping vote of budget 9 (waves of 3): 1 of 3 agree, then 3 of 6 "8" vs 2 - not safe with
    # 3 to come, so it needs samples we do not hold.
    assert answer_from_samples(MajorityVote(n=9, early_stop=True), answers, "number") is None
    unanimous = ["5"] * 4
    # Budget 5, waves of 2: after 4 samples "5" leads 4-0 with 1 to come: safe, determined from 4 samples.
    assert answer_from_samples(MajorityVote(n=5, early_stop=True), unanimous, "number") == ("5", 4)


def test_implied_arms_are_the_same_models_determined_arms_and_same_answer_picks_agreement() -> None:
    pulled = SampleArm("m|majority_vote(n=5)", "m", MajorityVote(n=5))
    arms = [
        pulled,
        SampleArm("m|single", "m", Single()),
        SampleArm("m|majority_vote(n=3)", "m", MajorityVote(n=3)),
        SampleArm("m|majority_vote(n=9)", "m", MajorityVote(n=9)),
        SampleArm("other|single", "other", Single()),
    ]
    implied = implied_arms(pulled, arms, ["7", "8", "8", "8", "7"], "number")
    assert implied == {"m|single": "7", "m|majority_vote(n=3)": "8"}
    assert same_answer_arms("8", implied) == ("m|majority_vote(n=3)",)
    assert same_answer_arms("7", implied) == ("m|single",)
    assert same_answer_arms(None, {"m|single": None}) == ()


def test_pending_decision_updates_carry_the_context_and_round_trip() -> None:
    decision = Decision(arm_id="m|majority_vote(n=5)", context=np.array([0.5, -1.0]))
    pending = PendingDecision(decision, 0.1, 1.0, 0.2, implied_arms=("m|single",))
    (own, q1), (side, q2) = pending.updates(0.75)
    assert own is decision and q1 == q2 == 0.75
    assert side.arm_id == "m|single" and np.array_equal(side.context, decision.context)
    assert side.decision_id == f"{decision.decision_id}:m|single"
    again = PendingDecision.from_dict(pending.to_dict())
    assert again.implied_arms == ("m|single",)
    with pytest.raises(ValueError, match="implied_arms"):
        PendingDecision.from_dict({**pending.to_dict(), "implied_arms": "m|single"})


# ----------------------------------------------------------------------------- live


@pytest.fixture
def vote_router(make_server: Callable[[Sequence[SimulatedModel]], OpenAIServer], model_client: ModelClient):
    # Sample 0 answers 41, every later one 42: votes of 5 and of 3 say 42, Single says 41.
    def answer(messages: Any, sample: int, rng: Any) -> str:
        return "it is 41" if sample == 0 else "it is 42"

    server = make_server([SimulatedModel("m", answer)])
    strategies = [Single(), MajorityVote(n=3), MajorityVote(n=5)]
    routers: list[Router] = []

    def factory(**overrides: Any) -> Router:
        # No exploration, so the arm taught best (the vote of 5) is the one that answers.
        fields: dict[str, Any] = {
            "models": [spec_for(server, "m")],
            "strategies": strategies,
            "client": model_client,
            "policy": LinUCB(alpha=0.0),
        }
        fields.update(overrides)
        router = Router(**fields)
        if not router.policy._arm_stats:
            dim = router.featurizer.dim
            router.policy.warm_start(
                [(np.zeros(dim), "m|majority_vote(n=5)", 1.0)] * 5
                + [(np.zeros(dim), "m|majority_vote(n=3)", 0.0), (np.zeros(dim), "m|single", 0.0)] * 5
            )
        routers.append(router)
        return router

    yield factory
    for router in routers:
        router.close()


def _arm_updates(router: Router) -> dict[str, int]:
    return {arm_id: stats.updates for arm_id, stats in router.policy._arm_stats.items()}


def test_a_scored_vote_teaches_the_smaller_vote_that_agreed_and_not_the_single_that_did_not(
    vote_router: Callable[..., Router],
) -> None:
    router = vote_router(side_observations=True)
    completion = router.complete("what is 6 x 7?")
    assert completion.decision["arm"] == "m|majority_vote(n=5)"
    before = _arm_updates(router)
    router.feedback(completion.decision["decision_id"], 1.0)
    after = _arm_updates(router)
    taught = {arm for arm in after if after[arm] != before.get(arm, 0)}
    assert taught == {"m|majority_vote(n=5)", "m|majority_vote(n=3)"}
    stats = router.stats()
    assert stats["side_observations"] == 1
    assert stats["arms"]["m|majority_vote(n=5)"]["feedback"] == 1
    assert "m|majority_vote(n=3)" not in stats["arms"] or stats["arms"]["m|majority_vote(n=3)"]["feedback"] == 0


def test_side_observations_off_teach_only_the_answering_arm(vote_router: Callable[..., Router]) -> None:
    router = vote_router(side_observations=False)
    completion = router.complete("what is 6 x 7?")
    before = _arm_updates(router)
    router.feedback(completion.decision["decision_id"], 1.0)
    after = _arm_updates(router)
    assert {arm for arm in after if after[arm] != before.get(arm, 0)} == {"m|majority_vote(n=5)"}
    assert router.stats()["side_observations"] == 0


def test_implied_arms_survive_a_restart_with_the_pending_decision(
    vote_router: Callable[..., Router], tmp_path: Any
) -> None:
    path = str(tmp_path / "state.npz")
    router = vote_router(state_path=path, side_observations=True)
    completion = router.complete("what is 6 x 7?")
    router.close()
    again = vote_router(state_path=path, side_observations=True)
    before = _arm_updates(again)
    again.feedback(completion.decision["decision_id"], 0.0)
    after = _arm_updates(again)
    assert {arm for arm in after if after[arm] != before.get(arm, 0)} == {
        "m|majority_vote(n=5)",
        "m|majority_vote(n=3)",
    }


# ----------------------------------------------------------------------------- the context prior


def _space() -> ArmSpace:
    cheap = ModelSpec(model="small", input_usd_per_mtok=0.1, output_usd_per_mtok=0.2, params_b=7)
    dear = ModelSpec(model="large", input_usd_per_mtok=10.0, output_usd_per_mtok=30.0, params_b=400)
    return ArmSpace([Arm(cheap, Single()), Arm(dear, Single()), Arm(cheap, MajorityVote(n=5))])


def test_context_weights_are_shrunk_harder_than_arm_means() -> None:
    policy = LinUCB(ridge=1.0)
    assert policy.context_ridge == 10.0 and policy.arm_ridge == 10.0
    policy.bind(_space(), 4)
    policy.select(np.zeros(4))  # creates per-arm statistics
    stats = next(iter(policy._arm_stats.values()))
    assert np.allclose(np.diag(stats.gram), [10.0, 10.0, 10.0, 10.0, 10.0])  # arm mean: arm_ridge
    shared = np.diag(policy._shared_stats.gram)
    assert np.all(shared[: len(shared) // policy._projection.shape[0]] == 1.0) and shared.max() == 10.0
    # The posterior mean of a per-arm fit is the closed-form ridge with that diagonal prior.
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(40, 4)) * 0.3
    arm = policy._space().ids[0]
    for x in xs:
        policy.update(Decision(arm_id=arm, context=x), float(x[0] > 0))
    policy.refresh()
    design = np.hstack([np.ones((40, 1)), xs])
    joint = np.array([np.outer(policy._projection @ row, policy._known_features[arm]).ravel() for row in design])
    targets = (xs[:, 0] > 0).astype(float)
    shared_w = np.linalg.solve(np.diag(policy._shared_stats.prior) + joint.T @ joint, joint.T @ targets)
    # Two-stage hybrid: per-arm terms regress the residual the shared model left at each step; check the
    # shared stage exactly and that the per-arm prior is the diagonal one.
    assert np.allclose(policy._shared_stats.weights, shared_w, atol=1e-8)
    assert np.allclose(np.diag(policy._arm_stats[arm].gram) - np.diag(design.T @ design), [10, 10, 10, 10, 10])


def test_a_state_saved_before_context_priors_loads_with_its_own_prior() -> None:
    policy = LinUCB(ridge=2.0)
    policy.bind(_space(), 4)
    policy.update(policy.select(np.ones(4) * 0.1), 1.0)
    state = policy.state_dict()
    del state["config"]["context_ridge"]  # the layout of files written before this change
    del state["config"]["arm_ridge"]
    loaded = LinUCB()
    loaded.bind(_space(), 4)
    loaded.load_state_dict(state)
    assert loaded.ridge == 2.0 and loaded.context_ridge == 2.0 and loaded.arm_ridge == 2.0
    assert np.allclose(loaded._shared_stats.prior, 2.0)
    assert np.allclose(loaded._arm_prior, 2.0)


def test_context_and_arm_ridges_are_validated() -> None:
    with pytest.raises(Exception, match="context_ridge"):
        LinUCB(context_ridge=0.0)
    with pytest.raises(Exception, match="context_ridge"):
        LinUCB(context_ridge=float("nan"))
    with pytest.raises(Exception, match="arm_ridge"):
        LinUCB(arm_ridge=-1.0)


def test_a_fresh_arm_starts_at_what_its_features_predict() -> None:
    """Priors from arm features: after the cheap model's Single and vote were taught, an untried arm of a
    dearer, larger model is predicted from the shared model, and a strong arm prior keeps it there."""
    space = _space()
    dear_vote = Arm(space["large|single"].model, MajorityVote(n=5))
    space.add(dear_vote)
    bonuses = []
    for arm_ridge in (1.0, 10.0):
        policy = LinUCB(alpha=1.0, arm_ridge=arm_ridge)
        policy.bind(space, 4)
        x = np.zeros(4)
        for _ in range(30):
            policy.update(Decision(arm_id="small|single", context=x), 0.3)
            policy.update(Decision(arm_id="small|majority_vote(n=5)", context=x), 0.5)
            policy.update(Decision(arm_id="large|single", context=x), 0.9)
        ids, mean, bonus, _ = policy.score(x)
        untried = ids.index(dear_vote.id)
        # The vote of the large model is predicted above the small model's arms (features transfer) ...
        assert mean[untried] > mean[ids.index("small|majority_vote(n=5)")]
        bonuses.append(bonus[untried])
    # ... and its exploration bonus is narrower the stronger the arm prior.
    assert bonuses[1] < 0.9 * bonuses[0]
