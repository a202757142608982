"""Cost maths: scale-free penalties, cost prediction by hand, shrinkage toward the model, GPU-hour
pricing, the budget pacer on a simulated arm set, and clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uniscale_lc.arms import Arm, ArmSpace
from uniscale_lc.costs import BudgetPacer, CostModel, cost_penalty, estimate_tokens, reward_from
from uniscale_lc.errors import ConfigError, StateError
from uniscale_lc.model_spec import ModelSpec
from uniscale_lc.strategies import BestOfN, JudgeScorer, MajorityVote, Reflection, Single

SMALL = ModelSpec(model="small", input_usd_per_mtok=0.1, output_usd_per_mtok=0.4)
LARGE = ModelSpec(model="large", input_usd_per_mtok=2.5, output_usd_per_mtok=10.0)
STRATEGIES = [Single(), BestOfN(n=4), MajorityVote(n=5), Reflection(rounds=2)]


def scaled(spec: ModelSpec, factor: float) -> ModelSpec:
    return spec.model_copy(
        update={
            "input_usd_per_mtok": spec.input_usd_per_mtok * factor,
            "output_usd_per_mtok": spec.output_usd_per_mtok * factor,
        }
    )


def test_scale_free_normalisation_prices_times_100_change_nothing():
    results = []
    for factor in (1.0, 100.0):
        space = ArmSpace.product([scaled(SMALL, factor), scaled(LARGE, factor)], STRATEGIES)
        model = CostModel(space)
        model.observe(space.ids[0], 50, input_tokens=50, output_tokens=300, calls=1, latency_s=1.0)
        prediction = model.predict(120)
        penalty, reference = cost_penalty(prediction.cost_usd, cost_weight=0.3)
        reward = reward_from(0.8, float(prediction.cost_usd[3]), reference, cost_weight=0.3)
        results.append((penalty, reward, reference))
    (penalty_1, reward_1, reference_1), (penalty_100, reward_100, reference_100) = results
    assert np.allclose(penalty_1, penalty_100, rtol=1e-12, atol=0)
    assert reward_1 == pytest.approx(reward_100, rel=1e-12)
    assert reference_100 == pytest.approx(100 * reference_1)
    assert penalty_1.max() == pytest.approx(0.3)  # the most expensive arm pays exactly the weight


def test_cost_penalty_and_reward_edge_cases():
    penalty, reference = cost_penalty(np.zeros(3), 0.5)
    assert reference == 0.0 and not penalty.any()
    assert reward_from(0.7, 0.0, 0.0, 0.5) == 0.7
    assert reward_from(1.0, 2.0, 4.0, 0.5) == pytest.approx(0.75)
    assert estimate_tokens("") == 1 and estimate_tokens("abcdefghi") == 3


def test_cost_penalty_geometric_mean_reference_by_hand():
    costs = np.array([0.0, 1.0, 4.0, 16.0])
    penalty, reference = cost_penalty(costs, 0.5, reference="geomean")
    assert reference == pytest.approx(4.0)  # (1 * 4 * 16) ** (1/3): free arms do not pull it to zero
    assert penalty.tolist() == pytest.approx([0.0, 0.125, 0.5, 2.0])
    assert cost_penalty(costs, 0.5)[1] == 16.0  # the default stays the dearest arm
    with pytest.raises(ConfigError, match=r"cost_penalty\.reference.*geomean"):
        cost_penalty(costs, 0.5, reference="mean")


def test_cost_prediction_by_hand():
    space = ArmSpace.product([SMALL], STRATEGIES)
    model = CostModel(space, default_output_tokens=256, default_latency_s_per_call=2.0)
    prediction = model.predict(100)
    per_call = (100 * 0.1 + 256 * 0.4) / 1e6  # 112.4e-6 USD
    single = prediction.for_arm("small|single")
    assert single["cost_usd"] == pytest.approx(per_call)
    assert single == pytest.approx(
        {"cost_usd": per_call, "input_tokens": 100, "output_tokens": 256, "calls": 1, "latency_s": 2.0}
    )
    vote = prediction.for_arm("small|majority_vote(n=5)")
    assert vote["cost_usd"] == pytest.approx(5 * per_call) and vote["latency_s"] == pytest.approx(2.0)
    reflection = prediction.for_arm("small|reflection(rounds=2)")
    assert reflection["calls"] == 5 and reflection["latency_s"] == pytest.approx(10.0)  # sequential rounds
    best = prediction.for_arm("small|best_of_n(n=4)")
    assert best["cost_usd"] == pytest.approx(4 * per_call) and best["latency_s"] == pytest.approx(4.0)
    judged = ArmSpace([Arm(SMALL, BestOfN(n=3, scorer=JudgeScorer(model=SMALL)))])
    assert CostModel(judged).predict(100).calls[0] == 6  # each sample and its judgement


def test_learnt_output_tokens_and_shrinkage_toward_the_model():
    space = ArmSpace.product([SMALL, LARGE], STRATEGIES)
    model = CostModel(space, default_output_tokens=256, prior_strength=3.0)
    for _ in range(10):
        model.observe("small|single", 100, input_tokens=100, output_tokens=400, calls=1, latency_s=1.0)
    prediction = model.predict(100)
    model_output = (10 * 400 + 3 * 256) / 13  # the model's own output length, shrunk toward the default
    own_output = (10 * 400 + 3 * model_output) / 13
    assert prediction.for_arm("small|single")["output_tokens"] == pytest.approx(own_output)
    # A new budget of the known model starts from that model's output lengths, not the default ...
    assert prediction.for_arm("small|majority_vote(n=5)")["output_tokens"] == pytest.approx(5 * model_output)
    # ... while the other model still uses the default.
    assert prediction.for_arm("large|single")["output_tokens"] == pytest.approx(256)
    for _ in range(500):
        model.observe("small|single", 100, input_tokens=100, output_tokens=400, calls=1, latency_s=1.0)
    assert model.predict(100).for_arm("small|best_of_n(n=4)")["output_tokens"] == pytest.approx(
        4 * 400, rel=0.01
    )
    # Per-call input overhead (e.g. reflection's draft and critique in later prompts) is learnt too.
    model.observe(
        "small|reflection(rounds=2)", 100, input_tokens=1500, output_tokens=1000, calls=5, latency_s=5.0
    )
    learnt = model.predict(100).for_arm("small|reflection(rounds=2)")
    assert learnt["input_tokens"] > 5 * 100


def test_self_hosted_cost_is_latency_times_gpu_rate():
    hosted = ModelSpec(model="hosted_vllm/local-model", gpu_usd_per_hour=3.6)
    space = ArmSpace.product([hosted], [Single(), MajorityVote(n=4)])
    model = CostModel(space, default_latency_s_per_call=2.0)
    prediction = model.predict(500)
    assert prediction.for_arm("hosted_vllm/local-model|single")["cost_usd"] == pytest.approx(2.0 * 3.6 / 3600)
    assert prediction.for_arm("hosted_vllm/local-model|majority_vote(n=4)")["cost_usd"] == pytest.approx(
        4 * 2.0 * 3.6 / 3600
    )


def test_cost_model_state_round_trip_and_errors():
    space = ArmSpace.product([SMALL], STRATEGIES)
    model = CostModel(space)
    model.observe("small|single", 10, input_tokens=10, output_tokens=99, calls=1, latency_s=0.5)
    copy = CostModel(space)
    copy.load_state_dict(model.state_dict())
    assert np.array_equal(copy.predict(10).cost_usd, model.predict(10).cost_usd)
    with pytest.raises(StateError):
        copy.load_state_dict({"per_arm": {"small|single": {"count": -1}}})
    for field, value in (("output_tokens", float("nan")), ("latency_s", -1.0), ("calls", float("inf"))):
        kwargs = {"input_tokens": 10, "output_tokens": 10, "calls": 1, "latency_s": 1.0, field: value}
        with pytest.raises(ConfigError, match=rf"CostModel\.observe\.{field}"):
            model.observe("small|single", 10, **kwargs)
    with pytest.raises(ConfigError, match=r"CostModel\.predict\.prompt_tokens"):
        model.predict(-1)
    with pytest.raises(ConfigError, match="not in the arm space"):
        model.predict(10, ["nope|single"])
    with pytest.raises(ConfigError, match="prior_strength"):
        CostModel(space, prior_strength=-1)
    with pytest.raises(ConfigError, match="quality"):
        reward_from(1.5, 0.0, 1.0, 0.2)
    with pytest.raises(ConfigError, match=r"reward_from\.cost_usd"):
        reward_from(0.5, float("nan"), 1.0, 0.2)
    with pytest.raises(ConfigError, match=r"reward_from\.reference_usd"):
        reward_from(0.5, 0.1, -1.0, 0.2)
    with pytest.raises(ConfigError, match=r"reward_from\.cost_weight"):
        reward_from(0.5, 0.1, 1.0, float("nan"))
    with pytest.raises(ConfigError, match=r"cost_penalty\.predicted_cost_usd"):
        cost_penalty(np.array([0.1, np.nan]), 0.2)
    with pytest.raises(ConfigError, match=r"cost_penalty\.cost_weight"):
        cost_penalty(np.array([0.1]), -0.2)


# ----------------------------------------------------------------------------- budget pacer

COSTS = np.array([0.0002, 0.0006, 0.0015, 0.004, 0.01, 0.025])  # USD per request, six arms
QUALITY = np.array([0.30, 0.45, 0.55, 0.65, 0.72, 0.78])


def simulate_pacer(target: float, seed: int, requests: int = 3000) -> np.ndarray:
    """Spend per request when each request takes argmax(quality - penalty) under the pacer's weight."""
    rng = np.random.default_rng(seed)
    pacer = BudgetPacer(target)  # starts at cost weight 0.5
    spent = np.empty(requests)
    for index in range(requests):
        difficulty = rng.random()
        quality = QUALITY - 0.3 * difficulty * (1 - QUALITY) + 0.05 * rng.standard_normal(COSTS.size)
        penalty, _ = cost_penalty(COSTS * rng.uniform(0.8, 1.25), pacer.cost_weight)
        arm = int(np.argmax(quality - penalty))
        spent[index] = COSTS[arm] * rng.uniform(0.8, 1.25)
        pacer.observe(spent[index])
    return spent


