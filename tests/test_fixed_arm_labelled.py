"""`best_fixed_arm_labelled`: the arm best on the warm start's labelled part, scored on the held-out part."""

from __future__ import annotations

from pathlib import Path

import pytest
from outcome_tables import write_big_small_table

from uniscale_lc.replay import ReplayConfig, ReplayEnvironment, format_table, replay_dataset
from uniscale_lc.replay.warm import WARM_FRACTION, WARM_SEED
from uniscale_lc.warm_start import labelled_split

N_QUESTIONS = 40


def test_the_labelled_choice_is_scored_on_held_out_questions(tmp_path: Path) -> None:
    # On the labelled part only `small` is right, so a user who evaluates there deploys it; on the held-out
    # part `big` is always right and `small` half the time, so the held-out hindsight pick is `big`.
    labelled, _ = labelled_split(N_QUESTIONS, WARM_FRACTION, WARM_SEED)
    questions = [{"qid": f"q{i}", "prompt": f"q {i}", "gold": "a", "task": "t"} for i in range(N_QUESTIONS)]
    in_labelled = set(labelled.tolist())
    correct = [(False, True) if i in in_labelled else (True, i % 2 == 0) for i in range(N_QUESTIONS)]
    directory = write_big_small_table(tmp_path / "t", questions, correct)
    config = ReplayConfig(seeds=1, cost_weights=(0.0, 1.0), cost_weight=0.0, learners=("offline_router",))
    env = ReplayEnvironment.from_directory(directory, config)
    policies = replay_dataset(directory, config, env=env)["policies"]
    heldout_small = [i % 2 == 0 for i in range(N_QUESTIONS) if i not in in_labelled]
    labelled_row, hindsight_row = policies["best_fixed_arm_labelled"], policies["best_fixed_arm_heldout"]
    assert labelled_row["arm"] == "small:direct|single" and hindsight_row["arm"] == "big:direct|single"
    assert labelled_row["accuracy"] == pytest.approx(sum(heldout_small) / len(heldout_small))
    assert hindsight_row["accuracy"] == 1.0
    assert labelled_row["aiq"] < hindsight_row["aiq"]
    assert "best_fixed_arm_labelled" in format_table(replay_dataset(directory, config, env=env))


def test_no_labelled_row_without_a_warm_learner(tmp_path: Path) -> None:
    questions = [{"qid": f"q{i}", "prompt": "p", "gold": "a", "task": "t"} for i in range(10)]
    directory = write_big_small_table(tmp_path / "t", questions, [(True, False)] * 10)
    config = ReplayConfig(seeds=1, cost_weights=(0.0,), cost_weight=0.0, learners=("random",))
    assert "best_fixed_arm_labelled" not in replay_dataset(directory, config)["policies"]
