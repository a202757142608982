"""Replay metrics on small hand-made points whose answers are worked out by hand in each test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uniscale_lc.replay.metrics import (
    aiq,
    apgr,
    best_fixed_arm,
    cost_at_fraction_of_best,
    cost_to_reach,
    cpt,
    cumulative_regret,
    learning_curve,
    non_decreasing_convex_hull,
    pareto_frontier,
)


def test_pareto_frontier_drops_dominated_and_duplicate_cost_points() -> None:
    costs = [1.0, 2.0, 3.0, 3.0, 4.0, 0.5]
    accuracies = [0.5, 0.4, 0.7, 0.8, 0.8, 0.5]
    # (0.5, 0.5) dominates (1, 0.5); (3, 0.8) dominates (3, 0.7) and (4, 0.8); (2, 0.4) is dominated.
    assert pareto_frontier(costs, accuracies).tolist() == [5, 3]


def test_hull_skips_points_under_a_chord_and_stops_at_the_most_accurate_point() -> None:
    costs = [0.0, 1.0, 2.0, 3.0, 4.0, 1.5]
    accuracies = [0.0, 0.8, 0.85, 0.9, 0.5, 0.5]
    hull_x, hull_y = non_decreasing_convex_hull(costs, accuracies)
    # (2, 0.85) lies exactly on the chord (1, 0.8)-(3, 0.9); (4, 0.5) falls after the peak.
    assert hull_x.tolist() == [0.0, 1.0, 3.0]
    assert hull_y.tolist() == [0.0, 0.8, 0.9]


def test_hull_lifts_a_concave_dip() -> None:
    hull_x, hull_y = non_decreasing_convex_hull([0.0, 1.0, 2.0], [0.0, 0.2, 1.0])
    assert hull_x.tolist() == [0.0, 2.0]
    assert hull_y.tolist() == [0.0, 1.0]


def test_aiq_is_area_under_hull_extended_flat_over_the_normalised_range() -> None:
    costs = [0.0, 1.0, 2.0, 3.0, 4.0]
    accuracies = [0.0, 0.8, 0.85, 0.9, 0.5]
    # Area: 0..1 triangle 0.4, 1..3 trapezoid (0.8+0.9)/2*2 = 1.7, 3..4 flat 0.9 -> 3.0 over width 4.
    assert aiq(costs, accuracies) == pytest.approx(0.75)
    # A wider shared range extends the last accuracy flat: (3.0 + 0.9 * 4) / 8.
    assert aiq(costs, accuracies, cost_range=(0.0, 8.0)) == pytest.approx(6.6 / 8.0)


def test_aiq_counts_nothing_left_of_the_cheapest_point() -> None:
    # One operating point at cost 1 with accuracy 1 in a shared range [0, 2]: area 1 * 1 over width 2.
    assert aiq([1.0], [1.0], cost_range=(0.0, 2.0)) == pytest.approx(0.5)
    # A single point with no range is its own accuracy.
    assert aiq([3.0], [0.7]) == pytest.approx(0.7)


def test_aiq_rejects_a_range_that_misses_points() -> None:
    with pytest.raises(ValueError, match="does not contain"):
        aiq([0.0, 5.0], [0.1, 0.2], cost_range=(0.0, 4.0))


def test_cost_to_reach_interpolates_on_the_hull() -> None:
    costs, accuracies = [0.0, 1.0, 3.0], [0.0, 0.8, 0.9]
    assert cost_to_reach(costs, accuracies, 0.85) == pytest.approx(2.0)
    assert cost_to_reach(costs, accuracies, 0.4) == pytest.approx(0.5)
    assert cost_to_reach(costs, accuracies, 0.0) == pytest.approx(0.0)
    assert cost_to_reach(costs, accuracies, 0.95) is None


def test_cost_at_95pct_of_best_is_a_fraction_of_the_best_arms_cost() -> None:
    costs, accuracies = [0.0, 1.0, 3.0], [0.0, 0.8, 0.9]
    # Best arm: accuracy 0.9 at cost 4. Target 0.855 is reached at 1 + 0.055 / 0.05 = 2.1 -> 2.1 / 4.
    assert cost_at_fraction_of_best(costs, accuracies, best_cost=4.0, best_accuracy=0.9) == pytest.approx(
        0.525
    )
    assert cost_at_fraction_of_best(costs, accuracies, best_cost=4.0, best_accuracy=1.0) is None


def test_best_fixed_arm_prefers_accuracy_then_lower_cost() -> None:
    assert best_fixed_arm([0.8, 0.9, 0.9, 0.7], [1.0, 3.0, 2.0, 0.1]) == 2
    assert best_fixed_arm([0.5, 0.5], [1.0, 1.0]) == 0


def test_apgr_of_the_random_router_line_is_one_half() -> None:
    # Random mixing between weak (0.6) and strong (0.8) is the straight line: half the gap recovered.
    assert apgr([25.0, 50.0, 75.0], [0.65, 0.7, 0.75], 0.6, 0.8) == pytest.approx(0.5)


def test_apgr_and_cpt_of_a_router_that_gets_strong_quality_at_half_the_calls() -> None:
    # Curve (0, .6) - (50, .8) - (100, .8): AUC = .5 * .7 + .5 * .8 = .75 -> (0.75 - 0.6) / 0.2.
    assert apgr([50.0], [0.8], 0.6, 0.8) == pytest.approx(0.75)
    # Target for 50%: 0.7, reached at 25 % strong calls; for 80%: 0.76 at 40 %.
    assert cpt([50.0], [0.8], 0.6, 0.8, 0.5) == pytest.approx(25.0)
    assert cpt([50.0], [0.8], 0.6, 0.8, 0.8) == pytest.approx(40.0)


def test_cpt_matches_routellms_interp_on_a_monotone_sweep() -> None:
    pct = np.array([0.0, 10.0, 30.0, 60.0, 100.0])
    acc = np.array([0.60, 0.66, 0.72, 0.78, 0.80])
    for gap in (0.2, 0.5, 0.8):
        expected = float(np.interp(0.6 + gap * 0.2, acc, pct))
        assert cpt(pct, acc, 0.6, 0.8, gap, anchor=False) == pytest.approx(expected)


def test_cpt_takes_the_first_crossing_and_none_without_anchor() -> None:
    # Non-monotone sweep: accuracy crosses 0.7 first between 0 % and 20 %.
    assert cpt([20.0, 40.0], [0.8, 0.65], 0.6, 0.8, 0.5) == pytest.approx(10.0)
    assert cpt([20.0, 40.0], [0.62, 0.65], 0.6, 0.8, 0.5, anchor=False) is None


def test_apgr_without_anchor_normalises_by_the_covered_span() -> None:
    # Flat at the strong accuracy over [20 %, 60 %]: the whole gap is recovered on that span.
    assert apgr([20.0, 60.0], [0.8, 0.8], 0.6, 0.8, anchor=False) == pytest.approx(1.0)


def test_cumulative_regret_against_the_best_arm_in_hindsight() -> None:
    arm_rewards = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    regret, best = cumulative_regret([0.0, 1.0, 1.0], arm_rewards)
    assert best == 0
    assert regret.tolist() == [1.0, 1.0, 0.0]


def test_cumulative_regret_ignores_arms_missing_at_some_step() -> None:
    arm_rewards = np.array([[1.0, 0.5], [math.nan, 0.5]])
    regret, best = cumulative_regret([0.5, 0.5], arm_rewards)
    assert best == 1
    assert regret.tolist() == [0.0, 0.0]


def test_learning_curve_is_a_trailing_window_mean() -> None:
    steps, means = learning_curve([1.0, 0.0, 1.0, 1.0], window=2)
    assert steps.tolist() == [1, 2, 3, 4]
    assert means.tolist() == [1.0, 0.5, 0.5, 1.0]
    steps, means = learning_curve(np.arange(10.0), window=10, n_points=3)
    assert steps.tolist() == [1, 5, 10]  # evenly thinned (index 4.5 rounds to even), last kept
    assert means[-1] == pytest.approx(4.5)


def test_samples_to_separate_matches_the_paired_interval() -> None:
    from uniscale_lc.replay.metrics import samples_to_separate

    best = np.zeros(400)
    best[:360] = 1.0  # 90% right
    close = best.copy()
    close[:8] = 0.0  # wrong on 8 questions the best gets right ...
    close[360:364] = 1.0  # ... right on 4 it gets wrong: 1 point behind
    far = np.tile([1.0, 0.0], 200)  # a coin
    rewards = np.column_stack([far, best, close])
    needed = samples_to_separate(rewards)
    assert needed[1] == np.inf  # the best arm itself
    difference = best - close
    assert needed[2] == pytest.approx((1.96 * difference.std(ddof=1) / 0.01) ** 2)
    assert needed[2] > 400 > needed[0]  # the near twin cannot be told apart in 400 questions; the coin can
    assert samples_to_separate(np.ones((5, 2)))[1] == np.inf  # identical arms: never separable


def test_samples_to_separate_rejects_a_single_question() -> None:
    from uniscale_lc.replay.metrics import samples_to_separate

    with pytest.raises(ValueError, match="shape"):
        samples_to_separate(np.ones((1, 3)))