def requests_to_within(spent: np.ndarray, target: float, tolerance: float = 0.1, block: int = 200) -> int:
    """Requests until every later block of `block` requests averages within `tolerance` of the target."""
    blocks = spent[: spent.size - spent.size % block].reshape(-1, block).mean(axis=1)
    outside = np.flatnonzero(np.abs(blocks - target) > tolerance * target)
    return int((outside[-1] + 1) * block) if outside.size else 0


@pytest.mark.parametrize("target", [0.001, 0.008])  # needs a cost weight about 7x above / 2x below the start
@pytest.mark.parametrize("seed", [0, 1])
def test_budget_pacer_spend_tracks_the_target(target, seed):
    spent = simulate_pacer(target, seed)
    settled = requests_to_within(spent, target)
    # Measured: 400 requests for target 0.001, 0 for 0.008 (documented in BudgetPacer and docs/policy.md).
    assert settled <= 600, settled
    assert spent[-2000:].mean() == pytest.approx(target, rel=0.03)


def test_budget_pacer_moves_the_weight_the_right_way_and_validates():
    pacer = BudgetPacer(0.01, initial_cost_weight=1.0)
    for _ in range(20):
        pacer.observe(0.05)  # overspending
    assert pacer.cost_weight > 1.0
    high = pacer.cost_weight
    for _ in range(200):
        pacer.observe(0.0)  # underspending
    assert pacer.cost_weight < high
    copy = BudgetPacer(0.01)
    copy.load_state_dict(pacer.state_dict())
    assert copy.cost_weight == pacer.cost_weight and copy.spend_ema == pacer.spend_ema
    with pytest.raises(ConfigError, match=r"BudgetPacer\.target_usd_per_request"):
        BudgetPacer(0.0)
    with pytest.raises(ConfigError, match=r"BudgetPacer\.target_usd_per_request"):
        BudgetPacer(math.nan)
    with pytest.raises(ConfigError, match="gain"):
        BudgetPacer(0.01, gain=2.0)
    with pytest.raises(ConfigError, match=r"BudgetPacer\.observe\.cost_usd"):
        pacer.observe(-1.0)
    with pytest.raises(StateError, match="cost_weight"):
        copy.load_state_dict({"cost_weight": float("nan")})
    with pytest.raises(StateError, match="spend_ema"):
        copy.load_state_dict({"cost_weight": 1.0, "spend_ema": float("nan")})


