"""replay.task_bound (and its script): the per-task and per-question bounds on tables where they are known by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from outcome_tables import write_big_small_table
from script_loader import load_script

from uniscale_lc.replay.runner import ReplayConfig, ReplayEnvironment
from uniscale_lc.replay.task_bound import task_router_bounds
from uniscale_lc.replay.warm import warm_split

SAVING = 1.0 - 0.0001 / 0.01  # moving one question from big to small saves 99% of its cost


def _env(tmp_path: Path) -> ReplayEnvironment:
    # Task "easy": 40 questions both models get right. Task "hard": 60 the big model gets right and the
    # small one every other one. Big is right everywhere, so 95% of it is accuracy 0.95.
    questions, correct = [], []
    for index in range(100):
        task = "easy" if index < 40 else "hard"
        questions.append({"qid": f"q{index}", "prompt": f"question {index}", "gold": "a", "task": task})
        correct.append((True, task == "easy" or index % 2 == 0))
    directory = write_big_small_table(tmp_path / "toy", questions, correct)
    return ReplayEnvironment.from_directory(directory, ReplayConfig(seeds=1))


def test_hindsight_and_oracle_match_the_hand_computed_curves(tmp_path: Path) -> None:
    bounds = task_router_bounds(_env(tmp_path))
    # Per task: all of "easy" moves at no loss (40% of the cost x 99%); then "hard" loses 0.5 accuracy per
    # question moved, and 0.05 may be lost: a sixth of its 60 questions.
    assert bounds["task_router_hindsight"] == pytest.approx((0.40 + 0.60 / 6) * SAVING)
    # Per question: the 70 the small model gets right move free; the 30 it gets wrong lose 1 each: 5 of them.
    assert bounds["question_oracle"] == pytest.approx((0.70 + 0.05) * SAVING)


def test_heldout_ranks_on_the_labelled_part_and_scores_the_rest(tmp_path: Path) -> None:
    env = _env(tmp_path)
    bounds = task_router_bounds(env)
    _, heldout = warm_split(env)
    hard = np.array([env.outcomes.tasks[q] == "hard" for q in heldout])
    n, n_easy = heldout.size, int((~hard).sum())
    small_right = env.outcomes.quality[heldout, [env.outcomes.arm_ids.index("small:direct|single")]]
    loss_if_all_hard_move = float((1.0 - small_right[hard]).sum()) / n
    moved_hard = 0.05 / loss_if_all_hard_move  # the share of the hard task the 95% target allows
    expected = (n_easy / n + moved_hard * hard.sum() / n) * SAVING
    assert bounds["task_router_heldout"] == pytest.approx(expected)


def test_a_table_whose_accurate_arm_is_cheaper_is_refused(tmp_path: Path) -> None:
    questions = [{"qid": f"q{i}", "prompt": "p", "gold": "a", "task": "t"} for i in range(10)]
    directory = write_big_small_table(tmp_path / "cheap_wins", questions, [(False, True)] * 10)
    env = ReplayEnvironment.from_directory(directory, ReplayConfig(seeds=1))
    with pytest.raises(ValueError, match="not the dearer one"):
        task_router_bounds(env)
    with pytest.raises(SystemExit, match="not the dearer one"):
        load_script("task_router_bound").main([str(directory)])


def test_the_script_prints_the_three_bounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = _env(tmp_path)
    load_script("task_router_bound").main([str(env.table.path)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "toy: 100 questions, 2 tasks"
    assert lines[1] == f"  task_router_hindsight: {(0.40 + 0.10) * SAVING:.1%}"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "task_router_hindsight",
        "task_router_heldout",
        "question_oracle",
    ]
