"""The arm pool (replay/arm_pool.py): which arms matter in hindsight, and a fair comparison on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_replay_runner import write_two_task_table

from uniscale_lc.replay import ReplayConfig, ReplayEnvironment
from uniscale_lc.replay.arm_pool import arms_that_matter, compare_with_pool, pool_environment


@pytest.fixture(scope="module")
def toy_env(tmp_path_factory: pytest.TempPathFactory) -> ReplayEnvironment:
    directory = write_two_task_table(tmp_path_factory.mktemp("pool"))
    return ReplayEnvironment.from_directory(directory, ReplayConfig(vote_ladder=(3,)))


def test_the_pool_is_the_fixed_arm_frontier_plus_the_most_accurate(toy_env: ReplayEnvironment) -> None:
    ids = toy_env.outcomes.arm_ids
    assert len(ids) == 4  # big's Single; small's Single, vote of 3 and early-stopping vote of 3
    weights = (0.0, 1.0)
    # Best at w = 0: big (always right); at w = 1: small's Single, which ties its vote at 0.5 and is cheaper.
    assert arms_that_matter(toy_env, weights, top_k=0) == ("big:direct|single", "small:cot|single")
    assert arms_that_matter(toy_env, (0.0,), top_k=0) == ("big:direct|single",)
    # Top 3 by accuracy: big (1.0), then the first two of small's arms tied at 0.5, in column order.
    assert arms_that_matter(toy_env, weights, top_k=3) == ids[:3]
    assert arms_that_matter(toy_env, weights, top_k=4) == ids
    with pytest.raises(ValueError, match="top_k"):
        arms_that_matter(toy_env, weights, top_k=-1)


def test_a_pool_keeps_the_questions_and_takes_its_own_dearest_arm_as_reference(
    toy_env: ReplayEnvironment,
) -> None:
    pool = pool_environment(toy_env, ("small:cot|single",))
    assert pool.outcomes.arm_ids == ("small:cot|single",)
    assert pool.arm_models == ("small",)
    assert pool.n_questions == toy_env.n_questions
    np.testing.assert_array_equal(pool.features, toy_env.features)
    np.testing.assert_allclose(pool.reference_cost, pool.outcomes.cost_usd[:, 0])
    assert (pool.reference_cost < toy_env.reference_cost).all()


def test_a_pool_of_every_arm_replays_exactly_as_the_full_space(toy_env: ReplayEnvironment) -> None:
    config = ReplayConfig(seeds=2, cost_weights=(0.0, 0.5, 3.0), learners=("uniscale",), workers=1)
    result = compare_with_pool(toy_env, config, top_k=4)
    assert result["pool"] == list(toy_env.outcomes.arm_ids)
    assert result["aiq"]["uniscale_pool"] == result["aiq"]["uniscale_all_arms"]
    # A smaller pool is a different run, on the same cost range, so its AIQ is comparable (and differs here).
    two_weights = ReplayConfig(seeds=2, cost_weights=(0.0, 3.0), learners=("uniscale",), workers=1)
    smaller = compare_with_pool(toy_env, two_weights, top_k=0)
    assert smaller["pool"] == ["big:direct|single", "small:cot|single"]
    assert all(0.0 < value <= 1.0 for value in smaller["aiq"].values())
    assert smaller["aiq"]["uniscale_pool"] != smaller["aiq"]["uniscale_all_arms"]

def test_the_pool_script_prints_a_row_per_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from script_loader import load_script

    write_two_task_table(tmp_path / "toy")
    script = load_script("arm_pool")
    assert script.main([str(tmp_path), "toy", "--seeds", "1", "--top-k", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| toy | ")