def test_cached_predictions_follow_learning_and_arm_space_changes():
    """The per-arm cache must never serve a stale prediction: not after the same model learns, not after a
    reprice (remove and re-add under the same id)."""
    space = ArmSpace.product([SMALL], STRATEGIES)
    model = CostModel(space, default_output_tokens=256)
    arm_ids = space.ids
    before = model.predict(100).cost_usd.copy()
    # Another arm on the same model learns longer answers: every arm of that model must be re-predicted.
    model.observe(arm_ids[0], 100, input_tokens=100, output_tokens=2000, calls=1, latency_s=1.0)
    after = model.predict(100).cost_usd
    assert (after > before).all()
    fresh = CostModel(space, default_output_tokens=256)
    fresh.load_state_dict(model.state_dict())
    np.testing.assert_allclose(fresh.predict(100).cost_usd, after, rtol=1e-12)  # same as computed afresh
    # Reprice the first arm: remove it and add it back with ten times the prices.
    first = space[arm_ids[0]]
    pricier = first.model.model_copy(
        update={
            "input_usd_per_mtok": first.model.input_usd_per_mtok * 10,
            "output_usd_per_mtok": first.model.output_usd_per_mtok * 10,
        }
    )
    space.remove(arm_ids[0])
    space.add(Arm(pricier, first.strategy))
    repriced = model.predict(100, arm_ids)
    assert repriced.cost_usd[0] == pytest.approx(10 * after[0], rel=1e-9)
